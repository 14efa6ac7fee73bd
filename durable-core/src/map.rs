//! The snapshot's map: a hash map split into small copy-on-write leaves (about 32 entries each)
//! under a radix tree of 32-way inner nodes, indexed by bits of the key's hash.
//!
//! A snapshot is one root; publishing the next after a change of k keys copies, for each touched
//! key, its path: one inner node per level (32 pointers; three levels at 1M entries, four at
//! 10M) and one leaf. Everything else is shared, so a delta costs O(k log n), never a copy of the
//! map, and a reader holding the old root keeps seeing exactly the old state. A lookup hashes the
//! key once and follows the path (the upper levels stay in cache). A map of fewer than 1,024
//! entries is one leaf: lookups skip the tree, and a change copies the whole (small) table.
//!
//! A leaf is a hash table of pointers to shared entries (key, value, revision: 64 bytes for a
//! `Vec<u8>` value). Each entry's encoded size (two bytes) and expiry, which only the map needs,
//! sit in arrays beside the table, by bucket; the expiries, and sizes of 64 KiB or more, only in
//! a leaf that has some. A lookup reads them only where the leaf has expiring entries.

use std::hash::BuildHasher;
use std::sync::Arc;

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
fn expiry(expires: u64) -> Option<StoreTime> {
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
struct Extra {
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
struct Leaf<V> {
    table: HashTable<Shared<V>>,
    /// Empty unless some entry of the leaf expires or has a wide size; then one per bucket.
    extra: Box<[Extra]>,
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
    fn with_capacity(capacity: usize) -> Self {
        let table = HashTable::with_capacity(capacity);
        Leaf {
            sizes: vec![0; table.num_buckets()].into(),
            table,
            extra: Box::default(),
        }
    }

    /// The bucket of `key`.
    #[inline]
    fn find(&self, hash: u64, key: &str) -> Option<usize> {
        self.table.find_bucket_index(hash, |e| e.key() == key)
    }

    fn slot(&self, bucket: usize) -> Option<Slot<'_, V>> {
        Some(Slot {
            shared: self.table.get_bucket(bucket)?,
            leaf: self,
            bucket,
        })
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
    fn insert(&mut self, hasher: &RandomState, hash: u64, entry: Entry<V>) -> Option<Entry<V>> {
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

    fn remove(&mut self, bucket: usize) -> Entry<V> {
        let Ok(found) = self.table.get_bucket_entry(bucket) else {
            unreachable!("bucket {bucket} was found occupied")
        };
        let (shared, _) = found.remove();
        self.entry(bucket, shared)
    }

    fn slots(&self) -> impl Iterator<Item = Slot<'_, V>> {
        self.table
            .iter_buckets()
            .filter_map(|bucket| self.slot(bucket))
    }
}

/// log2 of an inner node's fan-out.
const FANOUT_BITS: u32 = 5;
const FANOUT: usize = 1 << FANOUT_BITS;

/// A node of the radix tree over the index bits of the hash.
#[derive(Debug)]
enum Node<V> {
    Inner(Arc<[Node<V>; FANOUT]>),
    Leaf(Arc<Leaf<V>>),
}

impl<V> Clone for Node<V> {
    fn clone(&self) -> Self {
        match self {
            Node::Inner(children) => Node::Inner(children.clone()),
            Node::Leaf(leaf) => Node::Leaf(leaf.clone()),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Map<V> {
    hasher: RandomState,
    root: Node<V>,
    /// How far the root's digit of a leaf index is shifted (levels below the root times
    /// `FANOUT_BITS`).
    root_shift: u32,
    /// The number of leaves minus one (a mask over the index bits).
    leaf_mask: usize,
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
            root: self.root.clone(),
            root_shift: self.root_shift,
            leaf_mask: self.leaf_mask,
            len: self.len,
            bytes: self.bytes,
            expiring: self.expiring,
            earliest_expiry: self.earliest_expiry,
        }
    }
}

/// About this many entries per leaf: a one-key change copies a leaf, so leaves stay small.
const LEAF_BITS: u32 = 5;
/// The most index bits: bits 32..56 of the hash, below the seven that hashbrown keeps for its
/// control bytes (it takes the bucket from the lowest bits).
const MAX_INDEX_BITS: u32 = 24;

/// Below this many entries a map is one leaf, with no tree above it. A lookup then reads one
/// node fewer (at 1k keys it took 1.21-1.26x a foldhash `HashMap` instead of 1.30-1.46x), and a
/// change copies the whole table instead of a ~32-entry leaf (a sync after one change at 1k
/// keys: 13 us instead of 2.6 us, still far below a store's round trip).
const ONE_LEAF_BELOW: usize = 1 << (2 * LEAF_BITS);

/// log2 of the leaf count for `len` entries: one leaf below [`ONE_LEAF_BELOW`], then about
/// 2^LEAF_BITS entries per leaf.
fn index_bits(len: usize) -> u32 {
    if len < ONE_LEAF_BELOW {
        return 0;
    }
    (usize::BITS - len.leading_zeros())
        .saturating_sub(LEAF_BITS)
        .min(MAX_INDEX_BITS)
}

/// The leaf index of a hash (see `MAX_INDEX_BITS`).
#[inline]
fn leaf_of(hash: u64, mask: usize) -> usize {
    (hash >> 32) as usize & mask
}

/// The child of a node on the path to leaf `index`, at the level shifted by `shift`.
#[inline]
fn digit(index: usize, shift: u32) -> usize {
    (index >> shift) & (FANOUT - 1)
}

impl<V> Map<V> {
    pub(crate) fn new() -> Self {
        Self::from_entries(Vec::new())
    }

    pub(crate) fn from_entries(entries: Vec<Entry<V>>) -> Self {
        let hasher = RandomState::default();
        let bits = index_bits(entries.len());
        let count = 1usize << bits;
        // Each leaf's table sized for its own entries (counted first), not for the average: a
        // table takes the next power of two of buckets. The inserts hash each key again rather
        // than keep a list of hashes beside the entries.
        let mut sizes = vec![0usize; count];
        for entry in &entries {
            sizes[leaf_of(hasher.hash_one(entry.key()), count - 1)] += 1;
        }
        let mut leaves: Vec<Leaf<V>> = sizes.into_iter().map(Leaf::with_capacity).collect();
        let mut map = Map {
            hasher,
            root: Node::Leaf(Arc::default()),
            root_shift: bits.saturating_sub(1) / FANOUT_BITS * FANOUT_BITS,
            leaf_mask: count - 1,
            len: 0,
            bytes: 0,
            expiring: 0,
            earliest_expiry: None,
        };
        for entry in entries {
            let hash = map.hasher.hash_one(entry.key());
            map.added(entry.size(), entry.expires_at());
            match leaves[leaf_of(hash, map.leaf_mask)].insert(&map.hasher, hash, entry) {
                Some(old) => map.removed(&old),
                None => map.len += 1,
            }
        }
        // Group the leaves FANOUT at a time, level by level, up to one root (the root's unused
        // slots, when the index bits are not a multiple of FANOUT_BITS, hold empty leaves that
        // no index reaches).
        let mut level: Vec<Node<V>> = leaves
            .into_iter()
            .map(|l| Node::Leaf(Arc::new(l)))
            .collect();
        while level.len() > 1 {
            let mut nodes = level.into_iter();
            let mut parents = Vec::new();
            while nodes.len() > 0 {
                let children: [Node<V>; FANOUT] = std::array::from_fn(|_| {
                    nodes.next().unwrap_or_else(|| Node::Leaf(Arc::default()))
                });
                parents.push(Node::Inner(Arc::new(children)));
            }
            level = parents;
        }
        map.root = level.pop().unwrap_or_else(|| Node::Leaf(Arc::default()));
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

    #[inline]
    fn leaf(&self, hash: u64) -> &Leaf<V> {
        let index = leaf_of(hash, self.leaf_mask);
        let mut node = &self.root;
        let mut shift = self.root_shift;
        loop {
            match node {
                Node::Inner(children) => {
                    node = &children[digit(index, shift)];
                    shift = shift.wrapping_sub(FANOUT_BITS);
                }
                Node::Leaf(leaf) => return leaf,
            }
        }
    }

    /// The leaf of `hash`, copying every node on its path that another map shares.
    fn leaf_mut(&mut self, hash: u64) -> &mut Leaf<V> {
        let index = leaf_of(hash, self.leaf_mask);
        let mut node = &mut self.root;
        let mut shift = self.root_shift;
        loop {
            match node {
                Node::Inner(children) => {
                    if Arc::strong_count(children) > 1 {
                        warm(children.iter().map(|child| match child {
                            Node::Inner(inner) => Arc::strong_count(inner),
                            Node::Leaf(leaf) => Arc::strong_count(leaf),
                        }));
                    }
                    node = &mut Arc::make_mut(children)[digit(index, shift)];
                    shift = shift.wrapping_sub(FANOUT_BITS);
                }
                Node::Leaf(leaf) => {
                    if Arc::strong_count(leaf) > 1 {
                        warm(leaf.table.iter().map(|entry| entry.revision().0 as usize));
                    }
                    return Arc::make_mut(leaf);
                }
            }
        }
    }

    /// The entry of `key` if it is live at `now`: the read path, which looks for the entry's
    /// bucket only in a leaf with expiring entries.
    #[inline]
    pub(crate) fn get_live(&self, key: &str, now: StoreTime) -> Option<&Shared<V>> {
        let hash = self.hasher.hash_one(key);
        let leaf = self.leaf(hash);
        if leaf.extra.is_empty() {
            return leaf.table.find(hash, |e| e.key() == key);
        }
        let slot = leaf.slot(leaf.find(hash, key)?)?;
        slot.is_live(now).then_some(slot.shared)
    }

    pub(crate) fn get(&self, key: &str) -> Option<Slot<'_, V>> {
        let hash = self.hasher.hash_one(key);
        let leaf = self.leaf(hash);
        leaf.slot(leaf.find(hash, key)?)
    }

    /// Inserts or replaces an entry, returning the replaced one. Copies only the entry's path.
    pub(crate) fn upsert(&mut self, entry: Entry<V>) -> Option<Entry<V>> {
        let hash = self.hasher.hash_one(entry.key());
        self.added(entry.size(), entry.expires_at());
        let hasher = self.hasher.clone();
        let old = self.leaf_mut(hash).insert(&hasher, hash, entry);
        match &old {
            Some(old) => self.removed(old),
            None => self.len += 1,
        }
        if index_bits(self.len) > self.leaf_mask.count_ones() + 1 {
            self.rebuild();
        }
        old
    }

    /// Removes an entry, returning it. Copies its path only if the key is present.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Entry<V>> {
        let hash = self.hasher.hash_one(key);
        let bucket = self.leaf(hash).find(hash, key)?;
        let old = self.leaf_mut(hash).remove(bucket);
        self.len -= 1;
        self.removed(&old);
        Some(old)
    }

    /// Rebuilds with a leaf count fitting the current size (amortised: it takes four times the
    /// entries to get here again).
    fn rebuild(&mut self) {
        *self = Self::from_entries(self.iter().map(Slot::to_entry).collect());
    }

    pub(crate) fn iter(&self) -> Iter<'_, V> {
        Iter {
            stack: Vec::new(),
            leaf: None,
            next: Some(&self.root),
        }
    }
}

/// Every entry of a map, leaf by leaf (depth first).
pub(crate) struct Iter<'a, V> {
    /// The unvisited children of the inner nodes on the current path.
    stack: Vec<std::slice::Iter<'a, Node<V>>>,
    /// The current leaf and its unvisited buckets.
    leaf: Option<(
        &'a Leaf<V>,
        hashbrown::hash_table::IterBuckets<'a, Shared<V>>,
    )>,
    /// A node to descend into before taking from the stack.
    next: Option<&'a Node<V>>,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = Slot<'a, V>;

    fn next(&mut self) -> Option<Slot<'a, V>> {
        loop {
            if let Some((leaf, buckets)) = &mut self.leaf
                && let Some(bucket) = buckets.next()
            {
                return leaf.slot(bucket);
            }
            let node = match self.next.take() {
                Some(node) => node,
                None => loop {
                    let children = self.stack.last_mut()?;
                    match children.next() {
                        Some(node) => break node,
                        None => {
                            self.stack.pop();
                        }
                    }
                },
            };
            match node {
                Node::Inner(children) => self.stack.push(children.iter()),
                Node::Leaf(leaf) => self.leaf = Some((leaf, leaf.table.iter_buckets())),
            }
        }
    }
}

