//! The flags service's JSON API, end to end over HTTP against real `flags` processes.

mod common;

use std::time::{Duration, Instant};

use common::{Instance, agent, json, sqlite_url};
use serde_json::json;

#[test]
fn json_api_lists_gets_sets_and_deletes_flags() {
    let dir = tempfile::tempdir().unwrap();
    let app = Instance::start(&sqlite_url(&dir));
    let http = agent();
    let flags = |path: &str| format!("{}/api/flags{path}", app.base);

    let (status, body) = json(http.get(&flags("")).call());
    assert_eq!(status, 200);
    assert_eq!(body["flags"]["dark-mode"], json!(true), "seeded: {body}");

    let (status, body) = json(http.put(&flags("/beta")).send(r#"{"percent": 10}"#));
    assert_eq!((status, &body["value"]), (200, &json!({"percent": 10})));
    let (status, body) = json(http.get(&flags("/beta")).call());
    assert_eq!((status, &body["value"]["percent"]), (200, &json!(10)));

    let (status, body) = json(http.put(&flags("/beta")).send("{not json"));
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("invalid JSON"),
        "{body}"
    );
    let (_, body) = json(http.get(&flags("/beta")).call());
    assert_eq!(
        body["value"]["percent"],
        json!(10),
        "a rejected write changed nothing"
    );

    let (status, body) = json(http.get(&flags("/nope")).call());
    assert_eq!(status, 404);
    assert_eq!(body["error"], json!("unknown flag \"nope\""));

    assert_eq!(json(http.delete(&flags("/beta")).call()).0, 204);
    assert_eq!(json(http.delete(&flags("/beta")).call()).0, 404);
    assert_eq!(json(http.get(&flags("/beta")).call()).0, 404);

    // Any string is a flag name.
    let odd = "/a%20b%2Fc%C3%A9";
    assert_eq!(json(http.put(&flags(odd)).send("\"x\"")).0, 200);
    let (_, body) = json(http.get(&flags("")).call());
    assert_eq!(body["flags"]["a b/cé"], json!("x"));

    let (status, body) = json(http.get(&format!("{}/healthz", app.base)).call());
    assert_eq!((status, &body["fresh"]), (200, &json!(true)));
}

#[test]
fn two_instances_see_each_others_changes_on_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let (a, b) = (Instance::start(&url), Instance::start(&url));
    let http = agent();
    for value in [true, false, true] {
        let (status, _) = json(
            http.put(&format!("{}/api/flags/shared", a.base))
                .send(value.to_string()),
        );
        assert_eq!(status, 200);
        let (_, body) = json(http.get(&format!("{}/api/flags/shared", b.base)).call());
        assert_eq!(body["value"], json!(value), "b sees a's write at once");
    }
    let (_, from_a) = json(http.get(&format!("{}/api/flags", a.base)).call());
    let (_, from_b) = json(http.get(&format!("{}/api/flags", b.base)).call());
    assert_eq!(from_a, from_b, "same version and flags");
}

