//! Evaluations per second, with and without targeting, beside a plain snapshot `get` in the
//! same run.
//!
//! `cargo bench -p durable-openfeature --bench evaluate` runs the criterion groups, then prints
//! a summary table (ns per evaluation, evaluations per second, cost relative to `get`) and
//! writes it to `target/openfeature-evaluate.json`.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use criterion::Criterion;
use durable_core::{Dict, Json, MemoryStore, Options};
use durable_openfeature::open_feature::provider::FeatureProvider;
use durable_openfeature::open_feature::{Client, EvaluationContext, OpenFeature};
use durable_openfeature::{DurableProvider, FlagStore, ImportMode};
use serde_json::{Value, json};

struct Setup {
    store: FlagStore,
    provider: DurableProvider,
    client: Client,
    context: EvaluationContext,
}

/// Polls a future that never waits (everything here is in memory) to completion.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the benchmarked call waited"),
    }
}

fn setup() -> Setup {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let memory = MemoryStore::new();
        let dict: Dict<Value, Json> =
            Dict::open(memory.backend("bench", "flags").unwrap(), Json, Options::new())
                .await
                .unwrap();
        let store = FlagStore::new(dict);
        let mut flags = serde_json::Map::new();
        // 1,000 flags, so lookups are not in a toy map.
        for i in 0..1000 {
            flags.insert(
                format!("flag-{i}"),
                json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}),
            );
        }
        flags.insert(
            "static".into(),
            json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}),
        );
        flags.insert(
            "by-attribute".into(),
            json!({
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"in": [{"var": "plan"}, ["pro", "enterprise"]]}, "on", "off"]}
            }),
        );
        flags.insert(
            "rollout".into(),
            json!({
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"fractional": [["on", 25], ["off", 75]]}
            }),
        );
        flags.insert(
            "sem-ver".into(),
            json!({
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"sem_ver": [{"var": "version"}, ">=", "2.1.0"]}, "on", "off"]}
            }),
        );
        store
            .import_json(&json!({ "flags": flags }), ImportMode::Replace)
            .await
            .unwrap();
        let mut api = OpenFeature::default();
        api.set_provider(DurableProvider::new(store.clone())).await;
        let client = api.create_client();
        let context = EvaluationContext::default()
            .with_targeting_key("user-4711")
            .with_custom_field("plan", "pro")
            .with_custom_field("version", "2.3.1")
            .with_custom_field("country", "NZ");
        let provider = DurableProvider::new(store.clone());
        Setup {
            store,
            provider,
            client,
            context,
        }
    })
}

type Case = (&'static str, Box<dyn Fn(&Setup) -> bool>);

fn cases() -> Vec<Case> {
    vec![
        (
            "snapshot get (plain durable read)",
            Box::new(|s| s.store.snapshot().get("static").is_some()),
        ),
        (
            "resolve, no targeting (STATIC)",
            Box::new(|s| s.store.resolve("static", &s.context, false).value),
        ),
        (
            "resolve, attribute targeting",
            Box::new(|s| s.store.resolve("by-attribute", &s.context, false).value),
        ),
        (
            "resolve, fractional rollout",
            Box::new(|s| s.store.resolve("rollout", &s.context, false).value),
        ),
        (
            "resolve, sem_ver targeting",
            Box::new(|s| s.store.resolve("sem-ver", &s.context, false).value),
        ),
        (
            "provider, no targeting",
            Box::new(|s| {
                ready(s.provider.resolve_bool_value("static", &s.context))
                    .unwrap()
                    .value
            }),
        ),
        (
            "provider, attribute targeting",
            Box::new(|s| {
                ready(s.provider.resolve_bool_value("by-attribute", &s.context))
                    .unwrap()
                    .value
            }),
        ),
        (
            "OpenFeature client, no targeting",
            Box::new(|s| ready(s.client.get_bool_value("static", Some(&s.context), None)).unwrap()),
        ),
        (
            "OpenFeature client, attribute targeting",
            Box::new(|s| {
                ready(
                    s.client
                        .get_bool_value("by-attribute", Some(&s.context), None),
                )
                .unwrap()
            }),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let setup = setup();
    let mut group = c.benchmark_group("evaluate");
    for (name, case) in cases() {
        group.bench_function(name, |b| b.iter(|| black_box(case(black_box(&setup)))));
    }
    group.finish();
}

/// The summary: each case timed in the same process, interleaved, best of five rounds.
fn summary() {
    let setup = setup();
    let cases = cases();
    let iterations = 200_000;
    let mut best = vec![f64::INFINITY; cases.len()];
    for _ in 0..5 {
        for (i, (_, case)) in cases.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..iterations {
                black_box(case(black_box(&setup)));
            }
            best[i] = best[i].min(start.elapsed().as_nanos() as f64 / f64::from(iterations));
        }
    }
    let base = best[0];
    println!(
        "\n{:<42} {:>10} {:>14} {:>10}",
        "case", "ns/eval", "evals/s", "x get"
    );
    let mut rows = Vec::new();
    for ((name, _), ns) in cases.iter().zip(&best) {
        println!(
            "{name:<42} {ns:>10.1} {:>14.0} {:>10.1}",
            1e9 / ns,
            ns / base
        );
        rows.push(json!({"case": name, "ns_per_eval": ns, "evals_per_sec": 1e9 / ns, "ratio_to_get": ns / base}));
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/openfeature-evaluate.json");
    if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(&rows).unwrap()) {
        eprintln!("could not write {}: {e}", path.display());
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    summary();
}
