//! The flag store and the provider on the in-memory backend: write-time validation, a bad
//! stored definition, import/export, caching, events, status, and rollout distribution.

use std::collections::HashMap;
use std::time::Duration;

use durable_core::{Dict, Json, MemoryStore, Options};
use durable_openfeature::open_feature::provider::{FeatureProvider, ProviderStatus};
use durable_openfeature::open_feature::{
    EvaluationContext, EvaluationErrorCode, EvaluationReason, OpenFeature,
};
use durable_openfeature::{DurableProvider, Error, FlagFile, FlagStore, ImportMode};
use serde_json::{Value, json};

async fn open(memory: &MemoryStore) -> FlagStore {
    let dict = Dict::open(
        memory.backend("app", "flags").unwrap(),
        Json,
        Options::new(),
    )
    .await
    .unwrap();
    FlagStore::new(dict)
}

fn toggle(on: bool) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": if on {"on"} else {"off"}})
}

#[track_caller]
fn invalid(result: Result<impl std::fmt::Debug, Error>) -> (String, String) {
    match result {
        Err(Error::Invalid { path, reason }) => (path, reason),
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_definitions_are_refused_with_their_json_path() {
    let memory = MemoryStore::new();
    let store = open(&memory).await;
    let cases = [
        (
            json!({"state": "ON", "variants": {"a": 1}}),
            "/flags/f/state",
        ),
        (json!({"variants": {"a": 1}}), "/flags/f/state"),
        (
            json!({"state": "ENABLED", "variants": {}}),
            "/flags/f/variants",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1, "b": "x"}}),
            "/flags/f/variants/b",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": [1]}}),
            "/flags/f/variants/a",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "z"}),
            "/flags/f/defaultVariant",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1}, "targeting": "a"}),
            "/flags/f/targeting",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1}, "targeting": {"if": [{"nope": [1]}, "a", null]}}),
            "/flags/f/targeting/if/0/nope",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1}, "targeting": {"if": [{"$ref": "missing"}, "a", null]}}),
            "/flags/f/targeting/if/0/$ref",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1}, "metadata": {"x": [1]}}),
            "/flags/f/metadata/x",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1}, "defaultvariant": "a"}),
            "/flags/f/defaultvariant",
        ),
        (json!([1]), "/flags/f"),
    ];
    for (definition, path) in cases {
        let (got, reason) = invalid(store.insert_flag("f", definition.clone()).await);
        assert_eq!(got, path, "{definition}: {reason}");
    }
    let (path, _) = invalid(store.insert_flag("$evaluators/x", toggle(true)).await);
    assert_eq!(path, "/flags/$evaluators~1x");
    assert!(store.snapshot().is_empty(), "nothing was written");

    let (path, reason) = invalid(
        store
            .import(r#"{"flags": {"ok": {"state": "ENABLED", "variants": {"a": 1}}, "bad/key": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "b"}}}"#, ImportMode::Replace)
            .await,
    );
    assert_eq!(path, "/flags/bad~1key/defaultVariant", "{reason}");
    assert!(
        store.snapshot().is_empty(),
        "an invalid file writes nothing"
    );
    assert!(matches!(
        store.import("{", ImportMode::Replace).await,
        Err(Error::Json { .. })
    ));
    let (path, _) = invalid(
        store
            .import(r#"{"flags": {}, "extra": 1}"#, ImportMode::Replace)
            .await,
    );
    assert_eq!(path, "/extra");
}

#[tokio::test]
async fn a_bad_stored_definition_costs_that_flag_only() {
    let memory = MemoryStore::new();
    let store = open(&memory).await;
    store.insert_flag("good", toggle(true)).await.unwrap();
    // Another program writes a broken definition directly into the dictionary.
    store
        .dict()
        .insert(
            "broken",
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "off"}),
        )
        .await
        .unwrap();
    store
        .dict()
        .insert("not-an-object", json!(42))
        .await
        .unwrap();

    let mut api = OpenFeature::default();
    api.set_provider(DurableProvider::new(store.clone())).await;
    let client = api.create_client();
    for key in ["broken", "not-an-object"] {
        let err = client.get_bool_value(key, None, None).await.unwrap_err();
        assert_eq!(err.code, EvaluationErrorCode::ParseError, "{err:?}");
        assert!(err.message.unwrap().contains(key));
    }
    assert!(client.get_bool_value("good", None, None).await.unwrap());
    let r = store.resolve("broken", &EvaluationContext::default(), true);
    assert_eq!((r.value, r.reason), (true, EvaluationReason::Error));

    // Fixing it in the store fixes the flag (a new value: parsed again).
    store.insert_flag("broken", toggle(false)).await.unwrap();
    assert!(!client.get_bool_value("broken", None, None).await.unwrap());
}

