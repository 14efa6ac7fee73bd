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
            redacted(url)
        ))),
    }
}

/// `url` with any password replaced by `***`, for messages.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            let hidden = if credentials.contains(':') {
                ":***"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_owned(),
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
        let scheme = scheme(url)?;
        match scheme.as_str() {
            "memory" => Ok(Store::Memory(MemoryStore::new())),
            #[cfg(feature = "sqlite")]
            "sqlite" => Ok(Store::Sqlite(durable_sql::SqliteStore::connect(url).await?)),
            #[cfg(not(feature = "sqlite"))]
            "sqlite" => Err(feature_needed(&scheme, "sqlite")),
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Ok(Store::Postgres(
                durable_sql::PostgresStore::connect(url).await?,
            )),
            #[cfg(not(feature = "postgres"))]
            "postgres" | "postgresql" => Err(feature_needed(&scheme, "postgres")),
            #[cfg(feature = "mysql")]
            "mysql" | "mariadb" => Ok(Store::MySql(durable_sql::MySqlStore::connect(url).await?)),
            #[cfg(not(feature = "mysql"))]
            "mysql" | "mariadb" => Err(feature_needed(&scheme, "mysql")),
            #[cfg(feature = "redis")]
            "redis" | "rediss" => Ok(Store::Redis(connect_redis(&scheme, url).await?)),
            #[cfg(not(feature = "redis"))]
            "redis" | "rediss" => Err(feature_needed(&scheme, "redis")),
            #[cfg(feature = "zookeeper")]
            "zk" | "zookeeper" => {
                let connect = url.split_once("://").map_or("", |(_, rest)| rest);
                let config = durable_zookeeper::ZooKeeperConfig::new(connect);
                Ok(Store::ZooKeeper(
                    durable_zookeeper::ZooKeeperStore::connect(config).await?,
                ))
            }
            #[cfg(not(feature = "zookeeper"))]
            "zk" | "zookeeper" => Err(feature_needed(&scheme, "zookeeper")),
            other => Err(Error::Config(format!(
                "unknown store URL scheme `{other}:` in {:?} (expected memory:, sqlite://, \
                 postgres://, mysql://, redis://, rediss:// or zk://)",
                redacted(url)
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

/// A Redis server, or a cluster when several comma-separated nodes are given.
#[cfg(feature = "redis")]
async fn connect_redis(scheme: &str, url: &str) -> Result<durable_redis::RedisStore> {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let (hosts, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !hosts.contains(',') {
        return durable_redis::RedisStore::connect(url).await;
    }
    let nodes: Vec<String> = hosts
        .split(',')
        .map(|host| format!("{scheme}://{host}{path}"))
        .collect();
    durable_redis::RedisStore::connect_cluster(&nodes, durable_redis::RedisOptions::new()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redacted("postgres://app:s3cret@db:5432/flags"),
            "postgres://app:***@db:5432/flags"
        );
        assert_eq!(redacted("redis://:pw@host/0"), "redis://:***@host/0");
        assert_eq!(redacted("sqlite://flags.db"), "sqlite://flags.db");
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
