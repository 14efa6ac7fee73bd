//! Sync and write costs of the ZooKeeper backend against the server in
//! `DURABLE_TEST_ZOOKEEPER` (skipped without it). One run, a few minutes at most:
//!
//! ```text
//! DURABLE_TEST_ZOOKEEPER=127.0.0.1:2181 cargo bench -p durable-zookeeper --bench zookeeper
//! ```
//!
//! Prints a table and writes `durable-zookeeper-bench.json` in Cargo's target tmp directory
//! (override with `DURABLE_BENCH_JSON`). `DURABLE_BENCH_SIZES` (default `1000,100000`) sets the
//! dictionary sizes of the delta-versus-reload rows; `DURABLE_BENCH_SIZES=1000` is quick.

use std::time::{Duration, Instant};

use bytes::Bytes;
use durable_core::{Backend, BatchOp, Dict, Mode, Options, Raw};
use durable_zookeeper::{
    ZooKeeperBackend, ZooKeeperOptions, ZooKeeperStore, zookeeper_client as zk,
};

const ROOT: &str = "/durable-bench";

struct Row {
    name: String,
    micros: f64,
    note: String,
}

fn options(trust: Option<Duration>) -> Options {
    Options::new()
        .with_mode(Mode::Manual)
        .with_timeout(Duration::from_secs(60))
        .with_open_timeout(Duration::from_secs(120))
        .with_trust_hints_for(trust)
}

async fn store(connect: &str) -> ZooKeeperStore {
    let config = ZooKeeperOptions::new(connect)
        .with_root(ROOT)
        .with_operation_timeout(Duration::from_secs(60));
    ZooKeeperStore::connect(config).await.expect("connect")
}

