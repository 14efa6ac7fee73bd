//! Driver errors -> durable errors, classified once, and the retry of attempts the database
//! refused as a conflict.
//!
//! An operation's attempt returns [`Failure`], which keeps the sqlx error as it is; [`retry`]
//! classifies it ([`classify`]), runs the attempt again when the database says so and it is safe
//! (the transaction was rolled back, nothing was written), and only then makes it an [`Error`].

use std::future::Future;
use std::time::Duration;

use durable_core::{Error, Operation};

/// Why one attempt of an operation failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The driver's error, not classified yet.
    Sql(sqlx::Error),
    /// A durable error already (a damaged version record, a value that is not an integer, ...):
    /// returned as it is, never retried.
    Done(Error),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Sql(error)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Done(error)
    }
}

/// What a driver error says about the operation that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The database refused the statement or rolled the transaction back because of another
    /// transaction (deadlock, serialization failure, MariaDB's "table definition has changed"
    /// after a concurrent `TRUNCATE`): nothing was written, run it again.
    Conflict,
    /// A lock could not be had in time (lock wait timeout, `SQLITE_BUSY` after the busy
    /// timeout, a statement timeout): nothing was written, it may be run again.
    Busy,
    /// The database cannot be reached or is going away (connection refused or lost, server
    /// shutting down, pool timeout). Not retried: a lost `COMMIT` may have committed.
    Unavailable,
    /// Anything else (a bad statement, a constraint, a decode error): a bug or damaged data.
    Other,
}

/// Classifies a driver error (see [`Class`]).
pub(crate) fn classify(error: &sqlx::Error) -> Class {
    let db = match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => return Class::Unavailable,
        sqlx::Error::Database(db) => db,
        _ => return Class::Other,
    };
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return match my.number() {
            // Deadlock; "Table definition has changed, please retry transaction" (a consistent
            // snapshot older than a TRUNCATE or ALTER of a table it then reads); "Record has
            // changed since last read" (MariaDB's innodb_snapshot_isolation).
            1213 | 1412 | 1020 => Class::Conflict,
            // Lock wait timeout; statement time limits (MariaDB, MySQL).
            1205 | 1969 | 3024 => Class::Busy,
            // Too many connections, shutdown in progress, server gone, lost connection,
            // connection killed, query interrupted, server read-only (during a failover).
            1040 | 1053 | 1317 | 1290 | 1836 | 1927 | 2002 | 2003 | 2006 | 2013 => {
                Class::Unavailable
            }
            _ => Class::Other,
        };
    }
    let code = db.code();
    let code = code.as_deref().unwrap_or("");
    #[cfg(feature = "sqlite")]
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Extended result codes: the primary code is the low byte.
        return match code.parse::<i32>().map(|c| c & 0xff) {
            // SQLITE_BUSY (after the busy timeout), SQLITE_LOCKED.
            Ok(5 | 6) => Class::Busy,
            // SQLITE_CANTOPEN.
            Ok(14) => Class::Unavailable,
            _ => Class::Other,
        };
    }
    match code {
        // PostgreSQL: serialization failure, deadlock.
        "40001" | "40P01" => Class::Conflict,
        // Lock not available (lock_timeout), query canceled (statement_timeout).
        "55P03" | "57014" => Class::Busy,
        // Class 08: connection exceptions; admin shutdown, crash shutdown, cannot connect now;
        // too many connections; idle-in-transaction timeout; commit outcome unknown.
        c if c.starts_with("08") => Class::Unavailable,
        "57P01" | "57P02" | "57P03" | "53300" | "25P03" | "40003" => Class::Unavailable,
        _ if db.message().contains("terminating connection") => Class::Unavailable,
        _ => Class::Other,
    }
}

/// Maps a driver error that is not retried into durable's categories.
pub(crate) fn map_err(backend: &str, operation: Operation, error: sqlx::Error) -> Error {
    match classify(&error) {
        Class::Other => Error::backend(backend, operation, error),
        _ => Error::unavailable(backend, operation, error),
    }
}

/// How many times an attempt refused with [`Class::Conflict`] is run again.
const CONFLICT_RETRIES: u32 = 20;
/// How many times an attempt refused with [`Class::Busy`] is run again (each already waited
/// for the database's own lock timeout).
const BUSY_RETRIES: u32 = 2;

/// Runs `attempt` until it succeeds, fails for good, or was refused too often.
///
/// Every attempt is a whole transaction (or a single statement): a failure of class
/// [`Class::Conflict`] or [`Class::Busy`] means the database wrote nothing, so the attempt is
/// run again after a short random pause. Conflicts that persist become [`Error::Contention`] on
/// `key` when the operation writes one key, [`Error::Unavailable`] otherwise; everything else
/// is mapped by [`map_err`].
pub(crate) async fn retry<T, F, Fut>(
    backend: &str,
    operation: Operation,
    key: Option<&str>,
    mut attempt: F,
) -> durable_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut retries = 0;
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Done(error)) => return Err(error),
            Err(Failure::Sql(error)) => error,
        };
        let class = classify(&error);
        let limit = match class {
            Class::Conflict => CONFLICT_RETRIES,
            Class::Busy => BUSY_RETRIES,
            Class::Unavailable | Class::Other => 0,
        };
        if retries < limit {
            tracing::debug!(backend, %operation, ?class, %error, retries, "retrying");
            retry_pause(retries).await;
            retries += 1;
            continue;
        }
        return Err(match (class, key) {
            (Class::Conflict, Some(key)) => Error::Contention {
                backend: backend.to_owned(),
                key: key.to_owned(),
                attempts: retries + 1,
            },
            _ => map_err(backend, operation, error),
        });
    }
}

/// A short random pause before attempt `retries + 2`.
async fn retry_pause(retries: u32) {
    let micros = rand::random_range(200..2000) * u64::from(retries + 1);
    tokio::time::sleep(Duration::from_micros(micros)).await;
}
