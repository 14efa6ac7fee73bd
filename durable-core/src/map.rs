//! The snapshot's map: a hash map split into copy-on-write shards.
//!
//! Publishing a new snapshot after a change of k keys clones the outer shard list (one pointer
//! per shard) and the k touched shards, never the whole map: with about sqrt(n) shards of about
//! sqrt(n) entries each, a one-key change to a 1M-entry map copies ~1k pointers and one ~1k-entry
//! shard instead of a million entries. A lookup hashes the key once; the shard index comes from
//! bits of the hash that the shard's own table does not use, so it costs one extra pointer hop
//! over a plain `HashMap`.

use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::types::{Revision, StoreTime};

/// One entry of a snapshot.
#[derive(Debug)]
pub(crate) struct Entry<V> {
    pub(crate) key: Arc<str>,
    pub(crate) value: Arc<V>,
    pub(crate) revision: Revision,
    /// When the entry expires, on the store's clock.
    pub(crate) expires_at: Option<StoreTime>,
    /// The encoded size in bytes, for statistics.
    pub(crate) size: usize,
}

impl<V> Entry<V> {
    /// True unless the entry has expired at `now`.
    #[inline]
    pub(crate) fn is_live(&self, now: StoreTime) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

impl<V> Clone for Entry<V> {
    fn clone(&self) -> Self {
        Entry {
            key: self.key.clone(),
            value: self.value.clone(),
            revision: self.revision,
            expires_at: self.expires_at,
            size: self.size,
        }
    }
}

type Shard<V> = Arc<HashTable<Entry<V>>>;

#[derive(Debug)]
pub(crate) struct Map<V> {
    hasher: RandomState,
    shards: Vec<Shard<V>>,
    mask: usize,
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
            shards: self.shards.clone(),
            mask: self.mask,
            len: self.len,
            bytes: self.bytes,
            expiring: self.expiring,
            earliest_expiry: self.earliest_expiry,
        }
    }
}

/// log2 of the shard count for `len` entries: about sqrt(len) shards.
fn shard_bits(len: usize) -> u32 {
    ((usize::BITS - len.leading_zeros()) / 2).min(16)
}

/// The shard of a hash: bits 32.. are left alone by hashbrown, which uses the lowest bits for the
/// bucket and the highest seven for its control bytes.
fn shard_of(hash: u64, mask: usize) -> usize {
    (hash >> 32) as usize & mask
}

impl<V> Map<V> {
    pub(crate) fn new() -> Self {
        Self::from_entries(Vec::new())
    }

    pub(crate) fn from_entries(entries: Vec<Entry<V>>) -> Self {
        Self::build(RandomState::default(), entries)
    }

    fn build(hasher: RandomState, entries: Vec<Entry<V>>) -> Self {
        let bits = shard_bits(entries.len());
        let count = 1usize << bits;
        let mut tables: Vec<HashTable<Entry<V>>> = (0..count)
            .map(|_| HashTable::with_capacity(entries.len() / count + 1))
            .collect();
        let mut map = Map {
            hasher,
            shards: Vec::new(),
            mask: count - 1,
            len: 0,
            bytes: 0,
            expiring: 0,
            earliest_expiry: None,
        };
        for entry in entries {
            let hash = map.hasher.hash_one(&*entry.key);
            let table = &mut tables[shard_of(hash, map.mask)];
            map.added(&entry);
            let hasher = &map.hasher;
            match table.entry(hash, |e| e.key == entry.key, |e| hasher.hash_one(&*e.key)) {
                hashbrown::hash_table::Entry::Occupied(mut o) => {
                    let old = std::mem::replace(o.get_mut(), entry);
                    map.removed(&old);
                }
                hashbrown::hash_table::Entry::Vacant(v) => {
                    map.len += 1;
                    v.insert(entry);
                }
            }
        }
        map.shards = tables.into_iter().map(Arc::new).collect();
        map
    }

