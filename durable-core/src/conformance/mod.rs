//! The backend conformance suite: one public async function per rule of the
//! [`Backend`] contract, and [`conformance_tests!`](crate::conformance_tests) to
//! turn them into one `#[tokio::test]` each for your backend.
//!
//! ```ignore
//! // tests/conformance.rs of a backend crate (needs tokio with "macros" and "rt-multi-thread").
//! struct MyHarness { url: String }
//!
//! #[durable_core::async_trait]
//! impl durable_core::conformance::Harness for MyHarness { /* open, wipe, ... */ }
//!
//! async fn harness() -> Option<MyHarness> {
//!     let url = durable_core::conformance::server_from_env("DURABLE_TEST_MY_URL")?;
//!     Some(MyHarness { url })
//! }
//!
//! durable_core::conformance_tests!(harness);
//! ```
//!
//! Each test runs in a fresh random namespace, cleaned up afterwards. Rules that need a
//! capability the backend lacks print why they are skipped and pass.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

mod restore;
pub mod workload;

pub use restore::*;

use crate::{
    Backend, BatchOp, Capabilities, ChangeKind, Changes, Dict, DurableSet, Error, Hint, IfAbsent,
    Json, Mode, Name, Options, Raw, Result, Revision, ShardedCounter, StoreTime, Swap, Version,
};

/// What the suite needs from a store under test.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A new backend over dictionary `dictionary` in `namespace`, with its own connection, as a
    /// separate process would open it.
    async fn open(&self, namespace: &Name, dictionary: &Name) -> Result<Box<dyn Backend>>;

    /// Deletes everything stored for the dictionary behind the backends' backs, as an operator
    /// would (FLUSHALL, TRUNCATE, `rm -r`), including its version record.
    async fn wipe(&self, namespace: &Name, dictionary: &Name) -> Result<()>;

    /// Trims the dictionary's history of deletes now, so that only the current token can be
    /// served a delta (only called for backends with capability `delta`).
    async fn forget_history(&self, namespace: &Name, dictionary: &Name) -> Result<()>;

    /// A backend over the dictionary whose store cannot be reached (for example a closed port).
    async fn open_unreachable(
        &self,
        namespace: &Name,
        dictionary: &Name,
    ) -> Result<Box<dyn Backend>>;

    /// Removes everything stored under `namespace`; called after each test.
    async fn cleanup(&self, namespace: &Name) -> Result<()>;

    /// Copies everything stored for the dictionary (entries, history, version record), as a
    /// backup or a server snapshot would, to put back later with
    /// [`put_back`](Harness::put_back).
    async fn copy_stored(&self, namespace: &Name, dictionary: &Name) -> Result<StoredCopy>;

    /// Replaces everything stored for the dictionary with a copy taken earlier by
    /// [`copy_stored`](Harness::copy_stored), behind the backends' backs, as restoring a backup
    /// would (connections may stay open).
    async fn put_back(&self, namespace: &Name, dictionary: &Name, copy: StoredCopy) -> Result<()>;

    /// Damages the dictionary's version record as `damage` says, leaving its entries alone.
    /// Returns false if the store's layout cannot hold that damage (a typed column cannot hold
    /// text, say); the rule then tries the next kind. Every harness supports at least
    /// [`Damage::RecordMissing`].
    async fn damage_version_record(
        &self,
        namespace: &Name,
        dictionary: &Name,
        damage: Damage,
    ) -> Result<bool>;

    /// Writes bad data of kind `garbage` into the dictionary as another program writing straight
    /// into the store could, as the row of `key` where the kind has a key: through the store's
    /// layout, with a new revision and a version bump, so that handles meet it in their next
    /// delta and in full loads. Returns false if the layout cannot hold that kind (the rule then
    /// tries the next one). The provided implementation writes [`Garbage::UndecodableValue`]
    /// through a backend (as another program using durable with another encoding would) and
    /// nothing else: harnesses add the kinds their layout can hold.
    async fn write_garbage(
        &self,
        namespace: &Name,
        dictionary: &Name,
        garbage: Garbage,
        key: &str,
    ) -> Result<bool> {
        if garbage != Garbage::UndecodableValue {
            return Ok(false);
        }
        let backend = self.open(namespace, dictionary).await?;
        backend
            .persist(key, Bytes::from_static(b"{not json \xff"))
            .await?;
        Ok(true)
    }

    /// Restarts the store's server (stop, then start) and returns once it is started again; false
    /// if this harness cannot. Rules call it in the middle of their work to check that nothing
    /// acknowledged is lost. Only give it to harnesses in a test binary of their own: it takes the
    /// server away from every test running at the same time.
    async fn restart(&self) -> Result<bool> {
        Ok(false)
    }
}

/// A copy of one dictionary's stored state, taken by [`Harness::copy_stored`]; only the harness
/// that took it knows what is inside.
pub type StoredCopy = Box<dyn std::any::Any + Send + Sync>;

/// A way of damaging a version record, for [`Harness::damage_version_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// The whole version record is deleted; entries (and history) stay.
    RecordMissing,
    /// The counter field is deleted (or set to NULL).
    CounterMissing,
    /// The counter is text that is not an integer (`"garbage"`).
    CounterNotInteger,
    /// The counter is negative (`-5`).
    CounterNegative,
    /// The counter is absurdly large (`1e300`, or 2^63 where only integers fit).
    CounterHuge,
    /// The epoch is text that is not an integer.
    EpochNotInteger,
}

impl Damage {
    /// Every kind, in the order the rule tries them.
    pub const ALL: [Damage; 6] = [
        Damage::RecordMissing,
        Damage::CounterMissing,
        Damage::CounterNotInteger,
        Damage::CounterNegative,
        Damage::CounterHuge,
        Damage::EpochNotInteger,
    ];
}

/// Bad data another program may write into a store, for [`Harness::write_garbage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Garbage {
    /// Bytes no encoding of the rule's handle reads (`{not json` and invalid UTF-8), as the value
    /// of the key.
    UndecodableValue,
    /// A key that is not valid UTF-8 (Redis hash field, SQL key column, file name).
    NonUtf8Key,
    /// A value of a type the layout does not hold there (SQLite: an INTEGER where a BLOB
    /// belongs; a key stored as a BLOB).
    WrongType,
    /// A record of the key that is too short or out of range (a ZooKeeper entry shorter than its
    /// header; a Redis change-log score of 1e300).
    Malformed,
    /// A record in the dictionary's space that is no entry at all (a stray znode `notakey`).
    Stray,
}

impl Garbage {
    /// Every kind, in the order the rule tries them.
    pub const ALL: [Garbage; 5] = [
        Garbage::UndecodableValue,
        Garbage::NonUtf8Key,
        Garbage::WrongType,
        Garbage::Malformed,
        Garbage::Stray,
    ];

    /// True for the kinds that damage the row of the given key (the others add a row of their
    /// own).
    pub fn damages_the_key(self) -> bool {
        matches!(
            self,
            Garbage::UndecodableValue | Garbage::WrongType | Garbage::Malformed
        )
    }
}

/// Reads the connection string of a test server from environment variable `var`.
///
/// Returns `None` when it is unset, after printing that the test is skipped, unless
/// `DURABLE_TEST_REQUIRE=1` is set (as the project's test command does): then a missing server is
/// a failure, and this panics.
pub fn server_from_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("DURABLE_TEST_REQUIRE").is_ok_and(|v| v == "1") => {
            panic!("{var} is not set but DURABLE_TEST_REQUIRE=1: this test needs its server")
        }
        _ => {
            eprintln!("skipped: {var} is not set (run scripts/test.sh to start the test servers)");
            None
        }
    }
}

/// One test's view of the store: a fresh namespace and ways to open backends and handles in it.
pub struct Ctx {
    harness: Arc<dyn Harness>,
    namespace: Name,
    capabilities: Capabilities,
}

