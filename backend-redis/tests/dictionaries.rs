//! `RedisStore::dictionaries`: the dictionaries of a namespace, on a single server
//! (`DURABLE_TEST_REDIS_URL`) and on a Redis Cluster (`DURABLE_TEST_REDIS_CLUSTER_URLS`), where
//! they are spread over every master.

mod common;

use bytes::Bytes;
use durable_core::conformance::{Harness, server_from_env};
use durable_core::{Backend, Dict, Error, Json, Name, Options};
use durable_redis::RedisStore;
use durable_redis::redis::{self, aio::ConnectionLike};

/// Names a test run's namespaces uniquely: `base`, `base` + `b` (a namespace `base` is a prefix
/// of) and one with every kind of character a name may hold.
fn namespaces() -> [String; 3] {
    let base = format!("ls{:012x}", rand::random::<u64>() >> 16);
    [base.clone(), format!("{base}b"), format!("{base}.x-Y_9")]
}

/// Dictionaries with every kind of character a name may hold, and the longest name; on a
/// cluster their hash tags spread them over the masters.
fn odd_names() -> Vec<String> {
    let mut names: Vec<String> = ["a.b", "-", "_x-y.Z9", "flags", "0"]
        .map(str::to_owned)
        .to_vec();
    names.push("d".repeat(Name::MAX_LEN));
    names.extend((0..12).map(|i| format!("spread-{i}")));
    names
}

/// How many keys the store holds (`DBSIZE`, summed over the masters of a cluster): listing must
/// not change it. (No other test of this binary writes to these servers meanwhile.)
async fn key_count(raw: &mut impl ConnectionLike) -> u64 {
    redis::cmd("DBSIZE").query_async(raw).await.unwrap()
}

async fn lists_the_dictionaries_of_a_namespace<C: ConnectionLike + Send>(
    store: RedisStore,
    harness: &dyn Harness,
    mut raw: C,
) {
    let [ns, longer, dotted] = namespaces();

    // A namespace nothing was ever stored in: empty, and listing it writes nothing.
    let before = key_count(&mut raw).await;
    assert_eq!(store.dictionaries(&ns).await.unwrap(), Vec::<String>::new());
    assert_eq!(key_count(&mut raw).await, before, "listing wrote nothing");

    // Written dictionaries, with odd names.
    let names = odd_names();
    for name in &names {
        let backend = store.backend(&ns, name).unwrap();
        backend
            .persist("k", Bytes::from_static(b"1"))
            .await
            .unwrap();
    }
    // A dictionary of the longer namespace (`ns` is its prefix) and of the dotted one.
    for (namespace, name) in [(&longer, "only-in-longer"), (&dotted, "only-in-dotted")] {
        store
            .backend(namespace, name)
            .unwrap()
            .persist("k", Bytes::from_static(b"1"))
            .await
            .unwrap();
    }
    // A dictionary only opened for reading: reads create its version record (as after a wipe),
    // so it is listed too.
    let read: Dict<bool, Json> = Dict::open(
        store.backend(&ns, "read-only").unwrap(),
        Json,
        Options::new(),
    )
    .await
    .unwrap();
    assert!(read.sync().await.unwrap().is_empty());
    // Keys the listing's pattern matches but this layout never writes (by hand): not listed.
    for key in [
        format!("durable:{{{ns}:a:b}}:version"),
        format!("durable:{{{ns}:é}}:version"),
        format!("durable:{{{ns}:*}}:version"),
        format!("durable:{{{ns}:}}:version"),
    ] {
        redis::cmd("SET")
            .arg(&key)
            .arg("x")
            .query_async::<()>(&mut raw)
            .await
            .unwrap();
    }

    let mut expected = names.clone();
    expected.push("read-only".to_owned());
    expected.sort();
    let before = key_count(&mut raw).await;
    assert_eq!(store.dictionaries(&ns).await.unwrap(), expected);
    assert_eq!(
        store.dictionaries(&longer).await.unwrap(),
        ["only-in-longer"]
    );
    assert_eq!(
        store.dictionaries(&dotted).await.unwrap(),
        ["only-in-dotted"]
    );
    assert_eq!(key_count(&mut raw).await, before, "listing wrote nothing");

    // A deleted dictionary (its keys gone, as after a wipe) is no longer listed.
    let gone = store.backend(&ns, "flags").unwrap();
    redis::cmd("DEL")
        .arg(gone.version_key())
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    expected.retain(|name| name != "flags");
    assert_eq!(store.dictionaries(&ns).await.unwrap(), expected);

    // Names no dictionary can have: refused, not matched as patterns.
    for bad in ["", "a*", "a:b", "é", "{x}", ".hidden", "a?", "[a]"] {
        assert!(
            matches!(
                store.dictionaries(bad).await,
                Err(Error::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }

    for namespace in [&ns, &longer, &dotted] {
        harness
            .cleanup(&Name::new(namespace.as_str()).unwrap())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_server() {
    let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") else {
        return;
    };
    let store = RedisStore::connect_with(&url, common::options())
        .await
        .unwrap();
    let raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let harness = common::SingleHarness::new(url);
    lists_the_dictionaries_of_a_namespace(store, &harness, raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster() {
    let Some(urls) = server_from_env("DURABLE_TEST_REDIS_CLUSTER_URLS") else {
        return;
    };
    let harness = common::ClusterHarness::from_env_value(&urls);
    let store = harness.store().await.unwrap();
    let raw = redis::cluster::ClusterClient::new(harness.urls.clone())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    lists_the_dictionaries_of_a_namespace(store, &harness, raw).await;
}
