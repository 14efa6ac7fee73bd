//! PostgreSQL: what it does differently. Push hints by LISTEN/NOTIFY (see
//! [`hints`](crate::hints)); the bump, the stamp history and the hint in one statement.

use durable_core::{Hints, Result, STAMP_HISTORY};
use sqlx::error::DatabaseError;
use sqlx::postgres::{PgConnectOptions, PgQueryResult};

use crate::dialect::{Dialect, Server, sealed, server_place};
use crate::error::{Class, Reason};
use crate::hints::Listen;
use crate::sql::{Bump, DialectSql, Tables};
use crate::store::connect_server;
use crate::{SqlBackend, SqlOptions, SqlStore};

/// The PostgreSQL [`Dialect`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Postgres;

/// A PostgreSQL database holding any number of dictionaries in three tables.
///
/// Clones share one connection pool and one `LISTEN` connection (opened on the first
/// [`subscribe`](durable_core::Backend::subscribe)). Every write sends
/// `NOTIFY {prefix}_changes, 'namespace/dictionary'` inside its transaction, so the hint is
/// delivered exactly when the write commits.
///
/// URL: `postgres://user:password@host:5432/database?sslmode=require` (every parameter sqlx's
/// `PgConnectOptions` reads, including TLS settings `sslmode`, `sslrootcert`, `sslcert`,
/// `sslkey`, is passed through). The user information ends at the last `@`, so the user name
/// and password may hold `/`, `?`, `#`, `@`, `%` or `:` (the password) as they are, or
/// percent-encoded.
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
pub type PostgresStore = SqlStore<Postgres>;

/// One dictionary of a [`PostgresStore`]: a [`Backend`](durable_core::Backend) with every
/// capability, push hints included.
pub type PostgresBackend = SqlBackend<Postgres>;

impl sealed::Sealed for Postgres {}

impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    type Push = Listen;

    const NAME: &'static str = "postgres";
    const TYPE_NAME: &'static str = "Postgres";
    const PUSH: bool = true;
    const KEYS_AS_BYTES: bool = false;
    const NUMBERED: bool = true;
    const PROBES: bool = true;
    const BEGIN_WRITE: Option<&'static str> = None;
    const BEGIN_READ: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
    const HAS_TABLE: &'static str =
        "SELECT COUNT(*) FROM (SELECT to_regclass($1) AS t) found WHERE t IS NOT NULL";
    // "durable\0" as a number: one lock key for every durable schema in the database.
    const SCHEMA_LOCK: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(7239381212183110656)");

    fn sql(tables: &Tables) -> DialectSql {
        let (upsert_tail, stamp_upsert_tail) = tables.on_conflict_updates();
        let bump = format!(
            "WITH bumped AS ({} RETURNING epoch, counter, parent, pg_notify('{channel}', \
             namespace || '/' || dictionary)::text AS hint), recorded AS ({} SELECT ?, ?, \
             counter % {STAMP_HISTORY}, counter, ? FROM bumped{stamp_upsert_tail}) SELECT epoch, \
             counter, parent, hint FROM bumped",
            tables.bump_update(&tables.valid_counter()),
            tables.stamp_insert(),
            channel = notify_channel(&tables.prefix),
        )
        // The parameters are (stamp, ns, dict), each used twice.
        .replacen('?', "$1", 1)
        .replacen('?', "$2", 1)
        .replacen('?', "$3", 1)
        .replacen('?', "$2", 1)
        .replacen('?', "$3", 1)
        .replacen('?', "$1", 1);
        DialectSql {
            lock: " FOR UPDATE",
            schema: tables.schema("BIGINT", "BYTEA", ""),
            // `to_regclass` resolves the name as an unquoted identifier would be.
            columns: "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass(?) AND \
                      attnum > 0 AND NOT attisdropped",
            insert_or_ignore: ("INSERT INTO", " ON CONFLICT DO NOTHING"),
            upsert_tail,
            stamp_upsert_tail,
            valid_revision: tables.valid_revision(),
            // The time of the statement, not of the transaction's start (`now()`).
            clock: "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            bump: Bump::Returning(bump),
        }
    }

    fn classify(error: &dyn DatabaseError) -> Class {
        match error.code().as_deref().unwrap_or("") {
            // Serialization failure, deadlock.
            "40001" | "40P01" => Class::Conflict,
            // Lock not available (lock_timeout), query canceled (statement_timeout).
            "55P03" | "57014" => Class::Busy,
            // Class 08: connection exceptions; admin shutdown, crash shutdown, cannot connect
            // now; too many connections; idle-in-transaction timeout; commit outcome unknown.
            c if c.starts_with("08") => Class::Unavailable,
            "57P01" | "57P02" | "57P03" | "53300" | "25P03" | "40003" => Class::Unavailable,
            _ if error.message().contains("terminating connection") => Class::Unavailable,
            _ => Class::Other,
        }
    }

    fn reason(_: &dyn DatabaseError, code: &str) -> Option<Reason> {
        match code {
            // Invalid password; invalid authorization (no such role, refused by pg_hba.conf).
            "28P01" | "28000" => Some(Reason::Authentication),
            // Invalid catalog name: no such database.
            "3D000" => Some(Reason::MissingDatabase),
            _ => None,
        }
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn connect(url: &str, options: SqlOptions) -> Result<PostgresStore> {
        connect_server(url, options).await
    }

    fn push(connect: &PgConnectOptions, options: &SqlOptions) -> Listen {
        Listen::new(connect, options, notify_channel(options.table_prefix()))
    }

    async fn subscribe(backend: &PostgresBackend) -> Result<Hints> {
        crate::hints::subscribe(backend).await
    }
}

impl Server for Postgres {
    const TITLE: &'static str = "PostgreSQL";

    fn with_user(connect: PgConnectOptions, user: &str) -> PgConnectOptions {
        connect.username(user)
    }

    fn with_password(connect: PgConnectOptions, password: &str) -> PgConnectOptions {
        connect.password(password)
    }

    fn user(connect: &PgConnectOptions) -> &str {
        connect.get_username()
    }

    fn place(connect: &PgConnectOptions) -> String {
        server_place(connect.get_socket(), connect.get_host(), connect.get_port())
    }

    fn database(connect: &PgConnectOptions) -> Option<String> {
        connect.get_database().map(str::to_owned)
    }
}

impl PostgresStore {
    /// The `NOTIFY` channel every write of this store's tables signals.
    pub fn channel(&self) -> &str {
        &self.shared.push.channel
    }
}

/// The `NOTIFY` channel of the tables with this prefix; the payload of a write is
/// `namespace/dictionary`.
fn notify_channel(prefix: &str) -> String {
    format!("{prefix}_changes")
}
