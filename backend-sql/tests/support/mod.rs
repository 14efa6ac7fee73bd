//! Helpers shared by the test binaries: one enum over the three stores, SQL by hand, and the
//! conformance harness.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use durable_core::bytes::Bytes;
use durable_core::conformance::{Damage, Garbage, Harness, StoredCopy, server_from_env};
use durable_core::{Backend, Dict, Encoding, Mode, Name, Options, Result, STAMP_HISTORY};
use durable_sql::{MySqlStore, PostgresStore, SqlOptions, SqliteStore};
use sqlx::AssertSqlSafe;

/// A store of any of the three databases.
#[derive(Clone, Debug)]
pub enum Store {
    Pg(PostgresStore),
    My(MySqlStore),
    Lite(SqliteStore),
}

/// A random name for namespaces and table prefixes.
pub fn random_name(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

impl Store {
    /// Opens a store of kind `kind` ("postgres", "mysql", "sqlite") at `url`.
    pub async fn open(kind: &str, url: &str, options: SqlOptions) -> Result<Store> {
        Ok(match kind {
            "postgres" => Store::Pg(PostgresStore::connect_with(url, options).await?),
            "mysql" => Store::My(MySqlStore::connect_with(url, options).await?),
            _ => Store::Lite(SqliteStore::connect_with(url, options).await?),
        })
    }

    /// The dictionaries of `ns` (see `SqlStore::dictionaries`).
    pub async fn dictionaries(&self, ns: &str) -> Result<Vec<String>> {
        match self {
            Store::Pg(s) => s.dictionaries(ns).await,
            Store::My(s) => s.dictionaries(ns).await,
            Store::Lite(s) => s.dictionaries(ns).await,
        }
    }

    pub fn backend(&self, ns: &str, dict: &str) -> Box<dyn Backend> {
        match self {
            Store::Pg(s) => Box::new(s.backend(ns, dict).unwrap()),
            Store::My(s) => Box::new(s.backend(ns, dict).unwrap()),
            Store::Lite(s) => Box::new(s.backend(ns, dict).unwrap()),
        }
    }

    pub async fn dict<V, E: Encoding<V>>(
        &self,
        ns: &str,
        dict: &str,
        encoding: E,
        mode: Mode,
    ) -> Dict<V, E>
    where
        V: Send + Sync + 'static,
    {
        let options = Options::new()
            .with_mode(mode)
            .with_timeout(Duration::from_secs(10))
            // Hand-made changes send no NOTIFY: never skip a check on the strength of hints.
            .with_trust_hints_for(None);
        Dict::open(self.backend(ns, dict), encoding, options)
            .await
            .expect("open a handle")
    }

    /// The entries, versions and stamp history tables.
    pub fn tables(&self) -> (&str, &str, &str) {
        match self {
            Store::Pg(s) => (s.entries_table(), s.versions_table(), s.stamps_table()),
            Store::My(s) => (s.entries_table(), s.versions_table(), s.stamps_table()),
            Store::Lite(s) => (s.entries_table(), s.versions_table(), s.stamps_table()),
        }
    }

    /// Runs `sql` by hand (no parameters); `{e}`, `{v}` and `{s}` name the entries, versions and
    /// stamp history tables.
    pub async fn exec(&self, sql: &str) {
        let (e, v, s) = self.tables();
        let sql = sql.replace("{e}", e).replace("{v}", v).replace("{s}", s);
        let result = match self {
            Store::Pg(s) => sqlx::query(AssertSqlSafe(sql.clone()))
                .execute(s.pool())
                .await
                .map(drop),
            Store::My(s) => sqlx::query(AssertSqlSafe(sql.clone()))
                .execute(s.pool())
                .await
                .map(drop),
            Store::Lite(s) => sqlx::query(AssertSqlSafe(sql.clone()))
                .execute(s.pool())
                .await
                .map(drop),
        };
        result.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs `statements` (no parameters; `{e}`, `{v}` and `{s}` name the tables) in one write
    /// transaction.
    pub async fn exec_in_transaction(&self, statements: &[String]) {
        let (e, v, s) = self.tables();
        let statements: Vec<String> = statements
            .iter()
            .map(|sql| sql.replace("{e}", e).replace("{v}", v).replace("{s}", s))
            .collect();
        macro_rules! run_all {
            ($tx:expr) => {{
                let mut tx = $tx.expect("begin");
                for sql in &statements {
                    sqlx::query(AssertSqlSafe(sql.clone()))
                        .execute(&mut *tx)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
                tx.commit().await.expect("commit");
            }};
        }
        match self {
            Store::Pg(s) => run_all!(s.pool().begin().await),
            Store::My(s) => run_all!(s.pool().begin().await),
            Store::Lite(s) => run_all!(s.pool().begin_with("BEGIN IMMEDIATE").await),
        }
    }

    /// Writes bad data of kind `garbage` (other than [`Garbage::UndecodableValue`], which a
    /// backend writes) as another program writing through the layout would: in one
    /// transaction, the version record is bumped (a fresh stamp, recorded in the history) and
    /// the row gets the new counter as revision (or, for [`Garbage::Malformed`], a revision out
    /// of range), so that handles meet it in their next delta. False for the kinds the column
    /// types cannot hold:
    ///
    /// - `NonUtf8Key`: `key` followed by bytes 0xff 0xfe, a new row (SQLite: as TEXT; MySQL: the
    ///   VARBINARY key). PostgreSQL's TEXT holds UTF-8 only.
    /// - `WrongType` (SQLite only, whose columns take any type): `key`'s value becomes the
    ///   INTEGER 12345, and a new row `{key}-blob` has its key stored as a BLOB.
    /// - `Malformed`: `key`'s revision becomes 2^60, out of the range of counters (every column
    ///   is NOT NULL, so no NULL value can be stored).
    /// - `Stray`: every row of the entries table is an entry: none.
    pub async fn write_garbage(&self, ns: &Name, dict: &Name, garbage: Garbage, key: &str) -> bool {
        let rows = rows_of(ns, Some(dict));
        let quoted = key.replace('\'', "''");
        let counter = format!("(SELECT counter FROM {{v}} WHERE {rows})");
        let insert = |key_sql: &str| {
            format!(
                "INSERT INTO {{e}} (namespace, dictionary, entry_key, value, revision, tombstone, \
                 written_at, expires_at) SELECT namespace, dictionary, {key_sql}, X'31', counter, \
                 FALSE, 0, NULL FROM {{v}} WHERE {rows}"
            )
        };
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut bad_key = key.as_bytes().to_vec();
        bad_key.extend_from_slice(&[0xff, 0xfe]);
        let rows_changed = match (garbage, self) {
            (Garbage::NonUtf8Key, Store::Lite(_)) => {
                vec![insert(&format!("CAST(X'{}' AS TEXT)", hex(&bad_key)))]
            }
            (Garbage::NonUtf8Key, Store::My(_)) => vec![insert(&format!("X'{}'", hex(&bad_key)))],
            (Garbage::WrongType, Store::Lite(_)) => vec![
                format!(
                    "UPDATE {{e}} SET value = 12345, revision = {counter}, tombstone = FALSE \
                     WHERE {rows} AND entry_key = '{quoted}'"
                ),
                insert(&format!("X'{}'", hex(format!("{key}-blob").as_bytes()))),
            ],
            (Garbage::Malformed, _) => vec![format!(
                "UPDATE {{e}} SET revision = {}, tombstone = FALSE WHERE {rows} AND entry_key = \
                 '{quoted}'",
                1i64 << 60
            )],
            _ => return false,
        };
        let stamp = (rand::random::<u64>() | 1) as i64;
        let history = STAMP_HISTORY;
        let mut statements = vec![
            format!(
                "UPDATE {{v}} SET counter = counter + 1, parent = stamp, stamp = {stamp} WHERE \
                 {rows}"
            ),
            format!(
                "DELETE FROM {{s}} WHERE {rows} AND slot = (SELECT counter % {history} FROM {{v}} \
                 WHERE {rows})"
            ),
            format!(
                "INSERT INTO {{s}} (namespace, dictionary, slot, counter, stamp) SELECT namespace, \
                 dictionary, counter % {history}, counter, stamp FROM {{v}} WHERE {rows}"
            ),
        ];
        statements.extend(rows_changed);
        self.exec_in_transaction(&statements).await;
        true
    }

    /// Empties the tables as an operator would (TRUNCATE; DELETE on SQLite).
    pub async fn truncate(&self) {
        for table in ["{e}", "{v}", "{s}"] {
            match self {
                Store::Lite(_) => self.exec(&format!("DELETE FROM {table}")).await,
                _ => self.exec(&format!("TRUNCATE TABLE {table}")).await,
            }
        }
    }

    /// Kills every other connection running a statement on the entries table, as an operator
    /// (or a failover) would; returns how many it killed. Not for SQLite.
    pub async fn kill_queries_on_entries(&self) -> usize {
        let (entries, _, _) = self.tables();
        let running = format!("%{entries}%");
        match self {
            Store::Pg(s) => {
                let killed: Vec<(bool,)> = sqlx::query_as(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE pid <> pg_backend_pid() AND state = 'active' AND query LIKE $1",
                )
                .bind(running)
                .fetch_all(s.pool())
                .await
                .expect("terminate");
                killed.into_iter().filter(|(done,)| *done).count()
            }
            Store::My(s) => {
                let ids: Vec<(i64,)> = sqlx::query_as(
                    "SELECT ID FROM information_schema.PROCESSLIST \
                     WHERE ID <> CONNECTION_ID() AND INFO LIKE ?",
                )
                .bind(running)
                .fetch_all(s.pool())
                .await
                .expect("list the connections");
                for (id,) in &ids {
                    self.exec(&format!("KILL CONNECTION {id}")).await;
                }
                ids.len()
            }
            Store::Lite(_) => unreachable!("SQLite has no connections to kill"),
        }
    }

    /// Drops the tables (for private table prefixes).
    pub async fn drop_tables(&self) {
        for table in ["{e}", "{v}", "{s}"] {
            self.exec(&format!("DROP TABLE IF EXISTS {table}")).await;
        }
    }

    /// Copies every row of the dictionary from every table it uses (entries with their
    /// tombstones and expiry times, the version record, the stamp history), as `pg_dump` of
    /// those rows (or a copy of the file) would.
    pub async fn copy_rows(&self, namespace: &Name, dictionary: &Name) -> RowsCopy {
        let rows = rows_of(namespace, Some(dictionary));
        // One snapshot for all three tables, as pg_dump reads.
        match self {
            Store::Pg(s) => {
                let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
                let tx = s.pool().begin_with(begin).await.expect("begin");
                copy_rows!(tx, String, self.tables(), rows)
            }
            Store::My(s) => {
                let begin = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";
                let tx = s.pool().begin_with(begin).await.expect("begin");
                copy_rows!(tx, Vec<u8>, self.tables(), rows)
            }
            Store::Lite(s) => {
                let tx = s.pool().begin().await.expect("begin");
                copy_rows!(tx, String, self.tables(), rows)
            }
        }
    }

    /// Replaces every row of the dictionary with `copy`, in one transaction, as restoring a
    /// backup of those rows would (other connections stay open).
    pub async fn put_back(&self, namespace: &Name, dictionary: &Name, copy: &RowsCopy) {
        let rows = rows_of(namespace, Some(dictionary));
        let (ns, dict) = (namespace.as_str(), dictionary.as_str());
        match self {
            Store::Pg(s) => {
                let tx = s.pool().begin().await.expect("begin");
                put_back!(
                    tx,
                    |k: &Vec<u8>| String::from_utf8(k.clone()).unwrap(),
                    self.tables(),
                    rows,
                    ns,
                    dict,
                    copy
                )
            }
            Store::My(s) => {
                let tx = s.pool().begin().await.expect("begin");
                put_back!(
                    tx,
                    |k: &Vec<u8>| k.clone(),
                    self.tables(),
                    rows,
                    ns,
                    dict,
                    copy
                )
            }
            Store::Lite(s) => {
                let tx = s.pool().begin_with("BEGIN IMMEDIATE").await.expect("begin");
                put_back!(
                    tx,
                    |k: &Vec<u8>| String::from_utf8(k.clone()).unwrap(),
                    self.tables(),
                    rows,
                    ns,
                    dict,
                    copy
                )
            }
        }
    }

    /// Damages the dictionary's version record as `damage` says; false if the column types
    /// cannot hold it (PostgreSQL and MySQL columns hold only integers; every column is NOT
    /// NULL, except the stamp).
    pub async fn damage_version_record(&self, ns: &Name, dict: &Name, damage: Damage) -> bool {
        let rows = rows_of(ns, Some(dict));
        let sqlite = matches!(self, Store::Lite(_));
        let set = match damage {
            Damage::RecordMissing => {
                self.exec(&format!("DELETE FROM {{v}} WHERE {rows}")).await;
                return true;
            }
            Damage::CounterNotInteger if sqlite => "counter = 'garbage'",
            Damage::CounterNegative => "counter = -5",
            Damage::CounterHuge if sqlite => "counter = 1e300",
            Damage::CounterHuge => "counter = 9223372036854775807",
            Damage::EpochNotInteger if sqlite => "epoch = 'garbage'",
            _ => return false,
        };
        self.exec(&format!("UPDATE {{v}} SET {set} WHERE {rows}"))
            .await;
        true
    }
}

/// An entries row: key (as bytes), value, revision, tombstone, written_at, expires_at.
pub type EntryRow = (Vec<u8>, Vec<u8>, i64, bool, i64, Option<i64>);

/// The rows of one dictionary, from [`Store::copy_rows`].
#[derive(Debug, Clone, Default)]
pub struct RowsCopy {
    pub entries: Vec<EntryRow>,
    /// Epoch, counter, oldest_served, stamp, parent.
    pub version: Option<(i64, i64, i64, Option<i64>, i64)>,
    /// Slot, counter, stamp.
    pub stamps: Vec<(i64, i64, i64)>,
}

/// [`Store::copy_rows`] in read transaction `$tx`; `$key` is how the database returns
/// `entry_key`.
macro_rules! copy_rows {
    ($tx:expr, $key:ty, $tables:expr, $rows:expr) => {{
        let mut tx = $tx;
        let (e, v, s) = $tables;
        let rows = $rows;
        let entries: Vec<($key, Vec<u8>, i64, bool, i64, Option<i64>)> =
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT entry_key, value, revision, tombstone, written_at, expires_at FROM {e} \
                 WHERE {rows}"
            )))
            .fetch_all(&mut *tx)
            .await
            .expect("copy the entries");
        let version = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT epoch, counter, oldest_served, stamp, parent FROM {v} WHERE {rows}"
        )))
        .fetch_optional(&mut *tx)
        .await
        .expect("copy the version record");
        let stamps = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT slot, counter, stamp FROM {s} WHERE {rows}"
        )))
        .fetch_all(&mut *tx)
        .await
        .expect("copy the stamp history");
        tx.rollback().await.expect("end the read transaction");
        RowsCopy {
            entries: entries
                .into_iter()
                .map(|(k, v, r, t, w, x)| (AsRef::<[u8]>::as_ref(&k).to_vec(), v, r, t, w, x))
                .collect(),
            version,
            stamps,
        }
    }};
}
use copy_rows;

