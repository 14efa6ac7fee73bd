//! The dictionary handle: the engine that keeps a local snapshot in step with a backend.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{OnceLock, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, debug_span, info, warn};

mod check;
mod expiry;
mod increment;
mod publish;
mod tasks;

use expiry::MAX_OBSERVED_TTL_MILLIS;
use increment::flush_increments;
use publish::Update;
use tasks::{backup_loop, hint_loop, poll_loop};

use crate::backend::{Backend, HintShared, Hints, LoadParts};
use crate::backup::{self, BackupData};
use crate::clock::StoreClock;
use crate::encoding::{Encoding, Json};
use crate::error::{Error, Operation, Result};
use crate::map::{Entry, Key, Map, Slot};
use crate::metrics::Exporter;
use crate::options::{DecodeErrors, Mode, Options};
use crate::shared::Shared;
use crate::snapshot::{Freshness, Pending, Snapshot, State, Synced, Versioned};
use crate::stats::{BadKey, Counters, Health, Stats, bump};
use crate::types::{
    BatchOp, Capabilities, Changes, IfAbsent, Revision, Rows, StoreTime, StoredEntry, Swap,
    Unreadable, Version,
};

/// What happened to a key, as told to change listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// The key was absent and now has a value.
    Inserted,
    /// The key's value was replaced.
    Updated,
    /// The key was deleted.
    Removed,
}

/// One key-level change of the local snapshot, from this handle's writes or from a sync.
#[derive(Debug)]
pub struct Change<V> {
    /// The key.
    pub key: Arc<str>,
    /// What happened.
    pub kind: ChangeKind,
    /// The value before, if any.
    pub old: Option<Shared<V>>,
    /// The value after, if any.
    pub new: Option<Shared<V>>,
    /// The version token of the change (the write's token, or the synced state's).
    pub version: Version,
}

impl<V> Clone for Change<V> {
    fn clone(&self) -> Self {
        Change {
            key: self.key.clone(),
            kind: self.kind,
            old: self.old.clone(),
            new: self.new.clone(),
            version: self.version,
        }
    }
}

/// What [`Dict::changes`] yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChangeEvent<V> {
    /// One key-level change, in order.
    Changed(Change<V>),
    /// The listener fell behind and `missed` changes were dropped; `snapshot` is the whole
    /// current state to resynchronise from.
    Resynced {
        /// How many changes were dropped.
        missed: u64,
        /// The snapshot as it is now.
        snapshot: Snapshot<V>,
    },
}

/// Outcome of [`Dict::compare_and_swap`].
#[derive(Debug, Clone)]
pub enum Cas<V> {
    /// The entry matched and was replaced or deleted.
    Swapped {
        /// The dictionary's token after the write.
        version: Version,
    },
    /// The entry did not match; nothing was written.
    Conflict {
        /// The entry as it is in the store now (`None`: absent).
        current: Option<Versioned<V>>,
    },
}

/// A handle on one replicated durable dictionary with values of type `V`, encoded with `E`.
///
/// Cheap to clone (clones share one snapshot, one connection and one set of background tasks),
/// `Send + Sync`. The background tasks (polling, push hints, the backup writer) stop when the
/// last clone is dropped; work an operation started on the side (a lazy sweep, a refresh of the
/// store-clock reading, a combined increment) finishes its store round trip first.
///
/// See the [crate documentation](crate) for the model and examples.
pub struct Dict<V, E = Json> {
    inner: Arc<Inner<V, E>>,
    _tasks: Arc<Tasks>,
}

impl<V, E> Clone for Dict<V, E> {
    fn clone(&self) -> Self {
        Dict {
            inner: self.inner.clone(),
            _tasks: self._tasks.clone(),
        }
    }
}

impl<V, E> fmt::Debug for Dict<V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.load();
        f.debug_struct("Dict")
            .field("backend", &self.inner.backend)
            .field("mode", &self.inner.options.mode)
            .field("version", &state.version)
            .field("len", &state.map.len())
            .finish_non_exhaustive()
    }
}

/// Background tasks of a handle, aborted when the last clone of the handle is dropped.
#[derive(Debug, Default)]
struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in self.0.get_mut().drain(..) {
            task.abort();
        }
    }
}

