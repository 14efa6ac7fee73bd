//! [`SqlOptions`]: what every SQL store is opened with.

use std::fmt;
use std::time::Duration;

use durable_core::Error;

/// Options shared by every SQL store.
///
/// ```
/// use std::time::Duration;
/// use durable_sql::SqlOptions;
///
/// let options = SqlOptions::new()
///     .with_table_prefix("flags")
///     .with_tombstone_retention(Duration::from_secs(600))
///     .with_max_connections(4);
/// assert_eq!(options.table_prefix(), "flags");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SqlOptions {
    table_prefix: String,
    tombstone_retention: Duration,
    max_connections: u32,
    create_schema: bool,
    acquire_timeout: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            table_prefix: "durable".to_owned(),
            tombstone_retention: Duration::from_secs(3600),
            max_connections: 8,
            create_schema: true,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for SqlOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlOptions")
            .field("table_prefix", &self.table_prefix)
            .field("tombstone_retention", &self.tombstone_retention)
            .field("max_connections", &self.max_connections)
            .field("create_schema", &self.create_schema)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl SqlOptions {
    /// The defaults: table prefix `durable` (tables `durable_entries`, `durable_versions` and
    /// `durable_stamps`), tombstones kept one hour, at most 8 connections, schema created on
    /// open, 5 s to get a connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// The prefix of the table names (`{prefix}_entries`, `{prefix}_versions`,
    /// `{prefix}_stamps`). It must be an identifier: 1 to 40 characters from `a-z A-Z 0-9 _`,
    /// not starting with a digit; checked when the store connects ([`Error::Config`]
    /// otherwise).
    pub fn with_table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = prefix.into();
        self
    }

    /// How long a delete's tombstone is kept for delta syncs (default one hour). A handle whose
    /// token is older than the trimmed history gets a full reload instead of a delta.
    pub fn with_tombstone_retention(mut self, retention: Duration) -> Self {
        self.tombstone_retention = retention;
        self
    }

    /// The largest number of pooled connections (default 8; at least 1).
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Whether the store creates (or completes) its tables when it connects (default true).
    /// With `false`, connecting makes no round trip at all: the first operation connects.
    pub fn with_create_schema(mut self, yes: bool) -> Self {
        self.create_schema = yes;
        self
    }

    /// How long an operation waits for a pooled connection, including connecting, before it
    /// fails with [`Error::Unavailable`] (default 5 s).
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The table name prefix.
    pub fn table_prefix(&self) -> &str {
        &self.table_prefix
    }

    /// How long tombstones are kept.
    pub fn tombstone_retention(&self) -> Duration {
        self.tombstone_retention
    }

    /// The largest number of pooled connections.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// Whether the schema is created on connect.
    pub fn create_schema(&self) -> bool {
        self.create_schema
    }

    /// How long to wait for a connection.
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// Checks the table prefix.
    #[cfg_attr(
        not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
        allow(dead_code)
    )]
    pub(crate) fn validate(&self) -> durable_core::Result<()> {
        validate_identifier(&self.table_prefix)
    }
}

/// Checks that `name` is a safe SQL identifier (it is pasted into SQL text).
pub(crate) fn validate_identifier(name: &str) -> durable_core::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "table prefix {name:?} must be 1 to 40 characters from a-z, A-Z, 0-9 and '_', not \
             starting with a digit"
        )))
    }
}

/// The longest key the SQL backends accept, in bytes (an index limit of MySQL and PostgreSQL;
/// applied to SQLite too so that dictionaries move between databases).
pub const MAX_KEY_LEN: usize = 2048;

/// The most expired entries one sweep step removes: those that expired first, with any that
/// expired in the same millisecond as the last of them. The engine sweeps again while more
/// remain; a bounded step keeps its transaction, and the version row lock it holds, short
/// (tombstoning a million rows at once takes seconds, longer than an operation may).
pub const SWEEP_STEP: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated() {
        assert!(validate_identifier("durable").is_ok());
        assert!(validate_identifier("app_2").is_ok());
        assert!(validate_identifier("").is_err());
        assert!(validate_identifier("2x").is_err());
        assert!(validate_identifier("a;drop").is_err());
        assert!(validate_identifier("a\"b").is_err());
    }
}
