//! The version record as stored in ZooKeeper, against the server in `DURABLE_TEST_ZOOKEEPER`:
//! stamps in the record and the change log, a write prepared on a lost history, damage beyond
//! the record's fields (head, containers, stray change-log nodes, entries above the counter), a
//! dictionary from before stamps, and syncs of a dictionary eight writers keep busy.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use durable_core::conformance::{Harness, server_from_env};
use durable_core::{Backend, Changes, Dict, Error, Mode, Name, Options, Raw, Version};
use durable_zookeeper::{ZooKeeperBackend, ZooKeeperStore, zookeeper_client as zk};

use common::{ROOT, ZkHarness, config};

struct Env {
    harness: ZkHarness,
    connect: String,
    namespace: Name,
}

impl Env {
    fn new() -> Option<Env> {
        let connect = server_from_env("DURABLE_TEST_ZOOKEEPER")?;
        let namespace = Name::new(format!("z{:016x}", rand::random::<u64>())).expect("name");
        Some(Env {
            harness: ZkHarness::new(connect.clone()),
            connect,
            namespace,
        })
    }

    async fn backend(&self, dictionary: &str) -> ZooKeeperBackend {
        self.backend_with(dictionary, |c| c).await
    }

    async fn backend_with(
        &self,
        dictionary: &str,
        f: impl FnOnce(durable_zookeeper::ZooKeeperOptions) -> durable_zookeeper::ZooKeeperOptions,
    ) -> ZooKeeperBackend {
        ZooKeeperStore::connect(f(config(&self.connect)))
            .await
            .expect("connect")
            .backend(self.namespace.as_str(), dictionary)
            .expect("backend")
    }

    async fn client(&self) -> zk::Client {
        zk::Client::connector()
            .connect(&self.connect)
            .await
            .expect("connect")
    }

    fn path(&self, dictionary: &str) -> String {
        format!("{ROOT}/{}/{dictionary}", self.namespace)
    }

    fn name(dictionary: &str) -> Name {
        Name::new(dictionary).expect("name")
    }

    async fn cleanup(self) {
        self.harness
            .cleanup(&self.namespace)
            .await
            .expect("cleanup");
    }
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn assert_damaged(e: &Error, needles: &[&str]) {
    let Error::Damaged { reason, .. } = e else {
        panic!("expected Error::Damaged, got {e:?}");
    };
    for needle in needles {
        assert!(
            reason.contains(needle),
            "{reason:?} does not say {needle:?}"
        );
    }
}

/// The record is one line of text with the token's four parts; each write's change-log node
/// carries its stamp; a delta is served to a token at most `history` writes behind, and after
/// `forget_history` to the current token only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps_live_in_the_record_and_the_change_log() {
    let Some(env) = Env::new() else { return };
    let b = env.backend_with("stamps", |c| c.with_history(3)).await;
    let mut tokens = vec![b.last_updated().await.expect("last_updated")];
    for i in 0..6 {
        tokens.push(
            b.persist(&format!("k{i}"), bytes("v"))
                .await
                .expect("persist"),
        );
    }
    let client = env.client().await;
    let (data, _) = client.get_data(&env.path("stamps")).await.expect("record");
    let last = *tokens.last().expect("tokens");
    assert_eq!(
        String::from_utf8(data).expect("text"),
        format!(
            "durable-zookeeper/1 epoch={:016x} counter={} stamp={:016x} parent={:016x}",
            last.epoch(),
            last.counter(),
            last.stamp(),
            last.parent()
        )
    );
    for pair in tokens.windows(2) {
        assert!(pair[1].follows(&pair[0]), "{} follows {}", pair[1], pair[0]);
    }
    // The change-log nodes of the last `history` writes and of the state before them.
    let mut logged = client
        .list_children(&format!("{}/log", env.path("stamps")))
        .await
        .expect("log");
    logged.sort();
    let counters: Vec<u64> = logged.iter().map(|n| n.parse().expect("counter")).collect();
    assert_eq!(counters, vec![3, 4, 5, 6]);
    for t in &tokens[3..] {
        let (data, _) = client
            .get_data(&format!("{}/log/{:020}", env.path("stamps"), t.counter()))
            .await
            .expect("log node");
        let text = String::from_utf8(data).expect("text");
        assert!(
            text.starts_with(&format!("stamp={:016x}\n", t.stamp())),
            "{text:?}"
        );
    }
    // The head: one child of `stamp`, named after the current stamp.
    let heads = client
        .list_children(&format!("{}/stamp", env.path("stamps")))
        .await
        .expect("heads");
    assert_eq!(heads, vec![format!("{:016x}", last.stamp())]);
    for (i, t) in tokens.iter().enumerate() {
        let served = !matches!(b.changes_since(*t).await.expect("changes"), Changes::TooOld);
        assert_eq!(served, i >= 3, "token {t} ({i} of 6): served {served}");
    }
    // Without a change log, only the current token is served (an empty delta).
    b.forget_history().await.expect("forget history");
    match b.changes_since(last).await.expect("changes") {
        Changes::Delta(delta) => {
            assert_eq!(delta.version, last);
            assert!(delta.upserts.is_empty() && delta.removals.is_empty());
        }
        Changes::TooOld => panic!("the current token was not served"),
    }
    assert_eq!(
        b.changes_since(tokens[5]).await.expect("changes"),
        Changes::TooOld
    );
    env.cleanup().await;
}

