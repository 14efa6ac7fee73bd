//! An in-process store with every capability and fault injection, for tests and examples.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use crate::backend::{Backend, Hint, HintSender, Hints, STAMP_HISTORY};
use crate::clock::LocalClock;
use crate::error::{Error, Operation, Result};
use crate::types::{
    BatchOp, Capabilities, Changes, Delta, IfAbsent, Load, Name, Revision, StoreTime, StoredEntry,
    Swap, Swept, Unreadable, Version, parse_counter,
};

/// A store held in memory, shared by every [`MemoryBackend`] opened from it (clones share it).
///
/// Several backends over one store act like several processes over one server, which is what
/// engine tests need. The fault injection methods ([`set_available`](Self::set_available),
/// [`corrupt`](Self::corrupt), [`wipe`](Self::wipe), [`forget_history`](Self::forget_history),
/// [`set_latency`](Self::set_latency)) simulate a server going down, a bad value written by another
/// program, a flushed store and trimmed history.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> durable_core::Result<()> {
/// use durable_core::{Dict, Json, MemoryStore, Options};
///
/// let store = MemoryStore::new();
/// let a: Dict<u32> = Dict::open(store.backend("test", "dict")?, Json, Options::new()).await?;
/// let b: Dict<u32> = Dict::open(store.backend("test", "dict")?, Json, Options::new()).await?;
/// a.insert("answer", 42).await?;
/// assert_eq!(b.sync().await?.get("answer"), Some(&42));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    dicts: Mutex<HashMap<(Name, Name), Stored>>,
    unavailable: std::sync::atomic::AtomicBool,
    latency_micros: AtomicU64,
    calls: AtomicU64,
    clock: LocalClock,
    /// Milliseconds added to the local clock to give the store's clock.
    clock_offset: AtomicI64,
}

