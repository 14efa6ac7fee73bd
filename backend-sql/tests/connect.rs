//! The connect path: credentials never print, whatever the URL's shape, and connection errors
//! fail fast with their real cause.
//!
//! Every error of connect (a URL that cannot be read, connection refused, unknown host,
//! authentication failed, no such database, a SQLite file in a missing directory), the `Debug`
//! output of stores and backends, and every log event (tracing, sqlx's included) are checked for
//! the user name and password, with user names and passwords holding `/`, `?`, `#`, `@`, `%`,
//! `:` and non-ASCII letters, none percent-encoded. A closed port on 127.0.0.1 (a listener bound
//! and dropped) is the unreachable server; PostgreSQL and MariaDB are the throwaway servers of
//! scripts/test.sh (`DURABLE_TEST_POSTGRES_URL`, `DURABLE_TEST_MYSQL_URL`; PostgreSQL trusts
//! every connection from 127.0.0.1, so a wrong password cannot be tested there, a missing role
//! can; MariaDB's root has an empty password).

mod support;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable_core::conformance::server_from_env;
use durable_core::{Backend, Dict, Error, Json, Options};
use durable_sql::sqlx::mysql::MySqlConnectOptions;
use durable_sql::sqlx::postgres::PgConnectOptions;
use durable_sql::{MySqlStore, PostgresStore, SqlOptions, SqliteStore};
use support::{Store, random_name};

/// Passwords (and user names) no message may show: every character that ends a URL's
/// authority, a `%` that is no escape, an escape, non-ASCII letters; none percent-encoded.
const PASSWORDS: [&str; 8] = [
    "pw0/secret",
    "pw1?secret",
    "pw2#secret",
    "pw3@secret",
    "pw4%secret",
    "pw5%41secret",
    "pw6-sëcrét✓",
    "pw7/a?b#c@d%e:f",
];
const USERS: [&str; 3] = ["usr/x?y#z@w", "usr%ü", "plainuser"];

/// The forms of `secret` that must not appear: as written, and percent-decoded where it has an
/// escape.
fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_owned()];
    if secret.contains("%41") {
        forms.push(secret.replace("%41", "A"));
    }
    forms
}

