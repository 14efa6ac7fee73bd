//! Rules for a store put back to an earlier state of itself, for a damaged version record (the
//! second half of the contract's "Tokens" section), and for bad rows written by other programs.

use std::collections::BTreeMap;

use super::{Ctx, Damage, Garbage, bytes, token};
use crate::{Backend, Changes, Dict, Error, Mode, Raw, Version};

/// What handle `d` holds, key by key.
fn contents(d: &Dict<Vec<u8>, Raw>) -> BTreeMap<String, Vec<u8>> {
    d.snapshot()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
}

/// Syncs `d` and asserts that it then holds exactly what a fresh handle loads, at the same token.
async fn assert_converged(ctx: &Ctx, dictionary: &str, d: &Dict<Vec<u8>, Raw>, what: &str) {
    let version = d.sync().await.expect("sync").version();
    let fresh = ctx.dict(dictionary, Mode::Manual).await;
    assert_eq!(
        contents(d),
        contents(&fresh),
        "{what}: the handle does not hold what a fresh handle loads"
    );
    assert_eq!(
        version,
        fresh.snapshot().version(),
        "{what}: the handle's token is not the store's"
    );
}

/// Asserts that `changes_since` serves none of `tokens` (when the backend has deltas).
async fn assert_too_old(ctx: &Ctx, b: &dyn Backend, tokens: &[Version], what: &str) {
    if !ctx.capabilities().delta {
        return;
    }
    for t in tokens {
        assert_eq!(
            b.changes_since(*t).await.expect("changes"),
            Changes::TooOld,
            "{what}: a delta was served to token {t}, which names a state the store no longer has"
        );
    }
}

/// A store put back to an earlier state of itself gets a token that differs from every token
/// issued after that state; deltas from those tokens get `TooOld`, and handles converge.
pub async fn restore_is_detected(ctx: &Ctx) {
    let b = ctx.backend("restored").await;
    let d = ctx.dict("restored", Mode::Manual).await;
    for i in 0..3 {
        b.persist(&format!("k{i}"), bytes("old"))
            .await
            .expect("persist");
    }
    let copy = ctx.copy_stored("restored").await;
    let mut issued = Vec::new();
    for i in 0..3 {
        issued.push(
            b.persist(&format!("k{i}"), bytes("lost"))
                .await
                .expect("persist"),
        );
    }
    issued.push(b.persist("extra", bytes("lost")).await.expect("persist"));
    issued.push(
        b.depersist("k0")
            .await
            .expect("depersist")
            .expect("existed"),
    );
    let synced = d.sync().await.expect("sync").version();
    assert_eq!(synced, *issued.last().expect("tokens"));
    ctx.put_back("restored", copy).await;
    let now = token(&*b).await;
    assert!(
        !issued.contains(&now),
        "after the restore, the store's token {now} equals a token issued after the copy"
    );
    assert_too_old(ctx, &*b, &issued, "after a restore").await;
    assert_converged(ctx, "restored", &d, "after a restore").await;
    let expected: BTreeMap<String, Vec<u8>> =
        (0..3).map(|i| (format!("k{i}"), b"old".to_vec())).collect();
    assert_eq!(
        contents(&d),
        expected,
        "the handle holds the restored state"
    );
}

/// Writes after a restore draw fresh stamps: even once the counter passes the old one, no token
/// repeats one issued before the restore, old tokens get `TooOld`, and a handle that held the
/// lost state converges, including on a key written again at the same revision.
pub async fn restore_then_writes_past_old_counter_is_detected(ctx: &Ctx) {
    ctx.require(ctx.capabilities().stamps, "stamps");
    let b = ctx.backend("rewritten").await;
    let d = ctx.dict("rewritten", Mode::Manual).await;
    b.persist("a", bytes("1")).await.expect("persist");
    b.persist("b", bytes("1")).await.expect("persist");
    let copy = ctx.copy_stored("rewritten").await;
    let mut issued = Vec::new();
    for key in ["a", "b", "c"] {
        issued.push(b.persist(key, bytes("2")).await.expect("persist"));
    }
    let old = d.sync().await.expect("sync").version();
    ctx.put_back("rewritten", copy).await;
    // The first write after the restore stores key "a" at the very revision the lost write of
    // "a" had, with another value; later writes touch other keys only, so a delta from the old
    // token would not mention "a".
    let other = ctx.backend("rewritten").await;
    let mut written = vec![other.persist("a", bytes("3")).await.expect("persist")];
    for i in 0..4 {
        written.push(
            other
                .persist(&format!("x{i}"), bytes("3"))
                .await
                .expect("persist"),
        );
    }
    assert!(
        written.iter().any(|v| v.counter() == old.counter()),
        "the new writes reached the old counter"
    );
    assert!(
        written.iter().any(|v| v.counter() > old.counter()),
        "the new writes passed the old counter"
    );
    for v in &written {
        assert!(
            !issued.contains(v),
            "a write after the restore returned token {v}, already issued for another state"
        );
    }
    assert_too_old(ctx, &*b, &issued, "after a restore and new writes").await;
    assert_converged(ctx, "rewritten", &d, "after a restore and new writes").await;
    assert_eq!(
        d.snapshot().get("a"),
        Some(&b"3".to_vec()),
        "key a was rewritten at its old revision"
    );
    assert!(d.snapshot().get("c").is_none(), "key c was lost");
}

