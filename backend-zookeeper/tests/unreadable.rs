//! Rows the backend cannot read, written straight into the ZooKeeper in `DURABLE_TEST_ZOOKEEPER`
//! as another program could: a stray znode among the entries, an entry cut shorter than its
//! header or with a revision out of range, a key name whose escapes are not UTF-8, a change-log
//! node that cannot be parsed. Each costs its key only (or, for the log node, one full reload),
//! is named with the dictionary, and never fails a load, a delta or a sync.

mod common;

use bytes::Bytes;
use durable_core::conformance::{Garbage, Harness, server_from_env};
use durable_core::{
    Backend, Changes, DecodeErrors, Dict, Error, Mode, Name, Options, Raw, Unreadable, Version,
};
use durable_zookeeper::{ZooKeeperBackend, ZooKeeperStore, zookeeper_client as zk};

use common::{ROOT, ZkHarness, config, encoded};

struct Env {
    harness: ZkHarness,
    connect: String,
    namespace: Name,
}

impl Env {
    fn new() -> Option<Env> {
        let connect = server_from_env("DURABLE_TEST_ZOOKEEPER")?;
        let namespace = Name::new(format!("u{:016x}", rand::random::<u64>())).expect("name");
        Some(Env {
            harness: ZkHarness::new(connect.clone()),
            connect,
            namespace,
        })
    }

    async fn backend(&self, dictionary: &str) -> ZooKeeperBackend {
        ZooKeeperStore::connect(config(&self.connect))
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

    async fn garbage(&self, dictionary: &str, garbage: Garbage, key: &str) {
        let written = self
            .harness
            .write_garbage(
                &self.namespace,
                &Name::new(dictionary).expect("name"),
                garbage,
                key,
            )
            .await
            .expect("write garbage");
        assert!(written, "{garbage:?}");
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

/// The unreadable rows by key, each checked to name the dictionary and its znode.
fn by_key(env: &Env, dictionary: &str, rows: &[Unreadable]) -> Vec<String> {
    let mut keys: Vec<String> = rows
        .iter()
        .map(|row| {
            let dict = format!("{}/{dictionary}", env.namespace);
            assert!(
                row.reason.contains(&dict) && row.reason.contains("znode"),
                "{row:?} does not name {dict} and its znode"
            );
            row.key.clone()
        })
        .collect();
    keys.sort();
    keys
}

/// Each kind of bad row is reported, with its key and a reason naming the dictionary, in the
/// delta that meets it and in every full load, while the other keys are served; writing the
/// key replaces the bad row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_reported_in_loads_and_deltas() {
    let Some(env) = Env::new() else { return };
    let b = env.backend("rows").await;
    b.persist("good", bytes("1")).await.expect("persist");
    b.persist("victim", bytes("2")).await.expect("persist");
    let before = b.persist("ranged", bytes("3")).await.expect("persist");

    env.garbage("rows", Garbage::Malformed, "victim").await;
    env.garbage("rows", Garbage::Stray, "victim").await;
    env.garbage("rows", Garbage::NonUtf8Key, "victim").await;
    // A revision out of range (2^60) in the header of another key, with a version bump.
    let ranged = format!("{}/entries/{}", env.path("rows"), encoded("ranged"));
    let client = env.client().await;
    common::write_raw(
        &client,
        &env.path("rows"),
        &[&encoded("ranged")],
        |multi, _| {
            let mut data = (1_u64 << 60).to_be_bytes().to_vec();
            data.extend_from_slice(b"3");
            multi.add_set_data(&ranged, &data, None)
        },
    )
    .await
    .expect("write");

    let expected = ["notakey", "ranged", "victim", "victim\u{FFFD}"];
    let Changes::Delta(delta) = b.changes_since(before).await.expect("changes") else {
        panic!("the log serves this delta");
    };
    assert_eq!(by_key(&env, "rows", &delta.unreadable), expected);
    assert!(delta.upserts.is_empty() && delta.removals.is_empty());
    let reasons: Vec<&str> = delta.unreadable.iter().map(|r| &r.reason[..]).collect();
    for needle in [
        "not an encoded key",
        "3 bytes, shorter than its 8-byte header",
        "out of range",
        "not UTF-8",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no reason says {needle:?}: {reasons:?}"
        );
    }

    let load = b.durables().await.expect("load");
    assert_eq!(by_key(&env, "rows", &load.unreadable), expected);
    let keys: Vec<&str> = load.entries.iter().map(|e| &e.key[..]).collect();
    assert_eq!(keys, ["good"]);

    // Writing the key replaces its bad row; a delta carries the good entry.
    let at = load.version;
    b.persist("victim", bytes("4"))
        .await
        .expect("persist over the bad row");
    let Changes::Delta(delta) = b.changes_since(at).await.expect("changes") else {
        panic!("the log serves this delta");
    };
    assert!(delta.unreadable.is_empty(), "{delta:?}");
    assert_eq!(delta.upserts.len(), 1);
    assert_eq!(delta.upserts[0].value, bytes("4"));

    // A stray znode deleted with a logged write removes no key.
    let at = b.last_updated().await.expect("version");
    let stray = format!("{}/entries/notakey", env.path("rows"));
    common::write_raw(&client, &env.path("rows"), &["notakey"], |multi, _| {
        multi.add_delete(&stray, None)
    })
    .await
    .expect("delete the stray znode");
    let Changes::Delta(delta) = b.changes_since(at).await.expect("changes") else {
        panic!("the log serves this delta");
    };
    assert!(
        delta.upserts.is_empty() && delta.removals.is_empty() && delta.unreadable.is_empty(),
        "{delta:?}"
    );
    env.cleanup().await;
}

/// A handle opened over bad rows serves the rest and names them in its health; by default a
/// sync meeting new ones succeeds; with `DecodeErrors::Fail` it fails naming the key and the
/// dictionary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_isolate_bad_rows_unless_told_to_fail() {
    let Some(env) = Env::new() else { return };
    let b = env.backend("handles").await;
    b.persist("good", bytes("1")).await.expect("persist");
    b.persist("victim", bytes("2")).await.expect("persist");
    let isolating: Dict<Vec<u8>, Raw> =
        Dict::open(env.backend("handles").await, Raw, Options::new())
            .await
            .expect("open");
    let failing: Dict<Vec<u8>, Raw> = Dict::open(
        env.backend("handles").await,
        Raw,
        Options::new().with_decode_errors(DecodeErrors::Fail),
    )
    .await
    .expect("open");

