//! Rows written by another program that this crate cannot read (a hash field that is not UTF-8,
//! a change-log score that is no revision, an expiry score out of range) are reported in
//! `Load::unreadable` and `Delta::unreadable`, by key and with a reason naming the dictionary,
//! in one-script loads, chunked loads and deltas; they never fail the whole read. Against
//! `DURABLE_TEST_REDIS_URL`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use durable_core::conformance::server_from_env;
use durable_core::{
    Backend, Changes, DecodeErrors, Dict, Error, IfAbsent, Json, Load, Options, Swap,
};
use durable_redis::redis::{self, AsyncCommands};
use durable_redis::{RedisBackend, RedisStore};

/// A key longer than 64 bytes: its hash field and sorted set members make Redis leave the
/// compact encodings, so `HSCAN` and `ZSCAN` return pages and a load takes the chunked path.
fn long_key() -> String {
    "long-".repeat(20)
}

/// The unreadable rows of a load or delta: lossy key to reason.
fn reasons(rows: &[durable_core::Unreadable]) -> BTreeMap<String, String> {
    rows.iter()
        .map(|r| (r.key.clone(), r.reason.clone()))
        .collect()
}

/// How many filler entries [`fill`] writes: enough that a load in chunks of 7 takes several
/// `HSCAN` pages whatever the hash table's size.
const FILLER: usize = 60;

/// The loaded keys, sorted, without the filler entries (whose number is checked).
fn keys(load: &Load) -> Vec<String> {
    let filler = load
        .entries
        .iter()
        .filter(|e| e.key.starts_with("filler-"))
        .count();
    assert!(filler == 0 || filler == FILLER, "{filler} filler entries");
    let mut keys: Vec<String> = load
        .entries
        .iter()
        .map(|e| e.key.clone())
        .filter(|k| !k.starts_with("filler-"))
        .collect();
    keys.sort();
    keys
}

struct Fixture {
    url: String,
    namespace: String,
    raw: redis::aio::MultiplexedConnection,
}

impl Fixture {
    async fn new(url: String) -> Fixture {
        let client = redis::Client::open(url.as_str()).unwrap();
        Fixture {
            raw: client.get_multiplexed_async_connection().await.unwrap(),
            namespace: format!("u{:016x}", rand::random::<u64>()),
            url,
        }
    }

    async fn backend(&self, dictionary: &str, load_chunk: usize) -> RedisBackend {
        RedisStore::connect_with(&self.url, common::options().with_load_chunk(load_chunk))
            .await
            .unwrap()
            .backend(&self.namespace, dictionary)
            .unwrap()
    }

    /// Sets the expiry score of `key` to `score` by hand and logs the key at a new counter.
    async fn bad_expiry(&mut self, backend: &RedisBackend, key: &str, score: &str) {
        let _: () = redis::cmd("ZADD")
            .arg(backend.redis_keys()[4])
            .arg(score)
            .arg(key)
            .query_async(&mut self.raw)
            .await
            .unwrap();
        common::raw_write(&mut self.raw, backend, key.as_bytes(), None, None)
            .await
            .unwrap();
    }

    async fn cleanup(&self) {
        common::delete_matching(&self.url, &format!("durable:{{{}:*", self.namespace))
            .await
            .unwrap();
    }
}

/// Writes good entries and every kind of unreadable row into `dictionary`; returns the token
/// before the bad rows.
async fn fill(f: &mut Fixture, b: &RedisBackend) -> durable_core::Version {
    for key in [
        "good",
        "huge",
        "negative",
        "fractional",
        "exp-huge",
        "exp-negative",
    ] {
        b.persist(key, "1".into()).await.unwrap();
    }
    b.persist_expiring(&long_key(), "2".into(), Duration::from_secs(3600))
        .await
        .unwrap();
    let filler = (0..FILLER)
        .map(|i| durable_core::BatchOp::Put {
            key: format!("filler-{i}"),
            value: "0".into(),
        })
        .collect();
    b.persist_batch(filler).await.unwrap();
    let before = b.last_updated().await.unwrap();
    common::raw_write(&mut f.raw, b, b"bad\xff", Some(b"3"), None)
        .await
        .unwrap();
    for (key, score) in [("huge", "1e300"), ("negative", "-5"), ("fractional", "1.5")] {
        common::raw_write(&mut f.raw, b, key.as_bytes(), None, Some(score))
            .await
            .unwrap();
    }
    f.bad_expiry(b, "exp-huge", "1e300").await;
    f.bad_expiry(b, "exp-negative", "-1").await;
    before
}

