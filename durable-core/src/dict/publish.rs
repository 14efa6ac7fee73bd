//! Publishing into the snapshot: sync results and the handle's own writes, pending writes, and
//! the change events listeners hear.
//!
//! The decisions are pure functions on the current [`State`]: [`synced`] and [`local`] compute
//! the next state and the change events it implies, without a backend, a lock or a channel. The
//! `Inner` methods only take the publish lock, call them, store the result and send the events.

use super::*;

/// A sync result decoded and ready to publish.
pub(super) enum Update<V> {
    /// A full load: every entry of the state at `version`.
    Load {
        version: Version,
        entries: Vec<Entry<V>>,
        bad: BadValues,
    },
    /// The changes from the snapshot's token to `version`.
    Delta {
        version: Version,
        upserts: Vec<Entry<V>>,
        removals: Vec<Key>,
        bad: BadValues,
    },
}

impl<V> Update<V> {
    fn version(&self) -> Version {
        match self {
            Update::Load { version, .. } | Update::Delta { version, .. } => *version,
        }
    }
}

/// What publishing a sync result computed.
pub(super) struct Outcome<V> {
    /// The state to publish; `None` when the handle's own writes moved the snapshot past the
    /// synced state while the check ran (the snapshot stays, confirmed).
    pub(super) state: Option<State<V>>,
    /// The key-level changes from the current state to `state`, in order (empty when nobody
    /// listens).
    pub(super) events: Vec<Change<V>>,
    /// True if the store went back to an earlier state (a restore, a failover that lost writes)
    /// and the snapshot follows it.
    pub(super) regression: bool,
}

/// What publishing a local write computed.
pub(super) enum Local<V> {
    /// A sync already brought exactly this write: nothing to publish.
    Already,
    /// The snapshot is at or past the write's counter on another state, or holds a later
    /// pending write of one of its keys: only the store can say which, so check first. The
    /// writes come back unchanged.
    Ask(LocalWrites<V>),
    /// The next state (ready to store) and its change events.
    Publish {
        state: Arc<State<V>>,
        events: Vec<Change<V>>,
    },
}

/// The change events of one publication, collected only when someone listens.
struct Events<V> {
    listening: bool,
    list: Vec<Change<V>>,
}

impl<V> Events<V> {
    fn new(listening: bool) -> Self {
        Events {
            listening,
            list: Vec::new(),
        }
    }

    /// Records how `key` went from `old` to `new`.
    fn push(
        &mut self,
        key: &Key,
        old: Option<&Shared<V>>,
        new: Option<&Shared<V>>,
        version: Version,
    ) {
        let kind = match (old, new) {
            (None, Some(_)) => ChangeKind::Inserted,
            (Some(_), Some(_)) => ChangeKind::Updated,
            (Some(_), None) => ChangeKind::Removed,
            (None, None) => return,
        };
        self.list.push(Change {
            key: Arc::from(key.as_str()),
            kind,
            old: old.cloned(),
            new: new.cloned(),
            version,
        });
    }

    /// Applies one key's write (`None`: a delete) to `map`, recording the change.
    fn apply(&mut self, map: &mut Map<V>, key: &Key, entry: Option<Entry<V>>, version: Version) {
        let new = if self.listening {
            entry.as_ref().map(|e| e.shared().clone())
        } else {
            None
        };
        let old = match entry {
            Some(entry) => map.upsert(entry),
            None => map.remove(key),
        };
        if self.listening {
            self.push(key, old.as_ref().map(Entry::shared), new.as_ref(), version);
        }
    }

    /// Records how a full reload to `map` at `version` changes `current`.
    fn diff(&mut self, current: &State<V>, map: &Map<V>, version: Version) {
        if !self.listening {
            return;
        }
        let same_epoch = current.version.epoch() == version.epoch();
        for entry in map.iter().map(Slot::shared) {
            let old = current.map.get(entry.key()).map(Slot::shared);
            if !(same_epoch && old.is_some_and(|o| o.revision() == entry.revision())) {
                self.push(entry.smol_key(), old, Some(entry), version);
            }
        }
        for old in current.map.iter().map(Slot::shared) {
            if map.get(old.key()).is_none() {
                self.push(old.smol_key(), Some(old), None, version);
            }
        }
    }
}