impl Shared {
    fn now(&self) -> StoreTime {
        let millis = self
            .clock
            .now_millis()
            .saturating_add(self.clock_offset.load(Ordering::SeqCst));
        StoreTime(u64::try_from(millis).unwrap_or(0))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("dictionaries", &self.shared.dicts.lock().len())
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Stored {
    epoch: u64,
    counter: u64,
    stamp: u64,
    parent: u64,
    /// The stamp of each of the last [`STAMP_HISTORY`] counters.
    stamps: BTreeMap<u64, u64>,
    /// True once the version record was deleted behind the store's back (fault injection); the
    /// next access re-creates it as after a wipe.
    record_lost: bool,
    /// Tokens with a counter below this cannot be served a delta (tombstones were trimmed).
    oldest_served: u64,
    entries: HashMap<String, (Bytes, u64, Option<StoreTime>)>,
    /// Rows the backend "cannot read" (fault injection): key -> reason.
    unreadable: HashMap<String, String>,
    tombstones: HashMap<String, u64>,
    /// Every key's last write (value or tombstone) by revision, so deltas cost O(changes).
    log: BTreeSet<(u64, String)>,
    subscribers: Vec<HintSender>,
}

impl Stored {
    fn new() -> Self {
        let stamp = Version::new_stamp();
        Stored {
            epoch: rand::random(),
            counter: 0,
            stamp,
            parent: 0,
            stamps: BTreeMap::from([(0, stamp)]),
            record_lost: false,
            oldest_served: 0,
            entries: HashMap::new(),
            unreadable: HashMap::new(),
            tombstones: HashMap::new(),
            log: BTreeSet::new(),
            subscribers: Vec::new(),
        }
    }

    fn version(&self) -> Version {
        Version::stamped(self.epoch, self.counter, self.stamp, self.parent)
    }

    /// Re-creates a lost version record as a wipe would: a fresh epoch and stamp, the counter
    /// above every revision still logged.
    fn repair(&mut self) {
        if !self.record_lost {
            return;
        }
        self.record_lost = false;
        self.epoch = rand::random();
        self.counter = self.log.last().map_or(0, |(rev, _)| *rev);
        self.oldest_served = self.counter;
        self.stamp = Version::new_stamp();
        self.parent = 0;
        self.stamps = BTreeMap::from([(self.counter, self.stamp)]);
    }

    /// Starts a write: the new counter, with a fresh stamp recorded for it.
    fn bump(&mut self) -> u64 {
        self.counter += 1;
        self.parent = self.stamp;
        self.stamp = Version::new_stamp();
        self.stamps.insert(self.counter, self.stamp);
        if self.stamps.len() as u64 > STAMP_HISTORY {
            self.stamps.pop_first();
        }
        self.counter
    }

    /// True if `since` names a state of this store's history that a delta can start from.
    fn serves(&self, since: Version) -> bool {
        since.epoch() == self.epoch
            && since.counter() >= self.oldest_served
            && self.stamps.get(&since.counter()) == Some(&since.stamp())
    }

    /// Ends a write: notifies subscribers and returns the new token.
    fn committed(&mut self) -> Version {
        self.subscribers.retain(|s| s.send(Hint::Changed));
        self.version()
    }

    fn put(&mut self, key: &str, value: Bytes, rev: u64) {
        self.put_expiring(key, value, rev, None);
    }

    fn put_expiring(&mut self, key: &str, value: Bytes, rev: u64, expires: Option<StoreTime>) {
        self.unreadable.remove(key);
        let old = self.tombstones.remove(key);
        let old = self
            .entries
            .insert(key.to_owned(), (value, rev, expires))
            .map(|(_, r, _)| r)
            .or(old);
        self.log_write(key, old, rev);
    }

    fn delete(&mut self, key: &str, rev: u64) -> Option<Bytes> {
        self.unreadable.remove(key);
        let (old, old_rev, _) = self.entries.remove(key)?;
        self.tombstones.insert(key.to_owned(), rev);
        self.log_write(key, Some(old_rev), rev);
        Some(old)
    }

    /// Deletes `keys` (all present) in one write; `None` if there are none.
    fn delete_all(&mut self, keys: Vec<String>) -> Option<Swept> {
        if keys.is_empty() {
            return None;
        }
        let rev = self.bump();
        for key in &keys {
            self.delete(key, rev);
        }
        Some(Swept {
            version: self.committed(),
            keys,
        })
    }

    fn log_write(&mut self, key: &str, old: Option<u64>, rev: u64) {
        if let Some(old) = old {
            self.log.remove(&(old, key.to_owned()));
        }
        self.log.insert((rev, key.to_owned()));
    }

    fn unreadable(&self, key: &str) -> Option<Unreadable> {
        self.unreadable.get(key).map(|reason| Unreadable {
            key: key.to_owned(),
            reason: reason.clone(),
        })
    }

    fn entry(&self, key: &str) -> Option<StoredEntry> {
        self.entries
            .get(key)
            .map(|(value, rev, expires_at)| StoredEntry {
                key: key.to_owned(),
                value: value.clone(),
                revision: Revision(*rev),
                expires_at: *expires_at,
            })
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend over dictionary `dictionary` in `namespace` of this store.
    pub fn backend(&self, namespace: &str, dictionary: &str) -> Result<MemoryBackend> {
        Ok(MemoryBackend {
            store: self.clone(),
            id: (Name::new(namespace)?, Name::new(dictionary)?),
        })
    }

    /// The names of the dictionaries of `namespace` in this store (those any backend has used),
    /// sorted.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> durable_core::Result<()> {
    /// use durable_core::{Backend, MemoryStore};
    /// use durable_core::bytes::Bytes;
    /// let store = MemoryStore::new();
    /// for (namespace, dictionary) in [("app", "flags"), ("app", "config"), ("apps", "other")] {
    ///     store.backend(namespace, dictionary)?.persist("k", Bytes::from("1")).await?;
    /// }
    /// assert_eq!(store.dictionaries("app"), ["config", "flags"]);
    /// assert!(store.dictionaries("none").is_empty());
    /// # Ok(()) }
    /// ```
    pub fn dictionaries(&self, namespace: &str) -> Vec<String> {
        let mut names: Vec<String> = (self.shared.dicts.lock().keys())
            .filter(|(ns, _)| ns.as_str() == namespace)
            .map(|(_, dictionary)| dictionary.as_str().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Makes every operation fail with [`Error::Unavailable`] (`false`) or work again (`true`).
    pub fn set_available(&self, available: bool) {
        self.shared.unavailable.store(!available, Ordering::SeqCst);
    }

    /// Delays every operation by `latency`, half before and half after it reaches the data (a
    /// `tokio::time::sleep`, so paused test clocks apply).
    pub fn set_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_micros.store(micros, Ordering::SeqCst);
    }

    /// Sets the store's clock `offset` milliseconds ahead of the local clock (negative: behind),
    /// to test that expiry follows the store's clock.
    pub fn set_clock_offset(&self, offset: i64) {
        self.shared.clock_offset.store(offset, Ordering::SeqCst);
    }

    /// How many backend operations (round trips) all backends of this store have made.
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Writes `bytes` under `key` as another program would, bypassing any encoding (a normal
    /// versioned write, so handles pick it up on their next sync).
    pub fn corrupt(
        &self,
        namespace: &str,
        dictionary: &str,
        key: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let id = (Name::new(namespace)?, Name::new(dictionary)?);
        let mut dicts = self.shared.dicts.lock();
        let stored = dicts.entry(id).or_insert_with(Stored::new);
        stored.repair();
        let rev = stored.bump();
        stored.put(key, Bytes::copy_from_slice(bytes), rev);
        stored.committed();
        Ok(())
    }

    /// Makes the row of `key` one the backend cannot read, as if another program had written
    /// something of the wrong shape there (a versioned write): loads and deltas report it as
    /// [`Unreadable`] with `reason`, until the key is written again.
    pub fn make_unreadable(
        &self,
        namespace: &str,
        dictionary: &str,
        key: &str,
        reason: &str,
    ) -> Result<()> {
        let id = (Name::new(namespace)?, Name::new(dictionary)?);
        let mut dicts = self.shared.dicts.lock();
        let stored = dicts.entry(id).or_insert_with(Stored::new);
        stored.repair();
        let rev = stored.bump();
        let old = stored
            .entries
            .remove(key)
            .map(|(_, r, _)| r)
            .or_else(|| stored.tombstones.remove(key));
        stored.log_write(key, old, rev);
        stored.unreadable.insert(key.to_owned(), reason.to_owned());
        stored.committed();
        Ok(())
    }

    /// Deletes the dictionary as a `FLUSHALL` would: the next access creates it afresh, empty and
    /// with a new epoch. Hint subscribers are dropped, as a restarted server drops connections.
    pub fn wipe(&self, namespace: &str, dictionary: &str) -> Result<()> {
        let id = (Name::new(namespace)?, Name::new(dictionary)?);
        self.shared.dicts.lock().remove(&id);
        Ok(())
    }

    /// A copy of everything stored for the dictionary, to put back later with
    /// [`put_back`](Self::put_back) as a backup restore would.
    pub fn copy(&self, namespace: &str, dictionary: &str) -> Result<MemoryCopy> {
        let id = (Name::new(namespace)?, Name::new(dictionary)?);
        let dicts = self.shared.dicts.lock();
        Ok(MemoryCopy(dicts.get(&id).map(|stored| Stored {
            subscribers: Vec::new(),
            ..stored.clone()
        })))
    }

    /// Puts the dictionary back to a copy taken earlier (a restore from a backup: the same
    /// epoch, an earlier counter). Hint subscribers stay connected and hear nothing, as with a
    /// restore made by another program.
    pub fn put_back(&self, namespace: &str, dictionary: &str, copy: &MemoryCopy) -> Result<()> {
        let id = (Name::new(namespace)?, Name::new(dictionary)?);
        let mut dicts = self.shared.dicts.lock();
        let subscribers = dicts
            .remove(&id)
            .map(|stored| stored.subscribers)
            .unwrap_or_default();
        if let Some(copy) = &copy.0 {
            dicts.insert(
                id,
                Stored {
                    subscribers,
                    ..copy.clone()
                },
            );
        }
        Ok(())
    }

    /// Deletes the dictionary's version record but keeps its entries (a damaged store); the
    /// next access re-creates the record with a fresh epoch, as after a wipe.
    pub fn lose_version_record(&self, namespace: &str, dictionary: &str) -> Result<()> {
        let id = (Name::new(namespace)?, Name::new(dictionary)?);
        if let Some(stored) = self.shared.dicts.lock().get_mut(&id) {
            stored.record_lost = true;
        }
        Ok(())
    }

    /// Trims every tombstone now, so that only the current token can be served a delta.
    pub fn forget_history(&self, namespace: &str, dictionary: &str) -> Result<()> {
        let id = (Name::new(namespace)?, Name::new(dictionary)?);
        if let Some(stored) = self.shared.dicts.lock().get_mut(&id) {
            for (key, rev) in stored.tombstones.drain() {
                stored.log.remove(&(rev, key));
            }
            stored.oldest_served = stored.counter;
            let stamp = stored.stamp;
            stored.stamps = BTreeMap::from([(stored.counter, stamp)]);
        }
        Ok(())
    }
}

/// A copy of one dictionary of a [`MemoryStore`], from [`MemoryStore::copy`].
pub struct MemoryCopy(Option<Stored>);

impl fmt::Debug for MemoryCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MemoryCopy")
            .field(&self.0.as_ref().map(Stored::version))
            .finish()
    }
}

/// One dictionary of a [`MemoryStore`]. Supports every capability.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    store: MemoryStore,
    id: (Name, Name),
}

impl MemoryBackend {
    /// Simulates one round trip: half the latency on the way there, availability, `f` on the
    /// dictionary's data, and half the latency on the way back.
    async fn call<T>(
        &self,
        operation: Operation,
        f: impl FnOnce(&mut Stored, StoreTime) -> T,
    ) -> Result<T> {
        let shared = &self.store.shared;
        shared.calls.fetch_add(1, Ordering::SeqCst);
        self.travel().await;
        if shared.unavailable.load(Ordering::SeqCst) {
            return Err(Error::unavailable(
                "memory",
                operation,
                "the memory store was made unavailable (fault injection)",
            ));
        }
        let result = {
            let mut dicts = shared.dicts.lock();
            let now = shared.now();
            let stored = dicts.entry(self.id.clone()).or_insert_with(Stored::new);
            stored.repair();
            f(stored, now)
        };
        self.travel().await;
        Ok(result)
    }

    async fn travel(&self) {
        let latency = self.store.shared.latency_micros.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency / 2)).await;
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &str {
        "memory"
    }

    fn location(&self) -> String {
        format!("memory/{}/{}", self.id.0, self.id.1)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
        self.call(Operation::Persist, |s, _| {
            let rev = s.bump();
            s.put(key, value, rev);
            s.committed()
        })
        .await
    }

    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        self.call(Operation::Depersist, |s, _| {
            if !s.entries.contains_key(key) {
                return None;
            }
            let rev = s.bump();
            s.delete(key, rev);
            Some(s.committed())
        })
        .await
    }

