//! MySQL / MariaDB: what it does differently. Keys as `VARBINARY`, no `UPDATE ... RETURNING`
//! (the bump is read back), sessions set to REPEATABLE READ, DDL under `GET_LOCK`.

use durable_core::Result;
use sqlx::Executor;
use sqlx::error::DatabaseError;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlQueryResult};
use sqlx::pool::PoolOptions;

use crate::dialect::{Dialect, Server, sealed, server_place};
use crate::error::{Class, Reason};
use crate::options::MAX_KEY_LEN;
use crate::sql::{Bump, DialectSql, Tables};
use crate::store::{add_missing_columns, connect_server};
use crate::{SqlBackend, SqlOptions, SqlStore};

/// The MySQL / MariaDB [`Dialect`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MySql;

/// A MySQL or MariaDB database (InnoDB) holding any number of dictionaries in three tables.
///
/// Clones share one connection pool. Keys are stored as `VARBINARY` (compared byte for byte,
/// case- and space-sensitive), at most [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes. There are
/// no push hints: handles poll.
///
/// URL: `mysql://user:password@host:3306/database?ssl-mode=required` (every parameter sqlx's
/// `MySqlConnectOptions` reads, including the TLS settings `ssl-mode`, `ssl-ca`, `ssl-cert`,
/// `ssl-key`, is passed through; `mariadb://` works too). The user information ends at the
/// last `@`, so the user name and password may hold `/`, `?`, `#`, `@`, `%` or `:` (the
/// password) as they are, or percent-encoded.
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
pub type MySqlStore = SqlStore<MySql>;

/// One dictionary of a [`MySqlStore`]: a [`Backend`](durable_core::Backend) with every
/// capability except push.
pub type MySqlBackend = SqlBackend<MySql>;

impl sealed::Sealed for MySql {}

impl Dialect for MySql {
    type Db = sqlx::MySql;
    type Push = ();

    const NAME: &'static str = "mysql";
    const TYPE_NAME: &'static str = "MySql";
    const PUSH: bool = false;
    /// Keys are `VARBINARY`: bytes, read as UTF-8.
    const KEYS_AS_BYTES: bool = true;
    const NUMBERED: bool = false;
    const PROBES: bool = true;
    /// Write transactions lock the dictionary's version row first (bumping its counter), so
    /// writers of one dictionary are serialized, and every later read in them is a locking
    /// read that sees the latest committed rows.
    const BEGIN_WRITE: Option<&'static str> = None;
    /// Sessions are set to REPEATABLE READ when they connect, whatever the server's default.
    const BEGIN_READ: &'static str = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";
    const HAS_TABLE: &'static str = "SELECT COUNT(*) FROM information_schema.tables WHERE \
                                     table_schema = DATABASE() AND table_name = ?";
    /// Serialized by `GET_LOCK` instead (see [`migrate`](Dialect::migrate)).
    const SCHEMA_LOCK: Option<&'static str> = None;

