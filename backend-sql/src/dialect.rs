//! [`Dialect`]: what differs between the SQL databases, and the little the shared code needs of
//! a sqlx driver ([`Run`], [`Cells`]), written once.
//!
//! sqlx's generic bounds (a value encodes for a database, a connection is an executor) are not
//! implied where a type parameter is used, so generic code would repeat them on every function.
//! Instead [`Run`] and [`Cells`] state them once, in their blanket implementations, and the
//! dialect's database names them as bounds of its associated types, which are implied.

use std::fmt::Debug;
use std::future::Future;

use durable_core::{Error, Hints, Operation, Result};
use futures_util::TryStreamExt;
use sqlx::error::DatabaseError;
use sqlx::pool::PoolOptions;
use sqlx::{AssertSqlSafe, Database, Decode, Encode, Executor, IntoArguments, Row, Type};
use sqlx::{TypeInfo, ValueRef};

use crate::error::{Class, Reason};
use crate::sql::{DialectSql, Tables};
use crate::{SqlBackend, SqlOptions, SqlStore};

/// The connect options of a dialect's database (`PgConnectOptions`, ...).
pub(crate) type Connect<D> =
    <<<D as Dialect>::Db as Database>::Connection as sqlx::Connection>::Options;
/// The rows of a dialect's database.
pub(crate) type DbRow<D> = <<D as Dialect>::Db as Database>::Row;

pub(crate) mod sealed {
    /// Only this crate's databases are dialects.
    pub trait Sealed {}
}

