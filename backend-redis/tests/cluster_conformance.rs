//! The durable conformance suite against a three-master Redis Cluster
//! (`DURABLE_TEST_REDIS_CLUSTER_URLS`, comma-separated node URLs).

mod common;

async fn harness() -> Option<common::ClusterHarness> {
    let urls = durable_core::conformance::server_from_env("DURABLE_TEST_REDIS_CLUSTER_URLS")?;
    Some(common::ClusterHarness::from_env_value(&urls))
}

durable_core::conformance_tests!(harness, capabilities = {
    delta: true, push: true, insert_if_absent: true, compare_and_swap: true, pop: true,
    increment: true, batch: true, clear: true, expiry: true, stamps: true,
});
