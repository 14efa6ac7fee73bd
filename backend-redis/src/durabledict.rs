//! The Python durabledict-compatible layout: [`DurabledictBackend`].

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use durable_core::{
    Backend, BatchOp, Capabilities, Error, IfAbsent, Load, Operation, Result, Revision, Rows,
    StoredEntry, Unreadable, Version,
};
use redis::{Script, Value};

use crate::RedisStore;
use crate::error::{bad_reply, map_err};
use crate::record::COUNTER_LIMIT;
use crate::reply::{Reply, shown};
use crate::scripts::durabledict::{
    BATCH, CLEAR, DEPERSIST, INCREMENT, INSERT_IF_ABSENT, PERSIST, POP,
};

/// One dictionary in the layout of Python durabledict's `RedisDict`, so a Python process and a
/// Rust process can share it (see the crate docs).
///
/// Created by [`RedisStore::durabledict`]. The hash is named exactly `<keyspace>`; the version
/// is the integer at `<keyspace>last_updated`, bumped with `INCRBY 1` in the same atomic step as
/// every change. Tokens have epoch 0 and this counter, and no stamp (capability `stamps` is
/// false: Python writers cannot record one).
///
/// Limits, as in durabledict: no delta sync (every change is a full reload with one
/// `HGETALL`), no push hints, no compare-and-swap (entries carry no revision), and no epoch:
/// if the counter key is deleted and counted up again to the same number, or the keyspace is
/// restored from a backup and then written past its old counter, a process may miss the
/// change. A counter that is not an integer in 0..2^53, or missing while the hash holds
/// entries, is [`Error::Damaged`]: reads and writes are refused, and nothing is written.
#[derive(Clone)]
pub struct DurabledictBackend {
    store: RedisStore,
    hash: String,
    counter: String,
}

impl fmt::Debug for DurabledictBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurabledictBackend")
            .field("keyspace", &self.hash)
            .field("store", &self.store)
            .finish()
    }
}

fn token(counter: i64, operation: Operation) -> Result<Version> {
    u64::try_from(counter)
        .map(|c| Version::new(0, c))
        .map_err(|_| bad_reply(operation, format!("negative last_updated {counter}")))
}

impl DurabledictBackend {
    pub(crate) fn new(store: RedisStore, keyspace: &str) -> Result<Self> {
        if keyspace.is_empty() {
            return Err(Error::Config(
                "a durabledict keyspace must not be empty".into(),
            ));
        }
        Ok(DurabledictBackend {
            store,
            hash: keyspace.to_owned(),
            counter: format!("{keyspace}last_updated"),
        })
    }

    /// The hash holding the entries (`<keyspace>`).
    pub fn hash_key(&self) -> &str {
        &self.hash
    }

    /// The key holding the version counter (`<keyspace>last_updated`).
    pub fn counter_key(&self) -> &str {
        &self.counter
    }

    async fn run(
        &self,
        script: &Script,
        operation: Operation,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<(i64, Reply)> {
        let mut conn = self.store.conn();
        let mut invocation = script.prepare_invoke();
        invocation.key(&self.hash).key(&self.counter);
        args(&mut invocation);
        let value: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| map_err(operation, e))?;
        let mut reply = Reply::new(value, operation)?;
        let status = reply.int()?;
        if status == -2 {
            let value = if reply.len() > 0 {
                reply.opt_bytes()?
            } else {
                None
            };
            return Err(self.damaged(operation, value.as_deref()));
        }
        Ok((status, reply))
    }

    /// The error for a counter holding `value` (`None`: missing while the hash has entries).
    fn damaged(&self, operation: Operation, value: Option<&[u8]>) -> Error {
        let found = match value {
            None => "missing while the hash holds entries".to_owned(),
            Some(v) => format!("{:?}", String::from_utf8_lossy(&v[..v.len().min(64)])),
        };
        Error::Damaged {
            backend: "redis".into(),
            operation,
            reason: format!(
                "durabledict keyspace {}: counter {} is {found}, expected a decimal integer in 0..2^53",
                self.hash, self.counter
            ),
        }
    }

    /// The token for the counter's text `counter` (`None`: missing), validated as the scripts
    /// validate it; `has_entries` says whether the hash exists.
    fn validate(
        &self,
        counter: Option<&[u8]>,
        has_entries: bool,
        operation: Operation,
    ) -> Result<Version> {
        let Some(text) = counter else {
            return if has_entries {
                Err(self.damaged(operation, None))
            } else {
                Ok(Version::new(0, 0))
            };
        };
        let canonical = !text.is_empty()
            && text.iter().all(u8::is_ascii_digit)
            && (text.len() == 1 || text[0] != b'0');
        canonical
            .then(|| std::str::from_utf8(text).ok()?.parse::<u64>().ok())
            .flatten()
            .filter(|c| *c < COUNTER_LIMIT)
            .map(|c| Version::new(0, c))
            .ok_or_else(|| self.damaged(operation, Some(text)))
    }
}

#[async_trait]
impl Backend for DurabledictBackend {
    fn name(&self) -> &str {
        "redis"
    }

