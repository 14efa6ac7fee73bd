//! Clocks for expiry: a monotonic local clock and the engine's estimate of the store's clock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::types::StoreTime;

/// Wall-clock time read through a monotonic clock: the system time when created plus the
/// monotonic time elapsed since. It does not jump when the system clock is set, and it follows
/// tokio's paused test clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalClock {
    /// Milliseconds since the Unix epoch at `instant`.
    system_millis: i64,
    instant: Instant,
}

impl LocalClock {
    pub(crate) fn new() -> Self {
        let system = StoreTime::from_system_time(SystemTime::now()).0;
        LocalClock {
            system_millis: i64::try_from(system).unwrap_or(i64::MAX),
            instant: Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch, now.
    #[inline]
    pub(crate) fn now_millis(&self) -> i64 {
        let elapsed = i64::try_from(self.instant.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.system_millis.saturating_add(elapsed)
    }
}

impl Default for LocalClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The engine's estimate of the store's clock: the local clock plus an offset measured by
/// reading the store's time ([`Backend::now`](crate::Backend::now)).
///
/// A reading taken over a round trip of `rtt` puts the store's time somewhere in that round trip;
/// taking its middle bounds the error by `rtt / 2`. Two processes therefore disagree on whether
/// an entry has expired for at most half the sum of their measuring round trips, plus the drift
/// of their clocks since they measured (the engine measures again every minute while it holds
/// expiring entries).
#[derive(Debug)]
pub(crate) struct StoreClock {
    local: LocalClock,
    /// Store time minus local time, in milliseconds.
    offset: AtomicI64,
    /// Half the round trip of the reading behind `offset`, in milliseconds (`u64::MAX`: never
    /// measured).
    uncertainty: AtomicU64,
    /// Local time of the last reading, in milliseconds.
    measured_at: AtomicI64,
}

impl StoreClock {
    pub(crate) fn new() -> Self {
        StoreClock {
            local: LocalClock::new(),
            offset: AtomicI64::new(0),
            uncertainty: AtomicU64::new(u64::MAX),
            measured_at: AtomicI64::new(i64::MIN),
        }
    }

    /// The local time, to bracket a reading of the store's clock.
    pub(crate) fn local_millis(&self) -> i64 {
        self.local.now_millis()
    }

    /// Records a reading `store` of the store's clock taken between local times `sent` and
    /// `received`. A reading with a wider round trip than the current one replaces it only once
    /// the current one is a minute old.
    pub(crate) fn observe(&self, store: StoreTime, sent: i64, received: i64) {
        let half = u64::try_from(received.saturating_sub(sent)).unwrap_or(0) / 2;
        let middle = sent + (received.saturating_sub(sent)) / 2;
        let fresh = received.saturating_sub(self.measured_at.load(Ordering::Relaxed)) >= 60_000;
        if half <= self.uncertainty.load(Ordering::Relaxed) || fresh {
            let store = i64::try_from(store.0).unwrap_or(i64::MAX);
            self.offset
                .store(store.saturating_sub(middle), Ordering::Relaxed);
            self.uncertainty.store(half, Ordering::Relaxed);
            self.measured_at.store(received, Ordering::Relaxed);
        }
    }

    /// True when the last reading is older than `age` (or there is none).
    pub(crate) fn is_older_than(&self, age: Duration) -> bool {
        let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        self.local_millis()
            .saturating_sub(self.measured_at.load(Ordering::Relaxed))
            >= age
    }

    /// The estimated store time now.
    #[inline]
    pub(crate) fn now(&self) -> StoreTime {
        let millis = self
            .local_millis()
            .saturating_add(self.offset.load(Ordering::Relaxed));
        StoreTime(u64::try_from(millis).unwrap_or(0))
    }

    /// The estimated offset of the store's clock from the local one and its uncertainty, once
    /// measured.
    pub(crate) fn offset(&self) -> Option<(i64, Duration)> {
        let uncertainty = self.uncertainty.load(Ordering::Relaxed);
        (uncertainty != u64::MAX).then(|| {
            (
                self.offset.load(Ordering::Relaxed),
                Duration::from_millis(uncertainty),
            )
        })
    }
}
