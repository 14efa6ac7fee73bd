//! Shared test helpers: the conformance harness and server control.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use durable_core::conformance::{Harness, server_from_env};
use durable_core::{Backend, Error, Name, Operation, Result};
use durable_zookeeper::{ZooKeeperConfig, ZooKeeperStore, zookeeper_client as zk};

pub const ROOT: &str = "/durable-test";

pub fn config(connect: &str) -> ZooKeeperConfig {
    ZooKeeperConfig::new(connect)
        .with_root(ROOT)
        .with_session_timeout(Duration::from_secs(6))
        .with_operation_timeout(Duration::from_secs(8))
}

pub struct ZkHarness {
    pub connect: String,
    admin: ZooKeeperStore,
}

impl ZkHarness {
    pub fn new(connect: String) -> Self {
        let admin = ZooKeeperStore::new(config(&connect)).expect("valid config");
        ZkHarness { connect, admin }
    }

    pub async fn delete_tree(&self, path: &str) -> Result<()> {
        let client = self.admin.zookeeper_client().await?;
        delete_recursive(&client, path)
            .await
            .map_err(|e| Error::backend("zookeeper", Operation::Clear, e))
    }
}

/// Deletes `path` and everything below it, as `deleteall` in zkCli does, retrying when live
/// handles re-create children meanwhile.
pub async fn delete_recursive(client: &zk::Client, path: &str) -> Result<(), zk::Error> {
    for _ in 0..20 {
        let mut stack = vec![(path.to_owned(), false)];
        let mut busy = false;
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                match client.delete(&node, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => {}
                    Err(zk::Error::NotEmpty) => busy = true,
                    Err(e) => return Err(e),
                }
                continue;
            }
            match client.list_children(&node).await {
                Ok(children) => {
                    stack.push((node.clone(), true));
                    for child in children {
                        stack.push((format!("{node}/{child}"), false));
                    }
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        if !busy {
            return Ok(());
        }
    }
    Err(zk::Error::NotEmpty)
}

#[durable_core::async_trait]
impl Harness for ZkHarness {
    async fn open(&self, namespace: &Name, dictionary: &Name) -> Result<Box<dyn Backend>> {
        let store = ZooKeeperStore::connect(config(&self.connect)).await?;
        Ok(Box::new(
            store.backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn wipe(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        self.delete_tree(&format!("{ROOT}/{namespace}/{dictionary}"))
            .await
    }

    async fn forget_history(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        self.admin
            .backend(namespace.as_str(), dictionary.as_str())?
            .forget_history()
            .await
            .map(drop)
    }

    async fn open_unreachable(
        &self,
        namespace: &Name,
        dictionary: &Name,
    ) -> Result<Box<dyn Backend>> {
        // Port 1 on loopback: nothing listens there.
        let store = ZooKeeperStore::new(config("127.0.0.1:1"))?;
        Ok(Box::new(
            store.backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn cleanup(&self, namespace: &Name) -> Result<()> {
        self.delete_tree(&format!("{ROOT}/{namespace}")).await
    }
}

pub async fn harness() -> Option<ZkHarness> {
    server_from_env("DURABLE_TEST_ZOOKEEPER").map(ZkHarness::new)
}
