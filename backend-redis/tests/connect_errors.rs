//! Connecting: each cause of failure is a typed error naming it, fast where the operating system
//! answers at once (a closed port, an unknown host), and no error, `Debug` output or log line
//! ever shows a password, whatever characters it holds (`/`, `?`, `#`, `@`, `%`, `:`, unicode,
//! not percent-encoded). Against the test server (`DURABLE_TEST_REDIS_URL`, which has no
//! password) and the test cluster (`DURABLE_TEST_REDIS_CLUSTER_URLS`); the closed port and the
//! unknown host need no server.

mod common;

use std::fmt::Write as _;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable_core::conformance::server_from_env;
use durable_core::{Backend, Dict, Error, Json, Mode, Options};
use durable_redis::redis::{self, Value};
use durable_redis::{RedisOptions, RedisStore};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Passwords with every character that ends a URL's authority or starts an escape, as written.
const PASSWORDS: [&str; 7] = [
    "s3/cret",
    "s3?cret",
    "s3#cret",
    "s3@cret",
    "100%sure",
    "pässwörd€",
    "a/b?c#d@e%f:g€",
];

/// User names likewise (a user name cannot hold `:`).
const USERS: [&str; 6] = ["us/er", "us?er", "us#er", "us@er", "us%er", "üser€"];

/// Every log line (events and span fields of every level) written while it is the default.
#[derive(Clone, Default)]
struct Capture {
    lines: Arc<Mutex<String>>,
    ids: Arc<AtomicU64>,
}

struct Line<'a>(&'a mut String);

impl Visit for Line<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut lines = self.lines.lock().unwrap();
        lines.push_str(span.metadata().name());
        span.record(&mut Line(&mut lines));
        lines.push('\n');
        Id::from_u64(self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, values: &Record<'_>) {
        let mut lines = self.lines.lock().unwrap();
        values.record(&mut Line(&mut lines));
        lines.push('\n');
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut lines = self.lines.lock().unwrap();
        lines.push_str(event.metadata().target());
        event.record(&mut Line(&mut lines));
        lines.push('\n');
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `host:port` of a `redis://host:port/` URL.
fn address(url: &str) -> &str {
    url.trim_start_matches("redis://").trim_end_matches('/')
}

/// Asserts that `texts` show neither `secret` nor its percent-decoded form.
fn assert_hidden(secret: &str, what: &str, texts: &[String]) {
    for text in texts {
        assert!(
            !text.contains(secret),
            "{what} shows the password {secret:?}: {text}"
        );
    }
}

fn texts(error: &Error) -> [String; 2] {
    [error.to_string(), format!("{error:?}")]
}

#[tokio::test]
async fn closed_port_is_unavailable_at_once_saying_refused() {
    let url = format!("redis://127.0.0.1:{}/", closed_port());
    let started = Instant::now();
    let error = RedisStore::connect(&url)
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(error, Error::Unavailable { .. }),
        "not typed: {error:?}"
    );
    let text = error.to_string().to_lowercase();
    assert!(text.contains("connection refused"), "{text}");
    assert!(text.contains(address(&url)), "names the address: {text}");
    // A lazy store's operations say the same.
    let backend = RedisStore::lazy(&url, RedisOptions::new())
        .unwrap()
        .backend("t", "closed")
        .unwrap();
    let error = backend.last_updated().await.expect_err("nothing listens");
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .to_lowercase()
            .contains("connection refused")
    );
    let error = backend.subscribe().await.expect_err("nothing listens");
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unknown_host_is_a_quick_typed_error_naming_it() {
    let started = Instant::now();
    let error = RedisStore::connect("redis://:s3/cret@durable-test.invalid:6379/")
        .await
        .expect_err("cannot resolve");
    assert!(
        matches!(error, Error::Unavailable { .. }),
        "not typed: {error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("unknown host"), "{text}");
    assert!(text.contains("durable-test.invalid"), "{text}");
    assert_hidden("s3/cret", "unknown host", &texts(&error));
    // The resolver answers at once for a reserved name (a second where it asks a DNS server).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn zero_timeouts_are_a_configuration_error() {
    let options = RedisOptions::new().with_connection_timeout(Duration::ZERO);
    let error = RedisStore::lazy("redis://127.0.0.1:1/", options).unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
}

#[tokio::test]
async fn missing_database_is_a_configuration_error() {
    let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") else {
        return;
    };
    let error = RedisStore::connect(&format!("redis://{}/99", address(&url)))
        .await
        .expect_err("16 databases");
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    assert!(error.to_string().contains("no such database"), "{error}");
}