fn check_reasons(what: &str, location: &str, got: &BTreeMap<String, String>, expected: &[&str]) {
    let keys: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(keys, expected, "{what}: unreadable keys");
    for (key, reason) in got {
        assert!(
            reason.starts_with(&format!("{location}: ")),
            "{what}: {key:?}: the reason does not name the dictionary: {reason}"
        );
        let says = match key.as_str() {
            "bad\u{fffd}" => "not UTF-8",
            "exp-huge" | "exp-negative" => "expiry",
            _ => "revision",
        };
        assert!(reason.contains(says), "{what}: {key:?}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_rows_are_reported_in_loads_and_deltas() {
    let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") else {
        return;
    };
    let mut f = Fixture::new(url).await;
    let b = f.backend("rows", 2000).await;
    let before = fill(&mut f, &b).await;
    let location = b.location();
    assert_eq!(location, format!("redis/native/{}/rows", f.namespace));
    let bad = [
        "bad\u{fffd}",
        "exp-huge",
        "exp-negative",
        "fractional",
        "huge",
        "negative",
    ];

    // One script: the whole dictionary fits in the first chunk.
    let load = b
        .durables()
        .await
        .expect("a load never fails for a bad row");
    assert_eq!(keys(&load), ["good".to_owned(), long_key()]);
    check_reasons("load", &location, &reasons(&load.unreadable), &bad);

    // Chunked: pages of 7 entries, the hash and the sorted sets in their paged encodings.
    let chunked = f.backend("rows", 7).await;
    let mut raw = f.raw.clone();
    for (key, paged) in [
        (b.entries_key(), "hashtable"),
        (b.redis_keys()[2], "skiplist"),
        (b.redis_keys()[4], "skiplist"),
    ] {
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(encoding, paged, "{key} would be read in one page");
    }
    let load = chunked.durables().await.expect("a chunked load");
    assert_eq!(keys(&load), ["good".to_owned(), long_key()]);
    check_reasons("chunked load", &location, &reasons(&load.unreadable), &bad);

    // A delta from before the bad rows: those logged after the token (a score of -5 or 1.5 sorts
    // below it, so those two keys are not in it: a handle keeps their last good values).
    let Changes::Delta(delta) = b.changes_since(before).await.unwrap() else {
        panic!("a delta from a recent token");
    };
    assert!(delta.upserts.is_empty(), "{:?}", delta.upserts);
    assert!(delta.removals.is_empty(), "{:?}", delta.removals);
    check_reasons(
        "delta",
        &location,
        &reasons(&delta.unreadable),
        &["bad\u{fffd}", "exp-huge", "exp-negative", "huge"],
    );

    // Writes that reply with the current row name the key and the dictionary instead of
    // failing with a number out of range.
    for error in [
        b.persist_if_absent("huge", "9".into()).await.map(|_| ()),
        b.compare_and_swap("exp-huge", None, Some("9".into()))
            .await
            .map(|_| ()),
    ] {
        let error = error.expect_err("the current row cannot be read");
        let text = error.to_string();
        assert!(matches!(error, Error::Backend { .. }), "{error:?}");
        assert!(text.contains(&location), "{text}");
        assert!(text.contains("cannot be read"), "{text}");
    }
    // Writing a key repairs its row.
    b.persist("huge", "4".into()).await.unwrap();
    b.persist_expiring("exp-huge", "5".into(), Duration::from_secs(60))
        .await
        .unwrap();
    let _: () = redis::cmd("HDEL")
        .arg(b.entries_key())
        .arg(&b"bad\xff"[..])
        .query_async(&mut raw)
        .await
        .unwrap();
    let load = chunked.durables().await.unwrap();
    assert_eq!(
        keys(&load),
        [
            "exp-huge".to_owned(),
            "good".to_owned(),
            "huge".to_owned(),
            long_key()
        ]
    );
    assert!(matches!(
        b.persist_if_absent("huge", "9".into()).await.unwrap(),
        IfAbsent::Present(e) if e.value == "4"
    ));
    assert!(matches!(
        b.compare_and_swap("huge", None, Some("9".into()))
            .await
            .unwrap(),
        Swap::Conflict(Some(_))
    ));
    f.cleanup().await;
}

/// A version record re-created after a wipe counts on from the highest logged revision, never
/// from a score that is no revision (which would damage the new record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_record_ignores_scores_that_are_no_revision() {
    let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") else {
        return;
    };
    let mut f = Fixture::new(url).await;
    let b = f.backend("wiped", 2000).await;
    b.persist("a", "1".into()).await.unwrap();
    let at = b.persist("b", "2".into()).await.unwrap();
    common::raw_write(&mut f.raw, &b, b"a", None, Some("1e300"))
        .await
        .unwrap();
    common::raw_write(&mut f.raw, &b, b"c", Some(b"3"), Some("-7"))
        .await
        .unwrap();
    let _: () = f.raw.del(b.version_key()).await.unwrap();
    let version = b.last_updated().await.expect("a fresh record");
    assert_eq!(version.counter(), at.counter(), "the highest real revision");
    let written = b.persist("d", "4".into()).await.unwrap();
    assert_eq!(written.counter(), at.counter() + 1);
    f.cleanup().await;
}

