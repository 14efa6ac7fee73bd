//! The overlay's tree: a hash map split into small copy-on-write leaves (about 32 entries each)
//! under a radix tree of 32-way inner nodes, indexed by bits of the key's hash.
//!
//! Changing a key copies its path: one inner node per level and one leaf. Everything else is
//! shared, so a change costs O(log n), never a copy of the tree, and a reader holding the old
//! root keeps seeing exactly the old state. A tree of fewer than 1,024 entries is one leaf. The
//! owner hashes each key once and passes the hash in.

use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;

use super::leaf::{Entry, Key, Leaf, Slot};
use crate::shared::Shared;

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
pub(super) struct Tree<V> {
    root: Node<V>,
    /// How far the root's digit of a leaf index is shifted (levels below the root times
    /// `FANOUT_BITS`).
    root_shift: u32,
    /// The number of leaves minus one (a mask over the index bits).
    leaf_mask: usize,
    len: usize,
    /// The size the tree is expected to reach: once it outgrows one leaf it is rebuilt in the
    /// shape for this many entries at once.
    capacity: usize,
}

impl<V> Clone for Tree<V> {
    fn clone(&self) -> Self {
        Tree {
            root: self.root.clone(),
            root_shift: self.root_shift,
            leaf_mask: self.leaf_mask,
            len: self.len,
            capacity: self.capacity,
        }
    }
}

/// About this many entries per leaf: a one-key change copies a leaf, so leaves stay small.
const LEAF_BITS: u32 = 5;
/// The most index bits: bits 32..56 of the hash, below the seven that hashbrown keeps for its
/// control bytes (it takes the bucket from the lowest bits).
const MAX_INDEX_BITS: u32 = 24;

/// Below this many entries a tree is one leaf: a lookup reads one node fewer, and a change
/// copies the whole (small) table instead of a ~32-entry leaf.
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

impl<V> Tree<V> {
    /// An empty tree that expects to grow to `capacity` entries. It is one leaf (a change
    /// copies it whole, cheap while it is small) until it outgrows it, then it is rebuilt once,
    /// in the shape for `capacity`, and grows to that without another rebuild (a rebuild copies
    /// every entry, inside some change). Empty leaves are one shared allocation until written.
    pub(super) fn with_capacity(hasher: &RandomState, capacity: usize) -> Self {
        Self::from_entries(hasher, Vec::new(), capacity)
    }

