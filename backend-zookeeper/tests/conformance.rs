//! The durable-core conformance suite against the ZooKeeper in `DURABLE_TEST_ZOOKEEPER`.

mod common;

durable_core::conformance_tests!(common::harness, capabilities = {
    delta: true, push: true, insert_if_absent: true, compare_and_swap: true, pop: true,
    increment: true, batch: true, clear: true, expiry: true, stamps: true,
});
