//! Expiring entries: the estimate of the store's clock, sweeps (explicit, lazy, before
//! conditional writes).

use super::*;

impl<V, E> Inner<V, E>
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    /// Reads the store's clock if the snapshot holds expiring entries and the last reading is
    /// missing or older than a minute (a handle that never sees a TTL never reads it).
    pub(super) async fn measure_clock_if_needed(&self) {
        if self.state.load().map.expiring() > 0
            && self.clock.is_older_than(CLOCK_READING_LIFETIME)
            && let Err(error) = self.measure_clock().await
        {
            warn!(%error, "could not read the store's clock; judging expiry by the local clock");
        }
    }

    /// After a successful check, outside the shared round trip: the first reading of the store's
    /// clock (the snapshot now holds expiring entries and was never judged by the store's clock)
    /// is taken before the caller that ran the check returns; a refresh of an older reading runs
    /// in a task of its own, at most one at a time, so no caller waits for it.
    pub(super) async fn measure_clock_off_path(&self) {
        if self.state.load().map.expiring() == 0
            || !self.clock.is_older_than(CLOCK_READING_LIFETIME)
        {
            return;
        }
        if self.clock.offset().is_none() {
            self.measure_clock_if_needed().await;
            return;
        }
        if self.measuring.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(inner) = self.this.upgrade() else {
            self.measuring.store(false, Ordering::SeqCst);
            return;
        };
        tokio::spawn(async move {
            inner.measure_clock_if_needed().await;
            inner.measuring.store(false, Ordering::SeqCst);
        });
    }

    /// Reads the store's clock to correct the estimate of it.
    pub(super) async fn measure_clock(&self) -> Result<()> {
        let sent = self.clock.local_millis();
        let now = self.call(Operation::Now, self.backend.now()).await?;
        self.clock.observe(now, sent, self.clock.local_millis());
        debug!(offset = ?self.clock.offset(), "store clock measured");
        Ok(())
    }

    /// See [`Dict::sweep`]. Sweeps again (up to [`MAX_SWEEPS`] steps) while a step removed
    /// something and the snapshot still holds expired entries, for stores that sweep at most
    /// as much as fits in one atomic step.
    pub(super) async fn sweep(&self) -> Result<usize> {
        self.require(self.caps.expiry, Operation::Sweep)?;
        let mut removed = 0;
        for _ in 0..MAX_SWEEPS {
            let Some(swept) = self.write(Operation::Sweep, self.backend.sweep()).await? else {
                self.recompute_earliest_expiry();
                break;
            };
            removed += swept.keys.len();
            debug!(removed = swept.keys.len(), version = %swept.version, "swept expired entries");
            let keys = swept.keys.into_iter().map(|k| (k.into(), None)).collect();
            self.publish_local(swept.version, keys).await;
            self.recompute_earliest_expiry();
            if !self.state.load().has_expired() {
                break;
            }
        }
        Ok(removed)
    }

    pub(super) fn recompute_earliest_expiry(&self) {
        let _guard = self.publish.lock();
        let mut next = self.state.load().successor();
        next.map.recompute_earliest_expiry();
        self.state.store(Arc::new(next));
    }

    /// Sweeps first if `key` has expired in the snapshot, so that a conditional write or a
    /// delete sees it absent, as reads do. A failed sweep is logged, not returned: the write
    /// then goes ahead and the store treats the expired entry as present, as its contract says.
    pub(super) async fn sweep_if_expired(&self, key: &str) {
        let expired = {
            let state = self.state.load();
            state
                .map
                .get(key)
                .is_some_and(|e| !e.is_live(state.clock.now()))
        };
        if expired && let Err(error) = self.sweep().await {
            warn!(%error, key, "sweep before a conditional write failed");
        }
    }

    /// After a write: starts a sweep in the background if the snapshot holds an expired entry
    /// and no sweep ran in the last second (the store's expired entries go away without anyone
    /// calling [`Dict::sweep`]).
    pub(super) fn sweep_lazily(&self) {
        if !self.caps.expiry
            || !self.state.load().has_expired()
            || self.sweeping.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let Some(inner) = self.this.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            if let Err(error) = inner.sweep().await {
                debug!(%error, "lazy sweep failed");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            inner.sweeping.store(false, Ordering::SeqCst);
        });
    }
}

/// TTLs from which a write's expiry is not used as a reading of the store's clock (about 35
/// years: stores shorten larger ones to what they can hold).
pub(super) const MAX_OBSERVED_TTL_MILLIS: u64 = 1 << 40;

/// The most atomic sweep steps one [`Dict::sweep`] makes.
pub(super) const MAX_SWEEPS: usize = 16;

/// How long a reading of the store's clock is trusted while entries with a time to live are held
/// (a free-running clock 50 ppm off drifts 3 ms a minute; NTP-disciplined clocks far less).
pub(super) const CLOCK_READING_LIFETIME: Duration = Duration::from_secs(60);
