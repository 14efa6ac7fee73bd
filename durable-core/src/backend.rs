//! The [`Backend`] trait: what a store must do to hold durable dictionaries.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::error::{Error, Operation, Result};
use crate::types::{
    BatchOp, Capabilities, Changes, IfAbsent, Load, Revision, Rows, StoreTime, Swap, Swept, Version,
};

/// How many of its last writes' stamps a backend should keep to serve deltas (see the contract's
/// `restore_then_writes_past_old_counter_is_detected`): a token further behind gets
/// [`Changes::TooOld`] and its handle reloads in full. 65,536 stamps of 8 bytes take 512 KiB at
/// most per dictionary, and a handle that falls further behind than that many writes would read
/// most of a busy dictionary anyway.
pub const STAMP_HISTORY: u64 = 65_536;

/// One stored dictionary in one store.
///
/// A backend value is bound to a single dictionary (a namespace and a name, given to the
/// backend's constructor). The engine ([`Dict`](crate::Dict)) keeps the local snapshot, decodes
/// values and decides when to talk to the store; the backend only moves bytes and version tokens.
///
/// Four operations are required (the ones Python durabledict users know: `persist`,
/// `depersist`, `durables`, `last_updated`); the rest are optional capabilities, declared in
/// [`capabilities`](Backend::capabilities). The default implementations of the optional methods
/// return [`Error::NotSupported`].
///
/// # Contract
///
/// The conformance suite ([`conformance`](crate::conformance), feature `conformance`) has one
/// test per rule below, named after it.
///
/// **Tokens.**
/// - `version_is_stable_without_writes`: [`last_updated`](Backend::last_updated) returns equal
///   tokens as long as nothing is written.
/// - `version_changes_on_every_write`: every write that changes the dictionary returns a token
///   different from every token seen before, and `last_updated` returns it afterwards.
/// - `writes_step_the_counter_by_one`: such a write sets the counter to the previous counter plus
///   one, in the same epoch, with a fresh stamp ([`Version::new_stamp`]) and the previous
///   token's stamp as parent ([`Version::next`]), in the same atomic step as the change itself.
///   (The engine uses this to keep its snapshot current after its own writes without a reload.)
/// - `no_op_writes_bump_nothing`: an operation that changes nothing (deleting a missing key,
///   insert-if-absent of a present key, a compare-and-swap that does not match, a batch of
///   deletes of missing keys, clearing an empty dictionary) leaves the token unchanged and returns
///   no new token. Storing a value equal to the stored one is a write and does bump.
/// - `wipe_is_detected`: if the stored dictionary is deleted behind the backend's back (flushed,
///   truncated, re-created), the next token differs from every earlier one, even after the same
///   number of writes. Backends get this by storing the epoch with the counter and choosing a
///   fresh epoch whenever the version record has to be created, with a counter above every
///   revision still stored.
/// - `restore_is_detected`: if the stored dictionary is put back to an earlier state of itself
///   (a backup restored, a server restarted from an older snapshot, a failover to a replica that
///   had not received the last writes), the current token differs from every token issued after
///   that state, and [`changes_since`](Backend::changes_since) of such a token gets
///   [`Changes::TooOld`], so every handle reloads.
/// - `restore_then_writes_past_old_counter_is_detected`: writes made after such a restore draw
///   fresh stamps, so even once the counter passes the old one, no token repeats one issued
///   before the restore, and old tokens still get [`Changes::TooOld`]. Backends get this by
///   recording each write's stamp beside its counter (at least the last [`STAMP_HISTORY`]
///   writes, or what the store's limits allow) and serving a delta only to a token whose stamp
///   is the one recorded for its counter.
/// - `restore_keeps_read_your_writes`: a handle holding a state from before a restore sees its
///   own write right after the write returns, and converges on the store's contents at its next
///   sync.
/// - `damaged_version_record_is_a_wipe_or_writes_nothing`: a version record that is missing or
///   cannot be read (a field missing, not an integer, negative, or beyond 2^53) while entries are
///   stored never yields a token that was issued before: reads return a typed error
///   ([`Error::Damaged`]) or a token of a fresh epoch; a write either treats the record as wiped
///   (a fresh epoch, the counter above every stored revision) or returns a typed error having
///   written nothing. No step writes data before it has validated the version record.
///
/// **Capabilities.**
/// - `declared_capabilities_work`: every optional operation whose capability
///   [`capabilities`](Backend::capabilities) declares works: it never returns
///   [`Error::NotSupported`]. Every optional operation whose capability is not declared returns
///   [`Error::NotSupported`] naming the backend and the operation, and writes nothing. (The
///   engine never calls an undeclared operation; the rule makes the declaration the truth in
///   both directions, so a wrapper that drops a method, or a backend that serves one it does
///   not declare, fails. Wrap a backend with [`Forward`](crate::Forward), which cannot.)
///
/// **Data.**
/// - `round_trip_*`: any byte string is stored and loaded unchanged: empty, binary, unicode text,
///   and 1 MiB (or up to [`Capabilities::max_value_size`], beyond which the write fails with
///   [`Error::ValueTooLarge`] before anything is written).
/// - `keys_are_arbitrary_strings`: any string is a key, including the empty string, `/ : * ? [
///   ] % ' " \`, spaces, unicode and 1 KiB of text, without colliding with other keys.
/// - `overwrite_replaces_value`, `depersist_removes_key`, `missing_key_is_absent`.
/// - `bad_rows_cost_their_key_only`: a stored row the backend cannot read (a key that is not
///   UTF-8, a value of the wrong type, a malformed or stray record, written by another program)
///   is reported in [`Load::unreadable`] or [`Delta::unreadable`](crate::Delta::unreadable) and never fails the whole load
///   or delta; the engine keeps that key's last good value and names it in its health.
/// - `load_is_consistent_with_its_token`: [`durables`](Backend::durables) returns exactly the
///   entries of the state named by its token, even while other writers are busy (read the token
///   and the entries in one transaction or snapshot, or read the token first and then repair with
///   the changes since it).
/// - `load_in_parts_is_the_load`: [`durables_in_parts`](Backend::durables_in_parts) hands over
///   and returns exactly the rows [`durables`](Backend::durables) would (each key once, rows
///   handed before a [`restart`](LoadParts::restart) forgotten), consistent with its token.
///
/// **Delta** (capability `delta`).
/// - `delta_reports_inserts_updates_and_deletes`: [`changes_since`](Backend::changes_since)`(t)`
///   returns every key written or deleted after the state `t` (latest value or tombstone per key)
///   and the token of the state they lead to; applying them to the entries of `t` gives exactly
///   the entries of that state.
/// - `delta_of_current_token_is_empty`.
/// - `delta_falls_back_when_too_old`: a token from another epoch, ahead of the store, whose stamp
///   is not the one recorded for its counter, or older than the retained history (of deletes or
///   of stamps), gets [`Changes::TooOld`], never a partial answer.
///
/// **Conditional writes** (one capability each), all atomic in the store:
/// - `insert_if_absent_*`, `compare_and_swap_*`, `pop_*`, `increment_*`, `batch_*`, `clear_*`;
///   see each method.
/// - `concurrent_compare_and_swap_has_one_winner`, `concurrent_increments_lose_nothing`,
///   `batch_is_all_or_nothing`.
///
/// **Expiry** (capability `expiry`). Times are the store's own clock ([`StoreTime`]), so that
/// processes with skewed clocks agree.
/// - `expiring_entry_carries_its_expiry`: [`persist_expiring`](Backend::persist_expiring)`(k, v,
///   ttl)` stores the entry with `expires_at` = the store's time of the write plus `ttl`, returns
///   it, and [`durables`](Backend::durables) and [`changes_since`](Backend::changes_since) return
///   it with the entry. Every other write of a key (persist, increment, compare-and-swap, batch)
///   stores it without expiry; entries without a TTL never expire.
/// - `store_clock_is_close`: [`now`](Backend::now) reads the store's clock (between the
///   store's times of two writes around it).
/// - `sweep_removes_only_expired_entries`: [`sweep`](Backend::sweep) deletes, in one atomic
///   step with one version bump, exactly the entries whose `expires_at` is at or before the
///   store's time, records them as deletes for deltas like any delete, and returns their keys;
///   with nothing expired it writes nothing and bumps nothing. A backend whose atomic step is
///   limited in size may remove only the entries that expired first, as many as fit in one step;
///   the rest stay (hidden by every handle) for the next sweep.
/// - Until a sweep removes it, an expired entry is still stored, and every operation other than
///   `sweep` treats it as present (the engine hides it from reads and sweeps first when it
///   writes a key it sees expired).
///
/// **Push** (capability `push`).
/// - `push_hint_follows_a_write`: after [`subscribe`](Backend::subscribe), a write by another
///   backend value over the same dictionary produces a [`Hint::Changed`] soon after.
/// - Hints are only hints: the engine still compares tokens. A backend whose hint connection was
///   lost and re-established sends [`Hint::Resubscribed`], because hints sent meanwhile are lost.
///
/// **Failures.**
/// - `unavailable_store_gives_typed_errors`: when the store cannot be reached, every operation
///   returns [`Error::Unavailable`] or [`Error::Timeout`] within a bounded time (the engine also
///   applies its own timeout) and never panics.
/// - A failed write changes nothing: it is applied entirely or not at all.
///
/// # Implementing a backend
///
/// Implement the four required methods with one atomic step each (a transaction, a script, a
/// multi-op), return [`Capabilities::none`] (or what you support), and run the conformance suite
/// against your store with [`conformance_tests!`](crate::conformance_tests). The example crate
/// `durable-examples` has a complete backend over a directory of files.
///
/// To add behaviour to an existing backend (metrics, fault injection, hiding a capability),
/// wrap it in a [`Forward`](crate::Forward) with your [`Hooks`](crate::Hooks) instead of
/// implementing this trait by hand: `Forward` forwards every method, so a wrapper never claims
/// an operation it drops.
#[async_trait]
pub trait Backend: Debug + Send + Sync + 'static {
    /// A short name for messages and errors, e.g. `redis`, `postgres`, `memory`.
    fn name(&self) -> &str;

    /// Which dictionary this backend holds, for messages, logs and the backup file: the backend's
    /// name, its layout if the store has several, the namespace and the dictionary, e.g.
    /// `redis/native/prod/flags`. Never a host, a user or a password: a backup stays valid when
    /// the store moves. Two backends over the same dictionary return the same text, backends over
    /// different dictionaries different ones. The default, the name alone, cannot tell
    /// dictionaries apart: backends override it.
    fn location(&self) -> String {
        self.name().to_owned()
    }

    /// The optional operations this backend offers.
    fn capabilities(&self) -> Capabilities;

    /// Stores `value` under `key` and bumps the dictionary's version, in one atomic step.
    /// Returns the new token; the entry's revision is that token's counter.
    async fn persist(&self, key: &str, value: Bytes) -> Result<Version>;

    /// Deletes `key`. If it existed, bumps the version in the same atomic step and returns the
    /// new token; if it did not, changes nothing and returns `None`.
    async fn depersist(&self, key: &str) -> Result<Option<Version>>;

    /// Every entry and the token of the state they reflect, consistent with each other.
    async fn durables(&self) -> Result<Load>;

    /// [`durables`](Backend::durables), with rows handed to `parts` as they are read, so that
    /// the engine decodes them while the rest arrive instead of holding every row at once. The
    /// returned [`Load`] holds the rows not handed over; all the rows together (since the last
    /// [`LoadParts::restart`]) are exactly those `durables` would return. The default hands
    /// nothing over: it returns `durables()`.
    async fn durables_in_parts(&self, parts: &mut dyn LoadParts) -> Result<Load> {
        let _ = parts;
        self.durables().await
    }

    /// The current token: the cheap check, ideally one small read.
    async fn last_updated(&self) -> Result<Version>;

    /// The changes since `since` (capability `delta`).
    async fn changes_since(&self, since: Version) -> Result<Changes> {
        let _ = since;
        Err(Error::not_supported(self.name(), Operation::Changes))
    }

    /// Starts delivering push hints for this dictionary (capability `push`).
    ///
    /// The backend keeps the sending side (for example in a task that reads a pub/sub
    /// connection) and drops it when it can no longer deliver hints; the engine then stops
    /// relying on hints.
    async fn subscribe(&self) -> Result<Hints> {
        Err(Error::not_supported(self.name(), Operation::Subscribe))
    }

    /// Stores `value` under `key` only if the key is absent (capability `insert_if_absent`).
    /// When present, nothing is written, the version is unchanged and the stored entry is
    /// returned.
    async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
        let _ = (key, value);
        Err(Error::not_supported(self.name(), Operation::InsertIfAbsent))
    }

    /// Replaces the entry of `key` with `new` (`None` deletes it) only if its current revision is
    /// `expected` (`None`: only if the key is absent), bumping the version in the same step
    /// (capability `compare_and_swap`). A mismatch writes nothing and returns the current entry.
    /// `expected == None` with `new == None` ("delete the key if it is absent") can change
    /// nothing: it writes nothing and returns [`Swap::Conflict`] with the current entry.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        new: Option<Bytes>,
    ) -> Result<Swap> {
        let _ = (key, expected, new);
        Err(Error::not_supported(self.name(), Operation::CompareAndSwap))
    }

    /// Deletes `key` and returns its last value with the new token, in one atomic step
    /// (capability `pop`); `None` and no version change if the key was absent.
    async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        let _ = key;
        Err(Error::not_supported(self.name(), Operation::Pop))
    }

    /// Adds `delta` to the integer stored under `key` and bumps the version, in one atomic step
    /// (capability `increment`). The stored form is ASCII decimal text (see
    /// [`parse_counter`](crate::parse_counter)), which JSON and raw text read as a number; a
    /// missing key counts as 0. A value that is not such an integer, or an overflow, gives
    /// [`Error::NotAnInteger`] and writes nothing. Returns the new value and token.
    async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        let _ = (key, delta);
        Err(Error::not_supported(self.name(), Operation::Increment))
    }

    /// Applies every operation in one atomic step with one version bump (capability `batch`):
    /// readers see all of them or none. Operations apply in order, so a later operation on the
    /// same key wins. Returns `None` and bumps nothing if nothing changed (only deletes of
    /// missing keys, or an empty batch).
    async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
        let _ = ops;
        Err(Error::not_supported(self.name(), Operation::Batch))
    }

    /// Deletes every entry in one atomic step with one version bump (capability `clear`);
    /// `None` and no bump if the dictionary was already empty.
    async fn clear(&self) -> Result<Option<Version>> {
        Err(Error::not_supported(self.name(), Operation::Clear))
    }

    /// The store's clock now (capability `expiry`). The engine reads it to learn how far its own
    /// clock is from the store's.
    async fn now(&self) -> Result<StoreTime> {
        Err(Error::not_supported(self.name(), Operation::Now))
    }

    /// Stores `value` under `key`, expiring `ttl` after the store's time of the write, and bumps
    /// the version, in one atomic step (capability `expiry`). Returns the new token and the
    /// expiry time.
    async fn persist_expiring(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(Version, StoreTime)> {
        let _ = (key, value, ttl);
        Err(Error::not_supported(
            self.name(),
            Operation::PersistExpiring,
        ))
    }

    /// Deletes every entry whose expiry is at or before the store's time, in one atomic step with
    /// one version bump (capability `expiry`), and returns their keys. `None` and no bump if
    /// nothing had expired. A store with a size limit per atomic step may remove only the entries
    /// that expired first, as many as fit.
    async fn sweep(&self) -> Result<Option<Swept>> {
        Err(Error::not_supported(self.name(), Operation::Sweep))
    }
}

