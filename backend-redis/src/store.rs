//! [`RedisStore`]: the URL (credentials kept apart, redacted everywhere), the connection (one
//! reconnecting manager, or a cluster connection), and one backend per dictionary.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use durable_core::credentials::{ParsedUrl, Secrets, is_socket_scheme, redact};
use durable_core::{Error, Name, Operation, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use crate::error::{bad_reply, map_err, never_sent, open_error};
use crate::record::{dictionary_of, version_pattern};
use crate::reply::Reply;
use crate::{DurabledictBackend, RedisBackend, RedisOptions};

/// The command connection of a store: a reconnecting manager, or a cluster connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conn::Single(_) => f.write_str("ConnectionManager"),
            #[cfg(feature = "cluster")]
            Conn::Cluster(_) => f.write_str("ClusterConnection"),
        }
    }
}

impl Conn {
    /// The command scripts use to publish hints: sharded pub/sub on a cluster.
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Conn::Single(_) => "PUBLISH",
            #[cfg(feature = "cluster")]
            Conn::Cluster(_) => "SPUBLISH",
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => Box::pin(async move {
                let result = c.send_packed_command(cmd).await;
                if never_sent(&result) {
                    return c.send_packed_command(cmd).await;
                }
                result
            }),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => Box::pin(async move {
                let result = c.send_packed_commands(pipeline, offset, count).await;
                if never_sent(&result) {
                    return c.send_packed_commands(pipeline, offset, count).await;
                }
                result
            }),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Conn::Cluster(c) => c.get_db(),
        }
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
/// The `Debug` output shows the URL with its user name and password replaced by `***`
/// ([`durable_core::credentials::redact`]).
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

/// The connection manager (connecting on first use) and address of the server at `url`.
fn single_server(url: &str, options: &RedisOptions) -> Result<(ConnectionManager, ConnectionInfo)> {
    options.check()?;
    let info = parse(url)?;
    let client =
        redis::Client::open(info.clone()).map_err(|e| config_error(url, &driver_reason(&e)))?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(options.response_timeout()))
        .set_connection_timeout(Some(options.connection_timeout()))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let manager = ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| map_err(Operation::Open, e))?;
    Ok((manager, info))
}

/// The user name and password of a URL, given to the driver apart from the URL so that no
/// parser or message of the driver ever sees the password.
#[derive(Clone, Default, PartialEq, Eq)]
struct Credentials {
    user: Option<String>,
    password: Option<String>,
}

impl Credentials {
    #[cfg(feature = "cluster")]
    fn is_empty(&self) -> bool {
        self.user.is_none() && self.password.is_none()
    }

    fn apply(&self, info: ConnectionInfo) -> ConnectionInfo {
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &self.user {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        info.set_redis_settings(settings)
    }
}

/// The credentials of a URL ([`ParsedUrl`]).
impl From<&ParsedUrl> for Credentials {
    fn from(url: &ParsedUrl) -> Self {
        Credentials {
            user: url.user.clone(),
            password: url.password.clone(),
        }
    }
}

const URL_FORMS: &str = "expected redis://[user[:password]@]host[:port][/db], rediss://... or \
                         redis+unix:///path/to/socket";

fn config_error(url: &str, problem: &str) -> Error {
    Error::Config(format!(
        "invalid Redis URL {}: {}",
        redact(url),
        Secrets::from_url(url).scrub(problem)
    ))
}

/// The driver's reason for refusing a URL that holds no password (the credentials were taken
/// out first), kept short: its messages are fixed texts.
fn driver_reason(err: &redis::RedisError) -> String {
    let reason = err.detail().map_or_else(|| err.to_string(), str::to_owned);
    format!("{reason} ({URL_FORMS})")
}

/// The node addresses `url` names (several for `redis://[credentials@]h1:p1,h2:p2/`), each
/// with the URL's credentials, and those credentials.
fn parse_nodes(url: &str) -> Result<(Vec<ConnectionInfo>, Credentials)> {
    let parsed = ParsedUrl::parse(url);
    let Some((scheme, rest)) = parsed.bare.split_once("://") else {
        return Err(config_error(url, URL_FORMS));
    };
    if is_socket_scheme(scheme) {
        // A file path (which may hold `@`); a password goes in `?pass=`.
        let info = url
            .into_connection_info()
            .map_err(|_| config_error(url, URL_FORMS))?;
        return Ok((vec![info], Credentials::default()));
    }
    let credentials = Credentials::from(&parsed);
    let (hosts, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() && !nodes.is_empty() {
            continue; // a trailing comma
        }
        // No credentials in what the driver parses.
        let bare = format!("{scheme}://{host}{path}");
        let info = bare
            .as_str()
            .into_connection_info()
            .map_err(|e| config_error(url, &driver_reason(&e)))?;
        nodes.push(credentials.apply(info));
    }
    Ok((nodes, credentials))
}

/// The one server `url` names.
fn parse(url: &str) -> Result<ConnectionInfo> {
    let (mut nodes, _) = parse_nodes(url)?;
    if nodes.len() > 1 {
        return Err(config_error(
            url,
            "it names several nodes: connect to a Redis Cluster with RedisStore::connect_cluster",
        ));
    }
    Ok(nodes.remove(0))
}

impl RedisStore {
    /// Connects to the server at `url` with default options and checks that it answers.
    ///
    /// URL forms: `redis://[user[:password]@]host[:port][/db]`, `rediss://...` (TLS, feature
    /// `tls`), `redis+unix:///path/to/socket`. The user name and password may hold any
    /// character unencoded (they end at the last `@` followed by a host); `%XX` escapes are
    /// decoded.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the server cannot be reached (naming the address: connection
    /// refused, unknown host, ...), [`Error::Config`] for an invalid URL, credentials the
    /// server refuses or a database number it does not have, [`Error::Timeout`] when it does
    /// not answer within the connection and response timeouts. No error shows the password.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, RedisOptions::new()).await
    }

