//! Small value types shared by the engine and the backends.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::{Error, Result};

/// A validated dictionary name or namespace.
///
/// 1 to 128 characters from `A-Z a-z 0-9 _ - .`, not starting with `.`: safe as part of a Redis
/// key, a SQL value, a ZooKeeper path segment and a file name, with no escaping.
///
/// ```
/// use durable_core::Name;
/// assert!(Name::new("feature-flags").is_ok());
/// assert!(Name::new("a/b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// The longest accepted name, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > Self::MAX_LEN {
            Some("must be at most 128 characters")
        } else if name.starts_with('.') {
            Some("must not start with '.'")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            Some("may only contain A-Z, a-z, 0-9, '_', '-' and '.'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidName { name, reason }),
            None => Ok(Name(name)),
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A dictionary's version token.
///
/// A token names one state of a stored dictionary. It has three parts:
/// - the **epoch**, chosen at random (or taken from the store, such as a znode's creation zxid)
///   when the dictionary's version record is created. A wiped or re-created store gets a new
///   epoch, so its tokens never equal the old ones.
/// - the **counter**, bumped by exactly one by every write that changes something.
/// - the **stamp**, a fresh random number chosen by every such write. A store put back to an
///   earlier state of itself (a backup restore, a restart from an older snapshot, a failover to a
///   replica that had not received the last writes) counts again from that earlier counter, but
///   its new writes draw new stamps, so no token ever names two different states.
///
/// Each token also carries its **parent**: the stamp of the state the write started from, so the
/// engine can tell whether a write directly follows the state it holds.
///
/// Tokens are compared for **equality only** (epoch, counter and stamp): "is the store still at
/// the state my snapshot reflects?" There is deliberately no ordering; backends use the counter
/// to serve deltas within one epoch, after checking that the token's stamp is the one they
/// recorded for its counter.
#[derive(Debug, Clone, Copy)]
pub struct Version {
    epoch: u64,
    counter: u64,
    stamp: u64,
    parent: u64,
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        (self.epoch, self.counter, self.stamp) == (other.epoch, other.counter, other.stamp)
    }
}

impl Eq for Version {}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.epoch, self.counter, self.stamp).hash(state);
    }
}

impl Version {
    /// A token without a stamp (stamp and parent 0), for stores that cannot record one, such as
    /// the durabledict-compatible Redis layout, whose writers are not all durable.
    pub const fn new(epoch: u64, counter: u64) -> Self {
        Version {
            epoch,
            counter,
            stamp: 0,
            parent: 0,
        }
    }

    /// A token with its stamp and its parent's stamp.
    pub const fn stamped(epoch: u64, counter: u64, stamp: u64, parent: u64) -> Self {
        Version {
            epoch,
            counter,
            stamp,
            parent,
        }
    }

    /// A fresh random stamp for a write (never 0, which means "no stamp").
    pub fn new_stamp() -> u64 {
        rand::random::<u64>().max(1)
    }

    /// The token a write from `self` produces: the next counter, the given fresh stamp and
    /// `self`'s stamp as parent.
    pub const fn next(&self, stamp: u64) -> Version {
        Version::stamped(self.epoch, self.counter + 1, stamp, self.stamp)
    }

    /// The epoch part.
    pub const fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The counter part.
    pub const fn counter(&self) -> u64 {
        self.counter
    }

    /// The random stamp of the write that produced this state (0: the store records none).
    pub const fn stamp(&self) -> u64 {
        self.stamp
    }

    /// The stamp of the state the write that produced this one started from.
    pub const fn parent(&self) -> u64 {
        self.parent
    }

    /// True if `self` is the token of a write made directly on state `previous` (same epoch,
    /// next counter, and `previous`'s stamp as parent).
    pub fn follows(&self, previous: &Version) -> bool {
        self.epoch == previous.epoch
            && previous.counter.checked_add(1) == Some(self.counter)
            && self.parent == previous.stamp
    }

