//! A writing and syncing workload over several handles that checks, while a fault happens
//! (a restore, a restart from an older snapshot, a failover, a killed leader), that tokens never
//! lie. Each backend's fault tests run it against a real server.
//!
//! Every writer task owns a few keys and writes increasing sequence numbers to them, so the
//! latest acknowledged value of each key is known. The workload counts:
//! - **duplicate tokens**: one token returned by two different acknowledged writes;
//! - **token collisions**: two reader syncs returning one token with different contents;
//! - **invisible own writes**: right after a write returned, its writer's snapshot lacks it;
//! - **stale syncs**: a sync that started after a write was acknowledged does not show it;
//! - and, at the end, handles that differ from a fresh handle after a final sync.
//!
//! The store itself may lose writes acknowledged before or during the fault (a snapshot restore
//! and asynchronous replication lose them by design; what durable promises is that every handle
//! notices and follows the store), so the two per-write checks apply when the write (sent and
//! acknowledged) and the check both happen before the fault starts, or both after it ended. Keys whose last
//! acknowledged value the store no longer holds at the end are counted apart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::{Dict, Raw, Version};

/// A handle as the workload uses it: raw bytes holding decimal sequence numbers.
pub type RawDict = Dict<Vec<u8>, Raw>;

/// What one run of [`Workload::run`] saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Writes acknowledged by the store.
    pub writes: u64,
    /// Writes that failed (store down during the fault).
    pub failed_writes: u64,
    /// Syncs by reader handles that succeeded.
    pub syncs: u64,
    /// Syncs that failed.
    pub failed_syncs: u64,
    /// Keys whose last acknowledged value the store no longer holds at the end (lost by the
    /// store's own replication or restore, not by durable).
    pub lost_by_store: u64,
    /// Per-write checks left out because the write or the check fell within the fault.
    pub unchecked: u64,
    /// Tokens returned by two different acknowledged writes.
    pub duplicate_tokens: u64,
    /// Tokens returned by reader syncs for two different contents.
    pub token_collisions: u64,
    /// Own writes missing from their writer's snapshot right after the write returned.
    pub invisible_own_writes: u64,
    /// Syncs that started after a write was acknowledged and did not show it.
    pub stale_syncs: u64,
    /// Handles that, after a final sync, differ from a fresh handle.
    pub divergent_handles: u64,
    /// Checks, summed over the handles, that found the store behind a state seen before and
    /// followed it ([`Stats::regressions`](crate::Stats::regressions)).
    pub regressions_followed: u64,
}

impl Report {
    /// The anomalies: everything that breaks durable's promises (0 when they hold).
    pub fn anomalies(&self) -> u64 {
        self.duplicate_tokens
            + self.token_collisions
            + self.invisible_own_writes
            + self.stale_syncs
            + self.divergent_handles
    }
}

/// The workload: writer and reader tasks over the given handles.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Writer tasks per writing handle.
    pub writers_per_handle: usize,
    /// Keys each writer task owns.
    pub keys_per_writer: usize,
    /// Pause between one task's operations.
    pub pause: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            writers_per_handle: 2,
            keys_per_writer: 4,
            pause: Duration::from_millis(1),
        }
    }
}

/// Phases of a run after the first (0, before the fault), for [`Shared::phase`].
const DURING: u64 = 1;
const AFTER: u64 = 2;

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// 0 before the fault, then [`DURING`] and [`AFTER`].
    phase: AtomicU64,
    unchecked: AtomicU64,
    writes: AtomicU64,
    failed_writes: AtomicU64,
    syncs: AtomicU64,
    failed_syncs: AtomicU64,
    duplicate_tokens: AtomicU64,
    token_collisions: AtomicU64,
    invisible_own_writes: AtomicU64,
    stale_syncs: AtomicU64,
    /// Token of each acknowledged write -> (key, sequence number).
    write_tokens: Mutex<HashMap<Version, (String, u64)>>,
    /// Token of each reader sync -> digest of the contents.
    sync_tokens: Mutex<HashMap<Version, u64>>,
    /// Latest acknowledged sequence number of each key, with the phase of its acknowledgement
    /// and its token.
    acked: Mutex<HashMap<String, (u64, u64, Version)>>,
}