/// The `ACL LOG` entries of failed logins of user `user` on the server at `url`.
async fn failed_logins(url: &str, user: &str) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let log: Vec<Value> = redis::cmd("ACL")
        .arg("LOG")
        .arg(1000)
        .query_async(&mut conn)
        .await
        .unwrap();
    log.iter()
        .filter(|entry| {
            let fields: Vec<String> = match entry {
                Value::Array(items) => items
                    .iter()
                    .map(|v| redis::from_redis_value::<String>(v.clone()).unwrap_or_default())
                    .collect(),
                Value::Map(pairs) => pairs
                    .iter()
                    .flat_map(|(k, v)| [k.clone(), v.clone()])
                    .map(|v| redis::from_redis_value::<String>(v).unwrap_or_default())
                    .collect(),
                _ => Vec::new(),
            };
            fields
                .windows(2)
                .any(|w| w[0] == "username" && w[1] == user)
        })
        .count()
}

/// A wrong password (the server has none: `AUTH password` fails) or a wrong user (`AUTH user
/// password` fails) is an authentication error ([`Error::Config`]), from `connect`, from a lazy
/// store's reads, writes and subscription, and from `Dict::open`; none of them, nor `Debug` of
/// the store, nor any log line, shows the password. The server saw the user name whole.
#[tokio::test]
async fn wrong_credentials_are_an_authentication_error_that_hides_the_password() {
    let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") else {
        return;
    };
    let capture = Capture::default();
    let _logs = tracing::subscriber::set_default(capture.clone());
    let run = rand::random::<u32>();
    for (i, password) in PASSWORDS.iter().enumerate() {
        let user = format!("{}-{run}", USERS[i % USERS.len()]);
        for credentials in [format!(":{password}"), format!("{user}:{password}")] {
            let bad = format!("redis://{credentials}@{}/", address(&url));
            let started = Instant::now();
            let mut shown = Vec::new();
            let error = RedisStore::connect(&bad).await.expect_err(&bad);
            assert!(
                matches!(&error, Error::Config(m) if m.contains("authentication failed")),
                "{bad}: {error:?}"
            );
            shown.extend(texts(&error));
            let store = RedisStore::lazy(&bad, RedisOptions::new()).unwrap();
            shown.push(format!("{store:?}"));
            let backend = store.backend("t", "auth").unwrap();
            shown.push(format!("{backend:?}"));
            let durabledict = store.durabledict("t-auth").unwrap();
            shown.push(format!("{durabledict:?}"));
            for result in [
                backend.last_updated().await.map(|_| ()),
                backend.durables().await.map(|_| ()),
                backend.persist("k", "v".into()).await.map(|_| ()),
                durabledict.durables().await.map(|_| ()),
            ] {
                let error = result.expect_err("wrong credentials");
                assert!(matches!(error, Error::Config(_)), "{bad}: {error:?}");
                shown.extend(texts(&error));
            }
            if let Err(error) = backend.subscribe().await {
                // RESP3's `HELLO 3 AUTH` takes any password for the passwordless `default`
                // user; for another user it fails like the rest.
                assert!(matches!(error, Error::Config(_)), "{bad}: {error:?}");
                shown.extend(texts(&error));
            }
            let opened = Dict::<i64, Json>::open(
                store.backend("t", "auth").unwrap(),
                Json,
                Options::new().with_mode(Mode::background(Duration::from_secs(60))),
            )
            .await;
            let error = opened.map(|_| ()).expect_err("wrong credentials");
            assert!(matches!(error, Error::Config(_)), "{bad}: {error:?}");
            shown.extend(texts(&error));
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{bad}: took {:?}",
                started.elapsed()
            );
            assert_hidden(password, &bad, &shown);
        }
        // The server got the user name as written (the failed logins are in its ACL log).
        assert!(
            failed_logins(&url, &user).await > 0,
            "the server never saw user {user:?}"
        );
    }
    assert_eq!(failed_logins(&url, &format!("never-{run}")).await, 0);
    let logs = capture.lines.lock().unwrap().clone();
    assert!(!logs.is_empty(), "no log line was captured");
    for password in PASSWORDS {
        assert_hidden(password, "a log line", std::slice::from_ref(&logs));
    }
}