impl Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("namespace", &self.namespace)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// The test's namespace.
    pub fn namespace(&self) -> &Name {
        &self.namespace
    }

    /// The capabilities of the backend under test.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn name(dictionary: &str) -> Name {
        Name::new(dictionary).expect("rule dictionary names are valid")
    }

    /// A new backend over `dictionary` (a separate connection).
    pub async fn backend(&self, dictionary: &str) -> Box<dyn Backend> {
        self.harness
            .open(&self.namespace, &Self::name(dictionary))
            .await
            .expect("harness opens a backend")
    }

    /// A handle on `dictionary` with raw byte values, over a new backend.
    pub async fn dict(&self, dictionary: &str, mode: Mode) -> Dict<Vec<u8>, Raw> {
        Dict::open(self.backend(dictionary).await, Raw, options(mode))
            .await
            .expect("open a dictionary")
    }

    /// A handle on `dictionary` with JSON integer values, over a new backend.
    pub async fn counters(&self, dictionary: &str, mode: Mode) -> Dict<i64, Json> {
        Dict::open(self.backend(dictionary).await, Json, options(mode))
            .await
            .expect("open a dictionary")
    }

    /// A handle on `dictionary` with JSON integer values and the given options, over a new backend.
    pub async fn counters_with(&self, dictionary: &str, options: Options) -> Dict<i64, Json> {
        Dict::open(self.backend(dictionary).await, Json, options)
            .await
            .expect("open a dictionary")
    }

    /// A set of strings over `dictionary`, over a new backend.
    pub async fn set(&self, dictionary: &str, mode: Mode) -> DurableSet<String, Json> {
        DurableSet::open(self.backend(dictionary).await, Json, options(mode))
            .await
            .expect("open a set")
    }

    /// Restarts the store's server if the harness can (see [`Harness::restart`]).
    pub async fn restart(&self) -> bool {
        self.harness
            .restart()
            .await
            .expect("harness restarts the server")
    }

    /// Copies what is stored for `dictionary` (see [`Harness::copy_stored`]).
    pub async fn copy_stored(&self, dictionary: &str) -> StoredCopy {
        self.harness
            .copy_stored(&self.namespace, &Self::name(dictionary))
            .await
            .expect("harness copies the stored dictionary")
    }

    /// Puts `dictionary` back to `copy` (see [`Harness::put_back`]).
    pub async fn put_back(&self, dictionary: &str, copy: StoredCopy) {
        self.harness
            .put_back(&self.namespace, &Self::name(dictionary), copy)
            .await
            .expect("harness puts the copy back");
    }

    /// Damages the version record of `dictionary`; false if the layout cannot hold `damage`.
    pub async fn damage_version_record(&self, dictionary: &str, damage: Damage) -> bool {
        self.harness
            .damage_version_record(&self.namespace, &Self::name(dictionary), damage)
            .await
            .expect("harness damages the version record")
    }

    /// Writes `garbage` into `dictionary` (see [`Harness::write_garbage`]).
    pub async fn write_garbage(&self, dictionary: &str, garbage: Garbage, key: &str) -> bool {
        self.harness
            .write_garbage(&self.namespace, &Self::name(dictionary), garbage, key)
            .await
            .expect("harness writes garbage")
    }

    /// Wipes `dictionary` behind the backends' backs.
    pub async fn wipe(&self, dictionary: &str) {
        self.harness
            .wipe(&self.namespace, &Self::name(dictionary))
            .await
            .expect("harness wipes");
    }

    /// Prints why a rule does not apply and returns true if `capable` is false.
    pub fn skip_unless(&self, capable: bool, what: &str) -> bool {
        if !capable {
            eprintln!("skipped: the backend does not declare capability `{what}`");
        }
        !capable
    }
}

fn options(mode: Mode) -> Options {
    Options::new()
        .with_mode(mode)
        .with_timeout(Duration::from_secs(20))
        .with_open_timeout(Duration::from_secs(30))
}

/// Runs `rule` against the store of `harness` in a fresh namespace, then cleans up.
/// `None` (no server configured) skips.
pub async fn run<H, F, Fut>(harness: Option<H>, rule: F)
where
    H: Harness,
    F: FnOnce(Arc<Ctx>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(harness) = harness else { return };
    let harness: Arc<dyn Harness> = Arc::new(harness);
    let namespace = Name::new(format!("t{:016x}", rand::random::<u64>())).expect("valid name");
    let probe = harness
        .open(&namespace, &Ctx::name("probe"))
        .await
        .expect("harness opens a backend");
    let ctx = Arc::new(Ctx {
        harness: harness.clone(),
        namespace: namespace.clone(),
        capabilities: probe.capabilities(),
    });
    drop(probe);
    rule(ctx).await;
    harness
        .cleanup(&namespace)
        .await
        .expect("harness cleans up");
}