/// A handle holding a state from before a restore sees its own writes the moment they return,
/// and converges on the store's contents.
pub async fn restore_keeps_read_your_writes(ctx: &Ctx) {
    let d = ctx.dict("ryw-restore", Mode::Manual).await;
    for i in 0..3 {
        d.insert(&format!("k{i}"), b"old".to_vec())
            .await
            .expect("insert");
    }
    let copy = ctx.copy_stored("ryw-restore").await;
    for i in 0..3 {
        d.insert(&format!("k{i}"), b"lost".to_vec())
            .await
            .expect("insert");
    }
    d.insert("gone", b"lost".to_vec()).await.expect("insert");
    ctx.put_back("ryw-restore", copy).await;
    for i in 0..6 {
        let value = format!("mine{i}").into_bytes();
        d.insert("k1", value.clone()).await.expect("insert");
        assert_eq!(
            d.snapshot().get("k1"),
            Some(&value),
            "write {i} after the restore is invisible to its writer"
        );
    }
    assert_converged(ctx, "ryw-restore", &d, "a writer after a restore").await;
    assert!(d.snapshot().get("gone").is_none(), "a lost key stayed");
    assert_eq!(d.snapshot().get("k0"), Some(&b"old".to_vec()));
}

/// A damaged version record never yields a token issued before: reads give `Damaged` or a token
/// of a fresh epoch; a write either treats the record as wiped (fresh epoch, counter above
/// every stored revision) or fails with `Damaged` having written nothing.
pub async fn damaged_version_record_is_a_wipe_or_writes_nothing(ctx: &Ctx) {
    let mut tested = 0;
    for (i, damage) in Damage::ALL.into_iter().enumerate() {
        let name = format!("damaged-{i}");
        let b = ctx.backend(&name).await;
        let d = ctx.dict(&name, Mode::Manual).await;
        let mut issued = vec![b.persist("a", bytes("1")).await.expect("persist")];
        issued.push(b.persist("n", bytes("5")).await.expect("persist"));
        assert_eq!(d.sync().await.expect("sync").len(), 2);
        if !ctx.damage_version_record(&name, damage).await {
            eprintln!("damage {damage:?}: the store's layout cannot hold it");
            continue;
        }
        tested += 1;
        let what = format!("after damage {damage:?}");
        match b.last_updated().await {
            Ok(v) => assert!(
                !issued.contains(&v) && v.epoch() != issued[0].epoch(),
                "{what}: last_updated returned {v}, not a fresh epoch"
            ),
            Err(e) => assert_damaged(&e, &what),
        }
        if ctx.capabilities().increment {
            match b.increment("n", 1).await {
                Ok((6, v)) => assert_fresh(&*b, v, &issued, &what).await,
                Ok(other) => panic!("{what}: increment gave {other:?}"),
                Err(e) => {
                    assert_damaged(&e, &what);
                    assert_unchanged(&*b, "n", b"5", &what).await;
                }
            }
        }
        match b.persist("c", bytes("3")).await {
            Ok(v) => {
                assert_fresh(&*b, v, &issued, &what).await;
                assert_converged(ctx, &name, &d, &what).await;
                assert_eq!(d.snapshot().get("c"), Some(&b"3".to_vec()));
                assert_eq!(d.snapshot().get("a"), Some(&b"1".to_vec()));
            }
            Err(e) => {
                assert_damaged(&e, &what);
                assert_unchanged(&*b, "c", b"", &what).await;
                match d.sync().await {
                    Ok(_) => assert!(d.snapshot().get("c").is_none()),
                    Err(e) => assert_damaged(&e, &what),
                }
            }
        }
    }
    assert!(tested > 0, "the harness damaged no version record");
}