async fn fill(backend: &ZooKeeperBackend, keys: usize) {
    let value = Bytes::from_static(b"a value of about thirty bytes..");
    let keys: Vec<String> = (0..keys).map(|i| format!("key-{i:06}")).collect();
    for chunk in keys.chunks(1000) {
        let ops = chunk
            .iter()
            .map(|key| BatchOp::Put {
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        backend.persist_batch(ops).await.expect("fill");
    }
}

async fn mean<F, Fut>(n: u32, mut f: F) -> f64
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = ()>,
{
    let start = Instant::now();
    for i in 0..n {
        f(i).await;
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

async fn delete_tree(client: &zk::Client, path: &str) {
    let mut stack = vec![(path.to_owned(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            let _ = client.delete(&node, None).await;
            continue;
        }
        if let Ok(children) = client.list_children(&node).await {
            stack.push((node.clone(), true));
            let deletes: Vec<_> = children
                .iter()
                .map(|c| {
                    (
                        format!("{node}/{c}"),
                        client.delete(&format!("{node}/{c}"), None),
                    )
                })
                .collect();
            for (child, delete) in deletes {
                if delete.await.is_err() {
                    stack.push((child, false));
                }
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(connect) = std::env::var("DURABLE_TEST_ZOOKEEPER") else {
        eprintln!("skipped: DURABLE_TEST_ZOOKEEPER is not set (run scripts/test.sh)");
        return;
    };
    let namespace = format!("b{}", std::process::id());
    let mut rows = Vec::new();
    let admin = store(&connect).await;

    // 0. One version check (`last_updated`), and the ZooKeeper requests it can be made of,
    //    timed raw on the same session: `exists`, `getData`, and `sync` + `getData` pipelined.
    //    Interleaved in rounds, so that load from elsewhere on the machine hits all alike.
    {
        let b = admin.backend(&namespace, "check").expect("backend");
        b.persist("k", Bytes::from_static(b"v"))
            .await
            .expect("persist");
        let client = admin.zookeeper_client().await.expect("client");
        let path = b.path().to_owned();
        let (rounds, n) = (8, 250);
        let mut totals = [0.0f64; 4];
        for _ in 0..rounds {
            totals[0] += mean(n, |_| async {
                b.last_updated().await.map(drop).expect("last_updated")
            })
            .await;
            totals[1] += mean(n, |_| async {
                client.check_stat(&path).await.expect("exists");
            })
            .await;
            totals[2] += mean(n, |_| async {
                client.get_data(&path).await.expect("get_data");
            })
            .await;
            totals[3] += mean(n, |_| async {
                let synced = client.sync(&path);
                let read = client.get_data(&path);
                synced.await.expect("sync");
                read.await.expect("get_data");
            })
            .await;
        }
        let [check, exists, get, synced] = totals.map(|t| t / f64::from(rounds));
        rows.push(Row {
            name: "version check (last_updated)".into(),
            micros: check,
            note: "the backend's check".into(),
        });
        rows.push(Row {
            name: "raw exists".into(),
            micros: exists,
            note: "one request".into(),
        });
        rows.push(Row {
            name: "raw getData".into(),
            micros: get,
            note: "one request".into(),
        });
        rows.push(Row {
            name: "raw sync + getData, pipelined".into(),
            micros: synced,
            note: format!("the sync costs {:.0} µs", synced - get),
        });
    }

    // 1. A no-change sync: a version check (one round trip) vs trusting a live watch.
    {
        let b = admin.backend(&namespace, "small").expect("backend");
        fill(&b, 100).await;
        let polled: Dict<Vec<u8>, Raw> = Dict::open(
            store(&connect).await.backend(&namespace, "small").unwrap(),
            Raw,
            options(None),
        )
        .await
        .expect("open");
        let watched: Dict<Vec<u8>, Raw> = Dict::open(
            store(&connect).await.backend(&namespace, "small").unwrap(),
            Raw,
            options(Some(Duration::from_secs(3600))),
        )
        .await
        .expect("open");
        watched.sync().await.expect("sync");
        let n = 2000;
        let without = mean(n, |_| async {
            polled.sync().await.map(drop).expect("sync")
        })
        .await;
        let with = mean(n, |_| async {
            watched.sync().await.map(drop).expect("sync")
        })
        .await;
        rows.push(Row {
            name: "no-change sync, version check".into(),
            micros: without,
            note: "one round trip (sync + getData, pipelined)".into(),
        });
        rows.push(Row {
            name: "no-change sync, live watch".into(),
            micros: with,
            note: format!(
                "{:.0}x cheaper; hint_skips={}",
                without / with.max(1e-3),
                watched.stats().hint_skips
            ),
        });
    }

    // 2. A sync after one change vs a full reload, at 1k and 100k keys.
    let sizes: Vec<usize> = std::env::var("DURABLE_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("DURABLE_BENCH_SIZES: numbers"))
        .collect();
    for size in sizes {
        let name = format!("size{size}");
        let writer = admin.backend(&namespace, &name).expect("backend");
        let filled = Instant::now();
        fill(&writer, size).await;
        let fill_secs = filled.elapsed().as_secs_f64();
        let reader = store(&connect).await.backend(&namespace, &name).unwrap();
        let reloads = if size > 10_000 { 3 } else { 20 };
        let reload = mean(reloads, |_| async {
            reader.durables().await.map(drop).expect("load")
        })
        .await;
        let d: Dict<Vec<u8>, Raw> = Dict::open(reader, Raw, options(None)).await.expect("open");
        let n = 100;
        let mut synced = Duration::ZERO;
        for i in 0..n {
            writer
                .persist(&format!("key-{:06}", i % size), Bytes::from(i.to_string()))
                .await
                .expect("persist");
            let start = Instant::now();
            d.sync().await.expect("sync");
            synced += start.elapsed();
        }
        let sync = synced.as_secs_f64() * 1e6 / n as f64;
        let stats = d.stats();
        rows.push(Row {
            name: format!("full reload, {size} keys"),
            micros: reload,
            note: format!("children + pipelined get_data; fill took {fill_secs:.1} s"),
        });
        rows.push(Row {
            name: format!("sync after 1 change, {size} keys"),
            micros: sync,
            note: format!(
                "{:.0}x cheaper than a reload; deltas={} reloads={}",
                reload / sync.max(1e-3),
                stats.deltas,
                stats.reloads
            ),
        });
    }

    // 3. Writes per second: one writer, then four concurrent writers on one key space.
    {
        let b = admin.backend(&namespace, "writes").expect("backend");
        let n = 1000;
        let one = mean(n, |i| {
            let b = &b;
            async move {
                b.persist(&format!("w{}", i % 100), Bytes::from_static(b"v"))
                    .await
                    .expect("persist");
            }
        })
        .await;
        rows.push(Row {
            name: "persist, one writer".into(),
            micros: one,
            note: format!("{:.0} writes/s", 1e6 / one),
        });
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let b = store(&connect).await.backend(&namespace, "writes").unwrap();
            tasks.push(tokio::spawn(async move {
                for i in 0..250 {
                    b.persist(&format!("w{w}-{}", i % 50), Bytes::from_static(b"v"))
                        .await
                        .expect("persist");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let total = start.elapsed().as_secs_f64();
        rows.push(Row {
            name: "persist, 4 concurrent writers".into(),
            micros: total * 1e6 / 1000.0,
            note: format!(
                "{:.0} writes/s in total (version-checked multis retry on conflict)",
                1000.0 / total
            ),
        });
    }

    let client = admin.zookeeper_client().await.expect("client");
    delete_tree(&client, &format!("{ROOT}/{namespace}")).await;

    println!("\n{:<36} {:>12}  notes", "durable-zookeeper", "µs/op");
    for row in &rows {
        println!("{:<36} {:>12.1}  {}", row.name, row.micros, row.note);
    }
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"name\":{:?},\"micros\":{:.1},\"note\":{:?}}}",
                r.name, r.micros, r.note
            )
        })
        .collect();
    let path = std::env::var("DURABLE_BENCH_JSON").unwrap_or_else(|_| {
        concat!(env!("CARGO_TARGET_TMPDIR"), "/durable-zookeeper-bench.json").into()
    });
    if let Err(e) = std::fs::write(&path, format!("[{}]\n", json.join(",\n"))) {
        eprintln!("could not write {path}: {e}");
    } else {
        println!("\nwritten to {path}");
    }
}
