//! Rules for push hints (capability `push`) and for an unreachable store.

use std::time::Duration;

use super::{Ctx, HINT_WAIT, MINUTE, bytes, options};
use crate::{Backend, Dict, Hint, Mode, Options, Raw, Result};

/// After `subscribe`, a write through another backend value produces a hint soon after, and a
/// background-mode handle picks the change up long before its polling interval.
pub async fn push_hint_follows_a_write(ctx: &Ctx) {
    ctx.require(ctx.capabilities().push, "push");
    let listener = ctx.backend("push").await;
    let writer = ctx.backend("push").await;
    let mut hints = listener.subscribe().await.expect("subscribe");
    writer.persist("k", bytes("1")).await.expect("persist");
    let hint = tokio::time::timeout(HINT_WAIT, hints.next()).await;
    assert!(
        matches!(hint, Ok(Some(Hint::Changed))),
        "no hint after a write: {hint:?}"
    );

    let options = options(Mode::background(Duration::from_secs(3600)));
    let d: Dict<Vec<u8>, Raw> = Dict::open(ctx.backend("push").await, Raw, options)
        .await
        .expect("open");
    writer.persist("k", bytes("2")).await.expect("persist");
    let deadline = tokio::time::Instant::now() + HINT_WAIT;
    while d.snapshot().get("k") != Some(&b"2".to_vec()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hint did not wake the handle"
        );
        // The poll interval.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An unreachable store gives `Unavailable` or `Timeout` errors in bounded time, never a panic,
/// and a handle cannot be opened on it without a backup.
pub async fn unavailable_store_gives_typed_errors(ctx: &Ctx) {
    let b = ctx
        .harness
        .open_unreachable(&ctx.namespace, &Ctx::name("down"))
        .await
        .expect("harness opens an unreachable backend");
    let limit = Duration::from_secs(30);
    let check = |what: &str, result: Result<()>| match result {
        Err(e) if e.is_unavailable() => {}
        other => panic!("{what} on an unreachable store gave {other:?}"),
    };
    let t = tokio::time::timeout(limit, b.last_updated())
        .await
        .expect("bounded");
    check("last_updated", t.map(drop));
    let l = tokio::time::timeout(limit, b.durables())
        .await
        .expect("bounded");
    check("durables", l.map(drop));
    let p = tokio::time::timeout(limit, b.persist("k", bytes("v")))
        .await
        .expect("bounded");
    check("persist", p.map(drop));
    let d = tokio::time::timeout(limit, b.depersist("k"))
        .await
        .expect("bounded");
    check("depersist", d.map(drop));
    if b.capabilities().expiry {
        let n = tokio::time::timeout(limit, b.now()).await.expect("bounded");
        check("now", n.map(drop));
        let e = tokio::time::timeout(limit, b.persist_expiring("k", bytes("v"), MINUTE))
            .await
            .expect("bounded");
        check("persist_expiring", e.map(drop));
        let s = tokio::time::timeout(limit, b.sweep())
            .await
            .expect("bounded");
        check("sweep", s.map(drop));
    }
    let options = Options::new().with_open_timeout(limit).with_timeout(limit);
    let opened = Dict::<Vec<u8>, Raw>::open(b, Raw, options).await;
    match opened {
        Err(e) if e.is_unavailable() => {}
        other => panic!("open on an unreachable store gave {other:?}"),
    }
}
