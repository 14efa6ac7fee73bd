//! durable over Redis vs plain Redis commands, measured side by side in one run.
//!
//! ```sh
//! DURABLE_BENCH_REDIS_URL=redis://127.0.0.1:6379/ cargo bench -p durable-redis --bench redis
//! ```
//!
//! Falls back to `DURABLE_TEST_REDIS_URL`. Uses a random namespace and deletes it afterwards.
//! `DURABLE_BENCH_SIZES=1000,100000` picks the dictionary sizes (default 1k, 100k, 1M).
//! Prints a table and writes `redis-bench.json` (or `DURABLE_BENCH_JSON`).

#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use durable_core::{Backend, Dict, Json, Name, Options};
use durable_redis::redis::{self, AsyncCommands};
use durable_redis::{RedisOptions, RedisStore};

struct Row {
    name: String,
    value: f64,
    unit: &'static str,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn per_op(total: Duration, n: u64) -> f64 {
    total.as_nanos() as f64 / n as f64
}

async fn open(
    store: &RedisStore,
    ns: &Name,
    dict: &str,
    trust: Option<Duration>,
) -> Dict<u64, Json> {
    Dict::open(
        store.backend(ns.as_str(), dict).unwrap(),
        Json,
        Options::new()
            .with_trust_hints_for(trust)
            .with_timeout(Duration::from_secs(120))
            .with_open_timeout(Duration::from_secs(300)),
    )
    .await
    .expect("open")
}

async fn fill(store: &RedisStore, ns: &Name, dict: &str, n: usize) {
    common::fill(&store.backend(ns.as_str(), dict).unwrap(), n).await;
}

