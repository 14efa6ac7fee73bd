//! The [`Backend`] implementation of [`RedisBackend`]: each operation as one script of
//! [`scripts`](mod@crate::scripts), run and read by the pieces in [`dictionary`](mod@crate::dictionary).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use durable_core::{
    Backend, BatchOp, Capabilities, Changes, Delta, Error, Hints, IfAbsent, Load, Operation,
    Result, Revision, StoreTime, Swap, Swept, Unreadable, Version,
};

use crate::RedisBackend;
use crate::dictionary::{Row, Written};
use crate::error::bad_reply;
use crate::record::MAX_TTL_MILLIS;
use crate::reply::Reply;
use crate::scripts;

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &str {
        "redis"
    }

    /// `redis/native/<namespace>/<dictionary>`.
    fn location(&self) -> String {
        format!("redis/native/{}/{}", self.namespace, self.dictionary)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
        match self
            .write(&scripts::PERSIST, Operation::Persist, |inv| {
                inv.arg(key).arg(value.as_ref());
            })
            .await?
        {
            Written::Changed(version, _) => Ok(version),
            _ => Err(bad_reply(
                Operation::Persist,
                "a store did not change anything",
            )),
        }
    }

    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        match self
            .write(&scripts::DEPERSIST, Operation::Depersist, |inv| {
                inv.arg(key);
            })
            .await?
        {
            Written::Changed(version, _) => Ok(Some(version)),
            _ => Ok(None),
        }
    }

    async fn durables(&self) -> Result<Load> {
        self.load().await
    }

    async fn last_updated(&self) -> Result<Version> {
        self.read_version().await
    }

    async fn changes_since(&self, since: Version) -> Result<Changes> {
        let Some((version, rows)) = self.changed_rows(since).await? else {
            return Ok(Changes::TooOld);
        };
        let mut delta = Delta {
            version,
            upserts: Vec::with_capacity(rows.len()),
            removals: Vec::new(),
            unreadable: Vec::new(),
        };
        for row in rows {
            match row {
                Row::Entry(entry) => delta.upserts.push(entry),
                Row::Removed(key) => delta.removals.push(key),
                // Its lossy name may be another key's: reporting a removal could drop that
                // key; the next full load forgets it.
                Row::Gone(_) => {}
                Row::Unreadable(key, reason) => delta.unreadable.push(Unreadable {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason,
                }),
            }
        }
        Ok(Changes::Delta(delta))
    }

    async fn subscribe(&self) -> Result<Hints> {
        crate::hints::subscribe(&self.store, &self.keys.channel).await
    }

    async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
        match self
            .write(
                &scripts::INSERT_IF_ABSENT,
                Operation::InsertIfAbsent,
                |inv| {
                    inv.arg(key).arg(value.as_ref());
                },
            )
            .await?
        {
            Written::Changed(version, _) => Ok(IfAbsent::Inserted(version)),
            Written::Unchanged(mut reply) => Ok(IfAbsent::Present(self.entry(
                key,
                &mut reply,
                Operation::InsertIfAbsent,
            )?)),
            Written::NotAnInteger => Err(bad_reply(Operation::InsertIfAbsent, "status -1")),
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        new: Option<Bytes>,
    ) -> Result<Swap> {
        let expected = expected.map(|r| r.0.to_string()).unwrap_or_default();
        match self
            .write(
                &scripts::COMPARE_AND_SWAP,
                Operation::CompareAndSwap,
                |inv| {
                    inv.arg(key).arg(expected);
                    match &new {
                        Some(value) => inv.arg("1").arg(value.as_ref()),
                        None => inv.arg("0").arg(""),
                    };
                },
            )
            .await?
        {
            Written::Changed(version, _) => Ok(Swap::Swapped(version)),
            Written::Unchanged(mut reply) => {
                if reply.len() == 0 {
                    Ok(Swap::Conflict(None))
                } else {
                    Ok(Swap::Conflict(Some(self.entry(
                        key,
                        &mut reply,
                        Operation::CompareAndSwap,
                    )?)))
                }
            }
            Written::NotAnInteger => Err(bad_reply(Operation::CompareAndSwap, "status -1")),
        }
    }

    async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        match self
            .write(&scripts::POP, Operation::Pop, |inv| {
                inv.arg(key);
            })
            .await?
        {
            Written::Changed(version, mut reply) => Ok(Some((reply.bytes()?, version))),
            _ => Ok(None),
        }
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        match self
            .write(&scripts::INCREMENT, Operation::Increment, |inv| {
                inv.arg(key).arg(delta);
            })
            .await?
        {
            Written::Changed(version, mut reply) => Ok((reply.int()?, version)),
            _ => Err(Error::NotAnInteger {
                backend: "redis".into(),
                key: key.into(),
            }),
        }
    }

    async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
        if ops.is_empty() {
            return Ok(None);
        }
        match self
            .write(&scripts::BATCH, Operation::Batch, |inv| {
                for op in &ops {
                    match op {
                        BatchOp::Put { key, value } => inv.arg("P").arg(key).arg(value.as_ref()),
                        BatchOp::Delete { key } => inv.arg("D").arg(key).arg(""),
                    };
                }
            })
            .await?
        {
            Written::Changed(version, _) => Ok(Some(version)),
            _ => Ok(None),
        }
    }

    async fn clear(&self) -> Result<Option<Version>> {
        match self
            .write(&scripts::CLEAR, Operation::Clear, |_| {})
            .await?
        {
            Written::Changed(version, _) => Ok(Some(version)),
            _ => Ok(None),
        }
    }

    async fn now(&self) -> Result<StoreTime> {
        let value = self.run(&scripts::NOW, Operation::Now, |_| {}).await?;
        Reply::new(value, Operation::Now)?.u64().map(StoreTime)
    }

    async fn persist_expiring(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(Version, StoreTime)> {
        let ttl = u64::try_from(ttl.as_millis())
            .unwrap_or(u64::MAX)
            .min(MAX_TTL_MILLIS);
        match self
            .write(
                &scripts::PERSIST_EXPIRING,
                Operation::PersistExpiring,
                |inv| {
                    inv.arg(key).arg(value.as_ref()).arg(ttl);
                },
            )
            .await?
        {
            Written::Changed(version, mut reply) => Ok((version, StoreTime(reply.u64()?))),
            _ => Err(bad_reply(
                Operation::PersistExpiring,
                "a store did not change anything",
            )),
        }
    }

    async fn sweep(&self) -> Result<Option<Swept>> {
        match self
            .write(&scripts::SWEEP, Operation::Sweep, |_| {})
            .await?
        {
            Written::Changed(version, mut reply) => {
                let mut keys = Vec::with_capacity(reply.len());
                while reply.len() > 0 {
                    // A key that is not UTF-8 is in no handle's snapshot.
                    if let Ok(key) = reply.key()? {
                        keys.push(key);
                    }
                }
                Ok(Some(Swept { version, keys }))
            }
            _ => Ok(None),
        }
    }
}
