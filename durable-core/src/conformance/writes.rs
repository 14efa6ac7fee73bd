//! Rules for conditional writes: insert-if-absent, compare-and-swap, pop, increment, batch, clear.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::{Ctx, assert_step, bytes, entries, require_counting, token};
use crate::{Backend, BatchOp, Error, IfAbsent, Mode, Revision, Swap};

/// Insert-if-absent stores an absent key and leaves a present one alone.
pub async fn insert_if_absent_keeps_existing(ctx: &Ctx) {
    ctx.require(ctx.capabilities().insert_if_absent, "insert_if_absent");
    let b = ctx.backend("setdefault").await;
    let v = match b
        .persist_if_absent("k", bytes("first"))
        .await
        .expect("insert")
    {
        IfAbsent::Inserted(v) => v,
        other => panic!("got {other:?}"),
    };
    match b
        .persist_if_absent("k", bytes("second"))
        .await
        .expect("insert")
    {
        IfAbsent::Present(entry) => {
            assert_eq!(entry.value, bytes("first"));
            assert_eq!(entry.revision, v.revision());
        }
        other => panic!("got {other:?}"),
    }
    assert_eq!(entries(&*b).await["k"], bytes("first"));
    let d = ctx.dict("setdefault", Mode::Manual).await;
    assert_eq!(
        *d.setdefault("k", b"third".to_vec())
            .await
            .expect("setdefault"),
        b"first"
    );
    assert_eq!(
        *d.setdefault("new", b"x".to_vec())
            .await
            .expect("setdefault"),
        b"x"
    );
    assert_eq!(d.snapshot().get("new"), Some(&b"x".to_vec()));
}

/// Compare-and-swap writes only when the entry's revision (or absence) matches.
pub async fn compare_and_swap_checks_revision(ctx: &Ctx) {
    ctx.require(ctx.capabilities().compare_and_swap, "compare_and_swap");
    let b = ctx.backend("cas").await;
    let Swap::Swapped(v1) = b
        .compare_and_swap("k", None, Some(bytes("a")))
        .await
        .expect("cas")
    else {
        panic!("cas expecting absence on an absent key failed");
    };
    match b
        .compare_and_swap("k", None, Some(bytes("b")))
        .await
        .expect("cas")
    {
        Swap::Conflict(Some(entry)) => {
            assert_eq!(entry.value, bytes("a"));
            assert_eq!(entry.revision, v1.revision());
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let Swap::Swapped(v2) = b
        .compare_and_swap("k", Some(v1.revision()), Some(bytes("b")))
        .await
        .expect("cas")
    else {
        panic!("cas with the current revision failed");
    };
    let stale = b
        .compare_and_swap("k", Some(v1.revision()), None)
        .await
        .expect("cas");
    assert!(matches!(stale, Swap::Conflict(Some(_))), "got {stale:?}");
    assert!(matches!(
        b.compare_and_swap("k", Some(v2.revision()), None)
            .await
            .expect("cas"),
        Swap::Swapped(_)
    ));
    assert!(!entries(&*b).await.contains_key("k"));

    let d = ctx.dict("cas", Mode::Manual).await;
    d.insert("n", b"1".to_vec()).await.expect("insert");
    let current = d.snapshot().get_versioned("n").expect("present");
    assert!(matches!(
        d.compare_and_swap("n", Some(current.revision), Some(b"2".to_vec()))
            .await,
        Ok(crate::Cas::Swapped { .. })
    ));
    assert!(matches!(
        d.compare_and_swap("n", Some(current.revision), Some(b"3".to_vec()))
            .await,
        Ok(crate::Cas::Conflict { current: Some(_) })
    ));
    assert_eq!(d.snapshot().get("n"), Some(&b"2".to_vec()));
    let updated = d
        .update("n", |v| v.map(|v| [v.as_slice(), b"+"].concat()))
        .await
        .expect("update");
    assert_eq!(updated.as_deref(), Some(&b"2+".to_vec()));
}

/// Of many concurrent compare-and-swaps from the same revision, exactly one wins.
pub async fn concurrent_compare_and_swap_has_one_winner(ctx: &Ctx) {
    ctx.require(ctx.capabilities().compare_and_swap, "compare_and_swap");
    let tasks = 6;
    let mut backends = Vec::new();
    for _ in 0..tasks {
        backends.push(Arc::new(ctx.backend("cas-race").await));
    }
    let mut expected: Option<Revision> = None;
    for round in 0..5 {
        let barrier = Arc::new(tokio::sync::Barrier::new(tasks));
        let mut handles = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let (b, barrier) = (b.clone(), barrier.clone());
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                let value = bytes(format!("{round}-{i}"));
                b.compare_and_swap("k", expected, Some(value))
                    .await
                    .expect("cas")
            }));
        }
        let mut winners = Vec::new();
        for h in handles {
            if let Swap::Swapped(v) = h.await.expect("task") {
                winners.push(v);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        expected = Some(winners[0].revision());
    }
}