/// A backend that cached the state of a history later put back keeps its expected data
/// version; once other writers bring the re-created znode's data version to that number, the
/// blind write's version check would pass, but the head of the stale stamp is missing: the
/// write reads again and lands on the store's real state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_prepared_on_a_lost_history_does_not_land() {
    let Some(env) = Env::new() else { return };
    let name = Env::name("lost");
    let stale = env.backend("lost").await;
    stale.persist("a", bytes("1")).await.expect("persist");
    let copy = env
        .harness
        .copy_stored(&env.namespace, &name)
        .await
        .expect("copy");
    let mut lost = Vec::new();
    for i in 0..3 {
        lost.push(
            stale
                .persist(&format!("lost{i}"), bytes("x"))
                .await
                .expect("persist"),
        );
    }
    env.harness
        .put_back(&env.namespace, &name, copy)
        .await
        .expect("put back");
    // The put-back znode starts again at data version 0 (the copy was taken at 1); four writes
    // bring it to 4, the data version `stale` expects.
    let other = env.backend("lost").await;
    let mut last = other.last_updated().await.expect("last_updated");
    let client = env.client().await;
    let expected = client
        .get_data(&env.path("lost"))
        .await
        .expect("record")
        .1
        .version;
    assert_eq!(expected, 0, "the put-back znode is new");
    for i in 0..4 {
        last = other
            .persist(&format!("new{i}"), bytes("y"))
            .await
            .expect("persist");
    }
    let v = stale.persist("mine", bytes("z")).await.expect("persist");
    assert!(
        v.follows(&last),
        "the write landed on the store's state {last}, not on the lost one: {v}"
    );
    assert!(!lost.contains(&v));
    let load = other.durables().await.expect("load");
    assert_eq!(load.version, v);
    let mut keys: Vec<String> = load.entries.into_iter().map(|e| e.key).collect();
    keys.sort();
    assert_eq!(keys, ["a", "mine", "new0", "new1", "new2", "new3"]);
    env.cleanup().await;
}

