//! The local snapshot and the guard that reads it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::Guard;
use tokio::time::Instant;

use crate::clock::StoreClock;
use crate::error::Error;
use crate::map::{Entry, Key, Map, Slot};
use crate::shared::Shared;
use crate::types::{Revision, StoreTime, Version};

/// A value with the revision that wrote it, as returned by writes and compare-and-swap.
#[derive(Debug)]
pub struct Versioned<V> {
    /// The value.
    pub value: Shared<V>,
    /// The revision of the write that stored it.
    pub revision: Revision,
}

impl<V> Clone for Versioned<V> {
    fn clone(&self) -> Self {
        Versioned {
            value: self.value.clone(),
            revision: self.revision,
        }
    }
}

/// A local write not yet covered by the snapshot's token (another process wrote in between, so
/// the token cannot simply move on). It is re-applied over any older delta or load until a sync
/// brings a token that includes it.
#[derive(Debug)]
pub(crate) struct Pending<V> {
    pub(crate) version: Version,
    /// How many version checks had started when the write was acknowledged: a check with a
    /// higher generation read the store after the write.
    pub(crate) acked: u64,
    pub(crate) key: Key,
    pub(crate) entry: Option<Entry<V>>,
}

impl<V> Clone for Pending<V> {
    fn clone(&self) -> Self {
        Pending {
            version: self.version,
            acked: self.acked,
            key: self.key.clone(),
            entry: self.entry.clone(),
        }
    }
}

/// One published state of the dictionary.
#[derive(Debug)]
pub(crate) struct State<V> {
    pub(crate) map: Map<V>,
    pub(crate) version: Version,
    pub(crate) pending: Vec<Pending<V>>,
    /// True while the state comes from the backup file and no sync has confirmed it.
    pub(crate) from_backup: bool,
    /// Clock origin shared by the whole dictionary handle.
    pub(crate) origin: Instant,
    /// The handle's estimate of the store's clock, to hide expired entries.
    pub(crate) clock: Arc<StoreClock>,
    /// When the store last confirmed this state, in nanoseconds after `origin` (negative for a
    /// state confirmed before the handle existed, such as one read from a backup file). Updated in
    /// place by no-change checks, so a superseded state stops being confirmed and ages.
    pub(crate) confirmed: AtomicI64,
    /// Keys whose stored value could not be decoded, with why; each keeps its last good value
    /// (or stays absent) until it is written again.
    pub(crate) bad: Arc<BTreeMap<Arc<str>, Error>>,
}

impl<V> State<V> {
    /// Forgets that `key` held a bad value (it was written or deleted since).
    pub(crate) fn clear_bad(&mut self, key: &str) {
        if self.bad.contains_key(key) {
            Arc::make_mut(&mut self.bad).remove(key);
        }
    }

    pub(crate) fn new(
        map: Map<V>,
        version: Version,
        origin: Instant,
        clock: Arc<StoreClock>,
        confirmed_at: Instant,
    ) -> Self {
        let state = State {
            map,
            version,
            pending: Vec::new(),
            from_backup: false,
            origin,
            clock,
            confirmed: AtomicI64::new(i64::MIN),
            bad: Arc::default(),
        };
        state.confirm(confirmed_at);
        state
    }

    /// A copy to modify and publish: shares the map's base and overlay with `self`.
    pub(crate) fn successor(&self) -> Self {
        State {
            map: self.map.clone(),
            version: self.version,
            pending: self.pending.clone(),
            from_backup: self.from_backup,
            origin: self.origin,
            clock: self.clock.clone(),
            confirmed: AtomicI64::new(self.confirmed.load(Ordering::Relaxed)),
            bad: self.bad.clone(),
        }
    }

    /// Nanoseconds from `origin` to `at`.
    fn since_origin(&self, at: Instant) -> i64 {
        i64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(i64::MAX)
    }

    pub(crate) fn confirm(&self, at: Instant) {
        self.confirmed
            .fetch_max(self.since_origin(at), Ordering::Relaxed);
    }

    /// Marks the state as last confirmed `age` ago (which may be before the handle existed).
    pub(crate) fn set_age(&self, age: Duration) {
        let age = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
        let at = self.since_origin(Instant::now()).saturating_sub(age);
        self.confirmed.store(at, Ordering::Relaxed);
    }

    /// The store time to judge expiry at, if any entry expires (otherwise it is never read).
    pub(crate) fn expiry_now(&self) -> StoreTime {
        if self.map.expiring() == 0 {
            StoreTime(0)
        } else {
            self.clock.now()
        }
    }

    /// True if some entry has expired (by the estimated store clock) and waits for a sweep.
    pub(crate) fn has_expired(&self) -> bool {
        self.map.expiring() > 0 && self.map.may_have_expired(self.clock.now())
    }

    pub(crate) fn age(&self) -> Duration {
        let now = self.since_origin(Instant::now());
        let age = now.saturating_sub(self.confirmed.load(Ordering::Relaxed));
        Duration::from_nanos(u64::try_from(age).unwrap_or(0))
    }
}

/// A consistent, read-only view of the whole dictionary at one version.
///
/// Reads are lock-free and never touch the network: one atomic load when the guard is taken, then
/// plain hash lookups. Take one guard per unit of work (a web request) to see one version of
/// every key; take a new one to see newer data. Guards are cheap but pin the state they read, so
/// do not keep one for minutes.
///
/// Entries with a time to live disappear from a snapshot once they expire, judged by the handle's
/// estimate of the store's clock at the moment the snapshot was taken: every read of one snapshot
/// agrees.
pub struct Snapshot<V> {
    pub(crate) state: Guard<Arc<State<V>>>,
    /// The store time expiry is judged at.
    pub(crate) now: StoreTime,
}

