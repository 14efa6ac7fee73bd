//! Harnesses shared by the test files: a single server and a Redis Cluster.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use durable_core::conformance::{Damage, Garbage, Harness, StoredCopy};
use durable_core::{Backend, Name, Result, STAMP_HISTORY, Version};
use durable_redis::redis::aio::ConnectionLike;
use durable_redis::redis::{self, AsyncCommands};
use durable_redis::{RedisBackend, RedisOptions, RedisStore};

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

/// What [`Harness::copy_stored`] keeps: each Redis key of the dictionary with its `DUMP`
/// (`None`: the key did not exist).
pub struct KeysCopy(Vec<(String, Option<Vec<u8>>)>);

/// `DUMP`s every key in `keys` in one `MULTI`, so the copy is one consistent state.
pub async fn dump_keys(conn: &mut impl ConnectionLike, keys: &[&str]) -> Result<KeysCopy> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for key in keys {
        pipe.cmd("DUMP").arg(*key);
    }
    let dumps: Vec<Option<Vec<u8>>> = pipe.query_async(conn).await.map_err(err)?;
    Ok(KeysCopy(
        keys.iter().map(|k| (*k).to_owned()).zip(dumps).collect(),
    ))
}

/// Replaces the keys of `copy` with their copied contents in one `MULTI`: deletes them all,
/// then `RESTORE`s those that existed (as a backup restore would; connections stay open).
pub async fn restore_keys(conn: &mut impl ConnectionLike, copy: StoredCopy) -> Result<()> {
    let copy = copy.downcast::<KeysCopy>().expect("a copy of this harness");
    let mut pipe = redis::pipe();
    pipe.atomic();
    let keys: Vec<&str> = copy.0.iter().map(|(k, _)| k.as_str()).collect();
    pipe.del(&keys[..]).ignore();
    for (key, dump) in &copy.0 {
        if let Some(dump) = dump {
            pipe.cmd("RESTORE").arg(key).arg(0).arg(&dump[..]).ignore();
        }
    }
    pipe.query_async::<()>(conn).await.map_err(err)
}

/// Damages the native layout's version record of `backend` as `damage` says (every kind).
pub async fn damage_native(
    conn: &mut impl ConnectionLike,
    backend: &RedisBackend,
    damage: Damage,
) -> Result<bool> {
    let key = backend.version_key();
    let mut cmd = match damage {
        Damage::RecordMissing => redis::cmd("DEL"),
        Damage::CounterMissing => redis::cmd("HDEL"),
        _ => redis::cmd("HSET"),
    };
    cmd.arg(key);
    match damage {
        Damage::RecordMissing => &mut cmd,
        Damage::CounterMissing => cmd.arg("counter"),
        Damage::CounterNotInteger => cmd.arg("counter").arg("garbage"),
        Damage::CounterNegative => cmd.arg("counter").arg("-5"),
        // 2^53 + 1: decimal digits, but beyond what the scripts' numbers hold exactly.
        Damage::CounterHuge => cmd.arg("counter").arg("9007199254740993"),
        Damage::EpochNotInteger => cmd.arg("epoch").arg("not-an-epoch"),
        _ => return Ok(false),
    };
    cmd.query_async::<()>(conn).await.map_err(err)?;
    Ok(true)
}

/// What another program writing into the native layout does to store a row: one script that
/// sets hash field `ARGV[1]` of the entries to `ARGV[2]` (unless `ARGV[2]` is empty), logs the
/// field with score `ARGV[3]` (empty: the new counter), and bumps the version record as a write
/// does (counter + 1, fresh stamp `ARGV[4]`, the old stamp as parent, the stamp history slot of
/// the new counter holding it, 8 bytes big-endian in `ARGV[5]`). Returns the new counter.
/// `KEYS`: version, entries, log, stamps.
const RAW_WRITE: &str = r#"
local c = tonumber(redis.call('HGET', KEYS[1], 'counter')) + 1
local parent = redis.call('HGET', KEYS[1], 'stamp')
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
local score = ARGV[3]
if score == '' then score = c end
redis.call('ZADD', KEYS[3], score, ARGV[1])
redis.call('HSET', KEYS[1], 'counter', c, 'stamp', ARGV[4], 'parent', parent)
local hi = math.floor(c / 4294967296)
redis.call('SETRANGE', KEYS[4], (c % tonumber(ARGV[6])) * 16,
  struct.pack('>I4I4', hi, c - hi * 4294967296) .. ARGV[5])
return c
"#;

/// Writes a row into the native layout of `backend` as another program would, with a new
/// revision and a version bump (see [`RAW_WRITE`]): `field` set to `value` (`None`: the hash
/// is left alone), logged with `score` (`None`: the new counter). The version record must
/// exist (a write through a backend creates it).
pub async fn raw_write(
    conn: &mut impl ConnectionLike,
    backend: &RedisBackend,
    field: &[u8],
    value: Option<&[u8]>,
    score: Option<&str>,
) -> Result<u64> {
    let stamp = Version::new_stamp();
    let keys = backend.redis_keys();
    redis::Script::new(RAW_WRITE)
        .key(keys[0])
        .key(keys[1])
        .key(keys[2])
        .key(keys[5])
        .arg(field)
        .arg(value.unwrap_or(b""))
        .arg(score.unwrap_or(""))
        .arg(stamp.to_string())
        .arg(&stamp.to_be_bytes()[..])
        .arg(STAMP_HISTORY)
        .invoke_async(conn)
        .await
        .map_err(err)
}