    /// A tree of `entries` (a later entry of a key replaces an earlier one), shaped for them,
    /// or for `capacity` if they are more than one leaf.
    fn from_entries(hasher: &RandomState, entries: Vec<Entry<V>>, capacity: usize) -> Self {
        let bits = match index_bits(entries.len()) {
            0 => 0,
            bits => bits.max(index_bits(capacity)),
        };
        let count = 1usize << bits;
        let leaf_mask = count - 1;
        // Each leaf's table sized for its own entries (counted first), not for the average: a
        // table takes the next power of two of buckets.
        let mut sizes = vec![0usize; count];
        for entry in &entries {
            sizes[leaf_of(hasher.hash_one(entry.key()), leaf_mask)] += 1;
        }
        let mut leaves: Vec<Leaf<V>> = sizes.into_iter().map(Leaf::with_capacity).collect();
        let mut len = 0;
        for entry in entries {
            let hash = hasher.hash_one(entry.key());
            if leaves[leaf_of(hash, leaf_mask)]
                .insert(hasher, hash, entry)
                .is_none()
            {
                len += 1;
            }
        }
        // Group the leaves FANOUT at a time, level by level, up to one root (the root's unused
        // slots, when the index bits are not a multiple of FANOUT_BITS, hold empty leaves that
        // no index reaches).
        let empty = Arc::<Leaf<V>>::default();
        let mut level: Vec<Node<V>> = leaves
            .into_iter()
            .map(|l| {
                Node::Leaf(if l.len() == 0 {
                    empty.clone()
                } else {
                    Arc::new(l)
                })
            })
            .collect();
        while level.len() > 1 {
            let mut nodes = level.into_iter();
            let mut parents = Vec::new();
            while nodes.len() > 0 {
                let children: [Node<V>; FANOUT] = std::array::from_fn(|_| {
                    nodes.next().unwrap_or_else(|| Node::Leaf(empty.clone()))
                });
                parents.push(Node::Inner(Arc::new(children)));
            }
            level = parents;
        }
        Tree {
            root: level.pop().unwrap_or(Node::Leaf(empty)),
            root_shift: bits.saturating_sub(1) / FANOUT_BITS * FANOUT_BITS,
            leaf_mask,
            len,
            capacity,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
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

    /// The leaf of `hash`, copying every node on its path that another tree shares.
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

    /// The entry of `key`, which hashes to `hash`.
    #[inline]
    pub(super) fn get(&self, hash: u64, key: &str) -> Option<Slot<'_, V>> {
        self.leaf(hash).get(hash, key)
    }

    /// Inserts or replaces an entry, returning the replaced one. Copies only the entry's path.
    pub(super) fn upsert(
        &mut self,
        hasher: &RandomState,
        hash: u64,
        entry: Entry<V>,
    ) -> Option<Entry<V>> {
        let old = self.leaf_mut(hash).insert(hasher, hash, entry);
        if old.is_none() {
            self.len += 1;
            if index_bits(self.len) > self.leaf_mask.count_ones() + 1 {
                // Amortised: it takes four times the entries to get here again.
                *self = Self::from_entries(
                    hasher,
                    self.iter().map(Slot::to_entry).collect(),
                    self.capacity,
                );
            }
        }
        old
    }

    /// Removes an entry, returning it. Copies its path only if the key is present.
    pub(super) fn remove(&mut self, hash: u64, key: &str) -> Option<Entry<V>> {
        let bucket = self.leaf(hash).find(hash, key)?;
        self.len -= 1;
        Some(self.leaf_mut(hash).remove(bucket))
    }

    /// Adds to `keys` every key whose entry differs between `older` and `self`, an earlier
    /// state of this tree. Compares only the leaves the two do not share, entry by entry (every
    /// key of both, if the tree was rebuilt in between).
    pub(super) fn touched_since(&self, older: &Tree<V>, hasher: &RandomState, keys: &mut Vec<Key>) {
        let key = |slot: Slot<'_, V>| slot.shared().smol_key().clone();
        if (self.leaf_mask, self.root_shift) != (older.leaf_mask, older.root_shift) {
            keys.extend(self.iter().chain(older.iter()).map(key));
            return;
        }
        // The keys of `new` whose entry `old` does not hold.
        let missing = |new: &Leaf<V>, old: &Leaf<V>, keys: &mut Vec<Key>| {
            for slot in new.slots() {
                let same = old
                    .get(hasher.hash_one(slot.key()), slot.key())
                    .is_some_and(|was| Shared::ptr_eq(was.shared(), slot.shared()));
                if !same {
                    keys.push(key(slot));
                }
            }
        };
        let mut stack = vec![(&self.root, &older.root)];
        while let Some(pair) = stack.pop() {
            match pair {
                (Node::Inner(new), Node::Inner(old)) if !Arc::ptr_eq(new, old) => {
                    stack.extend(new.iter().zip(old.iter()));
                }
                (Node::Leaf(new), Node::Leaf(old)) if !Arc::ptr_eq(new, old) => {
                    missing(new, old, keys);
                    missing(old, new, keys);
                }
                _ => {}
            }
        }
    }

    pub(super) fn iter(&self) -> Iter<'_, V> {
        Iter {
            stack: Vec::new(),
            leaf: None,
            next: Some(&self.root),
        }
    }
}