/// Pop deletes the key and returns its value, in one step.
pub async fn pop_returns_and_deletes(ctx: &Ctx) {
    ctx.require(ctx.capabilities().pop, "pop");
    let b = ctx.backend("pop").await;
    let v = b.persist("k", bytes("v")).await.expect("persist");
    let (value, w) = b.pop("k").await.expect("pop").expect("k existed");
    assert_eq!(value, bytes("v"));
    assert_eq!(w.counter(), v.counter() + 1);
    assert!(!entries(&*b).await.contains_key("k"));
    assert_eq!(b.pop("k").await.expect("pop"), None);
    let d = ctx.dict("pop", Mode::Manual).await;
    d.insert("p", b"x".to_vec()).await.expect("insert");
    let (value, popped) = d.pop("p").await.expect("pop").expect("p existed");
    assert_eq!(value, b"x".to_vec());
    assert!(d.snapshot().get("p").is_none());
    assert_eq!(popped, token(&*b).await, "pop returns the token it wrote");
}

/// Increment adds to the stored decimal integer (absent counts as 0).
pub async fn increment_adds_atomically(ctx: &Ctx) {
    ctx.require(ctx.capabilities().increment, "increment");
    let b = ctx.backend("incr").await;
    assert_eq!(b.increment("k", 5).await.expect("increment").0, 5);
    assert_eq!(b.increment("k", -7).await.expect("increment").0, -2);
    assert_eq!(entries(&*b).await["k"], bytes("-2"));
    let d = ctx.counters("incr", Mode::Manual).await;
    assert_eq!(d.snapshot().get("k"), Some(&-2));
    let (value, written) = d.increment("k", 10).await.expect("increment");
    assert_eq!(value, 8);
    assert_eq!(d.snapshot().get("k"), Some(&8));
    assert_eq!(
        written,
        token(&*b).await,
        "increment returns the token it wrote"
    );
}

/// Increment of a value that is not a decimal integer, or that would overflow, fails with
/// `NotAnInteger` and writes nothing.
pub async fn increment_rejects_non_integers(ctx: &Ctx) {
    ctx.require(ctx.capabilities().increment, "increment");
    let b = ctx.backend("incr-bad").await;
    b.persist("text", bytes("abc")).await.expect("persist");
    b.persist("max", bytes(i64::MAX.to_string()))
        .await
        .expect("persist");
    let t = token(&*b).await;
    for key in ["text", "max"] {
        let result = b.increment(key, 1).await;
        assert!(
            matches!(result, Err(Error::NotAnInteger { .. })),
            "{key}: {result:?}"
        );
    }
    assert_eq!(token(&*b).await, t, "a failed increment bumped");
    assert_eq!(entries(&*b).await["text"], bytes("abc"));
}