    /// The entry revision a write producing this token gives to the entries it writes.
    pub const fn revision(&self) -> Revision {
        Revision(self.counter)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}.{}", self.epoch, self.counter)?;
        if self.stamp != 0 {
            write!(f, ".{:016x}", self.stamp)?;
        }
        Ok(())
    }
}

/// The revision of one entry: the dictionary counter of the write that last stored it.
///
/// Used for compare-and-swap: a write conditioned on a revision succeeds only if nobody wrote the
/// key since that revision was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision(pub u64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// A point in time on the store's clock: milliseconds since the Unix epoch.
///
/// Expiry times are taken from the store's clock (Redis `TIME`, SQL `now()`, a ZooKeeper znode's
/// `mtime`), never from the writer's, so processes with skewed clocks agree on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreTime(pub u64);

impl StoreTime {
    /// The time `after` this one (saturating).
    #[expect(
        clippy::should_implement_trait,
        reason = "saturates at the end of time instead of panicking on overflow like `+`"
    )]
    pub fn add(self, after: Duration) -> StoreTime {
        let millis = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        StoreTime(self.0.saturating_add(millis))
    }

    /// This time as a [`SystemTime`] (on the store's clock).
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// The milliseconds since the Unix epoch of `time` (0 before the epoch).
    pub fn from_system_time(time: SystemTime) -> StoreTime {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        StoreTime(u64::try_from(millis).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for StoreTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// One stored entry as a backend returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The key.
    pub key: String,
    /// The encoded value.
    pub value: Bytes,
    /// The revision that wrote it.
    pub revision: Revision,
    /// When the entry expires, on the store's clock; `None`: never.
    pub expires_at: Option<StoreTime>,
}

/// The entries of a full load, kept in chunks of 1,024 rows: the engine decodes them chunk
/// by chunk and frees each chunk as it goes, so a large load never holds every stored row beside
/// every decoded entry (in one list the rows would stay allocated until the last was decoded).
///
/// Build it with `collect()`, [`Rows::push`] or [`Extend`]; `From<Vec<StoredEntry>>` keeps the
/// vector as one chunk.
///
/// ```
/// use durable_core::{Revision, Rows, StoredEntry};
/// let rows: Rows = (0..3)
///     .map(|i| StoredEntry {
///         key: format!("key{i}"),
///         value: vec![b'x'].into(),
///         revision: Revision(1),
///         expires_at: None,
///     })
///     .collect();
/// assert_eq!(rows.len(), 3);
/// assert_eq!(rows.iter().next().map(|row| row.key.as_str()), Some("key0"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Rows {
    chunks: Vec<Vec<StoredEntry>>,
    len: usize,
}

/// Rows per chunk of [`Rows`] (80 KiB of rows).
const ROWS_PER_CHUNK: usize = 1024;

impl Rows {
    /// No rows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a row at the end.
    pub fn push(&mut self, row: StoredEntry) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < ROWS_PER_CHUNK => chunk.push(row),
            _ => {
                // The first chunk grows as a vector does (a small load stays small); later ones
                // are allocated whole.
                let mut chunk = Vec::with_capacity(if self.chunks.is_empty() {
                    0
                } else {
                    ROWS_PER_CHUNK
                });
                chunk.push(row);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rows in order.
    pub fn iter(&self) -> std::iter::Flatten<std::slice::Iter<'_, Vec<StoredEntry>>> {
        self.chunks.iter().flatten()
    }

