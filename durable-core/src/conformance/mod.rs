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
//! // The capabilities the backend must declare: a rule needing one pinned `false` is ignored.
//! durable_core::conformance_tests!(harness, capabilities = {
//!     delta: true, push: false, insert_if_absent: true, compare_and_swap: true, pop: true,
//!     increment: true, batch: true, clear: true, expiry: false, stamps: true,
//! });
//! ```
//!
//! Each test runs in a fresh random namespace, cleaned up afterwards. Each first checks that
//! the backend declares exactly the pinned capabilities; rules that need a capability pinned
//! `false` are listed by `cargo test` as ignored, with the capability as the reason.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

mod capabilities;
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

pub use capabilities::*;
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

    /// Panics unless `capable`: a rule that needs capability `what` was run against a backend
    /// that does not declare it. ([`conformance_tests!`](crate::conformance_tests) marks such
    /// rules ignored instead of running them, so this only fires when a rule is run by hand.)
    #[track_caller]
    pub fn require(&self, capable: bool, what: &str) {
        assert!(
            capable,
            "this rule needs capability `{what}`, which the backend does not declare"
        );
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
    run_checked(harness, None, rule).await;
}

/// [`run`], after checking that the backend declares exactly the capabilities `pinned` (all
/// but [`max_value_size`](Capabilities::max_value_size), which is a limit, not a capability):
/// a backend that silently loses, or gains, a capability fails every rule. What
/// [`conformance_tests!`](crate::conformance_tests) runs.
pub async fn run_pinned<H, F, Fut>(harness: Option<H>, pinned: Capabilities, rule: F)
where
    H: Harness,
    F: FnOnce(Arc<Ctx>) -> Fut,
    Fut: Future<Output = ()>,
{
    run_checked(harness, Some(pinned), rule).await;
}

async fn run_checked<H, F, Fut>(harness: Option<H>, pinned: Option<Capabilities>, rule: F)
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
    if let Some(pinned) = pinned {
        assert_pinned(probe.name(), probe.capabilities(), pinned);
    }
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

/// Panics, naming each difference, unless `declared` has exactly the capabilities `pinned`.
#[track_caller]
fn assert_pinned(backend: &str, declared: Capabilities, pinned: Capabilities) {
    // Destructured, so that a capability added to the struct must be added here.
    let Capabilities {
        delta,
        push,
        insert_if_absent,
        compare_and_swap,
        pop,
        increment,
        batch,
        clear,
        expiry,
        stamps,
        max_value_size: _,
    } = declared;
    let differences: Vec<String> = [
        ("delta", delta, pinned.delta),
        ("push", push, pinned.push),
        (
            "insert_if_absent",
            insert_if_absent,
            pinned.insert_if_absent,
        ),
        (
            "compare_and_swap",
            compare_and_swap,
            pinned.compare_and_swap,
        ),
        ("pop", pop, pinned.pop),
        ("increment", increment, pinned.increment),
        ("batch", batch, pinned.batch),
        ("clear", clear, pinned.clear),
        ("expiry", expiry, pinned.expiry),
        ("stamps", stamps, pinned.stamps),
    ]
    .into_iter()
    .filter(|(_, declared, pinned)| declared != pinned)
    .map(|(name, declared, _)| match declared {
        true => format!("declares `{name}`, which its test does not pin"),
        false => format!("does not declare `{name}`, which its test pins"),
    })
    .collect();
    assert!(
        differences.is_empty(),
        "backend {backend} {}: update the backend or the capabilities its conformance test pins",
        differences.join(", ")
    );
}

