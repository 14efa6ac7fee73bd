//! [`Shared`]: one entry of a snapshot (key, value, revision, expiry) in one allocation, and
//! the handle through which values leave a snapshot.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU64;
use std::ops::Deref;

use smol_str::SmolStr;

use crate::types::{Revision, StoreTime};

/// A value held by a snapshot, shared: [`Versioned::value`](crate::Versioned::value),
/// [`Change::old`](crate::Change::old) and [`Change::new`](crate::Change::new) hand values out
/// this way.
///
/// It dereferences to the value. Cloning it costs one reference count, and it stays valid after
/// the dictionary moves on. Key, value, revision and expiry live in one allocation, which every
/// snapshot holding the entry shares: a snapshot spends one pointer per entry on it, and a
/// lookup reads the key and the value from the same cache line or two.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> durable_core::Result<()> {
/// # use durable_core::{Dict, Json, MemoryStore, Options};
/// # let store = MemoryStore::new();
/// let limits: Dict<u32> = Dict::open(store.backend("prod", "limits")?, Json, Options::new()).await?;
/// let version = limits.insert("uploads", 10).await?;
/// let uploads = limits.snapshot().get_versioned("uploads").expect("just written");
/// assert_eq!(*uploads.value + 1, 11);
/// assert_eq!(uploads.value.key(), "uploads");
/// assert_eq!(uploads.value.revision(), version.revision());
/// # Ok(()) }
/// ```
pub struct Shared<V>(triomphe::Arc<Inner<V>>);

struct Inner<V> {
    /// Short keys (up to 23 bytes) live inline, so a lookup compares them in the entry's own
    /// cache line.
    key: SmolStr,
    value: V,
    revision: Revision,
    /// When the entry expires, on the store's clock, plus one (`None`: never).
    expires_at: Option<NonZeroU64>,
    /// The encoded size in bytes (saturated at `u32::MAX`), for statistics.
    size: u32,
}

impl<V> Shared<V> {
    /// An entry: `size` is the value's encoded size.
    pub(crate) fn new(
        key: SmolStr,
        value: V,
        revision: Revision,
        expires_at: Option<StoreTime>,
        size: usize,
    ) -> Self {
        Shared(triomphe::Arc::new(Inner {
            key,
            value,
            revision,
            expires_at: expires_at.map(|at| NonZeroU64::MIN.saturating_add(at.0)),
            size: u32::try_from(size).unwrap_or(u32::MAX),
        }))
    }

    /// The key the value is stored under.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// The key, shared.
    pub(crate) fn smol_key(&self) -> &SmolStr {
        &self.0.key
    }

    /// The revision of the write that stored the value.
    pub fn revision(&self) -> Revision {
        self.0.revision
    }

    /// When the entry expires, on the store's clock (`None`: never).
    pub fn expires_at(&self) -> Option<StoreTime> {
        self.0.expires_at.map(|at| StoreTime(at.get() - 1))
    }

    /// The encoded size in bytes, for statistics.
    pub(crate) fn size(&self) -> usize {
        self.0.size as usize
    }

    /// True unless the entry has expired at `now`.
    #[inline]
    pub(crate) fn is_live(&self, now: StoreTime) -> bool {
        self.0.expires_at.is_none_or(|at| now.0 < at.get() - 1)
    }

    /// True if both are the same entry (not merely equal values).
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        triomphe::Arc::ptr_eq(&this.0, &other.0)
    }
}

impl<V> Deref for Shared<V> {
    type Target = V;

    #[inline]
    fn deref(&self) -> &V {
        &self.0.value
    }
}

impl<V> AsRef<V> for Shared<V> {
    fn as_ref(&self) -> &V {
        self
    }
}

impl<V> Clone for Shared<V> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<V: fmt::Debug> fmt::Debug for Shared<V> {
    /// Formats as the value does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<V: fmt::Display> fmt::Display for Shared<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// Compares the values, as `Arc` does.
impl<V: PartialEq> PartialEq for Shared<V> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<V: Eq> Eq for Shared<V> {}

/// Orders by value, as `Arc` does.
impl<V: PartialOrd> PartialOrd for Shared<V> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (**self).partial_cmp(&**other)
    }
}

impl<V: Ord> Ord for Shared<V> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

/// Hashes the value, as `Arc` does (consistent with [`Borrow<V>`](Borrow)).
impl<V: Hash> Hash for Shared<V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl<V> Borrow<V> for Shared<V> {
    fn borrow(&self) -> &V {
        self
    }
}

impl<V: serde::Serialize> serde::Serialize for Shared<V> {
    /// Serializes as the value does.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_size_round_trip() {
        for at in [
            None,
            Some(0),
            Some(1),
            Some(1_700_000_000_000),
            Some(u64::MAX - 1),
        ] {
            let entry = Shared::new("k".into(), (), Revision(3), at.map(StoreTime), 7);
            assert_eq!(entry.expires_at(), at.map(StoreTime));
            assert_eq!(entry.size(), 7);
            assert_eq!(entry.revision(), Revision(3));
        }
        let entry = Shared::new("k".into(), (), Revision(1), Some(StoreTime(10)), usize::MAX);
        assert!(entry.is_live(StoreTime(9)));
        assert!(!entry.is_live(StoreTime(10)));
        assert_eq!(entry.size(), u32::MAX as usize, "saturates");
    }

    #[test]
    fn compares_hashes_and_borrows_as_its_value() {
        use std::collections::HashSet;
        let a = Shared::new("a".into(), 1u32, Revision(1), None, 1);
        let b = Shared::new("b".into(), 1u32, Revision(2), None, 1);
        let c = Shared::new("c".into(), 2u32, Revision(3), None, 1);
        assert_eq!(a, b);
        assert!(!Shared::ptr_eq(&a, &b));
        assert!(a < c);
        let set: HashSet<Shared<u32>> = [a, c].into_iter().collect();
        assert!(set.contains(&1) && set.contains(&2) && !set.contains(&3));
    }

    #[test]
    fn an_entry_is_one_small_allocation() {
        // Counter, key, value (`Vec<u8>`), revision, expiry and size: 80 bytes.
        assert_eq!(size_of::<Inner<Vec<u8>>>() + size_of::<usize>(), 80);
        assert_eq!(size_of::<Shared<Vec<u8>>>(), size_of::<usize>());
    }
}