/// Expands to one `#[tokio::test]` per conformance rule for a harness factory: an `async fn`
/// (path) returning `Option<impl Harness>`, `None` meaning "no server configured, skip".
///
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!(@rules $factory;
            version_is_stable_without_writes,
            version_changes_on_every_write,
            writes_step_the_counter_by_one,
            no_op_writes_bump_nothing,
            wipe_is_detected,
            restore_is_detected,
            restore_then_writes_past_old_counter_is_detected,
            restore_keeps_read_your_writes,
            damaged_version_record_is_a_wipe_or_writes_nothing,
            bad_rows_cost_their_key_only,
            round_trip_binary,
            round_trip_empty,
            round_trip_unicode,
            round_trip_large,
            keys_are_arbitrary_strings,
            overwrite_replaces_value,
            depersist_removes_key,
            missing_key_is_absent,
            load_is_consistent_with_its_token,
            two_handles_manual_mode,
            two_handles_autosync_mode,
            delta_reports_inserts_updates_and_deletes,
            delta_of_current_token_is_empty,
            delta_falls_back_when_too_old,
            insert_if_absent_keeps_existing,
            compare_and_swap_checks_revision,
            concurrent_compare_and_swap_has_one_winner,
            pop_returns_and_deletes,
            increment_adds_atomically,
            increment_rejects_non_integers,
            concurrent_increments_lose_nothing,
            batch_writes_all_keys_with_one_bump,
            batch_is_all_or_nothing,
            clear_deletes_everything,
            push_hint_follows_a_write,
            unavailable_store_gives_typed_errors,
            read_your_writes,
            expiring_entry_carries_its_expiry,
            store_clock_is_close,
            sweep_removes_only_expired_entries,
            expired_entry_is_hidden_by_every_handle,
            writes_sweep_expired_entries_lazily,
            expired_key_is_absent_for_conditional_writes,
            set_insert_remove_contains,
            set_batch_is_one_atomic_step,
            sharded_counter_sums_its_shards,
            sharded_counter_keeps_total_when_resharded,
            sharded_counter_remove_deletes_every_shard_at_once,
            sharded_counter_total_matches_acknowledged_increments,
        );
    };
    (@rules $factory:path; $($rule:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() {
                $crate::conformance::run($factory().await, |ctx| async move {
                    $crate::conformance::$rule(&ctx).await
                })
                .await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn bytes(s: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(s.as_ref())
}

async fn entries(backend: &dyn Backend) -> BTreeMap<String, Bytes> {
    let load = backend.durables().await.expect("durables");
    let mut map = BTreeMap::new();
    for entry in load.entries {
        assert!(
            map.insert(entry.key.clone(), entry.value).is_none(),
            "durables returned key {:?} twice",
            entry.key
        );
    }
    map
}

async fn token(backend: &dyn Backend) -> Version {
    backend.last_updated().await.expect("last_updated")
}

const HINT_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Tokens

/// `last_updated` returns equal tokens as long as nothing is written, from any backend value.
pub async fn version_is_stable_without_writes(ctx: &Ctx) {
    let b = ctx.backend("stable").await;
    let empty = token(&*b).await;
    assert_eq!(empty, token(&*b).await, "two checks of an empty dictionary");
    b.persist("k", bytes("v")).await.expect("persist");
    let t = token(&*b).await;
    assert_eq!(t, token(&*b).await);
    let other = ctx.backend("stable").await;
    assert_eq!(
        t,
        token(&*other).await,
        "another connection sees the same token"
    );
    assert_eq!(t, b.durables().await.expect("durables").version);
}

/// Every write that changes the dictionary returns a new token, and `last_updated` returns it.
pub async fn version_changes_on_every_write(ctx: &Ctx) {
    let b = ctx.backend("changes").await;
    let caps = ctx.capabilities();
    let mut seen = HashSet::new();
    seen.insert(token(&*b).await);
    let mut check = |v: Version, what: &str| {
        assert!(seen.insert(v), "{what} returned a token seen before: {v}");
        v
    };
    let v = check(
        b.persist("a", bytes("1")).await.expect("persist"),
        "persist",
    );
    assert_eq!(token(&*b).await, v);
    let v = check(
        b.persist("a", bytes("1")).await.expect("persist"),
        "persist of an equal value",
    );
    assert_eq!(token(&*b).await, v);
    let v = b
        .depersist("a")
        .await
        .expect("depersist")
        .expect("a existed");
    assert_eq!(token(&*b).await, check(v, "depersist"));
    if caps.insert_if_absent {
        match b
            .persist_if_absent("n", bytes("1"))
            .await
            .expect("insert if absent")
        {
            IfAbsent::Inserted(v) => assert_eq!(token(&*b).await, check(v, "insert if absent")),
            other => panic!("insert of an absent key gave {other:?}"),
        }
    }
    if caps.compare_and_swap {
        match b
            .compare_and_swap("c", None, Some(bytes("1")))
            .await
            .expect("cas")
        {
            Swap::Swapped(v) => assert_eq!(token(&*b).await, check(v, "compare and swap")),
            other => panic!("cas on an absent key expecting absence gave {other:?}"),
        }
    }
    if caps.increment {
        let (_, v) = b.increment("i", 1).await.expect("increment");
        assert_eq!(token(&*b).await, check(v, "increment"));
    }
    if caps.pop {
        let (_, v) = b.pop("i").await.expect("pop").expect("i existed");
        assert_eq!(token(&*b).await, check(v, "pop"));
    }
    if caps.batch {
        let ops = vec![BatchOp::Put {
            key: "x".into(),
            value: bytes("1"),
        }];
        let v = b
            .persist_batch(ops)
            .await
            .expect("batch")
            .expect("batch changed something");
        assert_eq!(token(&*b).await, check(v, "batch"));
    }
    if caps.clear {
        let v = b
            .clear()
            .await
            .expect("clear")
            .expect("dictionary was not empty");
        assert_eq!(token(&*b).await, check(v, "clear"));
    }
}

/// A write that changes something sets the counter to the previous one plus one, same epoch.
pub async fn writes_step_the_counter_by_one(ctx: &Ctx) {
    let b = ctx.backend("step").await;
    let mut before = token(&*b).await;
    for i in 0..3 {
        let v = b
            .persist(&format!("k{i}"), bytes("v"))
            .await
            .expect("persist");
        assert_eq!(v.epoch(), before.epoch(), "a write kept the epoch");
        assert_eq!(
            v.counter(),
            before.counter() + 1,
            "a write bumps the counter by one"
        );
        assert_follows(ctx, v, before);
        assert_eq!(
            token(&*b).await.parent(),
            v.parent(),
            "last_updated has the parent"
        );
        before = v;
    }
    let v = b
        .depersist("k0")
        .await
        .expect("depersist")
        .expect("k0 existed");
    assert_step(ctx, v, before);
    if ctx.capabilities().batch {
        let ops = (0..3)
            .map(|i| BatchOp::Put {
                key: format!("b{i}"),
                value: bytes("v"),
            })
            .collect();
        let w = b.persist_batch(ops).await.expect("batch").expect("changed");
        assert_step(ctx, w, v);
    }
}

/// Asserts that `v` is the token of one write made on state `before`.
#[track_caller]
fn assert_step(ctx: &Ctx, v: Version, before: Version) {
    assert_eq!(
        (v.epoch(), v.counter()),
        (before.epoch(), before.counter() + 1),
        "{v} is not one step after {before}"
    );
    assert_follows(ctx, v, before);
}

/// With stamps, `v` carries a fresh stamp and `before`'s stamp as parent.
#[track_caller]
fn assert_follows(ctx: &Ctx, v: Version, before: Version) {
    if ctx.capabilities().stamps {
        assert!(
            v.follows(&before),
            "{v} does not name {before} as its parent"
        );
        assert_ne!(v.stamp(), 0, "{v} has no stamp");
        assert_ne!(v.stamp(), before.stamp(), "{v} repeated its parent's stamp");
    }
}

/// Operations that change nothing leave the token unchanged and return no new token.
pub async fn no_op_writes_bump_nothing(ctx: &Ctx) {
    let b = ctx.backend("noop").await;
    let caps = ctx.capabilities();
    b.persist("present", bytes("1")).await.expect("persist");
    let t = token(&*b).await;
    assert_eq!(b.depersist("missing").await.expect("depersist"), None);
    assert_eq!(
        token(&*b).await,
        t,
        "deleting a missing key bumped the version"
    );
    if caps.insert_if_absent {
        match b
            .persist_if_absent("present", bytes("2"))
            .await
            .expect("insert if absent")
        {
            IfAbsent::Present(entry) => assert_eq!(entry.value, bytes("1")),
            other => panic!("insert of a present key gave {other:?}"),
        }
        assert_eq!(
            token(&*b).await,
            t,
            "insert-if-absent of a present key bumped"
        );
    }
    if caps.compare_and_swap {
        let outcome = b
            .compare_and_swap("present", Some(Revision(u64::MAX)), Some(bytes("3")))
            .await
            .expect("cas");
        assert!(
            matches!(outcome, Swap::Conflict(Some(_))),
            "got {outcome:?}"
        );
        let outcome = b
            .compare_and_swap("missing", None, None)
            .await
            .expect("cas");
        assert_eq!(outcome, Swap::Conflict(None));
        assert_eq!(token(&*b).await, t, "a failed compare-and-swap bumped");
    }
    if caps.pop {
        assert_eq!(b.pop("missing").await.expect("pop"), None);
        assert_eq!(token(&*b).await, t, "popping a missing key bumped");
    }
    if caps.batch {
        let ops = vec![BatchOp::Delete {
            key: "missing".into(),
        }];
        assert_eq!(b.persist_batch(ops).await.expect("batch"), None);
        assert_eq!(
            b.persist_batch(Vec::new()).await.expect("empty batch"),
            None
        );
        assert_eq!(token(&*b).await, t, "a batch that changed nothing bumped");
    }
    if caps.clear {
        let empty = ctx.backend("noop-empty").await;
        let t = token(&*empty).await;
        assert_eq!(empty.clear().await.expect("clear"), None);
        assert_eq!(
            token(&*empty).await,
            t,
            "clearing an empty dictionary bumped"
        );
    }
}

/// A dictionary deleted behind the backend's back gets tokens that differ from every earlier one,
/// and handles reload it.
pub async fn wipe_is_detected(ctx: &Ctx) {
    let b = ctx.backend("wiped").await;
    let d = ctx.dict("wiped", Mode::Manual).await;
    let first = b.persist("a", bytes("1")).await.expect("persist");
    b.persist("b", bytes("2")).await.expect("persist");
    d.sync().await.expect("sync");
    assert_eq!(d.snapshot().len(), 2);
    ctx.wipe("wiped").await;
    let after = token(&*b).await;
    assert_ne!(after, first);
    let again = b
        .persist("c", bytes("3"))
        .await
        .expect("persist after wipe");
    assert_ne!(
        again, first,
        "the first write after a wipe repeated an old token"
    );
    let snapshot = d.sync().await.expect("sync after wipe");
    let keys: Vec<&str> = snapshot.keys().collect();
    assert_eq!(keys, vec!["c"], "the handle reloaded the wiped dictionary");
}

// ---------------------------------------------------------------------------------------------
// Data

async fn round_trip(ctx: &Ctx, dictionary: &str, value: Bytes) {
    let b = ctx.backend(dictionary).await;
    b.persist("k", value.clone()).await.expect("persist");
    let other = ctx.backend(dictionary).await;
    let stored = entries(&*other).await;
    assert!(
        stored.get("k") == Some(&value),
        "value of {} bytes changed in the store",
        value.len()
    );
    let d = ctx.dict(dictionary, Mode::Manual).await;
    assert_eq!(d.snapshot().get("k").map(Vec::as_slice), Some(&value[..]));
}

/// Binary values (every byte value) are stored unchanged.
pub async fn round_trip_binary(ctx: &Ctx) {
    let value: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    round_trip(ctx, "binary", value.into()).await;
}

/// The empty value is stored and is not confused with a missing key.
pub async fn round_trip_empty(ctx: &Ctx) {
    round_trip(ctx, "empty", Bytes::new()).await;
}

/// Unicode text is stored unchanged.
pub async fn round_trip_unicode(ctx: &Ctx) {
    round_trip(ctx, "unicode", bytes("héllo wörld ✓ 日本語 🎉")).await;
}

/// A 1 MiB value (or one at the backend's limit) is stored unchanged; one byte more than the
/// limit fails with `ValueTooLarge` and writes nothing.
pub async fn round_trip_large(ctx: &Ctx) {
    let limit = ctx.capabilities().max_value_size;
    let size = limit.map_or(1 << 20, |l| l.min(1 << 20));
    let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    round_trip(ctx, "large", value.into()).await;
    if let Some(limit) = limit {
        let b = ctx.backend("large").await;
        let t = token(&*b).await;
        let err = b.persist("big", Bytes::from(vec![7u8; limit + 1])).await;
        assert!(
            matches!(err, Err(Error::ValueTooLarge { .. })),
            "got {err:?}"
        );
        assert_eq!(token(&*b).await, t, "a rejected value bumped the version");
        assert!(!entries(&*b).await.contains_key("big"));
    }
}

/// Any string is a key: empty, path and glob characters, quotes, spaces, unicode, 1 KiB.
pub async fn keys_are_arbitrary_strings(ctx: &Ctx) {
    let mut keys: Vec<String> = [
        "",
        "/",
        "a/b",
        "/lead",
        "trail/",
        ".",
        "..",
        ":",
        "a:b",
        "*",
        "?",
        "[",
        "]",
        "a*b?c[d]",
        "%",
        "%2F",
        "'",
        "\"",
        "\\",
        " ",
        "with space",
        " padded ",
        "é",
        "日本",
        "🎉",
        "K",
        "k",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    keys.push("x".repeat(1024));
    keys.push("é".repeat(512));
    let b = ctx.backend("keys").await;
    let expected: BTreeMap<String, Bytes> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), bytes(i.to_string())))
        .collect();
    for (key, value) in &expected {
        b.persist(key, value.clone())
            .await
            .unwrap_or_else(|e| panic!("persist {key:?}: {e}"));
    }
    assert_eq!(entries(&*b).await, expected);
    let d = ctx.dict("keys", Mode::Manual).await;
    for (key, value) in &expected {
        assert_eq!(
            d.snapshot().get(key).map(Vec::as_slice),
            Some(&value[..]),
            "key {key:?}"
        );
    }
    for key in ["/", "..", ""] {
        assert!(
            b.depersist(key).await.expect("depersist").is_some(),
            "delete {key:?}"
        );
    }
    let left = entries(&*b).await;
    assert_eq!(left.len(), expected.len() - 3);
    assert!(!left.contains_key("..") && !left.contains_key("") && left.contains_key("."));
}

/// Persisting an existing key replaces its value.
pub async fn overwrite_replaces_value(ctx: &Ctx) {
    let b = ctx.backend("overwrite").await;
    b.persist("k", bytes("one")).await.expect("persist");
    b.persist("k", bytes("two")).await.expect("persist");
    let stored = entries(&*b).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored["k"], bytes("two"));
}