    fn sql(tables: &Tables) -> DialectSql {
        let (e, v, s) = (&tables.entries, &tables.versions, &tables.stamps);
        DialectSql {
            lock: " FOR UPDATE",
            schema: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {v} (namespace VARBINARY(128) NOT NULL, \
                     dictionary VARBINARY(128) NOT NULL, epoch BIGINT NOT NULL, counter BIGINT \
                     NOT NULL, oldest_served BIGINT NOT NULL DEFAULT 0, stamp BIGINT NULL, \
                     parent BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (namespace, dictionary)) \
                     ENGINE=InnoDB"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {e} (namespace VARBINARY(128) NOT NULL, \
                     dictionary VARBINARY(128) NOT NULL, entry_key VARBINARY({MAX_KEY_LEN}) NOT \
                     NULL, value LONGBLOB NOT NULL, revision BIGINT NOT NULL, tombstone BOOLEAN \
                     NOT NULL DEFAULT FALSE, written_at BIGINT NOT NULL DEFAULT 0, expires_at \
                     BIGINT NULL, PRIMARY KEY (namespace, dictionary, entry_key), INDEX \
                     {e}_revision (namespace, dictionary, revision), INDEX {e}_expiry \
                     (namespace, dictionary, expires_at)) ENGINE=InnoDB"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {s} (namespace VARBINARY(128) NOT NULL, \
                     dictionary VARBINARY(128) NOT NULL, slot BIGINT NOT NULL, counter BIGINT \
                     NOT NULL, stamp BIGINT NOT NULL, PRIMARY KEY (namespace, dictionary, slot)) \
                     ENGINE=InnoDB"
                ),
            ],
            columns: "SELECT column_name FROM information_schema.columns WHERE table_schema = \
                      DATABASE() AND table_name = ?",
            insert_or_ignore: ("INSERT IGNORE INTO", ""),
            upsert_tail: " ON DUPLICATE KEY UPDATE value = VALUES(value), revision = \
                          VALUES(revision), tombstone = FALSE, written_at = VALUES(written_at), \
                          expires_at = VALUES(expires_at)"
                .to_owned(),
            stamp_upsert_tail: " ON DUPLICATE KEY UPDATE counter = VALUES(counter), stamp = \
                                VALUES(stamp)"
                .to_owned(),
            valid_revision: tables.valid_revision(),
            // UTC arithmetic: `UNIX_TIMESTAMP(NOW(3))` goes through the session's time zone and
            // is an hour off in the repeated hour of a daylight saving change.
            clock: "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000",
            // No `UPDATE ... RETURNING`: the bumped row is read back.
            bump: Bump::ReadBack {
                update: tables.bump_update(&tables.valid_counter()),
                read: format!(
                    "SELECT epoch, counter, parent FROM {v} WHERE namespace = ? AND dictionary = ?"
                ),
            },
        }
    }

    fn classify(error: &dyn DatabaseError) -> Class {
        let Some(error) = error.try_downcast_ref::<MySqlDatabaseError>() else {
            return Class::Other;
        };
        match error.number() {
            // Deadlock; "Table definition has changed, please retry transaction" (a consistent
            // snapshot older than a TRUNCATE or ALTER of a table it then reads); "Record has
            // changed since last read" (MariaDB's innodb_snapshot_isolation).
            1213 | 1412 | 1020 => Class::Conflict,
            // Lock wait timeout; statement time limits (MariaDB, MySQL).
            1205 | 1969 | 3024 => Class::Busy,
            // Too many connections, shutdown in progress, server gone, lost connection,
            // connection killed, query interrupted, server read-only (during a failover).
            1040 | 1053 | 1317 | 1290 | 1836 | 1927 | 2002 | 2003 | 2006 | 2013 => {
                Class::Unavailable
            }
            _ => Class::Other,
        }
    }

    fn reason(error: &dyn DatabaseError, _: &str) -> Option<Reason> {
        match error.try_downcast_ref::<MySqlDatabaseError>()?.number() {
            // Access denied (to the server, to the database, without a password); an
            // authentication method the client cannot use.
            1045 | 1044 | 1698 | 1251 => Some(Reason::Authentication),
            // Unknown database.
            1049 => Some(Reason::MissingDatabase),
            _ => None,
        }
    }

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn connect(url: &str, options: SqlOptions) -> Result<MySqlStore> {
        connect_server(url, options).await
    }

    fn pool_options(pool: PoolOptions<sqlx::MySql>) -> PoolOptions<sqlx::MySql> {
        pool.after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .await?;
                Ok(())
            })
        })
    }

    fn push(_: &MySqlConnectOptions, _: &SqlOptions) {}

    /// On one connection, serialized by a named lock (`GET_LOCK`); MySQL commits DDL at once,
    /// so no transaction.
    async fn migrate(store: &MySqlStore) -> sqlx::Result<()> {
        let shared = &store.shared;
        let mut conn = shared.pool.acquire().await?;
        let lock = format!("{}_schema", shared.sql.tables.entries);
        sqlx::query("SELECT GET_LOCK(?, 30)")
            .bind(&lock)
            .execute(&mut *conn)
            .await?;
        let mut result = Ok(());
        for ddl in &shared.sql.schema {
            if let Err(e) = conn.execute(sqlx::AssertSqlSafe(ddl.as_str())).await {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            result = add_missing_columns::<MySql>(&mut conn, &shared.sql).await;
        }
        let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(&lock)
            .execute(&mut *conn)
            .await;
        result
    }
}

impl Server for MySql {
    const TITLE: &'static str = "MySQL";

    fn driver_url(bare: &str) -> String {
        match bare.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => bare.to_owned(),
        }
    }

    fn with_user(connect: MySqlConnectOptions, user: &str) -> MySqlConnectOptions {
        connect.username(user)
    }

    fn with_password(connect: MySqlConnectOptions, password: &str) -> MySqlConnectOptions {
        connect.password(password)
    }

    fn user(connect: &MySqlConnectOptions) -> &str {
        connect.get_username()
    }

    fn place(connect: &MySqlConnectOptions) -> String {
        server_place(connect.get_socket(), connect.get_host(), connect.get_port())
    }

    fn database(connect: &MySqlConnectOptions) -> Option<String> {
        connect.get_database().map(str::to_owned)
    }
}
