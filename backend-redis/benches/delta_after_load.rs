//! A one-key delta sync right after a full load on the same store, next to the same delta on
//! a quiet connection: a full load must leave nothing behind that slows the next command.
//!
//! ```sh
//! DURABLE_BENCH_REDIS_URL=redis://127.0.0.1:6379/ cargo bench -p durable-redis --bench delta_after_load
//! ```
//!
//! Falls back to `DURABLE_TEST_REDIS_URL`; `DURABLE_BENCH_REDIS_CLUSTER_URLS` (or
//! `DURABLE_TEST_REDIS_CLUSTER_URLS`, comma-separated) measures a cluster instead.
//! `DURABLE_BENCH_SIZES=10000,100000` picks the sizes (default 100k and 1M),
//! `DURABLE_BENCH_REPS` the rounds per figure (median; default 5).

#![allow(missing_docs)]

mod common;

use std::time::{Duration, Instant};

use durable_core::{Backend, BatchOp, Capabilities, Dict, Forward, Hide, Json, Name, Options};
use durable_redis::{RedisBackend, RedisOptions, RedisStore};

/// A backend without delta sync (nor push), as `durable bench` measures full reloads.
fn no_delta(backend: RedisBackend) -> Forward<RedisBackend, Hide> {
    Forward::new(
        backend,
        Hide(Capabilities::none().with_delta(true).with_push(true)),
    )
}

/// The round of `durable bench`: a one-key batch through a writer handle, a delta sync of a
/// polling handle, then a full reload of another handle; the delta with and without the full
/// reload before it.
async fn dict_rounds(backend: &RedisBackend, reps: usize) -> (f64, f64, f64) {
    let options = Options::new()
        .with_timeout(Duration::from_secs(300))
        .with_open_timeout(Duration::from_secs(600));
    let delta: Dict<u64> = Dict::open(backend.clone(), Json, options.clone())
        .await
        .unwrap();
    let full: Dict<u64> = Dict::open(no_delta(backend.clone()), Json, options.clone())
        .await
        .unwrap();
    let writer: Dict<u64> = Dict::open(backend.clone(), Json, options).await.unwrap();
    let (mut quiet, mut after, mut load) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..reps {
        writer
            .insert_many([(format!("flag:{round}"), round as u64)])
            .await
            .unwrap();
        let t = Instant::now();
        delta.sync().await.unwrap();
        quiet.push(t.elapsed());
        writer
            .insert_many([(format!("flag:{round}"), round as u64 + 1)])
            .await
            .unwrap();
        let t = Instant::now();
        full.sync().await.unwrap();
        load.push(t.elapsed());
        writer
            .insert_many([(format!("flag:{round}"), round as u64 + 2)])
            .await
            .unwrap();
        let t = Instant::now();
        delta.sync().await.unwrap();
        after.push(t.elapsed());
    }
    (median(quiet), median(after), median(load))
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

async fn write_one(backend: &durable_redis::RedisBackend, round: usize) {
    backend
        .persist_batch(vec![BatchOp::Put {
            key: format!("k{round}"),
            value: round.to_string().into(),
        }])
        .await
        .expect("write");
}

/// One delta sync as the engine does it: the token, then the changes since the last one.
async fn delta(backend: &durable_redis::RedisBackend, since: durable_core::Version) -> Duration {
    let t = Instant::now();
    let _ = backend.last_updated().await.expect("version");
    let _ = backend.changes_since(since).await.expect("changes");
    t.elapsed()
}

async fn run(store: RedisStore, sizes: &[usize], reps: usize) {
    let ns = Name::new(format!("dal{:012x}", rand::random::<u64>() >> 16)).unwrap();
    println!(
        "{:>9} {:>10} {:>12} {:>12} {:>14} {:>10}",
        "keys", "quiet ms", "after ms", "2nd ms", "after+50ms ms", "load ms"
    );
    for &size in sizes {
        let name = Name::new(format!("n{size}")).unwrap();
        let backend = store.backend(ns.as_str(), name.as_str()).unwrap();
        common::fill(&backend, size).await;
        let (mut quiet, mut after, mut second, mut settled, mut load) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..reps {
            let since = backend.last_updated().await.unwrap();
            write_one(&backend, round).await;
            quiet.push(delta(&backend, since).await);

            let t = Instant::now();
            let l = backend.durables().await.expect("load");
            load.push(t.elapsed());
            drop(l);
            let since = backend.last_updated().await.unwrap();
            write_one(&backend, round).await;
            after.push(delta(&backend, since).await);
            second.push(delta(&backend, since).await);

            let l = backend.durables().await.expect("load");
            drop(l);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let since = backend.last_updated().await.unwrap();
            write_one(&backend, round).await;
            settled.push(delta(&backend, since).await);
        }
        println!(
            "{:>9} {:>10.3} {:>12.3} {:>12.3} {:>14.3} {:>10.1}",
            size,
            median(quiet),
            median(after),
            median(second),
            median(settled),
            median(load)
        );
        let (q, a, l) = dict_rounds(&backend, reps).await;
        println!(
            "{:>9} {:>10.3} {:>12.3} {:>12} {:>14} {:>10.1}   (Dict handles, as durable bench)",
            size, q, a, "", "", l
        );
        let _ = backend.clear().await;
    }
}

fn main() {
    let sizes = common::sizes(&[100_000, 1_000_000]);
    let reps = std::env::var("DURABLE_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let options = RedisOptions::new().with_response_timeout(Duration::from_secs(120));
    let cluster = std::env::var("DURABLE_BENCH_REDIS_CLUSTER_URLS")
        .or_else(|_| std::env::var("DURABLE_TEST_REDIS_CLUSTER_URLS"))
        .ok();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        if let Some(url) = common::single_url() {
            println!("single server {url}");
            let store = RedisStore::connect_with(&url, options.clone())
                .await
                .expect("connect");
            run(store, &sizes, reps).await;
        }
        if let Some(urls) = cluster {
            let urls: Vec<&str> = urls.split(',').collect();
            println!("cluster {urls:?}");
            let store = RedisStore::connect_cluster(&urls, options)
                .await
                .expect("connect");
            run(store, &sizes, reps).await;
        }
    });
}
