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
    /// The server's control script, for [`Harness::restart`]; `None`: restarts are not offered.
    ctl: Option<String>,
}

impl ZkHarness {
    pub fn new(connect: String) -> Self {
        let admin = ZooKeeperStore::new(config(&connect)).expect("valid config");
        ZkHarness {
            connect,
            admin,
            ctl: None,
        }
    }

    /// Offers [`Harness::restart`] through the control script `ctl`. Only for a test binary of
    /// its own: a restart takes the server away from every test running meanwhile.
    pub fn with_ctl(mut self, ctl: String) -> Self {
        self.ctl = Some(ctl);
        self
    }

    pub async fn delete_tree(&self, path: &str) -> Result<()> {
        let client = self.admin.zookeeper_client().await?;
        delete_recursive(&client, path)
            .await
            .map_err(|e| Error::backend("zookeeper", Operation::Clear, e))
    }
}

/// Runs the ZooKeeper control script `script` with `action` (stop, start, restart, kill,
/// status). A failed `start` or `restart` is followed by up to ten `start`s: the script refuses a
/// port the old process still holds for a moment after `stop`.
pub async fn ctl(script: &str, action: &'static str) {
    let mut action = action;
    let mut status = None;
    for _ in 0..10 {
        let script = script.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            std::process::Command::new(script).arg(action).status()
        })
        .await
        .expect("ctl task")
        .expect("run the zookeeper control script");
        if result.success() {
            return;
        }
        status = Some(result);
        if !matches!(action, "start" | "restart") {
            break;
        }
        action = "start";
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("zookeeper control script {action}: {status:?}");
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

    async fn restart(&self) -> Result<bool> {
        let Some(script) = &self.ctl else {
            return Ok(false);
        };
        ctl(script, "restart").await;
        Ok(true)
    }
}

pub async fn harness() -> Option<ZkHarness> {
    server_from_env("DURABLE_TEST_ZOOKEEPER").map(ZkHarness::new)
}

/// [`harness`] with restarts through the script in `DURABLE_TEST_ZOOKEEPER_CTL`.
pub async fn restartable_harness() -> Option<ZkHarness> {
    let harness = harness().await?;
    let script = server_from_env("DURABLE_TEST_ZOOKEEPER_CTL")?;
    Some(harness.with_ctl(script))
}
