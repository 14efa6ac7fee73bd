//! The durable conformance suite against the durabledict-compatible layout on one server
//! (`DURABLE_TEST_REDIS_URL`): every rule that applies to a layout without epochs or stamps.
//!
//! Left out, as limits of the layout documented in the crate docs: `wipe_is_detected` (no
//! epoch: a keyspace deleted and written again repeats its old tokens, as Python durabledict
//! does) and `load_is_consistent_with_its_token` (entries carry no revision of their own: a
//! load gives every entry the counter's value; the entries themselves do match the token). Rules
//! needing a capability the layout lacks (delta, push, compare-and-swap, expiry, stamps) skip
//! themselves.

mod common;

async fn harness() -> Option<common::CompatHarness> {
    let url = durable_core::conformance::server_from_env("DURABLE_TEST_REDIS_URL")?;
    Some(common::CompatHarness { url })
}

durable_core::conformance_tests!(@rules harness;
    version_is_stable_without_writes,
    version_changes_on_every_write,
    writes_step_the_counter_by_one,
    no_op_writes_bump_nothing,
    restore_is_detected,
    restore_then_writes_past_old_counter_is_detected,
    restore_keeps_read_your_writes,
    damaged_version_record_is_a_wipe_or_writes_nothing,
    bad_rows_cost_their_key_only,
    round_trip_binary,
    round_trip_empty,
    round_trip_unicode,
    round_trip_large,
    keys_are_arbitrary_strings,
    overwrite_replaces_value,
    depersist_removes_key,
    missing_key_is_absent,
    two_handles_manual_mode,
    two_handles_autosync_mode,
    delta_reports_inserts_updates_and_deletes,
    delta_of_current_token_is_empty,
    delta_falls_back_when_too_old,
    insert_if_absent_keeps_existing,
    compare_and_swap_checks_revision,
    concurrent_compare_and_swap_has_one_winner,
    pop_returns_and_deletes,
    increment_adds_atomically,
    increment_rejects_non_integers,
    concurrent_increments_lose_nothing,
    batch_writes_all_keys_with_one_bump,
    batch_is_all_or_nothing,
    clear_deletes_everything,
    push_hint_follows_a_write,
    unavailable_store_gives_typed_errors,
    read_your_writes,
    expiring_entry_carries_its_expiry,
    store_clock_is_close,
    sweep_removes_only_expired_entries,
    expired_entry_is_hidden_by_every_handle,
    writes_sweep_expired_entries_lazily,
    expired_key_is_absent_for_conditional_writes,
    set_insert_remove_contains,
    set_batch_is_one_atomic_step,
    sharded_counter_sums_its_shards,
    sharded_counter_keeps_total_when_resharded,
    sharded_counter_remove_deletes_every_shard_at_once,
    sharded_counter_total_matches_acknowledged_increments,
);