    /// Connects to the server at `url` with `options` and checks that it answers.
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Self> {
        let (mut manager, info) = single_server(url, &options)?;
        let timeout = options.response_timeout() + options.connection_timeout();
        match tokio::time::timeout(timeout, redis::cmd("PING").query_async::<()>(&mut manager))
            .await
        {
            Ok(Ok(())) => Ok(Self::single(manager, info, options, url)),
            Ok(Err(e)) => Err(open_error(info.addr().to_string(), e)),
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
        let (manager, info) = single_server(url, &options)?;
        Ok(Self::single(manager, info, options, url))
    }

    /// The store over one server, from its connection manager and address.
    fn single(
        manager: ConnectionManager,
        info: ConnectionInfo,
        options: RedisOptions,
        url: &str,
    ) -> Self {
        RedisStore {
            inner: Arc::new(StoreInner {
                conn: Conn::Single(manager),
                hint_target: HintTarget::Single(Box::new(info)),
                options,
                redacted: redact(url),
            }),
        }
    }

    /// Connects to a Redis Cluster given some of its nodes' URLs (feature `cluster`).
    ///
    /// Each URL names one node or several (`redis://[user:password@]h1:6379,h2:6380/`); the
    /// credentials, given once, are every node's (different credentials in different URLs are
    /// an [`Error::Config`]). All keys of one dictionary share a hash tag, so every script runs
    /// on one slot; push hints use sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7) on the
    /// node serving it. Errors as for [`connect`](Self::connect).
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster<S: AsRef<str>>(urls: &[S], options: RedisOptions) -> Result<Self> {
        options.check()?;
        // Credentials given once (in any one URL) are every node's.
        let mut infos = Vec::new();
        let mut given: Option<Credentials> = None;
        for url in urls {
            let (nodes, credentials) = parse_nodes(url.as_ref())?;
            if !credentials.is_empty() {
                match &given {
                    Some(other) if *other != credentials => {
                        return Err(Error::Config(format!(
                            "the Redis Cluster node URLs give different credentials ({}): give \
                             them once, or the same in every URL",
                            urls.iter()
                                .map(|u| redact(u.as_ref()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                    _ => given = Some(credentials),
                }
            }
            infos.extend(nodes);
        }
        if infos.is_empty() {
            return Err(Error::Config(
                "a Redis Cluster needs at least one node URL".into(),
            ));
        }
        let credentials = given.unwrap_or_default();
        let infos: Vec<ConnectionInfo> = infos
            .into_iter()
            .map(|info| credentials.apply(info))
            .collect();
        let mut builder = redis::cluster::ClusterClientBuilder::new(infos.clone())
            .response_timeout(options.response_timeout())
            .connection_timeout(options.connection_timeout())
            .retries(2);
        if let Some(user) = &credentials.user {
            builder = builder.username(user);
        }
        if let Some(password) = &credentials.password {
            builder = builder.password(password);
        }
        let client = builder.build().map_err(|e| map_err(Operation::Open, e))?;
        let addresses = infos
            .iter()
            .map(|info| info.addr().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| open_error(addresses, e))?;
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

    /// The names of the dictionaries of `namespace` stored here in the native layout, sorted:
    /// those whose version record exists. Read-only: it never creates anything.
    ///
    /// A dictionary's version record is created by its first write, and also by the first read
    /// of a dictionary that has none (opening a handle, `last_updated`, a load or a delta create
    /// it, as after a wipe), so a dictionary that was only opened for reading is listed too.
    /// Dictionaries in the durabledict layout are not listed (their keyspaces follow no naming
    /// scheme).
    ///
    /// It walks the keyspace with `SCAN` and a `MATCH` pattern on the version records' keys
    /// (on a cluster, on every master), a page of about 1000 keys at a time, so it never
    /// blocks the server, but it costs a pass over every key of the database: a tool's
    /// operation, not one for a request path. As with any `SCAN`, a dictionary created or
    /// deleted while it runs may or may not be listed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] when `namespace` is not a valid name (no dictionary can be
    /// stored in it); the errors of any read when the server cannot be reached.
    pub async fn dictionaries(&self, namespace: &str) -> Result<Vec<String>> {
        let namespace = Name::new(namespace)?;
        let pattern = version_pattern(namespace.as_str());
        let mut keys = Vec::new();
        match self.conn() {
            Conn::Single(mut manager) => {
                let mut cursor = "0".to_owned();
                loop {
                    let page = manager.req_packed_command(&scan(&cursor, &pattern)).await;
                    cursor = scan_page(page, &mut keys)?;
                    if cursor == "0" {
                        break;
                    }
                }
            }
            #[cfg(feature = "cluster")]
            Conn::Cluster(mut cluster) => {
                use redis::cluster_routing::{
                    MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo,
                };
                // The first page of every master at once, answered by node address; then the
                // rest of each master's keyspace from its own cursor.
                let masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let first = cluster
                    .route_command(scan("0", &pattern), masters)
                    .await
                    .map_err(|e| map_err(LISTING, e))?;
                let Value::Map(pages) = first else {
                    return Err(bad_reply(
                        LISTING,
                        format!("SCAN of every master: expected a map, got {first:?}"),
                    ));
                };
                for (address, page) in pages {
                    let address = match address {
                        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                        Value::SimpleString(text) => text,
                        other => {
                            return Err(bad_reply(LISTING, format!("node address {other:?}")));
                        }
                    };
                    let Some((host, port)) = address
                        .rsplit_once(':')
                        .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
                    else {
                        return Err(bad_reply(LISTING, format!("node address {address:?}")));
                    };
                    let mut cursor = scan_page(Ok(page), &mut keys)?;
                    while cursor != "0" {
                        let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        });
                        let page = cluster.route_command(scan(&cursor, &pattern), node).await;
                        cursor = scan_page(page, &mut keys)?;
                    }
                }
            }
        }
        let mut names: Vec<String> = keys
            .iter()
            .filter_map(|key| dictionary_of(namespace.as_str(), key))
            .map(str::to_owned)
            .collect();
        // A key can come back twice from one SCAN (the keyspace was resized meanwhile).
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// True if the store is a Redis Cluster (opened with
    /// [`connect_cluster`](Self::connect_cluster)).
    pub fn is_cluster(&self) -> bool {
        match self.inner.conn {
            Conn::Single(_) => false,
            #[cfg(feature = "cluster")]
            Conn::Cluster(_) => true,
        }
    }

    pub(crate) fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }
}

/// The operation named by errors of [`RedisStore::dictionaries`]: a read of what is stored.
const LISTING: Operation = Operation::Load;

/// How many keys one `SCAN` of [`RedisStore::dictionaries`] asks for (a hint to the server).
const SCAN_COUNT: usize = 1000;

/// `SCAN cursor MATCH pattern COUNT SCAN_COUNT`.
fn scan(cursor: &str, pattern: &str) -> Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    cmd
}

/// Adds the keys of one `SCAN` reply that are UTF-8 (the others are no dictionary's) to `keys`
/// and returns the next cursor (`0`: done).
fn scan_page(page: redis::RedisResult<Value>, keys: &mut Vec<String>) -> Result<String> {
    let page = match page.map_err(|e| map_err(LISTING, e))? {
        // A node's error, as the cluster connection hands it over in a reply of every master.
        Value::ServerError(e) => return Err(map_err(LISTING, e.into())),
        page => page,
    };
    let mut page = Reply::new(page, LISTING)?;
    let cursor = page.string()?;
    let items = page
        .next_value()
        .ok_or_else(|| bad_reply(LISTING, "SCAN reply is too short"))?;
    let mut items = Reply::new(items, LISTING)?;
    while items.len() > 0 {
        if let Ok(key) = items.key()? {
            keys.push(key);
        }
    }
    Ok(cursor)
}

#[cfg(test)]
mod url_tests {
    use super::*;

    /// User names and passwords with every character that ends a URL's authority or starts an
    /// escape, written as they are (not percent-encoded).
    const USERS: [&str; 7] = ["app", "us/er", "us?er", "us#er", "us@er", "us%er", "üser€"];
    const PASSWORDS: [&str; 8] = [
        "s3cret",
        "s3/cret",
        "s3?cret",
        "s3#cret",
        "s3@cret",
        "100%sure",
        "pässwörd€",
        "a/b?c#d@e%f:g€",
    ];

    fn settings(info: &ConnectionInfo) -> (Option<&str>, Option<&str>, i64) {
        let s = info.redis_settings();
        (s.username(), s.password(), s.db())
    }

    #[test]
    fn credentials_with_any_characters_reach_the_driver_whole() {
        for user in USERS {
            for password in PASSWORDS {
                for (tail, db) in [("", 0), ("/", 0), ("/3", 3), ("/2?protocol=resp3", 2)] {
                    let url = format!("redis://{user}:{password}@db.example:6380{tail}");
                    let info = parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
                    assert_eq!(settings(&info), (Some(user), Some(password), db), "{url}");
                    assert_eq!(info.addr().to_string(), "db.example:6380", "{url}");
                    let shown = redact(&url);
                    assert_eq!(shown, format!("redis://***@db.example:6380{tail}"));
                    assert!(!shown.contains(user), "{url}: {shown}");
                    for text in [shown, format!("{info:?}")] {
                        assert!(!text.contains(password), "{url}: {text}");
                    }
                }
            }
        }
    }

    #[test]
    fn password_only_and_no_credentials() {
        let info = parse("redis://:s3/cr?t@127.0.0.1:7000/").unwrap();
        assert_eq!(settings(&info), (None, Some("s3/cr?t"), 0));
        assert_eq!(
            redact("redis://:s3/cr?t@127.0.0.1:7000/"),
            "redis://***@127.0.0.1:7000/"
        );
        let info = parse("redis://127.0.0.1:7000/1").unwrap();
        assert_eq!(settings(&info), (None, None, 1));
        let info = parse("redis://app@127.0.0.1/").unwrap();
        assert_eq!(settings(&info), (Some("app"), None, 0));
        assert_eq!(info.addr().to_string(), "127.0.0.1:6379");
    }

    #[test]
    fn escapes_are_decoded_and_stray_percent_signs_kept() {
        let info = parse("redis://u%40x:p%2Fw%3F@h/").unwrap();
        assert_eq!(settings(&info), (Some("u@x"), Some("p/w?"), 0));
        let info = parse("redis://:100%sure%zz%4@h/").unwrap();
        assert_eq!(settings(&info).1, Some("100%sure%zz%4"));
        // Escapes that are not UTF-8 stay as written.
        let info = parse("redis://:%ff%fe@h/").unwrap();
        assert_eq!(settings(&info).1, Some("%ff%fe"));
    }

    #[test]
    fn every_node_of_a_cluster_url_gets_the_credentials() {
        let (nodes, credentials) =
            parse_nodes("redis://us/er:s3/cr?t@h1:6379,h2:6380,h3/").unwrap();
        assert_eq!(credentials.password.as_deref(), Some("s3/cr?t"));
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        assert_eq!(addrs, ["h1:6379", "h2:6380", "h3:6379"]);
        for node in &nodes {
            assert_eq!(settings(node), (Some("us/er"), Some("s3/cr?t"), 0));
        }
        assert_eq!(
            redact("redis://us/er:s3/cr?t@h1:6379,h2:6380,h3/"),
            "redis://***@h1:6379,h2:6380,h3/"
        );
        // A single-server store refuses several nodes, without printing the password.
        let error = parse("redis://:s3/cr?t@h1:6379,h2:6380/")
            .unwrap_err()
            .to_string();
        assert!(error.contains("connect_cluster"), "{error}");
        assert!(!error.contains("s3/cr?t"), "{error}");
    }

    #[test]
    fn invalid_urls_never_show_the_password() {
        for url in [
            "redis://:s3/cret@127.0.0.1:notaport/",
            "redis://u:s3/cret@/",
            "redis://u:s3?cret@127.0.0.1:1/notadb",
            "redis://:s3#cret@[::1/",
            "ftp://u:s3/cret@host/",
            "u:s3/cret@host:1/",
            "redis://u:s3/cret@bad host:1/",
            "redis+unix:///tmp/durable-no.sock?pass=s3/cret&db=x",
            "redis+unix:///tmp/durable-no.sock?password=s3/cret&db=x",
        ] {
            let error = parse(url).expect_err(url);
            assert!(matches!(error, Error::Config(_)), "{url}: {error:?}");
            for text in [error.to_string(), format!("{error:?}")] {
                assert!(!text.contains("s3/cret"), "{url}: {text}");
                assert!(!text.contains("s3?cret"), "{url}: {text}");
                assert!(!text.contains("s3#cret"), "{url}: {text}");
                assert!(text.contains("invalid Redis URL"), "{url}: {text}");
            }
        }
    }
}
