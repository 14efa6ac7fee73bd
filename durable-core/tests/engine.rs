//! Engine behaviour: modes, coalescing, failures, backups and listeners, on the memory backend.
//! Timers run on tokio's paused clock, so nothing here sleeps for real unless it says so.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use durable_core::{
    Bincode, ChangeEvent, ChangeKind, DecodeErrors, Dict, Error, Freshness, Json, MemoryStore,
    Mode, Options, Raw, Version,
};

const NS: &str = "test";

async fn open<V>(store: &MemoryStore, options: Options) -> Dict<V, Json>
where
    V: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    Dict::open(store.backend(NS, "d").unwrap(), Json, options)
        .await
        .unwrap()
}

fn manual() -> Options {
    Options::new()
}

/// Real milliseconds since `start`, rounded up. A handle's clock and the memory store's each
/// start from the system time when they are made, then follow tokio's (paused) clock, so a
/// handle opened this long after its store finds the store's clock up to this far behind, on top
/// of any skew set (a millisecond or two on a loaded machine).
fn wall_ms_since(start: std::time::Instant) -> i64 {
    i64::try_from(start.elapsed().as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}

#[tokio::test(start_paused = true)]
async fn concurrent_syncs_share_one_round_trip() {
    let store = MemoryStore::new();
    let dict: Dict<u32> = open(&store, manual()).await;
    store.set_latency(Duration::from_millis(5));
    let before = store.calls();
    let callers: Vec<_> = (0..64)
        .map(|_| {
            let dict = dict.clone();
            tokio::spawn(async move { dict.sync().await.map(|_| ()) })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap().unwrap();
    }
    let round_trips = store.calls() - before;
    assert!(
        round_trips <= 2,
        "64 callers made {round_trips} round trips"
    );
    assert!(dict.stats().coalesced >= 62, "{:?}", dict.stats());
}

/// Refreshing the reading of the store's clock (once a minute while expiring entries are held)
/// is not part of the shared check: coalesced callers wait for one round trip, not two.
#[tokio::test(start_paused = true)]
async fn a_coalesced_check_costs_one_round_trip_when_the_clock_is_due() {
    let wall = std::time::Instant::now();
    let store = MemoryStore::new();
    let dict: Dict<u32> = open(&store, manual()).await;
    let apart = wall_ms_since(wall);
    dict.insert_with_ttl("k", 1, Duration::from_secs(3600))
        .await
        .unwrap();
    dict.sync().await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    store.set_latency(Duration::from_millis(10));
    let before = store.calls();
    let started = tokio::time::Instant::now();
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let dict = dict.clone();
            tokio::spawn(async move {
                dict.sync().await.unwrap();
                started.elapsed()
            })
        })
        .collect();
    let mut took = Vec::new();
    for caller in callers {
        took.push(caller.await.unwrap());
    }
    // The first caller's check, then one shared by the callers that arrived after it started:
    // two version checks of 10 ms each, and no clock reading in between.
    assert_eq!(
        took.iter().max(),
        Some(&Duration::from_millis(20)),
        "{took:?}"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.calls() - before,
        3,
        "two version checks, then one clock reading in the background"
    );
    let measured = dict.stats().store_clock_offset_ms;
    assert!(
        measured.is_some_and(|offset| (-apart - 1..=1).contains(&offset)),
        "{measured:?}, clocks made {apart} ms apart"
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_never_joins_a_check_that_started_before_it() {
    let store = MemoryStore::new();
    let reader: Dict<u32> = open(&store, manual()).await;
    let writer: Dict<u32> = open(&store, manual()).await;
    store.set_latency(Duration::from_millis(50));
    // A check is in flight: it reads the version at 25 ms and answers at 50 ms.
    let early = tokio::spawn({
        let reader = reader.clone();
        async move { reader.sync().await.map(|s| s.get("k").copied()) }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    store.set_latency(Duration::ZERO);
    writer.insert("k", 1).await.unwrap();
    store.set_latency(Duration::from_millis(50));
    // This call starts after the write was acknowledged: it must see it.
    let late = reader.sync().await.unwrap();
    assert_eq!(late.get("k"), Some(&1));
    assert_eq!(
        early.await.unwrap().unwrap(),
        None,
        "the early check predates the write"
    );
}

#[tokio::test(start_paused = true)]
async fn autosync_checks_before_reads_within_max_staleness() {
    let store = MemoryStore::new();
    let writer: Dict<u32> = open(&store, manual()).await;
    let options = manual().with_mode(Mode::Autosync {
        max_staleness: Duration::from_secs(1),
    });
    let reader: Dict<u32> = open(&store, options).await;
    writer.insert("k", 1).await.unwrap();
    // Just opened: the snapshot is younger than max_staleness, so no check.
    assert_eq!(reader.read().await.get("k"), None);
    tokio::time::advance(Duration::from_millis(1100)).await;
    assert_eq!(reader.read().await.get("k"), Some(&1));
    let checks = reader.stats().checks;
    reader.read().await;
    assert_eq!(
        reader.stats().checks,
        checks,
        "a fresh snapshot was checked again"
    );
}

#[tokio::test(start_paused = true)]
async fn background_mode_polls_with_backoff_and_recovers() {
    let store = MemoryStore::new();
    let writer: Dict<u32> = open(&store, manual()).await;
    let interval = Duration::from_secs(1);
    let options = manual().with_mode(Mode::Background {
        interval,
        max_backoff: Duration::from_secs(16),
    });
    let reader: Dict<u32> = open(&store, options).await;
    writer.insert("k", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        reader.snapshot().get("k"),
        Some(&1),
        "polled within an interval"
    );

    store.set_available(false);
    let errors = reader.stats().errors;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let failed = reader.stats().errors - errors;
    // 1, 2, 4, 8, 16, 16, 16 s between attempts (±10%): about 7 in a minute, not 60.
    assert!((4..=10).contains(&failed), "{failed} attempts in 60 s");
    assert_eq!(
        reader.snapshot().get("k"),
        Some(&1),
        "reads go on from the snapshot"
    );
    assert!(!reader.health().fresh);

    store.set_available(true);
    writer.insert("k", 2).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        reader.snapshot().get("k"),
        Some(&2),
        "converged after the store came back"
    );
    assert!(reader.health().fresh);
}

#[tokio::test(start_paused = true)]
async fn store_down_keeps_reads_and_fails_sync_and_writes_cleanly() {
    let store = MemoryStore::new();
    let dict: Dict<u32> = open(&store, manual()).await;
    dict.insert("k", 1).await.unwrap();
    let version = dict.snapshot().version();
    store.set_available(false);
    tokio::time::advance(Duration::from_secs(30)).await;

    let error = dict.sync().await.unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error}");
    assert!(
        error.to_string().contains("memory"),
        "names the backend: {error}"
    );
    let write = dict.insert("k", 2).await.unwrap_err();
    assert!(write.is_unavailable());
    assert!(dict.remove("k").await.is_err());

    let snapshot = dict.read().await;
    assert_eq!(snapshot.get("k"), Some(&1), "nothing changed locally");
    assert_eq!(snapshot.version(), version);
    assert!(
        snapshot.age() >= Duration::from_secs(30),
        "age {:?}",
        snapshot.age()
    );
    let health = dict.health();
    assert!(!health.fresh && health.stale_since.is_some());
    assert!(health.last_error.unwrap().contains("unavailable"));

    store.set_available(true);
    assert_eq!(dict.sync().await.unwrap().get("k"), Some(&1));
    assert!(dict.health().fresh);
    assert!(dict.snapshot().age() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn operations_time_out() {
    let store = MemoryStore::new();
    let dict: Dict<u32> = open(&store, manual().with_timeout(Duration::from_secs(1))).await;
    store.set_latency(Duration::from_secs(60));
    match dict.sync().await {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_secs(1)),
        other => panic!("{other:?}"),
    }
    let opened = Dict::<u32, _>::open(
        store.backend(NS, "d").unwrap(),
        Json,
        manual().with_open_timeout(Duration::from_secs(2)),
    )
    .await;
    assert!(matches!(opened, Err(Error::Timeout { .. })), "{opened:?}");
}

#[tokio::test]
async fn an_undecodable_value_costs_its_key_only_or_fails_the_sync() {
    let store = MemoryStore::new();
    let strict: Dict<u32> = open(&store, manual().with_decode_errors(DecodeErrors::Fail)).await;
    let isolating: Dict<u32> = open(&store, manual()).await;
    strict.insert("good", 1).await.unwrap();
    strict.insert("bad key", 7).await.unwrap();
    isolating.sync().await.unwrap();
    store.corrupt(NS, "d", "bad key", b"\xff not json").unwrap();
    strict.insert("good", 2).await.unwrap();

    let error = strict.sync().await.unwrap_err();
    match &error {
        Error::Decode { key, encoding, .. } => {
            assert_eq!(key, "bad key");
            assert_eq!(*encoding, "json");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        strict.snapshot().get("bad key"),
        Some(&7),
        "the old snapshot stays"
    );

    // By default the sync succeeds, the bad key keeps its last good value, and health names it.
    let snapshot = isolating.sync().await.unwrap();
    assert_eq!(snapshot.get("good"), Some(&2));
    assert_eq!(
        snapshot.get("bad key"),
        Some(&7),
        "the last good value stays"
    );
    let health = isolating.health();
    assert_eq!(
        health.dictionary, "memory/test/d",
        "health names the dictionary"
    );
    assert!(health.fresh, "a bad value does not make the handle stale");
    assert_eq!(health.bad_keys.len(), 1);
    assert_eq!(health.bad_keys[0].key, "bad key");
    assert!(health.bad_keys[0].error.contains("json"), "{health:?}");
    assert_eq!(isolating.stats().bad_keys, 1);

    // A handle opened over the bad value opens, without the key, and says why.
    let fresh: Dict<u32> = open(&store, manual()).await;
    assert_eq!(fresh.snapshot().get("good"), Some(&2));
    assert!(!fresh.snapshot().contains_key("bad key"));
    assert_eq!(fresh.health().bad_keys[0].key, "bad key");
    // A full reload keeps the last good value too.
    store.forget_history(NS, "d").unwrap();
    strict.insert("other", 3).await.unwrap();
    let snapshot = isolating.sync().await.unwrap();
    assert_eq!(snapshot.get("bad key"), Some(&7));

    // Rewriting the key clears it, for every handle.
    strict.insert("bad key", 8).await.unwrap();
    assert_eq!(isolating.sync().await.unwrap().get("bad key"), Some(&8));
    assert!(isolating.health().bad_keys.is_empty());
    assert_eq!(fresh.sync().await.unwrap().get("bad key"), Some(&8));
    assert!(fresh.health().bad_keys.is_empty());

    // Under `Fail`, a handle cannot open over a bad value.
    store.corrupt(NS, "d", "bad key", b"\xff").unwrap();
    let opened = Dict::<u32, _>::open(
        store.backend(NS, "d").unwrap(),
        Json,
        manual().with_decode_errors(DecodeErrors::Fail),
    )
    .await;
    assert!(matches!(opened, Err(Error::Decode { .. })));
}

/// A backend whose full loads hand every row over, restart (as a retry does), and hand every
/// row over again.
#[derive(Debug)]
struct LoadsTwice(Box<dyn durable_core::Backend>);

#[async_trait::async_trait]
impl durable_core::Backend for LoadsTwice {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn capabilities(&self) -> durable_core::Capabilities {
        durable_core::Capabilities::none()
    }
    async fn persist(&self, key: &str, value: bytes::Bytes) -> durable_core::Result<Version> {
        self.0.persist(key, value).await
    }
    async fn depersist(&self, key: &str) -> durable_core::Result<Option<Version>> {
        self.0.depersist(key).await
    }
    async fn durables(&self) -> durable_core::Result<durable_core::Load> {
        self.0.durables().await
    }
    async fn durables_in_parts(
        &self,
        parts: &mut dyn durable_core::LoadParts,
    ) -> durable_core::Result<durable_core::Load> {
        let mut load = self.0.durables().await?;
        parts.rows(load.entries.iter().cloned().collect());
        parts.restart();
        parts.rows(std::mem::take(&mut load.entries));
        Ok(load)
    }
    async fn last_updated(&self) -> durable_core::Result<Version> {
        self.0.last_updated().await
    }
}

#[tokio::test]
async fn a_load_that_restarts_sets_a_bad_value_aside_once() {
    let store = MemoryStore::new();
    let writer: Dict<u32> = open(&store, manual()).await;
    writer.insert("good", 1).await.unwrap();
    writer.insert("bad key", 2).await.unwrap();
    store.corrupt(NS, "d", "bad key", b"not json").unwrap();
    let backend = LoadsTwice(Box::new(store.backend(NS, "d").unwrap()));
    let reader: Dict<u32> = Dict::open(backend, Json, manual()).await.unwrap();
    assert_eq!(reader.snapshot().get("good"), Some(&1));
    assert_eq!(reader.snapshot().len(), 1, "each row once");
    assert_eq!(reader.health().bad_keys.len(), 1);
    assert_eq!(
        reader.stats().skipped_values,
        1,
        "counted once, not per attempt"
    );
}

#[tokio::test]
async fn bincode_values_round_trip_and_reject_garbage() {
    let store = MemoryStore::new();
    let options = manual();
    let dict: Dict<Vec<String>, Bincode> =
        Dict::open(store.backend(NS, "b").unwrap(), Bincode, options.clone())
            .await
            .unwrap();
    dict.insert("list", vec!["a".into(), "é".into()])
        .await
        .unwrap();
    let other: Dict<Vec<String>, Bincode> =
        Dict::open(store.backend(NS, "b").unwrap(), Bincode, options)
            .await
            .unwrap();
    assert_eq!(other.snapshot().get("list").unwrap(), &["a", "é"]);
    store
        .corrupt(
            NS,
            "b",
            "list",
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        )
        .unwrap();
    assert!(other.sync().await.is_ok());
    assert_eq!(other.health().bad_keys[0].key, "list");
    assert_eq!(other.snapshot().get("list").unwrap(), &["a", "é"]);
}

#[tokio::test]
async fn a_value_that_cannot_be_encoded_writes_nothing() {
    let store = MemoryStore::new();
    let dict: Dict<HashMap<(u8, u8), u8>> = open(&store, manual()).await;
    let version = dict.snapshot().version();
    let calls = store.calls();
    let error = dict
        .insert("k", HashMap::from([((1, 2), 3)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Encode { key, .. } if key == "k"),
        "{error}"
    );
    assert_eq!(store.calls(), calls, "nothing was sent");
    assert_eq!(dict.sync().await.unwrap().version(), version);
}

#[tokio::test]
async fn wiped_store_is_reloaded_by_every_handle() {
    let store = MemoryStore::new();
    let a: Dict<u32> = open(&store, manual()).await;
    let b: Dict<u32> = open(&store, manual()).await;
    a.insert("k", 1).await.unwrap();
    b.sync().await.unwrap();
    store.wipe(NS, "d").unwrap();
    // Same number of writes after the wipe: the counter matches, the epoch does not.
    let c: Dict<u32> = open(&store, manual()).await;
    c.insert("j", 2).await.unwrap();
    for handle in [&a, &b] {
        let snapshot = handle.sync().await.unwrap();
        assert_eq!(snapshot.get("k"), None);
        assert_eq!(snapshot.get("j"), Some(&2));
    }
}

#[tokio::test]
async fn listeners_hear_local_and_synced_changes() {
    let store = MemoryStore::new();
    let a: Dict<u32> = open(&store, manual()).await;
    let b: Dict<u32> = open(&store, manual()).await;
    let mut changes = a.subscribe();
    a.insert("k", 1).await.unwrap();
    let change = changes.recv().await.unwrap();
    assert_eq!((&*change.key, change.kind), ("k", ChangeKind::Inserted));
    assert_eq!(change.new.as_deref(), Some(&1));

    b.insert("k", 2).await.unwrap();
    b.insert("j", 3).await.unwrap();
    b.remove("j").await.unwrap();
    a.sync().await.unwrap();
    let change = changes.recv().await.unwrap();
    assert_eq!(change.kind, ChangeKind::Updated);
    assert_eq!(
        (change.old.as_deref(), change.new.as_deref()),
        (Some(&1), Some(&2))
    );
    assert_eq!(change.version, a.snapshot().version());
    assert!(
        changes.try_recv().is_err(),
        "j came and went between syncs: no event"
    );

    store.wipe(NS, "d").unwrap();
    b.insert("z", 9).await.unwrap();
    a.sync().await.unwrap();
    let mut events: Vec<(String, ChangeKind)> = Vec::new();
    while let Ok(change) = changes.try_recv() {
        events.push((change.key.to_string(), change.kind));
    }
    events.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        events,
        vec![
            ("k".into(), ChangeKind::Removed),
            ("z".into(), ChangeKind::Inserted)
        ]
    );
}

#[tokio::test]
async fn push_hints_make_a_quiet_sync_free() {
    let store = MemoryStore::new();
    let writer: Dict<u32> = open(&store, manual()).await;
    let trusting = Options::new().with_trust_hints_for(Some(Duration::from_secs(1)));
    let reader: Dict<u32> = open(&store, trusting).await;
    reader.sync().await.unwrap();
    let calls = store.calls();
    for _ in 0..100 {
        reader.sync().await.unwrap();
    }
    assert_eq!(store.calls(), calls, "quiet syncs made round trips");
    assert!(reader.stats().hint_skips >= 100);
    writer.insert("k", 7).await.unwrap();
    // The hint is in before the write returned: the very next sync checks.
    assert_eq!(reader.sync().await.unwrap().get("k"), Some(&7));
}

#[tokio::test]
async fn own_writes_are_visible_and_survive_an_older_sync() {
    let store = MemoryStore::new();
    let a: Dict<u32> = open(&store, manual()).await;
    let b: Dict<u32> = open(&store, manual()).await;
    b.insert("theirs", 1).await.unwrap();
    // a has not seen b's write, so its own write cannot advance its token: it is pending.
    a.insert("mine", 2).await.unwrap();
    assert_eq!(a.snapshot().get("mine"), Some(&2));
    assert_eq!(a.snapshot().get("theirs"), None);
    let snapshot = a.sync().await.unwrap();
    assert_eq!(
        (snapshot.get("mine"), snapshot.get("theirs")),
        (Some(&2), Some(&1))
    );
    // Now a's token is current, so its writes advance it without another round trip.
    a.insert("mine", 3).await.unwrap();
    let checks = a.stats();
    assert_eq!(a.sync().await.unwrap().get("mine"), Some(&3));
    assert_eq!(a.stats().deltas, checks.deltas);
    assert_eq!(a.stats().reloads, checks.reloads);
}

#[tokio::test]
async fn conditional_writes_on_the_handle() {
    let store = MemoryStore::new();
    let dict: Dict<i64> = open(&store, manual()).await;
    assert_eq!(dict.increment("n", 2).await.unwrap().0, 2);
    let (value, version) = dict.increment("n", -5).await.unwrap();
    assert_eq!(value, -3);
    assert_eq!(dict.snapshot().version(), version);
    assert_eq!(*dict.setdefault("n", 100).await.unwrap(), -3);
    let doubled = dict.update("n", |v| v.map(|v| v * 2)).await.unwrap();
    assert_eq!(doubled.as_deref(), Some(&-6));
    assert_eq!(dict.update("gone", |_| None).await.unwrap(), None);
    let (value, version) = dict.pop("n").await.unwrap().unwrap();
    assert_eq!(value, -6);
    assert_eq!(dict.snapshot().version(), version);
    assert!(
        dict.insert_many([("a", 1), ("b", 2)])
            .await
            .unwrap()
            .is_some()
    );
    assert!(dict.clear().await.unwrap().is_some());
    assert!(dict.snapshot().is_empty());

    // Increments through a compare-and-swap loop when the encoding is not decimal text.
    let binary: Dict<i64, Bincode> =
        Dict::open(store.backend(NS, "bin").unwrap(), Bincode, manual())
            .await
            .unwrap();
    assert_eq!(binary.increment("n", 40).await.unwrap().0, 40);
    let (value, version) = binary.increment("n", 2).await.unwrap();
    assert_eq!(value, 42);
    assert_eq!(binary.snapshot().version(), version);
    assert_eq!(binary.snapshot().get("n"), Some(&42));
}

#[tokio::test]
async fn invalid_names_are_rejected() {
    let store = MemoryStore::new();
    for bad in ["", "a/b", ".hidden", "sp ace", &"x".repeat(129)] {
        let error = store.backend(bad, "d").unwrap_err();
        assert!(
            matches!(error, Error::InvalidName { .. }),
            "{bad:?}: {error}"
        );
    }
}

#[tokio::test]
async fn backup_file_lets_a_handle_start_while_the_store_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.durable-backup");
    let store = MemoryStore::new();
    let options = manual()
        .with_backup_file(&path)
        .with_backup_interval(Duration::from_millis(10));
    let dict: Dict<String, Raw> = Dict::open(store.backend(NS, "d").unwrap(), Raw, options.clone())
        .await
        .unwrap();
    dict.insert("greeting", "hello".into()).await.unwrap();
    // The backup is written on a blocking thread: wait for the write (real time).
    let mut found = false;
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let text = std::fs::read(&path).unwrap_or_default();
        if text.windows(5).any(|w| w == b"hello") {
            found = true;
            break;
        }
    }
    assert!(found, "backup file written");
    drop(dict);
    tokio::time::sleep(Duration::from_millis(300)).await;

    store.set_available(false);
    let cold: Dict<String, Raw> = Dict::open(store.backend(NS, "d").unwrap(), Raw, options.clone())
        .await
        .unwrap();
    let snapshot = cold.snapshot();
    assert!(snapshot.is_from_backup());
    assert!(
        snapshot.age() >= Duration::from_millis(300),
        "the age counts from the backup's last confirmation, not from the open: {:?}",
        snapshot.age()
    );
    assert_eq!(snapshot.get("greeting").map(String::as_str), Some("hello"));
    assert!(!cold.health().fresh);
    drop(snapshot);

    // Without the backup, opening fails with the store's error.
    let no_backup = Dict::<String, Raw>::open(store.backend(NS, "d").unwrap(), Raw, manual()).await;
    assert!(matches!(no_backup, Err(Error::Unavailable { .. })));

    // When the store returns, the recovery loop confirms the snapshot.
    store.set_available(true);
    for _ in 0..40 {
        if !cold.snapshot().is_from_backup() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!cold.snapshot().is_from_backup(), "recovered");
    assert!(cold.health().fresh);

    // A corrupt backup file is an error, not a crash.
    std::fs::write(&path, b"DURABLE-BACKUP\nnonsense").unwrap();
    store.set_available(false);
    let corrupt = Dict::<String, Raw>::open(store.backend(NS, "d").unwrap(), Raw, options).await;
    assert!(matches!(corrupt, Err(Error::Backup { .. })), "{corrupt:?}");
}

/// A backup file that is not one (a fifo, a device, a huge file, another dictionary's backup)
/// is refused quickly with a typed error, and nothing of it reaches reads.
#[tokio::test]
async fn hostile_backup_files_are_refused_before_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    let down = || {
        store.set_available(false);
    };
    let open_with = |path: std::path::PathBuf, dictionary: &'static str| {
        let backend = store.backend(NS, dictionary).unwrap();
        let options = manual()
            .with_backup_file(path)
            .with_max_backup_size(1 << 20)
            .with_open_timeout(Duration::from_secs(2));
        async move { Dict::<String, Raw>::open(backend, Raw, options).await }
    };
    let refused = |result: durable_core::Result<Dict<String, Raw>>, why: &str| match result {
        Err(Error::Backup { reason, .. }) => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected a backup error containing {why:?}, got {other:?}"),
    };

    // A fifo would block a reader forever; a device never ends.
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    down();
    let started = std::time::Instant::now();
    refused(open_with(fifo, "d").await, "not a regular file");
    refused(
        open_with("/dev/zero".into(), "d").await,
        "not a regular file",
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );

    // A file over the limit is refused before it is read (a sparse 3 GB file).
    let huge = dir.path().join("huge");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    refused(open_with(huge, "d").await, "more than the limit");

    // Another dictionary's backup is refused, even though it decodes.
    store.set_available(true);
    let path = dir.path().join("other.durable-backup");
    let other = open_with(path.clone(), "other").await.unwrap();
    other.insert("theirs", "x".into()).await.unwrap();
    while !path.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(other);
    down();
    refused(
        open_with(path, "d").await,
        "holds dictionary memory/test/other",
    );
}