/// Reads every item before a copy takes a reference to each: plain loads of cold lines overlap,
/// where the copy's atomic increments would each wait for its line alone.
#[inline]
fn warm(items: impl Iterator<Item = usize>) {
    std::hint::black_box(items.fold(0usize, usize::wrapping_add));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Revision;

    /// An entry whose size is its value.
    fn entry(key: &str, value: u32) -> Entry<u32> {
        Entry::new(
            key.into(),
            value,
            Revision(u64::from(value)),
            None,
            value as usize,
        )
    }

    /// Every leaf and inner node, depth first.
    fn nodes<V>(node: &Node<V>, out: &mut Vec<*const ()>) {
        match node {
            Node::Inner(children) => {
                out.push(Arc::as_ptr(children).cast());
                children.iter().for_each(|child| nodes(child, out));
            }
            Node::Leaf(leaf) => out.push(Arc::as_ptr(leaf).cast()),
        }
    }

    fn all_nodes<V>(map: &Map<V>) -> Vec<*const ()> {
        let mut out = Vec::new();
        nodes(&map.root, &mut out);
        out
    }

    #[test]
    fn upsert_remove_and_growth_keep_every_entry() {
        let mut map = Map::new();
        for i in 0..5000u32 {
            assert!(map.upsert(entry(&i.to_string(), i)).is_none());
        }
        assert_eq!(map.len(), 5000);
        assert_eq!(map.bytes(), (0..5000).sum::<usize>());
        assert_eq!(map.leaf_mask, (1 << 8) - 1, "rebuilt as it grew");
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
    fn one_change_copies_one_path() {
        let map = Map::from_entries((0..100_000u32).map(|i| entry(&i.to_string(), i)).collect());
        // 100k entries: 2^12 leaves under three levels of inner nodes.
        assert_eq!(map.leaf_mask, (1 << 12) - 1);
        let before = all_nodes(&map);
        let mut next = map.clone();
        next.upsert(entry("42", 1));
        let after = all_nodes(&next);
        assert_eq!(before.len(), after.len());
        let copied = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(copied, 4, "three inner nodes and one leaf");
        // A second change in the same (now unshared) path copies nothing.
        next.upsert(entry("42", 2));
        assert_eq!(all_nodes(&next), after);
        assert_eq!(next.get("42").map(|e| **e.shared()), Some(2));
        assert_eq!(map.get("42").map(|e| **e.shared()), Some(42));
        assert_eq!(map.iter().count(), 100_000);
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
        fn with_expiries(node: &Node<u32>) -> usize {
            match node {
                Node::Inner(children) => children.iter().map(with_expiries).sum(),
                Node::Leaf(leaf) => usize::from(!leaf.extra.is_empty()),
            }
        }
        let leaves_with_expiries = |map: &Map<u32>| with_expiries(&map.root);
        assert_eq!(leaves_with_expiries(&map), 0, "no expiry, no expiry array");
        map.upsert(timed("7", 70, Some(0)));
        map.upsert(timed("new", 5, Some(u64::MAX - 1)));
        map.upsert(timed("8", 80, Some(100)));
        assert_eq!(leaves_with_expiries(&map), 3);
        assert_eq!(map.expiring(), 3);
        fn slot<'a>(map: &'a Map<u32>, key: &str) -> Slot<'a, u32> {
            map.get(key).expect(key)
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
        // Every entry keeps its expiry and size through a rebuild and a copy out.
        map.rebuild();
        assert_eq!(map.bytes(), total);
        assert_eq!(
            slot(&map, "new").expires_at(),
            Some(StoreTime(u64::MAX - 1))
        );
        assert_eq!(slot(&map, "new").to_entry().size(), 5);
        assert_eq!(map.iter().filter_map(Slot::expires_at).count(), 1);
    }

    #[test]
    fn index_bits_keep_leaves_small() {
        assert_eq!(index_bits(0), 0);
        assert_eq!(index_bits(31), 0);
        assert_eq!(index_bits(1 << 20), 16);
        assert_eq!(index_bits(usize::MAX), MAX_INDEX_BITS);
    }
}
