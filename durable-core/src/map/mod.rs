//! The snapshot's map: a flat hash table of every entry as of the last merge (the base) under a
//! small persistent overlay of the changes since (a radix tree of copy-on-write leaves, see
//! [`tree`]).
//!
//! A snapshot is one base and one overlay. A lookup hashes the key once, asks the overlay (no
//! work while it is empty, a few cache lines it keeps warm otherwise), then probes the base: one
//! table, read as a `HashMap` is. Publishing the next snapshot after a change of k keys copies,
//! for each key, its path in the overlay (and probes the base once for the entry it replaces),
//! so a delta costs O(k log m) for an overlay of m entries, independent of the base's size; a
//! reader holding the old snapshot keeps seeing exactly the old state.
//!
//! Once the overlay holds a sixteenth of the base's entries, the handle merges it on a blocking
//! thread: a copy of the base's table with the overlay applied becomes the new base, and the
//! changes published meanwhile are replayed onto it ([`Map::merged`], [`Map::caught_up`]). That
//! is O(n) once per n/16 changed keys, about sixteen entries' work per change, off the sync
//! path. Should merges fall behind, a change merges in place once the overlay is four times
//! that size. A map that holds its base alone with an empty overlay (after a merge or a load,
//! until it is next cloned) changes the base in place, and a delta of more keys than a merge
//! waits for merges first to get there ([`Map::expect_changes`]).
//!
//! Each entry is one shared allocation (key, value, revision: 64 bytes for a `Vec<u8>` value);
//! tables hold pointers to them. An entry's encoded size (two bytes) and expiry, which only the
//! map needs, sit in arrays beside its table, by bucket (see [`leaf`]).

mod leaf;
mod tree;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::RandomState;

use leaf::Leaf;
pub(crate) use leaf::{Entry, Key, Slot};
use tree::Tree;

use crate::shared::Shared;
use crate::types::StoreTime;

#[derive(Debug)]
pub(crate) struct Map<V> {
    hasher: RandomState,
    /// Every entry as of the last merge.
    base: Arc<Leaf<V>>,
    /// The entries written since the last merge: new keys and replacements of base entries.
    changed: Tree<V>,
    /// The base entries removed since the last merge (their keys no longer answer). A key is
    /// never in both `changed` and `removed`.
    removed: Tree<V>,
    /// A bit per hash of the keys in `changed` and `removed` (about eight bits per key; empty
    /// while the overlay is): a lookup whose bit is clear skips the overlay's trees. Every map
    /// of one lineage shares it until the next merge or growth, and bits are only ever set, so
    /// a change sets its bit in place instead of copying the filter. An earlier map that reads
    /// a later map's bit probes its trees for nothing (a false positive), and never misses a
    /// key of its own: its bits were set before it was published.
    filter: Arc<[AtomicU64]>,
    len: usize,
    bytes: usize,
    /// How many entries have an expiry.
    expiring: usize,
    /// No entry expires before this (a lower bound: removals do not raise it).
    earliest_expiry: Option<StoreTime>,
}

impl<V> Clone for Map<V> {
    fn clone(&self) -> Self {
        Map {
            hasher: self.hasher.clone(),
            base: self.base.clone(),
            changed: self.changed.clone(),
            removed: self.removed.clone(),
            filter: self.filter.clone(),
            len: self.len,
            bytes: self.bytes,
            expiring: self.expiring,
            earliest_expiry: self.earliest_expiry,
        }
    }
}

/// The overlay is merged into the base once it holds more than 1/`MERGE_SHARE` of the base's
/// entries...
const MERGE_SHARE: usize = 16;
/// ...or more than this many, whichever is larger (a small map merges every few dozen changes,
/// each merge a copy of a small table).
const MERGE_MIN: usize = 64;
/// A change merges on the writer's path once the overlay holds this many times the size at
/// which a merge is due.
const BACKSTOP: usize = 4;

/// The overlay size above which a merge is due, for a base of `base` entries.
fn merge_at(base: usize) -> usize {
    MERGE_MIN.max(base / MERGE_SHARE)
}

