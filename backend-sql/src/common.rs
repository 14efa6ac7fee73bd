//! What the three databases share: options, the SQL text of each dialect, error mapping.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durable_core::{Error, Operation, StoreTime};

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
    /// The defaults: table prefix `durable` (tables `durable_entries` and `durable_versions`),
    /// tombstones kept one hour, at most 8 connections, schema created on open, 5 s to get a
    /// connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// The prefix of the two table names (`{prefix}_entries`, `{prefix}_versions`). It must be an
    /// identifier: 1 to 40 characters from `a-z A-Z 0-9 _`, not starting with a digit; checked
    /// when the store connects ([`Error::Config`] otherwise).
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

pub(crate) fn check_key(backend: &str, key: &str) -> durable_core::Result<()> {
    if key.len() > MAX_KEY_LEN {
        let shown: String = key.chars().take(40).collect();
        return Err(Error::InvalidKey {
            backend: backend.to_owned(),
            key: format!("{shown}..."),
            reason: format!("{} bytes, the limit is {MAX_KEY_LEN}", key.len()),
        });
    }
    Ok(())
}

/// `url` with its password replaced by `***`, for messages and `Debug`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..scheme_end + 3]);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[authority_end..];
    // Query parameters such as `password=` are redacted too.
    match tail.find('?') {
        Some(q) => {
            out.push_str(&tail[..=q]);
            let params: Vec<String> = tail[q + 1..]
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// Milliseconds since the Unix epoch on this process's clock, for tombstone ages (expiry times
/// come from the database's clock instead).
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// `duration` in whole milliseconds, as stored (saturating).
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A stored time (milliseconds since the Unix epoch on the database's clock) as a [`StoreTime`].
pub(crate) fn store_time(millis: i64) -> StoreTime {
    StoreTime(u64::try_from(millis).unwrap_or(0))
}

/// A fresh random epoch, never 0, as stored (a BIGINT holding the u64's bits).
pub(crate) fn fresh_epoch() -> i64 {
    loop {
        let epoch: u64 = rand::random();
        if epoch != 0 {
            return epoch as i64;
        }
    }
}

/// Converts stored BIGINTs back to a token.
pub(crate) fn version_of(epoch: i64, counter: i64) -> durable_core::Version {
    durable_core::Version::new(epoch as u64, counter as u64)
}

/// Is this driver error a sign that the database cannot be reached (rather than a bug or a bad
/// statement)?
pub(crate) fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            #[cfg(feature = "mysql")]
            if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                // Too many connections, shutdown in progress, server gone, lost connection,
                // lock wait timeout, deadlock, server shutting down.
                if matches!(my.number(), 1040 | 1053 | 2006 | 2013 | 1205 | 1213 | 1927) {
                    return true;
                }
            }
            if is_retryable(err) {
                return true;
            }
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // PostgreSQL: class 08 (connection exception), 57P01..57P03 (shutting down,
            // cannot connect now), 53300 (too many connections).
            code.starts_with("08")
                || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
                // SQLite: SQLITE_BUSY, SQLITE_LOCKED, SQLITE_CANTOPEN (and extended codes).
                || matches!(code, "5" | "6" | "14" | "261" | "262" | "517")
                || db.message().contains("terminating connection")
        }
        _ => false,
    }
}

/// A deadlock or serialization failure: the transaction may simply be run again.
pub(crate) fn is_retryable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01"))
        }
        _ => false,
    }
}

