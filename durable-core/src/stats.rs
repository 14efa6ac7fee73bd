//! Counters and health of a dictionary handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use crate::types::Version;

/// Serializes a duration as seconds (a float), the way monitoring systems expect it.
fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// Serializes a time as seconds since the Unix epoch (a float), or null.
fn unix_seconds<S: serde::Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) {
        Some(since) => serializer.serialize_some(&since.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}

/// What a dictionary handle has done since it was opened. Print it (`Debug`) or serialize it
/// (e.g. to JSON) to export it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// The snapshot's version token, as text.
    pub version: String,
    /// Entries in the snapshot.
    pub entries: usize,
    /// Encoded bytes of the snapshot's values.
    pub bytes: usize,
    /// Age of the snapshot (time since the store last confirmed it); seconds when serialized.
    #[serde(serialize_with = "seconds")]
    pub age: Duration,
    /// When the last version check succeeded (Unix seconds when serialized).
    #[serde(serialize_with = "unix_seconds")]
    pub last_check: Option<SystemTime>,
    /// When the snapshot last changed because of a sync (Unix seconds when serialized).
    #[serde(serialize_with = "unix_seconds")]
    pub last_change: Option<SystemTime>,
    /// Version checks made (round trips to the store).
    pub checks: u64,
    /// Checks that found the version unchanged.
    pub unchanged: u64,
    /// Full reloads.
    pub reloads: u64,
    /// Incremental (delta) syncs.
    pub deltas: u64,
    /// Checks that found the store behind a state this handle had seen it at (put back to an
    /// earlier state by a restore or a failover that lost writes); the handle followed the store.
    pub regressions: u64,
    /// Merges of the snapshot's overlay of recent changes into its base table, done in the
    /// background once the overlay holds a sixteenth of the entries.
    pub merges: u64,
    /// `sync()` calls answered by a check another caller started after them (no extra round trip).
    pub coalesced: u64,
    /// `sync()` calls answered without a round trip because push hints said nothing changed.
    pub hint_skips: u64,
    /// Push hints received.
    pub hints: u64,
    /// Writes acknowledged by the store.
    pub writes: u64,
    /// Failed store operations (checks, loads and writes).
    pub errors: u64,
    /// Stored values that could not be decoded, counted at each sync that met one (under
    /// [`DecodeErrors::Isolate`](crate::DecodeErrors::Isolate)).
    pub skipped_values: u64,
    /// Keys whose stored value cannot be decoded now (each keeps its last good value).
    pub bad_keys: usize,
    /// Entries in the snapshot that have a time to live (expired ones included until swept).
    pub expiring: usize,
    /// How far the store's clock is ahead of this process's (negative: behind), in milliseconds,
    /// once measured (backends with capability `expiry`).
    pub store_clock_offset_ms: Option<i64>,
    /// The uncertainty of that offset (half the round trip of its reading), in milliseconds.
    pub store_clock_uncertainty_ms: Option<u64>,
}

/// Is the handle ready, and is its data fresh?
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// Which dictionary this is ([`Backend::location`](crate::Backend::location)), e.g.
    /// `redis/native/prod/flags`.
    pub dictionary: String,
    /// A snapshot is available for reads (always true for an opened handle).
    pub ready: bool,
    /// The last version check succeeded and the snapshot does not come from the backup file.
    pub fresh: bool,
    /// When checks started failing, while they fail (Unix seconds when serialized).
    #[serde(serialize_with = "unix_seconds")]
    pub stale_since: Option<SystemTime>,
    /// The most recent error, until a check succeeds.
    pub last_error: Option<String>,
    /// Keys whose stored value cannot be decoded, with why (the first [`Health::MAX_BAD_KEYS`]
    /// in key order): each keeps its last good value until it is written again. The sync that
    /// met them succeeded, so they do not make the handle stale.
    pub bad_keys: Vec<BadKey>,
    /// Age of the snapshot; seconds when serialized.
    #[serde(serialize_with = "seconds")]
    pub age: Duration,
    /// The snapshot's version token, as text.
    pub version: String,
}

/// A key whose stored value cannot be decoded, as [`Health`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BadKey {
    /// The key.
    pub key: String,
    /// Why its value cannot be used, naming the backend and the encoding.
    pub error: String,
}

impl Health {
    /// The most bad keys [`Health::bad_keys`] lists.
    pub const MAX_BAD_KEYS: usize = 100;
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) checks: AtomicU64,
    pub(crate) unchanged: AtomicU64,
    pub(crate) reloads: AtomicU64,
    pub(crate) deltas: AtomicU64,
    pub(crate) regressions: AtomicU64,
    pub(crate) merges: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) hint_skips: AtomicU64,
    pub(crate) hints: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) skipped_values: AtomicU64,
    pub(crate) times: Mutex<Times>,
}

#[derive(Debug, Default)]
pub(crate) struct Times {
    pub(crate) last_check: Option<SystemTime>,
    pub(crate) last_change: Option<SystemTime>,
    pub(crate) stale_since: Option<SystemTime>,
    pub(crate) last_error: Option<String>,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn stats(
        &self,
        version: Version,
        entries: usize,
        bytes: usize,
        age: Duration,
    ) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let times = self.times.lock();
        Stats {
            version: version.to_string(),
            entries,
            bytes,
            age,
            last_check: times.last_check,
            last_change: times.last_change,
            checks: get(&self.checks),
            unchanged: get(&self.unchanged),
            reloads: get(&self.reloads),
            deltas: get(&self.deltas),
            regressions: get(&self.regressions),
            merges: get(&self.merges),
            coalesced: get(&self.coalesced),
            hint_skips: get(&self.hint_skips),
            hints: get(&self.hints),
            writes: get(&self.writes),
            errors: get(&self.errors),
            skipped_values: get(&self.skipped_values),
            bad_keys: 0,
            expiring: 0,
            store_clock_offset_ms: None,
            store_clock_uncertainty_ms: None,
        }
    }

    /// A check succeeded; `changed` if it changed the snapshot.
    pub(crate) fn check_succeeded(&self, changed: bool) {
        let now = SystemTime::now();
        let mut times = self.times.lock();
        times.last_check = Some(now);
        times.stale_since = None;
        times.last_error = None;
        if changed {
            times.last_change = Some(now);
        }
    }

    /// A store operation failed.
    pub(crate) fn failed(&self, error: &crate::Error, is_check: bool) {
        bump(&self.errors);
        let mut times = self.times.lock();
        if is_check && times.stale_since.is_none() {
            times.stale_since = Some(SystemTime::now());
        }
        times.last_error = Some(error.to_string());
    }
}
