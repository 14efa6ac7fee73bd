//! The flags admin page in headless Chromium, driven over WebDriver (chromedriver's HTTP API):
//! toggle a flag on one instance's page and see it toggled on a second instance's page.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Instance, agent, eventually, sqlite_url};
use serde_json::{Value, json};

/// A chromedriver process and one browser session, both ended on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: ureq::Agent,
}

/// WebDriver's key for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(chromedriver: &str, chromium: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = agent();
        assert!(
            eventually(Duration::from_secs(20), || http
                .get(&format!("{base}/status"))
                .call()
                .is_ok()),
            "chromedriver did not start"
        );
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
        };
        let created = browser.call("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        browser
    }

    /// One WebDriver command; returns its `value`, failing the test on an error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|body| panic!("WebDriver {method} {path}: {body}"))
    }

    /// One WebDriver command: its `value`, or the error body.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let response = match method {
            "POST" => self.http.post(&url).send_json(body.unwrap_or(json!({}))),
            "DELETE" => self.http.delete(&url).call(),
            _ => self.http.get(&url).call(),
        };
        let (status, body) = common::json(response);
        if status == 200 {
            Ok(body["value"].clone())
        } else {
            Err(body)
        }
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT].as_str().expect("element id").to_owned()
    }

    fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.call("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The text of `css`, or `None` while the page is still loading (the element is missing or
    /// belongs to the page being replaced): for polling after a click that navigates.
    fn try_text(&self, css: &str) -> Option<String> {
        let query = json!({"using": "css selector", "value": css});
        let found = self.try_call("POST", "/element", Some(query)).ok()?;
        let element = found[ELEMENT].as_str()?;
        let text = self
            .try_call("GET", &format!("/element/{element}/text"), None)
            .ok()?;
        text.as_str().map(str::to_owned)
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = self.http.delete(&url).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn toggling_a_flag_on_one_instance_shows_on_the_other() {
    let Some(chromedriver) =
        durable_core::conformance::server_from_env("DURABLE_TEST_CHROMEDRIVER")
    else {
        return;
    };
    let Some(chromium) = durable_core::conformance::server_from_env("DURABLE_TEST_CHROMIUM") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let (a, b) = (Instance::start(&url), Instance::start(&url));
    let browser = Browser::start(&chromedriver, &chromium);

    browser.open(&format!("{}/admin", b.base));
    assert_eq!(
        browser.text("#flag-new-checkout .value"),
        "off",
        "seeded off"
    );
    let version_before = browser.text("#version");

    browser.open(&format!("{}/admin", a.base));
    browser.click("#toggle-new-checkout");
    // The form posts and redirects back to the admin page.
    assert!(eventually(Duration::from_secs(10), || browser
        .try_text("#flag-new-checkout .value")
        .as_deref()
        == Some("on")));

    browser.open(&format!("{}/admin", b.base));
    assert_eq!(
        browser.text("#flag-new-checkout .value"),
        "on",
        "the second instance sees it"
    );
    assert_ne!(
        browser.text("#version"),
        version_before,
        "the version moved"
    );

    browser.click("#toggle-new-checkout");
    assert!(eventually(Duration::from_secs(10), || browser
        .try_text("#flag-new-checkout .value")
        .as_deref()
        == Some("off")));
    browser.open(&format!("{}/admin", a.base));
    assert_eq!(browser.text("#flag-new-checkout .value"), "off");
}