/// Depersist removes the key; a second depersist finds nothing.
pub async fn depersist_removes_key(ctx: &Ctx) {
    let b = ctx.backend("depersist").await;
    b.persist("k", bytes("v")).await.expect("persist");
    b.persist("other", bytes("v")).await.expect("persist");
    assert!(b.depersist("k").await.expect("depersist").is_some());
    assert!(!entries(&*b).await.contains_key("k"));
    assert!(b.depersist("k").await.expect("depersist").is_none());
    assert!(entries(&*b).await.contains_key("other"));
}

/// A key never written is absent from loads and snapshots.
pub async fn missing_key_is_absent(ctx: &Ctx) {
    let b = ctx.backend("missing").await;
    assert!(entries(&*b).await.is_empty());
    let d = ctx.dict("missing", Mode::Manual).await;
    assert!(d.snapshot().get("nope").is_none());
    assert!(d.snapshot().is_empty());
}

/// `durables` returns exactly the entries of the state its token names, even while a writer is
/// busy.
pub async fn load_is_consistent_with_its_token(ctx: &Ctx) {
    let writer = ctx.backend("consistent").await;
    let reader = ctx.backend("consistent").await;
    let start = token(&*writer).await;
    let writes = 60u64;
    let task = tokio::spawn(async move {
        for i in 0..writes {
            writer
                .persist(&format!("k{i}"), bytes(i.to_string()))
                .await
                .expect("persist");
        }
    });
    loop {
        let done = task.is_finished();
        let load = reader.durables().await.expect("durables");
        assert_eq!(load.version.epoch(), start.epoch());
        let n = load.version.counter() - start.counter();
        let keys: HashSet<String> = load.entries.iter().map(|e| e.key.clone()).collect();
        let expected: HashSet<String> = (0..n).map(|i| format!("k{i}")).collect();
        assert_eq!(
            keys, expected,
            "load at {} does not match its token",
            load.version
        );
        for entry in &load.entries {
            let i: u64 = entry.key[1..].parse().expect("key");
            assert_eq!(
                entry.revision,
                Revision(start.counter() + i + 1),
                "revision of {}",
                entry.key
            );
        }
        if done {
            break;
        }
    }
    task.await.expect("writer");
}

// ---------------------------------------------------------------------------------------------
// Handles

/// A manual-mode handle sees another handle's writes after `sync()`, not before.
pub async fn two_handles_manual_mode(ctx: &Ctx) {
    let a = ctx.dict("manual", Mode::Manual).await;
    let b = ctx.dict("manual", Mode::Manual).await;
    a.insert("k", b"1".to_vec()).await.expect("insert");
    assert!(
        b.snapshot().get("k").is_none(),
        "manual mode read without a sync"
    );
    assert!(
        b.read().await.get("k").is_none(),
        "manual mode read() does not sync"
    );
    assert_eq!(b.sync().await.expect("sync").get("k"), Some(&b"1".to_vec()));
    a.insert("k", b"2".to_vec()).await.expect("insert");
    a.insert("j", b"3".to_vec()).await.expect("insert");
    assert!(a.remove("k").await.expect("remove").is_some());
    let snapshot = b.sync().await.expect("sync");
    assert!(snapshot.get("k").is_none());
    assert_eq!(snapshot.get("j"), Some(&b"3".to_vec()));
    assert_eq!(snapshot.version(), a.snapshot().version());
}

/// An autosync-mode handle sees every write acknowledged before its read began.
pub async fn two_handles_autosync_mode(ctx: &Ctx) {
    let a = ctx.dict("auto", Mode::Manual).await;
    let b = ctx.dict("auto", Mode::autosync()).await;
    for i in 0..5u8 {
        a.insert("k", vec![i]).await.expect("insert");
        assert_eq!(b.read().await.get("k"), Some(&vec![i]));
    }
    a.remove("k").await.expect("remove");
    assert!(b.read().await.get("k").is_none());
}

/// After its own write, a handle's snapshot has the write, without a reload; a sync then adds
/// what other processes wrote meanwhile.
pub async fn read_your_writes(ctx: &Ctx) {
    let a = ctx.dict("ryw", Mode::Manual).await;
    let other = ctx.backend("ryw").await;
    a.insert("mine", b"1".to_vec()).await.expect("insert");
    assert_eq!(a.snapshot().get("mine"), Some(&b"1".to_vec()));
    let before = a.stats();
    a.sync().await.expect("sync");
    let after = a.stats();
    assert_eq!(after.reloads, before.reloads, "own write caused a reload");
    assert_eq!(after.deltas, before.deltas, "own write caused a delta");
    other.persist("theirs", bytes("2")).await.expect("persist");
    a.insert("mine2", b"3".to_vec()).await.expect("insert");
    assert_eq!(a.snapshot().get("mine2"), Some(&b"3".to_vec()));
    let snapshot = a.sync().await.expect("sync");
    assert_eq!(snapshot.get("theirs"), Some(&b"2".to_vec()));
    assert_eq!(snapshot.get("mine2"), Some(&b"3".to_vec()));
    assert_eq!(snapshot.version(), token(&*other).await);
    let removed = a
        .remove("mine")
        .await
        .expect("remove")
        .expect("mine existed");
    assert!(a.snapshot().get("mine").is_none());
    assert_eq!(
        a.snapshot().version(),
        removed,
        "the snapshot is at the delete's token"
    );
}

// ---------------------------------------------------------------------------------------------
// Delta

/// `changes_since` returns every key written or deleted after the token, and the new token.
pub async fn delta_reports_inserts_updates_and_deletes(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().delta, "delta") {
        return;
    }
    let b = ctx.backend("delta").await;
    for k in ["a", "b", "c"] {
        b.persist(k, bytes(k)).await.expect("persist");
    }
    let t = token(&*b).await;
    b.persist("a", bytes("a2")).await.expect("persist");
    b.depersist("b").await.expect("depersist");
    b.persist("d", bytes("d")).await.expect("persist");
    let Changes::Delta(delta) = b.changes_since(t).await.expect("changes") else {
        panic!("a recent token was answered TooOld");
    };
    assert_eq!(delta.version, token(&*b).await);
    let upserts: BTreeMap<String, Bytes> = delta
        .upserts
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    let expected: BTreeMap<String, Bytes> = [
        ("a".to_string(), bytes("a2")),
        ("d".to_string(), bytes("d")),
    ]
    .into();
    assert_eq!(upserts, expected);
    let removals: Vec<&str> = delta.removals.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(removals, vec!["b"]);

    let d = ctx.dict("delta-engine", Mode::Manual).await;
    let w = ctx.backend("delta-engine").await;
    w.persist("x", bytes("1")).await.expect("persist");
    w.persist("y", bytes("2")).await.expect("persist");
    let before = d.stats();
    let snapshot = d.sync().await.expect("sync");
    assert_eq!(snapshot.len(), 2);
    assert_eq!(
        d.stats().deltas,
        before.deltas + 1,
        "the handle used a delta"
    );
    assert_eq!(
        d.stats().reloads,
        before.reloads,
        "the handle did not reload"
    );
}

/// The delta since the current token is empty.
pub async fn delta_of_current_token_is_empty(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().delta, "delta") {
        return;
    }
    let b = ctx.backend("delta-now").await;
    b.persist("a", bytes("1")).await.expect("persist");
    b.depersist("a").await.expect("depersist");
    let t = token(&*b).await;
    match b.changes_since(t).await.expect("changes") {
        Changes::Delta(delta) => {
            assert_eq!(delta.version, t);
            assert!(
                delta.upserts.is_empty() && delta.removals.is_empty(),
                "{delta:?}"
            );
        }
        Changes::TooOld => panic!("the current token was answered TooOld"),
    }
}