/// Writes `garbage` as the row of `key` in the native layout: a value no encoding reads, a
/// hash field that is not UTF-8 (`key` followed by bytes 0xff 0xfe), or the key's change-log
/// score set to 1e300. Redis holds no values of another type inside a hash, nor stray rows
/// a load would meet.
pub async fn garbage_native(
    conn: &mut impl ConnectionLike,
    backend: &RedisBackend,
    garbage: Garbage,
    key: &str,
) -> Result<bool> {
    let mut non_utf8 = key.as_bytes().to_vec();
    non_utf8.extend_from_slice(b"\xff\xfe");
    match garbage {
        Garbage::UndecodableValue => {
            raw_write(conn, backend, key.as_bytes(), Some(b"{not json \xff"), None).await?
        }
        Garbage::NonUtf8Key => raw_write(conn, backend, &non_utf8, Some(b"1"), None).await?,
        Garbage::Malformed => raw_write(conn, backend, key.as_bytes(), None, Some("1e300")).await?,
        _ => return Ok(false),
    };
    Ok(true)
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

    async fn raw(&self) -> Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url.as_str()).map_err(err)?;
        client.get_multiplexed_async_connection().await.map_err(err)
    }

    fn backend(&self, namespace: &Name, dictionary: &Name) -> Result<RedisBackend> {
        RedisStore::lazy(&self.url, options())?.backend(namespace.as_str(), dictionary.as_str())
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
        let backend = self.backend(namespace, dictionary)?;
        let _: () = (self.raw().await?)
            .del(&backend.redis_keys()[..])
            .await
            .map_err(err)?;
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

    async fn copy_stored(&self, namespace: &Name, dictionary: &Name) -> Result<StoredCopy> {
        let backend = self.backend(namespace, dictionary)?;
        let copy = dump_keys(&mut self.raw().await?, &backend.redis_keys()).await?;
        Ok(Box::new(copy))
    }

    async fn put_back(
        &self,
        _namespace: &Name,
        _dictionary: &Name,
        copy: StoredCopy,
    ) -> Result<()> {
        restore_keys(&mut self.raw().await?, copy).await
    }

    async fn damage_version_record(
        &self,
        namespace: &Name,
        dictionary: &Name,
        damage: Damage,
    ) -> Result<bool> {
        let backend = self.backend(namespace, dictionary)?;
        damage_native(&mut self.raw().await?, &backend, damage).await
    }

    async fn write_garbage(
        &self,
        namespace: &Name,
        dictionary: &Name,
        garbage: Garbage,
        key: &str,
    ) -> Result<bool> {
        let backend = self.backend(namespace, dictionary)?;
        garbage_native(&mut self.raw().await?, &backend, garbage, key).await
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

    async fn raw(&self) -> Result<redis::cluster_async::ClusterConnection> {
        let client = redis::cluster::ClusterClient::new(self.urls.clone()).map_err(err)?;
        client.get_async_connection().await.map_err(err)
    }

    fn backend(&self, namespace: &Name, dictionary: &Name) -> Result<RedisBackend> {
        // Only for key names: a lazy single-server store names keys as a cluster store does.
        RedisStore::lazy(&self.urls[0], options())?.backend(namespace.as_str(), dictionary.as_str())
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
        let backend = self.backend(namespace, dictionary)?;
        // One slot (shared hash tag), so one multi-key DEL works on a cluster.
        let _: () = (self.raw().await?)
            .del(&backend.redis_keys()[..])
            .await
            .map_err(err)?;
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

    /// Scans every node given (a replica lists its master's keys) and deletes through the
    /// cluster connection, so it works whichever nodes are masters now (a fault test may have
    /// failed one over).
    async fn cleanup(&self, namespace: &Name) -> Result<()> {
        let mut cluster = self.raw().await?;
        let pattern = format!("durable:{{{namespace}:*");
        for url in &self.urls {
            let client = redis::Client::open(url.as_str()).map_err(err)?;
            let mut node = client
                .get_multiplexed_async_connection()
                .await
                .map_err(err)?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut node)
                    .await
                    .map_err(err)?;
                for key in keys {
                    let _: () = cluster.del(key).await.map_err(err)?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    /// One slot (shared hash tag): the DUMPs and the RESTOREs each go to one node in one MULTI.
    async fn copy_stored(&self, namespace: &Name, dictionary: &Name) -> Result<StoredCopy> {
        let backend = self.backend(namespace, dictionary)?;
        let copy = dump_keys(&mut self.raw().await?, &backend.redis_keys()).await?;
        Ok(Box::new(copy))
    }

    async fn put_back(
        &self,
        _namespace: &Name,
        _dictionary: &Name,
        copy: StoredCopy,
    ) -> Result<()> {
        restore_keys(&mut self.raw().await?, copy).await
    }

    async fn damage_version_record(
        &self,
        namespace: &Name,
        dictionary: &Name,
        damage: Damage,
    ) -> Result<bool> {
        let backend = self.backend(namespace, dictionary)?;
        damage_native(&mut self.raw().await?, &backend, damage).await
    }

    async fn write_garbage(
        &self,
        namespace: &Name,
        dictionary: &Name,
        garbage: Garbage,
        key: &str,
    ) -> Result<bool> {
        let backend = self.backend(namespace, dictionary)?;
        garbage_native(&mut self.raw().await?, &backend, garbage, key).await
    }
}

/// The durabledict-compatible layout on one server: keyspace `durabledict:{NS.DICT}` (a hash
/// tag, as a cluster would need), counter `durabledict:{NS.DICT}last_updated`.
pub struct CompatHarness {
    pub url: String,
}

impl CompatHarness {
    pub fn keyspace(namespace: &Name, dictionary: &Name) -> String {
        format!("durabledict:{{{namespace}.{dictionary}}}")
    }

    fn keys(namespace: &Name, dictionary: &Name) -> [String; 2] {
        let hash = Self::keyspace(namespace, dictionary);
        let counter = format!("{hash}last_updated");
        [hash, counter]
    }

    async fn raw(&self) -> Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url.as_str()).map_err(err)?;
        client.get_multiplexed_async_connection().await.map_err(err)
    }
}

#[durable_core::async_trait]
impl Harness for CompatHarness {
    async fn open(&self, namespace: &Name, dictionary: &Name) -> Result<Box<dyn Backend>> {
        let store = RedisStore::connect_with(&self.url, options()).await?;
        Ok(Box::new(
            store.durabledict(&Self::keyspace(namespace, dictionary))?,
        ))
    }

    async fn wipe(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        let keys = Self::keys(namespace, dictionary);
        let _: () = self.raw().await?.del(&keys[..]).await.map_err(err)?;
        Ok(())
    }

    async fn forget_history(&self, _namespace: &Name, _dictionary: &Name) -> Result<()> {
        // No deltas in this layout: nothing to forget.
        Ok(())
    }

    async fn open_unreachable(
        &self,
        namespace: &Name,
        dictionary: &Name,
    ) -> Result<Box<dyn Backend>> {
        let store = RedisStore::lazy("redis://127.0.0.1:1/", options())?;
        Ok(Box::new(
            store.durabledict(&Self::keyspace(namespace, dictionary))?,
        ))
    }

    async fn cleanup(&self, namespace: &Name) -> Result<()> {
        delete_matching(&self.url, &format!("durabledict:{{{namespace}.*")).await
    }

    async fn copy_stored(&self, namespace: &Name, dictionary: &Name) -> Result<StoredCopy> {
        let keys = Self::keys(namespace, dictionary);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        Ok(Box::new(dump_keys(&mut self.raw().await?, &keys).await?))
    }

    async fn put_back(
        &self,
        _namespace: &Name,
        _dictionary: &Name,
        copy: StoredCopy,
    ) -> Result<()> {
        restore_keys(&mut self.raw().await?, copy).await
    }

    /// The record is the counter alone: it can go missing or hold a bad number; it has no
    /// separate counter field and no epoch.
    async fn damage_version_record(
        &self,
        namespace: &Name,
        dictionary: &Name,
        damage: Damage,
    ) -> Result<bool> {
        let [_, counter] = Self::keys(namespace, dictionary);
        let value = match damage {
            Damage::RecordMissing => None,
            Damage::CounterNotInteger => Some("garbage"),
            Damage::CounterNegative => Some("-5"),
            Damage::CounterHuge => Some("9007199254740993"),
            _ => return Ok(false),
        };
        let mut conn = self.raw().await?;
        match value {
            None => conn.del::<_, ()>(&counter).await.map_err(err)?,
            Some(value) => conn.set::<_, _, ()>(&counter, value).await.map_err(err)?,
        }
        Ok(true)
    }

    /// As Python durabledict writes (`HSET` and `INCR` in one `MULTI`): a value no encoding
    /// reads, or a hash field that is not UTF-8. The layout has nothing else per key.
    async fn write_garbage(
        &self,
        namespace: &Name,
        dictionary: &Name,
        garbage: Garbage,
        key: &str,
    ) -> Result<bool> {
        let [hash, counter] = Self::keys(namespace, dictionary);
        let (field, value): (Vec<u8>, &[u8]) = match garbage {
            Garbage::UndecodableValue => (key.as_bytes().to_vec(), b"{not json \xff"),
            Garbage::NonUtf8Key => ([key.as_bytes(), b"\xff\xfe"].concat(), b"1"),
            _ => return Ok(false),
        };
        redis::pipe()
            .atomic()
            .hset(&hash, field, value)
            .ignore()
            .incr(&counter, 1)
            .ignore()
            .query_async::<()>(&mut self.raw().await?)
            .await
            .map_err(err)?;
        Ok(true)
    }
}
