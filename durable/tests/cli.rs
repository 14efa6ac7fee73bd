//! The `durable` command end to end, as a process: SQLite in every run, and each server the test
//! command starts.

use std::io::{BufRead, BufReader};
use std::process::{Command as Std, Stdio};

use assert_cmd::Command;
use durable_core::conformance::server_from_env;
use serde_json::{Value, json};

/// `durable --url URL -n NAMESPACE ARGS...`: (exit code, stdout, stderr).
fn durable(url: &str, namespace: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::cargo_bin("durable")
        .unwrap()
        .args(["--url", url, "-n", namespace])
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8(output.stdout).unwrap();
    let err = String::from_utf8(output.stderr).unwrap();
    assert!(
        !err.contains("panicked"),
        "panic output reached the user: {err}"
    );
    (output.status.code().unwrap_or(-1), out, err)
}

fn ok(url: &str, namespace: &str, args: &[&str]) -> String {
    let (code, out, err) = durable(url, namespace, args);
    assert_eq!(code, 0, "durable {args:?} failed: {err}");
    out
}

/// A namespace of its own for each test run.
fn namespace() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("cli{}", std::process::id() ^ nanos)
}

/// The editing commands against one store.
fn edit_round_trip(url: &str) {
    let ns = &namespace();
    ok(url, ns, &["set", "beta", "true"]);
    ok(url, ns, &["set", "limits", r#"{"rps": 10}"#]);
    ok(url, ns, &["set", "--raw", "motd", "hello world"]);
    assert_eq!(ok(url, ns, &["get", "beta"]), "true\n");
    assert_eq!(ok(url, ns, &["get", "motd"]), "hello world\n");
    let listed: Value = serde_json::from_str(&ok(url, ns, &["list", "--json"])).unwrap();
    assert_eq!(
        listed,
        json!({"beta": true, "limits": {"rps": 10}, "motd": "hello world"})
    );
    assert!(ok(url, ns, &["list"]).contains("(3 entries"));

    assert_eq!(ok(url, ns, &["incr", "hits", "5"]), "5\n");
    assert_eq!(ok(url, ns, &["incr", "hits", "-2"]), "3\n");

    let revision = ok(url, ns, &["get", "--revision", "beta"]);
    let revision = revision.split('\t').next().unwrap();
    assert!(ok(url, ns, &["cas", "beta", "--expect", revision, "false"]).starts_with("swapped"));
    let (code, _, err) = durable(url, ns, &["cas", "beta", "--expect", revision, "true"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("durable: conflict: \"beta\" is now"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    ok(url, ns, &["del", "motd"]);
    let (code, _, err) = durable(url, ns, &["del", "motd"]);
    assert_eq!(
        (code, err.trim()),
        (1, "durable: key \"motd\" not found in default")
    );

    let (code, _, err) = durable(url, ns, &["set", "x", "not json"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is not JSON") && err.contains("--raw"),
        "{err}"
    );

    let stats: Value = serde_json::from_str(&ok(url, ns, &["stats"])).unwrap();
    assert_eq!(stats["entries"], json!(3));
    // Every counter of `Stats`, including checks that found the store gone back in time.
    for counter in [
        "checks",
        "reloads",
        "deltas",
        "regressions",
        "writes",
        "errors",
    ] {
        assert!(stats[counter].is_u64(), "no counter {counter:?} in {stats}");
    }
    assert_eq!(stats["regressions"], json!(0));
    let health: Value = serde_json::from_str(&ok(url, ns, &["health"])).unwrap();
    assert_eq!(health["fresh"], json!(true));

    // Export, then import into another dictionary of the same store: identical content.
    let exported = ok(url, ns, &["export"]);
    assert_eq!(exported.lines().count(), 3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.jsonl");
    std::fs::write(&file, &exported).unwrap();
    ok(url, ns, &["-d", "copy", "import", file.to_str().unwrap()]);
    assert_eq!(ok(url, ns, &["-d", "copy", "export"]), exported);

    // Expiring entries: hidden once expired, removed by a sweep.
    ok(
        url,
        ns,
        &["-d", "ttl", "set", "--ttl", "3600", "session", "1"],
    );
    ok(url, ns, &["-d", "ttl", "set", "--ttl", "0", "gone", "2"]);
    assert_eq!(ok(url, ns, &["-d", "ttl", "get", "session"]), "1\n");
    let (code, _, _) = durable(url, ns, &["-d", "ttl", "get", "gone"]);
    assert_eq!(code, 1, "an expired entry is not found");
    // The `set` process may already have swept it (writes sweep expired entries lazily).
    let first = ok(url, ns, &["-d", "ttl", "sweep"]);
    assert!(first == "1\n" || first == "0\n", "{first}");
    assert_eq!(ok(url, ns, &["-d", "ttl", "sweep"]), "0\n");
    let export = ok(url, ns, &["-d", "ttl", "export"]);
    assert_eq!(
        export.lines().count(),
        1,
        "only the live entry is left: {export}"
    );
    assert!(export.contains("session"), "{export}");
    let (code, _, err) = durable(url, ns, &["set", "--ttl", "-1", "x", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("--ttl"), "{err}");
}

#[test]
fn edits_a_sqlite_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cli.sqlite").display());
    edit_round_trip(&url);
}

#[test]
fn edits_a_redis_dictionary() {
    if let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") {
        edit_round_trip(&url);
    }
}

#[test]
fn edits_a_postgres_dictionary() {
    if let Some(url) = server_from_env("DURABLE_TEST_POSTGRES_URL") {
        edit_round_trip(&url);
    }
}

#[test]
fn edits_a_mysql_dictionary() {
    if let Some(url) = server_from_env("DURABLE_TEST_MYSQL_URL") {
        edit_round_trip(&url);
    }
}

#[test]
fn edits_a_zookeeper_dictionary() {
    if let Some(connect) = server_from_env("DURABLE_TEST_ZOOKEEPER") {
        edit_round_trip(&format!("zk://{connect}"));
    }
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    let (code, out, err) = durable("ftp://example", "x", &["list"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown store URL scheme `ftp:`"), "{err}");
    let (code, _, err) = durable("postgres://app:secret@127.0.0.1:1/db", "x", &["list"]);
    assert_eq!(code, 1);
    assert!(!err.contains("secret"), "the password leaked: {err}");
    let (code, _, err) = durable("memory:", "bad/ns", &["list"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid name"), "{err}");
}

#[test]
fn watch_prints_changes_as_they_happen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("watch.sqlite").display());
    ok(&url, "w", &["set", "k", "1"]);
    let mut watcher = Std::new(assert_cmd::cargo::cargo_bin("durable"))
        .args(["--url", &url, "-n", "w", "watch", "--interval", "0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is watching (it says so on stderr).
    let mut stderr = BufReader::new(watcher.stderr.take().unwrap());
    let mut banner = String::new();
    stderr.read_line(&mut banner).unwrap();
    assert!(banner.starts_with("watching"), "{banner}");
    ok(&url, "w", &["set", "k", "2"]);
    let mut line = String::new();
    BufReader::new(watcher.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    watcher.kill().unwrap();
    let _ = watcher.wait();
    let fields: Vec<&str> = line.trim_end().split('\t').collect();
    assert_eq!(&fields[..4], ["updated", "k", "1", "2"], "{line}");
}

#[test]
fn bench_quick_runs_and_writes_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.sqlite").display());
    let json_path = dir.path().join("bench.json");
    let svg_path = dir.path().join("bench.svg");
    let out = ok(
        &url,
        "bench",
        &[
            "bench",
            "--quick",
            "--max-size",
            "1000",
            "--json",
            json_path.to_str().unwrap(),
            "--svg",
            svg_path.to_str().unwrap(),
        ],
    );
    for scenario in [
        "read: snapshot guard get",
        "no-change sync()",
        "sync after 1 changed, 1000 keys",
        "writes, batched",
        "propagation",
        "64 concurrent sync() callers",
    ] {
        assert!(out.contains(scenario), "missing {scenario:?} in\n{out}");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["backend"], json!("sqlite"));
    let coalescing = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scenario"] == json!("64 concurrent sync() callers"))
        .unwrap();
    assert!(
        coalescing["round_trips"].as_u64().unwrap() <= 4,
        "{coalescing}"
    );
    assert!(
        std::fs::read_to_string(&svg_path)
            .unwrap()
            .starts_with("<svg")
    );
}
