//! The sharded-counter property with the Redis server restarted in the middle (`SHUTDOWN SAVE`
//! and start again through `DURABLE_TEST_REDIS_CTL`). A binary of its own: nothing else may use
//! the server while it restarts.

mod common;

use durable_core::conformance::server_from_env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_counter_total_survives_a_restart() {
    let harness = server_from_env("DURABLE_TEST_REDIS_URL").and_then(|url| {
        let ctl = server_from_env("DURABLE_TEST_REDIS_CTL")?;
        Some(common::SingleHarness {
            url,
            ctl: Some(ctl),
        })
    });
    durable_core::conformance::run(harness, |ctx| async move {
        durable_core::conformance::sharded_counter_total_matches_acknowledged_increments(&ctx).await
    })
    .await;
}
