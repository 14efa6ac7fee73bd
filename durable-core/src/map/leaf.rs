//! A leaf: a hash table of pointers to shared entries, with each entry's encoded size and expiry
//! in arrays beside it, by bucket. A map's base is one leaf; its overlay's tree is made of them.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use smol_str::SmolStr;

use crate::shared::Shared;
use crate::types::{Revision, StoreTime};

/// A snapshot's key.
pub(crate) type Key = SmolStr;

/// One entry as it enters or leaves a map: the shared key, value and revision, with the expiry
/// and encoded size the map keeps beside the pointer (in its leaf, not in the shared allocation).
pub(crate) struct Entry<V> {
    shared: Shared<V>,
    /// The encoded size in bytes (saturated at `u32::MAX`), for statistics and limits.
    size: u32,
    /// When the entry expires, on the store's clock, plus one (0: never).
    expires: u64,
}

impl<V> Entry<V> {
    /// An entry: `size` is the value's encoded size.
    pub(crate) fn new(
        key: Key,
        value: V,
        revision: Revision,
        expires_at: Option<StoreTime>,
        size: usize,
    ) -> Self {
        Entry {
            shared: Shared::new(key, value, revision),
            size: u32::try_from(size).unwrap_or(u32::MAX),
            expires: expires_at.map_or(0, |at| at.0.saturating_add(1)),
        }
    }

    /// The shared key, value and revision.
    pub(crate) fn shared(&self) -> &Shared<V> {
        &self.shared
    }

    /// The key, shared.
    pub(crate) fn key(&self) -> &Key {
        self.shared.smol_key()
    }

    pub(crate) fn size(&self) -> usize {
        self.size as usize
    }

    /// When the entry expires, on the store's clock (`None`: never).
    pub(crate) fn expires_at(&self) -> Option<StoreTime> {
        expiry(self.expires)
    }
}

impl<V> Clone for Entry<V> {
    fn clone(&self) -> Self {
        Entry {
            shared: self.shared.clone(),
            size: self.size,
            expires: self.expires,
        }
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for Entry<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key())
            .field("value", &*self.shared)
            .field("revision", &self.shared.revision())
            .field("expires_at", &self.expires_at())
            .field("size", &self.size)
            .finish()
    }
}

/// The expiry stored as store time plus one (0: never).
pub(super) fn expiry(expires: u64) -> Option<StoreTime> {
    expires.checked_sub(1).map(StoreTime)
}

/// An entry in place in a map's leaf.
pub(crate) struct Slot<'a, V> {
    shared: &'a Shared<V>,
    leaf: &'a Leaf<V>,
    /// The entry's bucket in the leaf's table.
    bucket: usize,
}

impl<V> Clone for Slot<'_, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Slot<'_, V> {}

impl<'a, V> Slot<'a, V> {
    /// The shared key, value and revision.
    #[inline]
    pub(crate) fn shared(self) -> &'a Shared<V> {
        self.shared
    }

    pub(crate) fn key(self) -> &'a str {
        self.shared.key()
    }

    pub(crate) fn size(self) -> usize {
        self.leaf.size(self.bucket) as usize
    }

    #[inline]
    fn expires(self) -> u64 {
        self.leaf.expires(self.bucket)
    }

    /// When the entry expires, on the store's clock (`None`: never).
    pub(crate) fn expires_at(self) -> Option<StoreTime> {
        expiry(self.expires())
    }

    /// True unless the entry has expired at `now`.
    #[inline]
    pub(crate) fn is_live(self, now: StoreTime) -> bool {
        let expires = self.expires();
        expires == 0 || now.0 < expires - 1
    }

    /// The entry, copied out (one reference count).
    pub(crate) fn to_entry(self) -> Entry<V> {
        self.leaf.entry(self.bucket, self.shared.clone())
    }
}

