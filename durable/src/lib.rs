#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;

pub use durable_core::*;

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql")))
)]
pub use durable_sql as sql;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use durable_redis as redis;

#[cfg(feature = "zookeeper")]
#[cfg_attr(docsrs, doc(cfg(feature = "zookeeper")))]
pub use durable_zookeeper as zookeeper;

#[cfg(feature = "openfeature")]
#[cfg_attr(docsrs, doc(cfg(feature = "openfeature")))]
pub use durable_openfeature as openfeature;

/// The root README's quick start, compiled and run with this crate's doctests (it must stay the
/// same program as the quick start of this crate's README; `tests/readme.rs` compares them).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct RootReadme;

/// The environment variable [`Store::from_env`] reads the store URL from.
pub const URL_VAR: &str = "DURABLE_URL";

/// A connected store, chosen by URL scheme; hands out backends for its dictionaries.
///
/// | URL | store | feature |
/// | --- | --- | --- |
/// | `memory:` | a new in-process [`MemoryStore`] | always |
/// | `sqlite://path/file.db`, `sqlite:file.db`, `sqlite::memory:` | SQLite | `sqlite` (default) |
/// | `postgres://user:password@host:port/db` | PostgreSQL | `postgres` |
/// | `mysql://user:password@host:port/db` | MySQL / MariaDB | `mysql` |
/// | `redis://[user:password@]host:port/db`, `rediss://...` | Redis | `redis` (`redis-tls`) |
/// | `redis://host:port,host:port,...` | Redis Cluster (several seed nodes) | `redis` |
/// | `zk://host:port[,host:port...][/chroot]` | ZooKeeper | `zookeeper` |
///
/// A scheme whose feature is disabled gives an [`Error::Config`] naming the feature to enable.
#[derive(Clone)]
#[non_exhaustive]
pub enum Store {
    /// An in-process store.
    Memory(MemoryStore),
    /// A SQLite database.
    #[cfg(feature = "sqlite")]
    Sqlite(durable_sql::SqliteStore),
    /// A PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(durable_sql::PostgresStore),
    /// A MySQL or MariaDB database.
    #[cfg(feature = "mysql")]
    MySql(durable_sql::MySqlStore),
    /// A Redis server or cluster.
    #[cfg(feature = "redis")]
    Redis(durable_redis::RedisStore),
    /// A ZooKeeper ensemble.
    #[cfg(feature = "zookeeper")]
    ZooKeeper(durable_zookeeper::ZooKeeperStore),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Memory(store) => store.fmt(f),
            #[cfg(feature = "sqlite")]
            Store::Sqlite(store) => store.fmt(f),
            #[cfg(feature = "postgres")]
            Store::Postgres(store) => store.fmt(f),
            #[cfg(feature = "mysql")]
            Store::MySql(store) => store.fmt(f),
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.fmt(f),
            #[cfg(feature = "zookeeper")]
            Store::ZooKeeper(store) => store.fmt(f),
        }
    }
}

/// The scheme of `url` (the part before the first `:`), lowercased.
fn scheme(url: &str) -> Result<String> {
    match url.split_once(':') {
        Some((scheme, _)) if !scheme.is_empty() => Ok(scheme.to_ascii_lowercase()),
        _ => Err(Error::Config(format!(
            "store URL {:?} has no scheme (expected memory:, sqlite://, postgres://, mysql://, \
             redis://, rediss:// or zk://)",
            credentials::redact(url)
        ))),
    }
}

/// A configuration error's message with every form of `url`'s credentials hidden (whatever a
/// backend put in it): the passwords of its user information and query parameters, and its
/// quoted user names ([`Secrets::scrub`](credentials::Secrets::scrub)), prefixed by `context`
/// when given. Other errors keep their category and pass through.
fn scrubbed(error: Error, url: &str, context: Option<&str>) -> Error {
    match error {
        Error::Config(message) => {
            let message = credentials::Secrets::from_url(url).scrub(&message);
            Error::Config(match context {
                Some(context) => format!("{context}: {message}"),
                None => message,
            })
        }
        other => other,
    }
}

#[cfg_attr(feature = "full", allow(dead_code))]
fn feature_needed(scheme: &str, feature: &str) -> Error {
    Error::Config(format!(
        "store URL scheme `{scheme}:` needs the `{feature}` feature of the `durable` crate"
    ))
}

impl Store {
    /// Connects to the store named by `url` (see the table above).
    pub async fn connect(url: &str) -> Result<Store> {
        Self::connect_with(url, &StoreOptions::new()).await
    }