/// Damage outside the record's fields: reads name it (or cannot see it), the next write repairs
/// the dictionary as a wipe would (a new epoch, the counter above every stored revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_around_the_record_is_named_by_reads_and_repaired_by_writes() {
    let Some(env) = Env::new() else { return };
    let client = env.client().await;
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());

    async fn filled(env: &Env, dictionary: &str) -> (ZooKeeperBackend, Version) {
        let b = env.backend(dictionary).await;
        b.persist("a", bytes("1")).await.expect("persist");
        let v = b.persist("b", bytes("2")).await.expect("persist");
        (b, v)
    }
    async fn assert_repaired(b: &ZooKeeperBackend, before: Version, above: u64, what: &str) {
        let v = b.persist("c", bytes("3")).await.expect(what);
        assert_ne!(v.epoch(), before.epoch(), "{what}: a new epoch");
        assert!(
            v.counter() > above,
            "{what}: counter {} above {above}",
            v.counter()
        );
        let load = b.durables().await.expect(what);
        assert_eq!(load.version, v, "{what}");
        assert_eq!(load.entries.len(), 3, "{what}: the entries are kept");
        assert!(
            load.entries.iter().all(|e| e.revision.0 <= v.counter()),
            "{what}: revisions at or below the counter"
        );
    }

    // The head of the current stamp deleted by hand: reads cannot see it, a write repairs.
    let (b, v) = filled(&env, "head").await;
    let head = format!("{}/stamp/{:016x}", env.path("head"), v.stamp());
    client.delete(&head, None).await.expect("delete head");
    assert_eq!(b.last_updated().await.expect("last_updated"), v);
    assert_repaired(&b, v, v.counter(), "head deleted").await;

    // A change-log node of the next counter left over (the record is behind the history).
    let (b, v) = filled(&env, "stray").await;
    let stray = format!("{}/log/{:020}", env.path("stray"), v.counter() + 1);
    client
        .create(&stray, b"stamp=0000000000000001\nka", &options)
        .await
        .expect("stray");
    assert_repaired(&b, v, v.counter() + 1, "stray log node").await;

    // An entry stored with a revision above the record's counter: loads refuse, a conditional
    // write (which reads the entry) repairs.
    let (b, v) = filled(&env, "above").await;
    let mut data = (v.counter() + 10).to_be_bytes().to_vec();
    data.extend_from_slice(b"9");
    client
        .set_data(&format!("{}/entries/ka", env.path("above")), &data, None)
        .await
        .expect("set entry");
    let e = b.durables().await.expect_err("load");
    assert_damaged(&e, &["above", "\"a\"", "revision"]);
    let (value, w) = b.increment("a", 1).await.expect("increment");
    assert_eq!(value, 10);
    assert_ne!(w.epoch(), v.epoch(), "a new epoch");
    assert!(w.counter() > v.counter() + 10);
    b.durables().await.expect("load after the repair");

    // `entries` deleted by hand (every entry gone without a bump): loads refuse, a write
    // repairs.
    let (b, v) = filled(&env, "entries").await;
    common::delete_recursive(&client, &format!("{}/entries", env.path("entries")))
        .await
        .expect("delete entries");
    let e = b.durables().await.expect_err("load");
    assert_damaged(&e, &["entries", "missing"]);
    let w = b.persist("c", bytes("3")).await.expect("persist");
    assert_ne!(w.epoch(), v.epoch(), "a new epoch");
    let load = b.durables().await.expect("load");
    assert_eq!(load.entries.len(), 1);

    // A field of the record damaged: reads name the dictionary and the field; a no-op write
    // (deleting a missing key) repairs but changes no entry.
    let (b, v) = filled(&env, "field").await;
    let (data, _) = client.get_data(&env.path("field")).await.expect("record");
    let damaged = common::edit_record(&data, "stamp", Some("xyz"));
    client
        .set_data(&env.path("field"), &damaged, None)
        .await
        .expect("damage");
    let e = b.last_updated().await.expect_err("last_updated");
    assert_damaged(&e, &[env.namespace.as_str(), "/field", "stamp", "\"xyz\""]);
    let e = b.changes_since(v).await.expect_err("changes");
    assert_damaged(&e, &["stamp"]);
    assert_eq!(b.depersist("missing").await.expect("depersist"), None);
    let repaired = b.last_updated().await.expect("last_updated");
    assert_ne!(repaired.epoch(), v.epoch());
    assert_eq!(
        repaired.counter(),
        v.counter(),
        "the highest stored revision"
    );
    assert_eq!(b.durables().await.expect("load").entries.len(), 2);
    env.cleanup().await;
}

