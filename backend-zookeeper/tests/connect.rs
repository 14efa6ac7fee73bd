//! The connect path against the ZooKeeper in `DURABLE_TEST_ZOOKEEPER`: credentials in the
//! connect string whatever their characters, which never print (errors, `Debug`, log lines of
//! this crate, the engine and the ZooKeeper client, all captured at TRACE level), and connection
//! errors that come fast and say why (a closed port, an unknown host, a server that accepts
//! connections but never answers, a chroot that cannot be created, ACLs that refuse the user).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use durable_core::conformance::server_from_env;
use durable_core::{Backend, Dict, Error, Json, Options};
use durable_zookeeper::{ZooKeeperOptions, ZooKeeperStore, zookeeper_client as zk};

/// User names and passwords with the characters that end a URL's authority, written raw.
const SECRETS: [(&str, &str); 7] = [
    ("app", "s3/cret-1"),
    ("app", "s?cret-2"),
    ("app", "s#cret-3"),
    ("app", "s@cr@t-4"),
    ("app", "100%pure-5"),
    ("ü/s?e#r", "sécret/€?#@-6"),
    ("me@corp", "pa@ss:w/rd%-7"),
];

/// Every log line of the process, at TRACE level, from every crate.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .init();
        logs
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails if any password of [`SECRETS`] (or the digest `user:password` pair) is in `text`.
fn assert_no_secret(text: &str, what: &str) {
    for (user, password) in SECRETS {
        assert!(
            !text.contains(password) && !text.contains(&format!("{user}:{password}")),
            "{what} shows the password {password:?}: {text}"
        );
    }
}

fn config(connect: &str) -> ZooKeeperOptions {
    common::config(connect)
}

/// A port on 127.0.0.1 that nothing listens on: bound, noted, released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

fn namespace() -> String {
    format!("c{:016x}", rand::random::<u64>())
}

async fn cleanup(connect: &str, namespace: &str) {
    let store = ZooKeeperStore::connect(config(connect))
        .await
        .expect("connect");
    let client = store.zookeeper_client().await.expect("client");
    common::delete_recursive(&client, &format!("{}/{namespace}", common::ROOT))
        .await
        .expect("cleanup");
}

/// Credentials in the connect string reach digest authentication as written (the dictionary
/// they create with creator-only ACLs is readable with the same credentials given through
/// `with_digest_auth`, and refused to another password), and never print: not in `Debug`, not
/// in errors (refused ACLs, a closed port, an invalid server list), not in any log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_authenticate_and_never_print() {
    let Some(connect) = server_from_env("DURABLE_TEST_ZOOKEEPER") else {
        return;
    };
    let logs = logs();
    let ns = namespace();
    // The namespace open to anyone, so that each user creates its dictionary (with ACLs for
    // itself only) in it.
    let admin = zk::Client::connector()
        .connect(&connect)
        .await
        .expect("connect");
    let anyone = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    admin
        .mkdir(&format!("{}/{ns}", common::ROOT), &anyone)
        .await
        .expect("mkdir");
    for (i, (user, password)) in SECRETS.into_iter().enumerate() {
        let dictionary = format!("d{i}");
        let url = format!("{user}:{password}@{connect}");
        let store = ZooKeeperStore::connect(config(&url).with_creator_acls())
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_no_secret(&format!("{store:?}"), "the store's Debug");
        let b = store.backend(&ns, &dictionary).expect("backend");
        assert_no_secret(&format!("{b:?}"), "the backend's Debug");
        assert_no_secret(&b.location(), "the location");
        let d: Dict<i64, Json> = Dict::open(b, Json, Options::new()).await.expect("open");
        d.insert("k", 1).await.expect("insert");
        assert_no_secret(&format!("{d:?}"), "the handle's Debug");

        // The same identity through the option reads it.
        let same = ZooKeeperStore::connect(config(&connect).with_digest_auth(user, password))
            .await
            .expect("connect");
        let load = same
            .backend(&ns, &dictionary)
            .expect("backend")
            .durables()
            .await
            .unwrap_or_else(|e| panic!("{user}: the same credentials are refused: {e}"));
        assert_eq!(load.entries.len(), 1);

        // Another password is another identity: refused, naming the user, not the password.
        let other = ZooKeeperStore::connect(config(&connect).with_digest_auth(user, "other"))
            .await
            .expect("connect");
        let error = other
            .backend(&ns, &dictionary)
            .expect("backend")
            .durables()
            .await
            .expect_err("another password");
        let message = error.to_string();
        assert!(
            message.contains("not authorized") && message.contains(&format!("{user:?}")),
            "{message}"
        );
        assert!(matches!(error, Error::Backend { .. }), "{error:?}");

        // Errors of the connect path with the credentials in the connect string.
        let unreachable = format!("{user}:{password}@127.0.0.1:{}", closed_port());
        let error = ZooKeeperStore::connect(config(&unreachable))
            .await
            .expect_err("closed port");
        assert_no_secret(&error.to_string(), "a connection error");
        assert_no_secret(&format!("{error:?}"), "a connection error's Debug");
        for servers in ["127.0.0.1:notaport", "", "h1,,h2", "127.0.0.1:2181/apps/"] {
            let error = ZooKeeperStore::new(ZooKeeperOptions::new(format!(
                "{user}:{password}@{servers}"
            )))
            .expect_err("invalid configuration");
            assert!(matches!(error, Error::Config(_)), "{error:?}");
            assert_no_secret(&error.to_string(), "a configuration error");
        }
        // Only its creator may delete what is below the dictionary's znode.
        drop(d);
        let owner = store.zookeeper_client().await.expect("client");
        common::delete_recursive(&owner, &format!("{}/{ns}/{dictionary}", common::ROOT))
            .await
            .expect("cleanup");
    }
    cleanup(&connect, &ns).await;
    let logs = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
    assert!(
        logs.contains("zookeeper"),
        "the subscriber captured the run's log lines"
    );
    assert_no_secret(&logs, "a log line");
}

