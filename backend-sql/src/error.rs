//! Driver errors -> durable errors, classified once, and the retry of attempts the database
//! refused as a conflict.
//!
//! An operation's attempt returns [`Failure`], which keeps the sqlx error as it is; [`retry`]
//! classifies it ([`classify`]) and runs the attempt again when the database says so and it is
//! safe (the transaction was rolled back, nothing was written); the store's [`Target`] then makes
//! it an [`Error`] that says what went wrong in words and shows no credentials.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_core::credentials::Secrets;
use durable_core::{Error, Operation};

use crate::dialect::{Connect, Dialect};

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
pub enum Class {
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

/// Classifies a driver error (see [`Class`]); what a database error means is the dialect's
/// to say ([`Dialect::classify`]).
pub(crate) fn classify<D: Dialect>(error: &sqlx::Error) -> Class {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Class::Unavailable,
        sqlx::Error::Database(db) => D::classify(db.as_ref()),
        _ => Class::Other,
    }
}

/// Where a store connects, to explain driver errors in words (connection refused, unknown host,
/// authentication, missing database, missing directory) and to keep the URL's credentials out of
/// them.
pub(crate) struct Target<D> {
    /// `host:port`, a socket path or a database file, as messages name it (never credentials).
    pub(crate) place: String,
    /// The database name, where the URL gives one (PostgreSQL, MySQL).
    pub(crate) database: Option<String>,
    /// How long the pool waits for a connection.
    pub(crate) acquire_timeout: Duration,
    /// What messages must not show.
    pub(crate) secrets: Secrets,
    pub(crate) dialect: PhantomData<D>,
}

impl<D> fmt::Debug for Target<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("place", &self.place)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// The category a driver error falls in, with its explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// [`Error::Config`]: retrying cannot help (credentials refused, no such database).
    Config,
    /// [`Error::Unavailable`].
    Unavailable,
    /// [`Error::Backend`].
    Backend,
}

/// A driver error explained: the message says what went wrong (credentials scrubbed); the
/// driver's error is kept as the source when it shows no credentials.
#[derive(Debug)]
pub(crate) struct Cause {
    message: String,
    source: Option<sqlx::Error>,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl<D: Dialect> Target<D> {
    /// Maps a driver error that is not retried into durable's categories, explained.
    pub(crate) fn explain(&self, operation: Operation, error: sqlx::Error) -> Error {
        let (kind, message) = self.describe(&error);
        let clean = !self.secrets.shown_in(&error.to_string())
            && !self.secrets.shown_in(&format!("{error:?}"));
        let cause = Cause {
            message,
            source: clean.then_some(error),
        };
        self.error(kind, operation, cause)
    }

    /// [`explain`](Self::explain) for an error the caller keeps (a failed probe, shared by the
    /// callers that wait for it): the source is the explanation alone.
    pub(crate) fn explain_ref(&self, operation: Operation, error: &sqlx::Error) -> Error {
        let (kind, message) = self.describe(error);
        self.error(
            kind,
            operation,
            Cause {
                message,
                source: None,
            },
        )
    }

    fn error(&self, kind: Kind, operation: Operation, cause: Cause) -> Error {
        match kind {
            Kind::Config => Error::Config(format!("{}: {operation}: {cause}", D::NAME)),
            Kind::Unavailable => Error::unavailable(D::NAME, operation, cause),
            Kind::Backend => Error::backend(D::NAME, operation, cause),
        }
    }

    /// What `error` means, in words, with credentials scrubbed.
    fn describe(&self, error: &sqlx::Error) -> (Kind, String) {
        let place = &self.place;
        let by_class = || match classify::<D>(error) {
            Class::Other => Kind::Backend,
            _ => Kind::Unavailable,
        };
        let (kind, message) = match error {
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
                Kind::Unavailable,
                format!("connection refused by {place} ({io})"),
            ),
            sqlx::Error::Io(io) if io.to_string().contains("lookup address") => (
                Kind::Unavailable,
                format!("unknown host: the name of {place} cannot be resolved ({io})"),
            ),
            sqlx::Error::Io(io) => (Kind::Unavailable, format!("connection to {place}: {io}")),
            sqlx::Error::Tls(tls) => (Kind::Unavailable, format!("TLS with {place}: {tls}")),
            sqlx::Error::PoolTimedOut => (
                Kind::Unavailable,
                format!(
                    "no connection to {place} within {:?} (every pooled connection busy, or the \
                     server too slow to accept one)",
                    self.acquire_timeout
                ),
            ),
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default().into_owned();
                let said = format!("{} (code {code})", db.message());
                let database = self.database.as_deref().unwrap_or_default();
                match D::reason(db.as_ref(), &code) {
                    Some(Reason::Authentication) => (
                        Kind::Config,
                        format!(
                            "authentication failed at {place} (check the user name and password \
                             of the URL): {said}"
                        ),
                    ),
                    Some(Reason::MissingDatabase) => (
                        Kind::Config,
                        format!("database {database:?} does not exist on {place}: {said}"),
                    ),
                    Some(Reason::CannotOpenFile) => {
                        let path = std::path::Path::new(place);
                        let why = match path.parent() {
                            Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                                format!("directory {} does not exist", dir.display())
                            }
                            _ => "the file cannot be opened or created here".to_owned(),
                        };
                        (
                            Kind::Unavailable,
                            format!("cannot open database file {place}: {why} ({said})"),
                        )
                    }
                    None => (by_class(), said),
                }
            }
            other => (by_class(), other.to_string()),
        };
        (kind, self.secrets.scrub(&message))
    }
}

