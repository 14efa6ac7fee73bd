//! Rules for stored data: values and keys round-trip, loads match their token.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;

use bytes::Bytes;

use super::{Ctx, bytes, entries, token};
use crate::{
    Backend, BatchOp, Error, Load, LoadParts, Mode, Result, Revision, Rows, StoredEntry, Version,
};

async fn round_trip(ctx: &Ctx, dictionary: &str, value: Bytes) {
    let b = ctx.backend(dictionary).await;
    b.persist("k", value.clone()).await.expect("persist");
    let other = ctx.backend(dictionary).await;
    let stored = entries(&*other).await;
    assert!(
        stored.get("k") == Some(&value),
        "value of {} bytes changed in the store",
        value.len()
    );
    let d = ctx.dict(dictionary, Mode::Manual).await;
    assert_eq!(d.snapshot().get("k").map(Vec::as_slice), Some(&value[..]));
}

/// Binary values (every byte value) are stored unchanged.
pub async fn round_trip_binary(ctx: &Ctx) {
    let value: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    round_trip(ctx, "binary", value.into()).await;
}

/// The empty value is stored and is not confused with a missing key.
pub async fn round_trip_empty(ctx: &Ctx) {
    round_trip(ctx, "empty", Bytes::new()).await;
}

/// Unicode text is stored unchanged.
pub async fn round_trip_unicode(ctx: &Ctx) {
    round_trip(ctx, "unicode", bytes("héllo wörld ✓ 日本語 🎉")).await;
}

/// A 1 MiB value (or one at the backend's limit) is stored unchanged; one byte more than the
/// limit fails with `ValueTooLarge` and writes nothing.
pub async fn round_trip_large(ctx: &Ctx) {
    let limit = ctx.capabilities().max_value_size;
    let size = limit.map_or(1 << 20, |l| l.min(1 << 20));
    let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    round_trip(ctx, "large", value.into()).await;
    if let Some(limit) = limit {
        let b = ctx.backend("large").await;
        let t = token(&*b).await;
        let err = b.persist("big", Bytes::from(vec![7u8; limit + 1])).await;
        assert!(
            matches!(err, Err(Error::ValueTooLarge { .. })),
            "got {err:?}"
        );
        assert_eq!(token(&*b).await, t, "a rejected value bumped the version");
        assert!(!entries(&*b).await.contains_key("big"));
    }
}

/// Any string is a key: empty, path and glob characters, quotes, spaces, unicode, 1 KiB.
pub async fn keys_are_arbitrary_strings(ctx: &Ctx) {
    let mut keys: Vec<String> = [
        "",
        "/",
        "a/b",
        "/lead",
        "trail/",
        ".",
        "..",
        ":",
        "a:b",
        "*",
        "?",
        "[",
        "]",
        "a*b?c[d]",
        "%",
        "%2F",
        "'",
        "\"",
        "\\",
        " ",
        "with space",
        " padded ",
        "é",
        "日本",
        "🎉",
        "K",
        "k",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    keys.push("x".repeat(1024));
    keys.push("é".repeat(512));
    let b = ctx.backend("keys").await;
    let expected: BTreeMap<String, Bytes> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), bytes(i.to_string())))
        .collect();
    for (key, value) in &expected {
        b.persist(key, value.clone())
            .await
            .unwrap_or_else(|e| panic!("persist {key:?}: {e}"));
    }
    assert_eq!(entries(&*b).await, expected);
    let d = ctx.dict("keys", Mode::Manual).await;
    for (key, value) in &expected {
        assert_eq!(
            d.snapshot().get(key).map(Vec::as_slice),
            Some(&value[..]),
            "key {key:?}"
        );
    }
    for key in ["/", "..", ""] {
        assert!(
            b.depersist(key).await.expect("depersist").is_some(),
            "delete {key:?}"
        );
    }
    let left = entries(&*b).await;
    assert_eq!(left.len(), expected.len() - 3);
    assert!(!left.contains_key("..") && !left.contains_key("") && left.contains_key("."));
}

/// Persisting an existing key replaces its value.
pub async fn overwrite_replaces_value(ctx: &Ctx) {
    let b = ctx.backend("overwrite").await;
    b.persist("k", bytes("one")).await.expect("persist");
    b.persist("k", bytes("two")).await.expect("persist");
    let stored = entries(&*b).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored["k"], bytes("two"));
}

/// Depersist removes the key; a second depersist finds nothing.
pub async fn depersist_removes_key(ctx: &Ctx) {
    let b = ctx.backend("depersist").await;
    b.persist("k", bytes("v")).await.expect("persist");
    b.persist("other", bytes("v")).await.expect("persist");
    assert!(b.depersist("k").await.expect("depersist").is_some());
    assert!(!entries(&*b).await.contains_key("k"));
    assert!(b.depersist("k").await.expect("depersist").is_none());
    assert!(entries(&*b).await.contains_key("other"));
}

/// A key never written is absent from loads and snapshots.
pub async fn missing_key_is_absent(ctx: &Ctx) {
    let b = ctx.backend("missing").await;
    assert!(entries(&*b).await.is_empty());
    let d = ctx.dict("missing", Mode::Manual).await;
    assert!(d.snapshot().get("nope").is_none());
    assert!(d.snapshot().is_empty());
}

/// How a rule reads a full load.
#[derive(Clone, Copy)]
enum Via {
    /// [`Backend::durables`].
    Whole,
    /// [`Backend::durables_in_parts`].
    Parts,
}

/// The rows [`Backend::durables_in_parts`] hands over since its last restart.
#[derive(Default)]
struct Handed(Vec<StoredEntry>);

