//! The SQLite backend.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable_core::Name;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::common::{Dialect, Sql, SqlOptions};
use crate::credentials::{Secrets, redact_url};
use crate::error::{Gate, Target};

type Db = sqlx::Sqlite;
const NAME: &str = "sqlite";
const KEYS_AS_BYTES: bool = false;

/// A SQLite database (a file, or `sqlite::memory:`) holding any number of dictionaries.
///
/// Clones share one connection pool. Several processes may open the same file: writes take the
/// database's write lock at their start (`BEGIN IMMEDIATE`) and wait up to the busy timeout
/// (5 s) for it; readers never block writers (WAL).
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
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pool: SqlitePool,
    sql: Sql,
    options: SqlOptions,
    url: String,
    target: Target,
    /// Never closed: SQLite opens a file at once, with its error (see [`probe`]).
    gate: Gate,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("url", &self.shared.url)
            .field("options", &self.shared.options)
            .field("connections", &self.shared.pool.size())
            .finish()
    }
}

impl SqliteStore {
    /// Opens `url` with the default [`SqlOptions`], creating the file and the schema when
    /// missing. URLs: `sqlite://path/to/file.db` (relative or absolute path, e.g.
    /// `sqlite:///var/lib/app/flags.db`), `sqlite:file.db`, or `sqlite::memory:` for a private
    /// in-memory database shared by the backends of this store (kept while the store lives).
    pub async fn connect(url: &str) -> durable_core::Result<Self> {
        Self::connect_with(url, SqlOptions::new()).await
    }

    /// Opens `url` with `options`.
    pub async fn connect_with(url: &str, options: SqlOptions) -> durable_core::Result<Self> {
        options.validate()?;
        let shown = redact_url(url);
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| durable_core::Error::Config(format!("SQLite URL {shown:?}: {e}")))?;
        // A missing directory is named by the first connection's error (the path is in it).
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        Self::connect_options(connect, in_memory, &shown, options).await
    }

    /// Opens a database from sqlx connect options (for settings a URL cannot carry).
    /// `in_memory` must say whether they name an in-memory database (it is then served by a
    /// single connection kept open while the store lives). A file that cannot be opened fails
    /// with its path, and names its directory when that does not exist.
    pub async fn connect_options(
        connect: SqliteConnectOptions,
        in_memory: bool,
        shown: &str,
        options: SqlOptions,
    ) -> durable_core::Result<Self> {
        options.validate()?;
        let target = Target {
            backend: NAME,
            place: if in_memory {
                "the in-memory database".to_owned()
            } else {
                connect.get_filename().display().to_string()
            },
            database: None,
            acquire_timeout: options.acquire_timeout(),
            secrets: Secrets::default(),
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
            pool.connect_with(connect).await
        } else {
            Ok(pool.connect_lazy_with(connect))
        }
        .map_err(|e| target.explain(durable_core::Operation::Open, e))?;
        let store = SqliteStore {
            shared: Arc::new(Shared {
                pool,
                sql: Sql::new(Dialect::Sqlite, options.table_prefix()),
                options,
                url: redact_url(shown),
                target,
                gate: Gate::default(),
            }),
        };
        if store.shared.options.create_schema() {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Creates the tables and indexes if they are missing and adds the columns that tables
    /// created by an earlier version lack (idempotent; concurrent callers are serialized by
    /// SQLite's write lock).
    pub async fn migrate(&self) -> durable_core::Result<()> {
        let err = |e| {
            self.shared
                .target
                .explain(durable_core::Operation::Schema, e)
        };
        let mut tx = begin_write(&self.shared.pool).await.map_err(err)?;
        for ddl in &self.shared.sql.schema {
            sqlx::query(sqlx::AssertSqlSafe(ddl.as_str()))
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        add_missing_columns(&mut tx, &self.shared.sql)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)
    }

    /// A backend over dictionary `dictionary` in `namespace`.
    pub fn backend(
        &self,
        namespace: &str,
        dictionary: &str,
    ) -> durable_core::Result<SqliteBackend> {
        Ok(SqliteBackend {
            shared: self.shared.clone(),
            namespace: Name::new(namespace)?,
            dictionary: Name::new(dictionary)?,
            last_trim: Mutex::new(Instant::now()),
        })
    }

    /// The connection pool, for your own queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.shared.pool
    }

    /// The entries table's name.
    pub fn entries_table(&self) -> &str {
        &self.shared.sql.entries
    }

    /// The versions table's name.
    pub fn versions_table(&self) -> &str {
        &self.shared.sql.versions
    }

    /// The stamp history table's name.
    pub fn stamps_table(&self) -> &str {
        &self.shared.sql.stamps
    }
}

/// One dictionary of a [`SqliteStore`]: a [`Backend`](durable_core::Backend) with every
/// capability except push.
pub struct SqliteBackend {
    shared: Arc<Shared>,
    namespace: Name,
    dictionary: Name,
    last_trim: Mutex<Instant>,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("url", &self.shared.url)
            .field("namespace", &self.namespace)
            .field("dictionary", &self.dictionary)
            .finish()
    }
}

async fn begin_write(pool: &SqlitePool) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

async fn begin_read(pool: &SqlitePool) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    pool.begin_with("BEGIN DEFERRED").await
}

fn key_arg(key: &str) -> &str {
    key
}

/// Nothing to learn from a connection made directly: the pool does not retry SQLite's errors,
/// so an operation fails at once with the cause anyway.
async fn probe(_: &Shared) -> Result<(), sqlx::Error> {
    Ok(())
}

impl SqliteBackend {
    fn capabilities_impl(&self) -> durable_core::Capabilities {
        durable_core::Capabilities::all().with_push(false)
    }

    async fn subscribe_impl(&self) -> durable_core::Result<durable_core::Hints> {
        Err(durable_core::Error::not_supported(
            NAME,
            durable_core::Operation::Subscribe,
        ))
    }
}

crate::imp::backend_impl!(SqliteBackend);
