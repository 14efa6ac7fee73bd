//! The database restarted while handles run (needs `DURABLE_TEST_POSTGRES_CTL` /
//! `DURABLE_TEST_MYSQL_CTL`, set by scripts/test.sh). A separate test binary, so that no other
//! test runs against the server while it is down; within it, the tests of one server take turns
//! ([`server_lock`]).

mod support;

use std::time::Duration;

use durable_core::conformance::{self, server_from_env};
use durable_core::{Mode, Raw};
use durable_sql::SqlOptions;
use support::{SqlHarness, Store, ctl, random_name};
use tokio::sync::{Mutex, MutexGuard};

/// Held by each test for its whole run: one server is stopped and started by one test at a time.
async fn server_lock(kind: &str) -> MutexGuard<'static, ()> {
    static POSTGRES: Mutex<()> = Mutex::const_new(());
    static MYSQL: Mutex<()> = Mutex::const_new(());
    match kind {
        "postgres" => POSTGRES.lock().await,
        _ => MYSQL.lock().await,
    }
}

async fn restart_while_handles_run(kind: &str, url_var: &str, ctl_var: &str) {
    let _turn = server_lock(kind).await;
    let Some(url) = server_from_env(url_var) else {
        return;
    };
    let Some(control) = server_from_env(ctl_var) else {
        return;
    };
    let options = SqlOptions::new().with_acquire_timeout(Duration::from_secs(2));
    let store = Store::open(kind, &url, options)
        .await
        .expect("open the store");
    let ns = random_name("ns");
    let a = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
    let b = store
        .dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::background(Duration::from_millis(200)))
        .await;
    a.insert("k", b"1".to_vec()).await.unwrap();
    assert_eq!(a.sync().await.unwrap().get("k"), Some(&b"1".to_vec()));

    ctl(&control, "stop").await;
    // Reads go on from the last snapshot.
    assert_eq!(a.snapshot().get("k"), Some(&b"1".to_vec()));
    // sync() fails with a typed error, writes fail cleanly.
    let error = a.sync().await.expect_err("sync while the database is down");
    assert!(error.is_unavailable(), "{kind}: sync gave {error:?}");
    let error = a
        .insert("k", b"2".to_vec())
        .await
        .expect_err("write while down");
    assert!(error.is_unavailable(), "{kind}: insert gave {error:?}");
    assert_eq!(
        a.snapshot().get("k"),
        Some(&b"1".to_vec()),
        "a failed write changed nothing"
    );

    ctl(&control, "start").await;
    // Handles converge once it is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match a.insert("k", b"3".to_vec()).await {
            Ok(_) => break,
            Err(e) if e.is_unavailable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{kind}: write after restart: {e:?}"),
        }
    }
    while b.snapshot().get("k") != Some(&b"3".to_vec()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}: b did not converge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.sync().await.unwrap().get("k"), Some(&b"3".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_while_handles_run() {
    restart_while_handles_run(
        "postgres",
        "DURABLE_TEST_POSTGRES_URL",
        "DURABLE_TEST_POSTGRES_CTL",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_restart_while_handles_run() {
    restart_while_handles_run("mysql", "DURABLE_TEST_MYSQL_URL", "DURABLE_TEST_MYSQL_CTL").await;
}

/// The conformance property of sharded counters, with the server restarted in the middle.
async fn sharded_counter_survives_a_restart(kind: &'static str) {
    let _turn = server_lock(kind).await;
    conformance::run(SqlHarness::restartable(kind).await, |ctx| async move {
        conformance::sharded_counter_total_matches_acknowledged_increments(&ctx).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sharded_counter_survives_a_restart() {
    sharded_counter_survives_a_restart("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_sharded_counter_survives_a_restart() {
    sharded_counter_survives_a_restart("mysql").await;
}
