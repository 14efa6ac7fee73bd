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

use std::time::{Duration, Instant};

use durable_core::{
    Backend, BatchOp, Capabilities, Changes, Dict, Json, Load, Name, Options, Result, Version,
    async_trait,
};
use durable_redis::redis;
use durable_redis::{RedisBackend, RedisOptions, RedisStore};

/// A backend without delta sync, as `durable bench` measures full reloads.
#[derive(Debug)]
struct NoDelta(RedisBackend);

#[async_trait]
impl Backend for NoDelta {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities().with_delta(false).with_push(false)
    }
    async fn persist(&self, key: &str, value: bytes::Bytes) -> Result<Version> {
        self.0.persist(key, value).await
    }
    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        self.0.depersist(key).await
    }
    async fn durables(&self) -> Result<Load> {
        self.0.durables().await
    }
    async fn last_updated(&self) -> Result<Version> {
        self.0.last_updated().await
    }
    async fn changes_since(&self, since: Version) -> Result<Changes> {
        self.0.changes_since(since).await
    }
}

/// The delta handle's backend, timing its two calls.
#[derive(Debug, Clone)]
struct Timed(
    RedisBackend,
    std::sync::Arc<std::sync::Mutex<Vec<(&'static str, Duration)>>>,
);

#[async_trait]
impl Backend for Timed {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities().with_push(false)
    }
    async fn persist(&self, key: &str, value: bytes::Bytes) -> Result<Version> {
        self.0.persist(key, value).await
    }
    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        self.0.depersist(key).await
    }
    async fn durables(&self) -> Result<Load> {
        self.0.durables().await
    }
    async fn last_updated(&self) -> Result<Version> {
        let t = Instant::now();
        let r = self.0.last_updated().await;
        self.1.lock().unwrap().push(("version", t.elapsed()));
        r
    }
    async fn changes_since(&self, since: Version) -> Result<Changes> {
        let t = Instant::now();
        let r = self.0.changes_since(since).await;
        self.1.lock().unwrap().push(("changes", t.elapsed()));
        r
    }
}

/// The round of `durable bench`: a one-key batch through a writer handle, a delta sync of a
/// polling handle, then a full reload of another handle; the delta with and without the full
/// reload before it.
async fn dict_rounds(backend: &RedisBackend, reps: usize) -> (f64, f64, f64) {
    let options = Options::new()
        .with_timeout(Duration::from_secs(300))
        .with_open_timeout(Duration::from_secs(600));
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let delta: Dict<u64> = Dict::open(Timed(backend.clone(), log.clone()), Json, options.clone())
        .await
        .unwrap();
    let full: Dict<u64> = Dict::open(NoDelta(backend.clone()), Json, options.clone())
        .await
        .unwrap();
    let writer: Dict<u64> = Dict::open(backend.clone(), Json, options).await.unwrap();
    let (mut quiet, mut after, mut load) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..reps {
        writer
            .insert_many([(format!("key{round}"), round as u64)])
            .await
            .unwrap();
        let t = Instant::now();
        delta.sync().await.unwrap();
        quiet.push(t.elapsed());
        writer
            .insert_many([(format!("key{round}"), round as u64 + 1)])
            .await
            .unwrap();
        let t = Instant::now();
        full.sync().await.unwrap();
        load.push(t.elapsed());
        writer
            .insert_many([(format!("key{round}"), round as u64 + 2)])
            .await
            .unwrap();
        log.lock().unwrap().clear();
        let t = Instant::now();
        delta.sync().await.unwrap();
        after.push(t.elapsed());
        if std::env::var("DURABLE_BENCH_VERBOSE").is_ok() {
            eprintln!(
                "  after a reload: {:?} total {:?}",
                log.lock().unwrap(),
                t.elapsed()
            );
        }
    }
    (median(quiet), median(after), median(load))
}