/// Through a handle: the key keeps its last good value and is named in the health by default;
/// with `DecodeErrors::Fail` the sync fails with a typed error naming the key and the
/// dictionary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_isolate_unreadable_rows_or_fail_when_asked() {
    let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") else {
        return;
    };
    let mut f = Fixture::new(url).await;
    let b = f.backend("handles", 2000).await;
    let isolate: Dict<i64, Json> =
        Dict::open(f.backend("handles", 2000).await, Json, Options::new())
            .await
            .unwrap();
    let fail: Dict<i64, Json> = Dict::open(
        f.backend("handles", 2000).await,
        Json,
        Options::new().with_decode_errors(DecodeErrors::Fail),
    )
    .await
    .unwrap();
    isolate.insert("victim", 2).await.unwrap();
    isolate.insert("good", 1).await.unwrap();
    fail.sync().await.unwrap();
    common::raw_write(&mut f.raw, &b, b"victim", None, Some("1e300"))
        .await
        .unwrap();

    let snapshot = isolate
        .sync()
        .await
        .expect("the bad row costs its key only");
    assert_eq!(snapshot.get("victim"), Some(&2));
    assert_eq!(snapshot.get("good"), Some(&1));
    drop(snapshot);
    let bad = isolate.health().bad_keys;
    assert!(
        bad.iter()
            .any(|k| k.key == "victim" && k.error.contains(&b.location())),
        "{bad:?}"
    );

    let error = fail.sync().await.expect_err("DecodeErrors::Fail");
    let text = error.to_string();
    assert!(matches!(error, Error::Unreadable { .. }), "{error:?}");
    assert!(
        text.contains("victim") && text.contains(&b.location()),
        "{text}"
    );
    assert_eq!(
        fail.snapshot().get("victim"),
        Some(&2),
        "the old snapshot stays"
    );
    f.cleanup().await;
}

/// The durabledict-compatible layout: a hash field that is not UTF-8 (as a Python program can
/// write) is reported by key, the dictionary named, and every other entry is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durabledict_layout_reports_fields_that_are_not_utf8() {
    let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") else {
        return;
    };
    let mut f = Fixture::new(url).await;
    let keyspace = format!("durabledict-{}.flags", f.namespace);
    let counter = format!("{keyspace}last_updated");
    let store = RedisStore::connect(&f.url).await.unwrap();
    let b = store.durabledict(&keyspace).unwrap();
    b.persist("good", "1".into()).await.unwrap();
    let _: () = redis::pipe()
        .atomic()
        .hset(&keyspace, &b"bad\xfe"[..], "2")
        .ignore()
        .incr(&counter, 1)
        .ignore()
        .query_async(&mut f.raw)
        .await
        .unwrap();
    let load = b
        .durables()
        .await
        .expect("a load never fails for a bad row");
    assert_eq!(keys(&load), ["good"]);
    let location = format!("redis/durabledict/{keyspace}");
    assert_eq!(b.location(), location);
    check_reasons(
        "durabledict load",
        &location,
        &reasons(&load.unreadable),
        &["bad\u{fffd}"],
    );
    let _: () = f.raw.del(&[&keyspace, &counter]).await.unwrap();
}

/// `location()` names layout, namespace and dictionary: the same for two backends over one
/// dictionary (whatever URL reached it), different for another dictionary, layout or
/// namespace, and never the host, user or password.
#[tokio::test]
async fn locations_name_the_dictionary_only() {
    let a = RedisStore::lazy("redis://app:s3/cret@db.example:6379/", common::options()).unwrap();
    let b = RedisStore::lazy("redis://127.0.0.1:7000/", common::options()).unwrap();
    let locations = [
        a.backend("prod", "flags").unwrap().location(),
        b.backend("prod", "flags").unwrap().location(),
        b.backend("prod", "limits").unwrap().location(),
        b.backend("staging", "flags").unwrap().location(),
        a.durabledict("flags").unwrap().location(),
        b.durabledict("flags").unwrap().location(),
        b.durabledict("limits").unwrap().location(),
    ];
    assert_eq!(locations[0], "redis/native/prod/flags");
    assert_eq!(locations[0], locations[1]);
    assert_eq!(locations[4], "redis/durabledict/flags");
    assert_eq!(locations[4], locations[5]);
    let distinct: std::collections::BTreeSet<&String> = locations.iter().collect();
    assert_eq!(distinct.len(), 5, "{locations:?}");
    for location in &locations {
        for secret in ["db.example", "127.0.0.1", "app", "s3/cret", "6379"] {
            assert!(!location.contains(secret), "{location}");
        }
    }
}