/// A token from another epoch, or older than the retained history, gets `TooOld`; handles then
/// reload in full and end up correct.
pub async fn delta_falls_back_when_too_old(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().delta, "delta") {
        return;
    }
    let b = ctx.backend("too-old").await;
    let d = ctx.dict("too-old", Mode::Manual).await;
    b.persist("a", bytes("1")).await.expect("persist");
    let t = token(&*b).await;
    let foreign = Version::stamped(t.epoch() ^ 1, t.counter(), t.stamp(), t.parent());
    assert_eq!(
        b.changes_since(foreign).await.expect("changes"),
        Changes::TooOld
    );
    if ctx.capabilities().stamps {
        let other_history = Version::stamped(t.epoch(), t.counter(), t.stamp() ^ 1, t.parent());
        assert_eq!(
            b.changes_since(other_history).await.expect("changes"),
            Changes::TooOld,
            "a token whose stamp is not the one recorded for its counter was served a delta"
        );
        let ahead = Version::stamped(t.epoch(), t.counter() + 5, t.stamp(), t.parent());
        assert_eq!(
            b.changes_since(ahead).await.expect("changes"),
            Changes::TooOld,
            "a token ahead of the store was served a delta"
        );
    }
    b.persist("b", bytes("2")).await.expect("persist");
    b.depersist("a").await.expect("depersist");
    d.sync().await.expect("sync");
    b.persist("c", bytes("3")).await.expect("persist");
    b.depersist("b").await.expect("depersist");
    ctx.harness
        .forget_history(&ctx.namespace, &Ctx::name("too-old"))
        .await
        .expect("forget history");
    assert_eq!(b.changes_since(t).await.expect("changes"), Changes::TooOld);
    let before = d.stats();
    let snapshot = d.sync().await.expect("sync");
    let keys: Vec<&str> = snapshot.keys().collect();
    assert_eq!(keys, vec!["c"]);
    assert_eq!(
        d.stats().reloads,
        before.reloads + 1,
        "the handle reloaded in full"
    );
}

// ---------------------------------------------------------------------------------------------
// Conditional writes

/// Insert-if-absent stores an absent key and leaves a present one alone.
pub async fn insert_if_absent_keeps_existing(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().insert_if_absent, "insert_if_absent") {
        return;
    }
    let b = ctx.backend("setdefault").await;
    let v = match b
        .persist_if_absent("k", bytes("first"))
        .await
        .expect("insert")
    {
        IfAbsent::Inserted(v) => v,
        other => panic!("got {other:?}"),
    };
    match b
        .persist_if_absent("k", bytes("second"))
        .await
        .expect("insert")
    {
        IfAbsent::Present(entry) => {
            assert_eq!(entry.value, bytes("first"));
            assert_eq!(entry.revision, v.revision());
        }
        other => panic!("got {other:?}"),
    }
    assert_eq!(entries(&*b).await["k"], bytes("first"));
    let d = ctx.dict("setdefault", Mode::Manual).await;
    assert_eq!(
        *d.setdefault("k", b"third".to_vec())
            .await
            .expect("setdefault"),
        b"first"
    );
    assert_eq!(
        *d.setdefault("new", b"x".to_vec())
            .await
            .expect("setdefault"),
        b"x"
    );
    assert_eq!(d.snapshot().get("new"), Some(&b"x".to_vec()));
}

/// Compare-and-swap writes only when the entry's revision (or absence) matches.
pub async fn compare_and_swap_checks_revision(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().compare_and_swap, "compare_and_swap") {
        return;
    }
    let b = ctx.backend("cas").await;
    let Swap::Swapped(v1) = b
        .compare_and_swap("k", None, Some(bytes("a")))
        .await
        .expect("cas")
    else {
        panic!("cas expecting absence on an absent key failed");
    };
    match b
        .compare_and_swap("k", None, Some(bytes("b")))
        .await
        .expect("cas")
    {
        Swap::Conflict(Some(entry)) => {
            assert_eq!(entry.value, bytes("a"));
            assert_eq!(entry.revision, v1.revision());
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let Swap::Swapped(v2) = b
        .compare_and_swap("k", Some(v1.revision()), Some(bytes("b")))
        .await
        .expect("cas")
    else {
        panic!("cas with the current revision failed");
    };
    let stale = b
        .compare_and_swap("k", Some(v1.revision()), None)
        .await
        .expect("cas");
    assert!(matches!(stale, Swap::Conflict(Some(_))), "got {stale:?}");
    assert!(matches!(
        b.compare_and_swap("k", Some(v2.revision()), None)
            .await
            .expect("cas"),
        Swap::Swapped(_)
    ));
    assert!(!entries(&*b).await.contains_key("k"));

    let d = ctx.dict("cas", Mode::Manual).await;
    d.insert("n", b"1".to_vec()).await.expect("insert");
    let current = d.snapshot().get_versioned("n").expect("present");
    assert!(matches!(
        d.compare_and_swap("n", Some(current.revision), Some(b"2".to_vec()))
            .await,
        Ok(crate::Cas::Swapped { .. })
    ));
    assert!(matches!(
        d.compare_and_swap("n", Some(current.revision), Some(b"3".to_vec()))
            .await,
        Ok(crate::Cas::Conflict { current: Some(_) })
    ));
    assert_eq!(d.snapshot().get("n"), Some(&b"2".to_vec()));
    let updated = d
        .update("n", |v| v.map(|v| [v.as_slice(), b"+"].concat()))
        .await
        .expect("update");
    assert_eq!(updated.as_deref(), Some(&b"2+".to_vec()));
}

/// Of many concurrent compare-and-swaps from the same revision, exactly one wins.
pub async fn concurrent_compare_and_swap_has_one_winner(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().compare_and_swap, "compare_and_swap") {
        return;
    }
    let tasks = 6;
    let mut backends = Vec::new();
    for _ in 0..tasks {
        backends.push(Arc::new(ctx.backend("cas-race").await));
    }
    let mut expected: Option<Revision> = None;
    for round in 0..5 {
        let barrier = Arc::new(tokio::sync::Barrier::new(tasks));
        let mut handles = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let (b, barrier) = (b.clone(), barrier.clone());
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                let value = bytes(format!("{round}-{i}"));
                b.compare_and_swap("k", expected, Some(value))
                    .await
                    .expect("cas")
            }));
        }
        let mut winners = Vec::new();
        for h in handles {
            if let Swap::Swapped(v) = h.await.expect("task") {
                winners.push(v);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        expected = Some(winners[0].revision());
    }
}

/// Pop deletes the key and returns its value, in one step.
pub async fn pop_returns_and_deletes(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().pop, "pop") {
        return;
    }
    let b = ctx.backend("pop").await;
    let v = b.persist("k", bytes("v")).await.expect("persist");
    let (value, w) = b.pop("k").await.expect("pop").expect("k existed");
    assert_eq!(value, bytes("v"));
    assert_eq!(w.counter(), v.counter() + 1);
    assert!(!entries(&*b).await.contains_key("k"));
    assert_eq!(b.pop("k").await.expect("pop"), None);
    let d = ctx.dict("pop", Mode::Manual).await;
    d.insert("p", b"x".to_vec()).await.expect("insert");
    let (value, popped) = d.pop("p").await.expect("pop").expect("p existed");
    assert_eq!(value, b"x".to_vec());
    assert!(d.snapshot().get("p").is_none());
    assert_eq!(popped, token(&*b).await, "pop returns the token it wrote");
}

/// Increment adds to the stored decimal integer (absent counts as 0).
pub async fn increment_adds_atomically(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().increment, "increment") {
        return;
    }
    let b = ctx.backend("incr").await;
    assert_eq!(b.increment("k", 5).await.expect("increment").0, 5);
    assert_eq!(b.increment("k", -7).await.expect("increment").0, -2);
    assert_eq!(entries(&*b).await["k"], bytes("-2"));
    let d = ctx.counters("incr", Mode::Manual).await;
    assert_eq!(d.snapshot().get("k"), Some(&-2));
    let (value, written) = d.increment("k", 10).await.expect("increment");
    assert_eq!(value, 8);
    assert_eq!(d.snapshot().get("k"), Some(&8));
    assert_eq!(
        written,
        token(&*b).await,
        "increment returns the token it wrote"
    );
}

/// Increment of a value that is not a decimal integer, or that would overflow, fails with
/// `NotAnInteger` and writes nothing.
pub async fn increment_rejects_non_integers(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().increment, "increment") {
        return;
    }
    let b = ctx.backend("incr-bad").await;
    b.persist("text", bytes("abc")).await.expect("persist");
    b.persist("max", bytes(i64::MAX.to_string()))
        .await
        .expect("persist");
    let t = token(&*b).await;
    for key in ["text", "max"] {
        let result = b.increment(key, 1).await;
        assert!(
            matches!(result, Err(Error::NotAnInteger { .. })),
            "{key}: {result:?}"
        );
    }
    assert_eq!(token(&*b).await, t, "a failed increment bumped");
    assert_eq!(entries(&*b).await["text"], bytes("abc"));
}