/// Where [`Backend::durables_in_parts`] hands the rows of a full load as it reads them.
pub trait LoadParts: Send {
    /// The load holds about this many rows in all: room to reserve, before the first part.
    fn size_hint(&mut self, rows: usize) {
        let _ = rows;
    }

    /// More rows of the load (each key once across all parts).
    fn rows(&mut self, rows: Rows);

    /// The load starts again (another attempt, or another way of reading): forget every row
    /// handed over so far.
    fn restart(&mut self);
}

macro_rules! forward_backend {
    ($ty:ty) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<B: Backend + ?Sized> Backend for $ty {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn location(&self) -> String {
                (**self).location()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
                (**self).persist(key, value).await
            }
            async fn depersist(&self, key: &str) -> Result<Option<Version>> {
                (**self).depersist(key).await
            }
            async fn durables(&self) -> Result<Load> {
                (**self).durables().await
            }
            async fn durables_in_parts(&self, parts: &mut dyn LoadParts) -> Result<Load> {
                (**self).durables_in_parts(parts).await
            }
            async fn last_updated(&self) -> Result<Version> {
                (**self).last_updated().await
            }
            async fn changes_since(&self, since: Version) -> Result<Changes> {
                (**self).changes_since(since).await
            }
            async fn subscribe(&self) -> Result<Hints> {
                (**self).subscribe().await
            }
            async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
                (**self).persist_if_absent(key, value).await
            }
            async fn compare_and_swap(
                &self,
                key: &str,
                expected: Option<Revision>,
                new: Option<Bytes>,
            ) -> Result<Swap> {
                (**self).compare_and_swap(key, expected, new).await
            }
            async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
                (**self).pop(key).await
            }
            async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
                (**self).increment(key, delta).await
            }
            async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
                (**self).persist_batch(ops).await
            }
            async fn clear(&self) -> Result<Option<Version>> {
                (**self).clear().await
            }
            async fn now(&self) -> Result<StoreTime> {
                (**self).now().await
            }
            async fn persist_expiring(
                &self,
                key: &str,
                value: Bytes,
                ttl: Duration,
            ) -> Result<(Version, StoreTime)> {
                (**self).persist_expiring(key, value, ttl).await
            }
            async fn sweep(&self) -> Result<Option<Swept>> {
                (**self).sweep().await
            }
        }
    };
}