impl Handed {
    /// `load`'s token and every row: those handed over, then those it returned.
    fn with(mut self, load: Load) -> (Version, Vec<StoredEntry>) {
        self.0.extend(load.entries);
        (load.version, self.0)
    }
}

impl LoadParts for Handed {
    fn rows(&mut self, rows: Rows) {
        self.0.extend(rows);
    }

    fn restart(&mut self) {
        self.0.clear();
    }
}

/// A full load read with [`Backend::durables_in_parts`]: its token and every row, those handed
/// over (after the last [`restart`](LoadParts::restart)) and those returned.
pub async fn load_in_parts(backend: &dyn Backend) -> Result<(Version, Vec<StoredEntry>)> {
    let mut handed = Handed::default();
    let load = backend.durables_in_parts(&mut handed).await?;
    Ok(handed.with(load))
}

/// A full load cut short by [`load_cut_after_its_first_part`].
#[derive(Debug)]
pub struct CutLoad {
    /// What the load returned.
    pub load: Result<Load>,
    /// The rows it handed over after its last [`restart`](LoadParts::restart).
    pub handed: Vec<StoredEntry>,
    /// True if the cut ran (the load handed a part over).
    pub cut: bool,
}

/// A [`Handed`] that runs `cut` when it receives its first part.
struct Cutting<Fut> {
    handed: Handed,
    cut: Option<Fut>,
}

impl<Fut: Future<Output = ()> + Send> LoadParts for Cutting<Fut> {
    fn rows(&mut self, rows: Rows) {
        self.handed.rows(rows);
        if let Some(cut) = self.cut.take() {
            let runtime = tokio::runtime::Handle::current();
            tokio::task::block_in_place(|| runtime.block_on(cut));
        }
    }

    fn restart(&mut self) {
        self.handed.restart();
    }
}

/// For a backend's own fault tests: a full load of `backend` in parts
/// ([`Backend::durables_in_parts`]) that runs `cut` (a server stopped, a connection killed)
/// when the first part is handed over, while the load waits. A load cut short must fail as
/// [unavailable](Error::is_unavailable), or return with [`CutLoad::handed`] every row once:
/// never fewer. Needs a multi-threaded runtime (the load blocks its thread while `cut` runs).
/// Make the load larger than what the connection buffers, or the cut may land after the last
/// row has arrived.
pub async fn load_cut_after_its_first_part(
    backend: &dyn Backend,
    cut: impl Future<Output = ()> + Send,
) -> CutLoad {
    let mut parts = Cutting {
        handed: Handed::default(),
        cut: Some(cut),
    };
    let load = backend.durables_in_parts(&mut parts).await;
    CutLoad {
        load,
        handed: parts.handed.0,
        cut: parts.cut.is_none(),
    }
}

/// A full load read `via` one method or the other: its token and every row.
async fn load_via(b: &dyn Backend, via: Via) -> (Version, Vec<StoredEntry>) {
    match via {
        Via::Whole => Handed::default().with(b.durables().await.expect("durables")),
        Via::Parts => load_in_parts(b).await.expect("durables_in_parts"),
    }
}

/// Loads (read `via`) of a dictionary holding `before` entries return exactly the entries of
/// the state their token names, each once (and, read whole, each with the revision of its
/// write), while a writer adds 60 more.
async fn loads_match_their_tokens(ctx: &Ctx, dictionary: &str, via: Via, before: usize) {
    let writer = ctx.backend(dictionary).await;
    let reader = ctx.backend(dictionary).await;
    let earlier: Vec<String> = (0..before).map(|i| format!("before{i}")).collect();
    if before > 0 {
        let ops = earlier.iter().map(|key| BatchOp::Put {
            key: key.clone(),
            value: bytes("v"),
        });
        writer.persist_batch(ops.collect()).await.expect("batch");
    }
    let start = token(&*writer).await;
    let writes = 60u64;
    let task = tokio::spawn(async move {
        for i in 0..writes {
            writer
                .persist(&format!("k{i}"), bytes(i.to_string()))
                .await
                .expect("persist");
        }
    });
    loop {
        let done = task.is_finished();
        let (version, rows) = load_via(&*reader, via).await;
        assert_eq!(version.epoch(), start.epoch());
        let n = version.counter() - start.counter();
        let keys: HashSet<&str> = rows.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys.len(),
            rows.len(),
            "a key came twice in the load at {version}"
        );
        let written: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
        let expected: HashSet<&str> = earlier.iter().chain(&written).map(String::as_str).collect();
        assert_eq!(keys, expected, "load at {version} does not match its token");
        // Revisions are `load_is_consistent_with_its_token`'s (a layout without revisions per
        // entry is excepted from it), not what reading in parts changes.
        let revisions = matches!(via, Via::Whole);
        for entry in rows.iter().filter(|e| revisions && e.key.starts_with('k')) {
            let i: u64 = entry.key[1..].parse().expect("key");
            assert_eq!(
                entry.revision,
                Revision(start.counter() + i + 1),
                "revision of {}",
                entry.key
            );
        }
        if done {
            break;
        }
    }
    task.await.expect("writer");
}

/// `durables` returns exactly the entries of the state its token names, even while a writer is
/// busy.
pub async fn load_is_consistent_with_its_token(ctx: &Ctx) {
    loads_match_their_tokens(ctx, "consistent", Via::Whole, 0).await;
}

/// `durables_in_parts` hands over and returns exactly the rows `durables` would (each once,
/// those handed before a restart forgotten), even while a writer is busy. With capability
/// `batch` the dictionary first holds 2,500 entries, more than one part of any backend here.
pub async fn load_in_parts_is_the_load(ctx: &Ctx) {
    let before = if ctx.capabilities().batch { 2_500 } else { 0 };
    loads_match_their_tokens(ctx, "in-parts", Via::Parts, before).await;
}
