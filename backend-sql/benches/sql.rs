//! Per database: a no-change `sync()` vs the same check as a raw query; `sync()` after one
//! change (delta) vs a full reload at several sizes; sequential vs batched writes.
//!
//! `cargo bench -p durable-sql --all-features --bench sql`. SQLite always runs (a temporary
//! file); PostgreSQL and MySQL run when `DURABLE_TEST_POSTGRES_URL` / `DURABLE_TEST_MYSQL_URL`
//! are set. Sizes: `DURABLE_BENCH_SIZES` (default `1000,100000`; add `1000000` for the 1M row).
//! Prints a table and writes `target/durable-sql-bench.json`.

use std::time::{Duration, Instant};

use durable_core::bytes::Bytes;
use durable_core::{Backend, BatchOp, Dict, Mode, Options, Raw};
use durable_sql::{MySqlStore, PostgresStore, SqlOptions, SqliteStore, sqlx};

enum Store {
    Pg(PostgresStore),
    My(MySqlStore),
    Lite(SqliteStore),
}

impl Store {
    fn backend(&self, ns: &str, dict: &str) -> Box<dyn Backend> {
        match self {
            Store::Pg(s) => Box::new(s.backend(ns, dict).unwrap()),
            Store::My(s) => Box::new(s.backend(ns, dict).unwrap()),
            Store::Lite(s) => Box::new(s.backend(ns, dict).unwrap()),
        }
    }

    /// The version check as a hand-written query.
    async fn raw_check(&self, ns: &str, dict: &str) {
        match self {
            Store::Pg(s) => {
                let sql = format!(
                    "SELECT epoch, counter FROM {} WHERE namespace = $1 AND dictionary = $2",
                    s.versions_table()
                );
                let _: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(ns)
                    .bind(dict)
                    .fetch_one(s.pool())
                    .await
                    .unwrap();
            }
            Store::My(s) => {
                let sql = format!(
                    "SELECT epoch, counter FROM {} WHERE namespace = ? AND dictionary = ?",
                    s.versions_table()
                );
                let _: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(ns)
                    .bind(dict)
                    .fetch_one(s.pool())
                    .await
                    .unwrap();
            }
            Store::Lite(s) => {
                let sql = format!(
                    "SELECT epoch, counter FROM {} WHERE namespace = ? AND dictionary = ?",
                    s.versions_table()
                );
                let _: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(ns)
                    .bind(dict)
                    .fetch_one(s.pool())
                    .await
                    .unwrap();
            }
        }
    }
}

fn options() -> Options {
    Options::new()
        .with_mode(Mode::Manual)
        .with_timeout(Duration::from_secs(600))
        .with_open_timeout(Duration::from_secs(600))
        .with_trust_hints_for(None)
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("value-{i:010}"))
}