    env.garbage("handles", Garbage::Malformed, "victim").await;
    env.garbage("handles", Garbage::Stray, "victim").await;

    let snapshot = isolating.sync().await.expect("sync");
    assert_eq!(snapshot.get("good").map(|v| &v[..]), Some(&b"1"[..]));
    assert_eq!(
        snapshot.get("victim").map(|v| &v[..]),
        Some(&b"2"[..]),
        "the key keeps its last good value"
    );
    drop(snapshot);
    let bad: Vec<String> = isolating
        .health()
        .bad_keys
        .into_iter()
        .map(|b| b.key)
        .collect();
    assert!(bad.contains(&"victim".to_owned()), "{bad:?}");

    let error = failing.sync().await.expect_err("DecodeErrors::Fail");
    let message = error.to_string();
    assert!(
        message.contains(&format!("{}/handles", env.namespace)),
        "{message}"
    );
    assert!(matches!(error, Error::Unreadable { .. }), "{error:?}");

    let fresh: Dict<Vec<u8>, Raw> = Dict::open(env.backend("handles").await, Raw, Options::new())
        .await
        .expect("a handle opens over bad rows");
    assert_eq!(
        fresh.snapshot().get("good").map(|v| &v[..]),
        Some(&b"1"[..])
    );
    assert_eq!(
        fresh.snapshot().get("victim"),
        None,
        "it never had a good value"
    );
    let mut bad: Vec<String> = fresh.health().bad_keys.into_iter().map(|b| b.key).collect();
    bad.sort();
    assert_eq!(bad, ["notakey", "victim"]);
    env.cleanup().await;
}

/// A conditional write has to read its entry: over a bad row it fails naming the key and the
/// dictionary, and writes nothing; a plain write or a delete replaces the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_over_a_bad_row_name_it() {
    let Some(env) = Env::new() else { return };
    let b = env.backend("conditional").await;
    b.persist("victim", bytes("2")).await.expect("persist");
    env.garbage("conditional", Garbage::Malformed, "victim")
        .await;
    let before = b.last_updated().await.expect("version");
    let dictionary = format!("{}/conditional", env.namespace);
    let errors = [
        b.increment("victim", 1)
            .await
            .map(drop)
            .expect_err("increment"),
        b.compare_and_swap("victim", None, Some(bytes("x")))
            .await
            .map(drop)
            .expect_err("compare_and_swap"),
        b.pop("victim").await.map(drop).expect_err("pop"),
        b.persist_if_absent("victim", bytes("x"))
            .await
            .map(drop)
            .expect_err("insert_if_absent"),
    ];
    for error in errors {
        let message = error.to_string();
        assert!(
            message.contains("\"victim\"") && message.contains(&dictionary),
            "{message}"
        );
        assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    }
    assert_eq!(b.last_updated().await.expect("version"), before);
    b.persist("victim", bytes("3")).await.expect("persist");
    let (value, _) = b.increment("victim", 1).await.expect("increment");
    assert_eq!(value, 4);
    env.garbage("conditional", Garbage::Malformed, "victim")
        .await;
    assert!(b.depersist("victim").await.expect("depersist").is_some());
    assert!(b.durables().await.expect("load").unreadable.is_empty());
    env.cleanup().await;
}