    /// Accounts for an entry coming in (sizes and expiry; the caller counts `len`).
    fn added(&mut self, entry: &Entry<V>) {
        self.bytes += entry.size;
        if let Some(at) = entry.expires_at {
            self.expiring += 1;
            self.earliest_expiry = Some(self.earliest_expiry.map_or(at, |e| e.min(at)));
        }
    }

    /// Accounts for an entry going out.
    fn removed(&mut self, entry: &Entry<V>) {
        self.bytes -= entry.size;
        if entry.expires_at.is_some() {
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
        self.earliest_expiry = self.iter().filter_map(|e| e.expires_at).min();
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<&Entry<V>> {
        let hash = self.hasher.hash_one(key);
        self.shards[shard_of(hash, self.mask)].find(hash, |e| &*e.key == key)
    }

    /// Inserts or replaces an entry, returning the replaced one. Copies only the entry's shard.
    pub(crate) fn upsert(&mut self, entry: Entry<V>) -> Option<Entry<V>> {
        let hash = self.hasher.hash_one(&*entry.key);
        self.added(&entry);
        let hasher = &self.hasher;
        let table = Arc::make_mut(&mut self.shards[shard_of(hash, self.mask)]);
        let old = match table.entry(hash, |e| e.key == entry.key, |e| hasher.hash_one(&*e.key)) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                Some(std::mem::replace(o.get_mut(), entry))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(entry);
                self.len += 1;
                None
            }
        };
        if let Some(old) = &old {
            self.removed(old);
        }
        if shard_bits(self.len) > self.mask.count_ones() + 1 {
            self.reshard();
        }
        old
    }

    /// Removes an entry, returning it. Copies its shard only if the key is present.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Entry<V>> {
        let hash = self.hasher.hash_one(key);
        let index = shard_of(hash, self.mask);
        self.shards[index].find(hash, |e| &*e.key == key)?;
        let table = Arc::make_mut(&mut self.shards[index]);
        let (old, _) = table.find_entry(hash, |e| &*e.key == key).ok()?.remove();
        self.len -= 1;
        self.removed(&old);
        Some(old)
    }

    /// Rebuilds with a shard count fitting the current size (amortised: it takes four times the
    /// entries to get here again).
    fn reshard(&mut self) {
        let entries = self.iter().cloned().collect();
        *self = Self::build(self.hasher.clone(), entries);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry<V>> + '_ {
        self.shards.iter().flat_map(|shard| shard.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: u32) -> Entry<u32> {
        Entry {
            key: key.into(),
            value: Arc::new(value),
            revision: Revision(u64::from(value)),
            expires_at: None,
            size: 4,
        }
    }

    #[test]
    fn upsert_remove_and_growth_keep_every_entry() {
        let mut map = Map::new();
        for i in 0..5000u32 {
            assert!(map.upsert(entry(&i.to_string(), i)).is_none());
        }
        assert_eq!(map.len(), 5000);
        assert_eq!(map.bytes(), 20_000);
        assert!(map.shards.len() > 16, "resharded as it grew");
        for i in 0..5000u32 {
            assert_eq!(map.get(&i.to_string()).map(|e| *e.value), Some(i));
        }
        let before = map.clone();
        assert_eq!(map.upsert(entry("7", 70)).map(|e| *e.value), Some(7));
        assert_eq!(map.remove("8").map(|e| *e.value), Some(8));
        assert!(map.remove("8").is_none());
        assert_eq!(map.len(), 4999);
        // The earlier map is untouched (copy on write).
        assert_eq!(before.get("7").map(|e| *e.value), Some(7));
        assert_eq!(before.get("8").map(|e| *e.value), Some(8));
        assert_eq!(before.len(), 5000);
        assert_eq!(map.iter().count(), 4999);
    }

    #[test]
    fn one_change_copies_one_shard() {
        let map = Map::from_entries((0..10_000u32).map(|i| entry(&i.to_string(), i)).collect());
        let mut next = map.clone();
        next.upsert(entry("42", 1));
        let copied = map
            .shards
            .iter()
            .zip(&next.shards)
            .filter(|(a, b)| !Arc::ptr_eq(a, b))
            .count();
        assert_eq!(copied, 1);
    }
}