/// [`Store::put_back`] in transaction `$tx`; `$key` turns stored key bytes into what the
/// database's `entry_key` column takes.
macro_rules! put_back {
    ($tx:expr, $key:expr, $tables:expr, $rows:expr, $ns:expr, $dict:expr, $copy:expr) => {{
        let mut tx = $tx;
        let (e, v, s) = $tables;
        let rows = $rows;
        let copy: &RowsCopy = $copy;
        // The version record first: writers queue on its lock until the commit.
        for table in [v, e, s] {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE {rows}")))
                .execute(&mut *tx)
                .await
                .expect("delete the dictionary's rows");
        }
        if let Some((epoch, counter, oldest, stamp, parent)) = copy.version {
            let mut insert = sqlx::QueryBuilder::new(format!(
                "INSERT INTO {v} (namespace, dictionary, epoch, counter, oldest_served, stamp, \
                 parent) "
            ));
            insert.push_values([()], |mut row, ()| {
                row.push_bind($ns)
                    .push_bind($dict)
                    .push_bind(epoch)
                    .push_bind(counter)
                    .push_bind(oldest)
                    .push_bind(stamp)
                    .push_bind(parent);
            });
            insert
                .build()
                .execute(&mut *tx)
                .await
                .expect("insert the version record");
        }
        for chunk in copy.entries.chunks(500) {
            let mut insert = sqlx::QueryBuilder::new(format!(
                "INSERT INTO {e} (namespace, dictionary, entry_key, value, revision, tombstone, \
                 written_at, expires_at) "
            ));
            insert.push_values(
                chunk,
                |mut row, (k, value, revision, tombstone, written, expires)| {
                    row.push_bind($ns)
                        .push_bind($dict)
                        .push_bind(($key)(k))
                        .push_bind(value.clone())
                        .push_bind(*revision)
                        .push_bind(*tombstone)
                        .push_bind(*written)
                        .push_bind(*expires);
                },
            );
            insert
                .build()
                .execute(&mut *tx)
                .await
                .expect("insert the entries");
        }
        for chunk in copy.stamps.chunks(1000) {
            let mut insert = sqlx::QueryBuilder::new(format!(
                "INSERT INTO {s} (namespace, dictionary, slot, counter, stamp) "
            ));
            insert.push_values(chunk, |mut row, (slot, counter, stamp)| {
                row.push_bind($ns)
                    .push_bind($dict)
                    .push_bind(*slot)
                    .push_bind(*counter)
                    .push_bind(*stamp);
            });
            insert
                .build()
                .execute(&mut *tx)
                .await
                .expect("insert the stamp history");
        }
        tx.commit().await.expect("commit the restore");
    }};
}
use put_back;

