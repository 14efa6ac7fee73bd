//! The provider against real stores, through the OpenFeature client API: SQLite (a temporary
//! file) and PostgreSQL (`DURABLE_TEST_POSTGRES_URL`, set by `scripts/test.sh`; a missing
//! server fails the test under `DURABLE_TEST_REQUIRE=1`).

use std::time::{Duration, Instant};

use durable_core::conformance::server_from_env;
use durable_core::{Backend, Mode, Options};
use durable_openfeature::open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationErrorCode, EvaluationReason,
    OpenFeature, StructValue,
};
use durable_openfeature::{DurableProvider, FlagStore, ImportMode};
use durable_sql::{PostgresStore, SqliteStore};
use serde_json::json;

const FILE: &str = include_str!("data/flagd-testkit.json");

fn namespace() -> String {
    format!("openfeature-{:016x}", rand::random::<u64>())
}

/// `writer` and `reader` are two handles on one stored dictionary; `reader` runs in background
/// mode.
async fn provider_round_trip(writer: FlagStore, reader: FlagStore, within: Duration) {
    writer.import(FILE, ImportMode::Replace).await.unwrap();
    reader.sync().await.unwrap();

    let mut api = OpenFeature::default();
    api.set_provider(DurableProvider::new(reader.clone())).await;
    let client = api.create_client();

    let user = |name: &str| {
        EvaluationContext::default().with_custom_field(
            "user",
            EvaluationContextFieldValue::new_struct(
                StructValue::default().with_field("name", name),
            ),
        )
    };
    let details = client
        .get_string_details("fractional-flag", Some(&user("jack")), None)
        .await
        .unwrap();
    assert_eq!(
        (details.value.as_str(), details.reason),
        ("hearts", Some(EvaluationReason::TargetingMatch))
    );
    assert_eq!(details.variant.as_deref(), Some("hearts"));
    let details = client
        .get_bool_details("boolean-flag", None, None)
        .await
        .unwrap();
    assert_eq!(
        (details.value, details.reason),
        (true, Some(EvaluationReason::Static))
    );
    let details = client
        .get_float_details("float-flag", None, None)
        .await
        .unwrap();
    assert_eq!(details.value, 0.5);
    let version = EvaluationContext::default().with_custom_field("version", "2.1.0");
    let details = client
        .get_string_details("equal-greater-lesser-version-flag", Some(&version), None)
        .await
        .unwrap();
    assert_eq!(details.value, "greater");
    let details = client
        .get_string_details(
            "targeting-key-flag",
            Some(&EvaluationContext::default().with_targeting_key("nobody")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (details.value.as_str(), details.reason),
        ("miss", Some(EvaluationReason::Default))
    );
    let details = client
        .get_bool_details("metadata-flag", None, None)
        .await
        .unwrap();
    assert_eq!(details.flag_metadata.values.len(), 4);
    let err = client
        .get_bool_value("disabled-boolean-flag", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, EvaluationErrorCode::General("DISABLED".into()));
    let err = client
        .get_int_value("wrong-flag", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, EvaluationErrorCode::TypeMismatch);
    let err = client
        .get_int_value("no-such-flag", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, EvaluationErrorCode::FlagNotFound);

    // A change written through one handle reaches the other's background sync.
    let start = Instant::now();
    writer
        .insert_flag(
            "boolean-flag",
            json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}),
        )
        .await
        .unwrap();
    while client
        .get_bool_value("boolean-flag", None, None)
        .await
        .unwrap()
    {
        assert!(
            start.elapsed() < within,
            "the change did not arrive within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "change seen by the other handle after {:?}",
        start.elapsed()
    );

    // What was imported comes back out (the one changed flag aside).
    let mut expected: serde_json::Value = serde_json::from_str(FILE).unwrap();
    expected["flags"]["boolean-flag"]["defaultVariant"] = json!("off");
    assert_eq!(reader.export().to_json(), expected);
}

async fn pair<B: Backend>(make: impl Fn() -> B, poll: Duration) -> (FlagStore, FlagStore) {
    let writer = FlagStore::open(make(), Options::new()).await.unwrap();
    let reader = FlagStore::open(make(), Options::new().with_mode(Mode::background(poll)))
        .await
        .unwrap();
    (writer, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_provider() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("flags.sqlite").display());
    // Two connections to one file, as two processes would have.
    let a = SqliteStore::connect(&url).await.unwrap();
    let b = SqliteStore::connect(&url).await.unwrap();
    let writer = FlagStore::open(a.backend("app", "flags").unwrap(), Options::new())
        .await
        .unwrap();
    let reader = FlagStore::open(
        b.backend("app", "flags").unwrap(),
        Options::new().with_mode(Mode::background(Duration::from_millis(20))),
    )
    .await
    .unwrap();
    provider_round_trip(writer, reader, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_provider() {
    let Some(url) = server_from_env("DURABLE_TEST_POSTGRES_URL") else {
        return;
    };
    let store = PostgresStore::connect(&url).await.unwrap();
    let ns = namespace();
    // Background polling every 5 s: a change arriving sooner came through LISTEN/NOTIFY.
    let (writer, reader) = pair(
        || store.backend(&ns, "flags").unwrap(),
        Duration::from_secs(5),
    )
    .await;
    provider_round_trip(writer.clone(), reader, Duration::from_secs(4)).await;
    writer.dict().clear().await.unwrap();
}