async fn fill(backend: &dyn Backend, n: usize) {
    for start in (0..n).step_by(1000) {
        let ops = (start..(start + 1000).min(n))
            .map(|i| BatchOp::Put {
                key: format!("key-{i:08}"),
                value: value(i),
            })
            .collect();
        backend.persist_batch(ops).await.unwrap();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn bench(name: &str, store: Store, sizes: &[usize], json: &mut Vec<String>) {
    let ns = format!("bench{:08x}", rand::random::<u32>());
    println!("\n== {name}");

    // 1. No-change sync vs the raw query.
    let writer = store.backend(&ns, "small");
    writer.persist("k", value(0)).await.unwrap();
    let d: Dict<Vec<u8>, Raw> = Dict::open(store.backend(&ns, "small"), Raw, options())
        .await
        .unwrap();
    let n = 2000;
    for _ in 0..100 {
        d.sync().await.unwrap();
        store.raw_check(&ns, "small").await;
    }
    let t = Instant::now();
    for _ in 0..n {
        d.sync().await.unwrap();
    }
    let sync = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        store.raw_check(&ns, "small").await;
    }
    let raw = t.elapsed() / n;
    println!(
        "no-change sync(): {:8.1} us   raw query: {:8.1} us   ratio {:.2}",
        us(sync),
        us(raw),
        sync.as_secs_f64() / raw.as_secs_f64()
    );
    json.push(format!(
        "{{\"db\":\"{name}\",\"what\":\"nochange\",\"sync_us\":{:.1},\"raw_us\":{:.1}}}",
        us(sync),
        us(raw)
    ));

    // 2. One change: delta vs full reload.
    for &size in sizes {
        let dict = format!("size{size}");
        let writer = store.backend(&ns, &dict);
        let t = Instant::now();
        fill(&*writer, size).await;
        let filled = t.elapsed();
        let t = Instant::now();
        let d: Dict<Vec<u8>, Raw> = Dict::open(store.backend(&ns, &dict), Raw, options())
            .await
            .unwrap();
        let first = t.elapsed();
        let mut deltas = Vec::new();
        for i in 0..15 {
            writer
                .persist(&format!("key-{:08}", i * 7), value(i))
                .await
                .unwrap();
            let t = Instant::now();
            d.sync().await.unwrap();
            deltas.push(t.elapsed());
        }
        let mut fulls = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let reloaded: Dict<Vec<u8>, Raw> =
                Dict::open(store.backend(&ns, &dict), Raw, options())
                    .await
                    .unwrap();
            fulls.push(t.elapsed());
            assert_eq!(reloaded.snapshot().len(), size);
        }
        let (delta, full) = (median(deltas), median(fulls).min(first));
        println!(
            "{size:>8} keys: sync() after one change {:9.3} ms   full reload {:9.1} ms   ratio 1:{:.0}   (filled in {:.1} s)",
            delta.as_secs_f64() * 1e3,
            full.as_secs_f64() * 1e3,
            full.as_secs_f64() / delta.as_secs_f64(),
            filled.as_secs_f64()
        );
        json.push(format!(
            "{{\"db\":\"{name}\",\"what\":\"delta\",\"keys\":{size},\"delta_ms\":{:.3},\"full_ms\":{:.1}}}",
            delta.as_secs_f64() * 1e3,
            full.as_secs_f64() * 1e3
        ));
    }

    // 3. Writes: sequential vs one batch of 1000 keys.
    let w = store.backend(&ns, "writes");
    let n = 300;
    let t = Instant::now();
    for i in 0..n {
        w.persist(&format!("s{i}"), value(i)).await.unwrap();
    }
    let seq = n as f64 / t.elapsed().as_secs_f64();
    let mut batches = Vec::new();
    for round in 0..5 {
        let ops = (0..1000)
            .map(|i| BatchOp::Put {
                key: format!("b{i}"),
                value: value(i + round),
            })
            .collect();
        let t = Instant::now();
        w.persist_batch(ops).await.unwrap();
        batches.push(t.elapsed());
    }
    let batch = median(batches);
    let batched = 1000.0 / batch.as_secs_f64();
    println!(
        "writes: sequential {seq:8.0} keys/s ({:.2} ms each)   batch of 1000 in {:.1} ms = {batched:8.0} keys/s   ratio {:.0}x",
        1e3 / seq,
        batch.as_secs_f64() * 1e3,
        batched / seq
    );
    json.push(format!(
        "{{\"db\":\"{name}\",\"what\":\"writes\",\"sequential_per_s\":{seq:.0},\"batch1000_ms\":{:.2}}}",
        batch.as_secs_f64() * 1e3
    ));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::var("DURABLE_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("DURABLE_BENCH_SIZES: numbers"))
        .collect();
    let mut json = Vec::new();
    let prefix = format!("bench_{:08x}", rand::random::<u32>());
    let options = SqlOptions::new().with_table_prefix(&prefix);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let lite = SqliteStore::connect_with(&url, options.clone())
        .await
        .unwrap();
    bench("sqlite", Store::Lite(lite), &sizes, &mut json).await;

    if let Ok(url) = std::env::var("DURABLE_TEST_POSTGRES_URL") {
        let pg = PostgresStore::connect_with(&url, options.clone())
            .await
            .unwrap();
        bench("postgres", Store::Pg(pg.clone()), &sizes, &mut json).await;
        drop_tables_pg(&pg).await;
    }
    if let Ok(url) = std::env::var("DURABLE_TEST_MYSQL_URL") {
        let my = MySqlStore::connect_with(&url, options.clone())
            .await
            .unwrap();
        bench("mysql", Store::My(my.clone()), &sizes, &mut json).await;
        for t in [my.entries_table(), my.versions_table(), my.stamps_table()] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {t}")))
                .execute(my.pool())
                .await
                .unwrap();
        }
    }
    let out = format!("[\n{}\n]\n", json.join(",\n"));
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/durable-sql-bench.json");
    if std::fs::write(&path, out).is_ok() {
        println!("\nwrote {}", path.display());
    }
}

async fn drop_tables_pg(pg: &PostgresStore) {
    for t in [pg.entries_table(), pg.versions_table(), pg.stamps_table()] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {t}")))
            .execute(pg.pool())
            .await
            .unwrap();
    }
}
