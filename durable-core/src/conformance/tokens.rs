//! Rules for version tokens (the first half of the contract's "Tokens" section).

use std::collections::HashSet;

use super::{Ctx, assert_follows, assert_step, bytes, token};
use crate::{Backend, BatchOp, IfAbsent, Mode, Revision, Swap, Version};

/// `last_updated` returns equal tokens as long as nothing is written, from any backend value.
pub async fn version_is_stable_without_writes(ctx: &Ctx) {
    let b = ctx.backend("stable").await;
    let empty = token(&*b).await;
    assert_eq!(empty, token(&*b).await, "two checks of an empty dictionary");
    b.persist("k", bytes("v")).await.expect("persist");
    let t = token(&*b).await;
    assert_eq!(t, token(&*b).await);
    let other = ctx.backend("stable").await;
    assert_eq!(
        t,
        token(&*other).await,
        "another connection sees the same token"
    );
    assert_eq!(t, b.durables().await.expect("durables").version);
}

/// Every write that changes the dictionary returns a new token, and `last_updated` returns it.
pub async fn version_changes_on_every_write(ctx: &Ctx) {
    let b = ctx.backend("changes").await;
    let caps = ctx.capabilities();
    let mut seen = HashSet::new();
    seen.insert(token(&*b).await);
    let mut check = |v: Version, what: &str| {
        assert!(seen.insert(v), "{what} returned a token seen before: {v}");
        v
    };
    let v = check(
        b.persist("a", bytes("1")).await.expect("persist"),
        "persist",
    );
    assert_eq!(token(&*b).await, v);
    let v = check(
        b.persist("a", bytes("1")).await.expect("persist"),
        "persist of an equal value",
    );
    assert_eq!(token(&*b).await, v);
    let v = b
        .depersist("a")
        .await
        .expect("depersist")
        .expect("a existed");
    assert_eq!(token(&*b).await, check(v, "depersist"));
    if caps.insert_if_absent {
        match b
            .persist_if_absent("n", bytes("1"))
            .await
            .expect("insert if absent")
        {
            IfAbsent::Inserted(v) => assert_eq!(token(&*b).await, check(v, "insert if absent")),
            other => panic!("insert of an absent key gave {other:?}"),
        }
    }
    if caps.compare_and_swap {
        match b
            .compare_and_swap("c", None, Some(bytes("1")))
            .await
            .expect("cas")
        {
            Swap::Swapped(v) => assert_eq!(token(&*b).await, check(v, "compare and swap")),
            other => panic!("cas on an absent key expecting absence gave {other:?}"),
        }
    }
    if caps.increment {
        let (_, v) = b.increment("i", 1).await.expect("increment");
        assert_eq!(token(&*b).await, check(v, "increment"));
    }
    if caps.pop {
        let (_, v) = b.pop("i").await.expect("pop").expect("i existed");
        assert_eq!(token(&*b).await, check(v, "pop"));
    }
    if caps.batch {
        let ops = vec![BatchOp::Put {
            key: "x".into(),
            value: bytes("1"),
        }];
        let v = b
            .persist_batch(ops)
            .await
            .expect("batch")
            .expect("batch changed something");
        assert_eq!(token(&*b).await, check(v, "batch"));
    }
    if caps.clear {
        let v = b
            .clear()
            .await
            .expect("clear")
            .expect("dictionary was not empty");
        assert_eq!(token(&*b).await, check(v, "clear"));
    }
}

