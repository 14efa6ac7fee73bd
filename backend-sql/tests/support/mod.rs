//! Helpers shared by the fault tests: one enum over the three stores, SQL by hand.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use durable_core::{Backend, Dict, Encoding, Mode, Options};
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
    pub async fn open(kind: &str, url: &str, options: SqlOptions) -> Store {
        match kind {
            "postgres" => Store::Pg(PostgresStore::connect_with(url, options).await.unwrap()),
            "mysql" => Store::My(MySqlStore::connect_with(url, options).await.unwrap()),
            _ => Store::Lite(SqliteStore::connect_with(url, options).await.unwrap()),
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
