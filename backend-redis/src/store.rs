//! [`RedisStore`]: connections and options, handing out one backend per dictionary.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use durable_core::{Error, Name, Operation, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::compat::DurabledictBackend;
use crate::conn::{Conn, map_err};
use crate::native::RedisBackend;

/// Connection and layout options of a [`RedisStore`].
///
/// ```
/// use std::time::Duration;
/// use durable_redis::RedisOptions;
///
/// let options = RedisOptions::new()
///     .with_response_timeout(Duration::from_secs(2))
///     .with_tombstone_retention(Duration::from_secs(600));
/// assert_eq!(options.tombstone_retention(), Duration::from_secs(600));
/// ```
#[derive(Debug, Clone)]
pub struct RedisOptions {
    response_timeout: Duration,
    connection_timeout: Duration,
    tombstone_retention: Duration,
    load_chunk: usize,
    max_delta: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(2),
            tombstone_retention: Duration::from_secs(3600),
            load_chunk: 2000,
            max_delta: 100_000,
        }
    }
}

impl RedisOptions {
    /// The defaults: response timeout 5 s, connection timeout 2 s, tombstone retention 1 h,
    /// full loads in chunks of 2000 entries, deltas of at most 100 000 keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long one command or script may take before it fails with
    /// [`Error::Unavailable`] (default 5 s; the driver's own default of 500 ms is too short
    /// for chunked loads of large values).
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long connecting may take (default 2 s).
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long deleted keys are remembered for delta sync (default 1 h). A process whose
    /// token is older than the oldest remembered delete gets a full reload instead of a delta.
    pub fn with_tombstone_retention(mut self, retention: Duration) -> Self {
        self.tombstone_retention = retention;
        self
    }

    /// How many entries one chunk of a full load asks for (an `HSCAN COUNT` hint, default 2000).
    pub fn with_load_chunk(mut self, entries: usize) -> Self {
        self.load_chunk = entries.max(1);
        self
    }

    /// The largest delta served (default 100 000 changed keys); a larger one is answered with
    /// "too old" so the engine does a chunked full load instead of one huge reply.
    pub fn with_max_delta(mut self, keys: usize) -> Self {
        self.max_delta = keys.max(1);
        self
    }

    /// The response timeout.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The connection timeout.
    pub fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }

    /// The tombstone retention.
    pub fn tombstone_retention(&self) -> Duration {
        self.tombstone_retention
    }

    pub(crate) fn load_chunk(&self) -> usize {
        self.load_chunk
    }

    pub(crate) fn max_delta(&self) -> usize {
        self.max_delta
    }
}

/// Where the hint task connects: the server, or the cluster's nodes (it follows `MOVED`).
#[derive(Clone)]
pub(crate) enum HintTarget {
    Single(Box<ConnectionInfo>),
    #[cfg(feature = "cluster")]
    Cluster(Vec<ConnectionInfo>),
}

pub(crate) struct StoreInner {
    pub(crate) conn: Conn,
    pub(crate) hint_target: HintTarget,
    pub(crate) options: RedisOptions,
    redacted: String,
}

/// A Redis server or cluster holding durable dictionaries.
///
/// Cheap to clone (clones share the connection). Every dictionary backend handed out by
/// [`backend`](Self::backend) or [`durabledict`](Self::durabledict) shares the store's command
/// connection, a multiplexed [`ConnectionManager`] that reconnects on its own (or a cluster
/// connection); push hints use one extra dedicated connection per subscribed dictionary.
///
/// The `Debug` output shows the URL with the password replaced by `***`.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<StoreInner>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.redacted)
            .field("connection", &self.inner.conn)
            .field("options", &self.inner.options)
            .finish()
    }
}

/// Replaces the password of a URL by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

fn config_error(url: &str, err: redis::RedisError) -> Error {
    // The driver's message can quote the URL; never let a password through.
    let _ = err;
    Error::Config(format!(
        "invalid Redis URL {}: expected redis://[user[:password]@]host[:port][/db] or rediss://...",
        redact(url)
    ))
}

