//! A full load in many chunks while a writer is busy returns exactly the state of its token,
//! expiries included.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use durable_core::conformance::server_from_env;
use durable_core::{Backend, Name, StoreTime};
use durable_redis::RedisStore;
use durable_redis::redis;

/// Entries written before the loads start: above Redis' listpack limits (512 hash fields, 128
/// sorted set members, with a third of them expiring), so that `HSCAN` and `ZSCAN` return pages
/// and loads take their chunked path instead of reading everything in the first script.
const KEYS: usize = 600;

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
    // The state after each counter, replayed from the single writer's acknowledged writes:
    // key to value and expiry. Every third write has a time to live (long enough to never
    // expire during the test).
    type State = BTreeMap<String, (Vec<u8>, Option<StoreTime>)>;
    let ttl = Duration::from_secs(3600);
    let mut history: Vec<State> = Vec::new();
    let mut state = State::new();
    for i in 0..KEYS {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let (v, expires_at) = if i % 3 == 0 {
            let (v, at) = writer
                .persist_expiring(&key, value.clone().into(), ttl)
                .await
                .unwrap();
            (v, Some(at))
        } else {
            (
                writer.persist(&key, value.clone().into()).await.unwrap(),
                None,
            )
        };
        state.insert(key, (value.into_bytes(), expires_at));
        history.resize(v.counter() as usize + 1, State::new());
        history[v.counter() as usize] = state.clone();
    }
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    for (key, paged) in [
        (writer.entries_key(), "hashtable"),
        (writer.redis_keys()[4], "skiplist"),
    ] {
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(encoding, paged, "{key} would be read in one page");
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
        let key = format!("k{}", (i * 37) % (KEYS + 50));
        let value = format!("w{i}");
        let version = match i % 3 {
            0 => {
                state.remove(&key);
                writer.depersist(&key).await.unwrap()
            }
            1 => {
                let (v, at) = writer
                    .persist_expiring(&key, value.clone().into(), ttl)
                    .await
                    .unwrap();
                state.insert(key, (value.into_bytes(), Some(at)));
                Some(v)
            }
            _ => {
                let v = writer.persist(&key, value.clone().into()).await.unwrap();
                state.insert(key, (value.into_bytes(), None));
                Some(v)
            }
        };
        if let Some(v) = version {
            history.resize(v.counter() as usize + 1, State::new());
            history[v.counter() as usize] = state.clone();
        }
    }
    let loads = loader.await.unwrap();
    for load in loads {
        let got: State = load
            .entries
            .iter()
            .map(|e| (e.key.clone(), (e.value.to_vec(), e.expires_at)))
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
