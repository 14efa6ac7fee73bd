//! Rules for [`DurableSet`](crate::DurableSet) over the backend.

use std::time::Duration;

use super::{Ctx, entries};
use crate::Mode;

/// A set adds, removes and tests members, syncs to other handles like a dictionary, and adding a
/// present member bumps nothing (where the backend has insert-if-absent).
pub async fn set_insert_remove_contains(ctx: &Ctx) {
    let a = ctx.set("set", Mode::Manual).await;
    let b = ctx
        .set(
            "set",
            Mode::Autosync {
                max_staleness: Duration::ZERO,
            },
        )
        .await;
    for member in ["ada", "grace", "a \"quoted\" /key"] {
        assert!(
            a.insert(member.to_owned()).await.expect("insert"),
            "{member} is new"
        );
    }
    let version = a.snapshot().version();
    assert!(
        !a.insert("ada".to_owned()).await.expect("insert"),
        "ada was present"
    );
    if ctx.capabilities().insert_if_absent {
        assert_eq!(
            a.snapshot().version(),
            version,
            "adding a member again bumped"
        );
    }
    assert!(b.contains(&"grace".to_owned()).await);
    assert_eq!(b.len().await, 3);
    assert!(a.remove(&"grace".to_owned()).await.expect("remove"));
    assert!(
        !a.remove(&"grace".to_owned()).await.expect("remove"),
        "already gone"
    );
    assert!(
        !b.contains(&"grace".to_owned()).await,
        "autosync sees the removal"
    );
    let mut members: Vec<String> = b.read().await.iter().cloned().collect();
    members.sort();
    assert_eq!(members, ["a \"quoted\" /key", "ada"]);
    assert!(!b.is_empty().await);
    let stored = entries(&*ctx.backend("set").await).await;
    assert!(
        stored.contains_key("\"ada\""),
        "members are stored under their JSON text"
    );
}

/// `insert_many` and `remove_many` change every member in one atomic step with one bump.
pub async fn set_batch_is_one_atomic_step(ctx: &Ctx) {
    ctx.require(ctx.capabilities().batch, "batch");
    let a = ctx.set("set-batch", Mode::Manual).await;
    let b = ctx.set("set-batch", Mode::Manual).await;
    let start = a.snapshot().version();
    let members = ["x", "y", "z"].map(String::from);
    let added = a
        .insert_many(members.clone())
        .await
        .expect("insert_many")
        .expect("a bump");
    assert_eq!(
        added.counter(),
        start.counter() + 1,
        "one bump for three members"
    );
    let seen = b.sync().await.expect("sync");
    assert_eq!(seen.len(), 3);
    assert_eq!(seen.version(), added);
    let removed = a
        .remove_many(&members[..2])
        .await
        .expect("remove_many")
        .expect("a bump");
    assert_eq!(removed.counter(), added.counter() + 1);
    assert_eq!(
        a.remove_many(&members[..2]).await.expect("remove_many"),
        None,
        "removing absent members bumps nothing"
    );
    let seen = b.sync().await.expect("sync");
    assert_eq!(seen.iter().collect::<Vec<_>>(), [&"z".to_owned()]);
}
