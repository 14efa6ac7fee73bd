//! Rules for entries with a time to live (capability `expiry`).

use std::time::Duration;

use super::{Ctx, HINT_WAIT, MINUTE, bytes, entries, token};
use crate::{Backend, BatchOp, ChangeKind, Changes, Dict, Encoding, Mode, StoreTime, Swap};

/// Polls `backend.now()` until the store's clock has passed `at`.
async fn wait_for_store_time(backend: &dyn Backend, at: StoreTime) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = backend.now().await.expect("now");
        if now > at {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store's clock did not pass {at} (now {now})"
        );
        // The poll interval.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How far a handle's estimate of the store's clock may trail the store's clock: half the round
/// trip of its reading plus drift, well under this on any test setup.
const ESTIMATE_LAG: Duration = Duration::from_secs(2);

/// The latest expiry of `keys` in `handle`'s snapshot (while they are still live in it).
fn latest_expiry<V, E>(handle: &Dict<V, E>, keys: &[&str]) -> StoreTime
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    let snapshot = handle.snapshot();
    keys.iter()
        .map(|key| {
            snapshot
                .expires_at(key)
                .unwrap_or_else(|| panic!("{key} is not held with an expiry"))
        })
        .max()
        .expect("keys")
}

/// Waits until the store's clock has passed `at`, then until every handle (each judging by its
/// estimate of that clock) hides `keys`, without a sync.
async fn wait_until_expired<V, E>(
    backend: &dyn Backend,
    at: StoreTime,
    handles: &[&Dict<V, E>],
    keys: &[&str],
) where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    wait_for_store_time(backend, at).await;
    let deadline = tokio::time::Instant::now() + ESTIMATE_LAG;
    let shown = || {
        handles
            .iter()
            .any(|handle| keys.iter().any(|key| handle.snapshot().contains_key(key)))
    };
    while shown() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store's clock passed {at}, and a handle still shows one of {keys:?}"
        );
        // The poll interval.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn expiry_of(load: &crate::Load, key: &str) -> Option<StoreTime> {
    load.entries
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("{key} is missing from durables"))
        .expires_at
}

/// `persist_expiring` stores the entry with the store's time of the write plus the TTL, and
/// `durables` and `changes_since` return that expiry with it; a later plain write of the key
/// removes the expiry, and entries written without a TTL have none.
pub async fn expiring_entry_carries_its_expiry(ctx: &Ctx) {
    ctx.require(ctx.capabilities().expiry, "expiry");
    let b = ctx.backend("ttl").await;
    b.persist("plain", bytes("p")).await.expect("persist");
    let before = token(&*b).await;
    let start = b.now().await.expect("now");
    let (version, expires_at) = b
        .persist_expiring("k", bytes("v"), MINUTE)
        .await
        .expect("persist_expiring");
    let end = b.now().await.expect("now");
    assert_eq!(version.counter(), before.counter() + 1, "one bump");
    assert!(
        start.add(MINUTE) <= expires_at && expires_at <= end.add(MINUTE),
        "expiry {expires_at} is not the store's time of the write ({start}..{end}) plus 60 s"
    );
    let load = b.durables().await.expect("durables");
    assert_eq!(expiry_of(&load, "k"), Some(expires_at));
    assert_eq!(expiry_of(&load, "plain"), None, "no TTL, no expiry");
    if ctx.capabilities().delta {
        let Changes::Delta(delta) = b.changes_since(before).await.expect("changes") else {
            panic!("a delta from the previous token");
        };
        let entry = delta
            .upserts
            .iter()
            .find(|e| e.key == "k")
            .expect("k in delta");
        assert_eq!(
            entry.expires_at,
            Some(expires_at),
            "the expiry travels in deltas"
        );
    }
    b.persist("k", bytes("w")).await.expect("persist");
    let load = b.durables().await.expect("durables");
    assert_eq!(
        expiry_of(&load, "k"),
        None,
        "a plain write makes the entry permanent"
    );
    let caps = ctx.capabilities();
    if caps.increment {
        b.persist_expiring("n", bytes("1"), MINUTE)
            .await
            .expect("persist_expiring");
        b.increment("n", 1).await.expect("increment");
        assert_eq!(expiry_of(&b.durables().await.expect("durables"), "n"), None);
    }
    if caps.batch {
        b.persist_expiring("m", bytes("1"), MINUTE)
            .await
            .expect("persist_expiring");
        let ops = vec![BatchOp::Put {
            key: "m".into(),
            value: bytes("2"),
        }];
        b.persist_batch(ops).await.expect("batch");
        assert_eq!(expiry_of(&b.durables().await.expect("durables"), "m"), None);
    }
    if caps.compare_and_swap {
        // The swap below succeeds only if "c" is stored at the revision of this write.
        let (written, _) = b
            .persist_expiring("c", bytes("1"), MINUTE)
            .await
            .expect("persist_expiring");
        let revision = Some(written.revision());
        let swap = b
            .compare_and_swap("c", revision, Some(bytes("2")))
            .await
            .expect("cas");
        assert!(matches!(swap, Swap::Swapped(_)), "{swap:?}");
        assert_eq!(expiry_of(&b.durables().await.expect("durables"), "c"), None);
    }
}

