//! The conformance suite against PostgreSQL (`DURABLE_TEST_POSTGRES_URL`).

mod support;

use support::SqlHarness;

async fn harness() -> Option<SqlHarness> {
    SqlHarness::server("postgres").await
}

mod conformance {
    use super::harness;
    durable_core::conformance_tests!(harness, capabilities = {
        delta: true, push: true, insert_if_absent: true, compare_and_swap: true, pop: true,
        increment: true, batch: true, clear: true, expiry: true, stamps: true,
    });
}