/// The state after a sync: `update` read by check `generation` (0 for the open's load), which
/// began when the snapshot was at `start`. `listening`: collect change events.
pub(super) fn synced<V>(
    current: &State<V>,
    update: Update<V>,
    generation: u64,
    start: Version,
    listening: bool,
) -> Outcome<V> {
    let version = update.version();
    let mut events = Events::new(listening);
    let mut regression = false;
    if version.epoch() == current.version.epoch() && version.counter() < current.version.counter() {
        if version.epoch() != start.epoch() || version.counter() >= start.counter() {
            // Our own writes moved the snapshot past this (complete) state while the check ran;
            // the next check brings what others wrote meanwhile.
            return Outcome {
                state: None,
                events: Vec::new(),
                regression,
            };
        }
        // The check began after the snapshot reached `start`, yet the store is behind it: the
        // store was put back to an earlier state (a restore, a failover that lost writes). Its
        // state wins; the backend served a full load (a delta from a token ahead of the store is
        // never served).
        regression = true;
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
                    entries.push(old.to_entry());
                }
            }
            let map = Map::from_entries(entries);
            events.diff(current, &map, version);
            let mut next = State::new(
                map,
                version,
                current.origin,
                current.clock.clone(),
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
            next.map.expect_changes(removals.len() + upserts.len());
            for key in removals {
                next.clear_bad(&key);
                events.apply(&mut next.map, &key, None, version);
            }
            for entry in upserts {
                let key = entry.key().clone();
                next.clear_bad(&key);
                events.apply(&mut next.map, &key, Some(entry), version);
            }
            if !bad.is_empty() {
                Arc::make_mut(&mut next.bad).extend(bad);
            }
            next.version = version;
            next
        }
    };
    next.from_backup = false;
    // A local write acknowledged before the check began is in the synced state, or the store lost
    // it. One acknowledged since is applied again on top, unless the synced state is at or past
    // it in its epoch.
    let pending = std::mem::take(&mut next.pending);
    for write in pending {
        if write.acked >= generation
            && !(write.version.epoch() == version.epoch()
                && write.version.counter() <= version.counter())
        {
            events.apply(
                &mut next.map,
                &write.key,
                write.entry.clone(),
                write.version,
            );
            next.pending.push(write);
        }
    }
    fold_pending(&mut next);
    Outcome {
        state: Some(next),
        events: events.list,
        regression,
    }
}

