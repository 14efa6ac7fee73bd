//! The MySQL / MariaDB backend.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use durable_core::Name;
use sqlx::Executor;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::common::{Dialect, Sql, SqlOptions};
use crate::credentials::{Secrets, Url, redact_url};
use crate::error::{Gate, Target};

type Db = sqlx::MySql;
const NAME: &str = "mysql";
/// Keys are `VARBINARY`: bytes, read as UTF-8.
const KEYS_AS_BYTES: bool = true;

/// A MySQL or MariaDB database (InnoDB) holding any number of dictionaries in three tables.
///
/// Clones share one connection pool. Keys are stored as `VARBINARY` (compared byte for byte,
/// case- and space-sensitive), at most [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes. There are
/// no push hints: handles poll.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> durable_core::Result<()> {
/// use durable_core::{Dict, Json, Options};
/// use durable_sql::MySqlStore;
///
/// let store = MySqlStore::connect("mysql://app:secret@db.internal:3306/app").await?;
/// let routes: Dict<String> = Dict::open(store.backend("web", "routes")?, Json, Options::new()).await?;
/// routes.insert("/", "home".to_owned()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MySqlStore {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pool: MySqlPool,
    /// What a probe connects with ([`Gate`]).
    connect: MySqlConnectOptions,
    sql: Sql,
    options: SqlOptions,
    url: String,
    target: Target,
    gate: Gate,
}

impl fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStore")
            .field("url", &self.shared.url)
            .field("options", &self.shared.options)
            .field("connections", &self.shared.pool.size())
            .finish()
    }
}

impl MySqlStore {
    /// Connects to `url` with the default [`SqlOptions`] and creates the schema when missing.
    ///
    /// URL: `mysql://user:password@host:3306/database?ssl-mode=required` (every parameter
    /// sqlx's `MySqlConnectOptions` reads, including the TLS settings `ssl-mode`, `ssl-ca`,
    /// `ssl-cert`, `ssl-key`, is passed through; `mariadb://` works too). The user information
    /// ends at the last `@`, so the user name and password may hold `/`, `?`, `#`, `@`, `%` or
    /// `:` (the password) as they are, or percent-encoded. Neither ever appears in `Debug`
    /// output, errors or logs.
    ///
    /// Unless [`SqlOptions::with_create_schema`] is false, this connects once before it
    /// returns, and fails at once with the cause: connection refused, unknown host,
    /// authentication failed or no such database ([`Error::Config`]
    /// for the last two, [`Error::Unavailable`] otherwise).
    pub async fn connect(url: &str) -> durable_core::Result<Self> {
        Self::connect_with(url, SqlOptions::new()).await
    }

    /// Connects to `url` with `options`.
    pub async fn connect_with(url: &str, options: SqlOptions) -> durable_core::Result<Self> {
        let url = Url::parse(url);
        let bare = url
            .bare
            .strip_prefix("mariadb://")
            .map(|rest| format!("mysql://{rest}"))
            .unwrap_or_else(|| url.bare.clone());
        let mut connect = MySqlConnectOptions::from_str(&bare).map_err(|e| {
            durable_core::Error::Config(format!(
                "MySQL URL {:?} cannot be read: {}",
                url.shown,
                url.secrets.scrub(&e.to_string())
            ))
        })?;
        if let Some(user) = &url.user {
            connect = connect.username(user);
        }
        if let Some(password) = &url.password {
            connect = connect.password(password);
        }
        Self::open(connect, url.shown, url.secrets, options).await
    }

    /// Connects with sqlx connect options (for settings a URL cannot carry); `shown` is how
    /// the database is named in `Debug` output and errors (a URL given here is shown without
    /// its credentials).
    pub async fn connect_options(
        connect: MySqlConnectOptions,
        shown: &str,
        options: SqlOptions,
    ) -> durable_core::Result<Self> {
        let mut secrets = Url::parse(shown).secrets;
        secrets.add_user(connect.get_username());
        Self::open(connect, redact_url(shown), secrets, options).await
    }

