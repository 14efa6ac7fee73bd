//! One connection type over a single server or a cluster, and the error mapping.

use std::fmt;

use durable_core::{Error, Operation};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

/// The command connection of a store: a reconnecting manager, or a cluster connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conn::Single(_) => f.write_str("ConnectionManager"),
            #[cfg(feature = "cluster")]
            Conn::Cluster(_) => f.write_str("ClusterConnection"),
        }
    }
}

impl Conn {
    /// The command scripts use to publish hints: sharded pub/sub on a cluster.
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Conn::Single(_) => "PUBLISH",
            #[cfg(feature = "cluster")]
            Conn::Cluster(_) => "SPUBLISH",
        }
    }
}

/// Whether a request the [`ConnectionManager`] answered with `result` reached no server (the
/// connection was refused), so that sending it again is safe. The manager answers the first request after
/// an outage with the error of its last reconnect attempt (made while the server was down) and
/// only then reconnects, so without this retry the first request after every outage would fail.
/// Nothing else is retried: a request whose connection dropped may have been applied.
fn never_sent<T>(result: &redis::RedisResult<T>) -> bool {
    matches!(result, Err(err) if err.is_connection_refusal())
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => Box::pin(async move {
                let result = c.send_packed_command(cmd).await;
                if never_sent(&result) {
                    return c.send_packed_command(cmd).await;
                }
                result
            }),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => Box::pin(async move {
                let result = c.send_packed_commands(pipeline, offset, count).await;
                if never_sent(&result) {
                    return c.send_packed_commands(pipeline, offset, count).await;
                }
                result
            }),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Maps a driver error: credentials the server refuses, or a database number it does not have,
/// are [`Error::Config`] (retrying cannot help); anything about reaching the server is
/// [`Error::Unavailable`]; the rest (server-side errors, corrupt records) [`Error::Backend`].
/// The driver never sees a password in a URL (the store gives it apart), and its messages
/// do not quote the one it sends.
pub(crate) fn map_err(operation: Operation, err: RedisError) -> Error {
    // A cluster client wraps the nodes' errors in an I/O error that keeps only their text.
    let text = err.to_string();
    if err.kind() == ErrorKind::AuthenticationFailed
        || matches!(err.code(), Some("WRONGPASS" | "NOAUTH"))
        || text.contains("AuthenticationFailed")
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        return Error::Config(format!(
            "redis: {operation}: authentication failed (check the user name and password of the \
             URL): {err}"
        ));
    }
    if text.contains("DB index is out of range") || text.contains("refused to switch database") {
        return Error::Config(format!(
            "redis: {operation}: the server has no such database (the URL's `/db` number): {err}"
        ));
    }
    let transient = err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.kind(),
            ErrorKind::Io
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                        | ServerErrorKind::ReadOnly
                )
        );
    if transient {
        Error::unavailable("redis", operation, err)
    } else {
        Error::backend("redis", operation, err)
    }
}

/// An [`Error::Backend`] for a reply of an unexpected shape.
pub(crate) fn bad_reply(operation: Operation, what: impl Into<String>) -> Error {
    Error::backend(
        "redis",
        operation,
        format!("unexpected reply from the server: {}", what.into()),
    )
}
