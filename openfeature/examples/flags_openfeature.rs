//! Feature flags through OpenFeature, stored in your own database.
//!
//! Two "instances" of a service share one SQLite file (any durable store works the same way).
//! Instance A loads a flagd flag file; instance B serves evaluations through the OpenFeature
//! client: a percentage rollout (`fractional`) and targeting by an evaluation-context attribute
//! (`country`). Then A widens the rollout and B sees the change within milliseconds, with a
//! change event naming the flag.
//!
//! ```sh
//! cargo run -p durable-openfeature --example flags_openfeature
//! cargo run -p durable-openfeature --example flags_openfeature -- /tmp/flags.sqlite
//! ```

use std::time::{Duration, Instant};

use durable_core::{Mode, Options};
use durable_openfeature::open_feature::{EvaluationContext, OpenFeature};
use durable_openfeature::{DurableProvider, FlagStore, ImportMode};
use durable_sql::SqliteStore;
use serde_json::json;

const FLAGS: &str = r##"{
  "flags": {
    "new-checkout": {
      "state": "ENABLED",
      "variants": { "on": true, "off": false },
      "defaultVariant": "off",
      "targeting": { "fractional": [["on", 20], ["off", 80]] }
    },
    "banner-color": {
      "state": "ENABLED",
      "variants": { "red": "#c0392b", "green": "#27ae60", "grey": "#7f8c8d" },
      "defaultVariant": "grey",
      "targeting": {
        "if": [
          { "in": [{ "var": "country" }, ["NZ", "AU"]] }, "green",
          { "==": [{ "var": "country" }, "DK"] }, "red",
          null
        ]
      }
    }
  }
}"##;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| dir.path().join("flags.sqlite").display().to_string());
    let url = format!("sqlite://{path}");

    // Instance A: the admin side. It imports the flag file (validated first: a bad file is
    // refused with the JSON path of the problem, and nothing is written).
    let a = FlagStore::open(
        SqliteStore::connect(&url).await?.backend("shop", "flags")?,
        Options::new(),
    )
    .await?;
    let report = a.import(FLAGS, ImportMode::Replace).await?;
    println!("instance A imported {} entries", report.written.len());

    // Instance B: a service. Background mode keeps its snapshot fresh (SQLite has no push
    // hints, so it polls every 5 ms here); evaluations never touch the database.
    let b = FlagStore::open(
        SqliteStore::connect(&url).await?.backend("shop", "flags")?,
        Options::new().with_mode(Mode::background(Duration::from_millis(5))),
    )
    .await?;
    b.sync().await?;
    let mut events = b.events();
    OpenFeature::singleton_mut()
        .await
        .set_provider(DurableProvider::new(b.clone()))
        .await;
    let client = OpenFeature::singleton().await.create_client();

    // Targeting by an evaluation-context attribute.
    for country in ["NZ", "DK", "US"] {
        let ctx = EvaluationContext::default().with_custom_field("country", country);
        let details = client
            .get_string_details("banner-color", Some(&ctx), None)
            .await
            .map_err(|e| e.code)?;
        println!(
            "banner-color for country={country}: {} (variant {:?}, reason {:?})",
            details.value, details.variant, details.reason
        );
    }

    // A percentage rollout: each user (targeting key) keeps its bucket.
    let share = |on: usize| on as f64 / 100.0;
    let on = count_on(&client, 10_000).await;
    println!(
        "new-checkout is on for {:.1}% of 10,000 users (rollout 20%)",
        share(on)
    );

    // Instance A widens the rollout; instance B sees it within milliseconds.
    let start = Instant::now();
    a.insert_flag(
        "new-checkout",
        json!({
            "state": "ENABLED",
            "variants": { "on": true, "off": false },
            "defaultVariant": "off",
            "targeting": { "fractional": [["on", 50], ["off", 50]] }
        }),
    )
    .await?;
    let event = events.recv().await.expect("the dictionary is open");
    println!(
        "instance B: flags {:?} changed, {:.1} ms after the write",
        event.flags,
        start.elapsed().as_secs_f64() * 1e3
    );
    let on = count_on(&client, 10_000).await;
    println!(
        "new-checkout is now on for {:.1}% of 10,000 users (rollout 50%)",
        share(on)
    );

    // What the store holds, as a flagd file again.
    let exported = a.export();
    println!(
        "export: {} flags, same document as imported but for the change: {}",
        exported.flag_keys().count(),
        exported.to_json()["flags"]["banner-color"]
            == serde_json::from_str::<serde_json::Value>(FLAGS)?["flags"]["banner-color"]
    );
    Ok(())
}

async fn count_on(client: &durable_openfeature::open_feature::Client, users: usize) -> usize {
    let mut on = 0;
    for i in 0..users {
        let ctx = EvaluationContext::default().with_targeting_key(format!("user-{i}"));
        if client
            .get_bool_value("new-checkout", Some(&ctx), None)
            .await
            .unwrap_or(false)
        {
            on += 1;
        }
    }
    on
}
