//! The durable conformance suite against one Redis server (`DURABLE_TEST_REDIS_URL`).

mod common;

async fn harness() -> Option<common::SingleHarness> {
    let url = durable_core::conformance::server_from_env("DURABLE_TEST_REDIS_URL")?;
    Some(common::SingleHarness::new(url))
}

durable_core::conformance_tests!(harness);