#[derive(Clone)]
enum Other {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Other {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Other::Single(c) => c.req_packed_command(cmd),
            Other::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Other::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Other::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        0
    }
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

async fn run(store: RedisStore, other: Other, sizes: &[usize], reps: usize) {
    let ns = Name::new(format!("dal{:012x}", rand::random::<u64>() >> 16)).unwrap();
    println!(
        "{:>9} {:>10} {:>12} {:>12} {:>14} {:>10}",
        "keys", "quiet ms", "after ms", "2nd ms", "after+50ms ms", "load ms"
    );
    for &size in sizes {
        let name = Name::new(format!("n{size}")).unwrap();
        let backend = store.backend(ns.as_str(), name.as_str()).unwrap();
        let mut i = 0;
        while i < size {
            let end = (i + 5000).min(size);
            let ops = (i..end)
                .map(|k| BatchOp::Put {
                    key: format!("key{k}"),
                    value: k.to_string().into(),
                })
                .collect();
            backend.persist_batch(ops).await.expect("fill");
            i = end;
        }
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
            if std::env::var("DURABLE_BENCH_PROFILE").is_ok() {
                let l = backend.durables().await.expect("load");
                drop(l);
                let start = Instant::now();
                let mut laps = Vec::new();
                for _ in 0..8 {
                    let t = Instant::now();
                    let _ = backend.last_updated().await.unwrap();
                    laps.push((t - start, t.elapsed()));
                }
                eprintln!("  version calls after a load (start, took): {laps:?}");
                let l = backend.durables().await.expect("load");
                drop(l);
                let start = Instant::now();
                let mut raw = other.clone();
                let mut laps = Vec::new();
                for _ in 0..4 {
                    let t = Instant::now();
                    let _: String = redis::cmd("PING").query_async(&mut raw).await.unwrap();
                    laps.push((t - start, t.elapsed()));
                }
                for _ in 0..4 {
                    let t = Instant::now();
                    let _ = backend.last_updated().await.unwrap();
                    laps.push((t - start, t.elapsed()));
                }
                eprintln!("  other-connection PINGs, then version calls after a load: {laps:?}");
                let nodes: Vec<String> = std::env::var("DURABLE_BENCH_NODES")
                    .map(|s| s.split(',').map(str::to_owned).collect())
                    .unwrap_or_default();
                if !nodes.is_empty() {
                    let mut conns: Vec<redis::Connection> = nodes
                        .iter()
                        .map(|n| {
                            redis::Client::open(n.as_str())
                                .unwrap()
                                .get_connection()
                                .unwrap()
                        })
                        .collect();
                    let l = backend.durables().await.expect("load");
                    drop(l);
                    let laps = tokio::task::spawn_blocking(move || {
                        let start = Instant::now();
                        let mut laps = Vec::new();
                        for _ in 0..3 {
                            for c in &mut conns {
                                let t = Instant::now();
                                let _: String = redis::cmd("PING").query(c).unwrap();
                                laps.push((t - start, t.elapsed()));
                            }
                        }
                        laps
                    })
                    .await
                    .unwrap();
                    eprintln!("  blocking PINGs to each node after a load: {laps:?}");
                }
            }
            let t0 = Instant::now();
            let since = backend.last_updated().await.unwrap();
            let t1 = Instant::now();
            write_one(&backend, round).await;
            let t2 = Instant::now();
            after.push(delta(&backend, since).await);
            if std::env::var("DURABLE_BENCH_VERBOSE").is_ok() {
                eprintln!(
                    "  after a load: version {:?}, write {:?}, delta {:?}",
                    t1 - t0,
                    t2 - t1,
                    t2.elapsed()
                );
            }
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
    let sizes: Vec<usize> = std::env::var("DURABLE_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000]);
    let reps = std::env::var("DURABLE_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let options = RedisOptions::new().with_response_timeout(Duration::from_secs(120));
    let cluster = std::env::var("DURABLE_BENCH_REDIS_CLUSTER_URLS")
        .or_else(|_| std::env::var("DURABLE_TEST_REDIS_CLUSTER_URLS"))
        .ok();
    let single = std::env::var("DURABLE_BENCH_REDIS_URL")
        .or_else(|_| std::env::var("DURABLE_TEST_REDIS_URL"))
        .ok();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        if let Some(url) = single.filter(|_| std::env::var("DURABLE_BENCH_ONLY_CLUSTER").is_err()) {
            println!("single server {url}");
            let store = RedisStore::connect_with(&url, options.clone())
                .await
                .expect("connect");
            let other = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            run(store, Other::Single(other), &sizes, reps).await;
        }
        if let Some(urls) = cluster.filter(|_| std::env::var("DURABLE_BENCH_ONLY_SINGLE").is_err())
        {
            let urls: Vec<&str> = urls.split(',').collect();
            println!("cluster {urls:?}");
            let store = RedisStore::connect_cluster(&urls, options)
                .await
                .expect("connect");
            let other = redis::cluster::ClusterClient::new(urls.clone())
                .unwrap()
                .get_async_connection()
                .await
                .unwrap();
            run(store, Other::Cluster(other), &sizes, reps).await;
        }
    });
}