/// What a leaf keeps of an entry beyond its size's two bytes, only in a leaf where some entry
/// expires or has 64 KiB or more.
#[derive(Clone, Copy, Default)]
pub(super) struct Extra {
    /// Store time of expiry plus one (0: never).
    expires: u64,
    /// The size, where the two bytes hold [`WIDE`].
    size: u32,
}

/// A size at or above this is kept in [`Extra`].
const WIDE: u16 = u16::MAX;

/// A leaf: the entries whose hashes share its index bits, in a hash table of pointers to them,
/// with each entry's size and expiry in arrays beside it, by bucket.
///
/// `repr(C)`: a lookup reads the table's header and `extra`'s length, so they come first.
#[repr(C)]
pub(super) struct Leaf<V> {
    pub(super) table: HashTable<Shared<V>>,
    /// Empty unless some entry of the leaf expires or has a wide size; then one per bucket.
    pub(super) extra: Box<[Extra]>,
    /// Each bucket's entry's encoded size, or [`WIDE`] (see `extra`).
    sizes: Box<[u16]>,
}

impl<V> Default for Leaf<V> {
    fn default() -> Self {
        Leaf::with_capacity(0)
    }
}

/// A copy keeps every entry in its bucket, so the arrays beside the table stay valid.
impl<V> Clone for Leaf<V> {
    fn clone(&self) -> Self {
        Leaf {
            table: self.table.clone(),
            sizes: self.sizes.clone(),
            extra: self.extra.clone(),
        }
    }
}

