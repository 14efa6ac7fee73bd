//! What the three databases share: options, the SQL text of each dialect, error mapping.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durable_core::{Error, StoreTime};

use crate::record::COUNTER_LIMIT;

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

/// A fresh random stamp for a write ([`Version::new_stamp`](durable_core::Version::new_stamp),
/// never 0), as stored: the u64's bits in a signed BIGINT.
pub(crate) fn fresh_stamp() -> i64 {
    durable_core::Version::new_stamp() as i64
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
    pub(crate) stamps: String,
    /// DDL statements, run in order.
    pub(crate) schema: Vec<String>,
    /// (table name) -> the name of each of its columns.
    pub(crate) columns: String,
    /// Columns the versions table gained after its first release, each with the statement that
    /// adds it to a table created before (run by the migration when the column is missing).
    pub(crate) added_columns: Vec<(&'static str, String)>,
    /// (ns, dict) -> epoch, counter, stamp, parent, oldest_served (read loosely, see
    /// [`RawRecord`](crate::record::RawRecord)).
    pub(crate) select_version: String,
    /// `select_version` that also locks the row in a write transaction.
    pub(crate) lock_version: String,
    /// (slot, ns, dict) -> the columns of `select_version`, then the counter and stamp the stamp
    /// history holds in that slot (NULL if none).
    pub(crate) select_version_at: String,
    /// (stamp, ns, dict): if the version record is valid (the rows
    /// [`RawRecord::check`](crate::record::RawRecord::check) accepts), adds one to its counter,
    /// moves its stamp to `parent` and stores the new stamp, which locks the row until the
    /// transaction ends; returns epoch, counter, parent of the new state where the dialect has
    /// `UPDATE ... RETURNING` (no row: the record is missing, damaged or unstamped).
    pub(crate) bump: String,
    /// Where `bump` returns nothing (MySQL): (ns, dict) -> epoch, counter, parent, run after it
    /// when it changed a row.
    pub(crate) read_bumped: Option<String>,
    /// Whether `bump` also records the new stamp in the history (PostgreSQL in one statement,
    /// SQLite in a second statement of the same call); otherwise `record_stamp` runs after it.
    pub(crate) bump_records_stamp: bool,
    /// (ns, dict, slot, counter, stamp): stores the stamp of `counter` in the history.
    pub(crate) record_stamp: String,
    /// (ns, dict) -> the highest valid revision stored (tombstones included), NULL if none.
    pub(crate) max_revision: String,
    /// (ns, dict, epoch, counter, oldest_served, stamp): creates the version record unless one
    /// exists (then it affects no row).
    pub(crate) insert_version: String,
    /// (epoch, counter, oldest_served, stamp, ns, dict): replaces the version record's values.
    pub(crate) reset_version: String,
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
    /// (ns, dict, cutoff) -> highest valid revision of tombstones older than the cutoff.
    pub(crate) trim_max: String,
    /// (ns, dict, revision): deletes tombstones up to that revision.
    pub(crate) trim_delete: String,
    /// (oldest, ns, dict)
    pub(crate) set_oldest: String,
    /// (ns, dict)
    pub(crate) delete_entries: String,
    /// (ns, dict)
    pub(crate) delete_version: String,
    /// (ns, dict)
    pub(crate) delete_stamps: String,
    dialect: Dialect,
}

/// What differs between the dialects, for [`Sql::new`].
struct DialectSql {
    /// The row lock suffix of a `SELECT` in a write transaction.
    lock: &'static str,
    schema: Vec<String>,
    columns: &'static str,
    /// `INSERT` that does nothing on a duplicate primary key: its start and its end.
    insert_or_ignore: (&'static str, &'static str),
    /// The end of an upsert of an entry, and of a stamp history row.
    upsert_tail: String,
    stamp_upsert_tail: String,
    /// The conditions a valid version record meets (see `Sql::bump`).
    valid: String,
    /// The database's clock in milliseconds since the Unix epoch.
    clock: &'static str,
}

impl Sql {
    pub(crate) fn new(dialect: Dialect, prefix: &str) -> Sql {
        let e = format!("{prefix}_entries");
        let v = format!("{prefix}_versions");
        let s = format!("{prefix}_stamps");
        // A valid record's counter can be bumped and stays below 2^53; stamp 0 (or NULL) means
        // "written before stamps existed". PostgreSQL and MySQL columns hold only integers.
        let valid_counter = format!("counter >= 0 AND counter < {COUNTER_LIMIT} AND stamp <> 0");
        // A revision a version record's counter may take: rows written by another program with
        // a revision out of this range are reported unreadable, and never chosen as a counter
        // or as the oldest served token. SQLite also needs the type checked (text sorts above
        // every number).
        #[allow(unreachable_patterns)]
        let valid_revision = match dialect {
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => format!(
                "typeof(revision) = 'integer' AND revision >= 0 AND revision < {COUNTER_LIMIT}"
            ),
            _ => format!("revision >= 0 AND revision < {COUNTER_LIMIT}"),
        };
        #[allow(unreachable_patterns)]
        let d: DialectSql = match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => DialectSql {
                lock: " FOR UPDATE",
                schema: vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {v} (namespace TEXT NOT NULL, dictionary TEXT \
                         NOT NULL, epoch BIGINT NOT NULL, counter BIGINT NOT NULL, oldest_served \
                         BIGINT NOT NULL DEFAULT 0, stamp BIGINT, parent BIGINT NOT NULL DEFAULT \
                         0, PRIMARY KEY (namespace, dictionary))"
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
                    format!(
                        "CREATE TABLE IF NOT EXISTS {s} (namespace TEXT NOT NULL, dictionary TEXT \
                         NOT NULL, slot BIGINT NOT NULL, counter BIGINT NOT NULL, stamp BIGINT \
                         NOT NULL, PRIMARY KEY (namespace, dictionary, slot))"
                    ),
                ],
                // `to_regclass` resolves the name as an unquoted identifier would be.
                columns: "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass(?) \
                          AND attnum > 0 AND NOT attisdropped",
                insert_or_ignore: ("INSERT INTO", " ON CONFLICT DO NOTHING"),
                upsert_tail: " ON CONFLICT (namespace, dictionary, entry_key) DO UPDATE SET value \
                              = EXCLUDED.value, revision = EXCLUDED.revision, tombstone = FALSE, \
                              written_at = EXCLUDED.written_at, expires_at = EXCLUDED.expires_at"
                    .to_owned(),
                stamp_upsert_tail: " ON CONFLICT (namespace, dictionary, slot) DO UPDATE SET \
                                    counter = EXCLUDED.counter, stamp = EXCLUDED.stamp"
                    .to_owned(),
                valid: valid_counter,
                // The time of the statement, not of the transaction's start (`now()`).
                clock: "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            },
            #[cfg(feature = "mysql")]
            Dialect::MySql => DialectSql {
                lock: " FOR UPDATE",
                schema: vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {v} (namespace VARBINARY(128) NOT NULL, \
                         dictionary VARBINARY(128) NOT NULL, epoch BIGINT NOT NULL, counter \
                         BIGINT NOT NULL, oldest_served BIGINT NOT NULL DEFAULT 0, stamp BIGINT \
                         NULL, parent BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (namespace, \
                         dictionary)) ENGINE=InnoDB"
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
                    format!(
                        "CREATE TABLE IF NOT EXISTS {s} (namespace VARBINARY(128) NOT NULL, \
                         dictionary VARBINARY(128) NOT NULL, slot BIGINT NOT NULL, counter \
                         BIGINT NOT NULL, stamp BIGINT NOT NULL, PRIMARY KEY (namespace, \
                         dictionary, slot)) ENGINE=InnoDB"
                    ),
                ],
                columns: "SELECT column_name FROM information_schema.columns WHERE table_schema \
                          = DATABASE() AND table_name = ?",
                insert_or_ignore: ("INSERT IGNORE INTO", ""),
                upsert_tail: " ON DUPLICATE KEY UPDATE value = VALUES(value), revision = \
                              VALUES(revision), tombstone = FALSE, written_at = \
                              VALUES(written_at), expires_at = VALUES(expires_at)"
                    .to_owned(),
                stamp_upsert_tail: " ON DUPLICATE KEY UPDATE counter = VALUES(counter), stamp = \
                                    VALUES(stamp)"
                    .to_owned(),
                valid: valid_counter,
                // UTC arithmetic: `UNIX_TIMESTAMP(NOW(3))` goes through the session's time zone
                // and is an hour off in the repeated hour of a daylight saving change.
                clock: "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV \
                        1000",
            },
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => DialectSql {
                lock: "",
                schema: vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {v} (namespace TEXT NOT NULL, dictionary TEXT \
                         NOT NULL, epoch INTEGER NOT NULL, counter INTEGER NOT NULL, \
                         oldest_served INTEGER NOT NULL DEFAULT 0, stamp INTEGER, parent INTEGER \
                         NOT NULL DEFAULT 0, PRIMARY KEY (namespace, dictionary))"
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
                    format!(
                        // One B-tree (no rowid table beside the key's index): a write
                        // dirties one page of it.
                        "CREATE TABLE IF NOT EXISTS {s} (namespace TEXT NOT NULL, dictionary TEXT \
                         NOT NULL, slot INTEGER NOT NULL, counter INTEGER NOT NULL, stamp INTEGER \
                         NOT NULL, PRIMARY KEY (namespace, dictionary, slot)) WITHOUT ROWID"
                    ),
                ],
                columns: "SELECT name FROM pragma_table_info(?)",
                insert_or_ignore: ("INSERT OR IGNORE INTO", ""),
                upsert_tail: " ON CONFLICT (namespace, dictionary, entry_key) DO UPDATE SET value \
                              = excluded.value, revision = excluded.revision, tombstone = FALSE, \
                              written_at = excluded.written_at, expires_at = excluded.expires_at"
                    .to_owned(),
                stamp_upsert_tail: " ON CONFLICT (namespace, dictionary, slot) DO UPDATE SET \
                                    counter = excluded.counter, stamp = excluded.stamp"
                    .to_owned(),
                // Dynamic typing: an INTEGER column may hold text or a real number.
                valid: format!(
                    "typeof(epoch) = 'integer' AND typeof(counter) = 'integer' AND \
                     typeof(stamp) = 'integer' AND typeof(parent) = 'integer' AND \
                     typeof(oldest_served) = 'integer' AND {valid_counter}"
                ),
                // 'now' has millisecond precision; 2440587.5 is the Julian day of the Unix epoch.
                clock: "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)",
            },
        };
        let lock = d.lock;
        let upsert_head = format!(
            "INSERT INTO {e} (namespace, dictionary, entry_key, value, revision, tombstone, \
             written_at, expires_at) VALUES "
        );
        // What `StoredEntry`s are read from, in this order.
        let columns = "entry_key, value, revision, expires_at";
        let record = "epoch, counter, stamp, parent, oldest_served";
        // PostgreSQL's and MySQL's bump (SQLite's numbers its placeholders, see below).
        #[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(unused))]
        let (set_bumped, bump_where) = (
            "counter = counter + 1, parent = stamp, stamp = ?",
            format!("namespace = ? AND dictionary = ? AND {}", d.valid),
        );
        let stamp_insert = format!("INSERT INTO {s} (namespace, dictionary, slot, counter, stamp)");
        // PostgreSQL bumps, records the stamp and queues the push hint (sent if the write
        // commits) in one statement; SQLite runs two statements in one call (sqlx binds `?N` to
        // the N-th argument in each); MySQL has no `UPDATE ... RETURNING` and reads it back.
        #[allow(unreachable_patterns)]
        let (bump, read_bumped, bump_records_stamp) = match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => (
                format!(
                    "WITH bumped AS (UPDATE {v} SET {set_bumped} WHERE {bump_where} RETURNING \
                     epoch, counter, parent, pg_notify('{channel}', namespace || '/' || \
                     dictionary)::text AS hint), recorded AS ({stamp_insert} SELECT ?, ?, \
                     counter % {history}, counter, ? FROM bumped{tail}) SELECT epoch, \
                     counter, parent, hint FROM bumped",
                    channel = notify_channel(prefix),
                    history = durable_core::STAMP_HISTORY,
                    tail = d.stamp_upsert_tail,
                )
                // The parameters are (stamp, ns, dict), each used twice.
                .replacen('?', "$1", 1)
                .replacen('?', "$2", 1)
                .replacen('?', "$3", 1)
                .replacen('?', "$2", 1)
                .replacen('?', "$3", 1)
                .replacen('?', "$1", 1),
                None,
                true,
            ),
            #[cfg(feature = "mysql")]
            Dialect::MySql => (
                // Assignments run left to right: `parent` takes the old stamp.
                format!("UPDATE {v} SET {set_bumped} WHERE {bump_where}"),
                Some(format!(
                    "SELECT epoch, counter, parent FROM {v} WHERE namespace = ? AND dictionary = ?"
                )),
                false,
            ),
            _ => (
                // The parameters are (stamp, ns, dict), each used twice.
                format!(
                    "UPDATE {v} SET counter = counter + 1, parent = stamp, stamp = ?1 WHERE \
                     namespace = ?2 AND dictionary = ?3 AND {valid} RETURNING epoch, counter, parent; {stamp_insert} SELECT namespace, \
                     dictionary, counter % {history}, counter, stamp FROM {v} WHERE namespace = \
                     ?2 AND dictionary = ?3 AND stamp = ?1{tail}",
                    valid = d.valid,
                    history = durable_core::STAMP_HISTORY,
                    tail = d.stamp_upsert_tail,
                ),
                None,
                true,
            ),
        };
        let tombstoning = format!(
            "UPDATE {e} SET tombstone = TRUE, value = ?, revision = ?, written_at = ?, expires_at \
             = NULL WHERE namespace = ? AND dictionary = ? AND tombstone = FALSE"
        );
        let (insert_start, insert_end) = d.insert_or_ignore;
        let mut sql = Sql {
            schema: d.schema,
            columns: d.columns.to_owned(),
            added_columns: vec![
                ("stamp", format!("ALTER TABLE {v} ADD COLUMN stamp BIGINT")),
                (
                    "parent",
                    format!("ALTER TABLE {v} ADD COLUMN parent BIGINT NOT NULL DEFAULT 0"),
                ),
            ],
            select_version: format!(
                "SELECT {record} FROM {v} WHERE namespace = ? AND dictionary = ?"
            ),
            lock_version: format!(
                "SELECT {record} FROM {v} WHERE namespace = ? AND dictionary = ?{lock}"
            ),
            select_version_at: format!(
                "SELECT v.epoch, v.counter, v.stamp, v.parent, v.oldest_served, s.counter, \
                 s.stamp FROM {v} v LEFT JOIN {s} s ON s.namespace = v.namespace AND \
                 s.dictionary = v.dictionary AND s.slot = ? WHERE v.namespace = ? AND \
                 v.dictionary = ?"
            ),
            bump,
            read_bumped,
            bump_records_stamp,
            record_stamp: format!(
                "{stamp_insert} VALUES (?, ?, ?, ?, ?){}",
                d.stamp_upsert_tail
            ),
            max_revision: format!(
                "SELECT MAX(revision) FROM {e} WHERE namespace = ? AND dictionary = ? AND \
                 {valid_revision}"
            ),
            insert_version: format!(
                "{insert_start} {v} (namespace, dictionary, epoch, counter, oldest_served, stamp, \
                 parent) VALUES (?, ?, ?, ?, ?, ?, 0){insert_end}"
            ),
            reset_version: format!(
                "UPDATE {v} SET epoch = ?, counter = ?, oldest_served = ?, stamp = ?, parent = 0 \
                 WHERE namespace = ? AND dictionary = ?"
            ),
            now: format!("SELECT {}", d.clock),
            select_entry: format!(
                "SELECT {columns} FROM {e} WHERE namespace = ? AND dictionary = ? AND entry_key = \
                 ? AND tombstone = FALSE{lock}"
            ),
            // Filled in below, from `upsert_row`.
            upsert_entry: String::new(),
            upsert_head,
            upsert_tail: d.upsert_tail,
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
                 tombstone = TRUE AND written_at <= ? AND {valid_revision}"
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
            delete_stamps: format!("DELETE FROM {s} WHERE namespace = ? AND dictionary = ?"),
            entries: e,
            versions: v,
            stamps: s,
            dialect,
        };
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

    /// Numbers the `?` placeholders for PostgreSQL (`bump` is written numbered).
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
                &mut self.columns,
                &mut self.select_version,
                &mut self.lock_version,
                &mut self.select_version_at,
                &mut self.record_stamp,
                &mut self.max_revision,
                &mut self.insert_version,
                &mut self.reset_version,
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
                &mut self.delete_stamps,
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
    fn identifiers_are_validated() {
        assert!(validate_identifier("durable").is_ok());
        assert!(validate_identifier("app_2").is_ok());
        assert!(validate_identifier("").is_err());
        assert!(validate_identifier("2x").is_err());
        assert!(validate_identifier("a;drop").is_err());
        assert!(validate_identifier("a\"b").is_err());
    }
}
