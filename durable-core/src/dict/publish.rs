//! Publishing into the snapshot: sync results and the handle's own writes, pending writes, and
//! the change events listeners hear.

use super::*;

impl<V, E> Inner<V, E>
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    pub(super) fn emit(
        &self,
        key: &Key,
        old: Option<&Entry<V>>,
        new: Option<&Entry<V>>,
        version: Version,
    ) {
        let kind = match (old, new) {
            (None, Some(_)) => ChangeKind::Inserted,
            (Some(_), Some(_)) => ChangeKind::Updated,
            (Some(_), None) => ChangeKind::Removed,
            (None, None) => return,
        };
        // An error only means nobody listens.
        let _ = self.changes.send(Change {
            key: Arc::from(key.as_str()),
            kind,
            old: old.map(|e| e.value.clone()),
            new: new.map(|e| e.value.clone()),
            version,
        });
    }

    pub(super) fn listening(&self) -> bool {
        self.changes.receiver_count() > 0
    }

    /// Applies one key's write to `map`, telling listeners.
    pub(super) fn apply(
        &self,
        map: &mut Map<V>,
        key: &Key,
        entry: Option<Entry<V>>,
        version: Version,
    ) {
        let listening = self.listening();
        let new = if listening { entry.clone() } else { None };
        let old = match entry {
            Some(entry) => map.upsert(entry),
            None => map.remove(key),
        };
        if listening {
            self.emit(key, old.as_ref(), new.as_ref(), version);
        }
    }

    /// Publishes the result of a sync. `generation` is the check's (0 for the open's load) and
    /// `start` the token the snapshot had when the check began.
    pub(super) fn publish_sync(
        &self,
        update: Update<V>,
        generation: u64,
        start: Version,
    ) -> Result<()> {
        let _guard = self.publish.lock();
        let current = self.state.load();
        let version = match &update {
            Update::Load { version, .. } | Update::Delta { version, .. } => *version,
        };
        if version.epoch() == current.version.epoch()
            && version.counter() < current.version.counter()
        {
            if version.epoch() != start.epoch() || version.counter() >= start.counter() {
                // Our own writes moved the snapshot past this (complete) state while the check
                // ran; the next check brings what others wrote meanwhile.
                current.confirm(Instant::now());
                return Ok(());
            }
            // The check began after the snapshot reached `start`, yet the store is behind it:
            // the store was put back to an earlier state (a restore, a failover that lost
            // writes). Its state wins; the backend served a full load (a delta from a token
            // ahead of the store is never served).
            warn!(
                dictionary = %self.location,
                store = %version,
                snapshot = %current.version,
                "the store went back to an earlier state; following it"
            );
            bump(&self.counters.regressions);
        }
        let mut next = match update {
            Update::Load {
                version,
                mut entries,
                bad,
            } => {
                // An undecodable value keeps the key's last good value.
                for (key, _) in &bad {
                    if let Some(old) = current.map.get(key) {
                        entries.push(old.clone());
                    }
                }
                let map = Map::from_entries(entries);
                if self.listening() {
                    self.emit_diff(&current, &map, version);
                }
                let mut next = State::new(
                    map,
                    version,
                    self.origin,
                    self.clock.clone(),
                    Instant::now(),
                );
                next.pending = current.pending.clone();
                next.bad = Arc::new(bad.into_iter().collect());
                next
            }
            Update::Delta {
                version,
                upserts,
                removals,
                bad,
            } => {
                let mut next = current.successor();
                for key in removals {
                    next.clear_bad(&key);
                    self.apply(&mut next.map, &key, None, version);
                }
                for entry in upserts {
                    let key = entry.key.clone();
                    next.clear_bad(&key);
                    self.apply(&mut next.map, &key, Some(entry), version);
                }
                if !bad.is_empty() {
                    Arc::make_mut(&mut next.bad).extend(bad);
                }
                next.version = version;
                next
            }
        };
        next.from_backup = false;
        // A local write acknowledged before the check began is in the synced state, or the store
        // lost it. One acknowledged since is applied again on top, unless the synced state is
        // at or past it in its epoch.
        let pending = std::mem::take(&mut next.pending);
        for write in pending {
            if write.acked >= generation
                && !(write.version.epoch() == version.epoch()
                    && write.version.counter() <= version.counter())
            {
                self.apply(
                    &mut next.map,
                    &write.key,
                    write.entry.clone(),
                    write.version,
                );
                next.pending.push(write);
            }
        }
        fold_pending(&mut next);
        if let Err(detail) = self.check_limits(next.map.len(), next.map.bytes()) {
            // The store holds more than this handle accepts: keep the last good snapshot.
            return Err(self.limit_error(format!(
                "the store's dictionary at {version} holds {detail}; keeping the last good snapshot"
            )));
        }
        next.confirm(Instant::now());
        self.state.store(Arc::new(next));
        Ok(())
    }

    /// Tells listeners how a full reload changed the snapshot.
    pub(super) fn emit_diff(&self, current: &State<V>, map: &Map<V>, version: Version) {
        let same_epoch = current.version.epoch() == version.epoch();
        for entry in map.iter() {
            let old = current.map.get(&entry.key);
            if !(same_epoch && old.is_some_and(|o| o.revision == entry.revision)) {
                self.emit(&entry.key, old, Some(entry), version);
            }
        }
        for old in current.map.iter() {
            if map.get(&old.key).is_none() {
                self.emit(&old.key, Some(old), None, version);
            }
        }
    }

    /// Publishes this handle's own acknowledged write (read-your-writes).
    ///
    /// A write that directly follows the snapshot's state moves its token on. One that does not
    /// (another process wrote in between) is kept as a pending write, re-applied over syncs until
    /// one covers it. When the snapshot is already at or past the write's counter on another
    /// state, or holds a pending write of the same key with a higher counter, only the store can
    /// say whether a sync (or our own later write) brought a later value or the snapshot holds a
    /// history the store lost in a restore: a version check settles it before the write returns.
    pub(super) async fn publish_local(&self, version: Version, writes: LocalWrites<V>) {
        let Some(writes) = self.publish_local_now(version, writes, false) else {
            return;
        };
        if let Err(error) = self.check().await {
            debug!(%error, "check after an own write failed; showing the write");
            self.publish_local_now(version, writes, true);
        }
    }

    /// The synchronous part of [`publish_local`](Self::publish_local). Returns the writes back
    /// when the snapshot is at or past the write's counter on another state (unless `force`,
    /// which then applies them as pending writes).
    pub(super) fn publish_local_now(
        &self,
        version: Version,
        writes: LocalWrites<V>,
        force: bool,
    ) -> Option<LocalWrites<V>> {
        {
            let _guard = self.publish.lock();
            let current = self.state.load();
            if version == current.version {
                // A sync already brought exactly this write.
                return None;
            }
            // A pending write of ours to the same key with a higher counter is a later write
            // published first, or a write of a history the store lost: ask the store too.
            let superseded = |key: &Key| {
                current.pending.iter().any(|p| {
                    p.key == *key
                        && p.version.epoch() == version.epoch()
                        && p.version.counter() > version.counter()
                })
            };
            if !force
                && ((version.epoch() == current.version.epoch()
                    && version.counter() <= current.version.counter())
                    || writes.iter().any(|(key, _)| superseded(key)))
            {
                return Some(writes);
            }
            let acked = self.started.load(Ordering::SeqCst);
            let mut next = current.successor();
            let follows = version.follows(&next.version);
            for (key, entry) in writes {
                if superseded(&key) {
                    continue;
                }
                next.clear_bad(&key);
                self.apply(&mut next.map, &key, entry.clone(), version);
                if !follows {
                    // Only a key's latest write needs re-applying: the list stays as long as
                    // the number of keys written since the last sync, not the number of writes.
                    next.pending.retain(|p| p.key != key);
                    next.pending.push(Pending {
                        version,
                        acked,
                        key,
                        entry,
                    });
                }
            }
            if follows {
                next.version = version;
            }
            fold_pending(&mut next);
            self.state.store(Arc::new(next));
        }
        self.backup_wake.notify_one();
        None
    }
}

/// Moves the token forward over pending local writes that directly follow it.
pub(super) fn fold_pending<V>(state: &mut State<V>) {
    while let Some(next) = state
        .pending
        .iter()
        .map(|p| p.version)
        .find(|v| v.follows(&state.version))
    {
        state.version = next;
        state.pending.retain(|p| p.version != next);
    }
    let version = state.version;
    state.pending.retain(|p| {
        p.version.epoch() != version.epoch() || p.version.counter() > version.counter()
    });
}