forward_backend!(Arc<B>);
forward_backend!(Box<B>);

/// A push hint about a dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hint {
    /// Something in the dictionary probably changed.
    Changed,
    /// The hint connection was lost and is back; hints sent in between are lost, so the engine
    /// must check the version.
    Resubscribed,
    /// The hint connection is down: until [`Hint::Resubscribed`], silence means nothing, so the
    /// engine checks the version on every `sync()`.
    Lost,
}

/// The receiving end of a backend's push hints.
///
/// Backends create the pair with [`Hints::channel`] and keep the [`HintSender`]. Sending is
/// synchronous and never waits on the receiver (an atomic counter, then a wake-up that takes a
/// short internal lock): the engine sees a hint the moment `send` returns, with no task in
/// between, so a `sync()` that starts after a hint was sent never skips its check.
#[derive(Debug)]
pub struct Hints {
    shared: Arc<HintShared>,
    seen_changed: u64,
    seen_resubscribed: u64,
}

/// The sending end of a backend's push hints. Clones send to the same receiver; the stream ends
/// when every sender is dropped.
#[derive(Debug)]
pub struct HintSender {
    shared: Arc<HintShared>,
}

#[derive(Debug, Default)]
pub(crate) struct HintShared {
    changed: AtomicU64,
    resubscribed: AtomicU64,
    /// True between a [`Hint::Lost`] and the next [`Hint::Resubscribed`].
    down: AtomicBool,
    senders: AtomicUsize,
    receiver_gone: AtomicBool,
    notify: Notify,
}