/// Runs `action` (stop, start, restart) with a test server's control script.
pub async fn ctl(control: &str, action: &str) {
    let status = tokio::process::Command::new(control)
        .arg(action)
        .status()
        .await
        .expect("run the control script");
    assert!(status.success(), "{control} {action} failed");
}

/// The conformance harness over any of the three databases, by hand-written SQL.
pub struct SqlHarness {
    kind: &'static str,
    /// Where [`open`](Harness::open) connects, with a pool of its own as a separate process
    /// would; `None`: every backend shares `admin`'s pool (an in-memory SQLite database).
    url: Option<String>,
    admin: Store,
    /// The server's control script, for [`restart`](Harness::restart).
    control: Option<String>,
    /// Keeps a SQLite file's directory.
    _dir: Option<tempfile::TempDir>,
}

impl SqlHarness {
    /// The harness over the test server of `kind` ("postgres" or "mysql"), from
    /// `DURABLE_TEST_{KIND}_URL`; `None` (skip) when it is unset. It cannot restart the server.
    pub async fn server(kind: &'static str) -> Option<SqlHarness> {
        let url = server_from_env(&format!("DURABLE_TEST_{}_URL", kind.to_uppercase()))?;
        let admin = Store::open(kind, &url, SqlOptions::new())
            .await
            .unwrap_or_else(|e| panic!("connect to {kind}: {e}"));
        Some(SqlHarness {
            kind,
            url: Some(url),
            admin,
            control: None,
            _dir: None,
        })
    }