    async fn open(
        connect: MySqlConnectOptions,
        shown: String,
        secrets: Secrets,
        options: SqlOptions,
    ) -> durable_core::Result<Self> {
        options.validate()?;
        let place = match connect.get_socket() {
            Some(socket) => socket.display().to_string(),
            None if connect.get_host().contains(':') => {
                format!("[{}]:{}", connect.get_host(), connect.get_port())
            }
            None => format!("{}:{}", connect.get_host(), connect.get_port()),
        };
        let target = Target {
            backend: NAME,
            place,
            database: connect.get_database().map(str::to_owned),
            acquire_timeout: options.acquire_timeout(),
            secrets,
        };
        let pool = MySqlPoolOptions::new()
            .max_connections(options.max_connections())
            .acquire_timeout(options.acquire_timeout())
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(connect.clone());
        let store = MySqlStore {
            shared: Arc::new(Shared {
                pool,
                connect,
                sql: Sql::new(Dialect::MySql, options.table_prefix()),
                options,
                url: shown,
                target,
                gate: Gate::default(),
            }),
        };
        if store.shared.options.create_schema() {
            let shared = &store.shared;
            shared
                .gate
                .pass(&shared.target, durable_core::Operation::Open, || {
                    probe(shared)
                })
                .await?;
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Creates the tables if they are missing and adds the columns that tables created by an
    /// earlier version lack. Idempotent, and safe when several processes start at once
    /// (serialized by a named lock, `GET_LOCK`).
    pub async fn migrate(&self) -> durable_core::Result<()> {
        let err = |e| {
            self.shared
                .target
                .explain(durable_core::Operation::Schema, e)
        };
        let mut conn = self.shared.pool.acquire().await.map_err(err)?;
        let lock = format!("{}_schema", self.shared.sql.entries);
        sqlx::query("SELECT GET_LOCK(?, 30)")
            .bind(&lock)
            .execute(&mut *conn)
            .await
            .map_err(err)?;
        let mut result = Ok(());
        for ddl in &self.shared.sql.schema {
            if let Err(e) = conn.execute(sqlx::AssertSqlSafe(ddl.as_str())).await {
                result = Err(err(e));
                break;
            }
        }
        if result.is_ok() {
            result = add_missing_columns(&mut conn, &self.shared.sql)
                .await
                .map_err(err);
        }
        let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(&lock)
            .execute(&mut *conn)
            .await;
        result
    }

    /// A backend over dictionary `dictionary` in `namespace`.
    pub fn backend(&self, namespace: &str, dictionary: &str) -> durable_core::Result<MySqlBackend> {
        Ok(MySqlBackend {
            shared: self.shared.clone(),
            namespace: Name::new(namespace)?,
            dictionary: Name::new(dictionary)?,
            last_trim: Mutex::new(Instant::now()),
        })
    }

    /// The connection pool, for your own queries.
    pub fn pool(&self) -> &MySqlPool {
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

/// One dictionary of a [`MySqlStore`]: a [`Backend`](durable_core::Backend) with every
/// capability except push.
pub struct MySqlBackend {
    shared: Arc<Shared>,
    namespace: Name,
    dictionary: Name,
    last_trim: Mutex<Instant>,
}

impl fmt::Debug for MySqlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlBackend")
            .field("url", &self.shared.url)
            .field("namespace", &self.namespace)
            .field("dictionary", &self.dictionary)
            .finish()
    }
}

/// Write transactions lock the dictionary's version row first (bumping its counter), so writers
/// of one dictionary are serialized, and every later read in them is a locking read that sees
/// the latest committed rows.
async fn begin_write(pool: &MySqlPool) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    pool.begin().await
}

/// Read transactions see one consistent snapshot (sessions are set to REPEATABLE READ when
/// they connect, whatever the server's default).
async fn begin_read(pool: &MySqlPool) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    pool.begin_with("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
}

fn key_arg(key: &str) -> &[u8] {
    key.as_bytes()
}

/// One connection made directly (see [`Gate`]).
async fn probe(shared: &Shared) -> Result<(), sqlx::Error> {
    crate::error::probe_with(&shared.connect, shared.options.acquire_timeout()).await
}

impl MySqlBackend {
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

crate::imp::backend_impl!(MySqlBackend);