/// Concurrent increments from many handles lose no update.
pub async fn concurrent_increments_lose_nothing(ctx: &Ctx) {
    require_counting(ctx);
    let (tasks, each) = (6, 15);
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let d = ctx.counters("incr-race", Mode::Manual).await;
        handles.push(tokio::spawn(async move {
            for _ in 0..each {
                d.increment("n", 1).await.expect("increment");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let d = ctx.counters("incr-race", Mode::Manual).await;
    assert_eq!(d.snapshot().get("n"), Some(&(tasks * each)));
}

/// A batch applies every operation in order with one version bump.
pub async fn batch_writes_all_keys_with_one_bump(ctx: &Ctx) {
    ctx.require(ctx.capabilities().batch, "batch");
    let b = ctx.backend("batch").await;
    b.persist("gone", bytes("x")).await.expect("persist");
    let t = token(&*b).await;
    let ops = vec![
        BatchOp::Put {
            key: "a".into(),
            value: bytes("1"),
        },
        BatchOp::Put {
            key: "b".into(),
            value: bytes("2"),
        },
        BatchOp::Delete { key: "gone".into() },
        BatchOp::Put {
            key: "a".into(),
            value: bytes("3"),
        },
        BatchOp::Delete { key: "b".into() },
    ];
    let v = b.persist_batch(ops).await.expect("batch").expect("changed");
    assert_step(ctx, v, t);
    let expected: BTreeMap<String, Bytes> = [("a".to_string(), bytes("3"))].into();
    assert_eq!(entries(&*b).await, expected);
    let d = ctx.dict("batch", Mode::Manual).await;
    let many: Vec<(String, Vec<u8>)> = (0..100).map(|i| (format!("m{i}"), vec![i as u8])).collect();
    d.insert_many(many).await.expect("insert_many");
    assert_eq!(d.snapshot().len(), 101);
    d.remove_many((0..50).map(|i| format!("m{i}")))
        .await
        .expect("remove_many");
    assert_eq!(d.snapshot().len(), 51);
    assert_eq!(entries(&*b).await.len(), 51);
}

/// Readers see all of a batch or none of it; a batch with a rejected value writes nothing.
pub async fn batch_is_all_or_nothing(ctx: &Ctx) {
    ctx.require(ctx.capabilities().batch, "batch");
    let writer = ctx.backend("atomic").await;
    let reader = ctx.backend("atomic").await;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let batch_keys = keys.clone();
    let task = tokio::spawn(async move {
        for round in 0..25u32 {
            let ops = batch_keys
                .iter()
                .map(|k| BatchOp::Put {
                    key: k.clone(),
                    value: bytes(round.to_string()),
                })
                .collect();
            writer.persist_batch(ops).await.expect("batch");
        }
    });
    loop {
        let done = task.is_finished();
        let stored = entries(&*reader).await;
        let values: HashSet<&Bytes> = stored.values().collect();
        assert!(values.len() <= 1, "a load saw a partial batch: {values:?}");
        assert!(stored.is_empty() || stored.len() == keys.len());
        if done {
            break;
        }
    }
    task.await.expect("writer");
    if let Some(limit) = ctx.capabilities().max_value_size {
        let t = token(&*reader).await;
        let ops = vec![
            BatchOp::Put {
                key: "small".into(),
                value: bytes("1"),
            },
            BatchOp::Put {
                key: "huge".into(),
                value: Bytes::from(vec![0u8; limit + 1]),
            },
        ];
        assert!(reader.persist_batch(ops).await.is_err());
        assert_eq!(token(&*reader).await, t);
        assert!(!entries(&*reader).await.contains_key("small"));
    }
}

/// Clear deletes every entry with one bump, and a handle behind it catches up, also after
/// later writes (a delta or a full load: a store may answer tokens from before a clear with a
/// full load instead of a tombstone per key).
pub async fn clear_deletes_everything(ctx: &Ctx) {
    ctx.require(ctx.capabilities().clear, "clear");
    let b = ctx.backend("clear").await;
    let d = ctx.dict("clear", Mode::Manual).await;
    let behind = ctx.dict("clear", Mode::Manual).await;
    b.persist("a", bytes("1")).await.expect("persist");
    b.persist("b", bytes("2")).await.expect("persist");
    let t = token(&*b).await;
    d.sync().await.expect("sync");
    behind.sync().await.expect("sync");
    let v = b.clear().await.expect("clear").expect("changed");
    assert_step(ctx, v, t);
    assert!(entries(&*b).await.is_empty());
    assert!(d.sync().await.expect("sync").is_empty());
    b.persist("b", bytes("4")).await.expect("persist");
    let caught_up = behind.sync().await.expect("sync");
    assert_eq!(caught_up.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(caught_up.get("b"), Some(&b"4".to_vec()));
    b.depersist("b").await.expect("depersist");
    assert!(d.sync().await.expect("sync").is_empty());
    d.insert("c", b"3".to_vec()).await.expect("insert");
    assert!(d.clear().await.expect("clear").is_some());
    assert!(d.snapshot().is_empty());
    assert!(entries(&*b).await.is_empty());
}