    /// [`Store::connect`] with `options` (for example without creating SQL tables, for a
    /// read-only database role).
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Store> {
        Self::connect_inner(url, options)
            .await
            .map_err(|error| scrubbed(error, url, None))
    }

    /// Connects to the store named by the environment variable `DURABLE_URL` ([`URL_VAR`]),
    /// the way the `durable` command and the examples do: one URL per deployment, no code
    /// change between SQLite on a laptop and PostgreSQL or Redis in production.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> durable::Result<()> {
    /// // DURABLE_URL=postgres://app:secret@db:5432/flags
    /// let store = durable::Store::from_env().await?;
    /// let flags: durable::Dict<bool> =
    ///     store.open("prod", "flags", durable::Json, durable::Options::new()).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// An unset, empty or non-UTF-8 variable, or a URL that is not valid, gives an
    /// [`Error::Config`] naming the variable; the password never appears in it. A store that
    /// cannot be reached gives the same error as [`Store::connect`]. Surrounding whitespace
    /// (a trailing newline from a secrets file) is ignored.
    pub async fn from_env() -> Result<Store> {
        Self::from_env_var(URL_VAR).await
    }

    /// [`Store::from_env`] with another variable than `DURABLE_URL`.
    pub async fn from_env_var(variable: &str) -> Result<Store> {
        let url = env_url(variable, std::env::var_os(variable))?;
        Self::connect_inner(&url, &StoreOptions::new())
            .await
            .map_err(|error| {
                scrubbed(
                    error,
                    &url,
                    Some(&format!("environment variable {variable}")),
                )
            })
    }

    async fn connect_inner(url: &str, options: &StoreOptions) -> Result<Store> {
        let scheme = scheme(url)?;
        #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
        let sql = || durable_sql::SqlOptions::new().with_create_schema(options.create_schema);
        #[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
        let _ = options;
        match scheme.as_str() {
            "memory" => Ok(Store::Memory(MemoryStore::new())),
            #[cfg(feature = "sqlite")]
            "sqlite" => Ok(Store::Sqlite(
                durable_sql::SqliteStore::connect_with(url, sql()).await?,
            )),
            #[cfg(not(feature = "sqlite"))]
            "sqlite" => Err(feature_needed(&scheme, "sqlite")),
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Ok(Store::Postgres(
                durable_sql::PostgresStore::connect_with(url, sql()).await?,
            )),
            #[cfg(not(feature = "postgres"))]
            "postgres" | "postgresql" => Err(feature_needed(&scheme, "postgres")),
            #[cfg(feature = "mysql")]
            "mysql" | "mariadb" => Ok(Store::MySql(
                durable_sql::MySqlStore::connect_with(url, sql()).await?,
            )),
            #[cfg(not(feature = "mysql"))]
            "mysql" | "mariadb" => Err(feature_needed(&scheme, "mysql")),
            #[cfg(feature = "redis")]
            "redis" | "rediss" => Ok(Store::Redis(connect_redis(url).await?)),
            #[cfg(not(feature = "redis"))]
            "redis" | "rediss" => Err(feature_needed(&scheme, "redis")),
            #[cfg(feature = "zookeeper")]
            "zk" | "zookeeper" => {
                let connect = url.split_once("://").map_or("", |(_, rest)| rest);
                let options = durable_zookeeper::ZooKeeperOptions::new(connect);
                Ok(Store::ZooKeeper(
                    durable_zookeeper::ZooKeeperStore::connect(options).await?,
                ))
            }
            #[cfg(not(feature = "zookeeper"))]
            "zk" | "zookeeper" => Err(feature_needed(&scheme, "zookeeper")),
            other => Err(Error::Config(format!(
                "unknown store URL scheme `{other}:` in {:?} (expected memory:, sqlite://, \
                 postgres://, mysql://, redis://, rediss:// or zk://)",
                credentials::redact(url)
            ))),
        }
    }

    /// A backend over dictionary `dictionary` in `namespace` of this store.
    pub fn backend(&self, namespace: &str, dictionary: &str) -> Result<Box<dyn Backend>> {
        Ok(match self {
            Store::Memory(store) => Box::new(store.backend(namespace, dictionary)?),
            #[cfg(feature = "sqlite")]
            Store::Sqlite(store) => Box::new(store.backend(namespace, dictionary)?),
            #[cfg(feature = "postgres")]
            Store::Postgres(store) => Box::new(store.backend(namespace, dictionary)?),
            #[cfg(feature = "mysql")]
            Store::MySql(store) => Box::new(store.backend(namespace, dictionary)?),
            #[cfg(feature = "redis")]
            Store::Redis(store) => Box::new(store.backend(namespace, dictionary)?),
            #[cfg(feature = "zookeeper")]
            Store::ZooKeeper(store) => Box::new(store.backend(namespace, dictionary)?),
        })
    }

