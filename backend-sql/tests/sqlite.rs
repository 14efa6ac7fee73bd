//! The conformance suite against SQLite: a database file (each backend with its own pool, as
//! separate processes would) and an in-memory database.

mod support;

mod file {
    use super::support::SqlHarness;

    async fn harness() -> Option<SqlHarness> {
        Some(SqlHarness::sqlite_file().await)
    }

    durable_core::conformance_tests!(harness, capabilities = {
        delta: true, push: false, insert_if_absent: true, compare_and_swap: true, pop: true,
        increment: true, batch: true, clear: true, expiry: true, stamps: true,
    });
}

mod memory {
    use super::support::SqlHarness;

    async fn harness() -> Option<SqlHarness> {
        Some(SqlHarness::sqlite_memory().await)
    }

    durable_core::conformance_tests!(harness, capabilities = {
        delta: true, push: false, insert_if_absent: true, compare_and_swap: true, pop: true,
        increment: true, batch: true, clear: true, expiry: true, stamps: true,
    });
}
