//! The PostgreSQL backend, with LISTEN/NOTIFY push hints.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable_core::{Hint, HintSender, Name};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use crate::common::{Dialect, Sql, SqlOptions};
use crate::credentials::{Secrets, Url, redact_url};
use crate::error::{Gate, Target};

type Db = sqlx::Postgres;
const NAME: &str = "postgres";
const KEYS_AS_BYTES: bool = false;

/// A PostgreSQL database holding any number of dictionaries in three tables.
///
/// Clones share one connection pool and one `LISTEN` connection (opened on the first
/// [`subscribe`](durable_core::Backend::subscribe)). Every write sends
/// `NOTIFY {prefix}_changes, 'namespace/dictionary'` inside its transaction, so the hint is
/// delivered exactly when the write commits.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> durable_core::Result<()> {
/// use durable_core::{Dict, Json, Options};
/// use durable_sql::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://app:secret@db.internal/app").await?;
/// let limits: Dict<u32> = Dict::open(store.backend("billing", "limits")?, Json, Options::new()).await?;
/// limits.insert("free-tier", 100).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pool: PgPool,
    /// One connection for `LISTEN`, separate from the pool so it never starves writers.
    listen_pool: PgPool,
    /// What a probe connects with ([`Gate`]).
    connect: PgConnectOptions,
    sql: Sql,
    options: SqlOptions,
    url: String,
    target: Target,
    gate: Gate,
    channel: String,
    listeners: tokio::sync::Mutex<Listeners>,
}

#[derive(Default)]
struct Listeners {
    running: bool,
    /// Subscribers by `namespace/dictionary`.
    subscribers: HashMap<String, Vec<HintSender>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shared.url)
            .field("options", &self.shared.options)
            .field("connections", &self.shared.pool.size())
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `url` with the default [`SqlOptions`] and creates the schema when missing.
    ///
    /// URL: `postgres://user:password@host:5432/database?sslmode=require` (every parameter
    /// sqlx's `PgConnectOptions` reads, including TLS settings `sslmode`, `sslrootcert`,
    /// `sslcert`, `sslkey`, is passed through). The user information ends at the last `@`, so
    /// the user name and password may hold `/`, `?`, `#`, `@`, `%` or `:` (the password) as
    /// they are, or percent-encoded. Neither ever appears in `Debug` output, errors or logs.
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
        let mut connect = PgConnectOptions::from_str(&url.bare).map_err(|e| {
            durable_core::Error::Config(format!(
                "PostgreSQL URL {:?} cannot be read: {}",
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
        connect: PgConnectOptions,
        shown: &str,
        options: SqlOptions,
    ) -> durable_core::Result<Self> {
        let mut secrets = Url::parse(shown).secrets;
        secrets.add_user(connect.get_username());
        Self::open(connect, redact_url(shown), secrets, options).await
    }

    async fn open(
        connect: PgConnectOptions,
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
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections())
            .acquire_timeout(options.acquire_timeout())
            .connect_lazy_with(connect.clone());
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout())
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(connect.clone());
        let store = PostgresStore {
            shared: Arc::new(Shared {
                pool,
                listen_pool,
                connect,
                sql: Sql::new(Dialect::Postgres, options.table_prefix()),
                channel: crate::common::notify_channel(options.table_prefix()),
                options,
                url: shown,
                target,
                gate: Gate::default(),
                listeners: tokio::sync::Mutex::new(Listeners::default()),
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

    /// Creates the tables and indexes if they are missing and adds the columns that tables
    /// created by an earlier version lack. Idempotent, and safe when several processes start at
    /// once (the DDL runs in one transaction under an advisory lock).
    pub async fn migrate(&self) -> durable_core::Result<()> {
        let err = |e| {
            self.shared
                .target
                .explain(durable_core::Operation::Schema, e)
        };
        let mut tx = self.shared.pool.begin().await.map_err(err)?;
        // "durable\0" as a number: one lock key for every durable schema in the database.
        sqlx::query("SELECT pg_advisory_xact_lock(7239381212183110656)")
            .execute(&mut *tx)
            .await
            .map_err(err)?;
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
    ) -> durable_core::Result<PostgresBackend> {
        let namespace = Name::new(namespace)?;
        let dictionary = Name::new(dictionary)?;
        Ok(PostgresBackend {
            shared: self.shared.clone(),
            payload: format!("{namespace}/{dictionary}"),
            namespace,
            dictionary,
            last_trim: Mutex::new(Instant::now()),
        })
    }

    /// The connection pool, for your own queries.
    pub fn pool(&self) -> &PgPool {
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

    /// The `NOTIFY` channel every write of this store's tables signals.
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }
}

/// One dictionary of a [`PostgresStore`]: a [`Backend`](durable_core::Backend) with every
/// capability, push hints included.
pub struct PostgresBackend {
    shared: Arc<Shared>,
    namespace: Name,
    dictionary: Name,
    payload: String,
    last_trim: Mutex<Instant>,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("url", &self.shared.url)
            .field("namespace", &self.namespace)
            .field("dictionary", &self.dictionary)
            .finish()
    }
}

async fn begin_write(pool: &PgPool) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    pool.begin().await
}

async fn begin_read(pool: &PgPool) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
}

fn key_arg(key: &str) -> &str {
    key
}

/// One connection made directly (see [`Gate`]).
async fn probe(shared: &Shared) -> Result<(), sqlx::Error> {
    crate::error::probe_with(&shared.connect, shared.options.acquire_timeout()).await
}

impl PostgresBackend {
    fn capabilities_impl(&self) -> durable_core::Capabilities {
        durable_core::Capabilities::all()
    }

    async fn subscribe_impl(&self) -> durable_core::Result<durable_core::Hints> {
        let (sender, hints) = durable_core::Hints::channel();
        let mut listeners = self.shared.listeners.lock().await;
        if !listeners.running {
            let (shared, op) = (&self.shared, durable_core::Operation::Subscribe);
            if shared.listen_pool.size() == 0 {
                shared
                    .gate
                    .pass(&shared.target, op, || probe(shared))
                    .await?;
            }
            // Listen before returning, so that a write right after `subscribe` is seen.
            let listener = connect_listener(shared)
                .await
                .map_err(|e| shared.target.explain(op, e))?;
            listeners.running = true;
            tokio::spawn(listen_task(self.shared.clone(), listener));
        }
        listeners
            .subscribers
            .entry(self.payload.clone())
            .or_default()
            .push(sender);
        Ok(hints)
    }
}

async fn connect_listener(shared: &Shared) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(&shared.listen_pool).await?;
    listener.listen(&shared.channel).await?;
    Ok(listener)
}

