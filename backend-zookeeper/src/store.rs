//! The shared connection: one ZooKeeper session, rebuilt after expiry.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use durable_core::{Error, Name, Operation, Result};
use parking_lot::Mutex;
use zookeeper_client as zk;

use crate::backend::ZooKeeperBackend;
use crate::config::ZooKeeperConfig;

pub(crate) const NAME: &str = "zookeeper";

/// A connection to a ZooKeeper ensemble, shared by the [`ZooKeeperBackend`]s opened from it
/// (clones share it too).
///
/// The session is established on first use (or by [`connect`](Self::connect)). When it expires
/// (a disconnection longer than the session timeout) or the client is closed, the next
/// operation builds a new client; the backends' watches are re-added on the new session by their
/// hint tasks.
#[derive(Clone)]
pub struct ZooKeeperStore {
    pub(crate) inner: Arc<StoreInner>,
}

pub(crate) struct StoreInner {
    pub(crate) config: ZooKeeperConfig,
    hosts: String,
    chroot: Option<String>,
    current: Mutex<Option<(zk::Client, u64)>>,
    connecting: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    sessions: AtomicU64,
}

impl fmt::Debug for ZooKeeperStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self
            .inner
            .current
            .lock()
            .as_ref()
            .map(|(client, _)| client.state());
        f.debug_struct("ZooKeeperStore")
            .field("config", &self.inner.config)
            .field("state", &state)
            .field("sessions", &self.inner.sessions.load(Ordering::Relaxed))
            .finish()
    }
}

impl ZooKeeperStore {
    /// A store that connects on first use. Fails only on an invalid configuration.
    pub fn new(config: ZooKeeperConfig) -> Result<Self> {
        let (hosts, chroot) = config.validate()?;
        Ok(ZooKeeperStore {
            inner: Arc::new(StoreInner {
                config,
                hosts,
                chroot,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
                sessions: AtomicU64::new(0),
            }),
        })
    }

    /// A store with an established session: [`Error::Unavailable`] or [`Error::Timeout`] when
    /// no server answers.
    pub async fn connect(config: ZooKeeperConfig) -> Result<Self> {
        let store = Self::new(config)?;
        store.client(Operation::Open).await?;
        Ok(store)
    }

    /// A backend over dictionary `dictionary` in `namespace`, stored under
    /// `<root>/<namespace>/<dictionary>`.
    pub fn backend(&self, namespace: &str, dictionary: &str) -> Result<ZooKeeperBackend> {
        Ok(ZooKeeperBackend::new(
            self.clone(),
            Name::new(namespace)?,
            Name::new(dictionary)?,
        ))
    }

    /// The options this store was built with.
    pub fn config(&self) -> &ZooKeeperConfig {
        &self.inner.config
    }

    /// How many ZooKeeper sessions this store has established (more than one after an expiry).
    pub fn sessions(&self) -> u64 {
        self.inner.sessions.load(Ordering::Relaxed)
    }

    /// The current client, for administrative tasks the backend does not cover; establishes a
    /// session if there is none. Do not keep it: after an expiry the store replaces it.
    pub async fn zookeeper_client(&self) -> Result<zk::Client> {
        Ok(self.client(Operation::Open).await?.0)
    }