/// Concurrent increments from many handles lose no update.
pub async fn concurrent_increments_lose_nothing(ctx: &Ctx) {
    if ctx.skip_unless(
        ctx.capabilities().increment || ctx.capabilities().compare_and_swap,
        "increment or compare_and_swap",
    ) {
        return;
    }
    let (tasks, each) = (6, 15);
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let d = ctx.counters("incr-race", Mode::Manual).await;
        handles.push(tokio::spawn(async move {
            for _ in 0..each {
                d.increment("n", 1).await.expect("increment");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let d = ctx.counters("incr-race", Mode::Manual).await;
    assert_eq!(d.snapshot().get("n"), Some(&(tasks * each)));
}

/// A batch applies every operation in order with one version bump.
pub async fn batch_writes_all_keys_with_one_bump(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().batch, "batch") {
        return;
    }
    let b = ctx.backend("batch").await;
    b.persist("gone", bytes("x")).await.expect("persist");
    let t = token(&*b).await;
    let ops = vec![
        BatchOp::Put {
            key: "a".into(),
            value: bytes("1"),
        },
        BatchOp::Put {
            key: "b".into(),
            value: bytes("2"),
        },
        BatchOp::Delete { key: "gone".into() },
        BatchOp::Put {
            key: "a".into(),
            value: bytes("3"),
        },
        BatchOp::Delete { key: "b".into() },
    ];
    let v = b.persist_batch(ops).await.expect("batch").expect("changed");
    assert_step(ctx, v, t);
    let expected: BTreeMap<String, Bytes> = [("a".to_string(), bytes("3"))].into();
    assert_eq!(entries(&*b).await, expected);
    let d = ctx.dict("batch", Mode::Manual).await;
    let many: Vec<(String, Vec<u8>)> = (0..100).map(|i| (format!("m{i}"), vec![i as u8])).collect();
    d.insert_many(many).await.expect("insert_many");
    assert_eq!(d.snapshot().len(), 101);
    d.remove_many((0..50).map(|i| format!("m{i}")))
        .await
        .expect("remove_many");
    assert_eq!(d.snapshot().len(), 51);
    assert_eq!(entries(&*b).await.len(), 51);
}

/// Readers see all of a batch or none of it; a batch with a rejected value writes nothing.
pub async fn batch_is_all_or_nothing(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().batch, "batch") {
        return;
    }
    let writer = ctx.backend("atomic").await;
    let reader = ctx.backend("atomic").await;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let batch_keys = keys.clone();
    let task = tokio::spawn(async move {
        for round in 0..25u32 {
            let ops = batch_keys
                .iter()
                .map(|k| BatchOp::Put {
                    key: k.clone(),
                    value: bytes(round.to_string()),
                })
                .collect();
            writer.persist_batch(ops).await.expect("batch");
        }
    });
    loop {
        let done = task.is_finished();
        let stored = entries(&*reader).await;
        let values: HashSet<&Bytes> = stored.values().collect();
        assert!(values.len() <= 1, "a load saw a partial batch: {values:?}");
        assert!(stored.is_empty() || stored.len() == keys.len());
        if done {
            break;
        }
    }
    task.await.expect("writer");
    if let Some(limit) = ctx.capabilities().max_value_size {
        let t = token(&*reader).await;
        let ops = vec![
            BatchOp::Put {
                key: "small".into(),
                value: bytes("1"),
            },
            BatchOp::Put {
                key: "huge".into(),
                value: Bytes::from(vec![0u8; limit + 1]),
            },
        ];
        assert!(reader.persist_batch(ops).await.is_err());
        assert_eq!(token(&*reader).await, t);
        assert!(!entries(&*reader).await.contains_key("small"));
    }
}

/// Clear deletes every entry with one bump, and deltas report the deletions.
pub async fn clear_deletes_everything(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().clear, "clear") {
        return;
    }
    let b = ctx.backend("clear").await;
    let d = ctx.dict("clear", Mode::Manual).await;
    b.persist("a", bytes("1")).await.expect("persist");
    b.persist("b", bytes("2")).await.expect("persist");
    let t = token(&*b).await;
    d.sync().await.expect("sync");
    let v = b.clear().await.expect("clear").expect("changed");
    assert_step(ctx, v, t);
    assert!(entries(&*b).await.is_empty());
    assert!(d.sync().await.expect("sync").is_empty());
    d.insert("c", b"3".to_vec()).await.expect("insert");
    assert!(d.clear().await.expect("clear").is_some());
    assert!(d.snapshot().is_empty());
    assert!(entries(&*b).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Push and failures

/// After `subscribe`, a write through another backend value produces a hint soon after, and a
/// background-mode handle picks the change up long before its polling interval.
pub async fn push_hint_follows_a_write(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().push, "push") {
        return;
    }
    let listener = ctx.backend("push").await;
    let writer = ctx.backend("push").await;
    let mut hints = listener.subscribe().await.expect("subscribe");
    writer.persist("k", bytes("1")).await.expect("persist");
    let hint = tokio::time::timeout(HINT_WAIT, hints.next()).await;
    assert!(
        matches!(hint, Ok(Some(Hint::Changed))),
        "no hint after a write: {hint:?}"
    );

    let options = options(Mode::background(Duration::from_secs(3600)));
    let d: Dict<Vec<u8>, Raw> = Dict::open(ctx.backend("push").await, Raw, options)
        .await
        .expect("open");
    writer.persist("k", bytes("2")).await.expect("persist");
    let deadline = tokio::time::Instant::now() + HINT_WAIT;
    while d.snapshot().get("k") != Some(&b"2".to_vec()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hint did not wake the handle"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An unreachable store gives `Unavailable` or `Timeout` errors in bounded time, never a panic,
/// and a handle cannot be opened on it without a backup.
pub async fn unavailable_store_gives_typed_errors(ctx: &Ctx) {
    let b = ctx
        .harness
        .open_unreachable(&ctx.namespace, &Ctx::name("down"))
        .await
        .expect("harness opens an unreachable backend");
    let limit = Duration::from_secs(30);
    let check = |what: &str, result: Result<()>| match result {
        Err(e) if e.is_unavailable() => {}
        other => panic!("{what} on an unreachable store gave {other:?}"),
    };
    let t = tokio::time::timeout(limit, b.last_updated())
        .await
        .expect("bounded");
    check("last_updated", t.map(drop));
    let l = tokio::time::timeout(limit, b.durables())
        .await
        .expect("bounded");
    check("durables", l.map(drop));
    let p = tokio::time::timeout(limit, b.persist("k", bytes("v")))
        .await
        .expect("bounded");
    check("persist", p.map(drop));
    let d = tokio::time::timeout(limit, b.depersist("k"))
        .await
        .expect("bounded");
    check("depersist", d.map(drop));
    if b.capabilities().expiry {
        let n = tokio::time::timeout(limit, b.now()).await.expect("bounded");
        check("now", n.map(drop));
        let e = tokio::time::timeout(limit, b.persist_expiring("k", bytes("v"), MINUTE))
            .await
            .expect("bounded");
        check("persist_expiring", e.map(drop));
        let s = tokio::time::timeout(limit, b.sweep())
            .await
            .expect("bounded");
        check("sweep", s.map(drop));
    }
    let options = Options::new().with_open_timeout(limit).with_timeout(limit);
    let opened = Dict::<Vec<u8>, Raw>::open(b, Raw, options).await;
    match opened {
        Err(e) if e.is_unavailable() => {}
        other => panic!("open on an unreachable store gave {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Expiry

const MINUTE: Duration = Duration::from_secs(60);

/// Polls `backend.now()` until the store's clock has passed `at`.
async fn wait_for_store_time(backend: &dyn Backend, at: StoreTime) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = backend.now().await.expect("now");
        if now > at {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store's clock did not pass {at} (now {now})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn expiry_of(load: &crate::Load, key: &str) -> Option<StoreTime> {
    load.entries
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("{key} is missing from durables"))
        .expires_at
}

/// `persist_expiring` stores the entry with the store's time of the write plus the TTL, and
/// `durables` and `changes_since` return that expiry with it; a later plain write of the key
/// removes the expiry, and entries written without a TTL have none.
pub async fn expiring_entry_carries_its_expiry(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().expiry, "expiry") {
        return;
    }
    let b = ctx.backend("ttl").await;
    b.persist("plain", bytes("p")).await.expect("persist");
    let before = token(&*b).await;
    let start = b.now().await.expect("now");
    let (version, expires_at) = b
        .persist_expiring("k", bytes("v"), MINUTE)
        .await
        .expect("persist_expiring");
    let end = b.now().await.expect("now");
    assert_eq!(version.counter(), before.counter() + 1, "one bump");
    assert!(
        start.add(MINUTE) <= expires_at && expires_at <= end.add(MINUTE),
        "expiry {expires_at} is not the store's time of the write ({start}..{end}) plus 60 s"
    );
    let load = b.durables().await.expect("durables");
    assert_eq!(expiry_of(&load, "k"), Some(expires_at));
    assert_eq!(expiry_of(&load, "plain"), None, "no TTL, no expiry");
    if ctx.capabilities().delta {
        let Changes::Delta(delta) = b.changes_since(before).await.expect("changes") else {
            panic!("a delta from the previous token");
        };
        let entry = delta
            .upserts
            .iter()
            .find(|e| e.key == "k")
            .expect("k in delta");
        assert_eq!(
            entry.expires_at,
            Some(expires_at),
            "the expiry travels in deltas"
        );
    }
    b.persist("k", bytes("w")).await.expect("persist");
    let load = b.durables().await.expect("durables");
    assert_eq!(
        expiry_of(&load, "k"),
        None,
        "a plain write makes the entry permanent"
    );
    let caps = ctx.capabilities();
    if caps.increment {
        b.persist_expiring("n", bytes("1"), MINUTE)
            .await
            .expect("persist_expiring");
        b.increment("n", 1).await.expect("increment");
        assert_eq!(expiry_of(&b.durables().await.expect("durables"), "n"), None);
    }
    if caps.batch {
        b.persist_expiring("m", bytes("1"), MINUTE)
            .await
            .expect("persist_expiring");
        let ops = vec![BatchOp::Put {
            key: "m".into(),
            value: bytes("2"),
        }];
        b.persist_batch(ops).await.expect("batch");
        assert_eq!(expiry_of(&b.durables().await.expect("durables"), "m"), None);
    }
    if caps.compare_and_swap {
        // The swap below succeeds only if "c" is stored at the revision of this write.
        let (written, _) = b
            .persist_expiring("c", bytes("1"), MINUTE)
            .await
            .expect("persist_expiring");
        let revision = Some(written.revision());
        let swap = b
            .compare_and_swap("c", revision, Some(bytes("2")))
            .await
            .expect("cas");
        assert!(matches!(swap, Swap::Swapped(_)), "{swap:?}");
        assert_eq!(expiry_of(&b.durables().await.expect("durables"), "c"), None);
    }
}

/// `now` reads the store's clock: it lies between the store's times of writes made around it.
pub async fn store_clock_is_close(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().expiry, "expiry") {
        return;
    }
    let b = ctx.backend("clock").await;
    let (_, first) = b
        .persist_expiring("a", bytes("1"), Duration::ZERO)
        .await
        .expect("persist_expiring");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = b.now().await.expect("now");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_, last) = b
        .persist_expiring("b", bytes("1"), Duration::ZERO)
        .await
        .expect("persist_expiring");
    assert!(
        first <= now && now <= last,
        "now() = {now} is not between the writes around it ({first}, {last})"
    );
    let local = StoreTime::from_system_time(std::time::SystemTime::now());
    assert!(
        now.0.abs_diff(local.0) < 3_600_000,
        "the store's clock ({now}) is more than an hour from this machine's ({local})"
    );
}

/// `sweep` deletes exactly the expired entries, in one step with one bump, records them as
/// deletes for deltas, and returns their keys; a sweep with nothing expired bumps nothing.
pub async fn sweep_removes_only_expired_entries(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().expiry, "expiry") {
        return;
    }
    let b = ctx.backend("sweep").await;
    b.persist("permanent", bytes("p")).await.expect("persist");
    b.persist_expiring("long", bytes("l"), Duration::from_secs(3600))
        .await
        .expect("persist_expiring");
    let t = token(&*b).await;
    assert_eq!(b.sweep().await.expect("sweep"), None, "nothing expired yet");
    assert_eq!(token(&*b).await, t, "an empty sweep bumped");
    let mut expired_at = StoreTime(0);
    for key in ["short1", "short2"] {
        let (_, at) = b
            .persist_expiring(key, bytes("s"), Duration::from_millis(200))
            .await
            .expect("persist_expiring");
        expired_at = expired_at.max(at);
    }
    wait_for_store_time(&*b, expired_at).await;
    let before = token(&*b).await;
    assert_eq!(
        entries(&*b).await.len(),
        4,
        "expired entries stay stored until a sweep"
    );
    let swept = b
        .sweep()
        .await
        .expect("sweep")
        .expect("two entries expired");
    let mut keys = swept.keys.clone();
    keys.sort();
    assert_eq!(keys, ["short1", "short2"]);
    assert_eq!(swept.version.counter(), before.counter() + 1, "one bump");
    assert_eq!(token(&*b).await, swept.version);
    let left: Vec<String> = entries(&*b).await.into_keys().collect();
    assert_eq!(left, ["long", "permanent"]);
    if ctx.capabilities().delta {
        let Changes::Delta(delta) = b.changes_since(before).await.expect("changes") else {
            panic!("a delta from the token before the sweep");
        };
        let mut removed: Vec<String> = delta.removals.into_iter().map(|(k, _)| k).collect();
        removed.sort();
        assert_eq!(
            removed,
            ["short1", "short2"],
            "swept keys are deletes in deltas"
        );
        assert!(delta.upserts.is_empty());
    }
    assert_eq!(b.sweep().await.expect("sweep"), None);
    assert_eq!(token(&*b).await, swept.version);
}

/// An entry with a TTL disappears from every handle's reads once it expires, with no sync (the
/// expiry travelled with the entry); a sweep by any handle then removes it from the store, and
/// the other handles and their listeners see a delete.
pub async fn expired_entry_is_hidden_by_every_handle(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().expiry, "expiry") {
        return;
    }
    let ttl = Duration::from_millis(1500);
    let a = ctx.dict("ttl-read", Mode::Manual).await;
    let b = ctx.dict("ttl-read", Mode::Manual).await;
    a.insert("keep", b"k".to_vec()).await.expect("insert");
    a.insert_with_ttl("gone", b"g".to_vec(), ttl)
        .await
        .expect("insert_with_ttl");
    let seen = b.sync().await.expect("sync");
    assert_eq!(
        seen.get("gone"),
        Some(&b"g".to_vec()),
        "visible before it expires"
    );
    assert!(seen.expires_at("gone").is_some());
    assert_eq!(seen.expires_at("keep"), None);
    drop(seen);
    let mut listener = a.subscribe();
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    for (name, dict) in [("writer", &a), ("reader", &b)] {
        let snapshot = dict.snapshot();
        assert_eq!(
            snapshot.get("gone"),
            None,
            "{name} still shows the expired entry"
        );
        assert!(!snapshot.contains_key("gone"));
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot.keys().collect::<Vec<_>>(), ["keep"]);
    }
    let before = b.snapshot().version();
    assert_eq!(b.sweep().await.expect("sweep"), 1);
    assert_ne!(
        b.snapshot().version(),
        before,
        "the sweep bumped the version"
    );
    let backend = ctx.backend("ttl-read").await;
    assert!(
        !entries(&*backend).await.contains_key("gone"),
        "swept from the store"
    );
    assert_eq!(
        a.sync().await.expect("sync").version(),
        b.snapshot().version()
    );
    let change = tokio::time::timeout(HINT_WAIT, listener.recv())
        .await
        .expect("a change event")
        .expect("an event");
    assert_eq!(&*change.key, "gone");
    assert_eq!(change.kind, ChangeKind::Removed);
}