/// `now` reads the store's clock: it lies between the store's times of writes made around it.
pub async fn store_clock_is_close(ctx: &Ctx) {
    ctx.require(ctx.capabilities().expiry, "expiry");
    let b = ctx.backend("clock").await;
    let (_, first) = b
        .persist_expiring("a", bytes("1"), Duration::ZERO)
        .await
        .expect("persist_expiring");
    // Real time between the three readings is the point: each must be ordered after the one
    // before, not merely equal to it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = b.now().await.expect("now");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_, last) = b
        .persist_expiring("b", bytes("1"), Duration::ZERO)
        .await
        .expect("persist_expiring");
    assert!(
        first <= now && now <= last,
        "now() = {now} is not between the writes around it ({first}, {last})"
    );
    let local = StoreTime::from_system_time(std::time::SystemTime::now());
    assert!(
        now.0.abs_diff(local.0) < 3_600_000,
        "the store's clock ({now}) is more than an hour from this machine's ({local})"
    );
}

/// `sweep` deletes exactly the expired entries, in one step with one bump, records them as
/// deletes for deltas, and returns their keys; a sweep with nothing expired bumps nothing.
pub async fn sweep_removes_only_expired_entries(ctx: &Ctx) {
    ctx.require(ctx.capabilities().expiry, "expiry");
    let b = ctx.backend("sweep").await;
    b.persist("permanent", bytes("p")).await.expect("persist");
    b.persist_expiring("long", bytes("l"), Duration::from_secs(3600))
        .await
        .expect("persist_expiring");
    let t = token(&*b).await;
    assert_eq!(b.sweep().await.expect("sweep"), None, "nothing expired yet");
    assert_eq!(token(&*b).await, t, "an empty sweep bumped");
    let mut expired_at = StoreTime(0);
    for key in ["short1", "short2"] {
        let (_, at) = b
            .persist_expiring(key, bytes("s"), Duration::from_millis(200))
            .await
            .expect("persist_expiring");
        expired_at = expired_at.max(at);
    }
    wait_for_store_time(&*b, expired_at).await;
    let before = token(&*b).await;
    assert_eq!(
        entries(&*b).await.len(),
        4,
        "expired entries stay stored until a sweep"
    );
    let swept = b
        .sweep()
        .await
        .expect("sweep")
        .expect("two entries expired");
    let mut keys = swept.keys.clone();
    keys.sort();
    assert_eq!(keys, ["short1", "short2"]);
    assert_eq!(swept.version.counter(), before.counter() + 1, "one bump");
    assert_eq!(token(&*b).await, swept.version);
    let left: Vec<String> = entries(&*b).await.into_keys().collect();
    assert_eq!(left, ["long", "permanent"]);
    if ctx.capabilities().delta {
        let Changes::Delta(delta) = b.changes_since(before).await.expect("changes") else {
            panic!("a delta from the token before the sweep");
        };
        let mut removed = delta.removals;
        removed.sort();
        assert_eq!(
            removed,
            ["short1", "short2"],
            "swept keys are deletes in deltas"
        );
        assert!(delta.upserts.is_empty());
    }
    assert_eq!(b.sweep().await.expect("sweep"), None);
    assert_eq!(token(&*b).await, swept.version);
}