/// The state after this handle's own write of `writes`, acknowledged with token `version` when
/// `acked` checks had started. `force` applies them as pending writes even where only the store
/// could settle them (when asking it failed). `listening`: collect change events.
///
/// A write that directly follows the snapshot's state moves its token on. One that does not
/// (another process wrote in between) is kept as a pending write, re-applied over syncs until one
/// covers it.
pub(super) fn local<V>(
    current: &State<V>,
    version: Version,
    writes: LocalWrites<V>,
    acked: u64,
    force: bool,
    listening: bool,
) -> Local<V> {
    if version == current.version {
        return Local::Already;
    }
    // A pending write of ours to the same key with a higher counter is a later write published
    // first, or a write of a history the store lost: ask the store too.
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
        return Local::Ask(writes);
    }
    let mut events = Events::new(listening);
    let mut next = current.successor();
    next.map.expect_changes(writes.len());
    let follows = version.follows(&next.version);
    for (key, entry) in writes {
        if superseded(&key) {
            continue;
        }
        next.clear_bad(&key);
        events.apply(&mut next.map, &key, entry.clone(), version);
        if !follows {
            // Only a key's latest write needs re-applying: the list stays as long as the number
            // of keys written since the last sync, not the number of writes.
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
    Local::Publish {
        state: Arc::new(next),
        events: events.list,
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

impl<V, E> Inner<V, E>
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    fn listening(&self) -> bool {
        self.changes.receiver_count() > 0
    }

    /// Sends change events (under the publish lock, so listeners hear them in publishing order).
    fn send(&self, events: Vec<Change<V>>) {
        for change in events {
            // An error only means nobody listens.
            let _ = self.changes.send(change);
        }
    }

    /// Stores a state with new contents (under the publish lock), then starts a merge of its
    /// overlay if one is due.
    fn store(&self, state: Arc<State<V>>) {
        let merge = state.map.merge_due();
        self.state.store(state);
        if merge {
            self.merge_in_background();
        }
    }

    /// Publishes the result of a sync (see [`synced`]). A state over the options' limits is
    /// refused and the last good snapshot kept.
    pub(super) fn publish_sync(
        &self,
        update: Update<V>,
        generation: u64,
        start: Version,
    ) -> Result<()> {
        let _guard = self.publish.lock();
        let current = self.state.load();
        let version = update.version();
        let outcome = synced(&current, update, generation, start, self.listening());
        let Some(next) = outcome.state else {
            current.confirm(Instant::now());
            return Ok(());
        };
        if outcome.regression {
            warn!(
                dictionary = %self.location,
                store = %version,
                snapshot = %current.version,
                "the store went back to an earlier state; following it"
            );
            bump(&self.counters.regressions);
        }
        if let Err(detail) = self.check_limits(next.map.len(), next.map.bytes()) {
            // The store holds more than this handle accepts: keep the last good snapshot.
            return Err(self.limit_error(format!(
                "the store's dictionary at {version} holds {detail}; keeping the last good snapshot"
            )));
        }
        next.confirm(Instant::now());
        self.store(Arc::new(next));
        self.send(outcome.events);
        Ok(())
    }

    /// Publishes this handle's own acknowledged write (read-your-writes; see [`local`]).
    ///
    /// When the snapshot is already at or past the write's counter on another state, or holds a
    /// pending write of the same key with a higher counter, only the store can say whether a
    /// sync (or our own later write) brought a later value or the snapshot holds a history the
    /// store lost in a restore: a version check settles it before the write returns.
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
    /// when only the store can settle them (unless `force`, which then applies them as pending
    /// writes).
    pub(super) fn publish_local_now(
        &self,
        version: Version,
        writes: LocalWrites<V>,
        force: bool,
    ) -> Option<LocalWrites<V>> {
        {
            let _guard = self.publish.lock();
            let current = self.state.load();
            let acked = self.started.load(Ordering::SeqCst);
            match local(&current, version, writes, acked, force, self.listening()) {
                Local::Already => return None,
                Local::Ask(writes) => return Some(writes),
                Local::Publish { state, events } => {
                    self.store(state);
                    self.send(events);
                }
            }
        }
        self.backup_wake.notify_one();
        None
    }
}

/// A merge catches up with later states outside the publish lock until one round takes less
/// than this (so that the changes left for the lock are the few published meanwhile)...
const CATCH_UP_QUICK: Duration = Duration::from_millis(1);
/// ...or for this many rounds, when writes come faster than it catches up.
const CATCH_UP_ROUNDS: usize = 8;

/// How long a merge waits for syncs and readers to let go of the states on the old base, so
/// that it frees the old base itself.
const RELEASE_WAIT: Duration = Duration::from_secs(1);

impl<V, E> Inner<V, E>
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    /// Folds the snapshot's overlay of recent changes into its base on a blocking thread (at
    /// most one at a time), then publishes the same entries on the new base, with the changes
    /// published meanwhile applied. The O(n) copy stays off the sync path; only the catch-up,
    /// O(changes made meanwhile), runs under the publish lock. Without a runtime it is left to
    /// the map's backstop (see `Map::merged`).
    fn merge_in_background(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.merging.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = self.this.clone();
        runtime.spawn_blocking(move || {
            // A dropped handle stops merging (its tables are freed with it).
            while let Some(inner) = this.upgrade() {
                let old = inner.merge();
                inner.merging.store(false, Ordering::SeqCst);
                // Writes published during the merge may have made the next one due, and saw
                // this one running.
                let again = inner.state.load().map.merge_due()
                    && !inner.merging.swap(true, Ordering::SeqCst);
                drop(inner);
                if again {
                    continue;
                }
                // Free the old base here, not wherever the last state holding it is let go of
                // (a sync or a reader would pay for a million reference counts): wait a while
                // for the others.
                let deadline = Instant::now() + RELEASE_WAIT;
                while !(Arc::strong_count(&old) == 1 && old.map.holds_base_alone())
                    && this.strong_count() > 0
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                break;
            }
        });
    }

    /// One merge (blocking): see [`merge_in_background`](Self::merge_in_background). Returns
    /// the state it merged from, which holds the old base.
    fn merge(&self) -> Arc<State<V>> {
        let from = self.state.load_full();
        let mut merged = from.map.merged();
        // Catch up with the states published meanwhile outside the lock first, until a round
        // is quick, so that the lock is held only for the changes of the last one.
        let mut at = from.clone();
        for _ in 0..CATCH_UP_ROUNDS {
            let now = self.state.load_full();
            if Arc::ptr_eq(&now, &at) {
                break;
            }
            let round = Instant::now();
            let Some(caught) = now.map.caught_up(&at.map, merged) else {
                return from;
            };
            (merged, at) = (caught, now);
            if round.elapsed() < CATCH_UP_QUICK {
                break;
            }
        }
        let replaced = {
            let _guard = self.publish.lock();
            let current = self.state.load();
            current.map.caught_up(&at.map, merged).map(|map| {
                let mut next = current.successor();
                next.map = map;
                self.state.swap(Arc::new(next))
            })
        };
        if replaced.is_some() {
            bump(&self.counters.merges);
        }
        debug!(
            merged = replaced.is_some(),
            entries = from.map.len(),
            "snapshot overlay merged"
        );
        from
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epoch 1, `counter`, with its own stamp and its parent's.
    fn v(counter: u64, stamp: u64, parent: u64) -> Version {
        Version::stamped(1, counter, stamp, parent)
    }

    fn entry(key: &str, value: i32, revision: u64) -> Entry<i32> {
        Entry::new(key.into(), value, Revision(revision), None, 1)
    }

    fn state(version: Version, entries: &[(&str, i32, u64)]) -> State<i32> {
        let entries = entries
            .iter()
            .map(|&(key, value, revision)| entry(key, value, revision))
            .collect();
        State::new(
            Map::from_entries(entries),
            version,
            Instant::now(),
            Arc::new(StoreClock::new()),
            Instant::now(),
        )
    }

    fn pending(version: Version, acked: u64, key: &str, value: Option<i32>) -> Pending<i32> {
        Pending {
            version,
            acked,
            key: key.into(),
            entry: value.map(|value| entry(key, value, version.counter())),
        }
    }

    /// The map as sorted (key, value) pairs.
    fn contents(state: &State<i32>) -> Vec<(String, i32)> {
        let mut all: Vec<_> = state
            .map
            .iter()
            .map(|e| (e.key().to_owned(), **e.shared()))
            .collect();
        all.sort();
        all
    }

    /// Events as (key, kind, old, new), sorted by key.
    fn told(events: &[Change<i32>]) -> Vec<(String, ChangeKind, Option<i32>, Option<i32>)> {
        let mut all: Vec<_> = events
            .iter()
            .map(|c| {
                (
                    c.key.to_string(),
                    c.kind,
                    c.old.as_deref().copied(),
                    c.new.as_deref().copied(),
                )
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn delta(version: Version, upserts: &[(&str, i32)], removals: &[&str]) -> Update<i32> {
        Update::Delta {
            version,
            upserts: upserts
                .iter()
                .map(|&(key, value)| entry(key, value, version.counter()))
                .collect(),
            removals: removals.iter().map(|&key| key.into()).collect(),
            bad: Vec::new(),
        }
    }

    fn load(version: Version, entries: &[(&str, i32, u64)]) -> Update<i32> {
        Update::Load {
            version,
            entries: entries
                .iter()
                .map(|&(key, value, revision)| entry(key, value, revision))
                .collect(),
            bad: Vec::new(),
        }
    }

    #[test]
    fn a_delta_is_applied_with_its_events() {
        let current = state(v(1, 11, 0), &[("a", 1, 1), ("b", 2, 1)]);
        let update = delta(v(3, 13, 12), &[("a", 10), ("c", 3)], &["b"]);
        let outcome = synced(&current, update, 1, current.version, true);
        assert!(!outcome.regression);
        let next = outcome.state.expect("a newer state is published");
        assert_eq!(next.version, v(3, 13, 12));
        assert_eq!(contents(&next), [("a".into(), 10), ("c".into(), 3)]);
        assert_eq!(
            told(&outcome.events),
            [
                ("a".into(), ChangeKind::Updated, Some(1), Some(10)),
                ("b".into(), ChangeKind::Removed, Some(2), None),
                ("c".into(), ChangeKind::Inserted, None, Some(3)),
            ]
        );
        // Nobody listens: the same state, no events collected.
        let update = delta(v(3, 13, 12), &[("a", 10), ("c", 3)], &["b"]);
        let quiet = synced(&current, update, 1, current.version, false);
        assert!(quiet.events.is_empty());
        assert_eq!(contents(&quiet.state.unwrap()), contents(&next));
    }

    #[test]
    fn a_load_replaces_the_map_and_tells_the_diff() {
        let current = state(
            v(2, 12, 11),
            &[("same", 1, 1), ("changed", 2, 2), ("gone", 3, 2)],
        );
        let update = load(
            v(4, 14, 13),
            &[("same", 1, 1), ("changed", 20, 4), ("new", 5, 3)],
        );
        let outcome = synced(&current, update, 1, current.version, true);
        assert!(!outcome.regression);
        let next = outcome.state.unwrap();
        assert_eq!(next.version, v(4, 14, 13));
        assert_eq!(
            contents(&next),
            [
                ("changed".into(), 20),
                ("new".into(), 5),
                ("same".into(), 1)
            ]
        );
        // An entry with the same revision in the same epoch is not news.
        assert_eq!(
            told(&outcome.events),
            [
                ("changed".into(), ChangeKind::Updated, Some(2), Some(20)),
                ("gone".into(), ChangeKind::Removed, Some(3), None),
                ("new".into(), ChangeKind::Inserted, None, Some(5)),
            ]
        );
        // In another epoch revisions say nothing: every entry is told.
        let update = load(Version::stamped(2, 1, 21, 0), &[("same", 1, 1)]);
        let outcome = synced(&current, update, 1, current.version, true);
        assert_eq!(
            told(&outcome.events),
            [
                ("changed".into(), ChangeKind::Removed, Some(2), None),
                ("gone".into(), ChangeKind::Removed, Some(3), None),
                ("same".into(), ChangeKind::Updated, Some(1), Some(1)),
            ]
        );
    }

    #[test]
    fn a_regression_is_followed() {
        // The check began with the snapshot at 5, and the store says 3: it went back.
        let current = state(v(5, 15, 14), &[("a", 1, 5)]);
        let update = load(v(3, 13, 12), &[("a", 0, 3)]);
        let outcome = synced(&current, update, 2, current.version, true);
        assert!(outcome.regression);
        let next = outcome.state.expect("the store's state wins");
        assert_eq!(next.version, v(3, 13, 12));
        assert_eq!(contents(&next), [("a".into(), 0)]);
        assert_eq!(
            told(&outcome.events),
            [("a".into(), ChangeKind::Updated, Some(1), Some(0))]
        );
    }

    #[test]
    fn a_stale_check_behind_own_writes_is_ignored() {
        // The check began at 2; our own writes moved the snapshot to 5 meanwhile; the store's
        // answer (3) is older than the snapshot, not a regression.
        let current = state(v(5, 15, 14), &[("a", 1, 5)]);
        let update = delta(v(3, 13, 12), &[("b", 2)], &[]);
        let outcome = synced(&current, update, 2, v(2, 12, 11), true);
        assert!(!outcome.regression);
        assert!(outcome.state.is_none());
        assert!(outcome.events.is_empty());
    }

    #[test]
    fn an_own_write_that_follows_moves_the_token_and_folds_pending_ones() {
        let current = state(v(1, 11, 0), &[]);
        // A write on top of state 2, which we have not seen: kept pending.
        let Local::Publish {
            state: next,
            events,
        } = local(
            &current,
            v(3, 13, 12),
            vec![("b".into(), Some(entry("b", 2, 3)))],
            0,
            false,
            true,
        )
        else {
            panic!("a write ahead of the snapshot is published");
        };
        assert_eq!(next.version, v(1, 11, 0));
        assert_eq!(next.pending.len(), 1);
        assert_eq!(
            told(&events),
            [("b".into(), ChangeKind::Inserted, None, Some(2))]
        );
        // Our own write of state 2 follows the snapshot, and the pending write follows it.
        let Local::Publish { state: next, .. } = local(
            &next,
            v(2, 12, 11),
            vec![("a".into(), Some(entry("a", 1, 2)))],
            0,
            false,
            true,
        ) else {
            panic!("a write that follows is published");
        };
        assert_eq!(next.version, v(3, 13, 12));
        assert!(next.pending.is_empty());
        assert_eq!(contents(&next), [("a".into(), 1), ("b".into(), 2)]);
        // The same write again is already there; an older one needs the store's word.
        let again = vec![("b".into(), Some(entry("b", 2, 3)))];
        assert!(matches!(
            local(&next, v(3, 13, 12), again.clone(), 0, false, true),
            Local::Already
        ));
        assert!(matches!(
            local(&next, v(2, 99, 11), again, 0, false, true),
            Local::Ask(_)
        ));
    }

    #[test]
    fn a_pending_write_is_reapplied_over_an_older_delta() {
        // Our write of "k" at 3 does not follow the snapshot (1); another process wrote at 2.
        let mut current = state(v(1, 11, 0), &[("k", 0, 1)]);
        current
            .pending
            .push(pending(v(3, 13, 99), 1, "k", Some(30)));
        // Generation 1 started before the write was acknowledged (acked 1): its delta to 2
        // cannot hold it, so the write goes on top again.
        let update = delta(v(2, 12, 11), &[("k", 20), ("other", 2)], &[]);
        let outcome = synced(&current, update, 1, current.version, true);
        let next = outcome.state.unwrap();
        assert_eq!(next.version, v(2, 12, 11));
        assert_eq!(contents(&next), [("k".into(), 30), ("other".into(), 2)]);
        assert_eq!(next.pending.len(), 1);
        assert_eq!(
            told(&outcome.events),
            [
                ("k".into(), ChangeKind::Updated, Some(0), Some(20)),
                ("k".into(), ChangeKind::Updated, Some(20), Some(30)),
                ("other".into(), ChangeKind::Inserted, None, Some(2)),
            ]
        );
        // A check that started after the write (generation 2) read it from the store, or the
        // store lost it: the pending write is dropped.
        let update = delta(v(2, 12, 11), &[("k", 20)], &[]);
        let next = synced(&current, update, 2, current.version, true)
            .state
            .unwrap();
        assert_eq!(contents(&next), [("k".into(), 20)]);
        assert!(next.pending.is_empty());
        // A synced state at or past the write's counter covers it.
        let update = delta(v(3, 13, 99), &[("k", 30)], &[]);
        let next = synced(&current, update, 1, current.version, true)
            .state
            .unwrap();
        assert!(next.pending.is_empty());
    }

    #[tokio::test]
    async fn a_due_overlay_is_merged_in_the_background_with_later_writes_kept() {
        let store = crate::MemoryStore::new();
        let open = || async {
            let backend = store.backend("t", "merge").expect("backend");
            Dict::<u32>::open(backend, crate::Json, crate::Options::new())
                .await
                .expect("open")
        };
        let dict = open().await;
        dict.insert_many((0..2000u32).map(|i| (i.to_string(), i)))
            .await
            .expect("insert");
        let loaded = dict.snapshot();
        // One write at a time: each publishes, and the overlay soon passes its merge size.
        for i in 0..300u32 {
            dict.insert(&i.to_string(), i + 1).await.expect("insert");
        }
        let expected: std::collections::BTreeMap<String, u32> = (0..2000u32)
            .map(|i| (i.to_string(), if i < 300 { i + 1 } else { i }))
            .collect();
        let contents = |snapshot: &Snapshot<u32>| -> std::collections::BTreeMap<String, u32> {
            snapshot.iter().map(|(k, v)| (k.to_owned(), *v)).collect()
        };
        // The backstop alone would leave up to four times the merge size in the overlay.
        let mut waited = 0;
        while dict.inner.state.load().map.merge_due() || dict.inner.merging.load(Ordering::SeqCst) {
            assert!(waited < 500, "no merge in the background");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        assert!(dict.stats().merges > 0);
        assert_eq!(contents(&dict.snapshot()), expected);
        assert_eq!(dict.snapshot().len(), 2000);
        assert_eq!(
            *loaded.get("5").expect("present"),
            5,
            "a held snapshot is untouched"
        );
        // A later reader of the store agrees.
        assert_eq!(contents(&open().await.snapshot()), expected);
    }
}
