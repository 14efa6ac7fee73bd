//! The [`Backend`] implementation of [`ZooKeeperBackend`]: each operation as reads and one
//! write multi, made of the pieces in [`dictionary`](mod@crate::dictionary).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use durable_core::{
    Backend, BatchOp, Capabilities, Changes, Error, Hints, IfAbsent, Load, LoadParts, Operation,
    Result, Revision, StoreTime, Swap, Swept, Version, parse_counter,
};
use parking_lot::Mutex;
use zookeeper_client as zk;

use crate::ZooKeeperBackend;
use crate::dictionary::{Current, Decision, MAX_ATTEMPTS, backoff, put};
use crate::entries::{EntryWrite, MAX_VALUE_SIZE, check_request, fitting};
use crate::store::NAME;

#[async_trait]
impl Backend for ZooKeeperBackend {
    fn name(&self) -> &str {
        NAME
    }

    /// `zookeeper`, then the dictionary's znode path with the chroot of the connect string in
    /// front: `zookeeper/<chroot>/<root>/<namespace>/<dictionary>`, e.g.
    /// `zookeeper/durable/prod/flags` with the default root and no chroot. No server and no
    /// credentials: a backup stays valid when the ensemble moves.
    fn location(&self) -> String {
        let chroot = self.store.chroot().unwrap_or("");
        format!("{NAME}{chroot}{}", self.paths.base)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all().with_max_value_size(Some(MAX_VALUE_SIZE))
    }

