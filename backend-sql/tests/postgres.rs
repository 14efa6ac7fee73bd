//! The conformance suite against PostgreSQL (`DURABLE_TEST_POSTGRES_URL`).

use std::time::Duration;

use durable_core::conformance::{Harness, server_from_env};
use durable_core::{Backend, Name, Result};
use durable_sql::{PostgresStore, SqlOptions};
use sqlx::AssertSqlSafe;

const URL_VAR: &str = "DURABLE_TEST_POSTGRES_URL";

struct PgHarness {
    url: String,
    admin: PostgresStore,
}

impl PgHarness {
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
impl Harness for PgHarness {
    async fn open(&self, ns: &Name, dict: &Name) -> Result<Box<dyn Backend>> {
        let options = SqlOptions::new().with_max_connections(4);
        let store = PostgresStore::connect_with(&self.url, options).await?;
        Ok(Box::new(store.backend(ns.as_str(), dict.as_str())?))
    }
    async fn wipe(&self, ns: &Name, dict: &Name) -> Result<()> {
        for table in ["{e}", "{v}"] {
            let sql = format!("DELETE FROM {table} WHERE namespace = $1 AND dictionary = $2");
            self.by_hand(&sql, &[ns.as_str(), dict.as_str()]).await;
        }
        Ok(())
    }
    async fn forget_history(&self, ns: &Name, dict: &Name) -> Result<()> {
        let binds = [ns.as_str(), dict.as_str()];
        self.by_hand(
            "DELETE FROM {e} WHERE namespace = $1 AND dictionary = $2 AND tombstone",
            &binds,
        )
        .await;
        self.by_hand(
            "UPDATE {v} SET oldest_served = counter WHERE namespace = $1 AND dictionary = $2",
            &binds,
        )
        .await;
        Ok(())
    }
    async fn open_unreachable(&self, ns: &Name, dict: &Name) -> Result<Box<dyn Backend>> {
        let options = SqlOptions::new()
            .with_create_schema(false)
            .with_acquire_timeout(Duration::from_secs(2));
        let store =
            PostgresStore::connect_with("postgres://postgres:pw@127.0.0.1:1/test", options).await?;
        Ok(Box::new(store.backend(ns.as_str(), dict.as_str())?))
    }
    async fn cleanup(&self, ns: &Name) -> Result<()> {
        for table in ["{e}", "{v}"] {
            let sql = format!("DELETE FROM {table} WHERE namespace = $1");
            self.by_hand(&sql, &[ns.as_str()]).await;
        }
        Ok(())
    }
}

async fn harness() -> Option<PgHarness> {
    let url = server_from_env(URL_VAR)?;
    let admin = PostgresStore::connect(&url)
        .await
        .expect("connect to PostgreSQL");
    Some(PgHarness { url, admin })
}

mod conformance {
    use super::harness;
    durable_core::conformance_tests!(harness);
}
