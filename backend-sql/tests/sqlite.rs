//! The conformance suite against SQLite: a database file (each backend with its own pool, as
//! separate processes would) and an in-memory database.

use durable_core::conformance::Harness;
use durable_core::{Backend, Name, Result};
use durable_sql::{SqlOptions, SqliteStore};
use sqlx::AssertSqlSafe;

/// Runs plain SQL by hand, as an operator would.
async fn by_hand(store: &SqliteStore, sql: &str, binds: &[&str]) {
    let sql = sql
        .replace("{e}", store.entries_table())
        .replace("{v}", store.versions_table());
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for b in binds {
        query = query.bind(*b);
    }
    query.execute(store.pool()).await.expect("by-hand SQL");
}

async fn wipe(store: &SqliteStore, ns: &Name, dict: &Name) {
    for table in ["{e}", "{v}"] {
        let sql = format!("DELETE FROM {table} WHERE namespace = ? AND dictionary = ?");
        by_hand(store, &sql, &[ns.as_str(), dict.as_str()]).await;
    }
}

async fn forget_history(store: &SqliteStore, ns: &Name, dict: &Name) {
    let binds = [ns.as_str(), dict.as_str()];
    by_hand(
        store,
        "DELETE FROM {e} WHERE namespace = ? AND dictionary = ? AND tombstone",
        &binds,
    )
    .await;
    by_hand(
        store,
        "UPDATE {v} SET oldest_served = counter WHERE namespace = ? AND dictionary = ?",
        &binds,
    )
    .await;
}

async fn cleanup(store: &SqliteStore, ns: &Name) {
    for table in ["{e}", "{v}"] {
        let sql = format!("DELETE FROM {table} WHERE namespace = ?");
        by_hand(store, &sql, &[ns.as_str()]).await;
    }
}

async fn unreachable(ns: &Name, dict: &Name) -> Result<Box<dyn Backend>> {
    // A file in a directory that does not exist cannot be opened (nor created).
    let options = SqlOptions::new()
        .with_create_schema(false)
        .with_acquire_timeout(std::time::Duration::from_secs(2));
    let store =
        SqliteStore::connect_with("sqlite:///nonexistent-durable-dir/x/y.db", options).await?;
    Ok(Box::new(store.backend(ns.as_str(), dict.as_str())?))
}

mod file {
    use super::*;

    struct FileHarness {
        _dir: tempfile::TempDir,
        url: String,
        admin: SqliteStore,
    }

    #[durable_core::async_trait]
    impl Harness for FileHarness {
        async fn open(&self, ns: &Name, dict: &Name) -> Result<Box<dyn Backend>> {
            let store = SqliteStore::connect(&self.url).await?;
            Ok(Box::new(store.backend(ns.as_str(), dict.as_str())?))
        }
        async fn wipe(&self, ns: &Name, dict: &Name) -> Result<()> {
            wipe(&self.admin, ns, dict).await;
            Ok(())
        }
        async fn forget_history(&self, ns: &Name, dict: &Name) -> Result<()> {
            forget_history(&self.admin, ns, dict).await;
            Ok(())
        }
        async fn open_unreachable(&self, ns: &Name, dict: &Name) -> Result<Box<dyn Backend>> {
            unreachable(ns, dict).await
        }
        async fn cleanup(&self, ns: &Name) -> Result<()> {
            cleanup(&self.admin, ns).await;
            Ok(())
        }
    }

    async fn harness() -> Option<FileHarness> {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
        let admin = SqliteStore::connect(&url).await.expect("open SQLite file");
        Some(FileHarness {
            _dir: dir,
            url,
            admin,
        })
    }

    durable_core::conformance_tests!(harness);
}

mod memory {
    use super::*;

    struct MemoryHarness {
        store: SqliteStore,
    }

    #[durable_core::async_trait]
    impl Harness for MemoryHarness {
        async fn open(&self, ns: &Name, dict: &Name) -> Result<Box<dyn Backend>> {
            Ok(Box::new(self.store.backend(ns.as_str(), dict.as_str())?))
        }
        async fn wipe(&self, ns: &Name, dict: &Name) -> Result<()> {
            wipe(&self.store, ns, dict).await;
            Ok(())
        }
        async fn forget_history(&self, ns: &Name, dict: &Name) -> Result<()> {
            forget_history(&self.store, ns, dict).await;
            Ok(())
        }
        async fn open_unreachable(&self, ns: &Name, dict: &Name) -> Result<Box<dyn Backend>> {
            unreachable(ns, dict).await
        }
        async fn cleanup(&self, ns: &Name) -> Result<()> {
            cleanup(&self.store, ns).await;
            Ok(())
        }
    }

    async fn harness() -> Option<MemoryHarness> {
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .expect("open in-memory SQLite");
        Some(MemoryHarness { store })
    }

    durable_core::conformance_tests!(harness);
}
