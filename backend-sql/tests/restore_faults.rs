//! A dictionary's rows put back to an earlier copy of themselves while handles write and sync
//! (the conformance workload, `durable_core::conformance::workload`): the copy is taken as
//! `pg_dump` of those rows would take it (every row of the dictionary in every table: entries
//! with tombstones and expiry times, the version record, the stamp history), writers go on for
//! a second, and the copy is put back in one transaction while connections stay open.
//!
//! The store loses the writes made after the copy (that is what a restore does); durable must
//! notice: no token may name two states, no handle may miss its own write or serve a stale
//! sync, and every handle ends where a fresh handle starts. PostgreSQL and MariaDB need
//! `DURABLE_TEST_POSTGRES_URL` / `DURABLE_TEST_MYSQL_URL` (set by scripts/test.sh; missing
//! variables fail the tests under `DURABLE_TEST_REQUIRE=1`); SQLite uses a temporary file.

mod support;

use std::time::Duration;

use durable_core::conformance::server_from_env;
use durable_core::conformance::workload::{RawDict, Report, Workload};
use durable_core::{Mode, Name, Raw};
use durable_sql::SqlOptions;
use support::{Store, random_name};

/// Four writing handles (two tasks each) and four syncing handles, each with a pool of its own
/// as a separate process would have, over private tables; the rows of the dictionary are put
/// back to a copy taken a second earlier.
async fn restore_while_handles_work(kind: &'static str, url: &str) -> Report {
    let prefix = random_name("restore_");
    let options = || {
        SqlOptions::new()
            .with_table_prefix(&prefix)
            .with_max_connections(2)
    };
    let admin = Store::open(kind, url, options())
        .await
        .expect("open the store");
    let ns = Name::new(random_name("ns")).expect("a valid name");
    let dict = Name::new("restored").expect("a valid name");
    let handle = || async {
        let store = Store::open(kind, url, options())
            .await
            .expect("open the store");
        // Manual mode, and hints never trusted: a restore sends no NOTIFY.
        let d: RawDict = store
            .dict(ns.as_str(), dict.as_str(), Raw, Mode::Manual)
            .await;
        d
    };
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..4 {
        writers.push(handle().await);
        readers.push(handle().await);
    }
    let fault = async {
        let copy = admin.copy_rows(&ns, &dict).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        admin.put_back(&ns, &dict, &copy).await;
        eprintln!(
            "{kind}: put back {} entries, {} stamps, version {:?}",
            copy.entries.len(),
            copy.stamps.len(),
            copy.version
        );
    };
    // 16 keys per writer task, 128 in all: each handle's snapshot passes 64 changed keys and
    // merges its overlay in the background while the rows are put back.
    let watched = readers[0].clone();
    let report = Workload {
        keys_per_writer: 16,
        ..Workload::default()
    }
    .run(writers, readers, fault, Duration::from_secs(1), handle)
    .await;
    assert!(
        watched.stats().merges > 0,
        "{kind}: no snapshot merge during the run"
    );
    admin.drop_tables().await;
    eprintln!("{kind}: {report:?}");
    report
}

