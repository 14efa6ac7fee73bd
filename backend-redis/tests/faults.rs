//! Faults: the server killed and restarted, FLUSHALL, a garbage value written by hand.
//!
//! The kill and FLUSHALL tests start their own `redis-server` (on a free port, in a temporary
//! directory, with an append-only file) so they never disturb the shared test server. They run
//! when `DURABLE_TEST_REDIS_URL` is set (the test command's marker that Redis is installed).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durable_core::conformance::server_from_env;
use durable_core::{DecodeErrors, Dict, Error, Json, Mode, Name, Options, Raw};
use durable_redis::redis::{self, AsyncCommands};
use durable_redis::{RedisOptions, RedisStore};

/// A private redis-server with an append-only file, killed when dropped.
struct OwnRedis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut own = OwnRedis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        own.spawn();
        own
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = redis::Client::open(self.url()).unwrap();
        loop {
            if let Ok(mut c) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, no save.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn handle_options(mode: Mode) -> Options {
    Options::new()
        .with_mode(mode)
        .with_timeout(Duration::from_secs(3))
        .with_open_timeout(Duration::from_secs(10))
}

fn store_options() -> RedisOptions {
    RedisOptions::new()
        .with_response_timeout(Duration::from_secs(2))
        .with_connection_timeout(Duration::from_secs(1))
}

async fn open(url: &str, dict: &str, mode: Mode) -> Dict<i64, Json> {
    let store = RedisStore::connect_with(url, store_options())
        .await
        .unwrap();
    let backend = store.backend("faults", dict).unwrap();
    Dict::open(backend, Json, handle_options(mode))
        .await
        .unwrap()
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_then_restarted() {
    if server_from_env("DURABLE_TEST_REDIS_URL").is_none() {
        return;
    }
    let mut server = OwnRedis::start();
    let url = server.url();
    let writer = open(&url, "kill", Mode::Manual).await;
    let reader = open(&url, "kill", Mode::Manual).await;
    let pushed = open(&url, "kill", Mode::background(Duration::from_secs(3600))).await;
    for i in 0..20 {
        writer.insert(&format!("k{i}"), i).await.unwrap();
    }
    let before = reader.sync().await.unwrap();
    assert_eq!(before.len(), 20);

    // Readers keep reading while a second task syncs in a loop through the outage.
    let syncing = {
        let reader = reader.clone();
        tokio::spawn(async move {
            let mut errors = 0;
            for _ in 0..20 {
                if let Err(e) = reader.sync().await {
                    assert!(e.is_unavailable(), "sync error is not typed: {e:?}");
                    errors += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            errors
        })
    };
    server.kill();

    // A sync right after the kill may still trust the (just lost) hint connection for a
    // moment; once the loss is noticed, syncs fail with a typed error.
    eventually("sync fails while the server is down", || async {
        match reader.sync().await {
            Ok(_) => false,
            Err(err) => {
                assert!(err.is_unavailable(), "{err:?}");
                true
            }
        }
    })
    .await;
    assert_eq!(
        reader.snapshot().get("k7"),
        Some(&7),
        "reads go on from the snapshot"
    );
    let err = writer
        .insert("lost", 1)
        .await
        .expect_err("write while down");
    assert!(err.is_unavailable(), "{err:?}");
    let err = writer.remove("k0").await.expect_err("delete while down");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(syncing.await.unwrap() > 0);
    assert_eq!(reader.snapshot().len(), 20);

    server.spawn();
    // Converge: nothing acknowledged is lost, nothing failed was applied.
    eventually("the reader syncs again", || async {
        reader.sync().await.is_ok()
    })
    .await;
    let after = reader.snapshot();
    assert_eq!(after.len(), 20);
    assert_eq!(
        after.version(),
        before.version(),
        "the append-only file kept every write"
    );
    assert!(after.get("lost").is_none());
    assert_eq!(after.get("k0"), Some(&0));

    // Writes work again and reach the pushed handle (its hint connection came back and it
    // re-checked after Resubscribed).
    eventually("the writer writes again", || async {
        writer.insert("after", 99).await.is_ok()
    })
    .await;
    eventually("the pushed handle sees the new write", || async {
        pushed.snapshot().get("after") == Some(&99)
    })
    .await;
    let snap = reader.sync().await.unwrap();
    assert_eq!(snap.len(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_makes_every_handle_reload() {
    if server_from_env("DURABLE_TEST_REDIS_URL").is_none() {
        return;
    }
    let server = OwnRedis::start();
    let url = server.url();
    let a = open(&url, "flush", Mode::Manual).await;
    let b = open(&url, "flush", Mode::autosync()).await;
    let c = open(&url, "flush", Mode::background(Duration::from_secs(3600))).await;
    a.insert("x", 1).await.unwrap();
    a.insert("y", 2).await.unwrap();
    assert_eq!(b.read().await.len(), 2);
    eventually("c sees the writes", || async { c.snapshot().len() == 2 }).await;
    let old = a.snapshot().version();

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut raw).await.unwrap();
    // As many writes as before, so a counter alone could not tell.
    let fresh = open(&url, "flush", Mode::Manual).await;
    fresh.insert("z", 3).await.unwrap();
    fresh.insert("w", 4).await.unwrap();

    for (name, d) in [("a", &a), ("b", &b)] {
        let snap = d.sync().await.unwrap();
        assert_ne!(snap.version(), old, "{name} kept the old token");
        assert_eq!(snap.len(), 2, "{name}");
        assert!(snap.get("x").is_none(), "{name} still serves flushed data");
        assert_eq!(snap.get("z"), Some(&3), "{name}");
    }
    let snap = c.sync().await.unwrap();
    assert!(snap.get("x").is_none() && snap.get("w") == Some(&4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_value_costs_its_key_only_or_fails_when_asked() {
    let Some(url) = server_from_env("DURABLE_TEST_REDIS_URL") else {
        return;
    };
    let namespace = Name::new(format!("g{:016x}", rand::random::<u64>())).unwrap();
    let dict = Name::new("garbage").unwrap();
    let store = RedisStore::connect(&url).await.unwrap();
    let backend = || store.backend(namespace.as_str(), dict.as_str()).unwrap();
    let d: Dict<i64, Json> = Dict::open(backend(), Json, Options::new()).await.unwrap();
    d.insert("good", 1).await.unwrap();

    // Written into the hash by hand, without a version bump: a new handle's full load sees it.
    // By default it opens without the key and names it in its health; with DecodeErrors::Fail
    // it does not open, and the error names the key.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = raw
        .hset(backend().entries_key(), "bad key", "{not json")
        .await
        .unwrap();
    let opened = Dict::<i64, Json>::open(backend(), Json, Options::new())
        .await
        .expect("a bad value costs its key only");
    assert_eq!(opened.snapshot().get("good"), Some(&1));
    assert!(opened.snapshot().get("bad key").is_none());
    let bad = opened.health().bad_keys;
    assert!(bad.iter().any(|b| b.key == "bad key"), "{bad:?}");
    let strict = || Options::new().with_decode_errors(DecodeErrors::Fail);
    match Dict::<i64, Json>::open(backend(), Json, strict()).await {
        Err(Error::Decode { key, .. }) => assert_eq!(key, "bad key"),
        other => panic!("expected a decode error naming the key, got {other:?}"),
    }

    // Written by another program through a versioned write: the existing handle's sync
    // succeeds, keeps the key's last good value and names it; a strict handle's sync fails
    // with the key and keeps its snapshot.
    let _: () = raw.hdel(backend().entries_key(), "bad key").await.unwrap();
    let strict_handle = Dict::<i64, Json>::open(backend(), Json, strict())
        .await
        .unwrap();
    let raw_dict: Dict<Vec<u8>, Raw> = Dict::open(backend(), Raw, Options::new()).await.unwrap();
    raw_dict.insert("good", b"\xff\xfe".to_vec()).await.unwrap();
    let snapshot = d.sync().await.expect("the bad value costs its key only");
    assert_eq!(snapshot.get("good"), Some(&1), "the last good value");
    drop(snapshot);
    let bad = d.health().bad_keys;
    assert!(bad.iter().any(|b| b.key == "good"), "{bad:?}");
    match strict_handle.sync().await {
        Err(Error::Decode { key, .. }) => assert_eq!(key, "good"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(strict_handle.snapshot().get("good"), Some(&1));

    // Rewriting the key clears it.
    d.insert("good", 2).await.unwrap();
    assert_eq!(d.sync().await.unwrap().get("good"), Some(&2));
    assert!(d.health().bad_keys.is_empty());

    common::delete_matching(&url, &format!("durable:{{{namespace}:*"))
        .await
        .unwrap();
}