/// Panics if `text` shows `user` or `password` (as written or decoded).
fn assert_hidden(text: &str, user: &str, password: &str, what: &str) {
    for secret in forms(password).into_iter().chain(forms(user)) {
        assert!(
            !text.contains(&secret),
            "{what} shows the secret {secret:?}: {text}"
        );
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, noted, released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("its address").port()
}

/// Every event and span field of tracing, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for Logs {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attributes: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = Fields(attributes.metadata().name().to_owned());
        attributes.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut fields = Fields(String::new());
        values.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(event.metadata().target().to_owned());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Connects to `url` as a store of `kind`, measuring how long it takes.
async fn timed_connect(
    kind: &str,
    url: &str,
    options: SqlOptions,
) -> (Duration, Result<Store, Error>) {
    let started = Instant::now();
    let store = Store::open(kind, url, options).await;
    (started.elapsed(), store)
}

/// The error and its `Debug` form, for the checks.
fn shown(error: &Error) -> String {
    format!("{error}\n{error:?}")
}

/// A closed port: connect fails within a second saying "connection refused" (not after the pool's
/// timeout with "pool timed out"), for every shape of credentials, and so does the first
/// operation of a store that does not connect up front; nothing shows the credentials.
async fn refused_fast(kind: &str, scheme: &str) {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let port = closed_port();
    for user in USERS {
        for password in PASSWORDS {
            let query = if kind == "mysql" {
                "ssl-mode=disabled"
            } else {
                "sslmode=disable"
            };
            let url = format!("{scheme}://{user}:{password}@127.0.0.1:{port}/db?{query}");
            let (took, result) = timed_connect(kind, &url, SqlOptions::new()).await;
            let error = result.expect_err("nothing listens there");
            let text = shown(&error);
            assert!(
                took < Duration::from_secs(1),
                "{kind}: took {took:?}: {text}"
            );
            assert!(matches!(error, Error::Unavailable { .. }), "{kind}: {text}");
            assert!(text.contains("connection refused"), "{kind}: {text}");
            assert!(
                text.contains(&format!("127.0.0.1:{port}")),
                "{kind}: {text}"
            );
            assert_hidden(&text, user, password, "the error of connect");

            // Without the schema step, connect makes no round trip; the first operation fails as
            // fast, with the same cause, and so do the ones after it.
            let options = SqlOptions::new().with_create_schema(false);
            let store = Store::open(kind, &url, options)
                .await
                .expect("a lazy store");
            assert_hidden(&format!("{store:?}"), user, password, "the store's Debug");
            let backend = store.backend("ns", "d");
            assert_hidden(
                &format!("{backend:?}"),
                user,
                password,
                "the backend's Debug",
            );
            assert_hidden(&backend.location(), user, password, "the location");
            for _ in 0..2 {
                let started = Instant::now();
                let error = backend
                    .last_updated()
                    .await
                    .expect_err("nothing listens there");
                let text = shown(&error);
                assert!(started.elapsed() < Duration::from_secs(1), "{kind}: {text}");
                assert!(text.contains("connection refused"), "{kind}: {text}");
                assert_hidden(&text, user, password, "the error of an operation");
            }
            let started = Instant::now();
            let opened = Dict::<u32, Json>::open(backend, Json, Options::new()).await;
            let error = opened.expect_err("nothing listens there");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{kind}: {error}"
            );
            assert_hidden(&shown(&error), user, password, "the error of Dict::open");
        }
    }
    for user in USERS {
        for password in PASSWORDS {
            assert_hidden(&logs.text(), user, password, "the logs");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn postgres_closed_port_is_refused_at_once_without_credentials() {
    refused_fast("postgres", "postgres").await;
}

#[tokio::test(flavor = "current_thread")]
async fn mysql_closed_port_is_refused_at_once_without_credentials() {
    refused_fast("mysql", "mysql").await;
    refused_fast("mysql", "mariadb").await;
}

/// A URL the driver cannot read (a port that is no number, an unknown `sslmode`) is a
/// configuration error that shows neither the user name nor the password, wherever they are.
#[tokio::test(flavor = "current_thread")]
async fn unreadable_urls_are_config_errors_without_credentials() {
    for (kind, scheme) in [
        ("postgres", "postgres"),
        ("mysql", "mysql"),
        ("mysql", "mariadb"),
    ] {
        for user in USERS {
            for password in PASSWORDS {
                for (url, unreadable) in [
                    (
                        format!("{scheme}://{user}:{password}@127.0.0.1:notaport/db"),
                        true,
                    ),
                    (
                        format!("{scheme}://{user}:{password}@127.0.0.1:99999/db"),
                        true,
                    ),
                    (
                        format!(
                            "{scheme}://{user}:{password}@127.0.0.1:5/db?sslmode=bogus&ssl-mode=bogus"
                        ),
                        true,
                    ),
                    // Credentials in the query, not percent-encoded either: a `#` or `?` in
                    // them ends or splits the query, so the driver may read it or not.
                    (
                        format!(
                            "{scheme}://127.0.0.1:5/db?user={user}&password={password}&sslmode=bogus&ssl-mode=bogus"
                        ),
                        false,
                    ),
                ] {
                    let (_, result) = timed_connect(kind, &url, SqlOptions::new()).await;
                    let error = result.expect_err("the URL cannot be read");
                    let text = shown(&error);
                    if unreadable {
                        assert!(matches!(error, Error::Config(_)), "{kind} {url}: {text}");
                        assert!(text.contains("invalid configuration"), "{text}");
                    }
                    assert_hidden(&text, user, password, "the configuration error");
                }
            }
        }
    }
}

/// `host:port` of a test server's URL, and the URL's database path.
fn host_and_path(url: &str) -> (String, String) {
    let rest = url.split_once('@').map_or(url, |(_, rest)| rest);
    let (host, path) = rest.split_once('/').expect("a database in the URL");
    (host.to_owned(), path.to_owned())
}

/// PostgreSQL takes the user information apart at the last `@`: with the server's own user and
/// any password (trusted connections ignore it), every shape connects; a user name the server
/// does not know is an authentication error within a second, showing neither.
#[tokio::test(flavor = "current_thread")]
async fn postgres_credentials_of_every_shape() {
    let Some(url) = server_from_env("DURABLE_TEST_POSTGRES_URL") else {
        return;
    };
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let (host, db) = host_and_path(&url);
    for password in PASSWORDS {
        let url = format!("postgres://postgres:{password}@{host}/{db}");
        let store = PostgresStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{password:?}: {e}"));
        assert_hidden(
            &format!("{store:?}"),
            "postgres-not-secret",
            password,
            "Debug",
        );
        let backend = store.backend("ns", "d").unwrap();
        assert_hidden(
            &format!("{backend:?}"),
            "postgres-not-secret",
            password,
            "Debug",
        );
        backend.last_updated().await.expect("a round trip");
    }
    // sqlx's options, and a URL with credentials to show: shown without them.
    let base = PgConnectOptions::from_str(&format!("postgres://{host}/{db}")).unwrap();
    for password in PASSWORDS {
        let shown_url = format!("postgres://postgres:{password}@{host}/{db}");
        let options = base.clone().username("postgres").password(password);
        let store = PostgresStore::connect_options(options, &shown_url, SqlOptions::new())
            .await
            .unwrap_or_else(|e| panic!("{password:?}: {e}"));
        assert_hidden(
            &format!("{store:?}"),
            "postgres-not-secret",
            password,
            "Debug",
        );
        for user in USERS {
            let options = base.clone().username(user).password(password);
            let error =
                PostgresStore::connect_options(options, "the test server", SqlOptions::new())
                    .await
                    .expect_err("no such role");
            assert!(shown(&error).contains("authentication failed"), "{error}");
            assert_hidden(&shown(&error), user, password, "the authentication error");
        }
    }
    for user in USERS {
        for password in PASSWORDS {
            let url = format!("postgres://{user}:{password}@{host}/{db}");
            let (took, result) = timed_connect("postgres", &url, SqlOptions::new()).await;
            let error = result.expect_err("no such role");
            let text = shown(&error);
            assert!(took < Duration::from_secs(1), "took {took:?}: {text}");
            assert!(matches!(error, Error::Config(_)), "{text}");
            assert!(text.contains("authentication failed"), "{text}");
            assert_hidden(&text, user, password, "the authentication error");
        }
    }
    for user in USERS {
        for password in PASSWORDS {
            assert_hidden(&logs.text(), user, password, "the logs");
        }
    }
}

/// MariaDB: a wrong password (or an unknown user) is an authentication error within a second,
/// showing neither the user name nor the password, whatever their shape.
#[tokio::test(flavor = "current_thread")]
async fn mysql_credentials_of_every_shape() {
    let Some(url) = server_from_env("DURABLE_TEST_MYSQL_URL") else {
        return;
    };
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let (host, db) = host_and_path(&url);
    for user in USERS.into_iter().chain(["root"]) {
        for password in PASSWORDS {
            let url = format!("mysql://{user}:{password}@{host}/{db}");
            let (took, result) = timed_connect("mysql", &url, SqlOptions::new()).await;
            let error = result.expect_err("access denied");
            let text = shown(&error);
            assert!(took < Duration::from_secs(1), "took {took:?}: {text}");
            assert!(matches!(error, Error::Config(_)), "{text}");
            assert!(text.contains("authentication failed"), "{text}");
            let user = if user == "root" {
                "root-not-secret"
            } else {
                user
            };
            assert_hidden(&text, user, password, "the authentication error");
        }
    }
    for user in USERS {
        for password in PASSWORDS {
            assert_hidden(&logs.text(), user, password, "the logs");
        }
    }
    // sqlx's options: a user name the server refuses is not shown either.
    let base = MySqlConnectOptions::from_str(&format!("mysql://{host}/{db}")).unwrap();
    for user in USERS {
        for password in PASSWORDS {
            let options = base.clone().username(user).password(password);
            let error = MySqlStore::connect_options(options, "the test server", SqlOptions::new())
                .await
                .expect_err("access denied");
            assert!(shown(&error).contains("authentication failed"), "{error}");
            assert_hidden(&shown(&error), user, password, "the authentication error");
        }
    }
    // The server's own user, with the URL's credentials apart: still connects.
    let store = MySqlStore::connect(&format!("mysql://root@{host}/{db}"))
        .await
        .unwrap();
    store
        .backend("ns", "d")
        .unwrap()
        .last_updated()
        .await
        .unwrap();
}

/// A database the server does not have is named in the error (not a line of the server's
/// source), within a second.
#[tokio::test(flavor = "current_thread")]
async fn missing_database_is_named() {
    for (kind, var) in [
        ("postgres", "DURABLE_TEST_POSTGRES_URL"),
        ("mysql", "DURABLE_TEST_MYSQL_URL"),
    ] {
        let Some(url) = server_from_env(var) else {
            continue;
        };
        let (_, db) = host_and_path(&url);
        let missing = random_name("durable_missing_");
        let url = url.replace(&format!("/{db}"), &format!("/{missing}"));
        let (took, result) = timed_connect(kind, &url, SqlOptions::new()).await;
        let error = result.expect_err("no such database");
        let text = shown(&error);
        assert!(
            took < Duration::from_secs(1),
            "{kind}: took {took:?}: {text}"
        );
        assert!(matches!(error, Error::Config(_)), "{kind}: {text}");
        assert!(
            text.contains(&format!("database \"{missing}\" does not exist")),
            "{kind}: {text}"
        );
        assert!(!error.to_string().contains(" at line "), "{kind}: {text}");
    }
}

/// A host name that does not resolve says so.
#[tokio::test(flavor = "current_thread")]
async fn unknown_host_is_named() {
    for (kind, url) in [
        (
            "postgres",
            "postgres://usr-secret:pw3@secret@durable-no-such-host.invalid:5432/db",
        ),
        (
            "mysql",
            "mysql://usr-secret:pw3@secret@durable-no-such-host.invalid:3306/db",
        ),
    ] {
        let options = SqlOptions::new().with_acquire_timeout(Duration::from_secs(3));
        let (took, result) = timed_connect(kind, url, options).await;
        let error = result.expect_err("no such host");
        let text = shown(&error);
        assert!(
            took < Duration::from_secs(3),
            "{kind}: took {took:?}: {text}"
        );
        assert!(matches!(error, Error::Unavailable { .. }), "{kind}: {text}");
        assert!(text.contains("unknown host"), "{kind}: {text}");
        assert!(
            text.contains("durable-no-such-host.invalid"),
            "{kind}: {text}"
        );
        assert_hidden(&text, "usr-secret", "pw3@secret", "the error");
    }
}

/// A SQLite file in a directory that does not exist: the error names the file and the missing
/// directory, at connect and (without the schema step) at the first operation.
#[tokio::test(flavor = "current_thread")]
async fn sqlite_missing_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let file = missing.join("flags.db");
    let url = format!("sqlite://{}", file.display());
    let started = Instant::now();
    let error = SqliteStore::connect(&url)
        .await
        .expect_err("no such directory");
    let text = shown(&error);
    assert!(started.elapsed() < Duration::from_secs(1), "{text}");
    assert!(matches!(error, Error::Unavailable { .. }), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(
        text.contains(&format!("directory {} does not exist", missing.display())),
        "{text}"
    );
    let store = SqliteStore::connect_with(&url, SqlOptions::new().with_create_schema(false))
        .await
        .expect("a lazy store");
    let error = store
        .backend("ns", "d")
        .unwrap()
        .last_updated()
        .await
        .expect_err("no such directory");
    assert!(
        shown(&error).contains(&file.display().to_string()),
        "{error}"
    );
}

/// `location()` names the backend, the entries table, the namespace and the dictionary: the
/// same for every backend over one dictionary (whichever store value or connection), different
/// for another dictionary, namespace or table prefix; never a host, user or password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_names_the_dictionary_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut databases = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("l.db").display()),
    )];
    if let Some(url) = server_from_env("DURABLE_TEST_POSTGRES_URL") {
        databases.push(("postgres", url));
    }
    if let Some(url) = server_from_env("DURABLE_TEST_MYSQL_URL") {
        databases.push(("mysql", url));
    }
    for (kind, url) in databases {
        let a = Store::open(kind, &url, SqlOptions::new()).await.unwrap();
        let b = Store::open(kind, &url, SqlOptions::new()).await.unwrap();
        let other = Store::open(
            kind,
            &url,
            SqlOptions::new().with_table_prefix("durable_loc"),
        )
        .await
        .unwrap();
        let here = a.backend("prod", "flags").location();
        assert_eq!(here, format!("{kind}/durable_entries/prod/flags"));
        assert_eq!(b.backend("prod", "flags").location(), here);
        for elsewhere in [
            a.backend("prod", "limits").location(),
            a.backend("test", "flags").location(),
            other.backend("prod", "flags").location(),
        ] {
            assert_ne!(elsewhere, here);
        }
        assert!(!here.contains("127.0.0.1") && !here.contains("root") && !here.contains(".db"));
        other.drop_tables().await;
    }
}