/// A write that changes something sets the counter to the previous one plus one, same epoch.
pub async fn writes_step_the_counter_by_one(ctx: &Ctx) {
    let b = ctx.backend("step").await;
    let mut before = token(&*b).await;
    for i in 0..3 {
        let v = b
            .persist(&format!("k{i}"), bytes("v"))
            .await
            .expect("persist");
        assert_eq!(v.epoch(), before.epoch(), "a write kept the epoch");
        assert_eq!(
            v.counter(),
            before.counter() + 1,
            "a write bumps the counter by one"
        );
        assert_follows(ctx, v, before);
        assert_eq!(
            token(&*b).await.parent(),
            v.parent(),
            "last_updated has the parent"
        );
        before = v;
    }
    let v = b
        .depersist("k0")
        .await
        .expect("depersist")
        .expect("k0 existed");
    assert_step(ctx, v, before);
    if ctx.capabilities().batch {
        let ops = (0..3)
            .map(|i| BatchOp::Put {
                key: format!("b{i}"),
                value: bytes("v"),
            })
            .collect();
        let w = b.persist_batch(ops).await.expect("batch").expect("changed");
        assert_step(ctx, w, v);
    }
}

/// Operations that change nothing leave the token unchanged and return no new token.
pub async fn no_op_writes_bump_nothing(ctx: &Ctx) {
    let b = ctx.backend("noop").await;
    let caps = ctx.capabilities();
    b.persist("present", bytes("1")).await.expect("persist");
    let t = token(&*b).await;
    assert_eq!(b.depersist("missing").await.expect("depersist"), None);
    assert_eq!(
        token(&*b).await,
        t,
        "deleting a missing key bumped the version"
    );
    if caps.insert_if_absent {
        match b
            .persist_if_absent("present", bytes("2"))
            .await
            .expect("insert if absent")
        {
            IfAbsent::Present(entry) => assert_eq!(entry.value, bytes("1")),
            other => panic!("insert of a present key gave {other:?}"),
        }
        assert_eq!(
            token(&*b).await,
            t,
            "insert-if-absent of a present key bumped"
        );
    }
    if caps.compare_and_swap {
        let outcome = b
            .compare_and_swap("present", Some(Revision(u64::MAX)), Some(bytes("3")))
            .await
            .expect("cas");
        assert!(
            matches!(outcome, Swap::Conflict(Some(_))),
            "got {outcome:?}"
        );
        let outcome = b
            .compare_and_swap("missing", None, None)
            .await
            .expect("cas");
        assert_eq!(outcome, Swap::Conflict(None));
        assert_eq!(token(&*b).await, t, "a failed compare-and-swap bumped");
    }
    if caps.pop {
        assert_eq!(b.pop("missing").await.expect("pop"), None);
        assert_eq!(token(&*b).await, t, "popping a missing key bumped");
    }
    if caps.batch {
        let ops = vec![BatchOp::Delete {
            key: "missing".into(),
        }];
        assert_eq!(b.persist_batch(ops).await.expect("batch"), None);
        assert_eq!(
            b.persist_batch(Vec::new()).await.expect("empty batch"),
            None
        );
        assert_eq!(token(&*b).await, t, "a batch that changed nothing bumped");
    }
    if caps.clear {
        let empty = ctx.backend("noop-empty").await;
        let t = token(&*empty).await;
        assert_eq!(empty.clear().await.expect("clear"), None);
        assert_eq!(
            token(&*empty).await,
            t,
            "clearing an empty dictionary bumped"
        );
    }
}

/// A dictionary deleted behind the backend's back gets tokens that differ from every earlier one,
/// and handles reload it.
pub async fn wipe_is_detected(ctx: &Ctx) {
    let b = ctx.backend("wiped").await;
    let d = ctx.dict("wiped", Mode::Manual).await;
    let first = b.persist("a", bytes("1")).await.expect("persist");
    b.persist("b", bytes("2")).await.expect("persist");
    d.sync().await.expect("sync");
    assert_eq!(d.snapshot().len(), 2);
    ctx.wipe("wiped").await;
    let after = token(&*b).await;
    assert_ne!(after, first);
    let again = b
        .persist("c", bytes("3"))
        .await
        .expect("persist after wipe");
    assert_ne!(
        again, first,
        "the first write after a wipe repeated an old token"
    );
    let snapshot = d.sync().await.expect("sync after wipe");
    let keys: Vec<&str> = snapshot.keys().collect();
    assert_eq!(keys, vec!["c"], "the handle reloaded the wiped dictionary");
}