    async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
        let (version, _) = self
            .store_value(Operation::Persist, key, value, None)
            .await?;
        Ok(version)
    }

    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        let name = &self.check_key(key)?;
        self.store
            .run(Operation::Depersist, false, |client| async move {
                self.depersist_once(&client, name, key).await
            })
            .await
    }

    async fn durables(&self) -> Result<Load> {
        self.store
            .run(Operation::Load, true, |client| async move {
                self.load_once(&client, None).await
            })
            .await
    }

    async fn durables_in_parts(&self, parts: &mut dyn LoadParts) -> Result<Load> {
        // Each attempt (a new session after an expiry) restarts `parts` first.
        let parts = Mutex::new(parts);
        self.store
            .run(Operation::Load, true, |client| {
                let parts = &parts;
                async move { self.load_once(&client, Some(parts)).await }
            })
            .await
    }

    async fn last_updated(&self) -> Result<Version> {
        self.store
            .run(Operation::Version, true, |client| async move {
                Ok(self
                    .read_node(&client, Operation::Version, false)
                    .await?
                    .token())
            })
            .await
    }

    async fn changes_since(&self, since: Version) -> Result<Changes> {
        self.store
            .run(Operation::Changes, true, |client| async move {
                self.changes_once(&client, since).await
            })
            .await
    }

    async fn subscribe(&self) -> Result<Hints> {
        crate::hints::subscribe(self).await
    }

    async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
        let name = self.check_key(key)?;
        Self::check_value(key, &value)?;
        let names = &[name][..];
        let value = &value;
        self.store
            .run(Operation::InsertIfAbsent, false, |client| async move {
                self.conditional(&client, Operation::InsertIfAbsent, key, names, |current| {
                    Ok(match &current[0] {
                        Some(present) => Decision::Done(IfAbsent::Present(present.entry.clone())),
                        None => Decision::Write(
                            vec![put(&names[0], None, value.clone())],
                            Box::new(IfAbsent::Inserted),
                        ),
                    })
                })
                .await
            })
            .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        new: Option<Bytes>,
    ) -> Result<Swap> {
        let name = self.check_key(key)?;
        if let Some(value) = &new {
            Self::check_value(key, value)?;
        }
        let names = &[name][..];
        let new = &new;
        self.store
            .run(Operation::CompareAndSwap, false, |client| async move {
                self.conditional(&client, Operation::CompareAndSwap, key, names, |current| {
                    let current = current[0].as_ref();
                    let entry = current.map(|c| c.entry.clone());
                    if entry.as_ref().map(|e| e.revision) != expected
                        || (current.is_none() && new.is_none())
                    {
                        return Ok(Decision::Done(Swap::Conflict(entry)));
                    }
                    let write = match (new, current) {
                        (Some(value), current) => put(&names[0], current, value.clone()),
                        (None, Some(current)) => EntryWrite::Delete {
                            name: names[0].clone(),
                            expected: Some(current.znode_version),
                        },
                        (None, None) => unreachable!("handled above"),
                    };
                    Ok(Decision::Write(vec![write], Box::new(Swap::Swapped)))
                })
                .await
            })
            .await
    }

    async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        let names = &[self.check_key(key)?][..];
        self.store
            .run(Operation::Pop, false, |client| async move {
                self.conditional(&client, Operation::Pop, key, names, |current| {
                    Ok(match &current[0] {
                        None => Decision::Done(None),
                        Some(current) => {
                            let value = current.entry.value.clone();
                            Decision::Write(
                                vec![EntryWrite::Delete {
                                    name: names[0].clone(),
                                    expected: Some(current.znode_version),
                                }],
                                Box::new(move |version| Some((value, version))),
                            )
                        }
                    })
                })
                .await
            })
            .await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        let names = &[self.check_key(key)?][..];
        self.store
            .run(Operation::Increment, false, |client| async move {
                self.conditional(&client, Operation::Increment, key, names, |current| {
                    let current = current[0].as_ref();
                    let old = match current {
                        Some(c) => parse_counter(&c.entry.value),
                        None => Some(0),
                    };
                    let Some(new) = old.and_then(|old| old.checked_add(delta)) else {
                        return Err(Error::NotAnInteger {
                            backend: NAME.into(),
                            key: key.into(),
                        });
                    };
                    Ok(Decision::Write(
                        vec![put(&names[0], current, Bytes::from(new.to_string()))],
                        Box::new(move |version| (new, version)),
                    ))
                })
                .await
            })
            .await
    }

    async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
        // The last operation on each key wins; keys in order of first appearance.
        let mut order: Vec<String> = Vec::new();
        let mut last: HashMap<String, (String, Option<Bytes>)> = HashMap::new();
        let any_put = ops.iter().any(|op| matches!(op, BatchOp::Put { .. }));
        for op in ops {
            let (key, value) = match op {
                BatchOp::Put { key, value } => {
                    Self::check_value(&key, &value)?;
                    (key, Some(value))
                }
                BatchOp::Delete { key } => (key, None),
            };
            let name = self.check_key(&key)?;
            if !last.contains_key(&key) {
                order.push(key.clone());
            }
            last.insert(key, (name, value));
        }
        if order.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = order.iter().map(|k| last[k].0.clone()).collect();
        let finals: Vec<Option<Bytes>> = order.iter().map(|k| last[k].1.clone()).collect();
        // Refused before anything is sent: the batch first reads every key in one multi-read,
        // which the server would answer by dropping the connection if it passed the limit,
        // and the write is larger than that read.
        let estimate: Vec<EntryWrite> = names
            .iter()
            .zip(&finals)
            .map(|(name, value)| match value {
                Some(value) => put(name, None, value.clone()),
                None => EntryWrite::Delete {
                    name: name.clone(),
                    expected: None,
                },
            })
            .collect();
        check_request(Operation::Batch, &estimate)?;
        let (names, finals) = (&names[..], &finals[..]);
        let first_key = &order[0];
        self.store
            .run(Operation::Batch, false, |client| async move {
                self.conditional(&client, Operation::Batch, first_key, names, |current| {
                    let mut writes = Vec::new();
                    let mut changes = any_put;
                    for ((name, value), current) in names.iter().zip(finals).zip(current) {
                        match (value, current) {
                            (Some(value), current) => {
                                writes.push(put(name, current.as_ref(), value.clone()))
                            }
                            (None, Some(current)) => {
                                changes = true;
                                writes.push(EntryWrite::Delete {
                                    name: name.clone(),
                                    expected: Some(current.znode_version),
                                });
                            }
                            (None, None) => {}
                        }
                    }
                    if !changes {
                        return Ok(Decision::Done(None));
                    }
                    Ok(Decision::Write(writes, Box::new(Some)))
                })
                .await
            })
            .await
    }

    async fn clear(&self) -> Result<Option<Version>> {
        let operation = Operation::Clear;
        self.store
            .run(operation, false, |client| async move {
                for attempt in 0..MAX_ATTEMPTS {
                    // The listing happens after the version read; the multi's version check
                    // proves nothing was written in between, so the listing is exact.
                    let node = self.read_node(&client, operation, true).await?;
                    let names = match client.list_children(&self.paths.entries).await {
                        Ok(names) => names,
                        Err(zk::Error::NoNode) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    if names.is_empty() {
                        return Ok(None);
                    }
                    let writes: Vec<EntryWrite> = names
                        .into_iter()
                        .map(|name| EntryWrite::Delete {
                            name,
                            expected: None,
                        })
                        .collect();
                    if let Ok((version, _)) = self.commit(&client, operation, node, &writes).await?
                    {
                        return Ok(Some(version));
                    }
                    backoff(attempt).await;
                }
                Err(Self::contention(""))
            })
            .await
    }

    async fn now(&self) -> Result<StoreTime> {
        // Writing the clock node again changes nothing else: retried on a new session like a read.
        self.store
            .run(Operation::Now, true, |client| async move {
                self.now_once(&client).await
            })
            .await
    }

    async fn persist_expiring(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(Version, StoreTime)> {
        let (version, written_at) = self
            .store_value(Operation::PersistExpiring, key, value, Some(ttl))
            .await?;
        Ok((version, written_at.add(ttl)))
    }

    async fn sweep(&self) -> Result<Option<Swept>> {
        let operation = Operation::Sweep;
        self.store
            .run(operation, false, |client| async move {
                let now = self.now_once(&client).await?;
                for attempt in 0..MAX_ATTEMPTS {
                    // As in `clear`: the multi's version check proves that the entries read
                    // after the version are still the dictionary's.
                    let node = self.read_node(&client, operation, true).await?;
                    // Only the expired entries are kept. Entries that cannot be read have no
                    // expiry this sweep could see.
                    let mut expired: Vec<(String, Current)> = Vec::new();
                    let listed = self.read_all(
                        &client,
                        |_| (),
                        |name, current| {
                            if current.entry.expires_at.is_some_and(|at| at <= now) {
                                expired.push((name, current));
                            }
                        },
                    );
                    if listed.await?.is_none() {
                        continue;
                    }
                    if expired.is_empty() {
                        return Ok(None);
                    }
                    // Earliest expiry first: when they do not all fit in one request, this
                    // sweep deletes the first ones that fit and the rest wait for the next.
                    expired.sort_unstable_by(|(_, a), (_, b)| {
                        (a.entry.expires_at, &a.entry.key).cmp(&(b.entry.expires_at, &b.entry.key))
                    });
                    let mut writes: Vec<EntryWrite> = expired
                        .iter()
                        .map(|(name, current)| EntryWrite::Delete {
                            name: name.clone(),
                            expected: Some(current.znode_version),
                        })
                        .collect();
                    // At least one: a single delete that does not fit fails in `commit`.
                    let fit = fitting(&writes).max(1);
                    writes.truncate(fit);
                    expired.truncate(fit);
                    if let Ok((version, _)) = self.commit(&client, operation, node, &writes).await?
                    {
                        let keys = expired.into_iter().map(|(_, c)| c.entry.key).collect();
                        return Ok(Some(Swept { version, keys }));
                    }
                    backoff(attempt).await;
                }
                Err(Self::contention(""))
            })
            .await
    }
}