#[tokio::test]
async fn import_then_export_gives_the_file_back() {
    let memory = MemoryStore::new();
    let store = open(&memory).await;
    let text = include_str!("data/flagd-testkit.json");
    let report = store.import(text, ImportMode::Replace).await.unwrap();
    let original: Value = serde_json::from_str(text).unwrap();
    let flags = original["flags"].as_object().unwrap().len();
    assert_eq!(
        report.written.len(),
        flags + 3,
        "flags, one evaluator, metadata, $schema"
    );
    assert_eq!(store.export().to_json(), original);
    assert_eq!(
        FlagFile::parse(&store.export().to_pretty_string())
            .unwrap()
            .to_json(),
        original
    );

    // Importing the same file again writes nothing.
    let again = store.import(text, ImportMode::Replace).await.unwrap();
    assert!(again.written.is_empty() && again.removed.is_empty());
    assert_eq!(again.unchanged, flags + 3);

    // Merge keeps what the file lacks; Replace removes it.
    store.insert_flag("extra", toggle(true)).await.unwrap();
    let small = r#"{"flags": {"boolean-flag": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}}"#;
    let merged = store.import(small, ImportMode::Merge).await.unwrap();
    assert_eq!(merged.written, ["boolean-flag"]);
    assert!(store.snapshot().contains_key("extra"));
    let replaced = store.import(small, ImportMode::Replace).await.unwrap();
    assert!(replaced.removed.contains(&"extra".to_string()));
    assert_eq!(
        store.export().to_json(),
        serde_json::from_str::<Value>(small).unwrap()
    );

    // A file on disk, both ways.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    store.export_file(&path).unwrap();
    let other = open(&MemoryStore::new()).await;
    other.import_file(&path, ImportMode::Replace).await.unwrap();
    assert_eq!(other.export(), store.export());
}

#[tokio::test]
async fn two_handles_see_a_change_after_sync_and_events_name_the_flag() {
    let memory = MemoryStore::new();
    let writer = open(&memory).await;
    let reader = open(&memory).await;
    let mut events = reader.events();
    writer
        .insert_flag("new-checkout", toggle(false))
        .await
        .unwrap();
    let ctx = EvaluationContext::default();
    assert_eq!(
        reader
            .resolve("new-checkout", &ctx, true)
            .error
            .map(|e| e.code),
        Some(EvaluationErrorCode::FlagNotFound),
        "the reader has not synced"
    );
    reader.sync().await.unwrap();
    assert!(!reader.resolve("new-checkout", &ctx, true).value);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.flags, ["new-checkout"]);
    assert!(!event.all);

    writer
        .insert_flag("new-checkout", toggle(true))
        .await
        .unwrap();
    reader.sync().await.unwrap();
    assert!(reader.resolve("new-checkout", &ctx, false).value);
}

#[tokio::test]
async fn provider_status_follows_the_dictionary_health() {
    let memory = MemoryStore::new();
    let store = open(&memory).await;
    let provider = DurableProvider::new(store.clone());
    assert_eq!(provider.status(), ProviderStatus::Ready);
    memory.set_available(false);
    assert!(store.sync().await.is_err());
    assert_eq!(provider.status(), ProviderStatus::STALE);
    memory.set_available(true);
    store.sync().await.unwrap();
    assert_eq!(provider.status(), ProviderStatus::Ready);

    // A provider whose store cannot be opened: NOT_READY, then ERROR after initialize.
    let down = MemoryStore::new();
    down.set_available(false);
    let backend = down.backend("app", "flags").unwrap();
    let options = Options::new().with_open_timeout(Duration::from_millis(200));
    let mut failing = DurableProvider::opening(FlagStore::open(backend, options));
    assert_eq!(failing.status(), ProviderStatus::NotReady);
    failing.initialize(&EvaluationContext::default()).await;
    assert_eq!(failing.status(), ProviderStatus::Error);
    let err = failing
        .resolve_bool_value("any", &EvaluationContext::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, EvaluationErrorCode::ProviderNotReady);

    // And one that opens fine.
    let backend = memory.backend("app", "flags").unwrap();
    let mut opening = DurableProvider::opening(FlagStore::open(backend, Options::new()));
    opening.initialize(&EvaluationContext::default()).await;
    assert_eq!(opening.status(), ProviderStatus::Ready);
}

