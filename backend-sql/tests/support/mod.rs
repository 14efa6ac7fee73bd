//! Helpers shared by the test binaries: one enum over the three stores, SQL by hand, and the
//! conformance harness.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use durable_core::conformance::{Harness, server_from_env};
use durable_core::{Backend, Dict, Encoding, Mode, Name, Options, Result};
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
    format!("{prefix}{:012x}", rand_u64() & 0xffff_ffff_ffff)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
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

    fn tables(&self) -> (&str, &str) {
        match self {
            Store::Pg(s) => (s.entries_table(), s.versions_table()),
            Store::My(s) => (s.entries_table(), s.versions_table()),
            Store::Lite(s) => (s.entries_table(), s.versions_table()),
        }
    }

    /// Runs `sql` by hand (no parameters); `{e}` and `{v}` name the two tables.
    pub async fn exec(&self, sql: &str) {
        let (e, v) = self.tables();
        let sql = sql.replace("{e}", e).replace("{v}", v);
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

    /// Empties both tables as an operator would (TRUNCATE; DELETE on SQLite).
    pub async fn truncate(&self) {
        match self {
            Store::Lite(_) => {
                self.exec("DELETE FROM {e}").await;
                self.exec("DELETE FROM {v}").await;
            }
            _ => {
                self.exec("TRUNCATE TABLE {e}").await;
                self.exec("TRUNCATE TABLE {v}").await;
            }
        }
    }

    /// Drops both tables (for private table prefixes).
    pub async fn drop_tables(&self) {
        self.exec("DROP TABLE IF EXISTS {e}").await;
        self.exec("DROP TABLE IF EXISTS {v}").await;
    }
}

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

    /// Deletes the rows matching `condition` from both tables.
    async fn delete(&self, condition: &str) {
        for table in ["{e}", "{v}"] {
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

    async fn restart(&self) -> Result<bool> {
        let Some(control) = &self.control else {
            return Ok(false);
        };
        ctl(control, "restart").await;
        Ok(true)
    }
}
