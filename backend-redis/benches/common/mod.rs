//! Set-up shared by the Redis benchmarks: the server from the environment, the sizes, the fill.

use durable_core::{Backend, BatchOp};
use durable_redis::RedisBackend;

/// The server to measure: `DURABLE_BENCH_REDIS_URL`, else `DURABLE_TEST_REDIS_URL`.
pub(crate) fn single_url() -> Option<String> {
    std::env::var("DURABLE_BENCH_REDIS_URL")
        .or_else(|_| std::env::var("DURABLE_TEST_REDIS_URL"))
        .ok()
}

/// The dictionary sizes: `DURABLE_BENCH_SIZES` (comma-separated), else `default`.
pub(crate) fn sizes(default: &[usize]) -> Vec<usize> {
    std::env::var("DURABLE_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// Writes keys `flag:0` .. `flag:{n-1}` (value: the number) in batches of 5,000.
pub(crate) async fn fill(backend: &RedisBackend, n: usize) {
    let mut i = 0;
    while i < n {
        let end = (i + 5000).min(n);
        let ops = (i..end)
            .map(|k| BatchOp::Put {
                key: format!("flag:{k}"),
                value: k.to_string().into(),
            })
            .collect();
        backend.persist_batch(ops).await.expect("fill");
        i = end;
    }
}