    /// The names of the dictionaries of `namespace` in this store, sorted; reads only (nothing is
    /// created, not even SQL tables). A dictionary is there once a handle has opened it.
    pub async fn dictionaries(&self, namespace: &str) -> Result<Vec<String>> {
        match self {
            Store::Memory(store) => {
                Name::new(namespace)?;
                Ok(store.dictionaries(namespace))
            }
            #[cfg(feature = "sqlite")]
            Store::Sqlite(store) => store.dictionaries(namespace).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(store) => store.dictionaries(namespace).await,
            #[cfg(feature = "mysql")]
            Store::MySql(store) => store.dictionaries(namespace).await,
            #[cfg(feature = "redis")]
            Store::Redis(store) => store.dictionaries(namespace).await,
            #[cfg(feature = "zookeeper")]
            Store::ZooKeeper(store) => store.dictionaries(namespace).await,
        }
    }

    /// Creates what the store needs before dictionaries can be written (SQL tables and indexes,
    /// or the columns an older version's tables lack); returns false for stores that need
    /// nothing (memory, Redis, ZooKeeper). Idempotent. [`Store::connect`] does this itself
    /// unless [`StoreOptions::with_create_schema`] is false.
    pub async fn migrate(&self) -> Result<bool> {
        match self {
            #[cfg(feature = "sqlite")]
            Store::Sqlite(store) => store.migrate().await.map(|()| true),
            #[cfg(feature = "postgres")]
            Store::Postgres(store) => store.migrate().await.map(|()| true),
            #[cfg(feature = "mysql")]
            Store::MySql(store) => store.migrate().await.map(|()| true),
            _ => Ok(false),
        }
    }

    /// Opens dictionary `dictionary` in `namespace` of this store (see [`Dict::open`]).
    pub async fn open<V, E>(
        &self,
        namespace: &str,
        dictionary: &str,
        encoding: E,
        options: Options,
    ) -> Result<Dict<V, E>>
    where
        V: Send + Sync + 'static,
        E: Encoding<V>,
    {
        Dict::open(self.backend(namespace, dictionary)?, encoding, options).await
    }
}

/// How [`Store::connect_with`] connects.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    create_schema: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            create_schema: true,
        }
    }
}

impl StoreOptions {
    /// The defaults: SQL tables are created on connect when missing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether connecting to a SQL store creates its tables when they are missing (default
    /// true). False for a database role that may only read and write rows: create the tables
    /// once with [`Store::migrate`] (or `durable migrate`) as a role that may. Other stores
    /// need no schema.
    pub fn with_create_schema(mut self, create: bool) -> Self {
        self.create_schema = create;
        self
    }
}

/// The store URL held by environment variable `variable` (whose value is `value`).
fn env_url(variable: &str, value: Option<std::ffi::OsString>) -> Result<String> {
    const EXPECTED: &str = "set it to a store URL: memory:, sqlite://FILE, postgres://..., \
                            mysql://..., redis://..., zk://...";
    let value = value.ok_or_else(|| {
        Error::Config(format!(
            "environment variable {variable} is not set; {EXPECTED}"
        ))
    })?;
    let text = value.into_string().map_err(|_| {
        Error::Config(format!(
            "environment variable {variable} is not valid UTF-8; {EXPECTED}"
        ))
    })?;
    let url = text.trim();
    if url.is_empty() {
        return Err(Error::Config(format!(
            "environment variable {variable} is empty; {EXPECTED}"
        )));
    }
    Ok(url.to_owned())
}

/// A Redis server, or a cluster when the URL names several comma-separated nodes
/// ([`RedisStore::connect_cluster`](durable_redis::RedisStore::connect_cluster) gives every
/// node the credentials written once before the first).
#[cfg(feature = "redis")]
async fn connect_redis(url: &str) -> Result<durable_redis::RedisStore> {
    if names_several_nodes(url) {
        durable_redis::RedisStore::connect_cluster(&[url], durable_redis::RedisOptions::new()).await
    } else {
        durable_redis::RedisStore::connect(url).await
    }
}

