//! The durable conformance suite against one Redis server (`DURABLE_TEST_REDIS_URL`).

mod common;

async fn harness() -> Option<common::SingleHarness> {
    let url = durable_core::conformance::server_from_env("DURABLE_TEST_REDIS_URL")?;
    Some(common::SingleHarness::new(url))
}

durable_core::conformance_tests!(harness, capabilities = {
    delta: true, push: true, insert_if_absent: true, compare_and_swap: true, pop: true,
    increment: true, batch: true, clear: true, expiry: true, stamps: true,
});
