//! The conformance suite against SQLite: a database file (each backend with its own pool, as
//! separate processes would) and an in-memory database.

mod support;

mod file {
    use super::support::SqlHarness;

    async fn harness() -> Option<SqlHarness> {
        Some(SqlHarness::sqlite_file().await)
    }

    durable_core::conformance_tests!(harness);
}

mod memory {
    use super::support::SqlHarness;

    async fn harness() -> Option<SqlHarness> {
        Some(SqlHarness::sqlite_memory().await)
    }

    durable_core::conformance_tests!(harness);
}