    /// Like [`server`](Self::server), and it restarts the server with its control script
    /// `DURABLE_TEST_{KIND}_CTL`. Only for a test binary of its own.
    pub async fn restartable(kind: &'static str) -> Option<SqlHarness> {
        let control = server_from_env(&format!("DURABLE_TEST_{}_CTL", kind.to_uppercase()))?;
        let harness = Self::server(kind).await?;
        Some(SqlHarness {
            control: Some(control),
            ..harness
        })
    }

    /// The harness over a SQLite file in a temporary directory.
    pub async fn sqlite_file() -> SqlHarness {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
        let admin = Store::open("sqlite", &url, SqlOptions::new())
            .await
            .expect("open SQLite file");
        SqlHarness {
            kind: "sqlite",
            url: Some(url),
            admin,
            control: None,
            _dir: Some(dir),
        }
    }

    /// The harness over an in-memory SQLite database (one pool shared by every backend).
    pub async fn sqlite_memory() -> SqlHarness {
        let admin = Store::open("sqlite", "sqlite::memory:", SqlOptions::new())
            .await
            .expect("open in-memory SQLite");
        SqlHarness {
            kind: "sqlite",
            url: None,
            admin,
            control: None,
            _dir: None,
        }
    }

    /// Deletes the rows matching `condition` from every table.
    async fn delete(&self, condition: &str) {
        for table in ["{e}", "{v}", "{s}"] {
            self.admin
                .exec(&format!("DELETE FROM {table} WHERE {condition}"))
                .await;
        }
    }
}