#[tokio::test]
async fn handles_are_cheap_clones_sharing_one_snapshot() {
    let store = MemoryStore::new();
    let dict: Dict<u32> = open(&store, manual()).await;
    let clone = dict.clone();
    dict.insert("k", 1).await.unwrap();
    assert_eq!(clone.snapshot().get("k"), Some(&1));
    let tasks: Vec<_> = (0..8u32)
        .map(|i| {
            let d = dict.clone();
            tokio::spawn(async move { d.insert(&format!("k{i}"), i).await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let snapshot = Arc::new(clone.sync().await.unwrap());
    assert_eq!(snapshot.len(), 9);
    assert_eq!(snapshot.version(), dict.snapshot().version());
}

#[tokio::test]
async fn lost_hints_are_not_trusted_until_resubscribed() {
    use durable_core::{Hint, Hints};
    let (sender, mut hints) = Hints::channel();
    assert!(sender.send(Hint::Lost));
    assert_eq!(hints.next().await, Some(Hint::Lost));
    // The stream stays open while the connection is down.
    let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), hints.next()).await;
    assert!(
        waiting.is_err(),
        "next() returned {waiting:?} while hints were down"
    );
    assert!(sender.send(Hint::Changed));
    assert!(sender.send(Hint::Resubscribed));
    assert_eq!(
        hints.next().await,
        Some(Hint::Resubscribed),
        "coalesced, newest state wins"
    );
    drop(sender);
    assert_eq!(hints.next().await, None);
}

/// Expiry follows the store's clock, not the handle's: with the store an hour ahead or behind,
/// an entry still lives exactly its TTL as every handle sees it.
#[tokio::test(start_paused = true)]
async fn expiry_follows_the_store_clock_whatever_the_skew() {
    for skew_ms in [3_600_000, -3_600_000, 0] {
        let wall = std::time::Instant::now();
        let store = MemoryStore::new();
        store.set_clock_offset(skew_ms);
        let writer: Dict<u32> = open(&store, manual()).await;
        let apart = wall_ms_since(wall);
        let reader: Dict<u32> = open(&store, manual()).await;
        writer
            .insert_with_ttl("k", 1, Duration::from_secs(10))
            .await
            .unwrap();
        reader.sync().await.unwrap();
        tokio::time::sleep(Duration::from_millis(9_900)).await;
        assert_eq!(writer.snapshot().get("k"), Some(&1), "skew {skew_ms}");
        assert_eq!(reader.snapshot().get("k"), Some(&1), "skew {skew_ms}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let offset = writer.stats().store_clock_offset_ms.expect("measured");
        assert!(
            (-apart - 1..=1).contains(&(offset - skew_ms)),
            "offset {offset} for skew {skew_ms}, clocks made {apart} ms apart"
        );
        let calls = store.calls();
        assert_eq!(writer.snapshot().get("k"), None, "skew {skew_ms}");
        assert_eq!(reader.snapshot().get("k"), None, "skew {skew_ms}");
        assert_eq!(
            store.calls(),
            calls,
            "hiding an expired entry needs no round trip"
        );
    }
}

/// One snapshot judges every read at one instant; the entry is stored until a sweep, which
/// bumps the version once and reaches the other handles as a delete.
#[tokio::test(start_paused = true)]
async fn a_snapshot_judges_expiry_at_one_instant_and_sweeps_bump_once() {
    let store = MemoryStore::new();
    let a: Dict<u32> = open(&store, manual()).await;
    let b: Dict<u32> = open(&store, manual()).await;
    a.insert_with_ttl("k", 1, Duration::from_secs(1))
        .await
        .unwrap();
    a.insert("permanent", 2).await.unwrap();
    let before = a.snapshot();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        before.get("k"),
        Some(&1),
        "a snapshot taken earlier keeps its instant"
    );
    assert_eq!(before.len(), 2);
    assert_eq!(a.snapshot().len(), 1);
    let version = b.sync().await.unwrap().version();
    let mut changes = b.subscribe();
    assert_eq!(a.sweep().await.unwrap(), 1);
    assert_eq!(a.sweep().await.unwrap(), 0, "nothing left to sweep");
    let synced = b.sync().await.unwrap();
    assert_eq!(synced.version().counter(), version.counter() + 1);
    let change = changes.recv().await.unwrap();
    assert_eq!((&*change.key, change.kind), ("k", ChangeKind::Removed));
}

/// A background handle sweeps expired entries by itself.
#[tokio::test(start_paused = true)]
async fn background_mode_sweeps_expired_entries() {
    let store = MemoryStore::new();
    let writer: Dict<u32> = open(&store, manual()).await;
    let poller: Dict<u32> = open(
        &store,
        Options::new().with_mode(Mode::background(Duration::from_secs(1))),
    )
    .await;
    writer
        .insert_with_ttl("k", 1, Duration::from_secs(3))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let backend = store.backend(NS, "d").unwrap();
    let load = durable_core::Backend::durables(&backend).await.unwrap();
    assert!(load.entries.is_empty(), "still stored: {:?}", load.entries);
    assert_eq!(poller.stats().entries, 0);
}

/// A sharded counter starts from the backup file like any dictionary (real time: the backup
/// writer runs on a blocking thread).
#[tokio::test]
async fn sharded_counters_start_from_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    let path = dir.path().join("counters.backup");
    let options = || {
        Options::new()
            .with_backup_file(&path)
            .with_backup_interval(Duration::from_millis(10))
    };
    let counters: Dict<i64> = open(&store, options()).await;
    let views = durable_core::ShardedCounter::new(&counters, "views", 8).unwrap();
    for writer in 0..8 {
        views.increment_as(writer, 3).await.unwrap();
    }
    let mut value = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !path.exists() {
            continue;
        }
        store.set_available(false);
        let cold: Dict<i64> = open(&store, options()).await;
        assert!(cold.snapshot().is_from_backup());
        value = Some(
            durable_core::ShardedCounter::new(&cold, "views", 2)
                .unwrap()
                .value(),
        );
        store.set_available(true);
        if value == Some(24) {
            break;
        }
    }
    assert_eq!(value, Some(24), "the backup holds every shard");
}

