//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`; the names
//! are listed in the crate's README). Counters and gauges are brought up to date after every
//! check and every write; without the feature, all of this compiles to nothing.

use std::time::Duration;

#[cfg(feature = "metrics")]
pub(crate) use enabled::Exporter;

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::Exporter;

#[cfg(feature = "metrics")]
mod enabled {
    use super::*;
    use crate::stats::Stats;
    use metrics::{Counter, Gauge, Histogram, Label};

    /// The metric handles of one dictionary handle.
    pub(crate) struct Exporter {
        labels: Vec<Label>,
        checks: Counter,
        unchanged: Counter,
        deltas: Counter,
        reloads: Counter,
        regressions: Counter,
        merges: Counter,
        coalesced: Counter,
        hint_skips: Counter,
        writes: Counter,
        entries: Gauge,
        bytes: Gauge,
        age: Gauge,
        fresh: Gauge,
        bad_keys: Gauge,
        check_seconds: Histogram,
        load_seconds: Histogram,
    }

    impl Exporter {
        pub(crate) fn new(backend: &str, dictionary: &str) -> Self {
            let labels = vec![
                Label::new("backend", backend.to_owned()),
                Label::new("dictionary", dictionary.to_owned()),
            ];
            let counter = |name: &'static str| metrics::counter!(name, labels.iter());
            let gauge = |name: &'static str| metrics::gauge!(name, labels.iter());
            let histogram = |name: &'static str| metrics::histogram!(name, labels.iter());
            Exporter {
                checks: counter("durable_checks_total"),
                unchanged: counter("durable_unchanged_total"),
                deltas: counter("durable_deltas_total"),
                reloads: counter("durable_reloads_total"),
                regressions: counter("durable_regressions_total"),
                merges: counter("durable_merges_total"),
                coalesced: counter("durable_coalesced_total"),
                hint_skips: counter("durable_hint_skips_total"),
                writes: counter("durable_writes_total"),
                entries: gauge("durable_entries"),
                bytes: gauge("durable_bytes"),
                age: gauge("durable_snapshot_age_seconds"),
                fresh: gauge("durable_fresh"),
                bad_keys: gauge("durable_bad_keys"),
                check_seconds: histogram("durable_check_seconds"),
                load_seconds: histogram("durable_load_seconds"),
                labels,
            }
        }

        /// Brings counters and gauges up to date with `stats`.
        #[expect(clippy::cast_precision_loss, reason = "gauges are f64")]
        pub(crate) fn export(&self, stats: &Stats, fresh: bool) {
            self.checks.absolute(stats.checks);
            self.unchanged.absolute(stats.unchanged);
            self.deltas.absolute(stats.deltas);
            self.reloads.absolute(stats.reloads);
            self.regressions.absolute(stats.regressions);
            self.merges.absolute(stats.merges);
            self.coalesced.absolute(stats.coalesced);
            self.hint_skips.absolute(stats.hint_skips);
            self.writes.absolute(stats.writes);
            self.entries.set(stats.entries as f64);
            self.bytes.set(stats.bytes as f64);
            self.age.set(stats.age.as_secs_f64());
            self.fresh.set(if fresh { 1.0 } else { 0.0 });
            self.bad_keys.set(stats.bad_keys as f64);
        }

        pub(crate) fn error(&self, error: &crate::Error) {
            let mut labels = self.labels.clone();
            labels.push(Label::new("kind", error.kind()));
            metrics::counter!("durable_errors_total", labels).increment(1);
        }

        pub(crate) fn check_took(&self, took: Duration) {
            self.check_seconds.record(took.as_secs_f64());
        }

        pub(crate) fn load_took(&self, took: Duration) {
            self.load_seconds.record(took.as_secs_f64());
        }
    }

    impl std::fmt::Debug for Exporter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Exporter")
                .field("labels", &self.labels)
                .finish_non_exhaustive()
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use super::*;

    /// Without the `metrics` feature: nothing.
    #[derive(Debug)]
    pub(crate) struct Exporter;

    impl Exporter {
        pub(crate) fn new(_backend: &str, _dictionary: &str) -> Self {
            Exporter
        }

        pub(crate) fn error(&self, _error: &crate::Error) {}

        pub(crate) fn check_took(&self, _took: Duration) {}

        pub(crate) fn load_took(&self, _took: Duration) {}
    }
}
