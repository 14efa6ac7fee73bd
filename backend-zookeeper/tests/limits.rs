//! Writes larger than one ZooKeeper request, against the ZooKeeper in `DURABLE_TEST_ZOOKEEPER`:
//! a batch or a clear whose multi would pass `jute.maxbuffer` is refused before anything is
//! sent, with a typed error that says what to do instead, and the dictionary stays as it was.

mod common;

use bytes::Bytes;
use durable_core::conformance::run;
use durable_core::{BatchOp, Error, Operation};

/// Entries written; with keys of [`KEY_LEN`] bytes, about 128 deletes fit in one request.
const ENTRIES: usize = 300;
/// Long keys (plain ASCII, so their znode names are as long) make few entries fill a request.
const KEY_LEN: usize = 4000;

fn key(i: usize) -> String {
    format!("{i:04}{}", "x".repeat(KEY_LEN - 4))
}

fn puts(range: std::ops::Range<usize>) -> Vec<BatchOp> {
    range
        .map(|i| BatchOp::Put {
            key: key(i),
            value: Bytes::from_static(b"v"),
        })
        .collect()
}

/// The operation and message of a refused write.
fn refusal(error: Error) -> (Operation, String) {
    match error {
        Error::Backend {
            operation, source, ..
        } => (operation, source.to_string()),
        other => panic!("expected Error::Backend, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_or_batch_larger_than_one_request_is_refused_and_changes_nothing() {
    run(common::harness().await, |ctx| async move {
        let backend = ctx.backend("too-big").await;
        for start in (0..ENTRIES).step_by(100) {
            backend
                .persist_batch(puts(start..start + 100))
                .await
                .expect("a batch that fits");
        }
        let before = backend.last_updated().await.expect("last_updated");

        let (operation, message) = refusal(backend.clear().await.expect_err("too large"));
        assert_eq!(operation, Operation::Clear);
        assert!(
            message.contains("more than ZooKeeper accepts in one request")
                && message.ends_with("delete the entries in batches instead"),
            "{message}"
        );

        let deletes = (0..ENTRIES)
            .map(|i| BatchOp::Delete { key: key(i) })
            .collect();
        let (operation, message) =
            refusal(backend.persist_batch(deletes).await.expect_err("too large"));
        assert_eq!(operation, Operation::Batch);
        assert!(message.ends_with("split it"), "{message}");

        assert_eq!(backend.last_updated().await.expect("last_updated"), before);
        let stored = backend.durables().await.expect("load");
        assert_eq!(stored.entries.len(), ENTRIES);
        assert_eq!(stored.version, before);

        // In batches that fit, the same deletes go through.
        for start in (0..ENTRIES).step_by(100) {
            let deletes = (start..start + 100)
                .map(|i| BatchOp::Delete { key: key(i) })
                .collect();
            backend
                .persist_batch(deletes)
                .await
                .expect("a batch that fits");
        }
        assert!(backend.durables().await.expect("load").entries.is_empty());
        assert_eq!(backend.clear().await.expect("clear"), None);
    })
    .await;
}
