//! The snapshot's map: a hash map split into small copy-on-write leaves (hash tables of about
//! 32 entries) under a radix tree of 32-way inner nodes, indexed by bits of the key's hash that
//! the leaves' own tables do not use.
//!
//! A snapshot is one root; publishing the next after a change of k keys copies, for each touched
//! key, its path: one inner node per level (32 pointers; three levels at 1M entries, four at
//! 10M) and one leaf. Everything else is shared, so a delta costs O(k log n), never a copy of the
//! map, and a reader holding the old root keeps seeing exactly the old state. A lookup hashes the
//! key once and follows the path (the upper levels stay in cache). A map of fewer than 1,024
//! entries is one leaf: lookups skip the tree, and a change copies the whole (small) table.

use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use smol_str::SmolStr;

use crate::shared::Shared;
use crate::types::StoreTime;

/// A snapshot's key.
pub(crate) type Key = SmolStr;

/// One entry of a snapshot: a leaf slot is one pointer to it.
pub(crate) type Entry<V> = Shared<V>;

/// A leaf: the entries whose hashes share its index bits.
type Leaf<V> = Arc<HashTable<Entry<V>>>;

/// log2 of an inner node's fan-out.
const FANOUT_BITS: u32 = 5;
const FANOUT: usize = 1 << FANOUT_BITS;