impl Shared {
    fn phase(&self) -> u64 {
        self.phase.load(Ordering::SeqCst)
    }

    /// True if a check of a write acknowledged in phase `acked` can be judged now.
    fn checkable(&self, acked: u64) -> bool {
        let now = self.phase();
        if acked == now && acked != DURING {
            true
        } else {
            self.unchecked.fetch_add(1, Ordering::SeqCst);
            false
        }
    }
}

fn seq_of(value: Option<&Vec<u8>>) -> Option<u64> {
    std::str::from_utf8(value?).ok()?.parse().ok()
}

fn digest(d: &RawDict) -> u64 {
    use std::hash::{Hash, Hasher};
    let snapshot = d.snapshot();
    let mut items: Vec<_> = snapshot.iter().collect();
    items.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    items.hash(&mut hasher);
    hasher.finish()
}

impl Workload {
    /// Runs writer tasks on each of `writers` and reader tasks on each of `readers` but the last
    /// (handles in manual mode, opened by the caller, each with its own connection, ideally
    /// through different servers of a replicated store), starts `fault` once the work is going,
    /// stops the tasks `settle` after the fault returns, and checks every handle against one
    /// opened by `fresh`. The last reader (when there are two or more) stops syncing when the
    /// fault ends, until the final check, as a handle idle after the fault would.
    pub async fn run<Fault, Fresh, FreshFut>(
        &self,
        writers: Vec<RawDict>,
        readers: Vec<RawDict>,
        fault: Fault,
        settle: Duration,
        fresh: Fresh,
    ) -> Report
    where
        Fault: Future<Output = ()>,
        Fresh: FnOnce() -> FreshFut,
        FreshFut: Future<Output = RawDict>,
    {
        let shared = Arc::new(Shared::default());
        let mut tasks = Vec::new();
        let mut writer_id = 0;
        for d in &writers {
            for _ in 0..self.writers_per_handle {
                let keys: Vec<String> = (0..self.keys_per_writer)
                    .map(|k| format!("w{writer_id}-k{k}"))
                    .collect();
                writer_id += 1;
                tasks.push(tokio::spawn(write_loop(
                    d.clone(),
                    keys,
                    shared.clone(),
                    self.pause,
                )));
            }
        }
        // The last reader goes idle when the fault ends and syncs next at the end, after the
        // writers have taken the store past its old counter: if the fault lost the state it
        // held, only the stamps can tell it.
        for (i, d) in readers.iter().enumerate() {
            let idle_after_fault = readers.len() >= 2 && i == readers.len() - 1;
            tasks.push(tokio::spawn(read_loop(
                d.clone(),
                shared.clone(),
                self.pause,
                idle_after_fault,
            )));
        }
        // The workload runs for real time: half a second of traffic before the fault and
        // `settle` after it are the point.
        tokio::time::sleep(Duration::from_millis(500)).await;
        shared.phase.store(DURING, Ordering::SeqCst);
        fault.await;
        shared.phase.store(AFTER, Ordering::SeqCst);
        tokio::time::sleep(settle).await;
        shared.stop.store(true, Ordering::SeqCst);
        for task in tasks {
            task.await.expect("workload task panicked");
        }
        let reference = fresh().await;
        let expected = digest(&reference);
        let mut divergent = 0;
        let mut regressions_followed = 0;
        for d in writers.iter().chain(&readers) {
            regressions_followed += d.stats().regressions;
            let mut synced = false;
            for _ in 0..50 {
                if d.sync().await.is_ok() {
                    synced = true;
                    break;
                }
                // Retry for up to five seconds while the store comes back.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !synced
                || digest(d) != expected
                || d.snapshot().version() != reference.snapshot().version()
            {
                eprintln!(
                    "divergent handle: {} (fresh handle: {})",
                    d.snapshot().version(),
                    reference.snapshot().version()
                );
                divergent += 1;
            }
        }
        let final_snapshot = reference.snapshot();
        let lost_by_store = shared
            .acked
            .lock()
            .iter()
            .filter(|(key, (seq, _, _))| seq_of(final_snapshot.get(key.as_str())) != Some(*seq))
            .count();
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        Report {
            unchecked: get(&shared.unchecked),
            lost_by_store: u64::try_from(lost_by_store).unwrap_or(u64::MAX),
            writes: get(&shared.writes),
            failed_writes: get(&shared.failed_writes),
            syncs: get(&shared.syncs),
            failed_syncs: get(&shared.failed_syncs),
            duplicate_tokens: get(&shared.duplicate_tokens),
            token_collisions: get(&shared.token_collisions),
            invisible_own_writes: get(&shared.invisible_own_writes),
            stale_syncs: get(&shared.stale_syncs),
            divergent_handles: divergent,
            regressions_followed,
        }
    }
}

async fn write_loop(d: RawDict, keys: Vec<String>, shared: Arc<Shared>, pause: Duration) {
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        seq += 1;
        let key = &keys[usize::try_from(seq).unwrap_or(0) % keys.len()];
        let sent = shared.phase();
        match d.insert(key, seq.to_string().into_bytes()).await {
            Ok(token) => {
                // A write sent before the fault ended may have reached the store before a
                // restore and been acknowledged after it: judge it as a write of the fault.
                let phase = if shared.phase() == sent { sent } else { DURING };
                shared.writes.fetch_add(1, Ordering::SeqCst);
                if let Some(other) = shared.write_tokens.lock().insert(token, (key.clone(), seq)) {
                    eprintln!("token {token} returned for {other:?} and for {key}={seq}");
                    shared.duplicate_tokens.fetch_add(1, Ordering::SeqCst);
                }
                shared.acked.lock().insert(key.clone(), (seq, phase, token));
                let seen = seq_of(d.snapshot().get(key));
                if seen != Some(seq) && shared.checkable(phase) {
                    eprintln!("own write {key}={seq} ({token}) invisible to its writer: {seen:?}");
                    shared.invisible_own_writes.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(_) => {
                shared.failed_writes.fetch_add(1, Ordering::SeqCst);
                // Back off while the store is down.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // The writers' pace.
        tokio::time::sleep(pause).await;
    }
}

async fn read_loop(d: RawDict, shared: Arc<Shared>, pause: Duration, idle_after_fault: bool) {
    use rand::seq::IteratorRandom;
    while !shared.stop.load(Ordering::SeqCst) {
        if idle_after_fault && shared.phase() == AFTER {
            // Idle on purpose (see `run`).
            tokio::time::sleep(pause).await;
            continue;
        }
        let phase_before = shared.phase();
        let before: Vec<(String, (u64, u64, Version))> = {
            let acked = shared.acked.lock();
            acked
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .choose_multiple(&mut rand::rng(), 8)
        };
        match d.sync().await {
            Ok(snapshot) => {
                shared.syncs.fetch_add(1, Ordering::SeqCst);
                let token = snapshot.version();
                let contents = digest(&d);
                if let Some(other) = shared.sync_tokens.lock().insert(token, contents)
                    && other != contents
                {
                    eprintln!("token {token} synced with two different contents");
                    shared.token_collisions.fetch_add(1, Ordering::SeqCst);
                }
                for (key, (seq, phase, acked)) in before {
                    let seen = seq_of(snapshot.get(&key));
                    if seen.is_none_or(|s| s < seq) && shared.checkable(phase) {
                        eprintln!(
                            "a sync ({token}) started after {key}={seq} was acknowledged \
                             ({acked}, phase {phase}): {seen:?} (sync began in phase \
                             {phase_before}, ended in phase {}; reader stats {:?})",
                            shared.phase(),
                            d.stats(),
                        );
                        shared.stale_syncs.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            Err(_) => {
                shared.failed_syncs.fetch_add(1, Ordering::SeqCst);
                // Back off while the store is down.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // The readers' pace.
        tokio::time::sleep(pause).await;
    }
}