/// Filter bits per overlay key: a lookup of a key the overlay lacks probes its trees about one
/// time in nine.
const FILTER_BITS_PER_KEY: usize = 8;
/// The filter grows once the overlay holds more keys than this many bits each (a lookup of a
/// key the overlay lacks then probes its trees about one time in five).
const FILTER_MIN_BITS_PER_KEY: usize = 4;
/// The first filter is made for this many keys.
const FILTER_SMALL: usize = 1024;
/// The smallest filter, in 64-bit words.
const FILTER_MIN_WORDS: usize = 16;

/// The filter's bit for `hash` (bits the base table and the tree index use least).
#[inline]
fn filter_bit(words: usize, hash: u64) -> (usize, u64) {
    let bit = (hash >> 7) as usize & (words * 64 - 1);
    (bit / 64, 1 << (bit % 64))
}

#[inline]
fn filter_has(filter: &[AtomicU64], hash: u64) -> bool {
    if filter.is_empty() {
        return false;
    }
    let (word, mask) = filter_bit(filter.len(), hash);
    // Relaxed: a map's own bits were set before the map was published, and publishing (or
    // handing the map to another thread) orders them before this read.
    filter[word].load(Ordering::Relaxed) & mask != 0
}

fn filter_set(filter: &[AtomicU64], hash: u64) {
    let (word, mask) = filter_bit(filter.len(), hash);
    filter[word].fetch_or(mask, Ordering::Relaxed);
}

/// Where a key's current entry is.
enum Found<'a, V> {
    /// In the overlay.
    Changed(Slot<'a, V>),
    /// Removed since the last merge.
    Removed,
    /// In the base, if anywhere.
    Base,
}

impl<V> Map<V> {
    pub(crate) fn new() -> Self {
        Self::from_entries(Vec::new())
    }

    /// A map of `entries` (a later entry of a key replaces an earlier one).
    pub(crate) fn from_entries(entries: Vec<Entry<V>>) -> Self {
        let hasher = RandomState::default();
        let mut base = Leaf::with_capacity(entries.len());
        let overlay = merge_at(entries.len());
        let mut map = Map {
            changed: Tree::with_capacity(&hasher, overlay),
            removed: Tree::with_capacity(&hasher, overlay),
            hasher,
            base: Arc::default(),
            filter: Arc::new([]),
            len: 0,
            bytes: 0,
            expiring: 0,
            earliest_expiry: None,
        };
        for entry in entries {
            let hash = map.hasher.hash_one(entry.key());
            map.added(entry.size(), entry.expires_at());
            match base.insert(&map.hasher, hash, entry) {
                Some(old) => map.removed(&old),
                None => map.len += 1,
            }
        }
        map.base = Arc::new(base);
        map
    }

    /// Accounts for an entry coming in (sizes and expiry; the caller counts `len`).
    fn added(&mut self, size: usize, expires_at: Option<StoreTime>) {
        self.bytes += size;
        if let Some(at) = expires_at {
            self.expiring += 1;
            self.earliest_expiry = Some(self.earliest_expiry.map_or(at, |e| e.min(at)));
        }
    }

    /// Accounts for an entry going out.
    fn removed(&mut self, entry: &Entry<V>) {
        self.bytes -= entry.size();
        if entry.expires_at().is_some() {
            self.expiring -= 1;
            if self.expiring == 0 {
                self.earliest_expiry = None;
            }
        }
    }

    /// The number of entries, expired or not.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// How many entries have an expiry.
    pub(crate) fn expiring(&self) -> usize {
        self.expiring
    }

    /// True if some entry may have expired at `now`.
    pub(crate) fn may_have_expired(&self, now: StoreTime) -> bool {
        self.earliest_expiry.is_some_and(|at| at <= now)
    }

    /// Sets the earliest expiry exactly (a scan of every entry).
    pub(crate) fn recompute_earliest_expiry(&mut self) {
        self.earliest_expiry = self.iter().filter_map(Slot::expires_at).min();
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// What the overlay says of `key`, which hashes to `hash`.
    #[inline]
    fn overlay(&self, hash: u64, key: &str) -> Found<'_, V> {
        if filter_has(&self.filter, hash) {
            self.overlay_trees(hash, key)
        } else {
            Found::Base
        }
    }