struct Inner<V, E> {
    /// The handle's own `Arc`, to start background work from `&self`.
    this: Weak<Inner<V, E>>,
    backend: Arc<dyn Backend>,
    caps: Capabilities,
    encoding: E,
    options: Options,
    state: ArcSwap<State<V>>,
    /// Serialises read-modify-publish of `state` (held briefly, never across an await).
    publish: Mutex<()>,
    /// One version check in flight; holds the generation and result of the last finished one.
    check_slot: tokio::sync::Mutex<(u64, Result<()>)>,
    /// Generations of checks started so far.
    started: AtomicU64,
    hints: HintFlags,
    /// Wakes the background poller (push hints, recovery).
    wake: Notify,
    /// Wakes the backup writer.
    backup_wake: Notify,
    counters: Counters,
    metrics: Exporter,
    /// [`Backend::location`], for logs and health.
    location: String,
    changes: broadcast::Sender<Change<V>>,
    origin: Instant,
    /// The estimate of the store's clock, for expiry.
    clock: Arc<StoreClock>,
    /// True while a lazy sweep runs or rests (at most one a second).
    sweeping: AtomicBool,
    /// True while a reading of the store's clock runs in the background.
    measuring: AtomicBool,
    /// True while the snapshot's overlay is being merged in the background.
    merging: AtomicBool,
    /// Native increments waiting to be combined, per key; a key is present while its flush task
    /// runs.
    increments: Mutex<HashMap<String, Vec<QueuedIncrement>>>,
}

/// The keys one local write changed, each with its new entry (`None`: deleted).
type LocalWrites<V> = Vec<(Key, Option<Entry<V>>)>;

/// One caller's delta and where its result goes.
type QueuedIncrement = (i64, tokio::sync::oneshot::Sender<Result<(i64, Version)>>);

#[derive(Debug, Default)]
struct HintFlags {
    /// The backend's hint counters, once subscribed.
    source: OnceLock<Arc<HintShared>>,
    /// Hints sent when the last successful check started.
    checked: AtomicU64,
}

impl HintFlags {
    fn sent(&self) -> u64 {
        self.source.get().map_or(0, |s| s.sent())
    }
}

/// Stored values of a sync that could not be decoded, with why: each costs its key only (the key
/// keeps its last good value) under [`DecodeErrors::Isolate`].
type BadValues = Vec<(Arc<str>, Error)>;

