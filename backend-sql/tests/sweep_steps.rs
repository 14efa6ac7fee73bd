//! A sweep of more expired entries than one step removes ([`SWEEP_STEP`]): a step removes the
//! entries that expired first, and the engine sweeps again until none is left.

mod support;

use durable_core::conformance::server_from_env;
use durable_core::{Mode, Raw};
use durable_sql::{SWEEP_STEP, SqlOptions};
use support::{Store, random_name};

async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let options = || SqlOptions::new().with_table_prefix(random_name("sweep_"));
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    out.push((Some(("sqlite", url)), Some(dir)));
    out.push((
        server_from_env("DURABLE_TEST_POSTGRES_URL").map(|url| ("postgres", url)),
        None,
    ));
    out.push((
        server_from_env("DURABLE_TEST_MYSQL_URL").map(|url| ("mysql", url)),
        None,
    ));
    let mut stores = Vec::new();
    for (server, dir) in out {
        if let Some((kind, url)) = server {
            let store = Store::open(kind, &url, options()).await.expect("open");
            stores.push((store, dir));
        }
    }
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_step_removes_the_earliest_expiries_and_the_engine_sweeps_the_rest() {
    let extra = 50;
    for (store, _dir) in stores().await {
        let ns = random_name("ns");
        let writer = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
        // The first step's entries expired at one time, the rest later.
        let first: Vec<String> = (0..SWEEP_STEP).map(|i| format!("a{i:05}")).collect();
        let later: Vec<String> = (0..extra).map(|i| format!("b{i:05}")).collect();
        writer
            .insert_many(
                first
                    .iter()
                    .chain(&later)
                    .map(|k| (k.clone(), b"v".to_vec())),
            )
            .await
            .expect("write");
        writer.insert("keep", b"v".to_vec()).await.expect("write");
        // Expiries by hand, long past.
        for (prefix, at) in [("a", 1_000), ("b", 2_000)] {
            store
                .exec(&format!(
                    "UPDATE {{e}} SET expires_at = {at} WHERE entry_key LIKE '{prefix}%'"
                ))
                .await;
        }

        let backend = store.backend(&ns, "d");
        let step = backend.sweep().await.expect("sweep").expect("swept");
        let mut swept = step.keys.clone();
        swept.sort();
        assert_eq!(swept, first, "{store:?}: not the earliest expiries");

        // A handle opened now hides the rest and sweeps them.
        let reader = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
        assert_eq!(reader.snapshot().keys().collect::<Vec<_>>(), ["keep"]);
        assert_eq!(reader.sweep().await.expect("sweep"), extra, "{store:?}");
        assert!(backend.sweep().await.expect("sweep").is_none(), "{store:?}");
        let stored = backend.durables().await.expect("load");
        let stored: Vec<&str> = stored.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(stored, ["keep"], "{store:?}");
        assert_eq!(writer.sync().await.expect("sync").len(), 1, "{store:?}");
        store.drop_tables().await;
    }
}
