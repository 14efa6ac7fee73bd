//! The conformance suite against MySQL or MariaDB (`DURABLE_TEST_MYSQL_URL`).

mod support;

use support::SqlHarness;

async fn harness() -> Option<SqlHarness> {
    SqlHarness::server("mysql").await
}

mod conformance {
    use super::harness;
    durable_core::conformance_tests!(harness, capabilities = {
        delta: true, push: false, insert_if_absent: true, compare_and_swap: true, pop: true,
        increment: true, batch: true, clear: true, expiry: true, stamps: true,
    });
}
