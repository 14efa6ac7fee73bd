//! The native layout's version record and stamp history, checked with plain Redis commands: what
//! each write stores, what a damaged record gives, and that a record from before stamps is
//! created afresh.

mod common;

use durable_core::conformance::server_from_env;
use durable_core::{Backend, Changes, Error, STAMP_HISTORY, Version};
use durable_redis::redis::{self, AsyncCommands};
use durable_redis::{RedisBackend, RedisStore};

async fn setup() -> Option<(String, RedisBackend, redis::aio::MultiplexedConnection)> {
    let url = server_from_env("DURABLE_TEST_REDIS_URL")?;
    let namespace = format!("v{:016x}", rand::random::<u64>());
    let store = RedisStore::connect_with(&url, common::options())
        .await
        .unwrap();
    let backend = store.backend(&namespace, "record").unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let raw = client.get_multiplexed_async_connection().await.unwrap();
    Some((url, backend, raw))
}

async fn cleanup(url: &str, backend: &RedisBackend) {
    let namespace = backend
        .version_key()
        .trim_start_matches("durable:{")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    common::delete_matching(url, &format!("durable:{{{namespace}:*"))
        .await
        .unwrap();
}

/// The history slot of `counter`: its counter and stamp, big-endian.
async fn slot(raw: &mut redis::aio::MultiplexedConnection, key: &str, counter: u64) -> Vec<u8> {
    let at = (counter % STAMP_HISTORY) * 16;
    redis::cmd("GETRANGE")
        .arg(key)
        .arg(at)
        .arg(at + 15)
        .query_async(raw)
        .await
        .unwrap()
}