    /// The rows in order, to change in place.
    pub fn iter_mut(&mut self) -> std::iter::Flatten<std::slice::IterMut<'_, Vec<StoredEntry>>> {
        self.chunks.iter_mut().flatten()
    }

    /// The chunk and the place in it of row `index`. Every chunk but the first and the last
    /// holds exactly `ROWS_PER_CHUNK` rows (the first may hold more, when made from a vector).
    fn place(&self, index: usize) -> Option<(usize, usize)> {
        let first = self.chunks.first()?.len();
        let place = match index.checked_sub(first) {
            None => (0, index),
            Some(rest) => (1 + rest / ROWS_PER_CHUNK, rest % ROWS_PER_CHUNK),
        };
        (index < self.len).then_some(place)
    }

    /// Row `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<&StoredEntry> {
        let (chunk, at) = self.place(index)?;
        self.chunks[chunk].get(at)
    }

    /// Row `index`, to change in place.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut StoredEntry> {
        let (chunk, at) = self.place(index)?;
        self.chunks[chunk].get_mut(at)
    }

    /// Removes row `index` and returns it; the last row takes its place (as
    /// [`Vec::swap_remove`]).
    pub fn swap_remove(&mut self, index: usize) -> Option<StoredEntry> {
        let (chunk, at) = self.place(index)?;
        let last_chunk = self.chunks.last_mut()?;
        let last = last_chunk.pop()?;
        if last_chunk.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        if index == self.len {
            return Some(last);
        }
        Some(std::mem::replace(&mut self.chunks[chunk][at], last))
    }
}

impl PartialEq for Rows {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Rows {}

impl From<Vec<StoredEntry>> for Rows {
    fn from(rows: Vec<StoredEntry>) -> Self {
        Rows {
            len: rows.len(),
            chunks: if rows.is_empty() {
                Vec::new()
            } else {
                vec![rows]
            },
        }
    }
}

impl Extend<StoredEntry> for Rows {
    fn extend<I: IntoIterator<Item = StoredEntry>>(&mut self, rows: I) {
        rows.into_iter().for_each(|row| self.push(row));
    }
}

impl FromIterator<StoredEntry> for Rows {
    fn from_iter<I: IntoIterator<Item = StoredEntry>>(rows: I) -> Self {
        let mut all = Rows::new();
        all.extend(rows);
        all
    }
}

/// The rows in order, each chunk freed once it is read through.
impl IntoIterator for Rows {
    type Item = StoredEntry;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<StoredEntry>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter().flatten()
    }
}

impl<'a> IntoIterator for &'a Rows {
    type Item = &'a StoredEntry;
    type IntoIter = std::iter::Flatten<std::slice::Iter<'a, Vec<StoredEntry>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A full load: every entry and the token they reflect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// The token of the state the entries reflect.
    pub version: Version,
    /// Every live entry, in no particular order, each key once.
    pub entries: Rows,
    /// Stored rows the backend could not read: each costs its key only.
    pub unreadable: Vec<Unreadable>,
}

/// A stored row the backend could not read: a key that is not UTF-8, a value of the wrong type,
/// a record too short or out of range, a stray record in the dictionary's space. Backends report
/// it instead of failing the whole load, so that bad data written by another program costs that
/// key only (the engine keeps the key's last good value and names it in its health).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The key as far as it can be read (lossy UTF-8, or the record's name), for messages.
    pub key: String,
    /// What is wrong with the row.
    pub reason: String,
}

/// The changes between a caller's token and the store's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The token of the state the caller has after applying this delta.
    pub version: Version,
    /// Entries written (inserted or updated) since the caller's token, each key at most once,
    /// with its latest value.
    pub upserts: Vec<StoredEntry>,
    /// Keys deleted since the caller's token and not written again.
    pub removals: Vec<String>,
    /// Rows written since the caller's token that the backend could not read.
    pub unreadable: Vec<Unreadable>,
}

/// The answer to [`Backend::changes_since`](crate::Backend::changes_since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// The changes since the caller's token.
    Delta(Delta),
    /// The token cannot be served incrementally (another epoch, or older than the retained
    /// history of deletes): the caller must do a full load.
    TooOld,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Store `value` under `key`.
    Put {
        /// The key.
        key: String,
        /// The encoded value.
        value: Bytes,
    },
    /// Delete `key` if present.
    Delete {
        /// The key.
        key: String,
    },
}

impl BatchOp {
    /// The key this operation writes.
    pub fn key(&self) -> &str {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }
}

/// Outcome of [`Backend::persist_if_absent`](crate::Backend::persist_if_absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfAbsent {
    /// The key was absent and is now stored; the dictionary has this new token.
    Inserted(Version),
    /// The key was present; nothing was written and the version is unchanged.
    Present(StoredEntry),
}