/// True if `url` (`scheme://[user:password@]host:port,host:port[/path]`) names several nodes.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn names_several_nodes(url: &str) -> bool {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let hosts = credentials::split_user_info(rest).map_or(rest, |(_, hosts)| hosts);
    hosts[..hosts.find(['/', '?', '#']).unwrap_or(hosts.len())].contains(',')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_several_nodes_is_a_cluster() {
        assert!(names_several_nodes("redis://:pw@h1:6379,h2:6380/0"));
        assert!(names_several_nodes("rediss://u:p/w@h1:1,h2:2"));
        assert!(!names_several_nodes("redis://:pw@h1:6379/0"));
        assert!(
            !names_several_nodes("redis://:p,w@h1:6379/0"),
            "a comma in the password"
        );
    }

    #[test]
    fn config_errors_lose_the_password_in_every_form() {
        let url = "postgres://app:s%2F3cret@db/flags";
        let error = Error::Config(format!("bad URL {url} (password s/3cret)"));
        let message = scrubbed(error, url, Some("environment variable X")).to_string();
        assert!(!message.contains("3cret"), "{message}");
        assert!(message.contains("environment variable X: "), "{message}");
        // Passwords of query parameters, and quoted user names, too.
        let url = "postgres://db/flags?user=app&sslpassword=q%2Fs3cret";
        let error = Error::Config(format!("bad URL {url}: user \"app\", q/s3cret"));
        let message = scrubbed(error, url, None).to_string();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(!message.contains("\"app\""), "{message}");
        // Other errors pass through.
        let error = Error::InvalidName {
            name: "app".into(),
            reason: "r",
        };
        let error = scrubbed(error, url, None);
        assert!(matches!(error, Error::InvalidName { .. }), "{error:?}");
    }

    #[test]
    fn the_url_variable_is_named_when_unset_empty_or_not_utf8() {
        let error = env_url("DURABLE_URL", None).unwrap_err().to_string();
        assert!(
            error.contains("environment variable DURABLE_URL is not set"),
            "{error}"
        );
        assert!(error.contains("sqlite://"), "says what to set: {error}");
        let error = env_url("DURABLE_URL", Some(" \n".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("DURABLE_URL is empty"), "{error}");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let value = std::ffi::OsString::from_vec(vec![b's', 0xff]);
            let error = env_url("DURABLE_URL", Some(value)).unwrap_err().to_string();
            assert!(error.contains("DURABLE_URL is not valid UTF-8"), "{error}");
        }
        assert_eq!(
            env_url("DURABLE_URL", Some("memory:\n".into())).unwrap(),
            "memory:"
        );
    }

    #[tokio::test]
    async fn from_env_names_the_variable_and_hides_the_password() {
        // A variable that no test sets: its value cannot be changed from safe code.
        let error = Store::from_env_var("DURABLE_TEST_UNSET_VARIABLE_7f3a")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("DURABLE_TEST_UNSET_VARIABLE_7f3a is not set"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn connect_errors_never_show_the_password() {
        let mut urls = vec![
            "ftp://app:s3/cr?t@host/x".to_owned(),
            "app:s3/cr?t@host/x".to_owned(),
        ];
        if cfg!(not(feature = "postgres")) {
            urls.push("postgres://app:s3/cr?t@127.0.0.1:1/db".into());
        }
        if cfg!(not(feature = "redis")) {
            urls.push("redis://:s3/cr?t@127.0.0.1:1/0".into());
        }
        for url in urls {
            let error = Store::connect(&url).await.unwrap_err();
            for shown in [error.to_string(), format!("{error:?}")] {
                assert!(!shown.contains("s3/cr"), "{url}: {shown}");
            }
        }
    }

    #[tokio::test]
    async fn unknown_and_disabled_schemes_say_what_to_do() {
        let error = Store::connect("ftp://x").await.unwrap_err().to_string();
        assert!(error.contains("unknown store URL scheme `ftp:`"), "{error}");
        let error = Store::connect("flags.db").await.unwrap_err().to_string();
        assert!(error.contains("no scheme"), "{error}");
        #[cfg(not(feature = "postgres"))]
        {
            let error = Store::connect("postgres://u:pw@h/db")
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains("`postgres` feature"), "{error}");
            assert!(!error.contains("pw"), "{error}");
        }
    }

    #[tokio::test]
    async fn memory_and_sqlite_open_by_url() {
        let store = Store::connect("memory:").await.unwrap();
        let dict: Dict<u32> = store.open("test", "d", Json, Options::new()).await.unwrap();
        dict.insert("k", 1).await.unwrap();
        assert_eq!(dict.snapshot().get("k"), Some(&1));
        #[cfg(feature = "sqlite")]
        {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("d.sqlite").display());
            let store = Store::connect(&url).await.unwrap();
            let dict: Dict<u32> = store.open("test", "d", Json, Options::new()).await.unwrap();
            dict.insert("k", 2).await.unwrap();
            let again: Dict<u32> = Store::connect(&url)
                .await
                .unwrap()
                .open("test", "d", Json, Options::new())
                .await
                .unwrap();
            assert_eq!(again.snapshot().get("k"), Some(&2));
        }
    }
}
