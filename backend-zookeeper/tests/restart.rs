//! The sharded-counter property with the ZooKeeper in `DURABLE_TEST_ZOOKEEPER` restarted in the
//! middle (through `DURABLE_TEST_ZOOKEEPER_CTL`): a binary of its own, since the restart takes
//! the server away from every test running meanwhile.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_counter_total_matches_acknowledged_increments_across_a_restart() {
    durable_core::conformance::run(common::restartable_harness().await, |ctx| async move {
        durable_core::conformance::sharded_counter_total_matches_acknowledged_increments(&ctx).await
    })
    .await;
}
