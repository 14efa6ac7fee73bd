//! [`SqlStore`]: a database holding any number of dictionaries in three tables. Connecting (by
//! URL or by sqlx's connect options), the pool, and the schema created or completed on connect.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use durable_core::{Name, Operation, Result};
use sqlx::Pool;

use crate::dialect::{Cells, Connect, Dialect, Run, Stmt};
use crate::error::{Gate, Target, probe};
use crate::record::loose_key;
use crate::sql::Sql;
use crate::{SqlBackend, SqlOptions};

/// A database holding any number of dictionaries in three tables (see the crate docs for the
/// schema): [`PostgresStore`](crate::PostgresStore), [`MySqlStore`](crate::MySqlStore) or
/// [`SqliteStore`](crate::SqliteStore).
///
/// Clones share one connection pool. [`backend`](Self::backend) gives the
/// [`Backend`](durable_core::Backend) of one dictionary.
pub struct SqlStore<D: Dialect> {
    pub(crate) shared: Arc<Shared<D>>,
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore {
            shared: self.shared.clone(),
        }
    }
}

/// What the clones of a store and its backends share.
pub(crate) struct Shared<D: Dialect> {
    pub(crate) pool: Pool<D::Db>,
    /// What a probe connects with ([`Gate`]).
    pub(crate) connect: Connect<D>,
    pub(crate) sql: Sql,
    pub(crate) options: SqlOptions,
    /// The URL without credentials.
    pub(crate) url: String,
    pub(crate) target: Target<D>,
    pub(crate) gate: Gate,
    /// Push hint state (see [`Dialect::Push`]).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) push: D::Push,
}

impl<D: Dialect> Shared<D> {
    /// One connection made directly (see [`Gate`]).
    pub(crate) async fn probe(&self) -> sqlx::Result<()> {
        probe::<D>(&self.connect, self.options.acquire_timeout()).await
    }
}

impl<D: Dialect> fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(&format!("{}Store", D::TYPE_NAME))
            .field("url", &self.shared.url)
            .field("options", &self.shared.options)
            .field("connections", &self.shared.pool.size())
            .finish()
    }
}