/// The SQL condition selecting the rows of `namespace`, and of `dictionary` only if given
/// ([`Name`]s are safe to paste into SQL).
fn rows_of(namespace: &Name, dictionary: Option<&Name>) -> String {
    match dictionary {
        Some(dictionary) => format!("namespace = '{namespace}' AND dictionary = '{dictionary}'"),
        None => format!("namespace = '{namespace}'"),
    }
}

#[durable_core::async_trait]
impl Harness for SqlHarness {
    async fn open(&self, ns: &Name, dict: &Name) -> Result<Box<dyn Backend>> {
        let Some(url) = &self.url else {
            return Ok(self.admin.backend(ns.as_str(), dict.as_str()));
        };
        let options = SqlOptions::new().with_max_connections(4);
        let store = Store::open(self.kind, url, options).await?;
        Ok(store.backend(ns.as_str(), dict.as_str()))
    }

    async fn wipe(&self, ns: &Name, dict: &Name) -> Result<()> {
        self.delete(&rows_of(ns, Some(dict))).await;
        Ok(())
    }

    async fn forget_history(&self, ns: &Name, dict: &Name) -> Result<()> {
        let rows = rows_of(ns, Some(dict));
        let admin = &self.admin;
        admin
            .exec(&format!(
                "DELETE FROM {{e}} WHERE {rows} AND tombstone = TRUE"
            ))
            .await;
        admin
            .exec(&format!(
                "UPDATE {{v}} SET oldest_served = counter WHERE {rows}"
            ))
            .await;
        Ok(())
    }