/// A user the server knows (the passwordless `default` user takes any password) with a password
/// holding every special character: the URL is read right, and the store works.
#[tokio::test]
async fn credentials_with_special_characters_connect() {
    let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") else {
        return;
    };
    for password in PASSWORDS {
        let good = format!("redis://default:{password}@{}/", address(&url));
        let store = RedisStore::connect(&good).await.unwrap();
        assert!(!format!("{store:?}").contains(password));
        let backend = store.backend("t", "good-credentials").unwrap();
        backend.last_updated().await.unwrap();
        backend.subscribe().await.unwrap();
    }
}

/// `redis://credentials@h1,h2,h3/` gives the credentials to every node: the nodes refuse them
/// (the cluster has no password) as an authentication error, never "Cannot use different
/// password among initial nodes", and every node saw the user; with the `default` user the
/// cluster connects. Credentials given in one of several URLs hold for all.
#[tokio::test]
async fn cluster_nodes_all_get_the_credentials() {
    let Some(urls) = server_from_env("DURABLE_TEST_REDIS_CLUSTER_URLS") else {
        return;
    };
    let urls: Vec<&str> = urls.split(',').filter(|u| !u.is_empty()).collect();
    let hosts: Vec<&str> = urls.iter().map(|u| address(u)).collect();
    let user = format!("us/er@{}", rand::random::<u32>());
    let password = "a/b?c#d@e%f:g€";
    let bad = format!("redis://{user}:{password}@{}/", hosts.join(","));
    let error = RedisStore::connect_cluster(&[bad.as_str()], common::options())
        .await
        .expect_err("unknown user");
    assert!(
        matches!(&error, Error::Config(m) if m.contains("authentication failed")),
        "{error:?}"
    );
    assert_hidden(password, "cluster connect", &texts(&error));
    for url in &urls {
        assert!(
            failed_logins(url, &user).await > 0,
            "node {url} never saw the credentials"
        );
    }

    let good = format!("redis://default:{password}@{}/", hosts.join(","));
    let store = RedisStore::connect_cluster(&[good.as_str()], common::options())
        .await
        .unwrap();
    assert!(!format!("{store:?}").contains(password));
    store
        .backend("t", "cluster-credentials")
        .unwrap()
        .last_updated()
        .await
        .unwrap();
    // Given in the first of several URLs.
    let mut several = vec![format!("redis://default:{password}@{}/", hosts[0])];
    several.extend(hosts[1..].iter().map(|h| format!("redis://{h}/")));
    RedisStore::connect_cluster(&several, common::options())
        .await
        .unwrap();
    // Different credentials in different URLs: refused, without showing either password.
    let mixed = [
        format!("redis://default:{password}@{}/", hosts[0]),
        format!("redis://default:other/pw@{}/", hosts[1]),
    ];
    let error = RedisStore::connect_cluster(&mixed, common::options())
        .await
        .expect_err("two passwords");
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    assert_hidden(password, "mixed credentials", &texts(&error));
    assert_hidden("other/pw", "mixed credentials", &texts(&error));
}
