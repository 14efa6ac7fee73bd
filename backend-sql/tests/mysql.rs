//! The conformance suite against MySQL or MariaDB (`DURABLE_TEST_MYSQL_URL`).

mod support;

use support::SqlHarness;

async fn harness() -> Option<SqlHarness> {
    SqlHarness::server("mysql").await
}

mod conformance {
    use super::harness;
    durable_core::conformance_tests!(harness);
}
