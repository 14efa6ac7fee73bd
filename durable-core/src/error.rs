//! The one error type of durable.
//!
//! Every backend maps its driver's precise errors into these categories, keeping the original
//! error as the [`source`](std::error::Error::source). Errors are cheap to clone (sources are
//! shared), because one failed version check is reported to every caller that joined it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A shared, thread-safe error source.
pub type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for results of durable operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The operation that failed, named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Connecting to the store or opening a dictionary.
    Open,
    /// The cheap version check (`last_updated`).
    Version,
    /// A full load of every entry (`durables`).
    Load,
    /// A delta read (`changes_since`).
    Changes,
    /// Storing one value (`persist`).
    Persist,
    /// Deleting one key (`depersist`).
    Depersist,
    /// Insert-if-absent.
    InsertIfAbsent,
    /// Compare-and-swap on an entry's revision.
    CompareAndSwap,
    /// Delete returning the old value.
    Pop,
    /// Atomic integer increment.
    Increment,
    /// Several writes in one atomic step.
    Batch,
    /// Deleting every entry.
    Clear,
    /// Subscribing to push hints.
    Subscribe,
    /// Creating or migrating the store's schema.
    Schema,
    /// Trimming old tombstones and change-log records.
    Trim,
    /// Reading the store's clock.
    Now,
    /// Storing one value with a time to live.
    PersistExpiring,
    /// Deleting the expired entries.
    Sweep,
}

impl Operation {
    /// True for the operations whose work grows with the dictionary, a full load and a clear:
    /// the engine runs them under the load timeout
    /// ([`Options::with_load_timeout`](crate::Options::with_load_timeout)), every other one
    /// under the operation timeout.
    pub fn grows_with_dictionary(self) -> bool {
        matches!(self, Operation::Load | Operation::Clear)
    }

