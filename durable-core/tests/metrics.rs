//! The `metrics` feature: a handle's counters, gauges and timings reach the installed recorder,
//! labelled by backend and dictionary.

use std::time::Duration;

use durable_core::{Dict, Json, MemoryStore, Options};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

type Snapshot = [(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)];

fn find<'a>(
    metrics: &'a Snapshot,
    name: &str,
    label: Option<(&str, &str)>,
) -> Option<&'a DebugValue> {
    metrics.iter().find_map(|(key, _, _, value)| {
        let key_ref = key.key();
        let labels: Vec<_> = key_ref.labels().map(|l| (l.key(), l.value())).collect();
        let matches = key_ref.name() == name
            && labels.contains(&("backend", "memory"))
            && labels.contains(&("dictionary", "memory/ns/flags"))
            && label.is_none_or(|l| labels.contains(&l));
        matches.then_some(value)
    })
}

#[tokio::test]
async fn a_handle_reports_its_metrics_to_the_installed_recorder() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let store = MemoryStore::new();
    let flags: Dict<bool> = Dict::open(store.backend("ns", "flags").unwrap(), Json, Options::new())
        .await
        .unwrap();
    flags.insert("a", true).await.unwrap();
    flags.insert("b", false).await.unwrap();
    flags.sync().await.unwrap();
    store.set_available(false);
    assert!(flags.sync().await.is_err());
    tokio::time::sleep(Duration::from_millis(5)).await;

    let metrics = snapshotter.snapshot().into_vec();
    let stats = flags.stats();
    assert_eq!(
        find(&metrics, "durable_checks_total", None),
        Some(&DebugValue::Counter(stats.checks))
    );
    assert_eq!(
        find(&metrics, "durable_writes_total", None),
        Some(&DebugValue::Counter(2))
    );
    assert_eq!(
        find(
            &metrics,
            "durable_errors_total",
            Some(("kind", "unavailable"))
        ),
        Some(&DebugValue::Counter(1))
    );
    match find(&metrics, "durable_entries", None) {
        Some(DebugValue::Gauge(entries)) => assert_eq!(entries.into_inner(), 2.0),
        other => panic!("{other:?}"),
    }
    match find(&metrics, "durable_fresh", None) {
        Some(DebugValue::Gauge(fresh)) => assert_eq!(fresh.into_inner(), 0.0),
        other => panic!("{other:?}"),
    }
    match find(&metrics, "durable_check_seconds", None) {
        Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 2, "one per sync"),
        other => panic!("{other:?}"),
    }
    assert!(
        metrics
            .iter()
            .all(|(key, ..)| key.kind() != MetricKind::Counter
                || key.key().name().starts_with("durable_")),
        "only durable's metrics"
    );
}