impl<D: Dialect> SqlStore<D> {
    /// Connects to `url` with the default [`SqlOptions`] and creates the schema when missing.
    ///
    /// URLs: `postgres://user:password@host:5432/database?sslmode=require`,
    /// `mysql://user:password@host:3306/database` (or `mariadb://`), `sqlite://path/to/file.db`
    /// (created when missing), `sqlite::memory:`; see each store type for the details.
    /// User names and passwords never appear in `Debug` output, errors or logs.
    ///
    /// Unless [`SqlOptions::with_create_schema`] is false, this connects once before it
    /// returns, and fails at once with the cause: connection refused, unknown host, a database
    /// file in a missing directory ([`Error::Unavailable`]), authentication failed or no such
    /// database ([`Error::Config`]).
    ///
    /// [`Error::Unavailable`]: durable_core::Error::Unavailable
    /// [`Error::Config`]: durable_core::Error::Config
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, SqlOptions::new()).await
    }

    /// Connects to `url` with `options`.
    pub async fn connect_with(url: &str, options: SqlOptions) -> Result<Self> {
        D::connect(url, options).await
    }

    /// A store over `pool`, which connects with `connect`; creates the schema unless
    /// `options` say otherwise (after a probe: it fails at once, with the cause, when no
    /// connection can be made).
    pub(crate) async fn assemble(
        pool: Pool<D::Db>,
        connect: Connect<D>,
        target: Target<D>,
        url: String,
        options: SqlOptions,
    ) -> Result<Self> {
        let store = SqlStore {
            shared: Arc::new(Shared {
                push: D::push(&connect, &options),
                pool,
                connect,
                sql: Sql::new::<D>(options.table_prefix()),
                options,
                url,
                target,
                gate: Gate::default(),
            }),
        };
        if store.shared.options.create_schema() {
            let shared = &store.shared;
            shared
                .gate
                .pass(&shared.target, Operation::Open, || shared.probe())
                .await?;
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Creates the tables and indexes if they are missing and adds the columns that tables
    /// created by an earlier version lack. Idempotent, and safe when several processes start
    /// at once (serialized by an advisory lock on PostgreSQL, `GET_LOCK` on MySQL, the write
    /// lock on SQLite).
    pub async fn migrate(&self) -> Result<()> {
        D::migrate(self)
            .await
            .map_err(|e| self.shared.target.explain(Operation::Schema, e))
    }

    /// A backend over dictionary `dictionary` in `namespace`.
    pub fn backend(&self, namespace: &str, dictionary: &str) -> Result<SqlBackend<D>> {
        Ok(SqlBackend {
            shared: self.shared.clone(),
            namespace: Name::new(namespace)?,
            dictionary: Name::new(dictionary)?,
            last_trim: Mutex::new(Instant::now()),
        })
    }

    /// The names of the dictionaries of `namespace` stored here (those with a version record),
    /// sorted. Read-only: it creates nothing, not even the schema (a database without the
    /// tables holds no dictionaries).
    pub async fn dictionaries(&self, namespace: &str) -> Result<Vec<String>> {
        let shared = &self.shared;
        let op = Operation::Load;
        shared
            .gate
            .pass(&shared.target, op, || shared.probe())
            .await?;
        let rows = async {
            let mut conn = shared.pool.acquire().await?;
            let table = Stmt::new(D::HAS_TABLE).bind(shared.sql.tables.versions.as_str());
            if conn.fetch_one(table).await?.int(0)? == 0 {
                return Ok(Vec::new());
            }
            let stmt = Stmt::new(&shared.sql.list_dictionaries).bind(namespace);
            conn.fetch_all(stmt).await
        };
        let rows = rows.await.map_err(|e| shared.target.explain(op, e))?;
        // A name another program wrote that is not text costs that row only.
        Ok(rows
            .iter()
            .filter_map(|row| loose_key(row, 0, D::KEYS_AS_BYTES).ok())
            .collect())
    }

    /// The connection pool, for your own queries.
    pub fn pool(&self) -> &Pool<D::Db> {
        &self.shared.pool
    }

    /// The entries table's name.
    pub fn entries_table(&self) -> &str {
        &self.shared.sql.tables.entries
    }

    /// The versions table's name.
    pub fn versions_table(&self) -> &str {
        &self.shared.sql.tables.versions
    }

    /// The stamp history table's name.
    pub fn stamps_table(&self) -> &str {
        &self.shared.sql.tables.stamps
    }
}

/// [`Dialect::migrate`] as most dialects do it: in one write transaction, after the dialect's
/// [`SCHEMA_LOCK`](Dialect::SCHEMA_LOCK).
pub(crate) async fn migrate_in_transaction<D: Dialect>(store: &SqlStore<D>) -> sqlx::Result<()> {
    let shared = &store.shared;
    let mut tx = begin_write::<D>(&shared.pool).await?;
    if let Some(lock) = D::SCHEMA_LOCK {
        tx.run(Stmt::new(lock)).await?;
    }
    for ddl in &shared.sql.schema {
        tx.run(Stmt::new(ddl)).await?;
    }
    add_missing_columns::<D>(&mut tx, &shared.sql).await?;
    tx.commit().await
}

/// Adds the columns the versions table gained since its first release, when missing (run by
/// [`Dialect::migrate`], after the `CREATE ... IF NOT EXISTS` statements).
pub(crate) async fn add_missing_columns<D: Dialect>(
    conn: &mut <D::Db as sqlx::Database>::Connection,
    sql: &Sql,
) -> sqlx::Result<()> {
    let rows = conn
        .fetch_all(Stmt::new(&sql.columns).bind(sql.tables.versions.as_str()))
        .await?;
    let present = rows
        .iter()
        .map(|row| row.text(0))
        .collect::<sqlx::Result<Vec<String>>>()?;
    for (column, ddl) in &sql.added_columns {
        if !present.iter().any(|c| c.eq_ignore_ascii_case(column)) {
            tracing::info!(backend = D::NAME, table = %sql.tables.versions, column, "adding column");
            conn.run(Stmt::new(ddl)).await?;
        }
    }
    Ok(())
}

/// Begins a write transaction (see [`Dialect::BEGIN_WRITE`]).
pub(crate) async fn begin_write<D: Dialect>(
    pool: &Pool<D::Db>,
) -> sqlx::Result<sqlx::Transaction<'static, D::Db>> {
    match D::BEGIN_WRITE {
        Some(begin) => pool.begin_with(begin).await,
        None => pool.begin().await,
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) use server::connect_server;

/// Database servers ([`Server`](crate::dialect::Server)): connecting by URL or connect options,
/// with credentials that never print.
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod server {
    use std::marker::PhantomData;
    use std::str::FromStr;

    use durable_core::credentials::{ParsedUrl, Secrets, redact};
    use durable_core::{Error, Result};
    use sqlx::pool::PoolOptions;

    use crate::dialect::{Connect, Server};
    use crate::error::Target;
    use crate::{SqlOptions, SqlStore};

    impl<D: Server> SqlStore<D> {
        /// Connects with sqlx connect options (for settings a URL cannot carry); `shown` is how
        /// the database is named in `Debug` output and errors (a URL given here is shown without
        /// its credentials).
        pub async fn connect_options(
            connect: Connect<D>,
            shown: &str,
            options: SqlOptions,
        ) -> Result<Self> {
            let mut secrets = ParsedUrl::parse(shown).secrets;
            secrets.add_user(D::user(&connect));
            open_server(connect, redact(shown), secrets, options).await
        }
    }

    /// [`Dialect::connect`] of a database server: the URL's user information is handed to the
    /// driver apart from the rest, so that it may hold any character and never prints.
    pub(crate) async fn connect_server<D: Server>(
        url: &str,
        options: SqlOptions,
    ) -> Result<SqlStore<D>> {
        let url = ParsedUrl::parse(url);
        let mut connect = Connect::<D>::from_str(&D::driver_url(&url.bare)).map_err(|e| {
            Error::Config(format!(
                "{} URL {:?} cannot be read: {}",
                D::TITLE,
                url.shown,
                url.secrets.scrub(&e.to_string())
            ))
        })?;
        if let Some(user) = &url.user {
            connect = D::with_user(connect, user);
        }
        if let Some(password) = &url.password {
            connect = D::with_password(connect, password);
        }
        open_server(connect, url.shown, url.secrets, options).await
    }

    /// A store of a database server, its pool connecting lazily.
    async fn open_server<D: Server>(
        connect: Connect<D>,
        shown: String,
        secrets: Secrets,
        options: SqlOptions,
    ) -> Result<SqlStore<D>> {
        options.validate()?;
        let target = Target {
            place: D::place(&connect),
            database: D::database(&connect),
            acquire_timeout: options.acquire_timeout(),
            secrets,
            dialect: PhantomData,
        };
        let pool = D::pool_options(
            PoolOptions::new()
                .max_connections(options.max_connections())
                .acquire_timeout(options.acquire_timeout()),
        )
        .connect_lazy_with(connect.clone());
        SqlStore::assemble(pool, connect, target, shown, options).await
    }
}
