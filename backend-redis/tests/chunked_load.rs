//! A full load in many chunks while a writer is busy returns exactly the state of its token.

mod common;

use std::collections::BTreeMap;

use durable_core::conformance::server_from_env;
use durable_core::{Backend, Name};
use durable_redis::RedisStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_load_is_consistent_while_writing() {
    let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") else {
        return;
    };
    let namespace = Name::new(format!("c{:016x}", rand::random::<u64>())).unwrap();
    let dict = Name::new("chunked").unwrap();
    let store = RedisStore::connect_with(&url, common::options().with_load_chunk(7))
        .await
        .unwrap();
    let writer = store.backend(namespace.as_str(), dict.as_str()).unwrap();
    // The state after each counter, replayed from the single writer's acknowledged writes.
    let mut history: Vec<BTreeMap<String, Vec<u8>>> = Vec::new();
    let mut state = BTreeMap::new();
    for i in 0..300 {
        let v = writer
            .persist(&format!("k{i}"), format!("v{i}").into())
            .await
            .unwrap();
        state.insert(format!("k{i}"), format!("v{i}").into_bytes());
        history.resize(v.counter() as usize + 1, BTreeMap::new());
        history[v.counter() as usize] = state.clone();
    }
    let loader = {
        let backend = store.backend(namespace.as_str(), dict.as_str()).unwrap();
        tokio::spawn(async move {
            let mut loads = Vec::new();
            for _ in 0..15 {
                loads.push(backend.durables().await.unwrap());
            }
            loads
        })
    };
    for i in 0..400 {
        let key = format!("k{}", (i * 37) % 350);
        let version = if i % 3 == 0 {
            state.remove(&key);
            writer.depersist(&key).await.unwrap()
        } else {
            state.insert(key.clone(), format!("w{i}").into_bytes());
            Some(writer.persist(&key, format!("w{i}").into()).await.unwrap())
        };
        if let Some(v) = version {
            history.resize(v.counter() as usize + 1, BTreeMap::new());
            history[v.counter() as usize] = state.clone();
        }
    }
    let loads = loader.await.unwrap();
    for load in loads {
        let got: BTreeMap<String, Vec<u8>> = load
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.to_vec()))
            .collect();
        let counter = load.version.counter() as usize;
        assert_eq!(
            got, history[counter],
            "load at counter {counter} is not that state"
        );
        for e in &load.entries {
            assert!(
                e.revision.0 as usize <= counter && e.revision.0 > 0,
                "{e:?}"
            );
        }
    }
    common::delete_matching(&url, &format!("durable:{{{namespace}:*"))
        .await
        .unwrap();
}