/// A node of the radix tree over the index bits of the hash.
#[derive(Debug)]
enum Node<V> {
    Inner(Arc<[Node<V>; FANOUT]>),
    Leaf(Leaf<V>),
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
        Self::build(RandomState::default(), entries)
    }

    fn build(hasher: RandomState, entries: Vec<Entry<V>>) -> Self {
        let bits = index_bits(entries.len());
        let count = 1usize << bits;
        // Each leaf's table sized for its own entries (counted first), not for the average: a
        // table takes the next power of two of buckets, so a leaf a little above the average
        // would otherwise grow to twice the buckets, and one below it keep room it never uses.
        // Each key is hashed once: the hashes serve the count and the inserts.
        let hashes: Vec<u64> = entries
            .iter()
            .map(|entry| hasher.hash_one(entry.key()))
            .collect();
        let mut sizes = vec![0usize; count];
        for &hash in &hashes {
            sizes[leaf_of(hash, count - 1)] += 1;
        }
        let mut leaves: Vec<HashTable<Entry<V>>> =
            sizes.into_iter().map(HashTable::with_capacity).collect();
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
        for (entry, hash) in entries.into_iter().zip(hashes) {
            map.added(entry.size(), entry.expires_at());
            let leaf = &mut leaves[leaf_of(hash, map.leaf_mask)];
            if let Some(old) = insert(&map.hasher, leaf, hash, entry, &mut map.len) {
                map.removed(&old);
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
        self.earliest_expiry = self.iter().filter_map(Shared::expires_at).min();
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    #[inline]
    fn leaf(&self, hash: u64) -> &HashTable<Entry<V>> {
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
    fn leaf_mut(&mut self, hash: u64) -> &mut HashTable<Entry<V>> {
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
                        warm(leaf.iter().map(|entry| entry.revision().0 as usize));
                    }
                    return Arc::make_mut(leaf);
                }
            }
        }
    }

    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<&Entry<V>> {
        let hash = self.hasher.hash_one(key);
        self.leaf(hash).find(hash, |e| e.key() == key)
    }

    /// Inserts or replaces an entry, returning the replaced one. Copies only the entry's path.
    pub(crate) fn upsert(&mut self, entry: Entry<V>) -> Option<Entry<V>> {
        let hash = self.hasher.hash_one(entry.key());
        self.added(entry.size(), entry.expires_at());
        let hasher = self.hasher.clone();
        let mut len = self.len;
        let old = insert(&hasher, self.leaf_mut(hash), hash, entry, &mut len);
        self.len = len;
        if let Some(old) = &old {
            self.removed(old);
        }
        if index_bits(self.len) > self.leaf_mask.count_ones() + 1 {
            self.rebuild();
        }
        old
    }

    /// Removes an entry, returning it. Copies its path only if the key is present.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Entry<V>> {
        let hash = self.hasher.hash_one(key);
        self.leaf(hash).find(hash, |e| e.key() == key)?;
        let (old, _) = self
            .leaf_mut(hash)
            .find_entry(hash, |e| e.key() == key)
            .ok()?
            .remove();
        self.len -= 1;
        self.removed(&old);
        Some(old)
    }

    /// Rebuilds with a leaf count fitting the current size (amortised: it takes four times the
    /// entries to get here again).
    fn rebuild(&mut self) {
        let entries = self.iter().cloned().collect();
        *self = Self::build(self.hasher.clone(), entries);
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
    leaf: Option<hashbrown::hash_table::Iter<'a, Entry<V>>>,
    /// A node to descend into before taking from the stack.
    next: Option<&'a Node<V>>,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = &'a Entry<V>;

    fn next(&mut self) -> Option<&'a Entry<V>> {
        loop {
            if let Some(entry) = self.leaf.as_mut().and_then(Iterator::next) {
                return Some(entry);
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
                Node::Leaf(leaf) => self.leaf = Some(leaf.iter()),
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

/// Inserts `entry` into `leaf`, counting a new key in `len`; returns the entry it replaced.
fn insert<V>(
    hasher: &RandomState,
    leaf: &mut HashTable<Entry<V>>,
    hash: u64,
    entry: Entry<V>,
    len: &mut usize,
) -> Option<Entry<V>> {
    match leaf.entry(
        hash,
        |e| e.key() == entry.key(),
        |e| hasher.hash_one(e.key()),
    ) {
        hashbrown::hash_table::Entry::Occupied(mut o) => {
            Some(std::mem::replace(o.get_mut(), entry))
        }
        hashbrown::hash_table::Entry::Vacant(v) => {
            v.insert(entry);
            *len += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Revision;

    fn entry(key: &str, value: u32) -> Entry<u32> {
        Shared::new(key.into(), value, Revision(u64::from(value)), None, 4)
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
        assert_eq!(map.bytes(), 20_000);
        assert_eq!(map.leaf_mask, (1 << 8) - 1, "rebuilt as it grew");
        for i in 0..5000u32 {
            assert_eq!(map.get(&i.to_string()).map(|e| **e), Some(i));
        }
        let before = map.clone();
        assert_eq!(map.upsert(entry("7", 70)).map(|e| *e), Some(7));
        assert_eq!(map.remove("8").map(|e| *e), Some(8));
        assert!(map.remove("8").is_none());
        assert_eq!(map.len(), 4999);
        assert_eq!(map.bytes(), 4999 * 4);
        // The earlier map is untouched (copy on write).
        assert_eq!(before.get("7").map(|e| **e), Some(7));
        assert_eq!(before.get("8").map(|e| **e), Some(8));
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
        assert_eq!(next.get("42").map(|e| **e), Some(2));
        assert_eq!(map.get("42").map(|e| **e), Some(42));
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
                let removed = map.remove(&key).map(|e| *e);
                assert_eq!(removed, model.remove(&key), "seed {seed}, step {step}");
            } else {
                let replaced = map.upsert(entry(&key, step)).map(|e| *e);
                assert_eq!(replaced, model.insert(key.clone(), step), "seed {seed}");
            }
            assert_eq!(map.get(&key).map(|e| **e), model.get(&key).copied());
            if step % 5_000 == 0 {
                kept.push((map.clone(), model.clone()));
            }
        }
        kept.push((map, model));
        // Every earlier map still holds exactly its state (copy on write).
        for (map, model) in kept {
            assert_eq!(map.len(), model.len(), "seed {seed}");
            let mut entries: Vec<(String, u32)> =
                map.iter().map(|e| (e.key().to_owned(), **e)).collect();
            entries.sort();
            let mut expected: Vec<(String, u32)> = model.into_iter().collect();
            expected.sort();
            assert_eq!(entries, expected, "seed {seed}");
        }
    }

    #[test]
    fn index_bits_keep_leaves_small() {
        assert_eq!(index_bits(0), 0);
        assert_eq!(index_bits(31), 0);
        assert_eq!(index_bits(1 << 20), 16);
        assert_eq!(index_bits(usize::MAX), MAX_INDEX_BITS);
    }
}
