//! The database restarted while handles run (needs `DURABLE_TEST_POSTGRES_CTL` /
//! `DURABLE_TEST_MYSQL_CTL`, set by scripts/test.sh). A separate test binary, so that no other
//! test runs against the server while it is down.

mod support;

use std::time::Duration;

use durable_core::conformance::server_from_env;
use durable_core::{Mode, Raw};
use durable_sql::SqlOptions;
use support::{Store, random_name};

async fn ctl(command: &str, action: &str) {
    let status = tokio::process::Command::new(command)
        .arg(action)
        .status()
        .await
        .expect("run the control script");
    assert!(status.success(), "{command} {action} failed");
}

async fn restart_while_handles_run(kind: &str, url_var: &str, ctl_var: &str) {
    let Some(url) = server_from_env(url_var) else {
        return;
    };
    let Some(control) = server_from_env(ctl_var) else {
        return;
    };
    let options = SqlOptions::new().with_acquire_timeout(Duration::from_secs(2));
    let store = Store::open(kind, &url, options).await;
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