    /// What the overlay's trees say of `key` (whose filter bit is set).
    fn overlay_trees(&self, hash: u64, key: &str) -> Found<'_, V> {
        if let Some(slot) = self.changed.get(hash, key) {
            return Found::Changed(slot);
        }
        if self.removed.get(hash, key).is_some() {
            return Found::Removed;
        }
        Found::Base
    }

    /// Sets `hash`'s bit in the filter, first making it larger if the overlay has outgrown it.
    /// It is first made for [`FILTER_SMALL`] keys (a few cache lines), then for the overlay at
    /// which a merge is due, so that it grows again only if merges fall far behind, past
    /// [`FILTER_MIN_BITS_PER_KEY`] (growing hashes every key of the overlay, inside some sync).
    fn mark(&mut self, hash: u64) {
        if self.filter.len() * 64 < self.overlay_len() * FILTER_MIN_BITS_PER_KEY {
            let keys = match self.overlay_len() {
                small @ ..=FILTER_SMALL => small.max(FILTER_SMALL),
                large => large.max(self.merge_at()),
            };
            let words = (keys * FILTER_BITS_PER_KEY / 64).next_power_of_two();
            let filter: Arc<[AtomicU64]> = (0..words.max(FILTER_MIN_WORDS))
                .map(|_| AtomicU64::new(0))
                .collect();
            let keys = self.changed.iter().chain(self.removed.iter());
            for slot in keys {
                filter_set(&filter, self.hasher.hash_one(slot.key()));
            }
            self.filter = filter;
        }
        filter_set(&self.filter, hash);
    }

    /// The entry of `key` if it is live at `now`: the read path, inlined into the caller as
    /// `HashMap::get` is (with `#[inline]` alone, the compiler kept it out of line where `get`
    /// has a few callers). A key whose filter bit is set may be in the overlay, which is looked
    /// at out of line.
    #[inline(always)]
    pub(crate) fn get_live(&self, key: &str, now: StoreTime) -> Option<&Shared<V>> {
        let hash = self.hasher.hash_one(key);
        if filter_has(&self.filter, hash) {
            return self.get_live_slow(hash, key, now);
        }
        self.base.get_live(hash, key, now)
    }

    /// [`Map::get_live`] for a key that may be in the overlay (its filter bit is set).
    #[inline(never)]
    fn get_live_slow(&self, hash: u64, key: &str, now: StoreTime) -> Option<&Shared<V>> {
        match self.overlay_trees(hash, key) {
            Found::Changed(slot) => slot.is_live(now).then_some(slot.shared()),
            Found::Removed => None,
            Found::Base => self.base.get_live(hash, key, now),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Slot<'_, V>> {
        let hash = self.hasher.hash_one(key);
        match self.overlay(hash, key) {
            Found::Changed(slot) => Some(slot),
            Found::Removed => None,
            Found::Base => self.base.get(hash, key),
        }
    }

    /// Inserts or replaces an entry, returning the replaced one. Copies only the entry's path in
    /// the overlay.
    pub(crate) fn upsert(&mut self, entry: Entry<V>) -> Option<Entry<V>> {
        let key = entry.key().clone();
        let hash = self.hasher.hash_one(&key);
        self.added(entry.size(), entry.expires_at());
        let old = if let Some((base, hasher)) = self.base_alone() {
            base.insert(hasher, hash, entry)
        } else {
            let old = match self.changed.upsert(&self.hasher, hash, entry) {
                Some(old) => Some(old),
                // The key's first change since the merge: it replaces the base's entry, unless
                // that was removed.
                None if !self.removed.is_empty() && self.removed.remove(hash, &key).is_some() => {
                    None
                }
                None => self.base.get(hash, &key).map(Slot::to_entry),
            };
            self.mark(hash);
            old
        };
        match &old {
            Some(old) => self.removed(old),
            None => self.len += 1,
        }
        self.backstop_merge();
        old
    }

    /// Removes an entry, returning it. Changes nothing if the key is absent.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Entry<V>> {
        let hash = self.hasher.hash_one(key);
        let old = if let Some((base, _)) = self.base_alone() {
            base.remove(base.find(hash, key)?)
        } else {
            let changed = self.changed.remove(hash, key);
            if changed.is_none()
                && !self.removed.is_empty()
                && self.removed.get(hash, key).is_some()
            {
                return None;
            }
            // The base's entry, if any, is live (not in `removed`): hide it.
            let base = self.base.get(hash, key).map(Slot::to_entry);
            let old = changed.or_else(|| base.clone())?;
            if let Some(base) = base {
                self.removed.upsert(&self.hasher, hash, base);
                self.mark(hash);
            }
            old
        };
        self.len -= 1;
        self.removed(&old);
        self.backstop_merge();
        Some(old)
    }

    /// The base, to change in place, if the overlay is empty and no other map shares the base
    /// (after a merge or a load, until the map is next cloned): nothing else can see it. With
    /// the hasher, which inserting needs.
    fn base_alone(&mut self) -> Option<(&mut Leaf<V>, &RandomState)> {
        if self.overlay_len() > 0 {
            return None;
        }
        Arc::get_mut(&mut self.base).map(|base| (base, &self.hasher))
    }

    /// Readies the map for `count` changes in a row (a large delta, a clear): if they alone
    /// would make a merge due, merges now, so that they change a base this map holds alone, in
    /// place. That costs O(n + count), where an overlay of that many keys would cost more per
    /// key and be merged again in the background.
    pub(crate) fn expect_changes(&mut self, count: usize) {
        if count > self.merge_at() && self.base_alone().is_none() {
            self.merge();
        }
    }

    fn overlay_len(&self) -> usize {
        self.changed.len() + self.removed.len()
    }

    /// The overlay size above which a merge is due.
    fn merge_at(&self) -> usize {
        merge_at(self.base.len())
    }

    /// True once the overlay is large enough to fold into the base (see [`Map::merged`]).
    pub(crate) fn merge_due(&self) -> bool {
        self.overlay_len() > self.merge_at()
    }

    /// Merges here, on the writer's path, only if the overlay has grown to [`BACKSTOP`] times the
    /// size at which a merge is due: the handle merges in the background (see
    /// [`Map::merged`]), and this bounds the overlay when that falls behind or cannot run.
    fn backstop_merge(&mut self) {
        if self.overlay_len() > BACKSTOP * self.merge_at() {
            self.merge();
        }
    }

    /// True if no other map shares this one's base.
    pub(crate) fn holds_base_alone(&self) -> bool {
        Arc::strong_count(&self.base) == 1
    }

    /// The same entries with the overlay folded into a copy of the base: O(n), for a background
    /// thread. Bring the result up to a later map of the same lineage with
    /// [`Map::caught_up`].
    pub(crate) fn merged(&self) -> Map<V> {
        let mut merged = self.clone();
        merged.merge();
        merged
    }

    /// `merged` (the result of [`Map::merged`] on `from`, an earlier state of this map) with
    /// the changes made between `from` and `self` applied, so that it holds exactly `self`'s
    /// entries. Costs O(those changes), found by comparing the overlays' nodes. `None` if
    /// `self` no longer stands on `from`'s base (a full load replaced it).
    pub(crate) fn caught_up(&self, from: &Map<V>, mut merged: Map<V>) -> Option<Map<V>> {
        if !Arc::ptr_eq(&self.base, &from.base) {
            return None;
        }
        let mut keys = Vec::new();
        self.changed
            .touched_since(&from.changed, &self.hasher, &mut keys);
        self.removed
            .touched_since(&from.removed, &self.hasher, &mut keys);
        for key in keys {
            match (self.get(&key), merged.get(&key)) {
                (Some(now), Some(was)) if Shared::ptr_eq(now.shared(), was.shared()) => {}
                (Some(now), _) => {
                    merged.upsert(now.to_entry());
                }
                (None, Some(_)) => {
                    merged.remove(&key);
                }
                (None, None) => {}
            }
        }
        // The entries are now the same, so is their accounting (and `earliest_expiry`, a
        // bound, is `self`'s).
        merged.len = self.len;
        merged.bytes = self.bytes;
        merged.expiring = self.expiring;
        merged.earliest_expiry = self.earliest_expiry;
        Some(merged)
    }

    /// Makes a copy of the base with the overlay applied the new base, with an empty overlay.
    fn merge(&mut self) {
        let mut base = Leaf::clone(&self.base);
        for gone in self.removed.iter() {
            let hash = self.hasher.hash_one(gone.key());
            let bucket = base.find(hash, gone.key());
            base.remove(bucket.expect("a removed entry is in the base"));
        }
        for slot in self.changed.iter() {
            let hash = self.hasher.hash_one(slot.key());
            base.insert(&self.hasher, hash, slot.to_entry());
        }
        self.base = Arc::new(base);
        // Made for the overlay's size when the next merge is due: each is rebuilt once, when it
        // outgrows one leaf, not at every power of four (a rebuild copies every entry, inside
        // some sync).
        self.changed = Tree::with_capacity(&self.hasher, self.merge_at());
        self.removed = Tree::with_capacity(&self.hasher, self.merge_at());
        self.filter = Arc::new([]);
    }

    /// Every entry: the overlay's, then the base's that the overlay does not replace or remove.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Slot<'_, V>> {
        let overlaid = !(self.changed.is_empty() && self.removed.is_empty());
        self.changed
            .iter()
            .chain(self.base.slots().filter(move |slot| {
                !overlaid
                    || matches!(
                        self.overlay(self.hasher.hash_one(slot.key()), slot.key()),
                        Found::Base
                    )
            }))
    }
}