/// Expands to one `#[tokio::test]` per conformance rule for a harness factory (an `async fn`
/// path returning `Option<impl Harness>`, `None` meaning "no server configured, skip"), given
/// the capabilities the backend must declare.
///
/// ```ignore
/// durable_core::conformance_tests!(harness, capabilities = {
///     delta: true, push: false, insert_if_absent: true, compare_and_swap: true, pop: true,
///     increment: true, batch: true, clear: true, expiry: false, stamps: true,
/// });
/// ```
///
/// Every capability is listed, in this order, as `true` or `false`:
/// - each test first checks that the backend declares exactly these capabilities
///   ([`run_pinned`](crate::conformance::run_pinned)), so one that silently loses (or gains)
///   one fails;
/// - a rule that needs a capability pinned `false` is generated with
///   `#[ignore = "capability `...` not declared"]`: `cargo test` lists it as ignored with that
///   reason, never as passed (`cargo test -- --ignored` runs it, and it fails).
///
/// Rules a backend cannot meet for a documented reason of its layout are listed after the
/// capabilities, each with its reason, and are generated ignored with that reason:
///
/// ```ignore
/// durable_core::conformance_tests!(harness, capabilities = { /* ... */ }, except = {
///     wipe_is_detected: "no epoch in this layout",
/// });
/// ```
///
/// Use it at most once per module. The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    (
        $factory:path,
        capabilities = {
            delta: $delta:tt,
            push: $push:tt,
            insert_if_absent: $insert_if_absent:tt,
            compare_and_swap: $compare_and_swap:tt,
            pop: $pop:tt,
            increment: $increment:tt,
            batch: $batch:tt,
            clear: $clear:tt,
            expiry: $expiry:tt,
            stamps: $stamps:tt $(,)?
        }
        $(, except = { $($except:ident: $why:tt),* $(,)? })?
        $(,)?
    ) => {
        $crate::conformance_tests!(@suite ($) $factory;
            [$delta $push $insert_if_absent $compare_and_swap $pop $increment $batch $clear
                $expiry $stamps];
            [$($($except: $why),*)?]);
    };
    // The rules and what each needs: a list of groups, each of which must hold a `true`.
    (@suite ($d:tt) $factory:path;
        [$delta:tt $push:tt $insert_if_absent:tt $compare_and_swap:tt $pop:tt $increment:tt
            $batch:tt $clear:tt $expiry:tt $stamps:tt];
        [$($except:ident: $why:tt),*]) => {
        macro_rules! __durable_conformance_rule {
            $(
                ($except; $d reason:tt; $d needs:tt) => {
                    $crate::conformance_tests!(@test $factory;
                        [$delta $push $insert_if_absent $compare_and_swap $pop $increment $batch
                            $clear $expiry $stamps];
                        $except; $why);
                };
            )*
            ($d rule:ident; $d reason:tt; $d needs:tt) => {
                $crate::conformance_tests!(@gate $factory;
                    [$delta $push $insert_if_absent $compare_and_swap $pop $increment $batch
                        $clear $expiry $stamps];
                    $d rule; $d reason; $d needs);
            };
        }
        __durable_conformance_rule!(version_is_stable_without_writes; ""; []);
        __durable_conformance_rule!(version_changes_on_every_write; ""; []);
        __durable_conformance_rule!(writes_step_the_counter_by_one; ""; []);
        __durable_conformance_rule!(no_op_writes_bump_nothing; ""; []);
        __durable_conformance_rule!(wipe_is_detected; ""; []);
        __durable_conformance_rule!(restore_is_detected; ""; []);
        __durable_conformance_rule!(restore_then_writes_past_old_counter_is_detected;
            "capability `stamps` not declared"; [($stamps)]);
        __durable_conformance_rule!(restore_keeps_read_your_writes; ""; []);
        __durable_conformance_rule!(damaged_version_record_is_a_wipe_or_writes_nothing; ""; []);
        __durable_conformance_rule!(bad_rows_cost_their_key_only; ""; []);
        __durable_conformance_rule!(declared_capabilities_work; ""; []);
        __durable_conformance_rule!(round_trip_binary; ""; []);
        __durable_conformance_rule!(round_trip_empty; ""; []);
        __durable_conformance_rule!(round_trip_unicode; ""; []);
        __durable_conformance_rule!(round_trip_large; ""; []);
        __durable_conformance_rule!(keys_are_arbitrary_strings; ""; []);
        __durable_conformance_rule!(overwrite_replaces_value; ""; []);
        __durable_conformance_rule!(depersist_removes_key; ""; []);
        __durable_conformance_rule!(missing_key_is_absent; ""; []);
        __durable_conformance_rule!(load_is_consistent_with_its_token; ""; []);
        __durable_conformance_rule!(load_in_parts_is_the_load; ""; []);
        __durable_conformance_rule!(two_handles_manual_mode; ""; []);
        __durable_conformance_rule!(two_handles_autosync_mode; ""; []);
        __durable_conformance_rule!(read_your_writes; ""; []);
        __durable_conformance_rule!(delta_reports_inserts_updates_and_deletes;
            "capability `delta` not declared"; [($delta)]);
        __durable_conformance_rule!(delta_of_current_token_is_empty;
            "capability `delta` not declared"; [($delta)]);
        __durable_conformance_rule!(delta_falls_back_when_too_old;
            "capability `delta` not declared"; [($delta)]);
        __durable_conformance_rule!(insert_if_absent_keeps_existing;
            "capability `insert_if_absent` not declared"; [($insert_if_absent)]);
        __durable_conformance_rule!(compare_and_swap_checks_revision;
            "capability `compare_and_swap` not declared"; [($compare_and_swap)]);
        __durable_conformance_rule!(concurrent_compare_and_swap_has_one_winner;
            "capability `compare_and_swap` not declared"; [($compare_and_swap)]);
        __durable_conformance_rule!(pop_returns_and_deletes;
            "capability `pop` not declared"; [($pop)]);
        __durable_conformance_rule!(increment_adds_atomically;
            "capability `increment` not declared"; [($increment)]);
        __durable_conformance_rule!(increment_rejects_non_integers;
            "capability `increment` not declared"; [($increment)]);
        __durable_conformance_rule!(concurrent_increments_lose_nothing;
            "neither `increment` nor `compare_and_swap` declared";
            [($increment $compare_and_swap)]);
        __durable_conformance_rule!(batch_writes_all_keys_with_one_bump;
            "capability `batch` not declared"; [($batch)]);
        __durable_conformance_rule!(batch_is_all_or_nothing;
            "capability `batch` not declared"; [($batch)]);
        __durable_conformance_rule!(clear_deletes_everything;
            "capability `clear` not declared"; [($clear)]);
        __durable_conformance_rule!(push_hint_follows_a_write;
            "capability `push` not declared"; [($push)]);
        __durable_conformance_rule!(unavailable_store_gives_typed_errors; ""; []);
        __durable_conformance_rule!(expiring_entry_carries_its_expiry;
            "capability `expiry` not declared"; [($expiry)]);
        __durable_conformance_rule!(store_clock_is_close;
            "capability `expiry` not declared"; [($expiry)]);
        __durable_conformance_rule!(sweep_removes_only_expired_entries;
            "capability `expiry` not declared"; [($expiry)]);
        __durable_conformance_rule!(expired_entry_is_hidden_by_every_handle;
            "capability `expiry` not declared"; [($expiry)]);
        __durable_conformance_rule!(writes_sweep_expired_entries_lazily;
            "capability `expiry` not declared"; [($expiry)]);
        __durable_conformance_rule!(expired_key_is_absent_for_conditional_writes;
            "capability `expiry` not declared"; [($expiry)]);
        __durable_conformance_rule!(set_insert_remove_contains; ""; []);
        __durable_conformance_rule!(set_batch_is_one_atomic_step;
            "capability `batch` not declared"; [($batch)]);
        __durable_conformance_rule!(sharded_counter_sums_its_shards;
            "neither `increment` nor `compare_and_swap` declared";
            [($increment $compare_and_swap)]);
        __durable_conformance_rule!(sharded_counter_keeps_total_when_resharded;
            "neither `increment` nor `compare_and_swap` declared";
            [($increment $compare_and_swap)]);
        __durable_conformance_rule!(sharded_counter_remove_deletes_every_shard_at_once;
            "needs `batch` and `increment` or `compare_and_swap`";
            [($increment $compare_and_swap) ($batch)]);
        __durable_conformance_rule!(sharded_counter_total_matches_acknowledged_increments;
            "neither `increment` nor `compare_and_swap` declared";
            [($increment $compare_and_swap)]);
    };
    // Every group held a `true`: the rule runs.
    (@gate $factory:path; $pinned:tt; $rule:ident; $reason:tt; []) => {
        $crate::conformance_tests!(@test $factory; $pinned; $rule);
    };
    (@gate $factory:path; $pinned:tt; $rule:ident; $reason:tt;
        [(true $($more:tt)*) $($groups:tt)*]) => {
        $crate::conformance_tests!(@gate $factory; $pinned; $rule; $reason; [$($groups)*]);
    };
    (@gate $factory:path; $pinned:tt; $rule:ident; $reason:tt;
        [(false $($more:tt)*) $($groups:tt)*]) => {
        $crate::conformance_tests!(@gate $factory; $pinned; $rule; $reason;
            [($($more)*) $($groups)*]);
    };
    // A group without a `true`: the rule is ignored, with its reason.
    (@gate $factory:path; $pinned:tt; $rule:ident; $reason:tt; [() $($groups:tt)*]) => {
        $crate::conformance_tests!(@test $factory; $pinned; $rule; $reason);
    };
    (@test $factory:path;
        [$delta:tt $push:tt $insert_if_absent:tt $compare_and_swap:tt $pop:tt $increment:tt
            $batch:tt $clear:tt $expiry:tt $stamps:tt];
        $rule:ident $(; $ignore:tt)?) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[ignore = $ignore])?
        async fn $rule() {
            let pinned = $crate::Capabilities::none()
                .with_delta($delta)
                .with_push($push)
                .with_insert_if_absent($insert_if_absent)
                .with_compare_and_swap($compare_and_swap)
                .with_pop($pop)
                .with_increment($increment)
                .with_batch($batch)
                .with_clear($clear)
                .with_expiry($expiry)
                .with_stamps($stamps);
            $crate::conformance::run_pinned($factory().await, pinned, |ctx| async move {
                $crate::conformance::$rule(&ctx).await
            })
            .await;
        }
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

/// Panics unless the backend can count (declares `increment` or `compare_and_swap`).
fn require_counting(ctx: &Ctx) {
    let caps = ctx.capabilities();
    ctx.require(
        caps.increment || caps.compare_and_swap,
        "increment or compare_and_swap",
    );
}