fn slot_of(v: Version) -> Vec<u8> {
    [v.counter().to_be_bytes(), v.stamp().to_be_bytes()].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_records_its_stamp_and_parent() {
    let Some((url, b, mut raw)) = setup().await else {
        return;
    };
    let stamps = b.redis_keys()[5].to_owned();
    let first = b.last_updated().await.unwrap();
    assert_ne!(first.stamp(), 0, "a new record has a stamp");
    assert_eq!(first.parent(), 0, "a new record has no parent");
    assert_eq!(
        slot(&mut raw, &stamps, first.counter()).await,
        slot_of(first)
    );
    let mut before = first;
    for i in 0..5 {
        let v = b.persist(&format!("k{i}"), "v".into()).await.unwrap();
        assert!(v.follows(&before), "{v} follows {before}");
        let (stamp, parent): (String, String) = redis::cmd("HMGET")
            .arg(b.version_key())
            .arg("stamp")
            .arg("parent")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(stamp, v.stamp().to_string());
        assert_eq!(parent, before.stamp().to_string());
        assert_eq!(slot(&mut raw, &stamps, v.counter()).await, slot_of(v));
        assert_eq!(b.last_updated().await.unwrap(), v);
        before = v;
    }
    // Every earlier token of this history is still served a delta; the same counter with
    // another stamp is not.
    let delta = b.changes_since(first).await.unwrap();
    assert!(matches!(delta, Changes::Delta(d) if d.upserts.len() == 5 && d.version == before));
    let forged = Version::stamped(first.epoch(), first.counter(), first.stamp() ^ 1, 0);
    assert_eq!(b.changes_since(forged).await.unwrap(), Changes::TooOld);
    cleanup(&url, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_field_is_named_by_reads_and_replaced_by_the_next_write() {
    let Some((url, b, mut raw)) = setup().await else {
        return;
    };
    for (field, value) in [
        ("epoch", "x"),
        ("counter", "1e300"),
        ("stamp", "0"),
        ("parent", "-1"),
        ("oldest", "garbage"),
    ] {
        b.persist("a", "1".into()).await.unwrap();
        let issued = b.persist("b", "2".into()).await.unwrap();
        let _: () = raw.hset(b.version_key(), field, value).await.unwrap();
        for result in [
            b.last_updated().await.map(|_| ()),
            b.durables().await.map(|_| ()),
            b.changes_since(issued).await.map(|_| ()),
        ] {
            match result {
                Err(Error::Damaged { reason, .. }) => {
                    assert!(
                        reason.contains("/record") && reason.contains(&format!("`{field}`")),
                        "{reason}"
                    );
                }
                other => panic!("{field}={value}: expected Damaged, got {other:?}"),
            }
        }
        // A write that changes nothing writes nothing, not even a repaired record.
        assert_eq!(b.depersist("missing").await.unwrap(), None);
        let still: String = raw.hget(b.version_key(), field).await.unwrap();
        assert_eq!(still, value, "a no-op write left the damaged record alone");
        // A write starts a fresh epoch above every logged revision.
        let v = b.persist("c", "3".into()).await.unwrap();
        assert_ne!(v.epoch(), issued.epoch(), "{field}: a fresh epoch");
        assert_eq!(
            v.counter(),
            issued.counter() + 1,
            "{field}: above the revisions"
        );
        assert_eq!(v.parent(), b.last_updated().await.unwrap().parent());
        let load = b.durables().await.unwrap();
        assert_eq!(load.version, v);
        assert_eq!(load.entries.len(), 3);
        assert_eq!(b.changes_since(issued).await.unwrap(), Changes::TooOld);
        let _: () = raw.hdel(b.entries_key(), "c").await.unwrap();
    }
    cleanup(&url, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_from_before_stamps_is_created_afresh_by_a_read() {
    let Some((url, b, mut raw)) = setup().await else {
        return;
    };
    b.persist("a", "1".into()).await.unwrap();
    let old = b.persist("b", "2".into()).await.unwrap();
    // What the layout stored before stamps existed: epoch, counter and oldest only.
    let _: () = redis::cmd("HDEL")
        .arg(b.version_key())
        .arg("stamp")
        .arg("parent")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = raw.del(b.redis_keys()[5]).await.unwrap();
    let v = b.last_updated().await.unwrap();
    assert_ne!(v.epoch(), old.epoch(), "a fresh epoch");
    assert_eq!(
        v.counter(),
        old.counter(),
        "the counter at the highest revision"
    );
    assert_ne!(v.stamp(), 0);
    assert_eq!(b.durables().await.unwrap().entries.len(), 2);
    assert_eq!(b.changes_since(old).await.unwrap(), Changes::TooOld);
    cleanup(&url, &b).await;
}

/// A clear deletes the entries, expiries and change log at once (no tombstone per key: a
/// script writing one for each of millions of keys blocks the server for seconds) and bumps
/// once: a token from before it is served a full load, the new token an empty delta, and writes
/// after it are logged and served as deltas again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_drops_the_change_log_and_earlier_tokens_reload() {
    let Some((url, b, mut raw)) = setup().await else {
        return;
    };
    let [version, entries, log, tombstones, expiries, _] = b.redis_keys().map(str::to_owned);
    let ops = (0..1000)
        .map(|i| durable_core::BatchOp::Put {
            key: format!("k{i}"),
            value: i.to_string().into(),
        })
        .collect();
    b.persist_batch(ops).await.unwrap().unwrap();
    b.persist_expiring("short", "x".into(), std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    b.depersist("k0").await.unwrap().unwrap();
    let before = b.last_updated().await.unwrap();

    let cleared = b
        .clear()
        .await
        .unwrap()
        .expect("the dictionary held entries");
    assert_eq!(cleared.counter(), before.counter() + 1, "one bump");
    assert_eq!(cleared.epoch(), before.epoch(), "the same epoch");
    for key in [&entries, &log, &tombstones, &expiries] {
        let exists: bool = raw.exists(key).await.unwrap();
        assert!(!exists, "{key} left after a clear");
    }
    let oldest: u64 = raw.hget(&version, "oldest").await.unwrap();
    assert_eq!(oldest, cleared.counter(), "the log restarts at the clear");
    assert_eq!(b.changes_since(before).await.unwrap(), Changes::TooOld);
    assert!(b.durables().await.unwrap().entries.is_empty());
    assert!(
        matches!(b.changes_since(cleared).await.unwrap(), Changes::Delta(d) if d.upserts.is_empty() && d.removals.is_empty())
    );
    assert_eq!(
        b.clear().await.unwrap(),
        None,
        "clearing an empty dictionary bumps nothing"
    );

    let after = b.persist("new", "1".into()).await.unwrap();
    match b.changes_since(cleared).await.unwrap() {
        Changes::Delta(d) => {
            assert_eq!(d.version, after);
            assert_eq!(d.upserts.len(), 1);
            assert_eq!(d.upserts[0].key, "new");
        }
        Changes::TooOld => panic!("a write after the clear is served as a delta"),
    }
    cleanup(&url, &b).await;
}
