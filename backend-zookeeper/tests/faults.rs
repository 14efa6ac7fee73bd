//! Fault tests against the ZooKeeper in `DURABLE_TEST_ZOOKEEPER`, stopped and started with the
//! control script in `DURABLE_TEST_ZOOKEEPER_CTL`: a restart within the session timeout, an
//! outage beyond it (session expiry), an outage in the middle of a load, and the dictionary tree
//! deleted by hand.

mod common;

use std::time::Duration;

use bytes::Bytes;
use durable_core::conformance::{self, Harness, server_from_env};
use durable_core::{Backend, BatchOp, Dict, Hint, Hints, Mode, Name, Options, Raw};
use durable_zookeeper::{ZooKeeperBackend, ZooKeeperStore};
use tokio::time::{Instant, sleep, timeout};

use common::{ZkHarness, config};

/// The fault tests stop the shared server: one at a time.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Env {
    connect: String,
    ctl: String,
    namespace: Name,
}

fn env() -> Option<Env> {
    let connect = server_from_env("DURABLE_TEST_ZOOKEEPER")?;
    let ctl = server_from_env("DURABLE_TEST_ZOOKEEPER_CTL")?;
    let namespace = Name::new(format!("f{:016x}", rand::random::<u64>())).expect("valid name");
    Some(Env {
        connect,
        ctl,
        namespace,
    })
}

async fn ctl(env: &Env, action: &'static str) {
    common::ctl(&env.ctl, action).await;
}

/// Stop and start again at once (well within the session timeout).
async fn restart(env: &Env) {
    ctl(env, "restart").await;
}

fn background() -> Options {
    // Polling once an hour: only hints (and Resubscribed) can wake these handles in time.
    Options::new()
        .with_mode(Mode::background(Duration::from_secs(3600)))
        .with_timeout(Duration::from_secs(10))
        .with_trust_hints_for(None)
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `wanted`, skipping other hints.
async fn wait_hint(hints: &mut Hints, wanted: Hint, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, hints.next()).await {
            Ok(Some(hint)) if hint == wanted => return,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the hint channel closed while waiting for {wanted:?}"),
            Err(_) => panic!("no {wanted:?} hint within {limit:?}"),
        }
    }
}

/// Persists, retrying while the server is still coming back.
async fn persist_eventually(backend: &ZooKeeperBackend, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match backend.persist(key, Bytes::from(value.to_owned())).await {
            Ok(_) => return,
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("persist {key}: {e}"),
        }
    }
}

fn has(d: &Dict<Vec<u8>, Raw>, key: &str, value: &str) -> bool {
    d.snapshot().get(key).map(Vec::as_slice) == Some(value.as_bytes())
}

async fn cleanup(env: &Env) {
    let h = ZkHarness::new(env.connect.clone());
    h.cleanup(&env.namespace).await.expect("cleanup");
}

/// The server restarts within the session timeout: the session survives, the client
/// reconnects, the watch is re-added (zookeeper-client 0.11.2 drops persistent watches on
/// reconnect), `Resubscribed` forces a check, and later writes still produce hints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_within_session_timeout_keeps_hints() {
    let Some(env) = env() else { return };
    let _server = SERVER.lock().await;
    let ns = env.namespace.as_str();
    let cfg = config(&env.connect).with_session_timeout(Duration::from_secs(20));
    let writer = ZooKeeperStore::connect(cfg.clone()).await.expect("connect");
    let writer = writer.backend(ns, "restart").expect("backend");
    let listener = ZooKeeperStore::connect(cfg).await.expect("connect");
    let mut hints = listener
        .backend(ns, "restart")
        .expect("backend")
        .subscribe()
        .await
        .expect("subscribe");
    let d: Dict<Vec<u8>, Raw> = Dict::open(
        listener.backend(ns, "restart").expect("backend"),
        Raw,
        background(),
    )
    .await
    .expect("open");
    persist_eventually(&writer, "a", "1").await;
    wait_hint(&mut hints, Hint::Changed, Duration::from_secs(5)).await;
    wait_for("the first write", Duration::from_secs(5), || {
        has(&d, "a", "1")
    })
    .await;

    restart(&env).await;
    wait_hint(&mut hints, Hint::Resubscribed, Duration::from_secs(30)).await;
    persist_eventually(&writer, "b", "2").await;
    wait_hint(&mut hints, Hint::Changed, Duration::from_secs(5)).await;
    wait_for("a write after the restart", Duration::from_secs(10), || {
        has(&d, "b", "2")
    })
    .await;
    assert_eq!(listener.sessions(), 1, "the session survived the restart");
    drop((d, hints, listener));
    cleanup(&env).await;
}