    /// The operation's name as used in messages, e.g. `persist`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Open => "open",
            Operation::Version => "version check",
            Operation::Load => "load",
            Operation::Changes => "changes since",
            Operation::Persist => "persist",
            Operation::Depersist => "depersist",
            Operation::InsertIfAbsent => "insert if absent",
            Operation::CompareAndSwap => "compare and swap",
            Operation::Pop => "pop",
            Operation::Increment => "increment",
            Operation::Batch => "batch",
            Operation::Clear => "clear",
            Operation::Subscribe => "subscribe",
            Operation::Schema => "schema",
            Operation::Trim => "trim",
            Operation::Now => "store clock",
            Operation::PersistExpiring => "persist with TTL",
            Operation::Sweep => "sweep",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong in durable, by category.
///
/// Match on the variant to decide what to do (retry on [`Error::Unavailable`] and
/// [`Error::Timeout`], fix the data on [`Error::Decode`], ...); print it to tell a person which
/// backend, key and operation were involved.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be reached or refused the operation for a transient reason
    /// (connection refused or lost, server shutting down, too many connections). Nothing was
    /// changed locally; the operation may or may not have been applied if the connection was lost
    /// after sending it.
    #[error("{backend}: {operation} failed, store unavailable: {source}")]
    Unavailable {
        /// The backend's name, e.g. `redis`.
        backend: String,
        /// What was being done.
        operation: Operation,
        /// The driver's error.
        source: Source,
    },
    /// The dictionary's version record in the store is damaged (a field missing or not an
    /// integer, a negative or absurd counter, entries without a record): nothing was written.
    /// A write through a backend that repairs such records starts a fresh epoch instead.
    #[error("{backend}: {operation} refused: the version record is damaged: {reason}")]
    Damaged {
        /// The backend's name.
        backend: String,
        /// What was being done.
        operation: Operation,
        /// What is wrong with the record, naming the dictionary.
        reason: String,
    },
    /// A stored row the backend could not read (a key that is not UTF-8, a value of the wrong
    /// type, a malformed record): it costs that key only, which keeps its last good value.
    #[error("{backend}: the stored row of key {key:?} cannot be read: {reason}")]
    Unreadable {
        /// The backend's name.
        backend: String,
        /// The key as far as it can be read.
        key: String,
        /// What is wrong with the row, naming the dictionary.
        reason: String,
    },
    /// The operation did not finish within its time limit.
    #[error("{backend}: {operation} timed out after {after:?}")]
    Timeout {
        /// The backend's name.
        backend: String,
        /// What was being done.
        operation: Operation,
        /// The time limit that was exceeded.
        after: Duration,
    },
    /// A stored value could not be decoded into the dictionary's value type.
    #[error("{backend}: value of key {key:?} cannot be decoded as {encoding}: {source}")]
    Decode {
        /// The backend's name.
        backend: String,
        /// The key whose value is bad.
        key: String,
        /// The encoding's name, e.g. `json`.
        encoding: &'static str,
        /// The decoder's error.
        source: Source,
    },
    /// A value could not be encoded; nothing was written.
    #[error("{backend}: value for key {key:?} cannot be encoded as {encoding}: {source}")]
    Encode {
        /// The backend's name.
        backend: String,
        /// The key being written.
        key: String,
        /// The encoding's name.
        encoding: &'static str,
        /// The encoder's error.
        source: Source,
    },
    /// The backend does not offer this operation (see [`Capabilities`](crate::Capabilities)).
    #[error("{backend}: {operation} is not supported by this backend")]
    NotSupported {
        /// The backend's name.
        backend: String,
        /// The missing operation.
        operation: Operation,
    },
    /// A dictionary name or namespace is not valid.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A key cannot be stored by this backend (for example too long for its limits).
    #[error("{backend}: key {key:?} is not valid: {reason}")]
    InvalidKey {
        /// The backend's name.
        backend: String,
        /// The rejected key (possibly shortened for display by the backend).
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A value is larger than the backend can store or the handle's options allow; nothing was
    /// written.
    #[error("{backend}: value of key {key:?} is {size} bytes, the limit is {limit}")]
    ValueTooLarge {
        /// The backend's name.
        backend: String,
        /// The key being written.
        key: String,
        /// The encoded value's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The dictionary would hold more entries or bytes than
    /// [`Options::with_max_entries`](crate::Options::with_max_entries) or
    /// [`Options::with_max_total_bytes`](crate::Options::with_max_total_bytes) allow: a write
    /// wrote nothing, a sync kept the last good snapshot.
    #[error("{backend}: {detail}")]
    LimitExceeded {
        /// The backend's name.
        backend: String,
        /// Which limit, and by how much.
        detail: String,
    },
    /// `increment` was asked of a key whose stored value is not an integer, or the result would
    /// overflow an `i64`.
    #[error("{backend}: key {key:?} does not hold an integer that can be incremented")]
    NotAnInteger {
        /// The backend's name.
        backend: String,
        /// The key.
        key: String,
    },
    /// An optimistic update lost the race for a key too many times in a row.
    #[error("{backend}: update of key {key:?} gave up after {attempts} conflicting attempts")]
    Contention {
        /// The backend's name.
        backend: String,
        /// The contended key.
        key: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The backup snapshot file could not be read or written.
    #[error("backup file {}: {reason}", path.display())]
    Backup {
        /// The backup file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Source>,
    },
    /// A configuration value (URL, option) is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Any other failure of the store, e.g. a server-side error or a corrupt internal record.
    #[error("{backend}: {operation} failed: {source}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// What was being done.
        operation: Operation,
        /// The driver's error.
        source: Source,
    },
}

impl Error {
    /// An [`Error::Unavailable`] from any error type.
    pub fn unavailable(
        backend: impl Into<String>,
        operation: Operation,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Unavailable {
            backend: backend.into(),
            operation,
            source: Arc::from(source.into()),
        }
    }

    /// An [`Error::Backend`] from any error type.
    pub fn backend(
        backend: impl Into<String>,
        operation: Operation,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            backend: backend.into(),
            operation,
            source: Arc::from(source.into()),
        }
    }

    /// An [`Error::NotSupported`].
    pub fn not_supported(backend: impl Into<String>, operation: Operation) -> Self {
        Error::NotSupported {
            backend: backend.into(),
            operation,
        }
    }

    /// The error's category as a short stable name (`unavailable`, `timeout`, `damaged`,
    /// `decode`, ...), for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Unavailable { .. } => "unavailable",
            Error::Damaged { .. } => "damaged",
            Error::Unreadable { .. } => "unreadable",
            Error::Timeout { .. } => "timeout",
            Error::Decode { .. } => "decode",
            Error::Encode { .. } => "encode",
            Error::NotSupported { .. } => "not_supported",
            Error::InvalidName { .. } => "invalid_name",
            Error::InvalidKey { .. } => "invalid_key",
            Error::ValueTooLarge { .. } => "value_too_large",
            Error::LimitExceeded { .. } => "limit_exceeded",
            Error::NotAnInteger { .. } => "not_an_integer",
            Error::Contention { .. } => "contention",
            Error::Backup { .. } => "backup",
            Error::Config(_) => "config",
            Error::Backend { .. } => "backend",
        }
    }

    /// True for errors that say the store could not be reached in time ([`Error::Unavailable`]
    /// and [`Error::Timeout`]): retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }
}