/// Many own writes interleaved with another process's between syncs (each one pending, since
/// the token cannot follow it) leave the right values locally and after a sync.
#[tokio::test(start_paused = true)]
async fn interleaved_writes_between_syncs_stay_correct() {
    let store = MemoryStore::new();
    let a: Dict<i64> = open(&store, manual()).await;
    let b: Dict<i64> = open(&store, manual()).await;
    for i in 0..2000 {
        a.increment("hot", 1).await.unwrap();
        b.increment("hot", 1).await.unwrap();
        a.insert(&format!("k{}", i % 3), i).await.unwrap();
    }
    assert_eq!(a.snapshot().get("hot"), Some(&3999), "a's own last write");
    assert_eq!(a.sync().await.unwrap().get("hot"), Some(&4000));
    assert_eq!(b.sync().await.unwrap().get("hot"), Some(&4000));
    assert_eq!(b.snapshot().get("k1"), Some(&1999));
    assert_eq!(a.snapshot().get("k1"), Some(&1999));
}

/// A TTL too large for the store (shortened by it) does not skew the handle's clock: other
/// entries still expire on time.
#[tokio::test(start_paused = true)]
async fn a_huge_ttl_does_not_skew_expiry() {
    let store = MemoryStore::new();
    let dict: Dict<u32> = open(&store, manual()).await;
    dict.insert_with_ttl("soon", 2, Duration::from_secs(1))
        .await
        .unwrap();
    dict.insert_with_ttl("forever", 1, Duration::MAX)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(dict.snapshot().get("soon"), Some(&2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snapshot = dict.snapshot();
    assert_eq!(snapshot.get("soon"), None);
    assert_eq!(snapshot.get("forever"), Some(&1));
}

/// Concurrent increments of one key through one handle are combined into few store writes; each
/// caller still gets the value right after its own delta, and nothing is lost.
#[tokio::test(start_paused = true)]
async fn concurrent_increments_on_one_handle_are_combined() {
    let store = MemoryStore::new();
    let dict: Dict<i64> = open(&store, manual()).await;
    store.set_latency(Duration::from_millis(10));
    let before = store.calls();
    let callers: Vec<_> = (0..64)
        .map(|_| {
            let dict = dict.clone();
            tokio::spawn(async move { dict.increment("hot", 1).await.unwrap().0 })
        })
        .collect();
    let mut seen = Vec::new();
    for caller in callers {
        seen.push(caller.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=64).collect::<Vec<i64>>(),
        "each caller saw its own step"
    );
    let writes = store.calls() - before;
    assert!(writes <= 3, "64 increments took {writes} store writes");
    assert_eq!(dict.snapshot().get("hot"), Some(&64));
    let other: Dict<i64> = open(&store, manual()).await;
    assert_eq!(other.snapshot().get("hot"), Some(&64));
    // A failed combined write fails every increment in it and changes nothing.
    store.set_available(false);
    let failing: Vec<_> = (0..8)
        .map(|_| {
            let dict = dict.clone();
            tokio::spawn(async move { dict.increment("hot", 1).await })
        })
        .collect();
    for caller in failing {
        assert!(caller.await.unwrap().unwrap_err().is_unavailable());
    }
    store.set_available(true);
    assert_eq!(dict.increment("hot", 1).await.unwrap().0, 65);
}

/// The per-request read never fails: fresh while the store answers, the last good snapshot with
/// the error and the time checks started failing while it does not, fresh again after.
#[tokio::test]
async fn sync_or_stale_serves_the_last_good_snapshot_and_says_how_fresh() {
    let store = MemoryStore::new();
    let dict: Dict<u32> = open(&store, manual()).await;
    dict.insert("k", 1).await.unwrap();
    let synced = dict.sync_or_stale().await;
    assert!(synced.is_fresh());
    assert_eq!(synced.get("k"), Some(&1));

    store.set_available(false);
    let before = std::time::SystemTime::now();
    let synced = dict.sync_or_stale().await;
    assert!(!synced.is_fresh());
    assert_eq!(synced.get("k"), Some(&1), "the last good snapshot");
    match &synced.freshness {
        Freshness::Stale { since, error } => {
            assert!(*since >= before - Duration::from_secs(1));
            assert!(error.is_unavailable(), "{error:?}");
        }
        other => panic!("expected stale, got {other:?}"),
    }
    assert!(synced.is_within(Duration::from_secs(60)));
    assert!(!synced.is_within(Duration::ZERO));
    let again = dict.sync_or_stale().await;
    match (&synced.freshness, &again.freshness) {
        (Freshness::Stale { since: a, .. }, Freshness::Stale { since: b, .. }) => {
            assert_eq!(a, b, "stale since the first failure")
        }
        other => panic!("{other:?}"),
    }

    store.set_available(true);
    assert!(dict.sync_or_stale().await.is_fresh());
}

/// Limits in the options: a write past them fails and writes nothing; a store holding more
/// keeps the handle on its last good snapshot, saying why; an oversized stored value costs its
/// key only.
#[tokio::test]
async fn limits_refuse_writes_and_keep_the_last_good_snapshot() {
    let store = MemoryStore::new();
    let options = || {
        manual()
            .with_max_entries(3)
            .with_max_total_bytes(50)
            .with_max_value_size(40)
    };
    let limited: Dict<String, Raw> = open_raw(&store, options()).await;
    let writer: Dict<String, Raw> = open_raw(&store, manual()).await;
    for key in ["a", "b", "c"] {
        limited.insert(key, "x".into()).await.unwrap();
    }
    let calls = store.calls();
    match limited.insert("d", "x".into()).await {
        Err(Error::LimitExceeded { detail, .. }) => {
            assert!(detail.contains("4 entries"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    limited
        .insert("a", "replacing is fine".into())
        .await
        .unwrap();
    match limited.insert("b", "y".repeat(41)).await {
        Err(Error::ValueTooLarge {
            size: 41,
            limit: 40,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match limited.insert("b", "y".repeat(40)).await {
        Err(Error::LimitExceeded { detail, .. }) => assert!(detail.contains("bytes"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.calls(),
        calls + 1,
        "refused writes never reached the store"
    );

    // Another writer makes the stored dictionary too big: the limited handle keeps its snapshot.
    writer.sync().await.unwrap();
    writer.insert("d", "x".into()).await.unwrap();
    let error = limited.sync().await.unwrap_err();
    assert!(matches!(error, Error::LimitExceeded { .. }), "{error:?}");
    assert_eq!(limited.snapshot().len(), 3);
    assert!(!limited.health().fresh);
    assert!(limited.health().last_error.unwrap().contains("entries"));
    writer.remove("d").await.unwrap();
    limited.sync().await.unwrap();
    assert!(limited.health().fresh);

    // An oversized stored value costs its key only.
    writer.insert("c", "z".repeat(60)).await.unwrap();
    let snapshot = limited.sync().await.unwrap();
    assert_eq!(snapshot.get("c").map(String::as_str), Some("x"));
    assert_eq!(limited.health().bad_keys[0].key, "c");
}

async fn open_raw(store: &MemoryStore, options: Options) -> Dict<String, Raw> {
    Dict::open(store.backend(NS, "d").unwrap(), Raw, options)
        .await
        .unwrap()
}

/// `changes()` yields each change in order, and a listener that falls behind gets one
/// `Resynced` with the current snapshot instead of silently missing changes.
#[tokio::test]
async fn the_change_stream_reports_lag_with_a_snapshot() {
    use futures_util::StreamExt;
    let store = MemoryStore::new();
    let dict: Dict<u32> = open(&store, manual().with_listener_capacity(4)).await;
    let mut changes = Box::pin(dict.changes());
    dict.insert("a", 1).await.unwrap();
    match changes.next().await {
        Some(ChangeEvent::Changed(change)) => {
            assert_eq!(&*change.key, "a");
            assert_eq!(change.kind, ChangeKind::Inserted);
        }
        other => panic!("{other:?}"),
    }
    for i in 0..10 {
        dict.insert(&format!("k{i}"), i).await.unwrap();
    }
    match changes.next().await {
        Some(ChangeEvent::Resynced { missed, snapshot }) => {
            assert_eq!(missed, 6, "10 changes into a buffer of 4");
            assert_eq!(snapshot.len(), 11, "the whole current state");
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    let mut rest = Vec::new();
    for _ in 0..4 {
        match changes.next().await {
            Some(ChangeEvent::Changed(change)) => rest.push(change.key.to_string()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        rest,
        ["k6", "k7", "k8", "k9"],
        "then the changes kept in the buffer"
    );
    drop(dict);
    assert!(
        changes.next().await.is_none(),
        "the stream ends with the handle"
    );
}

/// An own write kept on top of the snapshot (another process wrote just before it) and then
/// lost by a restore does not stay visible: not when the store's token is the snapshot's, and
/// not when a delta from the snapshot's token does not mention it.
#[tokio::test]
async fn an_own_write_lost_by_a_restore_does_not_stay_visible() {
    for others_write_after in [false, true] {
        let store = MemoryStore::new();
        let w: Dict<String, Raw> = open_raw(&store, manual()).await;
        let other: Dict<String, Raw> = open_raw(&store, manual()).await;
        w.insert("x", "0".into()).await.unwrap();
        let copy = store.copy(NS, "d").unwrap();
        other.insert("y", "1".into()).await.unwrap();
        w.insert("a", "lost".into()).await.unwrap();
        assert_eq!(w.snapshot().own_writes().len(), 1, "a is applied on top");
        store.put_back(NS, "d", &copy).unwrap();
        w.insert("b", "new".into()).await.unwrap();
        if others_write_after {
            other.sync().await.unwrap();
            other.insert("c", "2".into()).await.unwrap();
        }
        let synced = w.sync().await.unwrap().version();
        let fresh: Dict<String, Raw> = open_raw(&store, manual()).await;
        assert_eq!(synced, fresh.snapshot().version());
        assert_eq!(
            w.snapshot().get("a"),
            None,
            "others wrote after: {others_write_after}"
        );
        assert_eq!(w.snapshot().len(), fresh.snapshot().len());
    }
}

#[tokio::test]
async fn write_many_stores_and_deletes_in_one_step() {
    let store = MemoryStore::new();
    let dict: Dict<i64> = open(&store, manual()).await;
    let other: Dict<i64> = open(&store, manual()).await;
    dict.insert_many([("keep", 1), ("drop", 2)]).await.unwrap();
    let before = dict.snapshot().version();
    let version = dict
        .write_many([("keep", Some(10)), ("new", Some(3)), ("drop", None)])
        .await
        .unwrap()
        .expect("a change bumps the version");
    let snapshot = dict.snapshot();
    assert_eq!(snapshot.version(), version);
    let entries: HashMap<&str, i64> = snapshot.iter().map(|(k, v)| (k, *v)).collect();
    assert_eq!(entries, HashMap::from([("keep", 10), ("new", 3)]));
    // One bump: another handle sees the whole batch at once, one step after `before`.
    let seen = other.sync().await.unwrap();
    assert_eq!(seen.version(), version);
    assert!(version.follows(&before), "{before} -> {version}");
    assert_eq!(seen.get("drop"), None);
    // Deleting only absent keys changes nothing and bumps nothing.
    assert_eq!(
        dict.write_many([("absent", None::<i64>)]).await.unwrap(),
        None
    );
}
