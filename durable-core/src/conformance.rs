//! The backend conformance suite: one public async function per rule of the
//! [`Backend`](crate::Backend) contract, and [`conformance_tests!`](crate::conformance_tests) to
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
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    Backend, BatchOp, Capabilities, Changes, Dict, Error, Hint, IfAbsent, Json, Mode, Name,
    Options, Raw, Result, Revision, Swap, Version,
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
    async fn open_unreachable(&self, namespace: &Name, dictionary: &Name)
    -> Result<Box<dyn Backend>>;

    /// Removes everything stored under `namespace`; called after each test.
    async fn cleanup(&self, namespace: &Name) -> Result<()>;
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
        .with_trust_hints_for(None)
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