/// A test entry whose revision and size are its value.
#[cfg(test)]
fn entry(key: &str, value: u32) -> Entry<u32> {
    Entry::new(
        key.into(),
        value,
        crate::types::Revision(u64::from(value)),
        None,
        value as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Revision;

    #[test]
    fn upsert_remove_and_growth_keep_every_entry() {
        let mut map = Map::new();
        for i in 0..5000u32 {
            assert!(map.upsert(entry(&i.to_string(), i)).is_none());
        }
        assert_eq!(map.len(), 5000);
        assert_eq!(map.bytes(), (0..5000).sum::<usize>());
        // Merged as it grew: each key is in the base or (new since the last merge) the overlay.
        assert_eq!(map.base.len() + map.changed.len(), 5000);
        assert!(
            map.overlay_len() <= BACKSTOP * map.merge_at(),
            "merged as it grew"
        );
        for i in 0..5000u32 {
            assert_eq!(map.get(&i.to_string()).map(|e| **e.shared()), Some(i));
        }
        let before = map.clone();
        assert_eq!(map.upsert(entry("7", 70)).map(|e| **e.shared()), Some(7));
        assert_eq!(map.remove("8").map(|e| **e.shared()), Some(8));
        assert!(map.remove("8").is_none());
        assert_eq!(map.len(), 4999);
        assert_eq!(map.bytes(), (0..5000).sum::<usize>() - 7 + 70 - 8);
        // The earlier map is untouched (copy on write).
        assert_eq!(before.get("7").map(|e| **e.shared()), Some(7));
        assert_eq!(before.get("8").map(|e| **e.shared()), Some(8));
        assert_eq!(before.len(), 5000);
        assert_eq!(map.iter().count(), 4999);
        assert_eq!(before.iter().count(), 5000);
    }

    #[test]
    fn random_upserts_and_removes_match_a_hash_map() {
        use rand::{Rng, SeedableRng};
        let seed = rand::random::<u64>();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut map = Map::new();
        let mut model = std::collections::HashMap::new();
        let mut kept = Vec::new();
        for step in 0..40_000u32 {
            let key = rng.random_range(0..3_000u32).to_string();
            if rng.random_bool(0.3) {
                let removed = map.remove(&key).map(|e| **e.shared());
                assert_eq!(removed, model.remove(&key), "seed {seed}, step {step}");
            } else {
                let replaced = map.upsert(entry(&key, step)).map(|e| **e.shared());
                assert_eq!(replaced, model.insert(key.clone(), step), "seed {seed}");
            }
            assert_eq!(
                map.get(&key).map(|e| (**e.shared(), e.size())),
                model.get(&key).map(|&value| (value, value as usize))
            );
            if step % 5_000 == 0 {
                kept.push((map.clone(), model.clone()));
            }
        }
        kept.push((map, model));
        // Every earlier map still holds exactly its state (copy on write), each entry with its
        // own size (a copied leaf keeps every entry in its bucket).
        for (map, model) in kept {
            assert_eq!(map.len(), model.len(), "seed {seed}");
            assert_eq!(
                map.bytes(),
                model.values().map(|&v| v as usize).sum::<usize>()
            );
            let mut entries: Vec<(String, u32)> = map
                .iter()
                .map(|e| {
                    assert_eq!(e.size(), **e.shared() as usize, "seed {seed}");
                    (e.key().to_owned(), **e.shared())
                })
                .collect();
            entries.sort();
            let mut expected: Vec<(String, u32)> = model.into_iter().collect();
            expected.sort();
            assert_eq!(entries, expected, "seed {seed}");
        }
    }

    #[test]
    fn expiries_and_sizes_travel_with_their_entries() {
        let timed = |key: &str, value: u32, at: Option<u64>| {
            Entry::new(
                key.into(),
                value,
                Revision(1),
                at.map(StoreTime),
                value as usize,
            )
        };
        let mut map = Map::from_entries(
            (0..3000u32)
                .map(|i| timed(&i.to_string(), i, None))
                .collect(),
        );
        assert!(map.base.extra.is_empty(), "no expiry, no expiry array");
        // Held elsewhere, as a published snapshot's map is: changes go to the overlay.
        let loaded = map.clone();
        map.upsert(timed("7", 70, Some(0)));
        map.upsert(timed("new", 5, Some(u64::MAX - 1)));
        map.upsert(timed("8", 80, Some(100)));
        assert_eq!(map.expiring(), 3);
        fn slot<'a>(map: &'a Map<u32>, key: &str) -> Slot<'a, u32> {
            map.get(key).expect(key)
        }
        /// The value the read path finds for `key` at store time `now`.
        fn live(map: &Map<u32>, key: &str, now: u64) -> Option<u32> {
            map.get_live(key, StoreTime(now)).map(|e| **e)
        }
        assert_eq!(slot(&map, "7").expires_at(), Some(StoreTime(0)));
        assert!(!slot(&map, "7").is_live(StoreTime(0)));
        assert_eq!(
            slot(&map, "new").expires_at(),
            Some(StoreTime(u64::MAX - 1))
        );
        assert!(slot(&map, "new").is_live(StoreTime(u64::MAX - 2)));
        assert!(slot(&map, "8").is_live(StoreTime(99)) && !slot(&map, "8").is_live(StoreTime(100)));
        assert_eq!(slot(&map, "8").size(), 80);
        assert_eq!(slot(&map, "9").expires_at(), None);
        assert!(slot(&map, "9").is_live(StoreTime(u64::MAX)));
        // ... and so does the read path, in the overlay.
        assert_eq!(live(&map, "8", 99), Some(80));
        assert_eq!(live(&map, "8", 100), None);
        // Replacing drops the expiry; the old entry comes back with its own.
        let old = map.upsert(timed("8", 81, None)).expect("present");
        assert_eq!((old.expires_at(), old.size()), (Some(StoreTime(100)), 80));
        assert_eq!(
            (slot(&map, "8").expires_at(), slot(&map, "8").size()),
            (None, 81)
        );
        let removed = map.remove("7").expect("present");
        assert_eq!(removed.expires_at(), Some(StoreTime(0)));
        assert_eq!(map.expiring(), 1);
        let total: usize = (0..3000).sum::<usize>() - 7 - 8 + 81 + 5;
        assert_eq!(map.bytes(), total);
        // Every entry keeps its expiry and size through a merge and a copy out.
        assert_eq!(map.changed.len() + map.removed.len(), 3);
        map.merge();
        assert!(!map.base.extra.is_empty());
        // The read path hides an entry of the base once it expires, and finds the others.
        assert_eq!(live(&map, "new", u64::MAX - 2), Some(5));
        assert_eq!(live(&map, "new", u64::MAX - 1), None);
        assert_eq!(live(&map, "9", u64::MAX), Some(9));
        assert_eq!(map.bytes(), total);
        assert_eq!(
            slot(&map, "new").expires_at(),
            Some(StoreTime(u64::MAX - 1))
        );
        assert_eq!(slot(&map, "new").to_entry().size(), 5);
        assert_eq!(map.iter().filter_map(Slot::expires_at).count(), 1);
        // The merged base is this map's alone: a change goes into it in place, with its expiry
        // and size, and the earlier map still holds its own entry.
        map.upsert(timed("9", 90, Some(50)));
        assert_eq!(map.overlay_len(), 0);
        assert_eq!(
            (slot(&map, "9").expires_at(), slot(&map, "9").size()),
            (Some(StoreTime(50)), 90)
        );
        assert_eq!(map.expiring(), 2);
        assert_eq!(
            map.remove("9").map(|e| e.expires_at()),
            Some(Some(StoreTime(50)))
        );
        assert_eq!(map.expiring(), 1);
        assert_eq!(slot(&loaded, "9").expires_at(), None);
        assert_eq!(**slot(&loaded, "9").shared(), 9);
    }

    #[test]
    fn a_change_sets_its_filter_bit_in_place_and_earlier_maps_still_miss_the_key() {
        let mut map = Map::from_entries((0..3000u32).map(|i| entry(&i.to_string(), i)).collect());
        let _loaded = map.clone();
        // 300 keys in the overlay, then 100 more: a filter of 64 words either way.
        for i in 0..300u32 {
            map.upsert(entry(&format!("early-{i}"), i));
        }
        let earlier = map.clone();
        for i in 0..50u32 {
            map.upsert(entry(&format!("late-{i}"), i));
            map.remove(&i.to_string());
        }
        assert!(
            Arc::ptr_eq(&map.filter, &earlier.filter),
            "a change within the filter's size shares it"
        );
        for i in 0..50u32 {
            assert!(earlier.get(&format!("late-{i}")).is_none());
            assert_eq!(earlier.get(&i.to_string()).map(|e| **e.shared()), Some(i));
            assert!(map.get(&i.to_string()).is_none());
        }
        for i in 0..300u32 {
            assert_eq!(
                earlier.get(&format!("early-{i}")).map(|e| **e.shared()),
                Some(i)
            );
        }
        assert_eq!(earlier.iter().count(), 3300);
        assert_eq!(map.iter().count(), 3300);
    }

    /// Every entry as (key, value, size), sorted.
    fn contents(map: &Map<u32>) -> Vec<(String, u32, usize)> {
        let mut entries: Vec<_> = map
            .iter()
            .map(|e| (e.key().to_owned(), **e.shared(), e.size()))
            .collect();
        entries.sort();
        entries
    }

    #[test]
    fn a_merge_caught_up_holds_exactly_the_later_entries() {
        use rand::{Rng, SeedableRng};
        let seed = rand::random::<u64>();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut step = 0u32;
        // Changes, removals and new keys, over keys of the base and beyond it.
        let mut change = |map: &mut Map<u32>| {
            step += 1;
            let key = rng.random_range(0..50_000u32).to_string();
            if rng.random_bool(0.3) {
                map.remove(&key);
            } else {
                map.upsert(entry(&key, step));
            }
        };
        let base = (0..40_000u32).map(|i| entry(&i.to_string(), i)).collect();
        let mut map = Map::from_entries(base);
        // 300 changes after the merge began leave the overlay's tree in shape; 1,500 grow it
        // past one leaf, so it is rebuilt and every key of both trees is replayed.
        for later in [300, 1_500] {
            (0..200).for_each(|_| change(&mut map));
            // Keys only the overlay holds, removed after the merge began: the merged base has
            // them, the later map does not.
            for i in 0..50 {
                map.upsert(entry(&format!("new-{later}-{i}"), i));
            }
            let from = map.clone();
            let before = contents(&from);
            let merged = from.merged();
            assert_eq!(merged.overlay_len(), 0);
            assert_eq!(contents(&merged), before, "seed {seed}");
            (0..later).for_each(|_| change(&mut map));
            for i in 0..25 {
                assert!(map.remove(&format!("new-{later}-{i}")).is_some());
            }
            let caught = map.caught_up(&from, merged).expect("the same base");
            assert_eq!(contents(&caught), contents(&map), "seed {seed}");
            assert_eq!(
                (caught.len(), caught.bytes()),
                (map.len(), map.bytes()),
                "seed {seed}"
            );
            assert!(
                caught.overlay_len() <= later + 25,
                "only the later changes are replayed"
            );
            assert_eq!(contents(&from), before, "the earlier map is untouched");
            map = caught;
        }
        // A map whose base a full load replaced is not caught up.
        let from = map.clone();
        let reloaded = Map::from_entries(map.iter().map(Slot::to_entry).collect());
        assert!(reloaded.caught_up(&from, from.merged()).is_none());
    }
}
