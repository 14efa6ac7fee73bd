//! The shared connection: one ZooKeeper session, rebuilt after expiry.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use durable_core::{Error, Name, Operation, Result};
use parking_lot::Mutex;
use zookeeper_client as zk;

use crate::ZooKeeperBackend;
use crate::error::{self, Failure, is_connection_failure, is_terminal, timeout_error};
use crate::options::{Server, ZooKeeperOptions};

/// The longest a probe of one server takes (name lookup, then a TCP connection) when a session
/// could not be established and the error should say why.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

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
    pub(crate) options: ZooKeeperOptions,
    servers: Vec<Server>,
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
            .field("options", &self.inner.options)
            .field("state", &state)
            .field("sessions", &self.inner.sessions.load(Ordering::Relaxed))
            .finish()
    }
}

impl ZooKeeperStore {
    /// A store that connects on first use. Fails only on an invalid configuration
    /// ([`Error::Config`] naming the problem: a server that is not `host:port`, a port out of
    /// range, a chroot or root that is not an absolute path, credentials that are not
    /// `user:password`; never the password).
    pub fn new(options: ZooKeeperOptions) -> Result<Self> {
        let (servers, chroot) = options.validate()?;
        let hosts = servers
            .iter()
            .map(Server::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Ok(ZooKeeperStore {
            inner: Arc::new(StoreInner {
                options,
                servers,
                hosts,
                chroot,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
                sessions: AtomicU64::new(0),
            }),
        })
    }

    /// A store with an established session. When none can be established within the
    /// [operation timeout](ZooKeeperOptions::with_operation_timeout), [`Error::Unavailable`]
    /// says why for each server: the connection refused, the host name unknown, no answer, or
    /// a server that accepts connections but establishes no session (not serving, or not
    /// ZooKeeper). A refused connection fails at once, without waiting for the timeout.
    pub async fn connect(options: ZooKeeperOptions) -> Result<Self> {
        let store = Self::new(options)?;
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

    /// The names of the dictionaries of `namespace` stored here, sorted: the children of the
    /// namespace's znode `<root>/<namespace>` that are dictionaries (the namespace's `.clock`
    /// znode, and any child whose name no dictionary can have, are not). Read-only: it never
    /// creates anything, not even the namespace's znode: an absent namespace has no dictionaries.
    ///
    /// A dictionary's znode (its version record) is created by its first write, and also by
    /// the first read of a dictionary that has none (opening a handle, `last_updated`, a load
    /// or a delta create it), so a dictionary that was only opened for reading is listed too.
    ///
    /// One round trip: a read barrier on the namespace's znode (a `multi` that only checks it,
    /// writing nothing) and the list of its children, pipelined, so the list holds every
    /// dictionary created before the call, whichever server the session is on.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] when `namespace` is not a valid name (no dictionary can be
    /// stored in it); the errors of any read when no session can be established.
    pub async fn dictionaries(&self, namespace: &str) -> Result<Vec<String>> {
        let path = format!("{}/{}", self.inner.options.root, Name::new(namespace)?);
        let path = &path;
        self.run(Operation::Load, true, |client| async move {
            let passed = crate::dictionary::barrier(&client, path);
            let listed = client.list_children(path);
            passed.await?;
            let mut names = match listed.await {
                Ok(names) => names,
                Err(zk::Error::NoNode) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            names.retain(|name| Name::new(name.as_str()).is_ok());
            names.sort_unstable();
            Ok(names)
        })
        .await
    }

    /// The options this store was built with.
    pub fn options(&self) -> &ZooKeeperOptions {
        &self.inner.options
    }

    /// The chroot of the connect string (`/apps` of `zk1:2181/apps`), if any.
    pub(crate) fn chroot(&self) -> Option<&str> {
        self.inner.chroot.as_deref()
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
        let timeout = self.inner.options.operation_timeout;
        let started = Instant::now();
        let client = match tokio::time::timeout(timeout, self.establish(operation)).await {
            Ok(Ok(client)) => client,
            Ok(Err(Failure::Durable(e))) => return Err(e),
            Ok(Err(Failure::Zk(e))) if is_connection_failure(&e) => {
                return Err(self
                    .no_session(operation, started.elapsed(), false, Some(e))
                    .await);
            }
            Ok(Err(Failure::Zk(e))) => return Err(self.error(operation, e)),
            Err(_) => return Err(self.no_session(operation, timeout, true, None).await),
        };
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.sessions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            session = %client.session_id(),
            hosts = %self.inner.hosts,
            generation,
            "zookeeper session established"
        );
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

    async fn establish(&self, operation: Operation) -> Result<zk::Client, Failure> {
        let options = &self.inner.options;
        let mut connector = zk::Client::connector()
            .with_session_timeout(options.session_timeout)
            .with_fail_eagerly();
        if let Some((user, password)) = &options.auth {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let client = connector.connect(&self.inner.hosts).await?;
        let Some(chroot) = &self.inner.chroot else {
            return Ok(client);
        };
        match client.mkdir(chroot, &options.create_options()).await {
            Ok(()) => {}
            // The chroot may exist while we may not create in its parent.
            Err(zk::Error::NoAuth) => {
                if client.check_stat(chroot).await?.is_none() {
                    return Err(Failure::Durable(Error::backend(
                        NAME,
                        operation,
                        format!(
                            "the chroot {chroot} of the connect string does not exist, and {} \
                             may not create it (ZooKeeper NoAuth on a parent)",
                            self.identity()
                        ),
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
        client.chroot(chroot.as_str()).map_err(|_| {
            Failure::Durable(Error::Config(format!(
                "zookeeper: chroot {chroot:?} is not a valid path"
            )))
        })
    }

    /// Who this store's sessions are, for messages: the digest user, never the password.
    fn identity(&self) -> String {
        match self.inner.options.digest_user() {
            Some(user) => format!("digest user {user:?}"),
            None => "an unauthenticated session".into(),
        }
    }

    /// The error of an operation that failed with the driver's `e`, naming this store's root
    /// and identity when the servers refused access ([`error::map`]).
    pub(crate) fn error(&self, operation: Operation, e: zk::Error) -> Error {
        let root = format!(
            "{}{}",
            self.inner.chroot.as_deref().unwrap_or(""),
            self.inner.options.root
        );
        error::map(operation, e, &root, &self.identity())
    }

    /// The error when no session could be established after `waited` (`timed_out`: the
    /// operation timeout ran out), from the driver's `driver` error if any: each server probed
    /// (name lookup, TCP connection, at most [`PROBE_TIMEOUT`]) to say why.
    async fn no_session(
        &self,
        operation: Operation,
        waited: Duration,
        timed_out: bool,
        driver: Option<zk::Error>,
    ) -> Error {
        let probes = futures_join(
            self.inner
                .servers
                .iter()
                .map(|server| probe(server.clone())),
        )
        .await;
        let error = NoSession {
            waited: timed_out.then_some(waited),
            probes,
            driver,
        };
        tracing::debug!(%error, "zookeeper: no session established");
        Error::unavailable(NAME, operation, error)
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
        let timeout = self.inner.options.operation_timeout;
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
                            return Err(self.error(operation, e));
                        }
                    }
                    Err(Failure::Zk(e)) => return Err(self.error(operation, e)),
                    Err(Failure::Durable(e)) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(timeout, body).await {
            Ok(result) => result,
            // Still no session: say why rather than only how long.
            Err(_) if self.live().is_none() => {
                Err(self.no_session(operation, timeout, true, None).await)
            }
            Err(_) => Err(timeout_error(operation, timeout)),
        }
    }
}

/// What a probe of one server found.
#[derive(Debug)]
enum Probe {
    /// The host name does not resolve.
    UnknownHost(std::io::Error),
    /// The name lookup did not finish within [`PROBE_TIMEOUT`].
    LookupTimeout,
    /// The TCP connection failed (refused, unreachable network, ...).
    Connect(std::io::Error),
    /// No answer to the TCP connection within [`PROBE_TIMEOUT`].
    ConnectTimeout,
    /// The server accepts TCP connections: the session failed at ZooKeeper's level.
    Accepts,
}

/// Looks up `server` and opens (then closes) a TCP connection to it.
async fn probe(server: Server) -> (Server, Probe) {
    let lookup = tokio::net::lookup_host((server.host.clone(), server.port));
    let addresses: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(PROBE_TIMEOUT, lookup).await {
            Ok(Ok(addresses)) => addresses.collect(),
            Ok(Err(e)) => return (server, Probe::UnknownHost(e)),
            Err(_) => return (server, Probe::LookupTimeout),
        };
    let connect = tokio::net::TcpStream::connect(&addresses[..]);
    let found = match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(_)) => Probe::Accepts,
        Ok(Err(e)) => Probe::Connect(e),
        Err(_) => Probe::ConnectTimeout,
    };
    (server, found)
}

/// Runs `futures` concurrently and returns their outputs in order.
async fn futures_join<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("a probe does not panic"));
    }
    outputs
}

/// No session could be established: with each server, what its probe found.
#[derive(Debug)]
struct NoSession {
    /// The time limit that ran out, if one did.
    waited: Option<Duration>,
    probes: Vec<(Server, Probe)>,
    driver: Option<zk::Error>,
}

impl fmt::Display for NoSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.waited {
            Some(waited) => write!(f, "no ZooKeeper session established within {waited:?}")?,
            None => f.write_str("no ZooKeeper session could be established")?,
        }
        for (i, (server, probe)) in self.probes.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            match probe {
                Probe::UnknownHost(e) => write!(f, "{server}: unknown host ({e})")?,
                Probe::LookupTimeout => write!(
                    f,
                    "{server}: the host name did not resolve within {PROBE_TIMEOUT:?}"
                )?,
                Probe::Connect(e) => write!(f, "{server}: {e}")?,
                Probe::ConnectTimeout => write!(
                    f,
                    "{server}: no answer to a TCP connection within {PROBE_TIMEOUT:?}"
                )?,
                Probe::Accepts => write!(
                    f,
                    "{server}: accepts TCP connections but established no session (a server \
                     that is not serving, e.g. without a quorum, or not a ZooKeeper server)"
                )?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for NoSession {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.driver.as_ref().map(|e| e as _)
    }
}
