//! [`Shared`]: the key, value and revision of one entry of a snapshot in one allocation, and the
//! handle through which values leave a snapshot.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use smol_str::SmolStr;

use crate::types::Revision;

/// A value held by a snapshot, shared: [`Versioned::value`](crate::Versioned::value),
/// [`Change::old`](crate::Change::old) and [`Change::new`](crate::Change::new) hand values out
/// this way.
///
/// It dereferences to the value. Cloning it costs one reference count, and it stays valid after
/// the dictionary moves on. Key, value and revision live in one allocation, which every snapshot
/// holding the entry shares: a snapshot spends one pointer per entry on it, and a lookup reads
/// the key and the value from the same cache line or two. (The map keeps the entry's expiry and
/// encoded size beside that pointer, so the allocation is 64 bytes for a `Vec<u8>` value.)
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
}

impl<V> Shared<V> {
    pub(crate) fn new(key: SmolStr, value: V, revision: Revision) -> Self {
        Shared(triomphe::Arc::new(Inner {
            key,
            value,
            revision,
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
    fn compares_hashes_and_borrows_as_its_value() {
        use std::collections::HashSet;
        let a = Shared::new("a".into(), 1u32, Revision(1));
        let b = Shared::new("b".into(), 1u32, Revision(2));
        let c = Shared::new("c".into(), 2u32, Revision(3));
        assert_eq!(a, b);
        assert!(!Shared::ptr_eq(&a, &b));
        assert!(a < c);
        let set: HashSet<Shared<u32>> = [a, c].into_iter().collect();
        assert!(set.contains(&1) && set.contains(&2) && !set.contains(&3));
    }

    #[test]
    fn an_entry_is_one_small_allocation() {
        // Counter, key, value (`Vec<u8>`) and revision: 64 bytes, an allocator size class.
        assert_eq!(size_of::<Inner<Vec<u8>>>() + size_of::<usize>(), 64);
        assert_eq!(size_of::<Shared<Vec<u8>>>(), size_of::<usize>());
    }
}
