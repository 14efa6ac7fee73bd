//! The durabledict-compatible layout, checked against plain Redis commands: what Python
//! durabledict's `RedisDict` (with `JSONEncoding`) writes, this crate reads, and the reverse.

use durable_core::conformance::server_from_env;
use durable_core::{Backend, Dict, Json, Options};
use durable_redis::RedisStore;
use durable_redis::redis::{self, AsyncCommands};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durabledict_layout_round_trip() {
    let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") else {
        return;
    };
    let keyspace = format!("durabledict-test-{:016x}.flags", rand::random::<u64>());
    let counter = format!("{keyspace}last_updated");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();

    // What RedisDict.__setitem__ does: HSET the json.dumps() text and INCR last_updated, in
    // one MULTI/EXEC. Python's json.dumps escapes non-ASCII and puts spaces after separators.
    let (_, n): (i64, i64) = redis::pipe()
        .atomic()
        .hset(
            &keyspace,
            "from-python",
            r#"{"enabled": true, "ratio": 0.5, "name": "caf\u00e9"}"#,
        )
        .incr(&counter, 1)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(n, 1);

    let store = RedisStore::connect(&url).await.unwrap();
    let backend = store.durabledict(&keyspace).unwrap();
    assert!(
        !backend.capabilities().delta,
        "this layout has no delta sync"
    );
    assert!(!backend.capabilities().compare_and_swap);
    let d: Dict<Value, Json> =
        Dict::open(store.durabledict(&keyspace).unwrap(), Json, Options::new())
            .await
            .unwrap();
    let snapshot = d.snapshot();
    assert_eq!(
        snapshot.get("from-python"),
        Some(&json!({"enabled": true, "ratio": 0.5, "name": "café"}))
    );
    assert_eq!(snapshot.version().counter(), 1);
    assert_eq!(snapshot.version().epoch(), 0, "no epoch in this layout");

    // Rust writes: plain JSON text in the hash, the counter bumped by exactly one.
    let v = d
        .insert("from-rust", json!({"n": [1, 2], "s": "é"}))
        .await
        .unwrap();
    assert_eq!(v.counter(), 2);
    let text: String = raw.hget(&keyspace, "from-rust").await.unwrap();
    let parsed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, json!({"n": [1, 2], "s": "é"}));
    let n: String = raw.get(&counter).await.unwrap();
    assert_eq!(n, "2", "last_updated is a plain integer string");

    // Deletes bump once; deleting a missing key bumps nothing.
    assert!(d.remove("from-rust").await.unwrap().is_some());
    assert!(d.remove("never-there").await.unwrap().is_none());
    let exists: bool = raw.hexists(&keyspace, "from-rust").await.unwrap();
    assert!(!exists);
    let n: i64 = raw.get(&counter).await.unwrap();
    assert_eq!(n, 3);

    // Python deletes and writes behind our back: the next sync reloads everything.
    let _: () = redis::pipe()
        .atomic()
        .hdel(&keyspace, "from-python")
        .ignore()
        .hset(&keyspace, "other", "42")
        .ignore()
        .incr(&counter, 1)
        .ignore()
        .query_async(&mut raw)
        .await
        .unwrap();
    let snapshot = d.sync().await.unwrap();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot.get("other"), Some(&json!(42)));
    assert_eq!(snapshot.version().counter(), 4);

    // Increment keeps the value a JSON number Python reads.
    let (value, version) = backend.increment("other", 8).await.unwrap();
    assert_eq!((value, version.counter()), (50, 5));
    let text: String = raw.hget(&keyspace, "other").await.unwrap();
    assert_eq!(text, "50");

    // Clear deletes the hash and bumps once; clearing again bumps nothing.
    assert!(backend.clear().await.unwrap().is_some());
    assert!(backend.clear().await.unwrap().is_none());
    let exists: bool = raw.exists(&keyspace).await.unwrap();
    assert!(!exists);
    let n: i64 = raw.get(&counter).await.unwrap();
    assert_eq!(n, 6);

    let _: () = raw.del(&[&keyspace, &counter]).await.unwrap();
}
