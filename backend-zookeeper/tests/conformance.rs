//! The durable-core conformance suite against the ZooKeeper in `DURABLE_TEST_ZOOKEEPER`.

mod common;

durable_core::conformance_tests!(common::harness);