impl<V, E> Dict<V, E>
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    /// Opens the dictionary held by `backend`: subscribes to push hints (if the backend has
    /// them), loads every entry (within [`Options::with_open_timeout`]) and starts the background
    /// tasks the options ask for.
    ///
    /// If the store cannot be reached and a backup file is configured and present, the handle
    /// starts from the backup, marked stale ([`Snapshot::is_from_backup`]), and keeps trying to
    /// reach the store in the background. Otherwise the error is returned.
    pub async fn open<B: Backend>(backend: B, encoding: E, options: Options) -> Result<Self> {
        let backend: Arc<dyn Backend> = Arc::new(backend);
        let origin = Instant::now();
        let clock = Arc::new(StoreClock::new());
        let placeholder = State::new(
            Map::new(),
            Version::new(0, 0),
            origin,
            clock.clone(),
            origin,
        );
        let location = backend.location();
        let metrics = Exporter::new(backend.name(), &location);
        let inner = Arc::new_cyclic(|this| Inner {
            this: this.clone(),
            caps: backend.capabilities(),
            backend,
            encoding,
            changes: broadcast::channel(options.listener_capacity).0,
            options,
            state: ArcSwap::from_pointee(placeholder),
            publish: Mutex::new(()),
            check_slot: tokio::sync::Mutex::new((0, Ok(()))),
            started: AtomicU64::new(0),
            hints: HintFlags::default(),
            wake: Notify::new(),
            backup_wake: Notify::new(),
            counters: Counters::default(),
            metrics,
            location,
            origin,
            clock,
            sweeping: AtomicBool::new(false),
            measuring: AtomicBool::new(false),
            merging: AtomicBool::new(false),
            increments: Mutex::new(HashMap::new()),
        });
        let dict = Dict {
            inner: inner.clone(),
            _tasks: Arc::new(Tasks::default()),
        };
        let options = &inner.options;
        let span = debug_span!("durable.open", dictionary = %inner.location);
        async {
            if inner.caps.push
                && (options.trust_hints_for.is_some()
                    || matches!(options.mode, Mode::Background { .. }))
            {
                match inner
                    .call(Operation::Subscribe, inner.backend.subscribe())
                    .await
                {
                    Ok(hints) => {
                        let _ = inner.hints.source.set(hints.shared());
                        dict.spawn(hint_loop(inner.clone(), hints));
                    }
                    Err(error) => warn!(%error, "push hints unavailable, polling only"),
                }
            }
            let loaded = tokio::time::timeout(options.open_timeout, inner.initial_load())
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Timeout {
                        backend: inner.name().to_owned(),
                        operation: Operation::Open,
                        after: options.open_timeout,
                    })
                });
            match (loaded, &options.backup_file) {
                (Ok(()), _) => {}
                (Err(error), Some(path)) if error.is_unavailable() => {
                    inner.start_from_backup(path, error).await?;
                    if !matches!(options.mode, Mode::Background { .. }) {
                        let inner = inner.clone();
                        let recover = Duration::from_secs(1);
                        dict.spawn(async move {
                            poll_loop(&inner, recover, Duration::from_secs(30), true).await;
                        });
                    }
                }
                (Err(error), _) => return Err(error),
            }
            if let Mode::Background {
                interval,
                max_backoff,
            } = options.mode
            {
                let inner = inner.clone();
                dict.spawn(async move { poll_loop(&inner, interval, max_backoff, false).await });
            }
            if let Some(path) = &options.backup_file {
                dict.spawn(backup_loop(inner.clone(), path.clone()));
                inner.backup_wake.notify_one();
            }
            info!(
                version = %inner.state.load().version,
                entries = inner.state.load().map.len(),
                "dictionary opened"
            );
            Ok(dict.clone())
        }
        .instrument(span)
        .await
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self._tasks.0.lock().push(tokio::spawn(task));
    }

    /// The local snapshot, without any check: one atomic load, no I/O.
    pub fn snapshot(&self) -> Snapshot<V> {
        self.inner.snapshot()
    }

    /// The snapshot to read, according to the [`Mode`]: in autosync mode the version is checked
    /// first (unless the snapshot is younger than `max_staleness`); in the other modes this is
    /// [`snapshot`](Self::snapshot).
    ///
    /// Never fails: when the check fails, the last good snapshot is returned (its
    /// [`age`](Snapshot::age) grows, and [`health`](Self::health) has the error).
    pub async fn read(&self) -> Snapshot<V> {
        if let Mode::Autosync { max_staleness } = self.inner.options.mode
            && self.inner.state.load().age() >= max_staleness
            && let Err(error) = self.inner.check().await
        {
            debug!(%error, "autosync check failed, reading the last good snapshot");
        }
        self.snapshot()
    }

    /// Brings the snapshot up to date and returns it: a version check, then, only if the token
    /// changed, a delta (or a full reload) applied in O(changed keys).
    ///
    /// Concurrent calls share one round trip: a caller waits for a check that started after it
    /// called, so the result includes every write acknowledged before the call. If you opted in
    /// with [`Options::with_trust_hints_for`], live push hints and none received since a recent
    /// check let it return at once without a round trip.
    ///
    /// On failure the snapshot stays as it was and the error says why.
    pub async fn sync(&self) -> Result<Snapshot<V>> {
        if self.inner.hints_say_unchanged() {
            bump(&self.inner.counters.hint_skips);
            return Ok(self.snapshot());
        }
        self.inner.check().await?;
        Ok(self.snapshot())
    }

    /// The per-request read that never fails: [`sync`](Self::sync) when the store answers, and
    /// the last good snapshot when it does not, with how fresh it is.
    ///
    /// Serving stale data or answering an error is then the application's choice, for example
    /// "serve flags at most a minute old, else 503":
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> durable_core::Result<()> {
    /// # use std::time::Duration;
    /// # use durable_core::{Dict, Json, MemoryStore, Options};
    /// # let store = MemoryStore::new();
    /// # let flags: Dict<bool> = Dict::open(store.backend("prod", "flags")?, Json, Options::new()).await?;
    /// let flags = flags.sync_or_stale().await;
    /// if !flags.is_within(Duration::from_secs(60)) {
    ///     // answer 503 Service Unavailable
    /// }
    /// let enabled = flags.get("new-checkout") == Some(&true);
    /// # Ok(()) }
    /// ```
    pub async fn sync_or_stale(&self) -> Synced<V> {
        let error = match self.sync().await {
            Ok(snapshot) => {
                return Synced {
                    snapshot,
                    freshness: Freshness::Fresh,
                };
            }
            Err(error) => error,
        };
        let snapshot = self.snapshot();
        let freshness = if snapshot.is_from_backup() {
            Freshness::FromBackup { error }
        } else {
            let since = self.inner.counters.times.lock().stale_since;
            Freshness::Stale {
                since: since.unwrap_or_else(SystemTime::now),
                error,
            }
        };
        Synced {
            snapshot,
            freshness,
        }
    }

    /// Stores `value` under `key`. When it returns, the local snapshot has the value.
    pub async fn insert(&self, key: &str, value: V) -> Result<Version> {
        let bytes = self.inner.encode(key, &value)?;
        let size = bytes.len();
        let version = self
            .inner
            .write(Operation::Persist, self.inner.backend.persist(key, bytes))
            .await?;
        self.inner
            .publish_local(version, vec![self.inner.entry(key, value, size, version)])
            .await;
        Ok(version)
    }

    /// Stores `value` under `key` for `ttl`: from `ttl` after the write, on the store's clock,
    /// every handle hides the entry from reads, and the next sweep deletes it from the store
    /// (capability `expiry`).
    ///
    /// Any later write of the key without a TTL makes it permanent again. Handles judge expiry by
    /// their estimate of the store's clock, so they agree to within half their round trips to the
    /// store plus a millisecond or two, whatever their own clocks say (see the crate's README).
    pub async fn insert_with_ttl(&self, key: &str, value: V, ttl: Duration) -> Result<Version> {
        let inner = &self.inner;
        inner.require(inner.caps.expiry, Operation::PersistExpiring)?;
        let bytes = inner.encode(key, &value)?;
        let size = bytes.len();
        let sent = inner.clock.local_millis();
        let (version, expires_at) = inner
            .write(
                Operation::PersistExpiring,
                inner.backend.persist_expiring(key, bytes, ttl),
            )
            .await?;
        // The store's time of the write is a clock reading, unless the store shortened a huge
        // TTL to what it can hold.
        let ttl_millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_millis < MAX_OBSERVED_TTL_MILLIS
            && let Some(written_at) = expires_at.0.checked_sub(ttl_millis)
        {
            let received = inner.clock.local_millis();
            inner.clock.observe(StoreTime(written_at), sent, received);
        }
        let key: Key = key.into();
        let entry = Entry::new(
            key.clone(),
            value,
            version.revision(),
            Some(expires_at),
            size,
        );
        inner.publish_local(version, vec![(key, Some(entry))]).await;
        Ok(version)
    }

    /// Deletes every entry that has expired by the store's clock, in one atomic step with one
    /// version bump that other handles and change listeners see like any delete (capability
    /// `expiry`); a store that limits the size of one step (ZooKeeper) takes a few steps, oldest
    /// expiries first. Returns how many entries it removed; 0 bumps nothing.
    ///
    /// Any handle may sweep; handles also sweep by themselves after their own writes when their
    /// snapshot holds an expired entry, and in [`Mode::Background`] after each poll.
    pub async fn sweep(&self) -> Result<usize> {
        self.inner.sweep().await
    }

    /// Deletes `key`; the token of the delete if the key existed. A missing key changes nothing
    /// and bumps nothing (`None`).
    pub async fn remove(&self, key: &str) -> Result<Option<Version>> {
        self.inner.sweep_if_expired(key).await;
        let removed = self
            .inner
            .write(Operation::Depersist, self.inner.backend.depersist(key))
            .await?;
        if let Some(version) = removed {
            self.inner
                .publish_local(version, vec![(key.into(), None)])
                .await;
        }
        Ok(removed)
    }

    /// Deletes `key` and returns its value with the token of the delete, in one atomic step
    /// (capability `pop`).
    pub async fn pop(&self, key: &str) -> Result<Option<(V, Version)>> {
        self.inner.require(self.inner.caps.pop, Operation::Pop)?;
        self.inner.sweep_if_expired(key).await;
        let Some((bytes, version)) = self
            .inner
            .write(Operation::Pop, self.inner.backend.pop(key))
            .await?
        else {
            return Ok(None);
        };
        self.inner
            .publish_local(version, vec![(key.into(), None)])
            .await;
        Ok(Some((self.inner.decode(key, &bytes)?, version)))
    }

    /// Returns the value of `key`, storing `default` first if the key is absent, in one atomic
    /// step (capability `insert_if_absent`). A present key is left alone and bumps nothing.
    pub async fn setdefault(&self, key: &str, default: V) -> Result<Shared<V>> {
        Ok(self.put_if_absent(key, default).await?.0)
    }

    /// Stores `value` under `key` only if the key is absent, in one atomic step (capability
    /// `insert_if_absent`); true if it was stored. A present key is left alone and bumps nothing.
    pub async fn insert_if_absent(&self, key: &str, value: V) -> Result<bool> {
        Ok(self.put_if_absent(key, value).await?.1)
    }

    /// The value of `key` after an insert-if-absent of `value`, and whether it was inserted.
    async fn put_if_absent(&self, key: &str, value: V) -> Result<(Shared<V>, bool)> {
        self.inner
            .require(self.inner.caps.insert_if_absent, Operation::InsertIfAbsent)?;
        self.inner.sweep_if_expired(key).await;
        let bytes = self.inner.encode(key, &value)?;
        let size = bytes.len();
        let outcome = self
            .inner
            .write(
                Operation::InsertIfAbsent,
                self.inner.backend.persist_if_absent(key, bytes),
            )
            .await?;
        match outcome {
            IfAbsent::Inserted(version) => {
                let entry = Entry::new(key.into(), value, version.revision(), None, size);
                let shared = entry.shared().clone();
                self.inner
                    .publish_local(version, vec![(entry.key().clone(), Some(entry))])
                    .await;
                Ok((shared, true))
            }
            IfAbsent::Present(entry) => Ok((self.inner.versioned(entry)?.value, false)),
        }
    }

    /// Replaces `key`'s value with `new` (`None`: deletes it) if its revision is still
    /// `expected` (`None`: if the key is absent), in one atomic step (capability
    /// `compare_and_swap`). Read the revision with [`Snapshot::get_versioned`].
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        new: Option<V>,
    ) -> Result<Cas<V>> {
        self.inner
            .require(self.inner.caps.compare_and_swap, Operation::CompareAndSwap)?;
        self.inner.sweep_if_expired(key).await;
        let encoded = match &new {
            Some(value) => Some(self.inner.encode(key, value)?),
            None => None,
        };
        let size = encoded.as_ref().map_or(0, Bytes::len);
        let outcome = self
            .inner
            .write(
                Operation::CompareAndSwap,
                self.inner.backend.compare_and_swap(key, expected, encoded),
            )
            .await?;
        match outcome {
            Swap::Swapped(version) => {
                let write = match new {
                    Some(value) => self.inner.entry(key, value, size, version),
                    None => (key.into(), None),
                };
                self.inner.publish_local(version, vec![write]).await;
                Ok(Cas::Swapped { version })
            }
            Swap::Conflict(current) => Ok(Cas::Conflict {
                current: current.map(|e| self.inner.versioned(e)).transpose()?,
            }),
        }
    }

    /// Sets `key` to `f(current value)` (`None` from `f` deletes it) with an optimistic retry
    /// loop on the entry's revision (capability `compare_and_swap`): `f` may run several times
    /// when other writers race. Returns the new value. Gives up with
    /// [`Error::Contention`] after [`Options::with_max_update_attempts`] attempts.
    pub async fn update<F>(&self, key: &str, mut f: F) -> Result<Option<Shared<V>>>
    where
        F: FnMut(Option<&V>) -> Option<V>,
    {
        self.inner.sweep_if_expired(key).await;
        let current = self.snapshot().get_versioned(key);
        self.inner
            .swap_loop(
                key,
                current.map(|c| (c.value, c.revision)),
                |stored| self.inner.versioned(stored).map(|v| v.value),
                |current| {
                    let Some(value) = f(current.map(|v| &**v)) else {
                        return Ok(None);
                    };
                    let bytes = self.inner.encode(key, &value)?;
                    Ok(Some((bytes, value)))
                },
            )
            .await
            .map(|written| written.and_then(|(value, _)| value))
    }

    /// Adds `delta` to the integer stored under `key` (absent counts as 0) and returns the new
    /// value with the write's token. Atomic in the store: one round trip where the backend has a native increment and the
    /// encoding stores integers as decimal text (JSON, raw); a compare-and-swap loop otherwise.
    ///
    /// With a native increment, concurrent increments of one key through one handle are combined:
    /// while one store write is in flight, the increments that arrive queue up and go to the store
    /// as one write of their sum, so a hot counter costs about one round trip per round trip
    /// time, not one per increment. Each caller gets the value right after its own delta in the
    /// combined order, and the token of the combined write; a failed write fails every increment
    /// combined in it.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)>
    where
        E: Encoding<i64>,
    {
        let inner = &self.inner;
        inner.sweep_if_expired(key).await;
        let native = inner.caps.increment
            && Encoding::<i64>::integers_are_decimal_text(&inner.encoding)
            && Encoding::<V>::integers_are_decimal_text(&inner.encoding);
        if native {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let first = {
                let mut queued = inner.increments.lock();
                match queued.get_mut(key) {
                    Some(waiting) => {
                        waiting.push((delta, sender));
                        false
                    }
                    None => {
                        queued.insert(key.to_owned(), vec![(delta, sender)]);
                        true
                    }
                }
            };
            if first {
                // A task of its own, so that a caller giving up cannot strand the queue.
                tokio::spawn(flush_increments(inner.clone(), key.to_owned()));
            }
            let value = receiver.await.unwrap_or_else(|_| {
                Err(Error::unavailable(
                    inner.name(),
                    Operation::Increment,
                    "the increment task stopped (runtime shutting down)",
                ))
            })?;
            return Ok(value);
        }
        inner.require(inner.caps.compare_and_swap, Operation::Increment)?;
        let to_int = |bytes: &[u8]| {
            Encoding::<i64>::decode(&inner.encoding, bytes).map_err(|_| Error::NotAnInteger {
                backend: inner.name().to_owned(),
                key: key.to_owned(),
            })
        };
        let current = match self.snapshot().get_versioned(key) {
            Some(c) => Some((to_int(&inner.encode(key, &c.value)?)?, c.revision)),
            None => None,
        };
        let mut result = 0;
        let written = inner
            .swap_loop(
                key,
                current,
                |stored| to_int(&stored.value),
                |current| {
                    let value = current
                        .copied()
                        .unwrap_or(0)
                        .checked_add(delta)
                        .ok_or_else(|| Error::NotAnInteger {
                            backend: inner.name().to_owned(),
                            key: key.to_owned(),
                        })?;
                    result = value;
                    let bytes = Encoding::<i64>::encode(&inner.encoding, &value).map_err(|e| {
                        inner.encode_error(key, Encoding::<i64>::name(&inner.encoding), e)
                    })?;
                    let decoded = inner.decode(key, &bytes)?;
                    Ok(Some((bytes, decoded)))
                },
            )
            .await?;
        let Some((_, version)) = written else {
            unreachable!("an increment always has a value to write");
        };
        Ok((result, version))
    }

    /// Stores every entry in one atomic step with one version bump (capability `batch`).
    /// Nothing is written if any value fails to encode.
    pub async fn insert_many<K: Into<String>>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Option<Version>> {
        let mut ops = Vec::new();
        let mut values = Vec::new();
        for (key, value) in entries {
            let key = key.into();
            let bytes = self.inner.encode(&key, &value)?;
            values.push((key.clone(), value, bytes.len()));
            ops.push(BatchOp::Put { key, value: bytes });
        }
        self.batch(ops, |version| {
            values
                .into_iter()
                .map(|(key, value, size)| self.inner.entry(&key, value, size, version))
                .collect()
        })
        .await
    }

    /// Deletes every listed key in one atomic step with one version bump (capability `batch`);
    /// bumps nothing if none existed.
    pub async fn remove_many<K: Into<String>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Option<Version>> {
        let ops: Vec<BatchOp> = keys
            .into_iter()
            .map(|key| BatchOp::Delete { key: key.into() })
            .collect();
        let keys: Vec<Key> = ops.iter().map(|op| op.key().into()).collect();
        self.batch(ops, |_| keys.into_iter().map(|k| (k, None)).collect())
            .await
    }

    /// Stores (`Some`) or deletes (`None`) every listed key in one atomic step with one version
    /// bump (capability `batch`), e.g. to make the dictionary hold exactly a file's entries.
    /// Nothing is written if any value fails to encode.
    pub async fn write_many<K: Into<String>>(
        &self,
        writes: impl IntoIterator<Item = (K, Option<V>)>,
    ) -> Result<Option<Version>> {
        let mut ops = Vec::new();
        let mut values = Vec::new();
        for (key, value) in writes {
            let key = key.into();
            match value {
                Some(value) => {
                    let bytes = self.inner.encode(&key, &value)?;
                    values.push((key.clone(), Some((value, bytes.len()))));
                    ops.push(BatchOp::Put { key, value: bytes });
                }
                None => {
                    values.push((key.clone(), None));
                    ops.push(BatchOp::Delete { key });
                }
            }
        }
        self.batch(ops, |version| {
            values
                .into_iter()
                .map(|(key, value)| match value {
                    Some((value, size)) => self.inner.entry(&key, value, size, version),
                    None => (key.into(), None),
                })
                .collect()
        })
        .await
    }

    async fn batch(
        &self,
        ops: Vec<BatchOp>,
        writes: impl FnOnce(Version) -> LocalWrites<V>,
    ) -> Result<Option<Version>> {
        self.inner
            .require(self.inner.caps.batch, Operation::Batch)?;
        let version = self
            .inner
            .write(Operation::Batch, self.inner.backend.persist_batch(ops))
            .await?;
        if let Some(version) = version {
            self.inner.publish_local(version, writes(version)).await;
        }
        Ok(version)
    }

    /// Deletes every entry of the stored dictionary (not only the local copy) in one atomic step
    /// (capability `clear`); bumps nothing if it was empty. Its time grows with the dictionary,
    /// so it runs under the load timeout ([`Options::with_load_timeout`]).
    pub async fn clear(&self) -> Result<Option<Version>> {
        self.inner
            .require(self.inner.caps.clear, Operation::Clear)?;
        let version = self
            .inner
            .write(Operation::Clear, self.inner.backend.clear())
            .await?;
        if let Some(version) = version {
            let keys = self.snapshot().keys().map(|k| (k.into(), None)).collect();
            self.inner.publish_local(version, keys).await;
        }
        Ok(version)
    }

    /// Listens to key-level changes of the local snapshot (from this handle's writes and from
    /// syncs). A listener that falls more than [`Options::with_listener_capacity`] events behind
    /// gets [`broadcast::error::RecvError::Lagged`] and should re-read the snapshot;
    /// [`changes`](Self::changes) does that for you.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<V>> {
        self.inner.changes.subscribe()
    }

    /// The key-level changes of the local snapshot as a [`Stream`](futures_util::Stream), from
    /// now on. Nothing is dropped silently: a listener that falls more than
    /// [`Options::with_listener_capacity`] changes behind gets one
    /// [`ChangeEvent::Resynced`] with the whole current snapshot instead of the changes it
    /// missed. The stream ends when the handle is dropped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> durable_core::Result<()> {
    /// use durable_core::{ChangeEvent, Dict, Json, MemoryStore, Options};
    /// use futures_util::StreamExt;
    ///
    /// # let store = MemoryStore::new();
    /// let flags: Dict<bool> = Dict::open(store.backend("prod", "flags")?, Json, Options::new()).await?;
    /// let mut changes = Box::pin(flags.changes());
    /// flags.insert("new-checkout", true).await?;
    /// match changes.next().await {
    ///     Some(ChangeEvent::Changed(change)) => assert_eq!(&*change.key, "new-checkout"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn changes(&self) -> impl futures_util::Stream<Item = ChangeEvent<V>> + Send + 'static {
        let receiver = self.inner.changes.subscribe();
        let inner = Arc::downgrade(&self.inner);
        futures_util::stream::unfold((receiver, inner), |(mut receiver, inner)| async move {
            let event = match receiver.recv().await {
                Ok(change) => ChangeEvent::Changed(change),
                Err(broadcast::error::RecvError::Lagged(missed)) => ChangeEvent::Resynced {
                    missed,
                    snapshot: inner.upgrade()?.snapshot(),
                },
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((event, (receiver, inner)))
        })
    }

    /// Counters of what this handle has done.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Readiness and freshness of this handle.
    pub fn health(&self) -> Health {
        let state = self.inner.state.load();
        let times = self.inner.counters.times.lock();
        Health {
            dictionary: self.inner.location.clone(),
            ready: true,
            fresh: times.stale_since.is_none() && !state.from_backup,
            stale_since: times.stale_since,
            last_error: times.last_error.clone(),
            age: state.age(),
            version: state.version.to_string(),
            bad_keys: state
                .bad
                .iter()
                .take(Health::MAX_BAD_KEYS)
                .map(|(key, error)| BadKey {
                    key: key.to_string(),
                    error: error.to_string(),
                })
                .collect(),
        }
    }

    /// The backend's optional capabilities.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.caps
    }

    /// The backend's name, e.g. `redis`.
    pub fn backend_name(&self) -> &str {
        self.inner.name()
    }
}