    async fn durables(&self) -> Result<Load> {
        self.call(Operation::Load, |s, _| Load {
            version: s.version(),
            entries: s.entries.keys().filter_map(|k| s.entry(k)).collect(),
            unreadable: s
                .unreadable
                .keys()
                .filter_map(|k| s.unreadable(k))
                .collect(),
        })
        .await
    }

    async fn last_updated(&self) -> Result<Version> {
        self.call(Operation::Version, |s, _| s.version()).await
    }

    async fn changes_since(&self, since: Version) -> Result<Changes> {
        self.call(Operation::Changes, |s, _| {
            if !s.serves(since) {
                return Changes::TooOld;
            }
            let mut delta = Delta {
                version: s.version(),
                upserts: Vec::new(),
                removals: Vec::new(),
                unreadable: Vec::new(),
            };
            let after = (since.counter() + 1, String::new());
            for (_, key) in s.log.range(after..) {
                if let Some(entry) = s.entry(key) {
                    delta.upserts.push(entry);
                } else if let Some(unreadable) = s.unreadable(key) {
                    delta.unreadable.push(unreadable);
                } else {
                    delta.removals.push(key.clone());
                }
            }
            Changes::Delta(delta)
        })
        .await
    }

    async fn subscribe(&self) -> Result<Hints> {
        let (sender, hints) = Hints::channel();
        self.call(Operation::Subscribe, |s, _| s.subscribers.push(sender))
            .await?;
        Ok(hints)
    }

