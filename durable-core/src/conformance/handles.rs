//! Rules for handles ([`Dict`](crate::Dict)) over the backend: manual and autosync modes,
//! read-your-writes.

use super::{Ctx, bytes, token};
use crate::{Backend, Mode};

/// A manual-mode handle sees another handle's writes after `sync()`, not before.
pub async fn two_handles_manual_mode(ctx: &Ctx) {
    let a = ctx.dict("manual", Mode::Manual).await;
    let b = ctx.dict("manual", Mode::Manual).await;
    a.insert("k", b"1".to_vec()).await.expect("insert");
    assert!(
        b.snapshot().get("k").is_none(),
        "manual mode read without a sync"
    );
    assert!(
        b.read().await.get("k").is_none(),
        "manual mode read() does not sync"
    );
    assert_eq!(b.sync().await.expect("sync").get("k"), Some(&b"1".to_vec()));
    a.insert("k", b"2".to_vec()).await.expect("insert");
    a.insert("j", b"3".to_vec()).await.expect("insert");
    assert!(a.remove("k").await.expect("remove").is_some());
    let snapshot = b.sync().await.expect("sync");
    assert!(snapshot.get("k").is_none());
    assert_eq!(snapshot.get("j"), Some(&b"3".to_vec()));
    assert_eq!(snapshot.version(), a.snapshot().version());
}

/// An autosync-mode handle sees every write acknowledged before its read began.
pub async fn two_handles_autosync_mode(ctx: &Ctx) {
    let a = ctx.dict("auto", Mode::Manual).await;
    let b = ctx.dict("auto", Mode::autosync()).await;
    for i in 0..5u8 {
        a.insert("k", vec![i]).await.expect("insert");
        assert_eq!(b.read().await.get("k"), Some(&vec![i]));
    }
    a.remove("k").await.expect("remove");
    assert!(b.read().await.get("k").is_none());
}

/// After its own write, a handle's snapshot has the write, without a reload; a sync then adds
/// what other processes wrote meanwhile.
pub async fn read_your_writes(ctx: &Ctx) {
    let a = ctx.dict("ryw", Mode::Manual).await;
    let other = ctx.backend("ryw").await;
    a.insert("mine", b"1".to_vec()).await.expect("insert");
    assert_eq!(a.snapshot().get("mine"), Some(&b"1".to_vec()));
    let before = a.stats();
    a.sync().await.expect("sync");
    let after = a.stats();
    assert_eq!(after.reloads, before.reloads, "own write caused a reload");
    assert_eq!(after.deltas, before.deltas, "own write caused a delta");
    other.persist("theirs", bytes("2")).await.expect("persist");
    a.insert("mine2", b"3".to_vec()).await.expect("insert");
    assert_eq!(a.snapshot().get("mine2"), Some(&b"3".to_vec()));
    let snapshot = a.sync().await.expect("sync");
    assert_eq!(snapshot.get("theirs"), Some(&b"2".to_vec()));
    assert_eq!(snapshot.get("mine2"), Some(&b"3".to_vec()));
    assert_eq!(snapshot.version(), token(&*other).await);
    let removed = a
        .remove("mine")
        .await
        .expect("remove")
        .expect("mine existed");
    assert!(a.snapshot().get("mine").is_none());
    assert_eq!(
        a.snapshot().version(),
        removed,
        "the snapshot is at the delete's token"
    );
}