/// An entry with a TTL disappears from every handle's reads once it expires, with no sync (the
/// expiry travelled with the entry, in a delta or in a full load); a sweep by any handle then removes it from the store, and
/// the other handles and their listeners see a delete.
pub async fn expired_entry_is_hidden_by_every_handle(ctx: &Ctx) {
    ctx.require(ctx.capabilities().expiry, "expiry");
    let ttl = Duration::from_millis(1500);
    let a = ctx.dict("ttl-read", Mode::Manual).await;
    let b = ctx.dict("ttl-read", Mode::Manual).await;
    a.insert("keep", b"k".to_vec()).await.expect("insert");
    a.insert_with_ttl("gone", b"g".to_vec(), ttl)
        .await
        .expect("insert_with_ttl");
    // Opened after the writes: its snapshot is one full load, where the others hold the
    // entries as changes since theirs.
    let c = ctx.dict("ttl-read", Mode::Manual).await;
    assert_eq!(c.snapshot().get("gone"), Some(&b"g".to_vec()));
    let seen = b.sync().await.expect("sync");
    assert_eq!(
        seen.get("gone"),
        Some(&b"g".to_vec()),
        "visible before it expires"
    );
    assert!(seen.expires_at("gone").is_some());
    assert_eq!(seen.expires_at("keep"), None);
    drop(seen);
    let mut listener = a.subscribe();
    let backend = ctx.backend("ttl-read").await;
    let at = latest_expiry(&a, &["gone"]);
    wait_until_expired(&*backend, at, &[&a, &b, &c], &["gone"]).await;
    for (name, dict) in [("writer", &a), ("reader", &b), ("loaded", &c)] {
        let snapshot = dict.snapshot();
        assert_eq!(
            snapshot.get("gone"),
            None,
            "{name} still shows the expired entry"
        );
        assert!(!snapshot.contains_key("gone"));
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot.keys().collect::<Vec<_>>(), ["keep"]);
    }
    let before = b.snapshot().version();
    assert_eq!(b.sweep().await.expect("sweep"), 1);
    assert_ne!(
        b.snapshot().version(),
        before,
        "the sweep bumped the version"
    );
    assert!(
        !entries(&*backend).await.contains_key("gone"),
        "swept from the store"
    );
    assert_eq!(
        a.sync().await.expect("sync").version(),
        b.snapshot().version()
    );
    let change = tokio::time::timeout(HINT_WAIT, listener.recv())
        .await
        .expect("a change event")
        .expect("an event");
    assert_eq!(&*change.key, "gone");
    assert_eq!(change.kind, ChangeKind::Removed);
}

/// Writes through a handle whose snapshot holds an expired entry sweep the store soon after,
/// without anyone calling `sweep`.
pub async fn writes_sweep_expired_entries_lazily(ctx: &Ctx) {
    ctx.require(ctx.capabilities().expiry, "expiry");
    let a = ctx.dict("ttl-lazy", Mode::Manual).await;
    a.insert_with_ttl("gone", b"g".to_vec(), Duration::from_millis(300))
        .await
        .expect("insert_with_ttl");
    let backend = ctx.backend("ttl-lazy").await;
    let at = latest_expiry(&a, &["gone"]);
    wait_until_expired(&*backend, at, &[&a], &["gone"]).await;
    a.insert("other", b"o".to_vec()).await.expect("insert");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while entries(&*backend).await.contains_key("gone") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a write did not sweep the expired entry"
        );
        // The poll interval.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(entries(&*backend).await.contains_key("other"));
}

/// A key whose entry has expired is absent for conditional writes too: insert-if-absent stores,
/// an increment starts from 0, and a delete reports it absent.
pub async fn expired_key_is_absent_for_conditional_writes(ctx: &Ctx) {
    ctx.require(ctx.capabilities().expiry, "expiry");
    let caps = ctx.capabilities();
    let d = ctx.counters("ttl-cond", Mode::Manual).await;
    let ttl = Duration::from_millis(300);
    for key in ["a", "n", "r"] {
        d.insert_with_ttl(key, 41, ttl)
            .await
            .expect("insert_with_ttl");
    }
    let backend = ctx.backend("ttl-cond").await;
    let at = latest_expiry(&d, &["a", "n", "r"]);
    wait_until_expired(&*backend, at, &[&d], &["a", "n", "r"]).await;
    if caps.insert_if_absent {
        assert!(d.insert_if_absent("a", 1).await.expect("insert_if_absent"));
        assert_eq!(d.snapshot().get("a"), Some(&1));
    }
    if caps.increment || caps.compare_and_swap {
        assert_eq!(d.increment("n", 1).await.expect("increment").0, 1);
    }
    assert!(
        d.remove("r").await.expect("remove").is_none(),
        "an expired key is absent"
    );
    let stored = backend.durables().await.expect("durables");
    assert!(
        stored.entries.iter().all(|e| e.expires_at.is_none()),
        "what is left is permanent: {stored:?}"
    );
}