    async fn open_unreachable(&self, ns: &Name, dict: &Name) -> Result<Box<dyn Backend>> {
        let url = match self.kind {
            // A file in a directory that does not exist cannot be opened (nor created).
            "sqlite" => "sqlite:///nonexistent-durable-dir/x/y.db",
            "postgres" => "postgres://postgres:pw@127.0.0.1:1/test",
            _ => "mysql://root:pw@127.0.0.1:1/test",
        };
        let options = SqlOptions::new()
            .with_create_schema(false)
            .with_acquire_timeout(Duration::from_secs(2));
        let store = Store::open(self.kind, url, options).await?;
        Ok(store.backend(ns.as_str(), dict.as_str()))
    }

    async fn cleanup(&self, ns: &Name) -> Result<()> {
        self.delete(&rows_of(ns, None)).await;
        Ok(())
    }

    async fn copy_stored(&self, ns: &Name, dict: &Name) -> Result<StoredCopy> {
        Ok(Box::new(self.admin.copy_rows(ns, dict).await))
    }

    async fn put_back(&self, ns: &Name, dict: &Name, copy: StoredCopy) -> Result<()> {
        let copy = copy.downcast::<RowsCopy>().expect("a copy of this harness");
        self.admin.put_back(ns, dict, &copy).await;
        Ok(())
    }

    async fn damage_version_record(&self, ns: &Name, dict: &Name, damage: Damage) -> Result<bool> {
        Ok(self.admin.damage_version_record(ns, dict, damage).await)
    }

    async fn write_garbage(
        &self,
        ns: &Name,
        dict: &Name,
        garbage: Garbage,
        key: &str,
    ) -> Result<bool> {
        if garbage == Garbage::UndecodableValue {
            // As another program using durable with another encoding would.
            let backend = self.open(ns, dict).await?;
            backend
                .persist(key, Bytes::from_static(b"{not json \xff"))
                .await?;
            return Ok(true);
        }
        Ok(self.admin.write_garbage(ns, dict, garbage, key).await)
    }

    async fn restart(&self) -> Result<bool> {
        let Some(control) = &self.control else {
            return Ok(false);
        };
        ctl(control, "restart").await;
        Ok(true)
    }
}
