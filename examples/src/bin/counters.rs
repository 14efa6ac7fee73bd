//! Counters and compare-and-swap, against any store.
//!
//! ```sh
//! cargo run -p durable-examples --bin counters                                  # SQLite in memory
//! cargo run -p durable-examples --bin counters -- --url redis://127.0.0.1:6379/
//! cargo run -p durable-examples --bin counters -- --url files:/tmp/durable-files
//! ```
//!
//! Several handles on one dictionary stand for several processes:
//!
//! 1. `increment`: four workers add 25 each, concurrently; none of the 100 increments is lost
//!    (a native atomic increment, or a compare-and-swap loop on stores without one).
//! 2. `compare_and_swap`: fifteen buyers race for ten items in stock; each reads the stock and
//!    its revision, and writes `stock - 1` only if nobody wrote in between, retrying on a
//!    conflict. Exactly ten sales succeed and the stock never goes below zero.
//! 3. `update`: the same read-modify-write loop as a closure.
//! 4. `ShardedCounter`: the same four workers on a counter spread over 16 keys; its value is the
//!    sum of the shards in the snapshot, and changing the shard count keeps it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use clap::Parser;
use durable::{Cas, Dict, Json, Options, Result, ShardedCounter};
use durable_examples::ExampleStore;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Counters and compare-and-swap on a durable dictionary")]
struct Args {
    /// The store: sqlite::memory:, memory:, sqlite://FILE, redis://, postgres://, mysql://,
    /// zk://, files:DIR
    #[arg(long, env = "DURABLE_URL", default_value = "sqlite::memory:")]
    url: String,
    /// Namespace of the dictionary.
    #[arg(long, default_value = "examples")]
    namespace: String,
}

const WORKERS: i64 = 4;
const INCREMENTS: i64 = 25;
const STOCK: i64 = 10;
const BUYERS: u32 = 15;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    durable_examples::init_logging("warn");
    let store = ExampleStore::connect(&args.url).await?;
    let open = || store.open::<i64, _>(&args.namespace, "counters", Json, Options::new());
    let counters: Dict<i64> = open().await?;
    println!(
        "store: {} (capabilities: increment={}, compare_and_swap={})",
        counters.backend_name(),
        counters.capabilities().increment,
        counters.capabilities().compare_and_swap
    );
    // Start from a known state, so that runs against a persistent store repeat.
    for key in ["visits", "stock", "sold", "price"] {
        counters.remove(key).await?;
    }
    ShardedCounter::new(&counters, "page-views", 16)?
        .remove()
        .await?;

    // 1. Increments from several handles ("processes") at once.
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let worker = open().await?;
        workers.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                worker.increment("visits", 1).await?;
            }
            Ok::<_, durable::Error>(())
        }));
    }
    for worker in workers {
        worker.await.expect("worker task")?;
    }
    let visits = counters.sync().await?.get("visits").copied();
    println!(
        "visits = {} ({WORKERS} workers x {INCREMENTS} increments, none lost)",
        visits.unwrap_or(0)
    );

    // 2. Compare-and-swap: sell the last items exactly once each.
    counters.insert("stock", STOCK).await?;
    let sold = Arc::new(AtomicU32::new(0));
    let refused = Arc::new(AtomicU32::new(0));
    let mut buyers = Vec::new();
    for _ in 0..BUYERS {
        let buyer = open().await?;
        let (sold, refused) = (sold.clone(), refused.clone());
        buyers.push(tokio::spawn(async move {
            if buy_one(&buyer).await? {
                sold.fetch_add(1, Ordering::SeqCst);
            } else {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, durable::Error>(())
        }));
    }
    for buyer in buyers {
        buyer.await.expect("buyer task")?;
    }
    let stock = counters.sync().await?.get("stock").copied().unwrap_or(0);
    println!(
        "stock left = {stock}, sold = {}, refused = {} ({BUYERS} buyers, {STOCK} items)",
        sold.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst)
    );

    // 3. The same loop as a closure: `update` retries on conflicts for you.
    counters.insert("price", 100).await?;
    let price = counters
        .update("price", |price| price.map(|p| p * 11 / 10))
        .await?;
    println!(
        "price after a 10% raise = {}",
        price.as_deref().copied().unwrap_or(0)
    );

    // 4. A sharded counter: each worker keeps to its own shard, so they never write one key.
    let mut workers = Vec::new();
    for writer in 0..WORKERS {
        let views = ShardedCounter::new(&open().await?, "page-views", 16)?;
        workers.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                views.increment_as(writer as u64, 1).await?;
            }
            Ok::<_, durable::Error>(())
        }));
    }
    for worker in workers {
        worker.await.expect("worker task")?;
    }
    let views = ShardedCounter::new(&counters, "page-views", 16)?;
    let total = views.sync().await?;
    let shards = counters
        .snapshot()
        .keys()
        .filter(|k| k.starts_with("page-views"))
        .count();
    let fewer = views.with_shards(4)?;
    println!(
        "page views = {total} over {shards} shard keys; with 4 shards still {}",
        fewer.value()
    );
    Ok(())
}

/// Takes one item from `stock` with compare-and-swap; false when sold out.
async fn buy_one(dict: &Dict<i64>) -> Result<bool> {
    // What this handle believes: the stock and the revision that wrote it.
    let mut seen = dict.sync().await?.get_versioned("stock");
    loop {
        let Some(current) = seen else {
            return Ok(false);
        };
        if *current.value <= 0 {
            return Ok(false);
        }
        let left = *current.value - 1;
        match dict
            .compare_and_swap("stock", Some(current.revision), Some(left))
            .await?
        {
            Cas::Swapped { .. } => return Ok(true),
            // Someone else bought meanwhile: retry from the entry as it is now, no extra read.
            Cas::Conflict { current } => seen = current,
        }
    }
}