impl Hints {
    /// A new hint channel.
    pub fn channel() -> (HintSender, Hints) {
        let shared = Arc::new(HintShared {
            senders: AtomicUsize::new(1),
            ..HintShared::default()
        });
        let hints = Hints {
            shared: shared.clone(),
            seen_changed: 0,
            seen_resubscribed: 0,
        };
        (HintSender { shared }, hints)
    }

    /// Waits for the next hint; `None` once every sender is gone. Hints that arrived since the
    /// last call are coalesced into one ([`Hint::Lost`] or [`Hint::Resubscribed`], whichever
    /// is current, win over [`Hint::Changed`]).
    pub async fn next(&mut self) -> Option<Hint> {
        let shared = self.shared.clone();
        loop {
            let notified = shared.notify.notified();
            if let Some(hint) = self.take() {
                return Some(hint);
            }
            if shared.senders.load(Ordering::SeqCst) == 0 {
                return self.take();
            }
            notified.await;
        }
    }

    fn take(&mut self) -> Option<Hint> {
        let resubscribed = self.shared.resubscribed.load(Ordering::SeqCst);
        let changed = self.shared.changed.load(Ordering::SeqCst);
        let hint = if resubscribed != self.seen_resubscribed {
            Some(if self.shared.down.load(Ordering::SeqCst) {
                Hint::Lost
            } else {
                Hint::Resubscribed
            })
        } else if changed != self.seen_changed {
            Some(Hint::Changed)
        } else {
            None
        };
        self.seen_resubscribed = resubscribed;
        self.seen_changed = changed;
        hint
    }

