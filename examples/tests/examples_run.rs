//! Runs the examples that need no server (`counters`, `typed_flags`, `cold_start`, and
//! `per_request` on SQLite in memory) as processes and checks what they print.

use std::process::Command;

/// Runs a binary of this crate with `args`, asserts success and returns its standard output.
fn run(binary: &str, args: &[&str]) -> String {
    let output = Command::new(binary)
        .args(args)
        .env_remove("DURABLE_URL")
        .env("RUST_LOG", "off")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{binary} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

fn assert_has(output: &str, expected: &str) {
    assert!(
        output.contains(expected),
        "expected {expected:?} in the output:\n{output}"
    );
}

#[test]
fn counters_on_sqlite_in_memory() {
    let out = run(env!("CARGO_BIN_EXE_counters"), &[]);
    assert_has(&out, "store: sqlite");
    assert_has(&out, "visits = 100 ");
    assert_has(&out, "stock left = 0, sold = 10, refused = 5");
    assert_has(&out, "price after a 10% raise = 110");
    assert_has(
        &out,
        "page views = 100 over 4 shard keys; with 4 shards still 100",
    );
}

#[test]
fn typed_flags_read_defaults_for_absent_and_wrongly_typed_flags() {
    let out = run(env!("CARGO_BIN_EXE_typed_flags"), &[]);
    let lines: Vec<&str> = out.lines().collect();
    let shown: Vec<&str> = lines
        .iter()
        .filter(|line| line.starts_with("  new-checkout="))
        .copied()
        .collect();
    assert_eq!(
        shown,
        [
            "  new-checkout=false max-items=10 theme=light banner=None",
            "  new-checkout=true max-items=25 theme=dark banner=Some(\"Spring sale (green)\")",
            "  new-checkout=true max-items=10 theme=dark banner=Some(\"Spring sale (green)\")",
            "  new-checkout=true max-items=12 theme=dark banner=Some(\"Spring sale (green)\")",
        ],
        "{out}"
    );
    assert_has(
        &out,
        "warning: flag \"max-items\" = \"ten\" is ignored: invalid type: string \"ten\", expected u32",
    );
    assert_eq!(out.matches("warning:").count(), 1, "{out}");
}

#[test]
fn counters_on_the_file_backend() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("files:{}", dir.path().display());
    let out = run(env!("CARGO_BIN_EXE_counters"), &["--url", &url]);
    assert_has(&out, "store: files");
    assert_has(&out, "visits = 100 ");
    assert_has(&out, "stock left = 0, sold = 10, refused = 5");
    // A second run against the same directory starts from a known state again.
    let again = run(env!("CARGO_BIN_EXE_counters"), &["--url", &url]);
    assert_has(&again, "visits = 100 ");
    assert_has(&again, "page views = 100 over 4 shard keys");
}

#[test]
fn cold_start_from_the_backup_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let work = dir.path().to_str().expect("UTF-8 path");
    let out = run(env!("CARGO_BIN_EXE_cold_start"), &["--dir", work]);
    assert_has(&out, "3 settings written, backup saved to");
    assert_has(&out, "without a backup file, open fails");
    assert_has(&out, "from_backup=true, 3 settings, greeting=\"hello\"");
    assert_has(
        &out,
        "sync() while down: sqlite: version check failed, store unavailable",
    );
    assert_has(&out, "a write while down fails and changes nothing");
    assert_has(&out, "health: fresh=false");
    assert_has(
        &out,
        "store is back: from_backup=false, greeting=\"hello again\", health: fresh=true",
    );
    assert!(dir.path().join("settings.backup").exists());
}

#[test]
fn per_request_serves_stale_data_then_503_then_recovers() {
    let out = run(
        env!("CARGO_BIN_EXE_per_request"),
        &["--url", "sqlite::memory:", "--max-staleness", "0.5"],
    );
    let lines: Vec<&str> = out.lines().collect();
    let after = |marker: &str| {
        let at = lines
            .iter()
            .position(|l| l.starts_with(marker))
            .unwrap_or_else(|| panic!("no {marker:?} in:\n{out}"));
        lines[at + 1]
    };
    assert_has(
        after("(another process upgraded acme)"),
        "200 OK {\"plan\":\"enterprise\"",
    );
    // Down, within the max staleness: the last good data, marked stale.
    let stale = after("(the store goes down)");
    assert!(
        stale.contains("-> 200 OK [stale, x-snapshot-age-ms: ") && stale.contains("enterprise"),
        "{out}"
    );
    // Past it: 503 with the age and the store's error.
    let refused = after("(0.6 s later");
    assert!(
        refused.contains("-> 503 Service Unavailable [stale, x-snapshot-age-ms: ")
            && refused.contains("store unavailable"),
        "{out}"
    );
    assert_has(
        after("(the store is back)"),
        "-> 200 OK {\"plan\":\"enterprise\"",
    );
}
