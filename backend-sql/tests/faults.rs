//! Faults: tables truncated by hand, a garbage value written by hand, the LISTEN connection
//! killed, and two processes writing to one SQLite file.

mod support;

use std::time::Duration;

use durable_core::conformance::server_from_env;
use durable_core::{Error, Json, Mode, Raw};
use durable_sql::SqlOptions;
use support::{Store, random_name};

/// Each test gets private tables, so that truncating them disturbs nobody.
async fn private_store(kind: &str, url: &str) -> Store {
    let options = SqlOptions::new().with_table_prefix(random_name("fault_"));
    Store::open(kind, url, options)
        .await
        .expect("open the store")
}

async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("f.db").display());
    out.push((private_store("sqlite", &url).await, Some(dir)));
    if let Some(url) = server_from_env("DURABLE_TEST_POSTGRES_URL") {
        out.push((private_store("postgres", &url).await, None));
    }
    if let Some(url) = server_from_env("DURABLE_TEST_MYSQL_URL") {
        out.push((private_store("mysql", &url).await, None));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_tables_make_every_handle_reload() {
    for (store, _dir) in stores().await {
        let ns = random_name("ns");
        let a = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
        let b = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
        for i in 0..3 {
            a.insert(&format!("k{i}"), b"v".to_vec()).await.unwrap();
        }
        let other = store
            .dict::<Vec<u8>, _>(&ns, "other", Raw, Mode::Manual)
            .await;
        other.insert("x", b"1".to_vec()).await.unwrap();
        assert_eq!(b.sync().await.unwrap().len(), 3);
        let before = (a.stats().reloads, b.stats().reloads, other.stats().reloads);
        store.truncate().await;
        for (handle, reloads) in [(&a, before.0), (&b, before.1), (&other, before.2)] {
            let snapshot = handle.sync().await.unwrap();
            assert!(
                snapshot.is_empty(),
                "{store:?}: stale entries after TRUNCATE: {:?} {:?}",
                snapshot.keys().collect::<Vec<_>>(),
                handle.stats()
            );
            assert_eq!(handle.stats().reloads, reloads + 1, "{store:?}: no reload");
        }
        // Writing again starts a new epoch; the other handles follow.
        a.insert("again", b"1".to_vec()).await.unwrap();
        assert_eq!(b.sync().await.unwrap().len(), 1);
        store.drop_tables().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_value_gives_a_typed_decode_error_naming_the_key() {
    for (store, _dir) in stores().await {
        let ns = random_name("ns");
        let d = store.dict::<u32, _>(&ns, "json", Json, Mode::Manual).await;
        d.insert("good", 1).await.unwrap();
        d.insert("bad", 2).await.unwrap();
        store
            .exec(&format!(
                "UPDATE {{e}} SET value = 'garbage{{', revision = revision + 1000 WHERE \
                 namespace = '{ns}' AND entry_key = 'bad'"
            ))
            .await;
        store
            .exec(&format!(
                "UPDATE {{v}} SET counter = counter + 1000 WHERE namespace = '{ns}'"
            ))
            .await;
        match d.sync().await {
            Err(Error::Decode { key, .. }) => assert_eq!(key, "bad", "{store:?}"),
            other => panic!("{store:?}: expected a decode error, got {other:?}"),
        }
        // The last good snapshot stays readable.
        assert_eq!(d.snapshot().get("bad"), Some(&2));
        // A fresh handle cannot open over the bad value either, with the same typed error.
        let options = durable_core::Options::new();
        match durable_core::Dict::<u32, Json>::open(store.backend(&ns, "json"), Json, options).await
        {
            Err(Error::Decode { key, .. }) => assert_eq!(key, "bad"),
            other => panic!("{store:?}: expected a decode error, got {other:?}"),
        }
        store.drop_tables().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_listen_connection_still_sees_the_next_change() {
    let Some(url) = server_from_env("DURABLE_TEST_POSTGRES_URL") else {
        return;
    };
    let store = private_store("postgres", &url).await;
    let Store::Pg(pg) = &store else {
        unreachable!()
    };
    let ns = random_name("ns");
    // Background mode with an hour between polls: only hints (or a resubscription) can wake it.
    let watcher = store
        .dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::background(Duration::from_secs(3600)))
        .await;
    let writer = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
    let seen = async |value: &[u8]| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while watcher.snapshot().get("k").map(Vec::as_slice) != Some(value) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "change {value:?} not seen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    writer.insert("k", b"1".to_vec()).await.unwrap();
    seen(b"1").await;

    let killed: Vec<(bool,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN \"{}\"'",
        pg.channel()
    )))
    .fetch_all(pg.pool())
    .await
    .unwrap();
    assert_eq!(killed.len(), 1, "exactly one LISTEN connection");
    // Written right after the kill: its notification may be lost in the gap, but the listener
    // reconnects and tells the handle to check.
    writer.insert("k", b"2".to_vec()).await.unwrap();
    seen(b"2").await;
    // And hints flow again afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.insert("k", b"3".to_vec()).await.unwrap();
    seen(b"3").await;
    store.drop_tables().await;
}

const CHILD_ENV: &str = "DURABLE_SQL_CHILD_DB";
const CHILD_WRITES: u32 = 150;

/// The writer run in each child process (does nothing when run directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_child_writer() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let id = std::env::var("DURABLE_SQL_CHILD_ID").unwrap();
    let store = Store::open("sqlite", &url, SqlOptions::new())
        .await
        .expect("open the store");
    let counters = store
        .dict::<i64, _>("procs", "shared", Json, Mode::Manual)
        .await;
    for i in 0..CHILD_WRITES {
        counters.increment("total", 1).await.unwrap();
        counters
            .insert(&format!("{id}-{i}"), i64::from(i))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_sqlite_file_without_lost_writes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    // Create the file and schema first, as the first process of a deployment would.
    let store = Store::open("sqlite", &url, SqlOptions::new())
        .await
        .expect("open the store");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|id| {
            tokio::process::Command::new(&exe)
                .args(["--exact", "sqlite_child_writer", "--test-threads", "1"])
                .env(CHILD_ENV, &url)
                .env("DURABLE_SQL_CHILD_ID", id)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().await.unwrap().success(),
            "a writer process failed"
        );
    }
    let d = store
        .dict::<i64, _>("procs", "shared", Json, Mode::Manual)
        .await;
    let snapshot = d.snapshot();
    assert_eq!(snapshot.get("total"), Some(&i64::from(2 * CHILD_WRITES)));
    assert_eq!(snapshot.len(), 1 + 2 * CHILD_WRITES as usize);
    let version = store
        .backend("procs", "shared")
        .last_updated()
        .await
        .unwrap();
    assert_eq!(
        version.counter(),
        u64::from(4 * CHILD_WRITES),
        "one bump per write"
    );
}