impl<V, E> Inner<V, E>
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    fn name(&self) -> &str {
        self.backend.name()
    }

    fn stats(&self) -> Stats {
        let state = self.state.load();
        let mut stats = self.counters.stats(
            state.version,
            state.map.len(),
            state.map.bytes(),
            state.age(),
        );
        stats.expiring = state.map.expiring();
        stats.bad_keys = state.bad.len();
        if let Some((offset, uncertainty)) = self.clock.offset() {
            stats.store_clock_offset_ms = Some(offset);
            stats.store_clock_uncertainty_ms = u64::try_from(uncertainty.as_millis()).ok();
        }
        stats
    }

    /// Brings the metrics up to date (feature `metrics`; without it, nothing is computed on the
    /// write and check paths).
    fn export_metrics(&self) {
        #[cfg(feature = "metrics")]
        {
            let fresh = self.counters.times.lock().stale_since.is_none();
            self.metrics.export(&self.stats(), fresh);
        }
    }

    /// Counts a failed store operation (`is_check`: a version check, which makes the handle
    /// stale).
    fn failed(&self, error: &Error, is_check: bool) {
        self.counters.failed(error, is_check);
        self.metrics.error(error);
    }

    fn snapshot(&self) -> Snapshot<V> {
        Snapshot::new(self.state.load())
    }

    fn require(&self, capable: bool, operation: Operation) -> Result<()> {
        if capable {
            Ok(())
        } else {
            Err(Error::not_supported(self.name(), operation))
        }
    }

    fn encode_error(&self, key: &str, encoding: &'static str, e: crate::EncodingError) -> Error {
        Error::Encode {
            backend: self.name().to_owned(),
            key: key.to_owned(),
            encoding,
            source: Arc::from(e),
        }
    }

    /// Encodes a value to write under `key`, checking the size limits.
    fn encode(&self, key: &str, value: &V) -> Result<Bytes> {
        let bytes = self.encoded(key, value)?;
        self.check_size(key, &bytes)?;
        Ok(bytes)
    }

    /// Encodes a value of `key`.
    fn encoded(&self, key: &str, value: &V) -> Result<Bytes> {
        self.encoding
            .encode(value)
            .map_err(|e| self.encode_error(key, self.encoding.name(), e))
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<V> {
        self.encoding.decode(bytes).map_err(|e| Error::Decode {
            backend: self.name().to_owned(),
            key: key.to_owned(),
            encoding: self.encoding.name(),
            source: Arc::from(e),
        })
    }

    fn versioned(&self, stored: StoredEntry) -> Result<Versioned<V>> {
        let value = self.decode(&stored.key, &stored.value)?;
        Ok(Versioned {
            value: Shared::new(stored.key.into(), value, stored.revision),
            revision: stored.revision,
        })
    }

    /// A local write of `value` under `key` by the write that produced `version`.
    fn entry(&self, key: &str, value: V, size: usize, version: Version) -> (Key, Option<Entry<V>>) {
        let key: Key = key.into();
        let entry = Entry::new(key.clone(), value, version.revision(), None, size);
        (key, Some(entry))
    }

    /// Runs one store operation under the operation timeout, counting failures.
    async fn call<T>(
        &self,
        operation: Operation,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let result = self.timed(operation, fut).await;
        if let Err(error) = &result {
            self.failed(error, false);
        }
        result
    }

    /// [`call`](Self::call) for a write: counts acknowledged writes.
    async fn write<T>(
        &self,
        operation: Operation,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let result = self.call(operation, fut).await;
        if result.is_ok() {
            bump(&self.counters.writes);
            self.export_metrics();
            if operation != Operation::Sweep {
                self.sweep_lazily();
            }
        }
        result
    }

    /// The largest value this handle writes or accepts: the backend's limit or the options'.
    fn max_value_size(&self) -> Option<usize> {
        match (self.caps.max_value_size, self.options.max_value_size) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Refuses a write of `bytes` under `key` that would break a size limit, before it is sent.
    fn check_size(&self, key: &str, bytes: &Bytes) -> Result<()> {
        if let Some(limit) = self.max_value_size()
            && bytes.len() > limit
        {
            return Err(Error::ValueTooLarge {
                backend: self.name().to_owned(),
                key: key.to_owned(),
                size: bytes.len(),
                limit,
            });
        }
        let state = self.state.load();
        let old = state.map.get(key);
        let entries = state.map.len() + usize::from(old.is_none());
        let total = state.map.bytes() - old.map_or(0, Slot::size) + bytes.len();
        self.check_limits(entries, total)
            .map_err(|detail| self.limit_error(format!("writing key {key:?}: {detail}")))
    }

    /// Whether `entries` entries of `total` bytes fit the options' limits; why not otherwise.
    fn check_limits(&self, entries: usize, total: usize) -> std::result::Result<(), String> {
        if let Some(max) = self.options.max_entries
            && entries > max
        {
            return Err(format!("{entries} entries, the limit is {max}"));
        }
        if let Some(max) = self.options.max_total_bytes
            && total > max
        {
            return Err(format!("{total} bytes of values, the limit is {max}"));
        }
        Ok(())
    }

    fn limit_error(&self, detail: String) -> Error {
        Error::LimitExceeded {
            backend: self.name().to_owned(),
            detail,
        }
    }
}
