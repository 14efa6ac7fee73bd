//! The version check: one round trip shared by concurrent callers, then a delta or a full load,
//! decoded and handed to [`publish`](super::publish).

use super::*;

impl<V, E> Inner<V, E>
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    pub(super) fn hints_say_unchanged(&self) -> bool {
        let Some(window) = self.options.trust_hints_for else {
            return false;
        };
        let Some(source) = self.hints.source.get() else {
            return false;
        };
        let state = self.state.load();
        source.is_live()
            && source.sent() == self.hints.checked.load(Ordering::SeqCst)
            && !state.from_backup
            && state.age() < window
    }

    /// A version check shared by concurrent callers: joins a check that started after the
    /// caller arrived, or runs one.
    pub(super) async fn check(&self) -> Result<()> {
        let arrived = self.started.load(Ordering::SeqCst);
        let mut slot = self.check_slot.lock().await;
        if slot.0 > arrived {
            bump(&self.counters.coalesced);
            return slot.1.clone();
        }
        let generation = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let span = debug_span!("durable.check", dictionary = %self.location, generation);
        let started = Instant::now();
        let result = self.check_now(generation).instrument(span).await;
        self.metrics.check_took(started.elapsed());
        if let Err(error) = &result {
            self.failed(error, true);
            warn!(
                dictionary = %self.location,
                %error,
                "sync failed, keeping the last good snapshot"
            );
        }
        *slot = (generation, result.clone());
        drop(slot);
        self.export_metrics();
        if result.is_ok() {
            // After the waiters are released: a reading of the store's clock is not part of the
            // shared round trip.
            self.measure_clock_off_path().await;
        }
        result
    }

    pub(super) async fn check_now(&self, generation: u64) -> Result<()> {
        let hints_seen = self.hints.sent();
        let start = self.state.load().version;
        let version = self
            .timed(Operation::Version, self.backend.last_updated())
            .await?;
        bump(&self.counters.checks);
        let current = self.state.load_full();
        // Own writes applied on top of the snapshot's token and acknowledged before this check
        // began would have moved the store past that token: if it is still there, the store
        // lost them (a restore), and only a reload can take them out of the snapshot.
        let lost_own_writes = current.pending.iter().any(|p| p.acked < generation);
        let changed = if version == current.version && !lost_own_writes {
            bump(&self.counters.unchanged);
            if current.from_backup {
                let _guard = self.publish.lock();
                let mut next = self.state.load().successor();
                next.from_backup = false;
                next.confirm(Instant::now());
                self.state.store(Arc::new(next));
            } else {
                current.confirm(Instant::now());
            }
            false
        } else {
            let changes = if self.caps.delta && version != current.version {
                self.timed(
                    Operation::Changes,
                    self.backend.changes_since(current.version),
                )
                .await?
            } else {
                Changes::TooOld
            };
            // An own write applied on top of the snapshot and acknowledged before this check
            // began is in every later state of the store's history, so a delta from the
            // snapshot's token names its key; if it does not, the store lost the write (a
            // restore) and only a reload can take it out of the snapshot.
            let changes = match changes {
                Changes::Delta(delta)
                    if current
                        .pending
                        .iter()
                        .any(|p| p.acked < generation && !delta_mentions(&delta, &p.key)) =>
                {
                    Changes::TooOld
                }
                changes => changes,
            };
            let update = match changes {
                Changes::Delta(delta) => {
                    bump(&self.counters.deltas);
                    debug!(
                        upserts = delta.upserts.len(),
                        removals = delta.removals.len(),
                        version = %delta.version,
                        "applying delta"
                    );
                    let (upserts, mut bad) = self.decode_all(delta.upserts.into())?;
                    bad.extend(self.unreadable(delta.unreadable)?);
                    Update::Delta {
                        version: delta.version,
                        upserts,
                        removals: delta.removals.into_iter().map(Key::from).collect(),
                        bad,
                    }
                }
                Changes::TooOld => {
                    let started = Instant::now();
                    let mut parts = Decoded::new(self);
                    let load = self
                        .timed(Operation::Load, self.backend.durables_in_parts(&mut parts))
                        .await?;
                    self.metrics.load_took(started.elapsed());
                    bump(&self.counters.reloads);
                    let (entries, mut bad) = parts.finish(load.entries)?;
                    info!(entries = entries.len(), version = %load.version, "full reload");
                    bad.extend(self.unreadable(load.unreadable)?);
                    Update::Load {
                        version: load.version,
                        entries,
                        bad,
                    }
                }
            };
            self.publish_sync(update, generation, start)?;
            self.backup_wake.notify_one();
            true
        };
        self.hints.checked.store(hints_seen, Ordering::SeqCst);
        self.counters.check_succeeded(changed);
        Ok(())
    }

    /// The full load of `open`.
    pub(super) async fn initial_load(&self) -> Result<()> {
        let started = Instant::now();
        let mut parts = Decoded::new(self);
        let load = self
            .call(Operation::Load, self.backend.durables_in_parts(&mut parts))
            .await?;
        self.metrics.load_took(started.elapsed());
        let (entries, mut bad) = parts.finish(load.entries)?;
        bad.extend(self.unreadable(load.unreadable)?);
        bump(&self.counters.reloads);
        let start = self.state.load().version;
        self.publish_sync(
            Update::Load {
                version: load.version,
                entries,
                bad,
            },
            0,
            start,
        )?;
        self.measure_clock_if_needed().await;
        self.counters.check_succeeded(true);
        Ok(())
    }

    /// One store operation under the operation timeout, or the load timeout for those whose work
    /// grows with the dictionary ([`Operation::grows_with_dictionary`]) (failures are counted by
    /// the caller: a check counts its failure once, whichever step failed).
    pub(super) async fn timed<T>(
        &self,
        operation: Operation,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let limit = if operation.grows_with_dictionary() {
            self.options.load_timeout
        } else {
            self.options.timeout
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                backend: self.name().to_owned(),
                operation,
                after: limit,
            }),
        }
    }

    /// The rows the backend could not read, as bad values (or the error that fails the sync,
    /// under [`DecodeErrors::Fail`]).
    pub(super) fn unreadable(&self, rows: Vec<Unreadable>) -> Result<BadValues> {
        let mut bad = Vec::with_capacity(rows.len());
        for row in rows {
            let error = Error::Unreadable {
                backend: self.name().to_owned(),
                key: row.key.clone(),
                reason: row.reason,
            };
            if self.options.decode_errors == DecodeErrors::Fail {
                return Err(error);
            }
            warn!(
                dictionary = %self.location,
                key = %row.key,
                %error,
                "a stored row cannot be read; the key keeps its last good value"
            );
            bump(&self.counters.skipped_values);
            bad.push((row.key.into(), error));
        }
        Ok(bad)
    }

    /// Decodes stored entries. One that cannot be decoded or is over the size limit fails the
    /// sync ([`DecodeErrors::Fail`]) or is set aside with its error ([`DecodeErrors::Isolate`]),
    /// logged with its key and counted ([`set_aside`](Self::set_aside)).
    pub(super) fn decode_all(&self, stored: Rows) -> Result<(Vec<Entry<V>>, BadValues)> {
        let (entries, bad) = self.decode_rows(stored)?;
        self.set_aside(&bad);
        Ok((entries, bad))
    }

    /// [`decode_all`](Self::decode_all), with the values set aside neither logged nor counted:
    /// a load in parts may restart and decode them again, so it sets them aside once, at its end.
    fn decode_rows(&self, stored: Rows) -> Result<(Vec<Entry<V>>, BadValues)> {
        let mut entries = Vec::with_capacity(stored.len());
        let mut bad = Vec::new();
        let max_size = self.max_value_size();
        for stored in stored {
            let decoded = match max_size {
                Some(limit) if stored.value.len() > limit => Err(Error::ValueTooLarge {
                    backend: self.name().to_owned(),
                    key: stored.key.clone(),
                    size: stored.value.len(),
                    limit,
                }),
                _ => self.decode(&stored.key, &stored.value),
            };
            match decoded {
                Ok(value) => entries.push(Entry::new(
                    stored.key.into(),
                    value,
                    stored.revision,
                    stored.expires_at,
                    stored.value.len(),
                )),
                Err(error) if self.options.decode_errors == DecodeErrors::Isolate => {
                    bad.push((stored.key.into(), error));
                }
                Err(error) => return Err(error),
            }
        }
        Ok((entries, bad))
    }

    /// Logs and counts values that cannot be decoded, each of which keeps its key's last good
    /// value.
    fn set_aside(&self, bad: &BadValues) {
        for (key, error) in bad {
            warn!(
                dictionary = %self.location,
                key = %key,
                %error,
                "a stored value cannot be decoded; the key keeps its last good value"
            );
            bump(&self.counters.skipped_values);
        }
    }
}