    /// `redis/durabledict/<keyspace>`.
    fn location(&self) -> String {
        format!("redis/durabledict/{}", self.hash)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_insert_if_absent(true)
            .with_pop(true)
            .with_increment(true)
            .with_batch(true)
            .with_clear(true)
    }

    async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
        let (status, mut reply) = self
            .run(&PERSIST, Operation::Persist, |inv| {
                inv.arg(key).arg(value.as_ref());
            })
            .await?;
        if status != 1 {
            return Err(bad_reply(Operation::Persist, format!("status {status}")));
        }
        token(reply.int()?, Operation::Persist)
    }

    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        let (status, mut reply) = self
            .run(&DEPERSIST, Operation::Depersist, |inv| {
                inv.arg(key);
            })
            .await?;
        if status == 0 {
            return Ok(None);
        }
        token(reply.int()?, Operation::Depersist).map(Some)
    }

    async fn durables(&self) -> Result<Load> {
        let mut conn = self.store.conn();
        let (counter, entries): (Option<Vec<u8>>, Value) = redis::pipe()
            .atomic()
            .get(&self.counter)
            .hgetall(&self.hash)
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err(Operation::Load, e))?;
        // Field-value pairs: an array (RESP2) or a map (RESP3).
        let items = match entries {
            Value::Map(pairs) => {
                Value::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
            }
            other => other,
        };
        let mut items = Reply::new(items, Operation::Load)?;
        let version = self.validate(counter.as_deref(), items.len() > 0, Operation::Load)?;
        let mut load = Load {
            version,
            entries: Rows::new(),
            unreadable: Vec::new(),
        };
        while items.len() > 0 {
            let key = items.key()?;
            let value = items.bytes()?;
            match key {
                Ok(key) => load.entries.push(StoredEntry {
                    key,
                    value,
                    revision: Revision(version.counter()),
                    expires_at: None,
                }),
                Err(bytes) => load.unreadable.push(Unreadable {
                    key: String::from_utf8_lossy(&bytes).into_owned(),
                    reason: format!(
                        "{}: the key is not UTF-8 (field `{}` of {})",
                        self.location(),
                        shown(&bytes),
                        self.hash
                    ),
                }),
            }
        }
        Ok(load)
    }

    async fn last_updated(&self) -> Result<Version> {
        let mut conn = self.store.conn();
        let counter: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&self.counter)
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err(Operation::Version, e))?;
        if counter.is_some() {
            return self.validate(counter.as_deref(), true, Operation::Version);
        }
        // No counter: a new keyspace, or a damaged one if the hash holds entries (read both
        // at once, as a writer may have created both meanwhile).
        let (counter, exists): (Option<Vec<u8>>, bool) = redis::pipe()
            .atomic()
            .get(&self.counter)
            .exists(&self.hash)
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err(Operation::Version, e))?;
        self.validate(counter.as_deref(), exists, Operation::Version)
    }

    async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
        let (status, mut reply) = self
            .run(&INSERT_IF_ABSENT, Operation::InsertIfAbsent, |inv| {
                inv.arg(key).arg(value.as_ref());
            })
            .await?;
        if status == 1 {
            return token(reply.int()?, Operation::InsertIfAbsent).map(IfAbsent::Inserted);
        }
        let value = reply.bytes()?;
        let revision = Revision(reply.u64()?);
        Ok(IfAbsent::Present(StoredEntry {
            key: key.to_owned(),
            value,
            revision,
            expires_at: None,
        }))
    }

    async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        let (status, mut reply) = self
            .run(&POP, Operation::Pop, |inv| {
                inv.arg(key);
            })
            .await?;
        if status == 0 {
            return Ok(None);
        }
        let version = token(reply.int()?, Operation::Pop)?;
        Ok(Some((reply.bytes()?, version)))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        let (status, mut reply) = self
            .run(&INCREMENT, Operation::Increment, |inv| {
                inv.arg(key).arg(delta);
            })
            .await?;
        if status != 1 {
            return Err(Error::NotAnInteger {
                backend: "redis".into(),
                key: key.into(),
            });
        }
        let version = token(reply.int()?, Operation::Increment)?;
        Ok((reply.int()?, version))
    }

    async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
        if ops.is_empty() {
            return Ok(None);
        }
        let (status, mut reply) = self
            .run(&BATCH, Operation::Batch, |inv| {
                for op in &ops {
                    match op {
                        BatchOp::Put { key, value } => inv.arg("P").arg(key).arg(value.as_ref()),
                        BatchOp::Delete { key } => inv.arg("D").arg(key).arg(""),
                    };
                }
            })
            .await?;
        if status == 0 {
            return Ok(None);
        }
        token(reply.int()?, Operation::Batch).map(Some)
    }

    async fn clear(&self) -> Result<Option<Version>> {
        let (status, mut reply) = self.run(&CLEAR, Operation::Clear, |_| {}).await?;
        if status == 0 {
            return Ok(None);
        }
        token(reply.int()?, Operation::Clear).map(Some)
    }
}
