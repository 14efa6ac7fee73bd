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

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

mod counters;
mod data;
mod delta;
mod expiry;
mod handles;
mod push;
mod restore;
mod sets;
mod tokens;
pub mod workload;
mod writes;

pub use counters::*;
pub use data::*;
pub use delta::*;
pub use expiry::*;
pub use handles::*;
pub use push::*;
pub use restore::*;
pub use sets::*;
pub use tokens::*;
pub use writes::*;

use crate::{
    Backend, Capabilities, Dict, DurableSet, Json, Mode, Name, Options, Raw, Result, Version,
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

/// A time to live long enough not to expire during a rule.
const MINUTE: Duration = Duration::from_secs(60);

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
