//! Rules for delta sync (capability `delta`).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Ctx, bytes, token};
use crate::{Backend, Changes, Mode, Version};

/// `changes_since` returns every key written or deleted after the token, and the new token.
pub async fn delta_reports_inserts_updates_and_deletes(ctx: &Ctx) {
    ctx.require(ctx.capabilities().delta, "delta");
    let b = ctx.backend("delta").await;
    for k in ["a", "b", "c"] {
        b.persist(k, bytes(k)).await.expect("persist");
    }
    let t = token(&*b).await;
    b.persist("a", bytes("a2")).await.expect("persist");
    b.depersist("b").await.expect("depersist");
    b.persist("d", bytes("d")).await.expect("persist");
    let Changes::Delta(delta) = b.changes_since(t).await.expect("changes") else {
        panic!("a recent token was answered TooOld");
    };
    assert_eq!(delta.version, token(&*b).await);
    let upserts: BTreeMap<String, Bytes> = delta
        .upserts
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    let expected: BTreeMap<String, Bytes> = [
        ("a".to_string(), bytes("a2")),
        ("d".to_string(), bytes("d")),
    ]
    .into();
    assert_eq!(upserts, expected);
    assert_eq!(delta.removals, ["b"]);

    let d = ctx.dict("delta-engine", Mode::Manual).await;
    let w = ctx.backend("delta-engine").await;
    w.persist("x", bytes("1")).await.expect("persist");
    w.persist("y", bytes("2")).await.expect("persist");
    let before = d.stats();
    let snapshot = d.sync().await.expect("sync");
    assert_eq!(snapshot.len(), 2);
    assert_eq!(
        d.stats().deltas,
        before.deltas + 1,
        "the handle used a delta"
    );
    assert_eq!(
        d.stats().reloads,
        before.reloads,
        "the handle did not reload"
    );
}

/// The delta since the current token is empty.
pub async fn delta_of_current_token_is_empty(ctx: &Ctx) {
    ctx.require(ctx.capabilities().delta, "delta");
    let b = ctx.backend("delta-now").await;
    b.persist("a", bytes("1")).await.expect("persist");
    b.depersist("a").await.expect("depersist");
    let t = token(&*b).await;
    match b.changes_since(t).await.expect("changes") {
        Changes::Delta(delta) => {
            assert_eq!(delta.version, t);
            assert!(
                delta.upserts.is_empty() && delta.removals.is_empty(),
                "{delta:?}"
            );
        }
        Changes::TooOld => panic!("the current token was answered TooOld"),
    }
}

/// A token from another epoch, or older than the retained history, gets `TooOld`; handles then
/// reload in full and end up correct.
pub async fn delta_falls_back_when_too_old(ctx: &Ctx) {
    ctx.require(ctx.capabilities().delta, "delta");
    let b = ctx.backend("too-old").await;
    let d = ctx.dict("too-old", Mode::Manual).await;
    b.persist("a", bytes("1")).await.expect("persist");
    let t = token(&*b).await;
    let foreign = Version::stamped(t.epoch() ^ 1, t.counter(), t.stamp(), t.parent());
    assert_eq!(
        b.changes_since(foreign).await.expect("changes"),
        Changes::TooOld
    );
    if ctx.capabilities().stamps {
        let other_history = Version::stamped(t.epoch(), t.counter(), t.stamp() ^ 1, t.parent());
        assert_eq!(
            b.changes_since(other_history).await.expect("changes"),
            Changes::TooOld,
            "a token whose stamp is not the one recorded for its counter was served a delta"
        );
        let ahead = Version::stamped(t.epoch(), t.counter() + 5, t.stamp(), t.parent());
        assert_eq!(
            b.changes_since(ahead).await.expect("changes"),
            Changes::TooOld,
            "a token ahead of the store was served a delta"
        );
    }
    b.persist("b", bytes("2")).await.expect("persist");
    b.depersist("a").await.expect("depersist");
    d.sync().await.expect("sync");
    b.persist("c", bytes("3")).await.expect("persist");
    b.depersist("b").await.expect("depersist");
    ctx.harness
        .forget_history(&ctx.namespace, &Ctx::name("too-old"))
        .await
        .expect("forget history");
    assert_eq!(b.changes_since(t).await.expect("changes"), Changes::TooOld);
    let before = d.stats();
    let snapshot = d.sync().await.expect("sync");
    let keys: Vec<&str> = snapshot.keys().collect();
    assert_eq!(keys, vec!["c"]);
    assert_eq!(
        d.stats().reloads,
        before.reloads + 1,
        "the handle reloaded in full"
    );
}