/// The rows of a full load, decoded as the backend hands them over
/// ([`Backend::durables_in_parts`]): a load need not hold every row before the first is decoded.
struct Decoded<'a, V, E> {
    inner: &'a Inner<V, E>,
    entries: Vec<Entry<V>>,
    bad: BadValues,
    /// The value that failed the load ([`DecodeErrors::Fail`]); later rows are not decoded.
    failed: Option<Error>,
}

impl<'a, V, E> Decoded<'a, V, E>
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    fn new(inner: &'a Inner<V, E>) -> Self {
        Decoded {
            inner,
            entries: Vec::new(),
            bad: Vec::new(),
            failed: None,
        }
    }

    /// Every entry and bad value, with `rest` (the rows the backend returned) decoded last.
    fn finish(mut self, rest: Rows) -> Result<(Vec<Entry<V>>, BadValues)> {
        self.rows(rest);
        match self.failed {
            Some(error) => Err(error),
            None => {
                self.inner.set_aside(&self.bad);
                Ok((self.entries, self.bad))
            }
        }
    }
}

impl<V, E> LoadParts for Decoded<'_, V, E>
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    fn size_hint(&mut self, rows: usize) {
        self.entries
            .reserve_exact(rows.saturating_sub(self.entries.len()));
    }

    fn rows(&mut self, rows: Rows) {
        if self.failed.is_some() || rows.is_empty() {
            return;
        }
        match self.inner.decode_rows(rows) {
            // A load handed over whole (most backends) keeps its list as decoded, uncopied.
            Ok((entries, bad)) if self.entries.capacity() == 0 => {
                self.entries = entries;
                self.bad.extend(bad);
            }
            Ok((entries, bad)) => {
                self.entries.extend(entries);
                self.bad.extend(bad);
            }
            Err(error) => self.failed = Some(error),
        }
    }

    fn restart(&mut self) {
        self.entries.clear();
        self.bad.clear();
        self.failed = None;
    }
}

/// True if `delta` writes, deletes or reports unreadable the row of `key`.
fn delta_mentions(delta: &crate::types::Delta, key: &str) -> bool {
    delta.upserts.iter().any(|e| e.key == key)
        || delta.removals.iter().any(|k| k == key)
        || delta.unreadable.iter().any(|u| u.key == key)
}
