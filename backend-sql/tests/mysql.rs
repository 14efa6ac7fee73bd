//! The conformance suite against MySQL or MariaDB (`DURABLE_TEST_MYSQL_URL`).

use std::time::Duration;

use durable_core::conformance::{Harness, server_from_env};
use durable_core::{Backend, Name, Result};
use durable_sql::{MySqlStore, SqlOptions};
use sqlx::AssertSqlSafe;

const URL_VAR: &str = "DURABLE_TEST_MYSQL_URL";

struct MyHarness {
    url: String,
    admin: MySqlStore,
}

impl MyHarness {
    async fn by_hand(&self, sql: &str, binds: &[&str]) {
        let sql = sql
            .replace("{e}", self.admin.entries_table())
            .replace("{v}", self.admin.versions_table());
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(*b);
        }
        query.execute(self.admin.pool()).await.expect("by-hand SQL");
    }
}

#[durable_core::async_trait]
impl Harness for MyHarness {
    async fn open(&self, ns: &Name, dict: &Name) -> Result<Box<dyn Backend>> {
        let options = SqlOptions::new().with_max_connections(4);
        let store = MySqlStore::connect_with(&self.url, options).await?;
        Ok(Box::new(store.backend(ns.as_str(), dict.as_str())?))
    }
    async fn wipe(&self, ns: &Name, dict: &Name) -> Result<()> {
        for table in ["{e}", "{v}"] {
            let sql = format!("DELETE FROM {table} WHERE namespace = ? AND dictionary = ?");
            self.by_hand(&sql, &[ns.as_str(), dict.as_str()]).await;
        }
        Ok(())
    }
    async fn forget_history(&self, ns: &Name, dict: &Name) -> Result<()> {
        let binds = [ns.as_str(), dict.as_str()];
        self.by_hand(
            "DELETE FROM {e} WHERE namespace = ? AND dictionary = ? AND tombstone",
            &binds,
        )
        .await;
        self.by_hand(
            "UPDATE {v} SET oldest_served = counter WHERE namespace = ? AND dictionary = ?",
            &binds,
        )
        .await;
        Ok(())
    }
    async fn open_unreachable(&self, ns: &Name, dict: &Name) -> Result<Box<dyn Backend>> {
        let options = SqlOptions::new()
            .with_create_schema(false)
            .with_acquire_timeout(Duration::from_secs(2));
        let store = MySqlStore::connect_with("mysql://root:pw@127.0.0.1:1/test", options).await?;
        Ok(Box::new(store.backend(ns.as_str(), dict.as_str())?))
    }
    async fn cleanup(&self, ns: &Name) -> Result<()> {
        for table in ["{e}", "{v}"] {
            let sql = format!("DELETE FROM {table} WHERE namespace = ?");
            self.by_hand(&sql, &[ns.as_str()]).await;
        }
        Ok(())
    }
}

async fn harness() -> Option<MyHarness> {
    let url = server_from_env(URL_VAR)?;
    let admin = MySqlStore::connect(&url).await.expect("connect to MySQL");
    Some(MyHarness { url, admin })
}

mod conformance {
    use super::harness;
    durable_core::conformance_tests!(harness);
}