/// Writes through a handle whose snapshot holds an expired entry sweep the store soon after,
/// without anyone calling `sweep`.
pub async fn writes_sweep_expired_entries_lazily(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().expiry, "expiry") {
        return;
    }
    let a = ctx.dict("ttl-lazy", Mode::Manual).await;
    a.insert_with_ttl("gone", b"g".to_vec(), Duration::from_millis(300))
        .await
        .expect("insert_with_ttl");
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.insert("other", b"o".to_vec()).await.expect("insert");
    let backend = ctx.backend("ttl-lazy").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while entries(&*backend).await.contains_key("gone") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a write did not sweep the expired entry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(entries(&*backend).await.contains_key("other"));
}

/// A key whose entry has expired is absent for conditional writes too: insert-if-absent stores,
/// an increment starts from 0, and a delete reports it absent.
pub async fn expired_key_is_absent_for_conditional_writes(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().expiry, "expiry") {
        return;
    }
    let caps = ctx.capabilities();
    let d = ctx.counters("ttl-cond", Mode::Manual).await;
    let ttl = Duration::from_millis(300);
    for key in ["a", "n", "r"] {
        d.insert_with_ttl(key, 41, ttl)
            .await
            .expect("insert_with_ttl");
    }
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    if caps.insert_if_absent {
        assert!(d.insert_if_absent("a", 1).await.expect("insert_if_absent"));
        assert_eq!(d.snapshot().get("a"), Some(&1));
    }
    if caps.increment || caps.compare_and_swap {
        assert_eq!(d.increment("n", 1).await.expect("increment").0, 1);
    }
    assert!(
        d.remove("r").await.expect("remove").is_none(),
        "an expired key is absent"
    );
    let backend = ctx.backend("ttl-cond").await;
    let stored = backend.durables().await.expect("durables");
    assert!(
        stored.entries.iter().all(|e| e.expires_at.is_none()),
        "what is left is permanent: {stored:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Sets

/// A set adds, removes and tests members, syncs to other handles like a dictionary, and adding a
/// present member bumps nothing (where the backend has insert-if-absent).
pub async fn set_insert_remove_contains(ctx: &Ctx) {
    let a = ctx.set("set", Mode::Manual).await;
    let b = ctx
        .set(
            "set",
            Mode::Autosync {
                max_staleness: Duration::ZERO,
            },
        )
        .await;
    for member in ["ada", "grace", "a \"quoted\" /key"] {
        assert!(
            a.insert(member.to_owned()).await.expect("insert"),
            "{member} is new"
        );
    }
    let version = a.snapshot().version();
    assert!(
        !a.insert("ada".to_owned()).await.expect("insert"),
        "ada was present"
    );
    if ctx.capabilities().insert_if_absent {
        assert_eq!(
            a.snapshot().version(),
            version,
            "adding a member again bumped"
        );
    }
    assert!(b.contains(&"grace".to_owned()).await);
    assert_eq!(b.len().await, 3);
    assert!(a.remove(&"grace".to_owned()).await.expect("remove"));
    assert!(
        !a.remove(&"grace".to_owned()).await.expect("remove"),
        "already gone"
    );
    assert!(
        !b.contains(&"grace".to_owned()).await,
        "autosync sees the removal"
    );
    let mut members: Vec<String> = b.read().await.iter().cloned().collect();
    members.sort();
    assert_eq!(members, ["a \"quoted\" /key", "ada"]);
    assert!(!b.is_empty().await);
    let stored = entries(&*ctx.backend("set").await).await;
    assert!(
        stored.contains_key("\"ada\""),
        "members are stored under their JSON text"
    );
}

/// `insert_many` and `remove_many` change every member in one atomic step with one bump.
pub async fn set_batch_is_one_atomic_step(ctx: &Ctx) {
    if ctx.skip_unless(ctx.capabilities().batch, "batch") {
        return;
    }
    let a = ctx.set("set-batch", Mode::Manual).await;
    let b = ctx.set("set-batch", Mode::Manual).await;
    let start = a.snapshot().version();
    let members = ["x", "y", "z"].map(String::from);
    let added = a
        .insert_many(members.clone())
        .await
        .expect("insert_many")
        .expect("a bump");
    assert_eq!(
        added.counter(),
        start.counter() + 1,
        "one bump for three members"
    );
    let seen = b.sync().await.expect("sync");
    assert_eq!(seen.len(), 3);
    assert_eq!(seen.version(), added);
    let removed = a
        .remove_many(&members[..2])
        .await
        .expect("remove_many")
        .expect("a bump");
    assert_eq!(removed.counter(), added.counter() + 1);
    assert_eq!(
        a.remove_many(&members[..2]).await.expect("remove_many"),
        None,
        "removing absent members bumps nothing"
    );
    let seen = b.sync().await.expect("sync");
    assert_eq!(seen.iter().collect::<Vec<_>>(), [&"z".to_owned()]);
}

// ---------------------------------------------------------------------------------------------
// Sharded counters

fn can_count(ctx: &Ctx) -> bool {
    let caps = ctx.capabilities();
    !ctx.skip_unless(
        caps.increment || caps.compare_and_swap,
        "increment or compare_and_swap",
    )
}

/// A sharded counter's value is the sum of its shards, the same from every handle, with at most
/// one key per shard.
pub async fn sharded_counter_sums_its_shards(ctx: &Ctx) {
    if !can_count(ctx) {
        return;
    }
    let a = ctx.counters("sharded", Mode::Manual).await;
    let b = ctx.counters("sharded", Mode::Manual).await;
    let on_a = ShardedCounter::new(&a, "views", 16).expect("counter");
    let on_b = ShardedCounter::new(&b, "views", 16).expect("counter");
    let mut expected = 0;
    for i in 0..40 {
        on_a.increment(i).await.expect("increment");
        expected += i;
    }
    for writer in 0..20 {
        on_b.increment_as(writer, -1).await.expect("increment_as");
        expected -= 1;
    }
    assert_eq!(on_a.sync().await.expect("sync"), expected);
    assert_eq!(on_b.sync().await.expect("sync"), expected);
    b.insert("views#x", 1000).await.expect("insert");
    b.insert("viewsfoo", 1000).await.expect("insert");
    assert_eq!(on_b.value(), expected, "other keys are not shards");
    let stored = entries(&*ctx.backend("sharded").await).await;
    let shards = stored
        .keys()
        .filter(|k| *k == "views" || k.starts_with("views#") && k[6..].parse::<u32>().is_ok())
        .count();
    assert!((2..=16).contains(&shards), "{shards} shard keys");
    assert!(ShardedCounter::new(&a, "bad#name", 4).is_err());
    assert!(ShardedCounter::new(&a, "views", 0).is_err());
}

/// Changing the shard count keeps the total, whichever handle uses which count.
pub async fn sharded_counter_keeps_total_when_resharded(ctx: &Ctx) {
    if !can_count(ctx) {
        return;
    }
    let a = ctx.counters("reshard", Mode::Manual).await;
    let b = ctx.counters("reshard", Mode::Manual).await;
    a.increment("hits", 5).await.expect("a plain counter");
    let wide = ShardedCounter::new(&a, "hits", 16).expect("counter");
    assert_eq!(wide.value(), 5, "a plain counter is shard 0");
    for writer in 0..16 {
        wide.increment_as(writer, 2).await.expect("increment");
    }
    assert_eq!(wide.value(), 37);
    let narrow = wide.with_shards(2).expect("reshard");
    assert_eq!(narrow.value(), 37, "fewer shards, same total");
    narrow.increment(3).await.expect("increment");
    let other = ShardedCounter::new(&b, "hits", 64).expect("counter");
    other.increment_as(63, 10).await.expect("increment");
    assert_eq!(other.sync().await.expect("sync"), 50);
    assert_eq!(narrow.sync().await.expect("sync"), 50);
}

/// Removing a sharded counter deletes every shard in one atomic step, leaving other keys alone.
pub async fn sharded_counter_remove_deletes_every_shard_at_once(ctx: &Ctx) {
    if !can_count(ctx) || ctx.skip_unless(ctx.capabilities().batch, "batch") {
        return;
    }
    let a = ctx.counters("shard-rm", Mode::Manual).await;
    let b = ctx.counters("shard-rm", Mode::Manual).await;
    let counter = ShardedCounter::new(&a, "jobs", 8).expect("counter");
    for writer in 0..8 {
        counter.increment_as(writer, 1).await.expect("increment");
    }
    let wider = ShardedCounter::new(&b, "jobs", 32).expect("counter");
    wider.increment_as(31, 1).await.expect("a shard beyond 8");
    b.insert("jobs-done", 7).await.expect("insert");
    let before = a.sync().await.expect("sync").version();
    let version = counter.remove().await.expect("remove").expect("a bump");
    assert_eq!(version.counter(), before.counter() + 1, "one atomic step");
    assert_eq!(counter.value(), 0);
    let stored = entries(&*ctx.backend("shard-rm").await).await;
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["jobs-done"]);
    assert_eq!(wider.sync().await.expect("sync"), 0);
    assert_eq!(
        counter.remove().await.expect("remove"),
        None,
        "nothing left"
    );
}