    async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
        self.call(Operation::InsertIfAbsent, |s, _| {
            if let Some(entry) = s.entry(key) {
                return IfAbsent::Present(entry);
            }
            let rev = s.bump();
            s.put(key, value, rev);
            IfAbsent::Inserted(s.committed())
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        new: Option<Bytes>,
    ) -> Result<Swap> {
        self.call(Operation::CompareAndSwap, |s, _| {
            let current = s.entry(key);
            if current.as_ref().map(|e| e.revision) != expected
                || (current.is_none() && new.is_none())
            {
                return Swap::Conflict(current);
            }
            let rev = s.bump();
            match new {
                Some(value) => s.put(key, value, rev),
                None => {
                    s.delete(key, rev);
                }
            }
            Swap::Swapped(s.committed())
        })
        .await
    }

    async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        self.call(Operation::Pop, |s, _| {
            if !s.entries.contains_key(key) {
                return None;
            }
            let rev = s.bump();
            let old = s.delete(key, rev)?;
            Some((old, s.committed()))
        })
        .await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        self.call(Operation::Increment, |s, _| {
            let current = match s.entries.get(key) {
                Some((value, _, _)) => parse_counter(value),
                None => Some(0),
            };
            let Some(new) = current.and_then(|c| c.checked_add(delta)) else {
                return Err(Error::NotAnInteger {
                    backend: "memory".into(),
                    key: key.into(),
                });
            };
            let rev = s.bump();
            s.put(key, Bytes::from(new.to_string()), rev);
            Ok((new, s.committed()))
        })
        .await?
    }