/// Reads notifications and forwards them as hints, until no subscriber is left.
async fn listen_task(shared: Arc<Shared>, mut listener: PgListener) {
    const IDLE_CHECK: Duration = Duration::from_secs(30);
    loop {
        let event = tokio::time::timeout(IDLE_CHECK, listener.try_recv()).await;
        let mut lost = false;
        match event {
            Err(_idle) => {}
            Ok(Ok(Some(notification))) => {
                let listeners = shared.listeners.lock().await;
                if let Some(senders) = listeners.subscribers.get(notification.payload()) {
                    for sender in senders {
                        sender.send(Hint::Changed);
                    }
                }
            }
            // The connection was lost and is back (sqlx reconnects eagerly): notifications
            // sent in between are gone.
            Ok(Ok(None)) => lost = true,
            Ok(Err(error)) => {
                let error = shared
                    .target
                    .explain(durable_core::Operation::Subscribe, error);
                tracing::warn!(backend = NAME, %error, "LISTEN connection failed; reconnecting");
                drop(listener);
                for sender in shared.listeners.lock().await.subscribers.values().flatten() {
                    sender.send(Hint::Lost);
                }
                let mut delay = Duration::from_millis(100);
                listener = loop {
                    if shared
                        .listeners
                        .lock()
                        .await
                        .subscribers
                        .values()
                        .all(|s| s.iter().all(HintSender::is_closed))
                    {
                        shared.listeners.lock().await.running = false;
                        return;
                    }
                    match connect_listener(&shared).await {
                        Ok(listener) => break listener,
                        Err(error) => {
                            let error = shared
                                .target
                                .explain(durable_core::Operation::Subscribe, error);
                            tracing::debug!(backend = NAME, %error, "LISTEN reconnect failed");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                };
                lost = true;
            }
        }
        let mut listeners = shared.listeners.lock().await;
        listeners.subscribers.retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
        if lost {
            tracing::info!(backend = NAME, "LISTEN connection re-established");
            for sender in listeners.subscribers.values().flatten() {
                sender.send(Hint::Resubscribed);
            }
        }
        if listeners.subscribers.is_empty() {
            listeners.running = false;
            return;
        }
    }
}

crate::imp::backend_impl!(PostgresBackend);