#[tokio::test]
async fn disabled_and_defaultless_flags_through_the_client_give_the_callers_default() {
    let memory = MemoryStore::new();
    let store = open(&memory).await;
    store
        .insert_flag("off", json!({"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}))
        .await
        .unwrap();
    store
        .insert_flag(
            "no-default",
            json!({"state": "ENABLED", "variants": {"on": true, "off": false}}),
        )
        .await
        .unwrap();
    let mut api = OpenFeature::default();
    api.set_provider(DurableProvider::new(store)).await;
    let client = api.create_client();
    let err = client.get_bool_value("off", None, None).await.unwrap_err();
    assert_eq!(err.code, EvaluationErrorCode::General("DISABLED".into()));
    assert!(
        client
            .get_bool_value("off", None, None)
            .await
            .unwrap_or(true)
    );
    let err = client
        .get_bool_value("no-default", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, EvaluationErrorCode::General("DEFAULT".into()));
}

/// Percentage rollout: 10,000 targeting keys over a 10/30/60 split land within 2 percentage
/// points of the weights, and each key keeps its variant across evaluations and handles.
#[tokio::test]
async fn fractional_rollout_distribution() {
    let memory = MemoryStore::new();
    let store = open(&memory).await;
    store
        .insert_flag(
            "rollout",
            json!({
                "state": "ENABLED",
                "variants": {"a": "a", "b": "b", "c": "c"},
                "defaultVariant": "a",
                "targeting": {"fractional": [["a", 10], ["b", 30], ["c", 60]]}
            }),
        )
        .await
        .unwrap();
    let other = open(&memory).await;
    other.sync().await.unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..10_000 {
        let ctx = EvaluationContext::default().with_targeting_key(format!("user-{i}"));
        let r = store.resolve("rollout", &ctx, String::new());
        assert_eq!(r.reason, EvaluationReason::TargetingMatch);
        assert_eq!(
            other.resolve("rollout", &ctx, String::new()).value,
            r.value,
            "sticky"
        );
        *counts.entry(r.value).or_default() += 1;
    }
    for (variant, weight) in [("a", 10.0), ("b", 30.0), ("c", 60.0)] {
        let share = counts[variant] as f64 / 100.0;
        assert!(
            (share - weight).abs() < 2.0,
            "{variant}: {share}% for a weight of {weight}% ({counts:?})"
        );
    }
    // Without a targeting key there is nothing to bucket on: the default variant.
    let r = store.resolve("rollout", &EvaluationContext::default(), String::new());
    assert_eq!(
        (r.value.as_str(), r.reason),
        ("a", EvaluationReason::Default)
    );
}

#[tokio::test]
async fn evaluator_changes_reach_the_flags_that_use_them() {
    let memory = MemoryStore::new();
    let store = open(&memory).await;
    let file = |domain: &str| {
        json!({
            "$evaluators": {"staff": {"ends_with": [{"var": "email"}, domain]}},
            "flags": {"beta": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"$ref": "staff"}, "on", null]}
            }}
        })
    };
    store
        .import_json(&file("@acme.com"), ImportMode::Replace)
        .await
        .unwrap();
    let ctx = EvaluationContext::default().with_custom_field("email", "ada@acme.com");
    assert!(store.resolve("beta", &ctx, false).value);
    let mut events = store.events();
    store
        .import_json(&file("@example.com"), ImportMode::Replace)
        .await
        .unwrap();
    assert!(
        !store.resolve("beta", &ctx, true).value,
        "re-parsed after the evaluator changed"
    );
    let event = events.recv().await.unwrap();
    assert!(event.all && event.flags == ["beta"], "{event:?}");
}