fn assert_damaged(e: &Error, what: &str) {
    assert!(
        matches!(e, Error::Damaged { .. }),
        "{what}: expected a Damaged error, got {e:?}"
    );
}

/// A write that succeeded on a damaged record started a fresh epoch above every stored revision.
async fn assert_fresh(b: &dyn Backend, v: Version, issued: &[Version], what: &str) {
    assert!(
        !issued.contains(&v) && v.epoch() != issued[0].epoch(),
        "{what}: the write returned {v}, not a token of a fresh epoch"
    );
    let load = b.durables().await.expect("load after the repairing write");
    assert_eq!(
        load.version, v,
        "{what}: the load is not at the write's token"
    );
    for entry in &load.entries {
        assert!(
            entry.revision.0 <= v.counter(),
            "{what}: entry {:?} has revision {} above the new counter {}",
            entry.key,
            entry.revision,
            v.counter()
        );
    }
    let written: Vec<_> = load
        .entries
        .iter()
        .filter(|e| e.revision.0 == v.counter())
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(
        written.len(),
        1,
        "{what}: exactly the written key has the write's revision, got {written:?}"
    );
}

/// After a refused write, `key` still holds `value` (empty: absent), if the store can be read.
async fn assert_unchanged(b: &dyn Backend, key: &str, value: &[u8], what: &str) {
    match b.durables().await {
        Ok(load) => {
            let stored = load
                .entries
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.to_vec())
                .unwrap_or_default();
            assert_eq!(stored, value, "{what}: a refused write changed key {key:?}");
        }
        Err(e) => assert_damaged(&e, what),
    }
}

/// Bad data another program wrote into the store (an undecodable value, a key that is not UTF-8,
/// a value of the wrong type, a malformed or stray record) costs that key only: syncs and opens
/// succeed, every other key is served, the key keeps its last good value, health names it, and
/// writing the key again clears it.
pub async fn bad_rows_cost_their_key_only(ctx: &Ctx) {
    let mut tested = 0;
    for (i, garbage) in Garbage::ALL.into_iter().enumerate() {
        let name = format!("garbage-{i}");
        let d = ctx.counters(&name, Mode::Manual).await;
        d.insert("good", 1).await.expect("insert");
        d.insert("victim", 2).await.expect("insert");
        if !ctx.write_garbage(&name, garbage, "victim").await {
            eprintln!("garbage {garbage:?}: the store's layout cannot hold it");
            continue;
        }
        tested += 1;
        let what = format!("after garbage {garbage:?}");
        let snapshot = d
            .sync()
            .await
            .unwrap_or_else(|e| panic!("{what}: sync failed: {e}"));
        assert_eq!(snapshot.get("good"), Some(&1), "{what}");
        assert_eq!(
            snapshot.get("victim"),
            Some(&2),
            "{what}: the key keeps its last good value"
        );
        drop(snapshot);
        if garbage.damages_the_key() {
            let bad = d.health().bad_keys;
            assert!(
                bad.iter().any(|b| b.key == "victim"),
                "{what}: health does not name the key: {bad:?}"
            );
        }
        let fresh = ctx.counters(&name, Mode::Manual).await;
        assert_eq!(fresh.snapshot().get("good"), Some(&1), "{what}");
        assert!(
            !fresh.health().bad_keys.is_empty(),
            "{what}: a handle opened over the bad row does not report it"
        );
        d.insert("victim", 3).await.expect("rewrite");
        let snapshot = fresh.sync().await.expect("sync after the rewrite");
        assert_eq!(snapshot.get("victim"), Some(&3), "{what}");
        drop(snapshot);
        if garbage.damages_the_key() {
            assert!(
                fresh.health().bad_keys.iter().all(|b| b.key != "victim"),
                "{what}: rewriting the key did not clear it"
            );
        }
    }
    assert!(tested > 0, "the harness wrote no garbage");
}