/// A change-log node that cannot be parsed (not text, no stamp, or naming what cannot be a
/// znode) does not say what its write changed: a delta across it is `TooOld`, the handle
/// reloads in full (which reads no log) and its sync succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_log_node_that_cannot_be_parsed_costs_a_reload() {
    let Some(env) = Env::new() else { return };
    let b = env.backend("log").await;
    let client = env.client().await;
    for (i, garbage) in [&b"\xff\xfe"[..], b"stamp=12\nka", b"nostamp", b""]
        .into_iter()
        .enumerate()
    {
        let d: Dict<Vec<u8>, Raw> = Dict::open(
            env.backend("log").await,
            Raw,
            Options::new().with_mode(Mode::Manual),
        )
        .await
        .expect("open");
        let at: Version = d.snapshot().version();
        let key = format!("k{i}");
        let written = b.persist(&key, bytes("v")).await.expect("persist");
        let log = format!("{}/log/{:020}", env.path("log"), written.counter());
        client.set_data(&log, garbage, None).await.expect("damage");
        assert_eq!(
            b.changes_since(at).await.expect("changes"),
            Changes::TooOld,
            "{garbage:?}"
        );
        let snapshot = d.sync().await.expect("sync");
        assert_eq!(snapshot.get(&key[..]).map(|v| &v[..]), Some(&b"v"[..]));
    }
    // A log naming `..` (with its write's stamp) cannot be read as names of znodes.
    let at = b.last_updated().await.expect("version");
    let written = b.persist("x", bytes("v")).await.expect("persist");
    let log = format!("{}/log/{:020}", env.path("log"), written.counter());
    let text = format!("stamp={:016x}\n..", written.stamp());
    client
        .set_data(&log, text.as_bytes(), None)
        .await
        .expect("damage");
    assert_eq!(b.changes_since(at).await.expect("changes"), Changes::TooOld);
    env.cleanup().await;
}

/// An entry whose revision is out of range holds no revision: a damaged record is repaired
/// past the entries that can be read, instead of being refused for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_out_of_range_does_not_block_a_repair() {
    let Some(env) = Env::new() else { return };
    let b = env.backend("repair").await;
    b.persist("a", bytes("1")).await.expect("persist");
    let v = b.persist("b", bytes("2")).await.expect("persist");
    let client = env.client().await;
    let mut data = (1_u64 << 60).to_be_bytes().to_vec();
    data.extend_from_slice(b"2");
    client
        .set_data(&format!("{}/entries/kb", env.path("repair")), &data, None)
        .await
        .expect("set entry");
    let (record, _) = client.get_data(&env.path("repair")).await.expect("record");
    client
        .set_data(
            &env.path("repair"),
            &common::edit_record(&record, "counter", Some("garbage")),
            None,
        )
        .await
        .expect("damage the record");
    let w = b.persist("c", bytes("3")).await.expect("a write repairs");
    assert_ne!(w.epoch(), v.epoch());
    let load = b.durables().await.expect("load");
    assert_eq!(load.entries.len(), 2);
    assert_eq!(load.unreadable.len(), 1);
    assert_eq!(load.unreadable[0].key, "b");
    env.cleanup().await;
}

/// `location` names the dictionary (chroot, root, namespace, dictionary), never the servers or
/// the credentials: equal for two stores over the same dictionary, different otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_names_the_dictionary_only() {
    let Some(env) = Env::new() else { return };
    let ns = env.namespace.as_str();
    let one = env.backend("flags").await;
    let other = ZooKeeperStore::new(
        config(&format!("app:s3/cr?t#@{}", env.connect)).with_digest_auth("app", "s3cret"),
    )
    .expect("config")
    .backend(ns, "flags")
    .expect("backend");
    assert_eq!(one.location(), format!("zookeeper{ROOT}/{ns}/flags"));
    assert_eq!(one.location(), other.location());
    let store = ZooKeeperStore::new(config(&env.connect)).expect("config");
    let chrooted = ZooKeeperStore::new(config(&format!("{}/apps", env.connect))).expect("config");
    let rooted = ZooKeeperStore::new(config(&env.connect).with_root("/elsewhere")).expect("config");
    let locations = [
        store.backend(ns, "other").expect("backend").location(),
        store
            .backend("otherns", "flags")
            .expect("backend")
            .location(),
        chrooted.backend(ns, "flags").expect("backend").location(),
        rooted.backend(ns, "flags").expect("backend").location(),
    ];
    assert_eq!(locations[2], format!("zookeeper/apps{ROOT}/{ns}/flags"));
    for location in &locations {
        assert_ne!(*location, one.location());
        assert!(!location.contains("127.0.0.1") && !location.contains("s3"));
    }
    env.cleanup().await;
}
