//! Full loads (`Backend::durables`, `Dict::open`) at several sizes, next to the bare Redis
//! commands they are made of, so a slow load can be split into server, decode and engine time.
//!
//! ```sh
//! DURABLE_BENCH_REDIS_URL=redis://127.0.0.1:6379/ cargo bench -p durable-redis --bench full_load
//! ```
//!
//! Falls back to `DURABLE_TEST_REDIS_URL`. `DURABLE_BENCH_SIZES=1000,100000` picks the sizes
//! (default 1k, 100k, 1M); `DURABLE_BENCH_REPS` the runs per figure (median; default 5, 3 at
//! 1M). With `DURABLE_BENCH_NAMESPACE=name` the data is kept (and reused when already filled)
//! instead of being deleted, so that builds can be compared on the same data.

#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use durable_core::{Backend, Dict, Json, Name, Options};
use durable_redis::redis::{self, AsyncCommands, Value};
use durable_redis::{RedisOptions, RedisStore};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn time<F, Fut>(reps: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut runs = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        f().await;
        runs.push(t.elapsed());
    }
    median(runs)
}

async fn run(url: &str, sizes: &[usize]) {
    let store = RedisStore::connect_with(
        url,
        RedisOptions::new().with_response_timeout(Duration::from_secs(120)),
    )
    .await
    .expect("connect");
    let kept = std::env::var("DURABLE_BENCH_NAMESPACE").ok();
    let ns = Name::new(
        kept.clone()
            .unwrap_or_else(|| format!("bench{:012x}", rand::random::<u64>() >> 16)),
    )
    .unwrap();
    let client = redis::Client::open(url).unwrap();
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(120)));
    let mut raw = redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .unwrap();
    println!(
        "{:>9} {:>12} {:>12} {:>12} {:>12}",
        "keys", "durables ms", "open ms", "HSCAN ms", "HGETALL ms"
    );
    for &size in sizes {
        let name = Name::new(format!("load{size}")).unwrap();
        let backend = store.backend(ns.as_str(), name.as_str()).unwrap();
        let entries = backend.entries_key().to_owned();
        let have: usize = raw.hlen(&entries).await.unwrap();
        if have != size {
            let _: () = raw.del(&backend.redis_keys()[..]).await.unwrap();
            let t = Instant::now();
            common::fill(&backend, size).await;
            eprintln!("(filled {size} keys in {:.1} s)", t.elapsed().as_secs_f64());
        }
        let reps = std::env::var("DURABLE_BENCH_REPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if size >= 1_000_000 { 3 } else { 5 });
        let durables = time(reps, || async {
            let load = backend.durables().await.unwrap();
            assert_eq!(load.entries.len(), size);
            black_box(load);
        })
        .await;
        let open = time(reps, || async {
            let d: Dict<u64, Json> = Dict::open(
                backend.clone(),
                Json,
                Options::new()
                    .with_timeout(Duration::from_secs(300))
                    .with_open_timeout(Duration::from_secs(300)),
            )
            .await
            .unwrap();
            assert_eq!(d.snapshot().len(), size);
        })
        .await;
        // The floor of a chunked load: sequential HSCAN pages of 2000, decoded to Values.
        let hscan = time(reps, || {
            let mut raw = raw.clone();
            let entries = entries.clone();
            async move {
                let mut cursor = "0".to_owned();
                let mut n = 0;
                loop {
                    let (next, items): (String, Value) = redis::cmd("HSCAN")
                        .arg(&entries)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(2000)
                        .query_async(&mut raw)
                        .await
                        .unwrap();
                    if let Value::Array(items) = items {
                        n += items.len() / 2;
                    }
                    if next == "0" {
                        break;
                    }
                    cursor = next;
                }
                assert!(n >= size);
            }
        })
        .await;
        // One command for everything (blocks the server for its whole duration: reference only).
        let hgetall = time(reps, || {
            let mut raw = raw.clone();
            let entries = entries.clone();
            async move {
                let v: Value = redis::cmd("HGETALL")
                    .arg(&entries)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                black_box(v);
            }
        })
        .await;
        println!(
            "{size:>9} {:>12.1} {:>12.1} {:>12.1} {:>12.1}",
            ms(durables),
            ms(open),
            ms(hscan),
            ms(hgetall)
        );
        if kept.is_none() {
            let _: () = raw.del(&backend.redis_keys()[..]).await.unwrap();
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(url) = common::single_url() else {
        eprintln!("skipped: set DURABLE_BENCH_REDIS_URL (or DURABLE_TEST_REDIS_URL)");
        return;
    };
    let sizes = common::sizes(&[1_000, 100_000, 1_000_000]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&url, &sizes));
}