    /// The shared counters, for the engine to read without waiting.
    pub(crate) fn shared(&self) -> Arc<HintShared> {
        self.shared.clone()
    }
}

impl HintShared {
    /// How many hints of any kind were sent so far.
    pub(crate) fn sent(&self) -> u64 {
        self.changed.load(Ordering::SeqCst) + self.resubscribed.load(Ordering::SeqCst)
    }

    /// True while at least one sender is alive and the hint connection is not down.
    pub(crate) fn is_live(&self) -> bool {
        self.senders.load(Ordering::SeqCst) > 0 && !self.down.load(Ordering::SeqCst)
    }
}

impl Drop for Hints {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::SeqCst);
    }
}

impl HintSender {
    /// Sends a hint without waiting. Returns false once the receiving engine is gone, so the
    /// backend can stop its hint task.
    pub fn send(&self, hint: Hint) -> bool {
        let counter = match hint {
            Hint::Changed => &self.shared.changed,
            Hint::Resubscribed => {
                self.shared.down.store(false, Ordering::SeqCst);
                &self.shared.resubscribed
            }
            Hint::Lost => {
                self.shared.down.store(true, Ordering::SeqCst);
                &self.shared.resubscribed
            }
        };
        counter.fetch_add(1, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
        self.shared.notify.notify_one();
        !self.is_closed()
    }

    /// True once the receiving engine is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.receiver_gone.load(Ordering::SeqCst)
    }
}

impl Clone for HintSender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::SeqCst);
        HintSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for HintSender {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.notify.notify_waiters();
            self.shared.notify.notify_one();
        }
    }
}