/// Runs a write transaction again, up to 20 times, while the database rolls it back as a
/// deadlock or serialization failure (it then wrote nothing, so running it again is safe).
pub(crate) async fn retry_rolled_back<T, F, Fut>(mut write: F) -> durable_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = durable_core::Result<T>>,
{
    let mut attempt = 0;
    loop {
        match write().await {
            Err(e) if attempt < 20 && rolled_back(&e) => {
                retry_pause(attempt).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// True for an error that says the database rolled the transaction back as a deadlock.
fn rolled_back(error: &Error) -> bool {
    match error {
        Error::Unavailable { source, .. } | Error::Backend { source, .. } => source
            .downcast_ref::<sqlx::Error>()
            .is_some_and(is_retryable),
        _ => false,
    }
}

/// A short random pause before retrying after a deadlock.
pub(crate) async fn retry_pause(attempt: u32) {
    let micros = rand::random_range(200..2000) * u64::from(attempt + 1);
    tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
}

/// Maps a driver error into durable's categories.
pub(crate) fn map_err(backend: &str, operation: Operation, err: sqlx::Error) -> Error {
    if is_unavailable(&err) {
        Error::unavailable(backend, operation, err)
    } else {
        Error::backend(backend, operation, err)
    }
}

/// The PostgreSQL `NOTIFY` channel of the tables with this prefix; the payload of a write is
/// `namespace/dictionary`.
#[cfg(feature = "postgres")]
pub(crate) fn notify_channel(prefix: &str) -> String {
    format!("{prefix}_changes")
}

/// How many parameters one row of a multi-row upsert binds.
pub(crate) const UPSERT_PARAMS: usize = 7;

/// The SQL dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "mysql")]
    MySql,
    #[cfg(feature = "sqlite")]
    Sqlite,
}

/// Every statement a backend runs, with the table names filled in. Placeholders are written `?`
/// in the templates and numbered (`$1`, `$2`, ...) for PostgreSQL.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub(crate) entries: String,
    pub(crate) versions: String,
    /// DDL statements, run in order.
    pub(crate) schema: Vec<String>,
    /// (ns, dict) -> epoch, counter, oldest_served.
    pub(crate) select_version: String,
    /// (ns, dict) -> epoch, counter; locks the row in a write transaction.
    pub(crate) lock_version: String,
    /// (ns, dict): adds one to the counter, which locks the version row until the transaction
    /// ends; returns the new epoch, counter where the dialect has `UPDATE ... RETURNING`.
    pub(crate) bump: String,
    /// Where `bump` returns nothing (MySQL): `lock_version`, run after it to read the new
    /// counter.
    pub(crate) read_bumped: Option<String>,
    /// (ns, dict, epoch, ns, dict): creates the version row if missing, counter = highest
    /// stored revision.
    pub(crate) insert_version: String,
    /// () -> the database's clock: milliseconds since the Unix epoch, a BIGINT.
    pub(crate) now: String,
    /// (ns, dict, key) -> key, value, revision, expires_at of a live entry; locks it in a write
    /// transaction.
    pub(crate) select_entry: String,
    /// (ns, dict, key, value, revision, written_at, expires_at): one row of `upsert_head`.
    pub(crate) upsert_entry: String,
    /// The start of a multi-row upsert: append [`upsert_row`](Sql::upsert_row)s, then
    /// `upsert_tail`.
    pub(crate) upsert_head: String,
    pub(crate) upsert_tail: String,
    /// (value, revision, written_at, ns, dict, key): turns a live entry into a tombstone.
    pub(crate) tombstone_entry: String,
    /// (value, revision, written_at, ns, dict): tombstones every live entry.
    pub(crate) clear: String,
    /// (ns, dict, at) -> key of every live entry expiring at or before `at`; locks them in a
    /// write transaction.
    pub(crate) select_expired: String,
    /// (value, revision, written_at, ns, dict, at): tombstones every live entry expiring at or
    /// before `at`.
    pub(crate) sweep: String,
    /// (ns, dict) -> key, value, revision, expires_at of live entries.
    pub(crate) load_entries: String,
    /// (ns, dict, after) -> key, value, revision, expires_at, tombstone.
    pub(crate) changes: String,
    /// (ns, dict, cutoff) -> highest revision of tombstones older than the cutoff.
    pub(crate) trim_max: String,
    /// (ns, dict, revision): deletes tombstones up to that revision.
    pub(crate) trim_delete: String,
    /// (oldest, ns, dict)
    pub(crate) set_oldest: String,
    /// (ns, dict)
    pub(crate) delete_entries: String,
    /// (ns, dict)
    pub(crate) delete_version: String,
    dialect: Dialect,
}

impl Sql {
    pub(crate) fn new(dialect: Dialect, prefix: &str) -> Sql {
        let e = format!("{prefix}_entries");
        let v = format!("{prefix}_versions");
        // Each dialect: the row lock suffix, the DDL, the version row creation, the end of an
        // upsert, and the database's clock in milliseconds since the Unix epoch.
        #[allow(unreachable_patterns)]
        let (lock, schema, insert_version, upsert_tail, clock): (
            &str,
            Vec<String>,
            String,
            String,
            &str,
        ) = match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => (
                " FOR UPDATE",
                vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {v} (namespace TEXT NOT NULL, dictionary TEXT \
                         NOT NULL, epoch BIGINT NOT NULL, counter BIGINT NOT NULL, oldest_served \
                         BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (namespace, dictionary))"
                    ),
                    format!(
                        "CREATE TABLE IF NOT EXISTS {e} (namespace TEXT NOT NULL, dictionary TEXT \
                         NOT NULL, entry_key TEXT NOT NULL, value BYTEA NOT NULL, revision BIGINT \
                         NOT NULL, tombstone BOOLEAN NOT NULL DEFAULT FALSE, written_at BIGINT \
                         NOT NULL DEFAULT 0, expires_at BIGINT, PRIMARY KEY (namespace, \
                         dictionary, entry_key))"
                    ),
                    format!(
                        "CREATE INDEX IF NOT EXISTS {e}_revision ON {e} (namespace, dictionary, \
                         revision)"
                    ),
                    format!(
                        "CREATE INDEX IF NOT EXISTS {e}_expiry ON {e} (namespace, dictionary, \
                         expires_at) WHERE expires_at IS NOT NULL"
                    ),
                ],
                format!(
                    "INSERT INTO {v} (namespace, dictionary, epoch, counter, oldest_served) \
                     SELECT ?, ?, ?, m, m FROM (SELECT COALESCE(MAX(revision), 0) AS m FROM {e} \
                     WHERE namespace = ? AND dictionary = ?) AS s ON CONFLICT DO NOTHING"
                ),
                " ON CONFLICT (namespace, dictionary, entry_key) DO UPDATE SET value = \
                 EXCLUDED.value, revision = EXCLUDED.revision, tombstone = FALSE, written_at = \
                 EXCLUDED.written_at, expires_at = EXCLUDED.expires_at"
                    .to_owned(),
                // The time of the statement, not of the transaction's start (`now()`).
                "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            ),
            #[cfg(feature = "mysql")]
            Dialect::MySql => (
                " FOR UPDATE",
                vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {v} (namespace VARBINARY(128) NOT NULL, \
                         dictionary VARBINARY(128) NOT NULL, epoch BIGINT NOT NULL, counter \
                         BIGINT NOT NULL, oldest_served BIGINT NOT NULL DEFAULT 0, PRIMARY KEY \
                         (namespace, dictionary)) ENGINE=InnoDB"
                    ),
                    format!(
                        "CREATE TABLE IF NOT EXISTS {e} (namespace VARBINARY(128) NOT NULL, \
                         dictionary VARBINARY(128) NOT NULL, entry_key VARBINARY({MAX_KEY_LEN}) \
                         NOT NULL, value LONGBLOB NOT NULL, revision BIGINT NOT NULL, tombstone \
                         BOOLEAN NOT NULL DEFAULT FALSE, written_at BIGINT NOT NULL DEFAULT 0, \
                         expires_at BIGINT NULL, PRIMARY KEY (namespace, dictionary, \
                         entry_key), INDEX {e}_revision (namespace, dictionary, revision), \
                         INDEX {e}_expiry (namespace, dictionary, expires_at)) ENGINE=InnoDB"
                    ),
                ],
                format!(
                    "INSERT INTO {v} (namespace, dictionary, epoch, counter, oldest_served) \
                     SELECT ?, ?, ?, m, m FROM (SELECT COALESCE(MAX(revision), 0) AS m FROM {e} \
                     WHERE namespace = ? AND dictionary = ?) AS s ON DUPLICATE KEY UPDATE \
                     namespace = namespace"
                ),
                " ON DUPLICATE KEY UPDATE value = VALUES(value), revision = VALUES(revision), \
                 tombstone = FALSE, written_at = VALUES(written_at), expires_at = \
                 VALUES(expires_at)"
                    .to_owned(),
                // UTC arithmetic: `UNIX_TIMESTAMP(NOW(3))` goes through the session's time zone
                // and is an hour off in the repeated hour of a daylight saving change.
                "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000",
            ),
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => (
                "",
                vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {v} (namespace TEXT NOT NULL, dictionary TEXT \
                         NOT NULL, epoch INTEGER NOT NULL, counter INTEGER NOT NULL, \
                         oldest_served INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (namespace, \
                         dictionary))"
                    ),
                    format!(
                        "CREATE TABLE IF NOT EXISTS {e} (namespace TEXT NOT NULL, dictionary TEXT \
                         NOT NULL, entry_key TEXT NOT NULL, value BLOB NOT NULL, revision INTEGER \
                         NOT NULL, tombstone BOOLEAN NOT NULL DEFAULT FALSE, written_at INTEGER \
                         NOT NULL DEFAULT 0, expires_at INTEGER, PRIMARY KEY (namespace, \
                         dictionary, entry_key))"
                    ),
                    format!(
                        "CREATE INDEX IF NOT EXISTS {e}_revision ON {e} (namespace, dictionary, \
                         revision)"
                    ),
                    format!(
                        "CREATE INDEX IF NOT EXISTS {e}_expiry ON {e} (namespace, dictionary, \
                         expires_at) WHERE expires_at IS NOT NULL"
                    ),
                ],
                format!(
                    "INSERT OR IGNORE INTO {v} (namespace, dictionary, epoch, counter, \
                     oldest_served) SELECT ?, ?, ?, m, m FROM (SELECT COALESCE(MAX(revision), 0) \
                     AS m FROM {e} WHERE namespace = ? AND dictionary = ?) AS s"
                ),
                " ON CONFLICT (namespace, dictionary, entry_key) DO UPDATE SET value = \
                 excluded.value, revision = excluded.revision, tombstone = FALSE, written_at = \
                 excluded.written_at, expires_at = excluded.expires_at"
                    .to_owned(),
                // 'now' has millisecond precision; 2440587.5 is the Julian day of the Unix epoch.
                "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)",
            ),
        };
        let upsert_head = format!(
            "INSERT INTO {e} (namespace, dictionary, entry_key, value, revision, tombstone, \
             written_at, expires_at) VALUES "
        );
        // What `StoredEntry`s are read from, in this order.
        let columns = "entry_key, value, revision, expires_at";
        // MySQL has no `UPDATE ... RETURNING`: it reads the bumped row with `lock_version`.
        // PostgreSQL queues the push hint in the same statement (sent if the write commits).
        #[allow(unreachable_patterns)]
        let returning = match dialect {
            #[cfg(feature = "mysql")]
            Dialect::MySql => String::new(),
            #[cfg(feature = "postgres")]
            Dialect::Postgres => format!(
                " RETURNING epoch, counter, pg_notify('{}', namespace || '/' || dictionary)::text",
                notify_channel(prefix)
            ),
            _ => " RETURNING epoch, counter".to_owned(),
        };
        let tombstoning = format!(
            "UPDATE {e} SET tombstone = TRUE, value = ?, revision = ?, written_at = ?, expires_at \
             = NULL WHERE namespace = ? AND dictionary = ? AND tombstone = FALSE"
        );
        let mut sql = Sql {
            schema,
            select_version: format!(
                "SELECT epoch, counter, oldest_served FROM {v} WHERE namespace = ? AND dictionary = ?"
            ),
            lock_version: format!(
                "SELECT epoch, counter FROM {v} WHERE namespace = ? AND dictionary = ?{lock}"
            ),
            insert_version,
            bump: format!(
                "UPDATE {v} SET counter = counter + 1 WHERE namespace = ? AND dictionary = ?{returning}"
            ),
            read_bumped: None,
            now: format!("SELECT {clock}"),
            select_entry: format!(
                "SELECT {columns} FROM {e} WHERE namespace = ? AND dictionary = ? AND entry_key = \
                 ? AND tombstone = FALSE{lock}"
            ),
            // Filled in below, from `upsert_row`.
            upsert_entry: String::new(),
            upsert_head,
            upsert_tail,
            tombstone_entry: format!("{tombstoning} AND entry_key = ?"),
            select_expired: format!(
                "SELECT entry_key FROM {e} WHERE namespace = ? AND dictionary = ? AND tombstone = \
                 FALSE AND expires_at <= ?{lock}"
            ),
            sweep: format!("{tombstoning} AND expires_at <= ?"),
            clear: tombstoning,
            load_entries: format!(
                "SELECT {columns} FROM {e} WHERE namespace = ? AND dictionary = ? AND tombstone = \
                 FALSE"
            ),
            changes: format!(
                "SELECT {columns}, tombstone FROM {e} WHERE namespace = ? AND dictionary = ? AND \
                 revision > ?"
            ),
            trim_max: format!(
                "SELECT MAX(revision) FROM {e} WHERE namespace = ? AND dictionary = ? AND \
                 tombstone = TRUE AND written_at <= ?"
            ),
            trim_delete: format!(
                "DELETE FROM {e} WHERE namespace = ? AND dictionary = ? AND tombstone = TRUE AND \
                 revision <= ?"
            ),
            set_oldest: format!(
                "UPDATE {v} SET oldest_served = ? WHERE namespace = ? AND dictionary = ? AND \
                 oldest_served < ?"
            ),
            delete_entries: format!("DELETE FROM {e} WHERE namespace = ? AND dictionary = ?"),
            delete_version: format!("DELETE FROM {v} WHERE namespace = ? AND dictionary = ?"),
            entries: e,
            versions: v,
            dialect,
        };
        if returning.is_empty() {
            sql.read_bumped = Some(sql.lock_version.clone());
        }
        sql.upsert_entry = format!(
            "{}{}{}",
            sql.upsert_head,
            sql.upsert_row(0),
            sql.upsert_tail
        );
        sql.numbered()
    }

    /// The placeholders of one row of a multi-row upsert ([`UPSERT_PARAMS`] parameters: ns,
    /// dict, key, value, revision, written_at, expires_at), starting after `bound` parameters.
    pub(crate) fn upsert_row(&self, bound: usize) -> String {
        let [ns, dict, key, value, revision, written_at, expires_at]: [String; UPSERT_PARAMS] =
            std::array::from_fn(|i| self.placeholder(bound + i + 1));
        format!("({ns}, {dict}, {key}, {value}, {revision}, FALSE, {written_at}, {expires_at})")
    }

    /// The `n`th placeholder (1-based).
    pub(crate) fn placeholder(&self, n: usize) -> String {
        #[allow(unreachable_patterns)]
        match self.dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => format!("${n}"),
            _ => {
                let _ = n;
                "?".to_owned()
            }
        }
    }

    /// Numbers the `?` placeholders for PostgreSQL.
    #[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
    fn numbered(mut self) -> Sql {
        #[cfg(feature = "postgres")]
        if self.dialect == Dialect::Postgres {
            fn number(sql: &mut String) {
                let mut out = String::with_capacity(sql.len() + 8);
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push_str(&format!("${n}"));
                    } else {
                        out.push(c);
                    }
                }
                *sql = out;
            }
            for s in [
                &mut self.select_version,
                &mut self.lock_version,
                &mut self.insert_version,
                &mut self.bump,
                &mut self.select_entry,
                &mut self.tombstone_entry,
                &mut self.clear,
                &mut self.select_expired,
                &mut self.sweep,
                &mut self.load_entries,
                &mut self.changes,
                &mut self.trim_max,
                &mut self.trim_delete,
                &mut self.set_oldest,
                &mut self.delete_entries,
                &mut self.delete_version,
            ] {
                number(s);
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://user:secret@host:5432/db?sslmode=require"),
            "postgres://user:***@host:5432/db?sslmode=require"
        );
        assert_eq!(
            redact_url("mysql://root@127.0.0.1/test?password=x&ssl-mode=required"),
            "mysql://root@127.0.0.1/test?password=***&ssl-mode=required"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact_url("sqlite://data.db"), "sqlite://data.db");
    }

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