/// A dictionary from before stamped tokens (no data on its znode, `entries` and `log` only,
/// the counter in the znode's data version) is taken over by the first read: a new epoch with
/// the counter at its highest revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dictionary_from_before_stamps_is_taken_over() {
    let Some(env) = Env::new() else { return };
    let client = env.client().await;
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let base = env.path("old");
    client
        .mkdir(&format!("{ROOT}/{}", env.namespace), &options)
        .await
        .expect("mkdir");
    for path in [
        base.clone(),
        format!("{base}/entries"),
        format!("{base}/log"),
    ] {
        client.create(&path, b"", &options).await.expect("create");
    }
    for (i, key) in ["ka", "kb"].into_iter().enumerate() {
        let revision = i as u64 + 1;
        let mut data = revision.to_be_bytes().to_vec();
        data.extend_from_slice(b"old");
        client
            .create(&format!("{base}/entries/{key}"), &data, &options)
            .await
            .expect("entry");
        client
            .create(
                &format!("{base}/log/{revision:020}"),
                key.as_bytes(),
                &options,
            )
            .await
            .expect("log");
        client.set_data(&base, b"", None).await.expect("bump");
    }
    let b = env.backend("old").await;
    let v = b.last_updated().await.expect("last_updated");
    assert_eq!(v.counter(), 2, "the counter starts at the highest revision");
    let load = b.durables().await.expect("load");
    assert_eq!(load.version, v);
    assert_eq!(load.entries.len(), 2);
    let w = b.persist("c", bytes("new")).await.expect("persist");
    assert!(w.follows(&v));
    env.cleanup().await;
}

/// Eight writers rewrite four keys each as fast as they can while a handle syncs again and
/// again: every sync succeeds and shows every write acknowledged before it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_of_a_busy_dictionary_never_fail() {
    let Some(env) = Env::new() else { return };
    busy(&env, "busy", false).await;
    env.cleanup().await;
}

/// The same with a new key in every write: the handle's open (a full load) and its syncs
/// never fail either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_of_a_dictionary_busy_with_new_keys_never_fail() {
    let Some(env) = Env::new() else { return };
    busy(&env, "new-keys", true).await;
    env.cleanup().await;
}

/// Eight writers (each its own session) write for a while, with a new key in every write or
/// four keys each; a handle, opened while they write, syncs in a loop. Every sync must
/// succeed (a delta that cannot follow the writers falls back to a full load) and show each
/// writer's last write acknowledged before it began.
async fn busy(env: &Env, dictionary: &str, new_keys: bool) {
    const WRITERS: usize = 8;
    const KEYS: u64 = 4;
    let run = Duration::from_secs(8);
    let key = move |writer: usize, seq: u64| {
        if new_keys {
            format!("w{writer}-{seq}")
        } else {
            format!("w{writer}-{}", seq % KEYS)
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let b = env.backend(dictionary).await;
        let (stop, acked) = (stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let (mut seq, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                seq += 1;
                match b.persist(&key(w, seq), Bytes::from(seq.to_string())).await {
                    Ok(_) => acked[w].store(seq, Ordering::SeqCst),
                    Err(e) => {
                        eprintln!("writer {w}: {e}");
                        failed += 1;
                    }
                }
            }
            (seq, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d: Dict<Vec<u8>, Raw> = Dict::open(
        env.backend(dictionary).await,
        Raw,
        Options::new()
            .with_mode(Mode::Manual)
            .with_trust_hints_for(None)
            .with_timeout(Duration::from_secs(20))
            .with_open_timeout(Duration::from_secs(30)),
    )
    .await
    .expect("open while eight writers write");
    let started = Instant::now();
    let (mut syncs, mut failed, mut stale) = (0u64, 0u64, 0u64);
    while started.elapsed() < run {
        let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        match d.sync().await {
            Ok(snapshot) => {
                syncs += 1;
                for (w, seq) in before.into_iter().enumerate().filter(|(_, s)| *s > 0) {
                    let seen = snapshot
                        .get(&key(w, seq))
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    if seen < seq {
                        stale += 1;
                    }
                }
            }
            Err(e) => {
                eprintln!("sync failed: {e}");
                failed += 1;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut writes = 0;
    for writer in writers {
        let (seq, failed_writes) = writer.await.expect("writer");
        writes += seq;
        assert_eq!(failed_writes, 0, "writes failed");
    }
    let stats = d.stats();
    eprintln!(
        "{dictionary}: {syncs} syncs ({} deltas, {} reloads), {failed} failed, {stale} stale, \
         against {writes} writes by {WRITERS} writers",
        stats.deltas, stats.reloads
    );
    assert_eq!(failed, 0, "failed syncs");
    assert_eq!(
        stale, 0,
        "syncs missing a write acknowledged before they began"
    );
    assert!(syncs > 50 && stats.deltas > 0, "the handle synced: {syncs}");
}
