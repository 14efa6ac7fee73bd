//! `sweep` with more expired entries than fit in one ZooKeeper request, against the ZooKeeper in
//! `DURABLE_TEST_ZOOKEEPER`: each sweep deletes the earliest expiries that fit, in one step with
//! one version bump, until none is left.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use durable_core::conformance::run;
use durable_core::{Changes, StoreTime, Swept};

/// Entries written; with keys of [`KEY_LEN`] bytes, about 128 deletes fit in one request.
const ENTRIES: usize = 300;
/// Long keys (plain ASCII, so their znode names are as long) make few entries fill a request.
const KEY_LEN: usize = 4000;

fn key(i: usize) -> String {
    format!("{i:04}{}", "x".repeat(KEY_LEN - 4))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_removes_more_than_one_request_holds_over_several_steps() {
    run(common::harness().await, |ctx| async move {
        let backend = ctx.backend("big-sweep").await;
        let started = Instant::now();
        backend
            .persist("keep", Bytes::from_static(b"no expiry"))
            .await
            .expect("persist");
        // The later an entry is written, the sooner it expires: the expiry order is not the
        // write order (nor, by any design, the order in which ZooKeeper lists children).
        let mut expires: HashMap<String, StoreTime> = HashMap::new();
        for i in 0..ENTRIES {
            let ttl = Duration::from_millis(1 + 2 * (ENTRIES - 1 - i) as u64);
            let (_, at) = backend
                .persist_expiring(&key(i), Bytes::from_static(b"v"), ttl)
                .await
                .expect("persist_expiring");
            expires.insert(key(i), at);
        }
        let written = started.elapsed();
        let last = *expires.values().max().expect("entries");
        while backend.now().await.expect("now") < last {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let loaded = backend.durables().await.expect("load");
        assert_eq!(loaded.entries.len(), ENTRIES + 1);
        for entry in &loaded.entries {
            assert_eq!(
                entry.expires_at,
                expires.get(&entry.key).copied(),
                "{}",
                entry.key
            );
        }

        let before = backend.last_updated().await.expect("last_updated");
        let mut version = before;
        let mut sweeps = 0;
        while let Some(Swept {
            version: after,
            keys,
        }) = backend.sweep().await.expect("sweep")
        {
            sweeps += 1;
            assert!(sweeps <= ENTRIES, "sweep keeps finding expired entries");
            assert_eq!(after.epoch(), version.epoch(), "sweep {sweeps}");
            assert_eq!(
                after.counter(),
                version.counter() + 1,
                "sweep {sweeps}: one bump"
            );
            assert_eq!(
                backend.last_updated().await.expect("last_updated"),
                after,
                "sweep {sweeps}"
            );
            version = after;
            assert!(!keys.is_empty(), "sweep {sweeps} returned no keys");
            let mut swept_last = StoreTime(0);
            for key in &keys {
                let at = expires
                    .remove(key)
                    .unwrap_or_else(|| panic!("sweep {sweeps}: key {key:.8}... not pending"));
                swept_last = swept_last.max(at);
            }
            // Earliest expiries first: nothing left expired before anything swept.
            if let Some(first_left) = expires.values().min() {
                assert!(
                    swept_last <= *first_left,
                    "sweep {sweeps} removed an entry expiring at {swept_last:?} before one \
                     expiring at {first_left:?}"
                );
            }
            // Exactly the returned keys are gone.
            let loaded = backend.durables().await.expect("load");
            assert_eq!(loaded.version, after);
            assert_eq!(loaded.entries.len(), expires.len() + 1, "sweep {sweeps}");
            assert!(
                loaded
                    .entries
                    .iter()
                    .all(|e| e.key == "keep" || expires.contains_key(&e.key))
            );
        }
        assert!(expires.is_empty(), "{} expired entries left", expires.len());
        assert!(
            sweeps > 1,
            "one sweep removed all {ENTRIES} entries: the test no longer passes the request limit"
        );

        // Nothing left to sweep: no write, no bump; the entry without expiry stays.
        assert_eq!(backend.sweep().await.expect("sweep"), None);
        assert_eq!(backend.last_updated().await.expect("last_updated"), version);
        let loaded = backend.durables().await.expect("load");
        let keys: Vec<&str> = loaded.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["keep"]);

        // A delta over the sweeps reports every removal.
        match backend.changes_since(before).await.expect("changes") {
            Changes::Delta(delta) => {
                assert_eq!(delta.version, version);
                assert!(delta.upserts.is_empty());
                assert_eq!(delta.removals.len(), ENTRIES);
            }
            Changes::TooOld => panic!("delta over {sweeps} sweeps is too old"),
        }
        eprintln!(
            "{ENTRIES} entries written in {written:?}, removed in {sweeps} sweeps; \
             total {:?}",
            started.elapsed()
        );
    })
    .await;
}