fn parse(url: &str) -> Result<ConnectionInfo> {
    url.into_connection_info().map_err(|e| config_error(url, e))
}

impl RedisStore {
    /// Connects to the server at `url` with default options and checks that it answers.
    ///
    /// URL forms: `redis://[user[:password]@]host[:port][/db]`, `rediss://...` (TLS, feature
    /// `tls`), `redis+unix:///path/to/socket`.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, RedisOptions::new()).await
    }

    /// Connects to the server at `url` with `options` and checks that it answers.
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Self> {
        let store = Self::lazy(url, options)?;
        let Conn::Single(mut manager) = store.inner.conn.clone() else {
            unreachable!("lazy stores are single-server stores")
        };
        let timeout = store.inner.options.response_timeout + store.inner.options.connection_timeout;
        match tokio::time::timeout(timeout, redis::cmd("PING").query_async::<()>(&mut manager))
            .await
        {
            Ok(Ok(())) => Ok(store),
            Ok(Err(e)) => Err(map_err(Operation::Open, e)),
            Err(_) => Err(Error::Timeout {
                backend: "redis".into(),
                operation: Operation::Open,
                after: timeout,
            }),
        }
    }

    /// A store over the server at `url` that connects on first use (no I/O here; must be
    /// called inside a Tokio runtime). Operations fail with [`Error::Unavailable`] while the
    /// server cannot be reached, and the connection is re-established when it can.
    pub fn lazy(url: &str, options: RedisOptions) -> Result<Self> {
        let info = parse(url)?;
        let client = redis::Client::open(info.clone()).map_err(|e| config_error(url, e))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connection_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| map_err(Operation::Open, e))?;
        Ok(RedisStore {
            inner: Arc::new(StoreInner {
                conn: Conn::Single(manager),
                hint_target: HintTarget::Single(Box::new(info)),
                options,
                redacted: redact(url),
            }),
        })
    }

    /// Connects to a Redis Cluster given some of its nodes' URLs (feature `cluster`).
    ///
    /// All keys of one dictionary share a hash tag, so every script runs on one slot; push
    /// hints use sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7) on the node serving it.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster<S: AsRef<str>>(urls: &[S], options: RedisOptions) -> Result<Self> {
        let infos = urls
            .iter()
            .map(|u| parse(u.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        if infos.is_empty() {
            return Err(Error::Config(
                "a Redis Cluster needs at least one node URL".into(),
            ));
        }
        let client = redis::cluster::ClusterClientBuilder::new(infos.clone())
            .response_timeout(options.response_timeout)
            .connection_timeout(options.connection_timeout)
            .retries(2)
            .build()
            .map_err(|e| map_err(Operation::Open, e))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| map_err(Operation::Open, e))?;
        let redacted = urls
            .iter()
            .map(|u| redact(u.as_ref()))
            .collect::<Vec<_>>()
            .join(",");
        Ok(RedisStore {
            inner: Arc::new(StoreInner {
                conn: Conn::Cluster(conn),
                hint_target: HintTarget::Cluster(infos),
                options,
                redacted,
            }),
        })
    }

    /// The backend of dictionary `dictionary` in `namespace`, in the native layout (every
    /// capability). Its keys are `durable:{<namespace>:<dictionary>}:*`.
    pub fn backend(&self, namespace: &str, dictionary: &str) -> Result<RedisBackend> {
        Ok(RedisBackend::new(
            self.clone(),
            &Name::new(namespace)?,
            &Name::new(dictionary)?,
        ))
    }

    /// The backend of the dictionary stored in Python durabledict's `RedisDict` layout under
    /// `keyspace` (see the crate docs: full reloads only, no epoch, no compare-and-swap).
    pub fn durabledict(&self, keyspace: &str) -> Result<DurabledictBackend> {
        DurabledictBackend::new(self.clone(), keyspace)
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    pub(crate) fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }
}