async fn run(url: &str, sizes: &[usize]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut push = |name: String, value: f64, unit: &'static str| {
        println!("{name:<58} {value:>14.1} {unit}");
        rows.push(Row { name, value, unit });
    };
    let store = RedisStore::connect_with(
        url,
        RedisOptions::new().with_response_timeout(Duration::from_secs(60)),
    )
    .await
    .expect("connect");
    let ns = Name::new(format!("bench{:012x}", rand::random::<u64>() >> 16)).unwrap();
    let client = redis::Client::open(url).unwrap();
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(60)));
    let mut raw = redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .unwrap();

    // 1. A read through the snapshot vs a direct HGET per read (1k keys).
    fill(&store, &ns, "read", 1000).await;
    let d = open(&store, &ns, "read", None).await;
    let keys: Vec<String> = (0..1000).map(|i| format!("flag:{i}")).collect();
    let n = 2_000_000u64;
    let t = Instant::now();
    for i in 0..n {
        let snap = d.snapshot();
        black_box(snap.get(&keys[(i % 1000) as usize]));
    }
    let snapshot_ns = per_op(t.elapsed(), n);
    push("read: snapshot().get() (ns)".into(), snapshot_ns, "ns/read");
    let entries = store
        .backend(ns.as_str(), "read")
        .unwrap()
        .entries_key()
        .to_owned();
    let n = 5000u64;
    let t = Instant::now();
    for i in 0..n {
        let v: Option<Vec<u8>> = raw
            .hget(&entries, &keys[(i % 1000) as usize])
            .await
            .unwrap();
        black_box(v);
    }
    let hget_ns = per_op(t.elapsed(), n);
    push("read: direct HGET (ns)".into(), hget_ns, "ns/read");
    push("read: HGET / snapshot".into(), hget_ns / snapshot_ns, "x");

    // 2. sync() with nothing changed, with and without a live push hint.
    let trusting = open(&store, &ns, "read", Some(Duration::from_secs(3600))).await;
    trusting.sync().await.unwrap();
    let n = 200_000u64;
    let t = Instant::now();
    for _ in 0..n {
        black_box(trusting.sync().await.unwrap());
    }
    let hinted = per_op(t.elapsed(), n);
    push(
        "no-change sync, live push hint (ns)".into(),
        hinted,
        "ns/sync",
    );
    let n = 5000u64;
    let t = Instant::now();
    for _ in 0..n {
        black_box(d.sync().await.unwrap());
    }
    let polled = per_op(t.elapsed(), n);
    push(
        "no-change sync, no hint: one HMGET round trip (ns)".into(),
        polled,
        "ns/sync",
    );
    let t = Instant::now();
    for _ in 0..n {
        let v: (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(store.backend(ns.as_str(), "read").unwrap().version_key())
            .arg("epoch")
            .arg("counter")
            .query_async(&mut raw)
            .await
            .unwrap();
        black_box(v);
    }
    push(
        "  reference: bare HMGET round trip (ns)".into(),
        per_op(t.elapsed(), n),
        "ns",
    );

    // 3. sync() after one change: delta vs full reload, per size.
    for &size in sizes {
        let name = format!("size{size}");
        let t = Instant::now();
        fill(&store, &ns, &name, size).await;
        eprintln!("(filled {size} keys in {:.1} s)", t.elapsed().as_secs_f64());
        let reader = open(&store, &ns, &name, None).await;
        let writer = store.backend(ns.as_str(), &name).unwrap();
        let mut deltas = Vec::new();
        for i in 0..30u64 {
            writer
                .persist("flag:7", (1_000_000 + i).to_string().into())
                .await
                .unwrap();
            let t = Instant::now();
            reader.sync().await.unwrap();
            deltas.push(t.elapsed());
        }
        assert_eq!(reader.snapshot().len(), size);
        let delta = median(deltas);
        let mut backend_deltas = Vec::new();
        for i in 0..30u64 {
            let before = writer.last_updated().await.unwrap();
            writer
                .persist("flag:8", (2_000_000 + i).to_string().into())
                .await
                .unwrap();
            let t = Instant::now();
            black_box(writer.changes_since(before).await.unwrap());
            backend_deltas.push(t.elapsed());
        }
        let backend_delta = median(backend_deltas);
        let reloads = if size >= 1_000_000 { 2 } else { 5 };
        let mut fulls = Vec::new();
        let mut raw_loads = Vec::new();
        for _ in 0..reloads {
            let t = Instant::now();
            let fresh = open(&store, &ns, &name, None).await;
            fulls.push(t.elapsed());
            assert_eq!(fresh.snapshot().len(), size);
            drop(fresh);
            let t = Instant::now();
            black_box(writer.durables().await.unwrap());
            raw_loads.push(t.elapsed());
        }
        let full = median(fulls);
        let raw_load = median(raw_loads);
        push(
            format!("sync after 1 change @{size}: delta (us)"),
            delta.as_secs_f64() * 1e6,
            "us",
        );
        push(
            "  of which changes_since() round trip (us)".to_string(),
            backend_delta.as_secs_f64() * 1e6,
            "us",
        );
        push(
            format!("sync after 1 change @{size}: full reload via Dict::open (us)"),
            full.as_secs_f64() * 1e6,
            "us",
        );
        push(
            "  of which chunked HSCAN load, durables() (us)".to_string(),
            raw_load.as_secs_f64() * 1e6,
            "us",
        );
        push(
            format!("sync after 1 change @{size}: full / delta"),
            full.as_secs_f64() / delta.as_secs_f64(),
            "x",
        );
        drop(reader);
        let _: () = redis::cmd("UNLINK")
            .arg(&writer.redis_keys()[..])
            .query_async(&mut raw)
            .await
            .unwrap();
    }

    // 4. Writes per second: sequential inserts vs batches of 100.
    let w = open(&store, &ns, "writes", None).await;
    let n = 3000u64;
    let t = Instant::now();
    for i in 0..n {
        w.insert(&format!("k{}", i % 1000), i).await.unwrap();
    }
    let seq = n as f64 / t.elapsed().as_secs_f64();
    push(
        "writes: sequential insert (writes/s)".into(),
        seq,
        "writes/s",
    );
    let batches = 300u64;
    let t = Instant::now();
    for b in 0..batches {
        w.insert_many((0..100).map(|i| (format!("k{}", (b * 100 + i) % 1000), i)))
            .await
            .unwrap();
    }
    let batched = (batches * 100) as f64 / t.elapsed().as_secs_f64();
    push(
        "writes: insert_many of 100 (keys/s)".into(),
        batched,
        "keys/s",
    );
    push("writes: batched / sequential".into(), batched / seq, "x");

    // Clean up the namespace.
    let pattern = format!("durable:{{{ns}:*");
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut raw)
            .await
            .unwrap();
        for k in keys {
            let _: () = raw.del(k).await.unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    rows
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
    println!(
        "durable-redis benchmark against {}",
        url.split('@').next_back().unwrap_or("")
    );
    let rows = runtime.block_on(run(&url, &sizes));
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"name\": {:?}, \"value\": {:.3}, \"unit\": {:?}}}",
                r.name, r.value, r.unit
            )
        })
        .collect();
    let path = std::env::var("DURABLE_BENCH_JSON").unwrap_or_else(|_| "redis-bench.json".into());
    std::fs::write(&path, format!("[\n{}\n]\n", json.join(",\n"))).expect("write json");
    println!("(written to {path})");
}