/// The server stays down longer than the session timeout: the session expires, the store
/// builds a new client, the watch is added on the new session, and the handle catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_beyond_session_timeout_rebuilds_the_session() {
    let Some(env) = env() else { return };
    let _server = SERVER.lock().await;
    let ns = env.namespace.as_str();
    let session = Duration::from_secs(4);
    let cfg = config(&env.connect).with_session_timeout(session);
    let listener = ZooKeeperStore::connect(cfg.clone()).await.expect("connect");
    let mut hints = listener
        .backend(ns, "expiry")
        .expect("backend")
        .subscribe()
        .await
        .expect("subscribe");
    let d: Dict<Vec<u8>, Raw> = Dict::open(
        listener.backend(ns, "expiry").expect("backend"),
        Raw,
        background(),
    )
    .await
    .expect("open");
    let writer = ZooKeeperStore::connect(cfg).await.expect("connect");
    let writer = writer.backend(ns, "expiry").expect("backend");
    persist_eventually(&writer, "before", "1").await;
    wait_for("the first write", Duration::from_secs(5), || {
        has(&d, "before", "1")
    })
    .await;

    ctl(&env, "stop").await;
    // Reads keep the last snapshot while the store is down.
    sleep(session * 3).await;
    assert!(has(&d, "before", "1"));
    ctl(&env, "start").await;
    persist_eventually(&writer, "after", "2").await;
    wait_hint(&mut hints, Hint::Resubscribed, Duration::from_secs(30)).await;
    wait_for(
        "the write after the outage",
        Duration::from_secs(30),
        || has(&d, "after", "2"),
    )
    .await;
    assert!(
        listener.sessions() >= 2,
        "a new session was built after expiry ({} sessions)",
        listener.sessions()
    );
    // Hints flow on the new session.
    persist_eventually(&writer, "later", "3").await;
    wait_hint(&mut hints, Hint::Changed, Duration::from_secs(5)).await;
    wait_for(
        "a write on the new session",
        Duration::from_secs(10),
        || has(&d, "later", "3"),
    )
    .await;
    drop((d, hints, listener));
    cleanup(&env).await;
}

/// A full load whose server stops after it handed over its first part fails as unavailable and
/// never ends short; once the server is back, the next load hands over every key once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_cut_by_an_outage_fails_and_the_next_is_whole() {
    let Some(env) = env() else { return };
    let _server = SERVER.lock().await;
    let store = ZooKeeperStore::connect(config(&env.connect))
        .await
        .expect("connect");
    let backend = store
        .backend(env.namespace.as_str(), "cut")
        .expect("backend");
    let keys: Vec<String> = (0..3_000).map(|i| format!("k{i:04}")).collect();
    for chunk in keys.chunks(500) {
        let ops = chunk.iter().map(|key| BatchOp::Put {
            key: key.clone(),
            value: Bytes::from_static(b"v"),
        });
        backend.persist_batch(ops.collect()).await.expect("batch");
    }

    let cut = conformance::load_cut_after_its_first_part(&backend, ctl(&env, "stop")).await;
    assert!(cut.cut, "the load handed a part over");
    match cut.load {
        Ok(load) => panic!(
            "the load ended without error with its server stopped, with {} of {} keys",
            cut.handed.len() + load.entries.len(),
            keys.len()
        ),
        Err(error) => assert!(error.is_unavailable(), "{error}"),
    }

    ctl(&env, "start").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        match conformance::load_in_parts(&backend).await {
            Ok((_, rows)) => break rows,
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the load after the outage: {e}"),
        }
    };
    let mut loaded: Vec<String> = rows.into_iter().map(|row| row.key).collect();
    loaded.sort();
    assert_eq!(loaded, keys, "every key once");
    cleanup(&env).await;
}

/// The dictionary tree is deleted by hand (`deleteall`): every handle reloads, with a new
/// epoch, and hint-driven handles notice without polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_tree_reloads_every_handle() {
    let Some(env) = env() else { return };
    let _server = SERVER.lock().await;
    let ns = env.namespace.as_str();
    let open = |mode: Options| {
        let connect = env.connect.clone();
        async move {
            let store = ZooKeeperStore::connect(config(&connect))
                .await
                .expect("connect");
            let d: Dict<Vec<u8>, Raw> =
                Dict::open(store.backend(ns, "wiped").expect("backend"), Raw, mode)
                    .await
                    .expect("open");
            d
        }
    };
    let manual = Options::new()
        .with_mode(Mode::Manual)
        .with_trust_hints_for(None);
    let a = open(manual.clone()).await;
    let b = open(manual).await;
    let c = open(background()).await;
    a.insert("x", b"1".to_vec()).await.expect("insert");
    b.sync().await.expect("sync");
    assert!(has(&b, "x", "1"));
    wait_for("c sees x", Duration::from_secs(5), || has(&c, "x", "1")).await;
    let old = a.stats().version;
    let reloads = (a.stats().reloads, b.stats().reloads);

    let h = ZkHarness::new(env.connect.clone());
    h.wipe(&env.namespace, &Name::new("wiped").expect("name"))
        .await
        .expect("wipe");

    assert!(a.sync().await.expect("sync").is_empty());
    assert!(b.sync().await.expect("sync").is_empty());
    assert_ne!(a.stats().version, old, "a new epoch");
    assert_eq!(a.stats().reloads, reloads.0 + 1);
    assert_eq!(b.stats().reloads, reloads.1 + 1);
    wait_for("c sees the wipe", Duration::from_secs(10), || {
        c.snapshot().is_empty()
    })
    .await;
    b.insert("y", b"2".to_vec()).await.expect("insert");
    let snapshot = a.sync().await.expect("sync");
    assert_eq!(snapshot.len(), 1);
    assert!(has(&a, "y", "2"));
    wait_for("c sees y", Duration::from_secs(10), || has(&c, "y", "2")).await;
    drop((a, b, c));
    cleanup(&env).await;
}