/// A SQL database [`SqlStore`] and [`SqlBackend`] are written for: PostgreSQL ([`Postgres`]),
/// MySQL / MariaDB ([`MySql`]) or SQLite ([`Sqlite`]). Sealed: the trait holds what differs
/// between them (SQL text, transactions, error codes, push hints), nothing a user implements.
///
/// [`Postgres`]: crate::Postgres
/// [`MySql`]: crate::MySql
/// [`Sqlite`]: crate::Sqlite
pub trait Dialect: sealed::Sealed + Copy + Debug + Send + Sync + 'static {
    /// The sqlx database.
    type Db: Database<Connection: Run, Row: Cells>;
    /// What a store keeps for push hints: PostgreSQL's `LISTEN` connection; nothing where
    /// handles poll.
    type Push: Send + Sync + 'static;

    /// The backend's name ([`Backend::name`](durable_core::Backend::name)).
    const NAME: &'static str;
    /// How `Debug` names the store and backend types (`Postgres`: `PostgresStore`).
    const TYPE_NAME: &'static str;
    /// Whether push hints are offered ([`Capabilities`](durable_core::Capabilities)).
    const PUSH: bool;
    /// Whether keys are stored as bytes that must be UTF-8 (MySQL's `VARBINARY`) rather than
    /// as text.
    const KEYS_AS_BYTES: bool;
    /// Whether placeholders are numbered (`$1`) rather than `?`.
    const NUMBERED: bool;
    /// Whether an operation on a pool without any connection first makes one directly, to
    /// fail at once with the cause (see `Gate`); SQLite's pool reports its errors at once.
    const PROBES: bool;
    /// The statement that begins a write transaction (`None`: the driver's `BEGIN`).
    const BEGIN_WRITE: Option<&'static str>;
    /// The statement that begins a read transaction, which sees one consistent snapshot.
    const BEGIN_READ: &'static str;
    /// The statement run in the schema transaction before the DDL, to serialize concurrent
    /// migrations (`None`: the write transaction serializes them).
    const SCHEMA_LOCK: Option<&'static str>;

    /// (table name) -> 1 if the table exists (where unqualified names look), else 0, a BIGINT.
    const HAS_TABLE: &'static str;

    /// The SQL text of this dialect for the tables of one prefix.
    fn sql(tables: &Tables) -> DialectSql;

    /// What a database error (not a connection error) says about the operation that got it.
    fn classify(error: &dyn DatabaseError) -> Class;

    /// Which database error this is that the store explains in words of its own, if any;
    /// `code` is the error's code as sqlx gives it.
    fn reason(error: &dyn DatabaseError, code: &str) -> Option<Reason>;

    /// How many rows a statement changed.
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;

    /// Connects to `url` (see [`SqlStore::connect_with`]).
    fn connect(
        url: &str,
        options: SqlOptions,
    ) -> impl Future<Output = Result<SqlStore<Self>>> + Send;

    /// This dialect's settings of the store's pool (MySQL sets each session's isolation level).
    fn pool_options(pool: PoolOptions<Self::Db>) -> PoolOptions<Self::Db> {
        pool
    }

    /// The push hint state of a new store.
    fn push(connect: &Connect<Self>, options: &SqlOptions) -> Self::Push;

    /// Creates or completes the schema (see [`SqlStore::migrate`]): in one write transaction,
    /// after [`SCHEMA_LOCK`](Self::SCHEMA_LOCK), unless the dialect does it otherwise.
    fn migrate(store: &SqlStore<Self>) -> impl Future<Output = sqlx::Result<()>> + Send {
        crate::store::migrate_in_transaction(store)
    }

    /// Subscribes `backend` to push hints (see
    /// [`Backend::subscribe`](durable_core::Backend::subscribe)); where handles poll, fails
    /// with [`Error::NotSupported`].
    fn subscribe(backend: &SqlBackend<Self>) -> impl Future<Output = Result<Hints>> + Send {
        let _ = backend;
        std::future::ready(Err(Error::not_supported(Self::NAME, Operation::Subscribe)))
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
/// A database server ([`Postgres`](crate::Postgres), [`MySql`](crate::MySql)), reached by a URL
/// with credentials: what its connect options hold, which sqlx names differently for each.
pub trait Server: Dialect {
    /// How messages name the database kind (`PostgreSQL`).
    const TITLE: &'static str;

    /// The URL as sqlx reads it (MySQL: `mariadb://` becomes `mysql://`).
    fn driver_url(bare: &str) -> String {
        bare.to_owned()
    }

    /// `connect` with this user name.
    fn with_user(connect: Connect<Self>, user: &str) -> Connect<Self>;

    /// `connect` with this password.
    fn with_password(connect: Connect<Self>, password: &str) -> Connect<Self>;

    /// The user name `connect` logs in as.
    fn user(connect: &Connect<Self>) -> &str;

    /// Where `connect` connects, as messages name it: `host:port` or a socket path.
    fn place(connect: &Connect<Self>) -> String;

    /// The database `connect` names, if any.
    fn database(connect: &Connect<Self>) -> Option<String>;
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
/// `host:port` (`[host]:port` for an IPv6 address), or the socket path when there is one.
pub(crate) fn server_place(
    socket: Option<impl AsRef<std::path::Path>>,
    host: &str,
    port: u16,
) -> String {
    match socket.as_ref().map(AsRef::as_ref) {
        Some(socket) => socket.display().to_string(),
        None if host.contains(':') => format!("[{host}]:{port}"),
        None => format!("{host}:{port}"),
    }
}

/// One parameter of a statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    /// A BIGINT.
    Int(i64),
    /// A BIGINT or NULL.
    MaybeInt(Option<i64>),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Bytes(&'a [u8]),
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(value: Option<i64>) -> Self {
        Arg::MaybeInt(value)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(value: &'a [u8]) -> Self {
        Arg::Bytes(value)
    }
}

/// One statement and its parameters, run by [`Run`].
#[derive(Debug)]
pub struct Stmt<'a> {
    sql: &'a str,
    args: Vec<Arg<'a>>,
}

impl<'a> Stmt<'a> {
    /// The statement `sql` (trusted text: table names come from a validated prefix).
    pub(crate) fn new(sql: &'a str) -> Self {
        Stmt {
            sql,
            args: Vec::new(),
        }
    }

    /// Binds the next parameter.
    pub(crate) fn bind(mut self, arg: impl Into<Arg<'a>>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The sqlx query, every parameter bound.
    fn query<DB>(self) -> sqlx::query::Query<'a, DB, DB::Arguments>
    where
        DB: Database,
        i64: for<'q> Encode<'q, DB> + Type<DB>,
        Option<i64>: for<'q> Encode<'q, DB> + Type<DB>,
        for<'q> &'q str: Encode<'q, DB> + Type<DB>,
        for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    {
        let query = sqlx::query(AssertSqlSafe(self.sql));
        self.args.into_iter().fold(query, |query, arg| match arg {
            Arg::Int(value) => query.bind(value),
            Arg::MaybeInt(value) => query.bind(value),
            Arg::Text(value) => query.bind(value),
            Arg::Bytes(value) => query.bind(value),
        })
    }
}

/// A connection that runs [`Stmt`]s: implemented for every sqlx connection whose database
/// encodes the parameters (the bounds are stated here once).
pub trait Run: sqlx::Connection {
    /// Runs `stmt`, returning the database's report.
    fn run(
        &mut self,
        stmt: Stmt<'_>,
    ) -> impl Future<Output = sqlx::Result<<Self::Database as Database>::QueryResult>> + Send;

    /// Runs `stmt` and returns every row.
    fn fetch_all(
        &mut self,
        stmt: Stmt<'_>,
    ) -> impl Future<Output = sqlx::Result<Vec<<Self::Database as Database>::Row>>> + Send;

    /// Runs `stmt` and hands `each` its rows a page at a time, no page kept (a full load's rows
    /// would otherwise all be held beside the entries made from them).
    fn for_each_row(
        &mut self,
        stmt: Stmt<'_>,
        each: impl FnMut(<Self::Database as Database>::Row) + Send,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;

    /// Runs `stmt` and returns its first row, if any.
    fn fetch_optional(
        &mut self,
        stmt: Stmt<'_>,
    ) -> impl Future<Output = sqlx::Result<Option<<Self::Database as Database>::Row>>> + Send;

    /// Runs `stmt` and returns its first row (an error if there is none).
    fn fetch_one(
        &mut self,
        stmt: Stmt<'_>,
    ) -> impl Future<Output = sqlx::Result<<Self::Database as Database>::Row>> + Send;
}

impl<C, DB> Run for C
where
    C: sqlx::Connection<Database = DB>,
    DB: Database<Connection = C>,
    for<'c> &'c mut C: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    Option<i64>: for<'q> Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
{
    async fn run(&mut self, stmt: Stmt<'_>) -> sqlx::Result<DB::QueryResult> {
        stmt.query().execute(self).await
    }

    async fn fetch_all(&mut self, stmt: Stmt<'_>) -> sqlx::Result<Vec<DB::Row>> {
        stmt.query().fetch_all(self).await
    }

    async fn for_each_row(
        &mut self,
        stmt: Stmt<'_>,
        mut each: impl FnMut(DB::Row) + Send,
    ) -> sqlx::Result<()> {
        // Rows are taken a page at a time, then handed on: a reader slower than the database
        // would otherwise wake SQLite's worker thread (blocked on a full channel) for every row.
        const PAGE: usize = 1024;
        let mut rows = stmt.query().fetch(self);
        let mut page = Vec::with_capacity(PAGE);
        loop {
            let row = rows.try_next().await?;
            let done = row.is_none();
            page.extend(row);
            if done || page.len() == PAGE {
                page.drain(..).for_each(&mut each);
            }
            if done {
                return Ok(());
            }
        }
    }

    async fn fetch_optional(&mut self, stmt: Stmt<'_>) -> sqlx::Result<Option<DB::Row>> {
        stmt.query().fetch_optional(self).await
    }

    async fn fetch_one(&mut self, stmt: Stmt<'_>) -> sqlx::Result<DB::Row> {
        stmt.query().fetch_one(self).await
    }
}

/// A row whose columns the shared code reads by position: implemented for every sqlx row whose
/// database decodes these types (the bounds are stated here once).
pub trait Cells: Row {
    /// Column `i`'s type name as the database gives it, and whether it is NULL.
    fn column_type(&self, i: usize) -> sqlx::Result<(String, bool)>;
    /// Column `i` as an integer.
    fn int(&self, i: usize) -> sqlx::Result<i64>;
    /// Column `i` as an integer or NULL.
    fn maybe_int(&self, i: usize) -> sqlx::Result<Option<i64>>;
    /// Column `i` as a real number.
    fn real(&self, i: usize) -> sqlx::Result<f64>;
    /// Column `i` as text.
    fn text(&self, i: usize) -> sqlx::Result<String>;
    /// Column `i` as bytes.
    fn bytes(&self, i: usize) -> sqlx::Result<Vec<u8>>;
    /// Column `i` as bytes or NULL.
    fn maybe_bytes(&self, i: usize) -> sqlx::Result<Option<Vec<u8>>>;
    /// Column `i` as a boolean.
    fn flag(&self, i: usize) -> sqlx::Result<bool>;
}

impl<R, DB> Cells for R
where
    R: Row<Database = DB>,
    DB: Database<Row = R>,
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    f64: for<'r> Decode<'r, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    Vec<u8>: for<'r> Decode<'r, DB> + Type<DB>,
{
    fn column_type(&self, i: usize) -> sqlx::Result<(String, bool)> {
        let value = self.try_get_raw(i)?;
        Ok((value.type_info().name().to_owned(), value.is_null()))
    }

    fn int(&self, i: usize) -> sqlx::Result<i64> {
        self.try_get(i)
    }

    fn maybe_int(&self, i: usize) -> sqlx::Result<Option<i64>> {
        self.try_get(i)
    }

    fn real(&self, i: usize) -> sqlx::Result<f64> {
        self.try_get(i)
    }

    fn text(&self, i: usize) -> sqlx::Result<String> {
        self.try_get(i)
    }

    fn bytes(&self, i: usize) -> sqlx::Result<Vec<u8>> {
        self.try_get(i)
    }

    fn maybe_bytes(&self, i: usize) -> sqlx::Result<Option<Vec<u8>>> {
        self.try_get(i)
    }

    fn flag(&self, i: usize) -> sqlx::Result<bool> {
        self.try_get(i)
    }
}
