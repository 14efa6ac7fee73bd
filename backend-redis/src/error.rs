//! Redis errors -> durable errors, classified in one place: which driver errors mean the
//! server could not be reached ([`Error::Unavailable`]), which are configuration
//! ([`Error::Config`]: credentials, database numbers), which requests never reached a server
//! (safe to send again), and the errors of replies of an unexpected shape.

use std::fmt;

use durable_core::{Error, Operation};
use redis::{ErrorKind, RedisError, ServerErrorKind};

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

/// Whether a request the [`ConnectionManager`](redis::aio::ConnectionManager) answered with `result` reached no server (the
/// connection was refused), so that sending it again is safe. The manager answers the first request after
/// an outage with the error of its last reconnect attempt (made while the server was down) and
/// only then reconnects, so without this retry the first request after every outage would fail.
/// Nothing else is retried: a request whose connection dropped may have been applied.
pub(crate) fn never_sent<T>(result: &redis::RedisResult<T>) -> bool {
    matches!(result, Err(err) if err.is_connection_refusal())
}

/// A server (or cluster) that could not be reached at connect, named by its address(es) (never
/// a password), with the driver's error.
#[derive(Debug)]
struct Unreachable {
    addresses: String,
    source: redis::RedisError,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.source.to_string();
        if text.contains("failed to lookup address") {
            write!(
                f,
                "unknown host in {} (DNS lookup failed): {text}",
                self.addresses
            )
        } else if self.source.is_connection_refusal() {
            write!(f, "connection refused by {}: {text}", self.addresses)
        } else {
            write!(f, "cannot connect to {}: {text}", self.addresses)
        }
    }
}

impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The error of connecting to `addresses`: [`map_err`]'s category, naming the addresses when
/// the server could not be reached.
pub(crate) fn open_error(addresses: String, err: redis::RedisError) -> Error {
    match map_err(Operation::Open, err.clone()) {
        Error::Unavailable { .. } => Error::unavailable(
            "redis",
            Operation::Open,
            Unreachable {
                addresses,
                source: err,
            },
        ),
        other => other,
    }
}