impl<V> Snapshot<V> {
    pub(crate) fn new(state: Guard<Arc<State<V>>>) -> Self {
        let now = state.expiry_now();
        Snapshot { state, now }
    }

    #[inline]
    fn entry(&self, key: &str) -> Option<&Shared<V>> {
        self.state.map.get_live(key, self.now)
    }

    fn entries(&self) -> impl Iterator<Item = &Shared<V>> + '_ {
        let now = self.now;
        self.state
            .map
            .iter()
            .filter(move |e| e.is_live(now))
            .map(Slot::shared)
    }

    /// The value of `key`, if present.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&V> {
        self.entry(key).map(|e| &**e)
    }

    /// The value of `key`, or `default` when it is absent: the typed default of a flag read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> durable_core::Result<()> {
    /// # use durable_core::{Dict, Json, MemoryStore, Options};
    /// # let store = MemoryStore::new();
    /// let flags: Dict<bool> = Dict::open(store.backend("prod", "flags")?, Json, Options::new()).await?;
    /// let snapshot = flags.sync().await?;
    /// assert!(!*snapshot.get_or("new-checkout", &false));
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn get_or<'a>(&'a self, key: &str, default: &'a V) -> &'a V {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key` with its revision (for [`Dict::compare_and_swap`](crate::Dict::compare_and_swap)).
    pub fn get_versioned(&self, key: &str) -> Option<Versioned<V>> {
        self.entry(key).map(|e| Versioned {
            value: e.clone(),
            revision: e.revision(),
        })
    }

    /// When `key` expires, on the store's clock; `None` if it is absent or has no time to live.
    pub fn expires_at(&self, key: &str) -> Option<StoreTime> {
        let slot = self.state.map.get(key).filter(|e| e.is_live(self.now));
        slot.and_then(Slot::expires_at)
    }

    /// True if `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.entry(key).is_some()
    }

    /// The number of entries: O(1), or a count of the live ones while some entry has a time to
    /// live.
    pub fn len(&self) -> usize {
        if self.state.map.expiring() == 0 {
            self.state.map.len()
        } else {
            self.entries().count()
        }
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> + '_ {
        self.entries().map(|e| (e.key(), &**e))
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries().map(|e| e.key())
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries().map(|e| &**e)
    }

    /// The token of the stored state this snapshot is based on. Exactly that state, unless this
    /// handle's own acknowledged writes are applied on top of it (another process wrote in
    /// between, so the token could not move on): [`own_writes`](Self::own_writes) lists their
    /// tokens, and the next sync brings a token that covers them.
    pub fn version(&self) -> Version {
        self.state.version
    }

    /// The tokens of this handle's own writes applied on top of [`version`](Self::version)'s
    /// state (the latest write of each key), oldest first; empty when the snapshot is exactly
    /// that state.
    pub fn own_writes(&self) -> Vec<Version> {
        let mut tokens: Vec<Version> = self.state.pending.iter().map(|p| p.version).collect();
        tokens.sort_by_key(|v| (v.epoch() != self.state.version.epoch(), v.counter()));
        tokens.dedup();
        tokens
    }

    /// How long ago the store last confirmed this snapshot was current. Grows while the store is
    /// unreachable, or once a newer snapshot replaced this one.
    pub fn age(&self) -> Duration {
        self.state.age()
    }

    /// True while the snapshot comes from the backup file and the store has not confirmed it.
    pub fn is_from_backup(&self) -> bool {
        self.state.from_backup
    }

    /// The total size of the stored (encoded) values, in bytes.
    pub fn encoded_bytes(&self) -> usize {
        self.state.map.bytes()
    }
}

impl<V> fmt::Debug for Snapshot<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.state.version)
            .field("len", &self.len())
            .field("age", &self.age())
            .field("from_backup", &self.state.from_backup)
            .finish()
    }
}

/// How fresh a snapshot returned by [`Dict::sync_or_stale`](crate::Dict::sync_or_stale) is.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Freshness {
    /// The store confirmed the snapshot during the call (or live push hints vouched for it, with
    /// [`Options::with_trust_hints_for`](crate::Options::with_trust_hints_for)).
    Fresh,
    /// The check failed: the snapshot is the last good one. Checks have been failing since
    /// `since`; `error` is why this one failed.
    Stale {
        /// When checks started failing.
        since: std::time::SystemTime,
        /// Why the check failed.
        error: crate::Error,
    },
    /// The snapshot comes from the backup file: the store has not answered since the process
    /// started. `error` is why this call's check failed.
    FromBackup {
        /// Why the check failed.
        error: crate::Error,
    },
}

/// A snapshot with its [`Freshness`]: what [`Dict::sync_or_stale`](crate::Dict::sync_or_stale)
/// returns. Reads go through it like through a [`Snapshot`].
#[derive(Debug)]
pub struct Synced<V> {
    /// The snapshot: the fresh one, or the last good one.
    pub snapshot: Snapshot<V>,
    /// How fresh it is.
    pub freshness: Freshness,
}

impl<V> Synced<V> {
    /// True if the store confirmed the snapshot during the call.
    pub fn is_fresh(&self) -> bool {
        matches!(self.freshness, Freshness::Fresh)
    }

    /// True if the snapshot is fresh or was last confirmed by the store at most `max_staleness`
    /// ago: the test of a "serve stale data for at most N seconds, then fail" policy. A snapshot
    /// from the backup file counts from its own last confirmation.
    pub fn is_within(&self, max_staleness: Duration) -> bool {
        self.is_fresh() || self.snapshot.age() <= max_staleness
    }
}

impl<V> std::ops::Deref for Synced<V> {
    type Target = Snapshot<V>;

    fn deref(&self) -> &Snapshot<V> {
        &self.snapshot
    }
}
