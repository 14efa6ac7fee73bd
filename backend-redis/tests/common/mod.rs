//! Harnesses shared by the test files: a single server and a Redis Cluster.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use durable_core::conformance::Harness;
use durable_core::{Backend, Name, Result};
use durable_redis::redis::{self, AsyncCommands};
use durable_redis::{RedisOptions, RedisStore};

pub fn options() -> RedisOptions {
    RedisOptions::new()
        .with_response_timeout(Duration::from_secs(5))
        .with_connection_timeout(Duration::from_secs(2))
}

fn err(e: redis::RedisError) -> durable_core::Error {
    durable_core::Error::backend("redis", durable_core::Operation::Open, e)
}

/// Deletes every key matching `pattern` on one server (SCAN MATCH, never KEYS or FLUSHALL).
pub async fn delete_matching(url: &str, pattern: &str) -> Result<()> {
    let client = redis::Client::open(url).map_err(err)?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(err)?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        for key in keys {
            let _: () = conn.del(key).await.map_err(err)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

pub struct SingleHarness {
    pub url: String,
    /// The server's control script (`DURABLE_TEST_REDIS_CTL`: `stop`, `start`, `restart`); with
    /// it, [`Harness::restart`] restarts the server. Only for a test binary of its own.
    pub ctl: Option<String>,
}

impl SingleHarness {
    /// A harness over the server at `url` that cannot restart it.
    pub fn new(url: String) -> Self {
        SingleHarness { url, ctl: None }
    }
}

#[durable_core::async_trait]
impl Harness for SingleHarness {
    async fn open(&self, namespace: &Name, dictionary: &Name) -> Result<Box<dyn Backend>> {
        let store = RedisStore::connect_with(&self.url, options()).await?;
        Ok(Box::new(
            store.backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn wipe(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        let store = RedisStore::connect_with(&self.url, options()).await?;
        let backend = store.backend(namespace.as_str(), dictionary.as_str())?;
        let client = redis::Client::open(self.url.as_str()).map_err(err)?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(err)?;
        let _: () = conn.del(&backend.redis_keys()[..]).await.map_err(err)?;
        Ok(())
    }

    async fn forget_history(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        let store = RedisStore::connect_with(&self.url, options()).await?;
        store
            .backend(namespace.as_str(), dictionary.as_str())?
            .forget_history()
            .await?;
        Ok(())
    }

    async fn open_unreachable(
        &self,
        namespace: &Name,
        dictionary: &Name,
    ) -> Result<Box<dyn Backend>> {
        let store = RedisStore::lazy("redis://127.0.0.1:1/", options())?;
        Ok(Box::new(
            store.backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn cleanup(&self, namespace: &Name) -> Result<()> {
        delete_matching(&self.url, &format!("durable:{{{namespace}:*")).await
    }

    /// `$CTL restart`: SHUTDOWN SAVE, then start again from dump.rdb.
    async fn restart(&self) -> Result<bool> {
        let Some(ctl) = self.ctl.as_deref() else {
            return Ok(false);
        };
        let command = ctl.to_owned();
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new(command).arg("restart").status()
        })
        .await
        .expect("the restart task");
        match status {
            Ok(status) if status.success() => Ok(true),
            other => Err(durable_core::Error::backend(
                "redis",
                durable_core::Operation::Open,
                format!("`{ctl} restart` failed: {other:?}"),
            )),
        }
    }
}

pub struct ClusterHarness {
    pub urls: Vec<String>,
}

impl ClusterHarness {
    pub fn from_env_value(value: &str) -> Self {
        ClusterHarness {
            urls: value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    pub async fn store(&self) -> Result<RedisStore> {
        RedisStore::connect_cluster(&self.urls, options()).await
    }
}

#[durable_core::async_trait]
impl Harness for ClusterHarness {
    async fn open(&self, namespace: &Name, dictionary: &Name) -> Result<Box<dyn Backend>> {
        Ok(Box::new(
            self.store()
                .await?
                .backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn wipe(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        let backend = self
            .store()
            .await?
            .backend(namespace.as_str(), dictionary.as_str())?;
        let client = redis::cluster::ClusterClient::new(self.urls.clone()).map_err(err)?;
        let mut conn = client.get_async_connection().await.map_err(err)?;
        // One slot (shared hash tag), so one multi-key DEL works on a cluster.
        let _: () = conn.del(&backend.redis_keys()[..]).await.map_err(err)?;
        Ok(())
    }

    async fn forget_history(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        let store = self.store().await?;
        store
            .backend(namespace.as_str(), dictionary.as_str())?
            .forget_history()
            .await?;
        Ok(())
    }

    async fn open_unreachable(
        &self,
        namespace: &Name,
        dictionary: &Name,
    ) -> Result<Box<dyn Backend>> {
        let store = RedisStore::lazy("redis://127.0.0.1:1/", options())?;
        Ok(Box::new(
            store.backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn cleanup(&self, namespace: &Name) -> Result<()> {
        for url in &self.urls {
            delete_matching(url, &format!("durable:{{{namespace}:*")).await?;
        }
        Ok(())
    }
}