/// The max-staleness policy, with the simulated outage of `--demo-outage`: stale flags are
/// served (and marked) while the store confirmed them at most `--max-staleness` ago, then `503`;
/// fresh again once the store is back.
#[test]
fn stale_flags_are_served_until_the_max_staleness_then_503() {
    let dir = tempfile::tempdir().unwrap();
    let max = Duration::from_secs(2);
    let app = Instance::start_with(
        &sqlite_url(&dir),
        &["--max-staleness", "2", "--demo-outage"],
    );
    let http = agent();
    let list = format!("{}/api/flags", app.base);
    let healthz = format!("{}/healthz", app.base);
    let outage = |down: bool| {
        let status = http
            .post(&format!("{}/demo/outage", app.base))
            .config()
            .max_redirects(0)
            .build()
            .send_form([("down", if down { "true" } else { "false" })])
            .expect("outage switch")
            .status();
        assert_eq!(status.as_u16(), 303, "redirects to the admin page");
    };

    let confirmed = Instant::now();
    let response = http.get(&list).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers().get("x-flags-stale").is_none(), "fresh");
    let (_, fresh) = json(http.get(&list).call());

    outage(true);
    let response = http.get(&list).call().unwrap();
    if confirmed.elapsed() < max {
        // The store confirmed the snapshot less than `max` ago: served, marked stale.
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["x-flags-stale"], "true");
        assert!(response.headers().get("x-snapshot-age-ms").is_some());
        let (_, stale) = json(Ok(response));
        assert_eq!(stale, fresh, "the last good flags");
    }
    let page = http
        .get(&format!("{}/admin", app.base))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    if confirmed.elapsed() < max {
        assert!(page.contains("id=\"stale\""), "the admin page says so");
    }
    assert!(page.contains("end the simulated outage"), "{page}");

    // Past the max staleness: 503 with the age, on the API and the health check.
    std::thread::sleep(max + Duration::from_millis(200));
    let response = http.get(&list).call().unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let age: u64 = response.headers()["x-snapshot-age-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(age >= 2000, "{age} ms");
    let (_, body) = json(Ok(response));
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("stale") && error.contains("simulated outage"),
        "{error}"
    );
    let (status, health) = json(http.get(&healthz).call());
    assert_eq!((status, &health["serving"]), (503, &json!(false)));

    // Back: fresh at once.
    outage(false);
    let response = http.get(&list).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers().get("x-flags-stale").is_none());
    let (status, health) = json(http.get(&healthz).call());
    assert_eq!((status, &health["fresh"]), (200, &json!(true)));
}

/// `/metrics`: the engine's metrics in Prometheus' text format, labelled by backend and
/// dictionary, counting this instance's checks.
#[test]
fn metrics_are_served_in_prometheus_format() {
    let dir = tempfile::tempdir().unwrap();
    let app = Instance::start(&sqlite_url(&dir));
    let http = agent();
    for _ in 0..3 {
        assert_eq!(
            json(http.get(&format!("{}/api/flags", app.base)).call()).0,
            200
        );
    }
    let mut response = http.get(&format!("{}/metrics", app.base)).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.body_mut().read_to_string().unwrap();
    let checks = text
        .lines()
        .find(|l| l.starts_with("durable_checks_total{"))
        .unwrap_or_else(|| panic!("no durable_checks_total in:\n{text}"));
    assert!(
        checks.contains("backend=\"") && checks.contains("dictionary=\""),
        "{checks}"
    );
    let count: f64 = checks.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "one check per request at least: {checks}");
    for name in [
        "durable_entries{",
        "durable_fresh{",
        "durable_snapshot_age_seconds{",
        "durable_check_seconds_bucket{",
    ] {
        assert!(text.contains(name), "no {name} in:\n{text}");
    }
}

#[test]
fn store_down_serves_stale_flags_then_503_with_the_snapshot_age() {
    let Some(url) = durable_core::conformance::server_from_env("DURABLE_TEST_POSTGRES_URL") else {
        return;
    };
    let Some(ctl) = durable_core::conformance::server_from_env("DURABLE_TEST_POSTGRES_CTL") else {
        return;
    };
    let run = |action: &str| {
        let status = std::process::Command::new(&ctl)
            .arg(action)
            .status()
            .expect("ctl");
        assert!(status.success(), "{ctl} {action}");
    };
    let app = Instance::start_with(&url, &["--max-staleness", "1"]);
    let http = agent();
    let list = format!("{}/api/flags", app.base);
    assert_eq!(json(http.get(&list).call()).0, 200);
    run("stop");
    let first = http.get(&list).call().expect("a response, not a hang");
    let first_status = first.status().as_u16();
    let first_stale = first.headers().get("x-flags-stale").cloned();
    std::thread::sleep(Duration::from_millis(1200));
    let response = http.get(&list).call().expect("a response, not a hang");
    let status = response.status().as_u16();
    let age = response.headers().get("x-snapshot-age-ms").cloned();
    run("start");
    assert!(
        first_status == 503 || (first_status == 200 && first_stale.is_some()),
        "stale flags are served marked, or refused: {first_status}"
    );
    assert_eq!(status, 503, "past the max staleness");
    assert!(age.is_some(), "the snapshot's age is in a header");
    assert!(
        common::eventually(Duration::from_secs(30), || {
            json(http.get(&list).call()).0 == 200
        }),
        "the service recovers when the database is back"
    );
}