/// A closed port on 127.0.0.1 fails at once with the refused connection named, for a store
/// that connects now and for one that connects on first use; with a live server beside it,
/// the other server serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_fails_at_once_saying_so() {
    let Some(connect) = server_from_env("DURABLE_TEST_ZOOKEEPER") else {
        return;
    };
    let closed = format!("127.0.0.1:{}", closed_port());
    let started = Instant::now();
    let error = ZooKeeperStore::connect(config(&closed))
        .await
        .expect_err("closed port");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}: {error}");
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&closed) && message.to_lowercase().contains("connection refused"),
        "{message}"
    );

    let lazy = ZooKeeperStore::new(config(&closed)).expect("config");
    let started = Instant::now();
    let error = lazy
        .backend("ns", "flags")
        .expect("backend")
        .last_updated()
        .await
        .expect_err("closed port");
    assert!(started.elapsed() < Duration::from_secs(1), "{error}");
    assert!(
        error
            .to_string()
            .to_lowercase()
            .contains("connection refused"),
        "{error}"
    );

    // The first server down, the second up: connected, quickly.
    let started = Instant::now();
    let store = ZooKeeperStore::connect(config(&format!("{closed},{connect}")))
        .await
        .expect("the live server serves");
    store
        .backend(&namespace(), "flags")
        .expect("backend")
        .last_updated()
        .await
        .expect("version");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A host name that does not resolve is named as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_is_named() {
    if server_from_env("DURABLE_TEST_ZOOKEEPER").is_none() {
        return;
    }
    let started = Instant::now();
    let error = ZooKeeperStore::connect(config("no-such-host.invalid:2181"))
        .await
        .expect_err("unknown host");
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("no-such-host.invalid:2181: unknown host"),
        "{message}"
    );
    // The resolver answers at once here (a few milliseconds); allow for a slower one.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// A server that accepts connections but never answers: the error says that no session was
/// established, within which time, and that the server accepts connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_cannot_be_established_says_so() {
    if server_from_env("DURABLE_TEST_ZOOKEEPER").is_none() {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent = listener.local_addr().expect("address").to_string();
    let accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let limit = Duration::from_millis(1500);
    let started = Instant::now();
    let error = ZooKeeperStore::connect(config(&silent).with_operation_timeout(limit))
        .await
        .expect_err("a silent server");
    let took = started.elapsed();
    assert!(took < limit + Duration::from_secs(2), "took {took:?}");
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    let message = error.to_string();
    for needle in [
        "no ZooKeeper session established within 1.5s",
        &silent,
        "accepts TCP connections",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    accepting.abort();
}

/// A connect string that is not valid fails before connecting, naming the problem.
#[test]
fn an_invalid_connect_string_names_the_problem() {
    for (connect, expected) in [
        ("", "names no server"),
        ("localhost:notaport", "port \"notaport\" is not a number"),
        ("localhost:99999", "port \"99999\""),
        ("h1,,h2", "server \"\": empty"),
        ("h1:2181/apps/", "must be an absolute path"),
        ("h1:2181/a//b", "chroot \"/a//b\""),
        ("tcp+tls://h1:2181", "TLS"),
        ("user@h1:2181", "user:password"),
    ] {
        match ZooKeeperStore::new(ZooKeeperOptions::new(connect)) {
            Err(Error::Config(message)) => {
                assert!(message.contains(expected), "{connect:?}: {message}")
            }
            other => panic!("{connect:?}: {other:?}"),
        }
    }
}

/// A chroot that does not exist and that the session may not create is named with its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chroot_that_cannot_be_created_is_named() {
    let Some(connect) = server_from_env("DURABLE_TEST_ZOOKEEPER") else {
        return;
    };
    let client = zk::Client::connector()
        .connect(&connect)
        .await
        .expect("connect");
    let locked = format!("/locked-{:016x}", rand::random::<u64>());
    let read_only = [zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone())];
    client
        .create(
            &locked,
            b"",
            &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&read_only)),
        )
        .await
        .expect("create");
    let chroot = format!("{locked}/apps");
    let error = ZooKeeperStore::connect(config(&format!("{connect}{chroot}")))
        .await
        .expect_err("the chroot cannot be created");
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "the chroot {chroot} of the connect string does not exist"
        )),
        "{message}"
    );
    client.delete(&locked, None).await.expect("delete");
}
