//! Rules for [`ShardedCounter`](crate::ShardedCounter) over the backend.

use std::sync::Arc;
use std::time::Duration;

use super::{Ctx, entries, options, require_counting};
use crate::{Error, Mode, ShardedCounter};

/// A sharded counter's value is the sum of its shards, the same from every handle, with at most
/// one key per shard.
pub async fn sharded_counter_sums_its_shards(ctx: &Ctx) {
    require_counting(ctx);
    let a = ctx.counters("sharded", Mode::Manual).await;
    let b = ctx.counters("sharded", Mode::Manual).await;
    let on_a = ShardedCounter::new(&a, "views", 16).expect("counter");
    let on_b = ShardedCounter::new(&b, "views", 16).expect("counter");
    let mut expected = 0;
    for i in 0..40 {
        on_a.increment(i).await.expect("increment");
        expected += i;
    }
    for writer in 0..20 {
        on_b.increment_as(writer, -1).await.expect("increment_as");
        expected -= 1;
    }
    assert_eq!(on_a.sync().await.expect("sync"), expected);
    assert_eq!(on_b.sync().await.expect("sync"), expected);
    b.insert("views#x", 1000).await.expect("insert");
    b.insert("viewsfoo", 1000).await.expect("insert");
    assert_eq!(on_b.value(), expected, "other keys are not shards");
    let stored = entries(&*ctx.backend("sharded").await).await;
    let shards = stored
        .keys()
        .filter(|k| *k == "views" || k.starts_with("views#") && k[6..].parse::<u32>().is_ok())
        .count();
    assert!((2..=16).contains(&shards), "{shards} shard keys");
    assert!(ShardedCounter::new(&a, "bad#name", 4).is_err());
    assert!(ShardedCounter::new(&a, "views", 0).is_err());
}

/// Changing the shard count keeps the total, whichever handle uses which count.
pub async fn sharded_counter_keeps_total_when_resharded(ctx: &Ctx) {
    require_counting(ctx);
    let a = ctx.counters("reshard", Mode::Manual).await;
    let b = ctx.counters("reshard", Mode::Manual).await;
    a.increment("hits", 5).await.expect("a plain counter");
    let wide = ShardedCounter::new(&a, "hits", 16).expect("counter");
    assert_eq!(wide.value(), 5, "a plain counter is shard 0");
    for writer in 0..16 {
        wide.increment_as(writer, 2).await.expect("increment");
    }
    assert_eq!(wide.value(), 37);
    let narrow = wide.with_shards(2).expect("reshard");
    assert_eq!(narrow.value(), 37, "fewer shards, same total");
    narrow.increment(3).await.expect("increment");
    let other = ShardedCounter::new(&b, "hits", 64).expect("counter");
    other.increment_as(63, 10).await.expect("increment");
    assert_eq!(other.sync().await.expect("sync"), 50);
    assert_eq!(narrow.sync().await.expect("sync"), 50);
}

/// Removing a sharded counter deletes every shard in one atomic step, leaving other keys alone.
pub async fn sharded_counter_remove_deletes_every_shard_at_once(ctx: &Ctx) {
    require_counting(ctx);
    ctx.require(ctx.capabilities().batch, "batch");
    let a = ctx.counters("shard-rm", Mode::Manual).await;
    let b = ctx.counters("shard-rm", Mode::Manual).await;
    let counter = ShardedCounter::new(&a, "jobs", 8).expect("counter");
    for writer in 0..8 {
        counter.increment_as(writer, 1).await.expect("increment");
    }
    let wider = ShardedCounter::new(&b, "jobs", 32).expect("counter");
    wider.increment_as(31, 1).await.expect("a shard beyond 8");
    b.insert("jobs-done", 7).await.expect("insert");
    let before = a.sync().await.expect("sync").version();
    let version = counter.remove().await.expect("remove").expect("a bump");
    assert_eq!(version.counter(), before.counter() + 1, "one atomic step");
    assert_eq!(counter.value(), 0);
    let stored = entries(&*ctx.backend("shard-rm").await).await;
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["jobs-done"]);
    assert_eq!(wider.sync().await.expect("sync"), 0);
    assert_eq!(
        counter.remove().await.expect("remove"),
        None,
        "nothing left"
    );
}

/// Property: the total of a sharded counter equals the sum of the increments the store
/// acknowledged, for many concurrent tasks with random deltas and shards, with the store's server
/// restarted once in the middle where the harness can
/// ([`Harness::restart`](super::Harness::restart)). An increment that failed (only `Unavailable`
/// or `Timeout` are allowed, and only around a restart) may or may not have been applied before
/// the connection dropped, so it widens the bound by its delta; one refused with `Contention`
/// (optimistic stores under load) wrote nothing.
pub async fn sharded_counter_total_matches_acknowledged_increments(ctx: &Ctx) {
    require_counting(ctx);
    let seed: u64 = rand::random();
    eprintln!("sharded counter property: seed {seed}");
    let (tasks, each, shards) = (16u64, 40u64, 16u32);
    let options = options(Mode::Manual)
        .with_timeout(Duration::from_secs(5))
        .with_max_update_attempts(1000);
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut handles = Vec::new();
    for task in 0..tasks {
        let dict = ctx.counters_with("shard-prop", options.clone()).await;
        let progress = progress.clone();
        handles.push(tokio::spawn(async move {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ task);
            let counter = ShardedCounter::new(&dict, "total", shards).expect("counter");
            let (mut acknowledged, mut unknown, mut failed) = (0i64, 0i64, 0u64);
            for _ in 0..each {
                let delta = rng.random_range(1..=100);
                let result = if rng.random_bool(0.5) {
                    counter.increment(delta).await
                } else {
                    counter.increment_as(rng.random(), delta).await
                };
                match result {
                    Ok(()) => acknowledged += delta,
                    // Refused after too many optimistic attempts: nothing was written.
                    Err(Error::Contention { .. }) => {}
                    Err(error) => {
                        // The connection may have dropped after the store applied it.
                        assert!(error.is_unavailable(), "increment failed with {error:?}");
                        unknown += delta;
                        failed += 1;
                        // Back off while the server restarts, as a client would.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            (acknowledged, unknown, failed)
        }));
    }
    let total_ops = tasks * each;
    while progress.load(std::sync::atomic::Ordering::SeqCst) < total_ops / 3 {
        // The poll interval (the tasks above end the loop).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let restarted = ctx.restart().await;
    let (mut acknowledged, mut unknown, mut failed) = (0, 0, 0);
    for handle in handles {
        let (a, u, f) = handle.await.expect("task");
        acknowledged += a;
        unknown += u;
        failed += f;
    }
    eprintln!(
        "restarted: {restarted}, acknowledged {acknowledged}, unknown {unknown}, {failed} failed"
    );
    if !restarted {
        assert_eq!(
            (unknown, failed),
            (0, 0),
            "increments failed without a restart"
        );
    }
    let reader = ctx.counters("shard-prop", Mode::Manual).await;
    let total = ShardedCounter::new(&reader, "total", 1)
        .expect("counter")
        .value();
    assert!(
        acknowledged <= total && total <= acknowledged + unknown,
        "total {total}, acknowledged {acknowledged}, unknown outcome {unknown} (seed {seed})"
    );
    assert!(acknowledged > 0);
}