/// Outcome of [`Backend::compare_and_swap`](crate::Backend::compare_and_swap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The entry matched and was replaced (or deleted); the dictionary has this new token.
    Swapped(Version),
    /// The entry did not match; nothing was written. Carries the entry as it is now (`None` when
    /// absent), so the caller can retry without another read.
    Conflict(Option<StoredEntry>),
}

/// Outcome of a [`Backend::sweep`](crate::Backend::sweep) that removed something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The dictionary's token after the sweep (one bump for all removed entries).
    pub version: Version,
    /// The keys removed because they had expired.
    pub keys: Vec<String>,
}

/// Which optional operations a backend offers.
///
/// Each one is done atomically by the store or not offered at all: the engine never emulates a
/// capability in a weaker, non-atomic way. The conformance suite reads this struct to decide which
/// rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`changes_since`](crate::Backend::changes_since): incremental sync.
    pub delta: bool,
    /// [`subscribe`](crate::Backend::subscribe): push hints.
    pub push: bool,
    /// [`persist_if_absent`](crate::Backend::persist_if_absent).
    pub insert_if_absent: bool,
    /// [`compare_and_swap`](crate::Backend::compare_and_swap).
    pub compare_and_swap: bool,
    /// [`pop`](crate::Backend::pop).
    pub pop: bool,
    /// [`increment`](crate::Backend::increment).
    pub increment: bool,
    /// [`persist_batch`](crate::Backend::persist_batch).
    pub batch: bool,
    /// [`clear`](crate::Backend::clear).
    pub clear: bool,
    /// [`now`](crate::Backend::now), [`persist_expiring`](crate::Backend::persist_expiring) and
    /// [`sweep`](crate::Backend::sweep): entries with a time to live.
    pub expiry: bool,
    /// Every write records a fresh stamp in its token ([`Version::stamp`]), so a store put back to
    /// an earlier state is detected even after new writes pass the old counter. Only stores
    /// written by programs that cannot record stamps (the durabledict-compatible layout) lack it.
    pub stamps: bool,
    /// The largest encoded value the backend stores, if it has a limit.
    pub max_value_size: Option<usize>,
}

impl Capabilities {
    /// No optional capability: a backend with only the four required operations.
    pub const fn none() -> Self {
        Capabilities {
            delta: false,
            push: false,
            insert_if_absent: false,
            compare_and_swap: false,
            pop: false,
            increment: false,
            batch: false,
            clear: false,
            expiry: false,
            stamps: false,
            max_value_size: None,
        }
    }

    /// Every optional capability, no value size limit.
    pub const fn all() -> Self {
        Capabilities {
            delta: true,
            push: true,
            insert_if_absent: true,
            compare_and_swap: true,
            pop: true,
            increment: true,
            batch: true,
            clear: true,
            expiry: true,
            stamps: true,
            max_value_size: None,
        }
    }

    /// Sets [`Capabilities::delta`].
    pub const fn with_delta(mut self, yes: bool) -> Self {
        self.delta = yes;
        self
    }

    /// Sets [`Capabilities::push`].
    pub const fn with_push(mut self, yes: bool) -> Self {
        self.push = yes;
        self
    }

    /// Sets every conditional write capability at once (insert-if-absent, compare-and-swap, pop,
    /// increment, batch, clear).
    pub const fn with_conditional_writes(mut self, yes: bool) -> Self {
        self.insert_if_absent = yes;
        self.compare_and_swap = yes;
        self.pop = yes;
        self.increment = yes;
        self.batch = yes;
        self.clear = yes;
        self
    }

    /// Sets [`Capabilities::insert_if_absent`].
    pub const fn with_insert_if_absent(mut self, yes: bool) -> Self {
        self.insert_if_absent = yes;
        self
    }

    /// Sets [`Capabilities::compare_and_swap`].
    pub const fn with_compare_and_swap(mut self, yes: bool) -> Self {
        self.compare_and_swap = yes;
        self
    }

    /// Sets [`Capabilities::pop`].
    pub const fn with_pop(mut self, yes: bool) -> Self {
        self.pop = yes;
        self
    }

