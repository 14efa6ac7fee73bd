//! SQLite: what it does differently. A file (or a private in-memory database) instead of a
//! server, `BEGIN IMMEDIATE` for writes, dynamic typing checked in SQL, numbered placeholders
//! in the two-statement bump.

use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use durable_core::credentials::{Secrets, redact};
use durable_core::{Error, Operation, Result, STAMP_HISTORY};
use sqlx::error::DatabaseError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};

use crate::dialect::{Dialect, sealed};
use crate::error::{Class, Reason, Target};
use crate::sql::{Bump, DialectSql, Tables};
use crate::{SqlBackend, SqlOptions, SqlStore};

/// The SQLite [`Dialect`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Sqlite;

/// A SQLite database (a file, or `sqlite::memory:`) holding any number of dictionaries.
///
/// Clones share one connection pool. Several processes may open the same file: writes take the
/// database's write lock at their start (`BEGIN IMMEDIATE`) and wait up to the busy timeout
/// (5 s) for it; readers never block writers (WAL).
///
/// URLs: `sqlite://path/to/file.db` (relative or absolute path, e.g.
/// `sqlite:///var/lib/app/flags.db`), `sqlite:file.db`, or `sqlite::memory:` for a private
/// in-memory database shared by the backends of this store (kept while the store lives).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> durable_core::Result<()> {
/// use durable_core::{Dict, Json, Options};
/// use durable_sql::SqliteStore;
///
/// let dir = tempfile::tempdir().unwrap();
/// let url = format!("sqlite://{}", dir.path().join("flags.db").display());
/// let store = SqliteStore::connect(&url).await?;
/// let flags: Dict<bool> = Dict::open(store.backend("app", "flags")?, Json, Options::new()).await?;
/// flags.insert("dark-mode", true).await?;
/// assert_eq!(flags.snapshot().get("dark-mode"), Some(&true));
/// # Ok(()) }
/// ```
pub type SqliteStore = SqlStore<Sqlite>;

/// One dictionary of a [`SqliteStore`]: a [`Backend`](durable_core::Backend) with every
/// capability except push.
pub type SqliteBackend = SqlBackend<Sqlite>;

impl sealed::Sealed for Sqlite {}

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;
    type Push = ();

    const NAME: &'static str = "sqlite";
    const TYPE_NAME: &'static str = "Sqlite";
    const PUSH: bool = false;
    const KEYS_AS_BYTES: bool = false;
    const NUMBERED: bool = false;
    /// Nothing to learn from a connection made directly: the pool does not retry SQLite's
    /// errors, so an operation fails at once with the cause anyway.
    const PROBES: bool = false;
    /// Takes the write lock at once, never upgrading a read lock (which could fail with
    /// `SQLITE_BUSY` mid-transaction).
    const BEGIN_WRITE: Option<&'static str> = Some("BEGIN IMMEDIATE");
    const BEGIN_READ: &'static str = "BEGIN DEFERRED";
    const HAS_TABLE: &'static str =
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?";
    const SCHEMA_LOCK: Option<&'static str> = None;

    fn sql(tables: &Tables) -> DialectSql {
        let (v, valid_counter) = (&tables.versions, tables.valid_counter());
        let (upsert_tail, stamp_upsert_tail) = tables.on_conflict_updates();
        // Dynamic typing: an INTEGER column may hold text or a real number.
        let valid = format!(
            "typeof(epoch) = 'integer' AND typeof(counter) = 'integer' AND typeof(stamp) = \
             'integer' AND typeof(parent) = 'integer' AND typeof(oldest_served) = 'integer' AND \
             {valid_counter}"
        );
        // Two statements in one call (sqlx binds `?N` to the N-th argument in each); the
        // parameters are (stamp, ns, dict), each used twice.
        let bump = format!(
            "UPDATE {v} SET counter = counter + 1, parent = stamp, stamp = ?1 WHERE namespace = \
             ?2 AND dictionary = ?3 AND {valid} RETURNING epoch, counter, parent; {} SELECT \
             namespace, dictionary, counter % {STAMP_HISTORY}, counter, stamp FROM {v} WHERE \
             namespace = ?2 AND dictionary = ?3 AND stamp = ?1{stamp_upsert_tail}",
            tables.stamp_insert(),
        );
        DialectSql {
            lock: "",
            // One B-tree for the stamp history (no rowid table beside the key's index): a
            // write dirties one page of it.
            schema: tables.schema("INTEGER", "BLOB", " WITHOUT ROWID"),
            columns: "SELECT name FROM pragma_table_info(?)",
            insert_or_ignore: ("INSERT OR IGNORE INTO", ""),
            upsert_tail,
            stamp_upsert_tail,
            // Text sorts above every number.
            valid_revision: format!(
                "typeof(revision) = 'integer' AND {}",
                tables.valid_revision()
            ),
            // 'now' has millisecond precision; 2440587.5 is the Julian day of the Unix epoch.
            clock: "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)",
            bump: Bump::Returning(bump),
        }
    }

    fn classify(error: &dyn DatabaseError) -> Class {
        // Extended result codes: the primary code is the low byte.
        match primary_code(error) {
            // SQLITE_BUSY (after the busy timeout), SQLITE_LOCKED.
            Some(5 | 6) => Class::Busy,
            // SQLITE_CANTOPEN.
            Some(14) => Class::Unavailable,
            _ => Class::Other,
        }
    }

    fn reason(error: &dyn DatabaseError, _: &str) -> Option<Reason> {
        // SQLITE_CANTOPEN, with its extended codes.
        (primary_code(error) == Some(14)).then_some(Reason::CannotOpenFile)
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn connect(url: &str, options: SqlOptions) -> Result<SqliteStore> {
        options.validate()?;
        let shown = redact(url);
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("SQLite URL {shown:?}: {e}")))?;
        // A missing directory is named by the first connection's error (the path is in it).
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        SqliteStore::connect_options(connect, in_memory, &shown, options).await
    }

    fn push(_: &SqliteConnectOptions, _: &SqlOptions) {}
}

/// The primary result code of a SQLite error (the low byte of its extended code).
fn primary_code(error: &dyn DatabaseError) -> Option<i32> {
    let code = error.code()?;
    code.parse::<i32>().ok().map(|c| c & 0xff)
}

impl SqliteStore {
    /// Opens a database from sqlx connect options (for settings a URL cannot carry).
    /// `in_memory` must say whether they name an in-memory database (it is then served by a
    /// single connection kept open while the store lives). A file that cannot be opened fails
    /// with its path, and names its directory when that does not exist.
    pub async fn connect_options(
        connect: SqliteConnectOptions,
        in_memory: bool,
        shown: &str,
        options: SqlOptions,
    ) -> Result<Self> {
        options.validate()?;
        let target = Target {
            place: if in_memory {
                "the in-memory database".to_owned()
            } else {
                connect.get_filename().display().to_string()
            },
            database: None,
            acquire_timeout: options.acquire_timeout(),
            secrets: Secrets::default(),
            dialect: PhantomData,
        };
        let mut connect = connect
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(false);
        let mut pool = SqlitePoolOptions::new().acquire_timeout(options.acquire_timeout());
        if in_memory {
            // One connection, never closed: the database lives as long as it does.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            connect = connect
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            pool = pool.max_connections(options.max_connections());
        }
        let pool = if in_memory {
            pool.connect_with(connect.clone()).await
        } else {
            Ok(pool.connect_lazy_with(connect.clone()))
        }
        .map_err(|e| target.explain(Operation::Open, e))?;
        SqlStore::assemble(pool, connect, target, redact(shown), options).await
    }
}
