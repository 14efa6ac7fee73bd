//! The fault workload of the conformance suite against the memory store: several handles write
//! and sync while the store is put back to an earlier copy of itself.

use std::time::Duration;

use durable_core::conformance::workload::{RawDict, Workload};
use durable_core::{Dict, MemoryStore, Options, Raw};

async fn handle(store: &MemoryStore) -> RawDict {
    let backend = store.backend("ns", "restored").expect("valid names");
    Dict::open(backend, Raw, Options::new())
        .await
        .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_follow_a_store_put_back_while_they_write_and_sync() {
    let store = MemoryStore::new();
    store.set_latency(Duration::from_micros(200));
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..4 {
        writers.push(handle(&store).await);
        readers.push(handle(&store).await);
    }
    let fault = async {
        let copy = store.copy("ns", "restored").expect("copy");
        tokio::time::sleep(Duration::from_millis(500)).await;
        store.put_back("ns", "restored", &copy).expect("put back");
    };
    let report = Workload::default()
        .run(writers, readers, fault, Duration::from_millis(500), || {
            handle(&store)
        })
        .await;
    eprintln!("{report:?}");
    assert!(report.writes > 200, "the workload wrote: {report:?}");
    assert!(
        report.regressions_followed > 0,
        "handles saw the store go back: {report:?}"
    );
    assert_eq!(report.anomalies(), 0, "{report:?}");
}
