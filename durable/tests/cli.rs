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
    format!("cli{:08x}", rand::random::<u32>())
}

/// The editing commands against one store.
fn edit_round_trip(url: &str) {
    let ns = &namespace();
    let written = ok(url, ns, &["set", "beta", "true"]);
    assert!(
        written.starts_with("set beta (version ") && written.lines().count() == 1,
        "`set` says what it did: {written}"
    );
    ok(url, ns, &["set", "limits", r#"{"rps": 10}"#]);
    ok(url, ns, &["set", "--raw", "motd", "hello world"]);
    assert_eq!(ok(url, ns, &["get", "beta"]), "true\n");
    assert_eq!(ok(url, ns, &["get", "motd"]), "hello world\n");
    let listed: Value = serde_json::from_str(&ok(url, ns, &["list", "--json"])).unwrap();
    assert_eq!(
        listed,
        json!({"beta": true, "limits": {"rps": 10}, "motd": "hello world"})
    );
    assert!(ok(url, ns, &["list"]).contains(&format!("(3 entries in {ns}/default, version ")));

    let added = ok(url, ns, &["incr", "hits", "5"]);
    assert!(
        added.starts_with("hits is now 5 (added 5; version "),
        "{added}"
    );
    let added: Value =
        serde_json::from_str(&ok(url, ns, &["incr", "hits", "-2", "--json"])).unwrap();
    assert_eq!(
        (&added["key"], &added["value"]),
        (&json!("hits"), &json!(3))
    );
    assert!(added["version"].is_string(), "{added}");

    let revision = ok(url, ns, &["get", "--revision", "beta"]);
    let revision = revision.split('\t').next().unwrap();
    let swapped = ok(url, ns, &["cas", "beta", "--expect", revision, "false"]);
    assert!(swapped.starts_with("swapped beta (version "), "{swapped}");
    let (code, out, err) = durable(url, ns, &["cas", "beta", "--expect", revision, "true"]);
    assert_eq!(
        (code, out.as_str()),
        (4, ""),
        "a conflict has exit code 4: {err}"
    );
    assert!(
        err.starts_with("durable: conflict: \"beta\" is now"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let (code, out, _) = durable(
        url,
        ns,
        &["cas", "beta", "--expect", revision, "true", "--json"],
    );
    let conflict: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 4);
    assert_eq!(
        (&conflict["swapped"], &conflict["current"]["value"]),
        (&json!(false), &json!(false))
    );

    let deleted = ok(url, ns, &["del", "motd"]);
    assert!(deleted.starts_with("deleted motd (version "), "{deleted}");
    // A missing key: its own exit code and message, for `del` and `get`.
    for command in ["del", "get"] {
        let (code, out, err) = durable(url, ns, &[command, "motd"]);
        assert_eq!(
            (code, out.as_str(), err.trim()),
            (
                3,
                "",
                format!("durable: no such key: motd in {ns}/default").as_str()
            ),
            "{command}"
        );
    }

    let (code, _, err) = durable(url, ns, &["set", "x", "not json"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is not JSON") && err.contains("--raw"),
        "{err}"
    );

    let stats: Value = serde_json::from_str(&ok(url, ns, &["stats", "--json"])).unwrap();
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
    let health: Value = serde_json::from_str(&ok(url, ns, &["health", "--json"])).unwrap();
    assert_eq!(health["fresh"], json!(true));
    readable_stats_and_health(url, ns);

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
    ok(url, ns, &["-d", "ttl", "set", "--ttl", "0.05", "gone", "2"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(ok(url, ns, &["-d", "ttl", "get", "session"]), "1\n");
    let (code, _, _) = durable(url, ns, &["-d", "ttl", "get", "gone"]);
    assert_eq!(code, 3, "an expired entry is not found");
    // The `set` process may already have swept it (writes sweep expired entries lazily).
    let first = ok(url, ns, &["-d", "ttl", "sweep"]);
    assert!(
        first == format!("swept 1 expired entry from {ns}/ttl\n")
            || first == format!("swept 0 expired entries from {ns}/ttl\n"),
        "{first}"
    );
    assert_eq!(
        ok(url, ns, &["-d", "ttl", "sweep", "--json"]),
        "{\"removed\":0}\n"
    );
    let export = ok(url, ns, &["-d", "ttl", "export"]);
    assert_eq!(
        export.lines().count(),
        1,
        "only the live entry is left: {export}"
    );
    assert!(export.contains("session"), "{export}");
    let (code, _, err) = durable(url, ns, &["set", "--ttl", "-1", "x", "1"]);
    assert_eq!(code, 2, "a bad command line");
    assert!(err.contains("--ttl"), "{err}");

    expiries_survive_export_and_import(url, ns);
    import_replace_holds_exactly_the_file(url, ns);
    values_json_would_change_are_refused(url, ns);

    // The flag definitions of `durable flags`, in this store.
    flags_round_trip(url, ns);
}

/// The version counter of a token (`EPOCH.COUNTER[.STAMP]`).
fn counter(version: &Value) -> u64 {
    let text = version.as_str().unwrap();
    text.split('.').nth(1).unwrap().parse().unwrap()
}

/// `stats` and `health` for people: one `name: value` line each, durations with units.
fn readable_stats_and_health(url: &str, ns: &str) {
    let stats = ok(url, ns, &["stats"]);
    let age = stats
        .lines()
        .find_map(|l| l.strip_prefix("age: "))
        .unwrap_or_else(|| panic!("no age line in {stats}"));
    assert!(
        ["ns ", "µs ", "ms ", "s "]
            .iter()
            .any(|unit| age.contains(unit)),
        "a unit: {age}"
    );
    assert!(stats.contains("\nentries: 3 ("), "{stats}");
    assert!(!stats.contains("e-"), "no bare exponents: {stats}");
    assert!(!stats.trim_start().starts_with('{'), "not JSON: {stats}");
    let health = ok(url, ns, &["health"]);
    assert!(health.starts_with("ready: true\n"), "{health}");
    assert!(health.contains("\nfresh: true\n"), "{health}");
    assert!(health.contains("\nage: "), "{health}");
    assert!(!health.contains("e-"), "no bare exponents: {health}");
}

/// An entry set with --ttl keeps its expiry through export and import (as an absolute time on
/// the store's clock); an entry that expired before the import is skipped.
fn expiries_survive_export_and_import(url: &str, ns: &str) {
    ok(
        url,
        ns,
        &["-d", "exp", "set", "--ttl", "3600", "session", "1"],
    );
    ok(url, ns, &["-d", "exp", "set", "plain", "2"]);
    let exported = ok(url, ns, &["-d", "exp", "export"]);
    let lines: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{exported}");
    assert_eq!(lines[0]["key"], json!("plain"));
    assert_eq!(lines[0].get("expires_at_ms"), None, "no expiry: {exported}");
    let expires_at = lines[1]["expires_at_ms"].as_u64().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expiring.jsonl");
    let old = r#"{"key":"old","value":3,"expires_at_ms":1000}"#;
    std::fs::write(&file, format!("{exported}{old}\n")).unwrap();
    let imported = ok(
        url,
        ns,
        &["-d", "exp-copy", "import", file.to_str().unwrap()],
    );
    assert!(
        imported.contains("2 entries written (1 with an expiry)")
            && imported.contains("1 skipped (already expired: old)"),
        "{imported}"
    );
    let session: Value = serde_json::from_str(&ok(
        url,
        ns,
        &["-d", "exp-copy", "get", "--json", "session"],
    ))
    .unwrap();
    let copied = session["expires_at_ms"].as_u64().unwrap();
    assert!(
        copied.abs_diff(expires_at) < 2_000,
        "the same expiry on the store's clock: {expires_at} then {copied}"
    );
    let (code, _, _) = durable(url, ns, &["-d", "exp-copy", "get", "old"]);
    assert_eq!(code, 3, "an entry that had expired is not imported");
    let plain: Value =
        serde_json::from_str(&ok(url, ns, &["-d", "exp-copy", "get", "--json", "plain"])).unwrap();
    assert_eq!(plain["expires_at_ms"], Value::Null);
}

/// `import` merges; `import --replace` makes the dictionary hold exactly the file, in one
/// batch (one version bump).
fn import_replace_holds_exactly_the_file(url: &str, ns: &str) {
    let dict = ["-d", "repl"];
    let run = |args: &[&str]| ok(url, ns, &[&dict[..], args].concat());
    run(&["set", "a", "1"]);
    run(&["set", "b", "2"]);
    run(&["set", "c", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("replace.jsonl");
    std::fs::write(
        &file,
        "{\"key\":\"b\",\"value\":20}\n{\"key\":\"d\",\"text\":\"four\"}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let listed = |run: &dyn Fn(&[&str]) -> String| -> Value {
        serde_json::from_str(&run(&["list", "--json"])).unwrap()
    };

    let merged = run(&["import", file]);
    assert!(
        merged.contains("2 entries written; in one atomic batch"),
        "{merged}"
    );
    assert_eq!(listed(&run), json!({"a": 1, "b": 20, "c": 3, "d": "four"}));

    run(&["set", "a", "10"]);
    let before: Value = serde_json::from_str(&run(&["stats", "--json"])).unwrap();
    let replaced = run(&["import", "--replace", file]);
    assert!(
        replaced.contains("2 entries written, 2 removed (a, c); in one atomic batch"),
        "{replaced}"
    );
    assert_eq!(listed(&run), json!({"b": 20, "d": "four"}));
    let after: Value = serde_json::from_str(&run(&["stats", "--json"])).unwrap();
    assert_eq!(
        counter(&after["version"]),
        counter(&before["version"]) + 1,
        "one atomic step: {} then {}",
        before["version"],
        after["version"]
    );

    let again: Value =
        serde_json::from_str(&run(&["import", "--replace", "--json", file])).unwrap();
    assert_eq!(
        (&again["written"], &again["removed"], &again["atomic"]),
        (&json!(2), &json!([]), &json!(true))
    );
}

/// Values that JSON readers would change (a number beyond 64 bits, duplicate keys) are refused
/// by `set`, `cas` and `import`, naming the problem; --raw stores them as they are.
fn values_json_would_change_are_refused(url: &str, ns: &str) {
    let dict = ["-d", "lossy"];
    let dir = tempfile::tempdir().unwrap();
    for (value, problem) in [
        ("12345678901234567890123", "cannot be stored exactly"),
        ("0.1000000000000000000000001", "cannot be stored exactly"),
        (r#"{"a": 1, "a": 2}"#, "duplicate key \"a\""),
        (r#"[{"n": 1e-400}]"#, "cannot be stored exactly"),
    ] {
        for args in [
            vec!["set", "k", value],
            vec!["cas", "k", "--expect", "absent", value],
        ] {
            let (code, out, err) = durable(url, ns, &[&dict[..], &args].concat());
            assert_eq!((code, out.as_str()), (1, ""), "{args:?}: {err}");
            assert!(
                err.contains(problem) && err.contains("--raw") && err.lines().count() == 1,
                "{args:?}: {err}"
            );
        }
        let file = dir.path().join("lossy.jsonl");
        std::fs::write(
            &file,
            format!("{{\"key\":\"fine\",\"value\":1}}\n{{\"key\":\"k\",\"value\":{value}}}\n"),
        )
        .unwrap();
        let (code, _, err) = durable(
            url,
            ns,
            &[&dict[..], &["import", file.to_str().unwrap()]].concat(),
        );
        assert_eq!(code, 1, "{err}");
        assert!(
            err.starts_with("durable: line 2: ") && err.contains(problem),
            "{err}"
        );
    }
    let (code, _, _) = durable(url, ns, &[&dict[..], &["get", "fine"]].concat());
    assert_eq!(
        code, 5,
        "a refused import writes nothing, not even the dictionary"
    );
    // A key given twice in one file.
    let file = dir.path().join("twice.jsonl");
    std::fs::write(
        &file,
        "{\"key\":\"k\",\"value\":1}\n{\"key\":\"k\",\"value\":2}\n",
    )
    .unwrap();
    let (code, _, err) = durable(
        url,
        ns,
        &[&dict[..], &["import", file.to_str().unwrap()]].concat(),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("line 2: key \"k\" is already given on line 1"),
        "{err}"
    );
    // --raw keeps the text exactly.
    let exact = "12345678901234567890123";
    ok(
        url,
        ns,
        &[&dict[..], &["set", "--raw", "k", exact]].concat(),
    );
    assert_eq!(
        ok(url, ns, &[&dict[..], &["get", "--raw", "k"]].concat()),
        format!("{exact}\n")
    );
    // Numbers that survive are stored as given.
    ok(url, ns, &[&dict[..], &["set", "n", "0.1"]].concat());
    assert_eq!(ok(url, ns, &[&dict[..], &["get", "n"]].concat()), "0.1\n");
}

/// Reading commands write nothing: a dictionary that is not there is exit code 5 and stays
/// absent; `dicts` lists what writing created.
fn reads_never_write(url: &str) {
    let ns = &namespace();
    for read in [
        &["get", "k"][..],
        &["list"],
        &["stats"],
        &["export"],
        &["-d", "flags", "flags", "export"],
    ] {
        let (code, out, err) = durable(url, ns, read);
        assert_eq!(code, 5, "{read:?} of a missing dictionary: {out} {err}");
        assert!(
            err.contains("no dictionary") && err.contains("dictionaries there: none"),
            "{read:?}: {err}"
        );
    }
    let (code, out, _) = durable(url, ns, &["health"]);
    assert_ne!(code, 0);
    assert!(
        out.contains("ready: false") && out.contains("no dictionary"),
        "{out}"
    );
    assert_eq!(
        ok(url, ns, &["dicts"]),
        "",
        "the reads created a dictionary"
    );
    assert_eq!(ok(url, ns, &["dicts", "--json"]), "[]\n");

    ok(url, ns, &["set", "k", "1"]);
    ok(url, ns, &["-d", "other", "set", "k", "2"]);
    // A typo in -d names what is there.
    let (code, _, err) = durable(url, ns, &["-d", "othr", "get", "k"]);
    assert_eq!(code, 5);
    assert!(err.contains("dictionaries there: default, other"), "{err}");
    assert_eq!(ok(url, ns, &["dicts"]), "default\nother\n");
    assert_eq!(
        ok(url, ns, &["dicts", "--json"]),
        "[\"default\",\"other\"]\n"
    );
    assert_eq!(ok(url, ns, &["get", "k"]), "1\n");
}

#[test]
fn reads_never_write_on_sqlite_and_migrate_creates_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.sqlite");
    let url = format!("sqlite://{}", path.display());
    let tables = || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let pool = durable::sql::sqlx::SqlitePool::connect(&url).await.unwrap();
            let names: Vec<(String,)> = durable::sql::sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            names.into_iter().map(|(name,)| name).collect::<Vec<_>>()
        })
    };
    let (code, _, err) = durable(&url, "ns", &["get", "k"]);
    assert_eq!(code, 5, "{err}");
    assert_eq!(ok(&url, "ns", &["dicts"]), "");
    assert_eq!(tables(), Vec::<String>::new(), "a read created tables");
    assert_eq!(
        ok(&url, "ns", &["migrate"]),
        "the store's tables are ready\n"
    );
    assert_eq!(
        tables(),
        ["durable_entries", "durable_stamps", "durable_versions"]
    );
    assert_eq!(
        ok(&url, "ns", &["dicts"]),
        "",
        "migrate creates no dictionary"
    );
    reads_never_write(&url);
}

#[test]
fn reads_never_write_on_redis_postgres_and_zookeeper() {
    if let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") {
        assert_eq!(
            ok(&url, "ns", &["migrate"]),
            "nothing to create: this store needs no schema\n"
        );
        reads_never_write(&url);
    }
    if let Some(url) = server_from_env("DURABLE_TEST_POSTGRES_URL") {
        reads_never_write(&url);
    }
    if let Some(connect) = server_from_env("DURABLE_TEST_ZOOKEEPER") {
        reads_never_write(&format!("zk://{connect}"));
    }
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
    ok(&url, "w", &["set", "--raw", "tab\tbed\x1b", "a\nb"]);
    let mut stdout = BufReader::new(watcher.stdout.take().unwrap());
    let (mut line, mut escaped) = (String::new(), String::new());
    stdout.read_line(&mut line).unwrap();
    stdout.read_line(&mut escaped).unwrap();
    watcher.kill().unwrap();
    let _ = watcher.wait();
    let fields: Vec<&str> = line.trim_end().split('\t').collect();
    assert_eq!(&fields[..4], ["updated", "k", "1", "2"], "{line}");
    let fields: Vec<&str> = escaped.trim_end().split('\t').collect();
    assert_eq!(
        &fields[..4],
        ["inserted", r"tab\tbed\u{1b}", "-", r"a\nb"],
        "one line, five fields, control characters escaped: {escaped:?}"
    );
}

#[test]
fn watch_json_prints_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("watch.sqlite").display());
    ok(&url, "w", &["set", "k", "1"]);
    let mut watcher = Std::new(assert_cmd::cargo::cargo_bin("durable"))
        .args([
            "--url",
            &url,
            "-n",
            "w",
            "watch",
            "--interval",
            "0.1",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(watcher.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.starts_with("watching"), "{banner}");
    ok(&url, "w", &["set", "k", r#"{"a": 2}"#]);
    let mut line = String::new();
    BufReader::new(watcher.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    watcher.kill().unwrap();
    let _ = watcher.wait();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (&event["kind"], &event["key"], &event["old"], &event["new"]),
        (&json!("updated"), &json!("k"), &json!(1), &json!({"a": 2})),
        "{line}"
    );
    assert!(event["version"].is_string(), "{line}");
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
        "read: snapshot guard held vs HashMap (1000 keys, 1 thread)",
        "read: snapshot guard held vs HashMap (1000 keys, 2 threads)",
        "no-change sync()",
        "sync after 1 changed, 1000 keys",
        "clear, 1000 keys",
        "writes, batched",
        "propagation",
        "64 concurrent sync() callers",
    ] {
        assert!(out.contains(scenario), "missing {scenario:?} in\n{out}");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["backend"], json!("sqlite"));
    let result = |scenario: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["scenario"] == json!(scenario))
            .unwrap()
            .clone()
    };
    let clear = result("clear, 1000 keys");
    assert!(
        clear["value"].as_f64().unwrap() > 0.0 && clear["follow_ms"].as_f64().unwrap() > 0.0,
        "{clear}"
    );
    let reads = result("read: snapshot guard held vs HashMap (1000 keys, 1 thread)");
    assert!(
        reads["ratio"].as_f64().unwrap() > 0.0 && reads["hashmap_ns"].as_f64().unwrap() > 0.0,
        "{reads}"
    );
    let coalescing = result("64 concurrent sync() callers");
    // Callers share round trips (64 without coalescing). How many they share depends on how
    // the 64 tasks are scheduled, which a loaded machine spreads out (11 seen under load), so
    // this smoke test only asserts that they shared; the exact property (callers arriving
    // during a check share the next one) is durable-core's tests/engine.rs.
    assert!(
        coalescing["round_trips"].as_u64().unwrap() < 32,
        "{coalescing}"
    );
    assert!(
        std::fs::read_to_string(&svg_path)
            .unwrap()
            .starts_with("<svg")
    );
}

/// The flagd test-bed flag file of durable-openfeature (flags, a shared evaluator, metadata and
/// `$schema`).
const FLAG_FILE: &str = include_str!("../../openfeature/tests/data/flagd-testkit.json");

/// `durable flags import | export | validate` against one store: a flagd file goes in and comes
/// back equal (as JSON values).
fn flags_round_trip(url: &str, ns: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flags.json");
    std::fs::write(&file, FLAG_FILE).unwrap();
    let file = file.to_str().unwrap();
    let original: Value = serde_json::from_str(FLAG_FILE).unwrap();
    let flag_count = original["flags"].as_object().unwrap().len();

    let valid = ok(url, ns, &["flags", "validate", file]);
    assert_eq!(
        valid,
        format!("{file}: a valid flagd flag file ({flag_count} flags)\n")
    );
    let imported = ok(url, ns, &["flags", "import", file]);
    assert!(
        imported.starts_with(&format!(
            "imported {file} into {ns}/flags ({flag_count} flags): "
        )) && imported.contains(", 0 removed, 0 unchanged"),
        "{imported}"
    );
    let exported: Value = serde_json::from_str(&ok(url, ns, &["flags", "export"])).unwrap();
    assert_eq!(exported, original, "export gives the imported file back");
    let out = dir.path().join("exported.json");
    ok(url, ns, &["flags", "export", out.to_str().unwrap()]);
    let from_file: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(from_file, original);
    // Importing the same file again writes nothing.
    let again = ok(url, ns, &["flags", "import", file]);
    assert!(
        again.contains(": 0 entries written, 0 removed, "),
        "{again}"
    );
    let again: Value =
        serde_json::from_str(&ok(url, ns, &["flags", "import", "--json", file])).unwrap();
    assert_eq!(again["flags"], flag_count);
    assert_eq!(again["written"], json!([]));
    // Entries, not flags: the file's shared evaluators are entries too.
    let entries: u64 = imported
        .split("): ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the first import's entry count");
    assert_eq!(again["unchanged"], entries, "{again}");
    assert_eq!(again["dictionary"], "flags");
    let valid: Value =
        serde_json::from_str(&ok(url, ns, &["flags", "validate", "--json", file])).unwrap();
    assert_eq!(
        valid,
        json!({"file": file, "valid": true, "flags": flag_count})
    );
    // The flags live in dictionary `flags`, not in the default one.
    assert!(ok(url, ns, &["-d", "flags", "list"]).contains("boolean-flag"));
    assert!(!ok(url, ns, &["list"]).contains("boolean-flag"));

    // An invalid file: refused with the JSON path of the problem, nothing written.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"flags": {"boolean-flag": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "off"}}}"#,
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    for args in [vec!["flags", "validate", bad], vec!["flags", "import", bad]] {
        let (code, out, err) = durable(url, ns, &args);
        assert_eq!((code, out.as_str()), (1, ""), "{args:?}: {err}");
        assert!(
            err.contains("/flags/boolean-flag/defaultVariant") && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    let exported: Value = serde_json::from_str(&ok(url, ns, &["flags", "export"])).unwrap();
    assert_eq!(exported, original, "a refused import wrote nothing");

    // --merge adds and replaces only; a plain import then makes the store hold the file again.
    let extra = dir.path().join("extra.json");
    std::fs::write(
        &extra,
        r#"{"flags": {"extra-flag": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}"#,
    )
    .unwrap();
    let merged = ok(
        url,
        ns,
        &["flags", "import", "--merge", extra.to_str().unwrap()],
    );
    assert!(
        merged.contains("1 entries written (extra-flag), 0 removed"),
        "{merged}"
    );
    let exported: Value = serde_json::from_str(&ok(url, ns, &["flags", "export"])).unwrap();
    assert_eq!(exported["flags"].as_object().unwrap().len(), flag_count + 1);
    let replaced: Value =
        serde_json::from_str(&ok(url, ns, &["flags", "import", "--json", file])).unwrap();
    assert_eq!(replaced["removed"], json!(["extra-flag"]), "{replaced}");
    let exported: Value = serde_json::from_str(&ok(url, ns, &["flags", "export"])).unwrap();
    assert_eq!(exported, original);
}

fn sqlite(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}", dir.path().join(name).display())
}

#[test]
fn ttl_values_are_checked_with_short_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(&dir, "ttl.sqlite");
    for (ttl, says) in [
        ("0", "expires at once is never seen"),
        ("1e300", "at most 3155760000 seconds (100 years)"),
        ("inf", "at most"),
        ("NaN", "at least 0"),
        ("-5", "at least 0"),
        ("0.0001", "at least 0.001"),
        ("soon", "expected a number of seconds"),
    ] {
        let (code, out, err) = durable(&url, "ttl", &["set", "--ttl", ttl, "k", "1"]);
        assert_eq!((code, out.as_str()), (2, ""), "--ttl {ttl}: {err}");
        assert!(
            err.contains("--ttl") && err.contains(says),
            "--ttl {ttl}: {err}"
        );
        assert!(err.len() < 300, "--ttl {ttl}: a short message: {err}");
        assert!(
            !err.contains("0000000000000000"),
            "--ttl {ttl}: no huge number: {err}"
        );
    }
    let (code, _, _) = durable(&url, "ttl", &["get", "k"]);
    assert_eq!(code, 5, "nothing was written, not even the dictionary");
    let written = ok(&url, "ttl", &["set", "--ttl", "1.5", "k", "1"]);
    assert!(
        written.starts_with("set k, expires in 1.5 s (version "),
        "{written}"
    );
}

#[test]
fn bench_with_zero_writers_or_shards_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(&dir, "bench.sqlite");
    for flag in ["--writers", "--shards"] {
        let (code, _, err) = durable(&url, "bench", &["bench", "--quick", flag, "0"]);
        assert_eq!(code, 2, "{flag} 0: {err}");
        assert!(
            err.contains(flag) && err.contains("at least 1"),
            "{flag} 0: {err}"
        );
    }
}

#[test]
fn control_characters_in_keys_and_values_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(&dir, "escape.sqlite");
    let key = "evil\x1b[2J\nkey\u{202e}";
    let text = "line one\nline two\x1b[31m red\x07";
    ok(&url, "esc", &["set", "--raw", key, text]);
    ok(&url, "esc", &["set", "plain", "1"]);

    let listed = ok(&url, "esc", &["list"]);
    assert!(!listed.contains('\x1b') && !listed.contains('\x07') && !listed.contains('\u{202e}'));
    assert_eq!(
        listed.lines().count(),
        4,
        "header, 2 entries, footer: {listed}"
    );
    assert!(
        listed.contains(r"evil\u{1b}[2J\nkey\u{202e}  line one\nline two\u{1b}[31m red\u{7}"),
        "{listed}"
    );
    let got = ok(&url, "esc", &["get", key]);
    assert_eq!(got, "line one\\nline two\\u{1b}[31m red\\u{7}\n");
    // --raw: the stored bytes exactly, for scripts.
    assert_eq!(ok(&url, "esc", &["get", "--raw", key]), format!("{text}\n"));
    // JSON output is JSON: its own escaping, the key and value unchanged when parsed.
    let json: Value = serde_json::from_str(&ok(&url, "esc", &["list", "--json"])).unwrap();
    assert_eq!(json[key], json!(text));
    // A missing key with control characters is quoted in the message.
    let (code, _, err) = durable(&url, "esc", &["get", "no\x1bpe"]);
    assert_eq!(code, 3);
    assert!(!err.contains('\x1b') && err.lines().count() == 1, "{err:?}");
}

#[test]
fn health_prints_ready_false_with_the_error_when_the_store_is_down() {
    // A SQLite file in a directory that does not exist: the store cannot be opened.
    let (code, out, err) = durable(
        "sqlite:///nonexistent-durable-dir/x.sqlite",
        "h",
        &["health", "--json"],
    );
    assert_eq!(code, 1, "{out}{err}");
    let health: Value = serde_json::from_str(&out).expect("JSON on standard output");
    assert_eq!(health["ready"], json!(false));
    assert_eq!(health["fresh"], json!(false));
    assert_eq!(health["age"], json!(null), "no snapshot: no age");
    assert!(
        health["error"].as_str().unwrap().contains("sqlite"),
        "{health}"
    );
    assert!(
        err.starts_with("durable: h/default is not ready: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // The same for people.
    let (code, out, err) = durable(
        "sqlite:///nonexistent-durable-dir/x.sqlite",
        "h",
        &["health"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("ready: false\nerror: ") && out.contains("sqlite"),
        "{out}"
    );
    assert!(
        out.contains("\nage: no snapshot"),
        "the snapshot's age, here none: {out}"
    );

    // Up: ready, fresh, with the snapshot's age in seconds.
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(&dir, "health.sqlite");
    ok(&url, "h", &["set", "k", "1"]);
    let health: Value = serde_json::from_str(&ok(&url, "h", &["health", "--json"])).unwrap();
    assert_eq!(
        (&health["ready"], &health["fresh"], &health["error"]),
        (&json!(true), &json!(true), &json!(null))
    );
    assert!(health["age"].as_f64().unwrap() < 5.0, "{health}");

    // A server that does not answer, with a password in the URL: never printed.
    if cfg!(feature = "postgres") {
        let (code, out, err) = durable(
            "postgres://app:s3/cr?t@127.0.0.1:1/db",
            "h",
            &["health", "--json"],
        );
        assert_eq!(code, 1);
        assert!(
            !out.contains("s3/cr") && !err.contains("s3/cr"),
            "{out}{err}"
        );
        let health: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(health["ready"], json!(false));
    }
}

#[test]
fn load_timeout_bounds_the_full_load_and_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(&dir, "load.sqlite");
    let lines: String = (0..20_000)
        .map(|i| format!("{{\"key\":\"k{i}\",\"value\":{i}}}\n"))
        .collect();
    let file = dir.path().join("many.jsonl");
    std::fs::write(&file, lines).unwrap();
    // One batch of 20,000 entries takes more than a millisecond: --timeout bounds it, and says so.
    let (code, _, err) = durable(
        &url,
        "load",
        &["--timeout", "0.000001", "import", file.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("timed out") && err.contains("raise --timeout"),
        "{err}"
    );
    ok(&url, "load", &["import", file.to_str().unwrap()]);

    let (code, _, err) = durable(
        &url,
        "load",
        &["--load-timeout", "0.000001", "stats", "--json"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("timed out") && err.contains("raise --load-timeout"),
        "{err}"
    );
    let stats: Value = serde_json::from_str(&ok(
        &url,
        "load",
        &["--load-timeout", "300", "stats", "--json"],
    ))
    .unwrap();
    assert_eq!(stats["entries"], json!(20_000));
    for flag in ["--load-timeout", "--timeout"] {
        let (code, _, err) = durable(&url, "load", &[flag, "0", "stats"]);
        assert_eq!(code, 2);
        assert!(err.contains(flag) && err.contains("more than 0"), "{err}");
    }
}
