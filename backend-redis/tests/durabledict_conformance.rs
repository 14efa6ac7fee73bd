//! The durable conformance suite against the durabledict-compatible layout on one server
//! (`DURABLE_TEST_REDIS_URL`): every rule that applies to a layout without epochs or stamps.
//!
//! Listed as ignored, as limits of the layout documented in the crate docs: `wipe_is_detected`
//! (no epoch: a keyspace deleted and written again repeats its old tokens, as Python durabledict
//! does) and `load_is_consistent_with_its_token` (entries carry no revision of their own: a
//! load gives every entry the counter's value; the entries themselves do match the token). Rules
//! needing a capability the layout lacks (delta, push, compare-and-swap, expiry, stamps) are
//! listed as ignored too, with the capability as the reason.

mod common;

async fn harness() -> Option<common::CompatHarness> {
    let url = durable_core::conformance::server_from_env("DURABLE_TEST_REDIS_URL")?;
    Some(common::CompatHarness { url })
}

durable_core::conformance_tests!(harness, capabilities = {
    delta: false, push: false, insert_if_absent: true, compare_and_swap: false, pop: true,
    increment: true, batch: true, clear: true, expiry: false, stamps: false,
}, except = {
    wipe_is_detected: "no epoch in this layout: a wiped keyspace written again repeats tokens",
    load_is_consistent_with_its_token: "no revision per entry in this layout",
});
