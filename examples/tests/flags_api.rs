//! The flags service's JSON API, end to end over HTTP against real `flags` processes.

mod common;

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

#[test]
fn store_down_answers_503_with_the_snapshot_age() {
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
    let app = Instance::start(&url);
    let http = agent();
    let list = format!("{}/api/flags", app.base);
    assert_eq!(json(http.get(&list).call()).0, 200);
    run("stop");
    let response = http.get(&list).call().expect("a response, not a hang");
    let status = response.status().as_u16();
    let age = response.headers().get("x-snapshot-age-ms").cloned();
    run("start");
    assert_eq!(status, 503);
    assert!(age.is_some(), "the snapshot's age is in a header");
    assert!(
        common::eventually(std::time::Duration::from_secs(30), || {
            json(http.get(&list).call()).0 == 200
        }),
        "the service recovers when the database is back"
    );
}