    /// A live client and its generation, connecting (once, for every concurrent caller) if the
    /// current one is missing or terminated.
    pub(crate) async fn client(&self, operation: Operation) -> Result<(zk::Client, u64)> {
        if let Some(found) = self.live() {
            return Ok(found);
        }
        let _guard = self.inner.connecting.lock().await;
        if let Some(found) = self.live() {
            return Ok(found);
        }
        let timeout = self.inner.config.operation_timeout;
        let client = match tokio::time::timeout(timeout, self.establish()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(map_error(operation, e)),
            Err(_) => return Err(timeout_error(operation, timeout)),
        };
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.sessions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = %client.session_id(), generation, "zookeeper session established");
        *self.inner.current.lock() = Some((client.clone(), generation));
        Ok((client, generation))
    }

    fn live(&self) -> Option<(zk::Client, u64)> {
        let current = self.inner.current.lock();
        match &*current {
            Some((client, generation)) if !client.state().is_terminated() => {
                Some((client.clone(), *generation))
            }
            _ => None,
        }
    }

    async fn establish(&self) -> Result<zk::Client, zk::Error> {
        let config = &self.inner.config;
        let mut connector = zk::Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_fail_eagerly();
        if let Some((user, password)) = &config.auth {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let client = connector.connect(&self.inner.hosts).await?;
        let Some(chroot) = &self.inner.chroot else {
            return Ok(client);
        };
        match client.mkdir(chroot, &config.create_options()).await {
            // The chroot may exist while we may not create in its parent.
            Ok(()) | Err(zk::Error::NoAuth) => {}
            Err(e) => return Err(e),
        }
        client
            .chroot(chroot.as_str())
            .map_err(|_| zk::Error::BadArguments(&"invalid chroot"))
    }

    /// Forgets the client of `generation` after a terminal error, so the next call rebuilds.
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut current = self.inner.current.lock();
        if current.as_ref().is_some_and(|(_, g)| *g == generation) {
            tracing::info!(
                generation,
                "zookeeper session lost, a new client will be built"
            );
            *current = None;
        }
    }

    /// Runs `f` with a live client within the operation timeout, mapping errors. A session
    /// that turns out expired is replaced, and `f` is retried once if `retry_on_expiry` (reads).
    pub(crate) async fn run<T, F, Fut>(
        &self,
        operation: Operation,
        retry_on_expiry: bool,
        mut f: F,
    ) -> Result<T>
    where
        F: FnMut(zk::Client) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let timeout = self.inner.config.operation_timeout;
        let body = async {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let (client, generation) = self.client(operation).await?;
                match f(client).await {
                    Ok(value) => return Ok(value),
                    Err(Failure::Zk(e)) if is_terminal(&e) => {
                        self.invalidate(generation);
                        if !(retry_on_expiry && attempts < 2) {
                            return Err(map_error(operation, e));
                        }
                    }
                    Err(Failure::Zk(e)) => return Err(map_error(operation, e)),
                    Err(Failure::Durable(e)) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(timeout, body).await {
            Ok(result) => result,
            Err(_) => Err(timeout_error(operation, timeout)),
        }
    }
}

/// An error inside an operation: the driver's (mapped at the end) or already a durable one.
#[derive(Debug)]
pub(crate) enum Failure {
    Zk(zk::Error),
    Durable(Error),
}

impl From<zk::Error> for Failure {
    fn from(e: zk::Error) -> Self {
        Failure::Zk(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Durable(e)
    }
}

pub(crate) fn is_terminal(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::SessionMoved
    )
}

/// Connection trouble becomes `Unavailable`, everything else `Backend`.
pub(crate) fn map_error(operation: Operation, e: zk::Error) -> Error {
    match e {
        zk::Error::ConnectionLoss
        | zk::Error::Timeout
        | zk::Error::NoHosts
        | zk::Error::SessionExpired
        | zk::Error::SessionMoved
        | zk::Error::ClientClosed
        | zk::Error::Throttled
        | zk::Error::NotReadOnly
        // zookeeper-client 0.11 fails the requests in flight with the error that broke the
        // connection: a socket error (reset by a restarting server, ...) or "no response from
        // connection", both wrapped in `Custom`, which it uses for nothing else.
        | zk::Error::Custom(_) => Error::unavailable(NAME, operation, e),
        e => Error::backend(NAME, operation, e),
    }
}

pub(crate) fn timeout_error(operation: Operation, after: Duration) -> Error {
    Error::Timeout {
        backend: NAME.to_owned(),
        operation,
        after,
    }
}