    async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
        self.call(Operation::Batch, |s, _| {
            let changes = ops.iter().any(|op| match op {
                BatchOp::Put { .. } => true,
                BatchOp::Delete { key } => s.entries.contains_key(key),
            });
            if !changes {
                return None;
            }
            let rev = s.bump();
            for op in ops {
                match op {
                    BatchOp::Put { key, value } => s.put(&key, value, rev),
                    BatchOp::Delete { key } => {
                        s.delete(&key, rev);
                    }
                }
            }
            Some(s.committed())
        })
        .await
    }

    async fn clear(&self) -> Result<Option<Version>> {
        self.call(Operation::Clear, |s, _| {
            let keys: Vec<String> = s.entries.keys().cloned().collect();
            s.delete_all(keys).map(|swept| swept.version)
        })
        .await
    }

    async fn now(&self) -> Result<StoreTime> {
        self.call(Operation::Now, |_, now| now).await
    }

    async fn persist_expiring(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(Version, StoreTime)> {
        self.call(Operation::PersistExpiring, |s, now| {
            let rev = s.bump();
            let expires_at = now.add(ttl);
            s.put_expiring(key, value, rev, Some(expires_at));
            (s.committed(), expires_at)
        })
        .await
    }

    async fn sweep(&self) -> Result<Option<Swept>> {
        self.call(Operation::Sweep, |s, now| {
            let expired = s
                .entries
                .iter()
                .filter(|(_, (_, _, expires))| expires.is_some_and(|at| at <= now))
                .map(|(key, _)| key.clone())
                .collect();
            s.delete_all(expired)
        })
        .await
    }
}