impl<V> std::fmt::Debug for Leaf<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("len", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl<V> Leaf<V> {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        let table = HashTable::with_capacity(capacity);
        Leaf {
            sizes: vec![0; table.num_buckets()].into(),
            table,
            extra: Box::default(),
        }
    }

    /// The bucket of `key`.
    #[inline]
    pub(super) fn find(&self, hash: u64, key: &str) -> Option<usize> {
        self.table.find_bucket_index(hash, |e| e.key() == key)
    }

    pub(super) fn slot(&self, bucket: usize) -> Option<Slot<'_, V>> {
        Some(Slot {
            shared: self.table.get_bucket(bucket)?,
            leaf: self,
            bucket,
        })
    }

    /// The entry of `key` (which hashes to `hash`).
    #[inline]
    pub(super) fn get(&self, hash: u64, key: &str) -> Option<Slot<'_, V>> {
        self.slot(self.find(hash, key)?)
    }

    /// The entry of `key` if it is live at `now`: the read path, which looks for the entry's
    /// bucket (for its expiry) only in a leaf with expiring entries.
    #[inline(always)]
    pub(super) fn get_live(&self, hash: u64, key: &str, now: StoreTime) -> Option<&Shared<V>> {
        if self.extra.is_empty() {
            return self.table.find(hash, |e| e.key() == key);
        }
        let slot = self.get(hash, key)?;
        slot.is_live(now).then_some(slot.shared)
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    fn size(&self, bucket: usize) -> u32 {
        match self.sizes[bucket] {
            WIDE => self.extra[bucket].size,
            size => u32::from(size),
        }
    }

    /// `shared` with the size and expiry recorded for `bucket` (which a removal leaves in place).
    fn entry(&self, bucket: usize, shared: Shared<V>) -> Entry<V> {
        Entry {
            shared,
            size: self.size(bucket),
            expires: self.expires(bucket),
        }
    }

    /// The expiry of `bucket`'s entry (store time plus one, 0: never).
    #[inline]
    fn expires(&self, bucket: usize) -> u64 {
        self.extra.get(bucket).map_or(0, |extra| extra.expires)
    }

    /// Records the size and expiry of `bucket`'s entry (writes only: a new entry's bucket is
    /// not read first).
    fn record(&mut self, bucket: usize, size: u32, expires: u64) {
        let small = u16::try_from(size).unwrap_or(WIDE);
        if (expires != 0 || small == WIDE) && self.extra.is_empty() {
            self.extra = vec![Extra::default(); self.sizes.len()].into();
        }
        self.sizes[bucket] = small;
        if let Some(extra) = self.extra.get_mut(bucket) {
            *extra = Extra { expires, size };
        }
    }

    /// Inserts or replaces `entry` (whose key hashes to `hash`); returns the replaced entry.
    pub(super) fn insert(
        &mut self,
        hasher: &RandomState,
        hash: u64,
        entry: Entry<V>,
    ) -> Option<Entry<V>> {
        let found = self.find(hash, entry.key());
        let Entry {
            shared,
            size,
            expires,
        } = entry;
        if let Some(bucket) = found {
            let slot = self.table.get_bucket_mut(bucket).expect("found");
            let replaced = std::mem::replace(slot, shared);
            let old = self.entry(bucket, replaced);
            self.record(bucket, size, expires);
            return Some(old);
        }
        if self.table.len() == self.table.capacity() {
            // Growing moves every entry to another bucket: rebuild the arrays with the table.
            self.regrow(hasher, self.table.len() + 1);
        }
        // With room left, the table inserts without moving anything.
        let bucket = self
            .table
            .insert_unique(hash, shared, |e| hasher.hash_one(e.key()))
            .bucket_index();
        self.record(bucket, size, expires);
        None
    }

    /// Rebuilds the leaf with room for `capacity` entries.
    fn regrow(&mut self, hasher: &RandomState, capacity: usize) {
        let entries: Vec<Entry<V>> = self.slots().map(Slot::to_entry).collect();
        *self = Leaf::with_capacity(capacity);
        for entry in entries {
            let hash = hasher.hash_one(entry.key());
            self.insert(hasher, hash, entry);
        }
    }

    pub(super) fn remove(&mut self, bucket: usize) -> Entry<V> {
        let Ok(found) = self.table.get_bucket_entry(bucket) else {
            unreachable!("bucket {bucket} was found occupied")
        };
        let (shared, _) = found.remove();
        self.entry(bucket, shared)
    }

    pub(super) fn slots(&self) -> impl Iterator<Item = Slot<'_, V>> {
        self.table
            .iter_buckets()
            .filter_map(|bucket| self.slot(bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_leaf_keeps_each_entrys_size_and_expiry() {
        // Sizes of 64 KiB and more, and expiries, live in the leaf's extra array, which appears
        // with the first of them; every growth of the table moves all entries to new buckets.
        let hasher = RandomState::default();
        let mut leaf = Leaf::with_capacity(0);
        let size = |i: u32| if i % 7 == 6 { 70_000 + i } else { i };
        let expires = |i: u32| if i % 5 == 4 { u64::from(i) + 1 } else { 0 };
        for i in 0..300u32 {
            let key = format!("k{i}");
            let at = expiry(expires(i));
            let e = Entry::new(key.as_str().into(), i, Revision(1), at, size(i) as usize);
            assert!(leaf.insert(&hasher, hasher.hash_one(&key), e).is_none());
            if i == 3 {
                assert!(leaf.extra.is_empty(), "no expiry or wide size yet");
            }
        }
        for i in (0..300u32).step_by(3) {
            let key = format!("k{i}");
            let removed = leaf.remove(leaf.find(hasher.hash_one(&key), &key).expect("present"));
            assert_eq!((removed.size, removed.expires), (size(i), expires(i)));
        }
        assert_eq!(leaf.table.len(), 200);
        for i in (0..300u32).filter(|i| i % 3 != 0) {
            let key = format!("k{i}");
            let slot = leaf.slot(leaf.find(hasher.hash_one(&key), &key).expect("present"));
            let slot = slot.expect("occupied");
            assert_eq!(**slot.shared(), i);
            assert_eq!(slot.size(), size(i) as usize, "k{i}");
            assert_eq!(slot.expires_at(), expiry(expires(i)), "k{i}");
        }
    }
}