/// Every entry of a tree, leaf by leaf (depth first).
pub(super) struct Iter<'a, V> {
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
    use super::super::entry;
    use super::*;

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

    fn all_nodes<V>(tree: &Tree<V>) -> Vec<*const ()> {
        let mut out = Vec::new();
        nodes(&tree.root, &mut out);
        out
    }

    #[test]
    fn growth_keeps_every_entry() {
        let hasher = RandomState::default();
        let hash = |key: &str| hasher.hash_one(key);
        let mut tree = Tree::with_capacity(&hasher, 0);
        for i in 0..5000u32 {
            let key = i.to_string();
            assert!(tree.upsert(&hasher, hash(&key), entry(&key, i)).is_none());
        }
        assert_eq!(tree.len(), 5000);
        assert_eq!(tree.leaf_mask, (1 << 8) - 1, "rebuilt as it grew");
        for i in 0..5000u32 {
            let key = i.to_string();
            let found = tree.get(hash(&key), &key).expect("present");
            assert_eq!((**found.shared(), found.size()), (i, i as usize));
        }
        assert_eq!(tree.remove(hash("8"), "8").map(|e| **e.shared()), Some(8));
        assert!(tree.remove(hash("8"), "8").is_none());
        assert_eq!((tree.len(), tree.iter().count()), (4999, 4999));
    }

    #[test]
    fn a_tree_is_one_leaf_then_the_shape_for_its_capacity() {
        let hasher = RandomState::default();
        let hash = |key: &str| hasher.hash_one(key);
        let mut tree = Tree::with_capacity(&hasher, 50_000);
        let upsert = |tree: &mut Tree<u32>, i: u32| {
            let key = i.to_string();
            assert!(tree.upsert(&hasher, hash(&key), entry(&key, i)).is_none());
        };
        (0..1023).for_each(|i| upsert(&mut tree, i));
        assert_eq!((tree.leaf_mask, all_nodes(&tree).len()), (0, 1), "one leaf");
        let small = tree.clone();
        upsert(&mut tree, 1023);
        // 50k entries: 2^11 leaves, 1,024 entries in at most 1,024 of them, the rest one
        // shared empty leaf.
        assert_eq!(
            tree.leaf_mask,
            (1 << 11) - 1,
            "rebuilt for its capacity at once"
        );
        fn leaves(node: &Node<u32>, out: &mut std::collections::HashSet<*const ()>) {
            match node {
                Node::Inner(children) => children.iter().for_each(|child| leaves(child, out)),
                Node::Leaf(leaf) => drop(out.insert(Arc::as_ptr(leaf).cast())),
            }
        }
        let distinct = |tree: &Tree<u32>| {
            let mut out = std::collections::HashSet::new();
            leaves(&tree.root, &mut out);
            out.len()
        };
        assert!(distinct(&tree) <= 1024 + 1, "{} leaves", distinct(&tree));
        (1024..20_000).for_each(|i| upsert(&mut tree, i));
        assert_eq!(tree.leaf_mask, (1 << 11) - 1, "not rebuilt again");
        assert_eq!((tree.len(), tree.iter().count()), (20_000, 20_000));
        for i in 0..20_000u32 {
            let key = i.to_string();
            assert_eq!(tree.get(hash(&key), &key).map(|e| **e.shared()), Some(i));
        }
        assert_eq!(small.iter().count(), 1023, "the earlier tree is untouched");
    }

    #[test]
    fn one_change_copies_one_path() {
        let hasher = RandomState::default();
        let hash = |key: &str| hasher.hash_one(key);
        let entries = (0..100_000u32).map(|i| entry(&i.to_string(), i)).collect();
        let tree = Tree::from_entries(&hasher, entries, 0);
        // 100k entries: 2^12 leaves under three levels of inner nodes.
        assert_eq!(tree.leaf_mask, (1 << 12) - 1);
        let before = all_nodes(&tree);
        let mut next = tree.clone();
        next.upsert(&hasher, hash("42"), entry("42", 1));
        let after = all_nodes(&next);
        assert_eq!(before.len(), after.len());
        let copied = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(copied, 4, "three inner nodes and one leaf");
        // A second change in the same (now unshared) path copies nothing.
        next.upsert(&hasher, hash("42"), entry("42", 2));
        assert_eq!(all_nodes(&next), after);
        assert_eq!(next.get(hash("42"), "42").map(|e| **e.shared()), Some(2));
        assert_eq!(tree.get(hash("42"), "42").map(|e| **e.shared()), Some(42));
        assert_eq!(tree.iter().count(), 100_000);
    }

    #[test]
    fn index_bits_keep_leaves_small() {
        assert_eq!(index_bits(0), 0);
        assert_eq!(index_bits(31), 0);
        assert_eq!(index_bits(1 << 20), 16);
        assert_eq!(index_bits(usize::MAX), MAX_INDEX_BITS);
    }
}
