//! Push hints from a persistent watch on the version node, kept alive across reconnects and
//! session expiry.

use std::time::Duration;

use durable_core::{Hint, HintSender, Hints, Operation, Result};
use zookeeper_client as zk;

use crate::ZooKeeperBackend;
use crate::error::{is_terminal, timeout_error};
use crate::store::ZooKeeperStore;

/// How often an idle hint task checks whether its engine is gone.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// The pause between attempts to re-establish a watch while the store is down.
const RETRY: Duration = Duration::from_millis(500);

/// Adds the watch now (so a write right after `subscribe` returns is seen) and leaves it to a
/// task that forwards events as hints.
pub(crate) async fn subscribe(backend: &ZooKeeperBackend) -> Result<Hints> {
    let store = backend.store.clone();
    let path = backend.paths.version.clone();
    let operation = Operation::Subscribe;
    let timeout = store.inner.options.operation_timeout;
    let (client, generation) = store.client(operation).await?;
    let watcher = match tokio::time::timeout(timeout, add_watch(&client, &path)).await {
        Ok(Ok(watcher)) => watcher,
        Ok(Err(e)) => {
            if is_terminal(&e) {
                store.invalidate(generation);
            }
            return Err(store.error(operation, e));
        }
        Err(_) => return Err(timeout_error(operation, timeout)),
    };
    let (sender, hints) = Hints::channel();
    tokio::spawn(
        HintTask {
            store,
            path,
            sender,
            client,
            generation,
        }
        .run(Some(watcher)),
    );
    Ok(hints)
}

fn add_watch<'a>(
    client: &'a zk::Client,
    path: &'a str,
) -> impl Future<Output = Result<zk::PersistentWatcher, zk::Error>> + Send + 'a {
    // The dictionary znode's data changes on every write (and it disappears with a wiped
    // tree), so a non-recursive persistent watch on it sees every change, one event per write;
    // a recursive watch would also report every entry and change-log node.
    client.watch(path, zk::AddWatchMode::Persistent)
}

struct HintTask {
    store: ZooKeeperStore,
    path: String,
    sender: HintSender,
    client: zk::Client,
    generation: u64,
}

impl HintTask {
    async fn run(mut self, mut watcher: Option<zk::PersistentWatcher>) {
        let mut disconnected = false;
        loop {
            let Some(current) = watcher.as_mut() else {
                // No watch: the session expired or adding the watch failed. Get a live client
                // (building a new session if needed), add the watch, and tell the engine that
                // hints were lost meanwhile.
                if self.sender.is_closed() {
                    return;
                }
                watcher = self.reestablish().await;
                if watcher.is_some() {
                    disconnected = false;
                    if !self.sender.send(Hint::Resubscribed) {
                        return;
                    }
                } else {
                    tokio::time::sleep(RETRY).await;
                }
                continue;
            };
            let event = tokio::select! {
                event = current.changed() => event,
                () = tokio::time::sleep(IDLE_CHECK) => {
                    if self.sender.is_closed() {
                        return;
                    }
                    continue;
                }
            };
            match (event.event_type, event.session_state) {
                (zk::EventType::Session, zk::SessionState::Disconnected) => {
                    tracing::debug!(path = %self.path, "zookeeper disconnected, hints paused");
                    disconnected = true;
                    if !self.sender.send(Hint::Lost) {
                        return;
                    }
                }
                (
                    zk::EventType::Session,
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly,
                ) => {
                    if disconnected {
                        // zookeeper-client 0.11.2 does not re-register persistent watches after
                        // a reconnect: add it again (before dropping the old watcher), and
                        // force a version check, since events during the gap are lost.
                        disconnected = false;
                        tracing::debug!(path = %self.path, "zookeeper reconnected, re-adding the watch");
                        watcher = self.add().await;
                        if watcher.is_some() && !self.sender.send(Hint::Resubscribed) {
                            return;
                        }
                    }
                }
                (zk::EventType::Session, state) => {
                    // Expired, closed or auth failed: terminal. Never poll this watcher again
                    // (it panics after a terminal event); the next loop builds a new session.
                    tracing::info!(path = %self.path, %state, "zookeeper session ended, rebuilding");
                    if !self.sender.send(Hint::Lost) {
                        return;
                    }
                    watcher = None;
                    self.store.invalidate(self.generation);
                }
                _ => {
                    if !self.sender.send(Hint::Changed) {
                        return;
                    }
                }
            }
        }
    }

    async fn add(&mut self) -> Option<zk::PersistentWatcher> {
        let timeout = self.store.inner.options.operation_timeout;
        match tokio::time::timeout(timeout, add_watch(&self.client, &self.path)).await {
            Ok(Ok(watcher)) => Some(watcher),
            Ok(Err(e)) => {
                tracing::debug!(path = %self.path, error = %e, "adding the zookeeper watch failed");
                if is_terminal(&e) {
                    self.store.invalidate(self.generation);
                }
                None
            }
            Err(_) => None,
        }
    }

    async fn reestablish(&mut self) -> Option<zk::PersistentWatcher> {
        match self.store.client(Operation::Subscribe).await {
            Ok((client, generation)) => {
                self.client = client;
                self.generation = generation;
                self.add().await
            }
            Err(e) => {
                tracing::debug!(path = %self.path, error = %e, "zookeeper still unreachable");
                None
            }
        }
    }
}