/// Property: the total of a sharded counter equals the sum of the increments the store
/// acknowledged, for many concurrent tasks with random deltas and shards, with the store's server
/// restarted once in the middle where the harness can ([`Harness::restart`]). An increment that
/// failed (only `Unavailable` or `Timeout` are allowed, and only around a restart) may or may not
/// have been applied before the connection dropped, so it widens the bound by its delta; one
/// refused with `Contention` (optimistic stores under load) wrote nothing.
pub async fn sharded_counter_total_matches_acknowledged_increments(ctx: &Ctx) {
    if !can_count(ctx) {
        return;
    }
    let seed: u64 = rand::random();
    eprintln!("sharded counter property: seed {seed}");
    let (tasks, each, shards) = (16u64, 40u64, 16u32);
    let options = options(Mode::Manual)
        .with_timeout(Duration::from_secs(5))
        .with_max_update_attempts(1000);
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut handles = Vec::new();
    for task in 0..tasks {
        let dict = ctx.counters_with("shard-prop", options.clone()).await;
        let progress = progress.clone();
        handles.push(tokio::spawn(async move {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ task);
            let counter = ShardedCounter::new(&dict, "total", shards).expect("counter");
            let (mut acknowledged, mut unknown, mut failed) = (0i64, 0i64, 0u64);
            for _ in 0..each {
                let delta = rng.random_range(1..=100);
                let result = if rng.random_bool(0.5) {
                    counter.increment(delta).await
                } else {
                    counter.increment_as(rng.random(), delta).await
                };
                match result {
                    Ok(()) => acknowledged += delta,
                    // Refused after too many optimistic attempts: nothing was written.
                    Err(Error::Contention { .. }) => {}
                    Err(error) => {
                        // The connection may have dropped after the store applied it.
                        assert!(error.is_unavailable(), "increment failed with {error:?}");
                        unknown += delta;
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            (acknowledged, unknown, failed)
        }));
    }
    let total_ops = tasks * each;
    while progress.load(std::sync::atomic::Ordering::SeqCst) < total_ops / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let restarted = ctx.restart().await;
    let (mut acknowledged, mut unknown, mut failed) = (0, 0, 0);
    for handle in handles {
        let (a, u, f) = handle.await.expect("task");
        acknowledged += a;
        unknown += u;
        failed += f;
    }
    eprintln!(
        "restarted: {restarted}, acknowledged {acknowledged}, unknown {unknown}, {failed} failed"
    );
    if !restarted {
        assert_eq!(
            (unknown, failed),
            (0, 0),
            "increments failed without a restart"
        );
    }
    let reader = ctx.counters("shard-prop", Mode::Manual).await;
    let total = ShardedCounter::new(&reader, "total", 1)
        .expect("counter")
        .value();
    assert!(
        acknowledged <= total && total <= acknowledged + unknown,
        "total {total}, acknowledged {acknowledged}, unknown outcome {unknown} (seed {seed})"
    );
    assert!(acknowledged > 0);
}
