//! ZooKeeper errors -> durable errors, classified in one place. An operation's steps return
//! [`Failure`], which keeps the driver's error as it is until the edge
//! ([`ZooKeeperStore::run`](crate::ZooKeeperStore::run)), where [`map`] makes it an [`Error`]: connection trouble
//! [`Error::Unavailable`], access refused an [`Error::Backend`] that names the user (never the
//! password), the rest [`Error::Backend`].

use std::fmt;
use std::time::Duration;

use durable_core::{Error, Operation};
use zookeeper_client as zk;

use crate::store::NAME;

/// An error inside an operation: the driver's (mapped at the end) or already a durable one.
#[derive(Debug)]
pub(crate) enum Failure {
    Zk(zk::Error),
    Durable(Error),
}

impl From<zk::Error> for Failure {
    fn from(e: zk::Error) -> Self {
        Failure::Zk(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Durable(e)
    }
}

/// Driver errors of a session that could not be established for want of a server.
pub(crate) fn is_connection_failure(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::NoHosts | zk::Error::ConnectionLoss | zk::Error::Timeout | zk::Error::Custom(_)
    )
}

/// The servers refused access: what, and the driver's error.
#[derive(Debug)]
struct Refused {
    refused: String,
    source: zk::Error,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.refused)
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The error of an operation that failed with the driver's `e`: [`map_error`], except that access
/// refused by the servers names the znodes under `root` and `identity` (the digest user, never
/// the password).
pub(crate) fn map(operation: Operation, e: zk::Error, root: &str, identity: &str) -> Error {
    let refused = match e {
        zk::Error::NoAuth => format!(
            "not authorized: the ACLs of the znodes under {root} do not grant {identity} \
             (ZooKeeper NoAuth)"
        ),
        zk::Error::AuthFailed => {
            format!("authentication failed: the servers refused the credentials of {identity}")
        }
        e => return map_error(operation, e),
    };
    Error::backend(NAME, operation, Refused { refused, source: e })
}

pub(crate) fn is_terminal(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::SessionMoved
    )
}

/// Connection trouble becomes `Unavailable`, everything else `Backend`.
fn map_error(operation: Operation, e: zk::Error) -> Error {
    match e {
        zk::Error::ConnectionLoss
        | zk::Error::Timeout
        | zk::Error::NoHosts
        | zk::Error::SessionExpired
        | zk::Error::SessionMoved
        | zk::Error::ClientClosed
        | zk::Error::Throttled
        | zk::Error::NotReadOnly
        // zookeeper-client 0.11 fails the requests in flight with the error that broke the
        // connection: a socket error (reset by a restarting server, ...) or "no response from
        // connection", both wrapped in `Custom`, which it uses for nothing else.
        | zk::Error::Custom(_) => Error::unavailable(NAME, operation, e),
        e => Error::backend(NAME, operation, e),
    }
}

pub(crate) fn timeout_error(operation: Operation, after: Duration) -> Error {
    Error::Timeout {
        backend: NAME.to_owned(),
        operation,
        after,
    }
}

/// An [`Error::Backend`] for something read that makes no sense (a reply of an unexpected
/// shape, an exhausted counter, a request too large).
pub(crate) fn corrupt(operation: Operation, what: String) -> Error {
    Error::backend(NAME, operation, what)
}