fn check(kind: &str, report: &Report) {
    assert!(report.writes > 20, "{kind}: the workload wrote: {report:?}");
    assert!(report.syncs > 20, "{kind}: the workload synced: {report:?}");
    assert!(
        report.regressions_followed > 0,
        "{kind}: no handle noticed the store going back: {report:?}"
    );
    assert_eq!(report.anomalies(), 0, "{kind}: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_restored_while_handles_work() {
    let Some(url) = server_from_env("DURABLE_TEST_POSTGRES_URL") else {
        return;
    };
    let report = restore_while_handles_work("postgres", &url).await;
    check("postgres", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_rows_restored_while_handles_work() {
    let Some(url) = server_from_env("DURABLE_TEST_MYSQL_URL") else {
        return;
    };
    let report = restore_while_handles_work("mysql", &url).await;
    check("mysql", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_restored_while_handles_work() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("restored.db").display());
    let report = restore_while_handles_work("sqlite", &url).await;
    check("sqlite", &report);
}

/// The engine keeps showing a write the restore lost, at the store's current token: the writing
/// handle's write `a` (landing after another process's write, so kept as a pending write on top
/// of its snapshot) is lost by the restore; its next write lands on the restored state and
/// directly follows its snapshot's token, so the token moves on while `a` stays pending; the next
/// version check finds the store's token equal to the snapshot's and keeps the snapshot, `a`
/// included. A fresh handle at the very same token has no `a`. The same happens on
/// `MemoryStore`: the fix belongs in durable-core (`Inner::check_now` keeps pending writes
/// acknowledged before the check began when the token is unchanged; with the token unchanged
/// they cannot be in the store). This made the workload above report a divergent handle now and
/// then (when few writes follow the restore).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lost_by_a_restore_does_not_stay_visible() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("pending.db").display());
    let store = Store::open("sqlite", &url, SqlOptions::new())
        .await
        .expect("open the store");
    let (ns, dict) = (Name::new("ns").unwrap(), Name::new("d").unwrap());
    let w: RawDict = store.dict("ns", "d", Raw, Mode::Manual).await;
    let other: RawDict = store.dict("ns", "d", Raw, Mode::Manual).await;
    w.insert("x", b"0".to_vec()).await.unwrap();
    let copy = store.copy_rows(&ns, &dict).await;
    other.insert("y", b"1".to_vec()).await.unwrap();
    w.insert("a", b"lost".to_vec()).await.unwrap();
    store.put_back(&ns, &dict, &copy).await;
    w.insert("b", b"new".to_vec()).await.unwrap();
    let synced = w.sync().await.unwrap().version();
    let fresh: RawDict = store.dict("ns", "d", Raw, Mode::Manual).await;
    assert_eq!(synced, fresh.snapshot().version());
    assert_eq!(
        w.snapshot().get("a"),
        None,
        "a write the restore lost stays visible at the store's token {synced}"
    );
}

/// A clear undone by a restore: the clear deleted every row, tombstones included, and moved
/// `oldest_served` to its counter; putting back a copy from before it brings the entries, the
/// version record and the stamp history back. A handle that followed the clear, and the handle
/// that cleared and wrote again, must both end where a fresh handle starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_undone_by_a_restore_is_seen_by_every_handle() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut servers = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("cleared.db").display()),
    )];
    for (kind, variable) in [
        ("postgres", "DURABLE_TEST_POSTGRES_URL"),
        ("mysql", "DURABLE_TEST_MYSQL_URL"),
    ] {
        servers.extend(server_from_env(variable).map(|url| (kind, url)));
    }
    for (kind, url) in servers {
        let options = SqlOptions::new().with_table_prefix(random_name("clear_"));
        let store = Store::open(kind, &url, options).await.expect("open");
        let (ns, dict) = (Name::new("ns").unwrap(), Name::new("d").unwrap());
        let writer: RawDict = store.dict("ns", "d", Raw, Mode::Manual).await;
        let follower: RawDict = store.dict("ns", "d", Raw, Mode::Manual).await;
        writer.insert("a", b"1".to_vec()).await.unwrap();
        writer.remove("a").await.unwrap();
        writer.insert("b", b"2".to_vec()).await.unwrap();
        let copy = store.copy_rows(&ns, &dict).await;
        writer.clear().await.unwrap().expect("cleared");
        assert!(follower.sync().await.unwrap().is_empty(), "{kind}");
        writer.insert("c", b"3".to_vec()).await.unwrap();
        store.put_back(&ns, &dict, &copy).await;
        // Writes after the restore take the counter back up to the handles' tokens, which now
        // name other states.
        let fresh: RawDict = store.dict("ns", "d", Raw, Mode::Manual).await;
        fresh.insert("d", b"4".to_vec()).await.unwrap();
        fresh.insert("d", b"5".to_vec()).await.unwrap();
        let expected = fresh.snapshot();
        let mut keys: Vec<&str> = expected.keys().collect();
        keys.sort();
        assert_eq!(keys, ["b", "d"], "{kind}");
        for (name, handle) in [("follower", &follower), ("writer", &writer)] {
            let synced = handle.sync().await.unwrap();
            assert_eq!(synced.version(), expected.version(), "{kind}: {name}");
            let mut keys: Vec<&str> = synced.keys().collect();
            keys.sort();
            assert_eq!(
                keys,
                ["b", "d"],
                "{kind}: the {name} does not hold the restored state"
            );
        }
        store.drop_tables().await;
    }
}