    /// Sets [`Capabilities::increment`].
    pub const fn with_increment(mut self, yes: bool) -> Self {
        self.increment = yes;
        self
    }

    /// Sets [`Capabilities::batch`].
    pub const fn with_batch(mut self, yes: bool) -> Self {
        self.batch = yes;
        self
    }

    /// Sets [`Capabilities::clear`].
    pub const fn with_clear(mut self, yes: bool) -> Self {
        self.clear = yes;
        self
    }

    /// Sets [`Capabilities::expiry`].
    pub const fn with_expiry(mut self, yes: bool) -> Self {
        self.expiry = yes;
        self
    }

    /// Sets [`Capabilities::stamps`].
    pub const fn with_stamps(mut self, yes: bool) -> Self {
        self.stamps = yes;
        self
    }

    /// Sets [`Capabilities::max_value_size`].
    pub const fn with_max_value_size(mut self, limit: Option<usize>) -> Self {
        self.max_value_size = limit;
        self
    }
}

/// Parses the stored text of an integer for [`Backend::increment`](crate::Backend::increment):
/// ASCII decimal, optional leading `-`, no spaces, within `i64`.
pub fn parse_counter(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> StoredEntry {
        StoredEntry {
            key: format!("key{i}"),
            value: Bytes::from(i.to_string()),
            revision: Revision(i as u64),
            expires_at: None,
        }
    }

    #[test]
    fn rows_keep_their_order_in_chunks_of_bounded_size() {
        let n = 2 * ROWS_PER_CHUNK + 5;
        let rows: Rows = (0..n).map(row).collect();
        assert_eq!(rows.len(), n);
        assert_eq!(rows.chunks.len(), 3, "a large load is several chunks");
        assert!(rows.chunks.iter().all(|c| c.len() <= ROWS_PER_CHUNK));
        let keys: Vec<String> = rows.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, (0..n).map(|i| format!("key{i}")).collect::<Vec<_>>());
        let owned: Vec<StoredEntry> = rows.clone().into_iter().collect();
        assert_eq!(owned, (0..n).map(row).collect::<Vec<_>>());

        // A small load stays small: its one chunk grows as a vector does.
        let small: Rows = (0..3).map(row).collect();
        assert!(small.chunks[0].capacity() < ROWS_PER_CHUNK);

        // Equal rows are equal however they are chunked.
        let mut one = Rows::from((0..n).map(row).collect::<Vec<_>>());
        assert_eq!(one.chunks.len(), 1);
        assert_eq!(one, rows);
        one.push(row(n));
        assert_ne!(one, rows);
        assert_eq!(one.iter().last(), Some(&row(n)));
        assert!(Rows::from(Vec::new()).is_empty());

        // Found and removed by position, across chunks, a big first chunk included.
        for mut rows in [rows.clone(), one.clone()] {
            let n = rows.len();
            for i in [0, ROWS_PER_CHUNK - 1, ROWS_PER_CHUNK, n - 1] {
                assert_eq!(rows.get(i).map(|r| r.key.clone()), Some(format!("key{i}")));
            }
            assert!(rows.get(n).is_none() && rows.get_mut(n).is_none());
            rows.get_mut(3).expect("row 3").revision = Revision(99);
            assert_eq!(rows.iter().nth(3).map(|r| r.revision), Some(Revision(99)));
            let last = rows.get(n - 1).cloned();
            assert_eq!(rows.swap_remove(1).map(|r| r.key), Some("key1".to_owned()));
            assert_eq!(rows.get(1).cloned(), last);
            assert_eq!(rows.len(), n - 1);
            assert_eq!(rows.iter().count(), n - 1);
            // Down to nothing, from the front (each time the last row moves).
            while !rows.is_empty() {
                rows.swap_remove(0).expect("a row");
                assert_eq!(rows.iter().count(), rows.len());
            }
            assert!(rows.swap_remove(0).is_none());
            rows.push(row(7));
            assert_eq!(rows.get(0), Some(&row(7)));
        }
        assert_eq!(Rows::new(), Rows::from(Vec::new()));
    }
}