/// Makes operations fail fast, with the real cause, when the database cannot be reached.
///
/// A pool retries a refused connection until its acquire timeout and then says only "pool timed
/// out". So when a pool holds no connection at all (at connect, or once the server went away
/// and the pool dropped its connections), one connection is first made directly (a probe), and
/// its error (connection refused, unknown host, authentication failed, no such database) fails
/// the operation at once. Concurrent callers share one probe; its outcome is reused for
/// [`FRESH`](Gate::FRESH).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    last: tokio::sync::Mutex<Option<(Instant, Option<Arc<sqlx::Error>>)>>,
}

impl Gate {
    /// How long a probe's outcome is reused.
    const FRESH: Duration = Duration::from_millis(250);

    /// Ok if a connection can be made (a probe made less than [`FRESH`](Self::FRESH) ago
    /// counts), else the probe's error, explained for `operation`.
    pub(crate) async fn pass<D: Dialect, F, Fut>(
        &self,
        target: &Target<D>,
        operation: Operation,
        probe: F,
    ) -> Result<(), Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), sqlx::Error>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, outcome)) = &*last
            && at.elapsed() < Self::FRESH
        {
            return match outcome {
                None => Ok(()),
                Some(error) => Err(target.explain_ref(operation, error)),
            };
        }
        let outcome = probe().await.err().map(Arc::new);
        *last = Some((Instant::now(), outcome.clone()));
        match outcome {
            None => Ok(()),
            Some(error) => Err(target.explain_ref(operation, &error)),
        }
    }

    /// Probes now, whatever the last outcome (after the pool timed out connecting).
    pub(crate) async fn probe_now<D: Dialect, F, Fut>(
        &self,
        target: &Target<D>,
        operation: Operation,
        probe: F,
    ) -> Result<(), Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), sqlx::Error>>,
    {
        *self.last.lock().await = None;
        self.pass(target, operation, probe).await
    }
}

/// One connection made directly with `connect` within `timeout`, then closed: what
/// [`Gate`] calls a probe. Where the dialect does not probe (SQLite: its pool does not retry
/// errors, so an operation fails at once with the cause anyway), nothing is learned: Ok.
pub(crate) async fn probe<D: Dialect>(
    connect: &Connect<D>,
    timeout: Duration,
) -> Result<(), sqlx::Error> {
    use sqlx::{ConnectOptions, Connection};
    if !D::PROBES {
        return Ok(());
    }
    match tokio::time::timeout(timeout, connect.connect()).await {
        Ok(Ok(connection)) => {
            // A failed goodbye changes nothing: the connection is gone either way.
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?}"),
        ))),
    }
}

/// The database errors [`Target`] explains in words of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The server refused the credentials.
    Authentication,
    /// The database named by the URL does not exist.
    MissingDatabase,
    /// The database file cannot be opened or created (SQLite).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    CannotOpenFile,
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
/// run again after a short random pause. Conflicts that persist on `key` (an operation that
/// writes one key) become [`Error::Contention`]; every other driver error is returned as it is,
/// for the caller to explain ([`Target::explain`]).
pub(crate) async fn retry<D: Dialect, T, F, Fut>(
    operation: Operation,
    key: Option<&str>,
    mut attempt: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut retries = 0;
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Done(error)) => return Err(Failure::Done(error)),
            Err(Failure::Sql(error)) => error,
        };
        let class = classify::<D>(&error);
        let limit = match class {
            Class::Conflict => CONFLICT_RETRIES,
            Class::Busy => BUSY_RETRIES,
            Class::Unavailable | Class::Other => 0,
        };
        if retries < limit {
            tracing::debug!(backend = D::NAME, %operation, ?class, %error, retries, "retrying");
            retry_pause(retries).await;
            retries += 1;
            continue;
        }
        return Err(match (class, key) {
            (Class::Conflict, Some(key)) => Failure::Done(Error::Contention {
                backend: D::NAME.to_owned(),
                key: key.to_owned(),
                attempts: retries + 1,
            }),
            _ => Failure::Sql(error),
        });
    }
}

/// A short random pause before attempt `retries + 2`.
async fn retry_pause(retries: u32) {
    let micros = rand::random_range(200..2000) * u64::from(retries + 1);
    tokio::time::sleep(Duration::from_micros(micros)).await;
}
