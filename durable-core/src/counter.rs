//! Sharded counters: one logical integer spread over several keys of a [`Dict`].

use std::fmt;

use crate::dict::Dict;
use crate::encoding::{Encoding, Json};
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::types::Version;

/// A counter spread over `shards` keys of a dictionary of integers, so that many writers do not
/// all write one key.
///
/// Shard 0 is the key `name` itself (a plain counter is a one-shard counter, so an existing
/// counter can become sharded without a migration); shard `i > 0` is the key `name#i`. Each
/// [`increment`](Self::increment) adds to one shard, chosen at random, or by writer with
/// [`increment_as`](Self::increment_as). The [`value`](Self::value) is the sum of every shard
/// key present in the local snapshot: no network, but a scan of the snapshot, so keep sharded
/// counters in a dictionary of their own.
///
/// Because the value sums every shard present, whatever the shard count, changing the count
/// ([`with_shards`](Self::with_shards), or handles that disagree on it) keeps the total: shards
/// beyond the new count stay and keep their value; increments just stop going to them.
///
/// Whether sharding helps depends on the store: every write of a dictionary also bumps its one
/// version record, so it spreads contention on a key's row or entry, not on the dictionary; on
/// the built-in stores the measured rate is the same as a plain key's (`docs/benchmarks.md`).
/// What raises it is the engine combining concurrent increments of one key through one handle
/// into one write (see [`Dict::increment`]): share one handle among a process's tasks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> durable_core::Result<()> {
/// use durable_core::{Dict, Json, MemoryStore, Options, ShardedCounter};
///
/// let store = MemoryStore::new();
/// let counters: Dict<i64> = Dict::open(store.backend("app", "counters")?, Json, Options::new()).await?;
/// let views = ShardedCounter::new(&counters, "page-views", 16)?;
/// for _ in 0..10 {
///     views.increment(1).await?;
/// }
/// assert_eq!(views.value(), 10);
/// let views = views.with_shards(4)?;
/// assert_eq!(views.value(), 10, "changing the shard count keeps the total");
/// # Ok(()) }
/// ```
pub struct ShardedCounter<E = Json> {
    dict: Dict<i64, E>,
    name: String,
    shards: u32,
}

impl<E> Clone for ShardedCounter<E> {
    fn clone(&self) -> Self {
        ShardedCounter {
            dict: self.dict.clone(),
            name: self.name.clone(),
            shards: self.shards,
        }
    }
}

impl<E> fmt::Debug for ShardedCounter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedCounter")
            .field("name", &self.name)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

/// The most shards a counter may have.
const MAX_SHARDS: u32 = 65_536;

impl<E: Encoding<i64>> ShardedCounter<E> {
    /// The counter `name` in `dict`, incremented over `shards` shards (1 to 65,536).
    ///
    /// `name` must not contain `#`, which separates the name from the shard number.
    pub fn new(dict: &Dict<i64, E>, name: &str, shards: u32) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidKey {
            backend: dict.backend_name().to_owned(),
            key: name.to_owned(),
            reason: reason.to_owned(),
        };
        if name.contains('#') {
            return Err(invalid("a sharded counter's name cannot contain `#`"));
        }
        if !(1..=MAX_SHARDS).contains(&shards) {
            return Err(invalid("a sharded counter needs 1 to 65536 shards"));
        }
        Ok(ShardedCounter {
            dict: dict.clone(),
            name: name.to_owned(),
            shards,
        })
    }

    /// The same counter, with new increments spread over `shards` shards. The total is kept.
    pub fn with_shards(self, shards: u32) -> Result<Self> {
        Self::new(&self.dict, &self.name, shards)
    }

    /// The counter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many shards increments are spread over.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The key of shard `shard`: the name for shard 0, `name#shard` otherwise.
    pub fn shard_key(&self, shard: u32) -> String {
        if shard == 0 {
            self.name.clone()
        } else {
            format!("{}#{shard}", self.name)
        }
    }

    /// True if `key` is one of this counter's shards (of any shard count).
    fn is_shard(&self, key: &str) -> bool {
        match key.strip_prefix(self.name.as_str()) {
            Some("") => true,
            Some(rest) => rest
                .strip_prefix('#')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            None => false,
        }
    }

    /// Adds `delta` to a shard chosen at random: one atomic increment in the store.
    pub async fn increment(&self, delta: i64) -> Result<()> {
        self.add_to(rand::random_range(0..self.shards), delta).await
    }

    /// Adds `delta` to the shard of writer `writer` (`writer` modulo the shard count), so that
    /// each writer keeps to its own shard.
    pub async fn increment_as(&self, writer: u64, delta: i64) -> Result<()> {
        let shard = u32::try_from(writer % u64::from(self.shards)).unwrap_or(0);
        self.add_to(shard, delta).await
    }

    async fn add_to(&self, shard: u32, delta: i64) -> Result<()> {
        self.dict.increment(&self.shard_key(shard), delta).await?;
        Ok(())
    }

    /// The total in the local snapshot (no network): the sum of every shard present, saturating
    /// at the bounds of `i64`.
    pub fn value(&self) -> i64 {
        self.total(&self.dict.snapshot())
    }

    /// The total read as [`Dict::read`] does (checked first in autosync mode; never fails).
    pub async fn read(&self) -> i64 {
        self.total(&self.dict.read().await)
    }

    /// The total after bringing the snapshot up to date (see [`Dict::sync`]).
    pub async fn sync(&self) -> Result<i64> {
        Ok(self.total(&self.dict.sync().await?))
    }

    fn total(&self, snapshot: &Snapshot<i64>) -> i64 {
        let sum: i128 = snapshot
            .iter()
            .filter(|(key, _)| self.is_shard(key))
            .map(|(_, value)| i128::from(*value))
            .sum();
        i64::try_from(sum).unwrap_or(if sum < 0 { i64::MIN } else { i64::MAX })
    }

    /// Deletes every shard of the counter (every shard key in a freshly synced snapshot, of any
    /// shard count) in one atomic step (capability `batch`). Returns the token of the delete,
    /// `None` if there was nothing to delete.
    pub async fn remove(&self) -> Result<Option<Version>> {
        let snapshot = self.dict.sync().await?;
        let keys: Vec<String> = snapshot
            .keys()
            .filter(|key| self.is_shard(key))
            .map(str::to_owned)
            .collect();
        self.dict.remove_many(keys).await
    }
}
