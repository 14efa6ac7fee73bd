//! Redis going back to an earlier state of itself while handles write and sync, with real
//! servers: a restart from an older RDB snapshot, and a Redis Cluster failover to a replica that
//! missed the last writes. Each runs the conformance suite's fault workload
//! ([`Workload`]: four writing handles with two tasks each, four syncing handles, each handle
//! with its own connection) and asserts that no token lied (`report.anomalies() == 0`), that
//! the store really lost acknowledged writes and that the handles noticed it.
//!
//! A test binary of its own: the tests kill and restart the shared test servers through their
//! control scripts (`DURABLE_TEST_REDIS_CTL`, `DURABLE_TEST_REDIS_CLUSTER_CTL`), so nothing else
//! may use them meanwhile; the two tests run one after the other.

mod common;

use std::time::{Duration, Instant};

use durable_core::conformance::server_from_env;
use durable_core::conformance::workload::{RawDict, Report, Workload};
use durable_core::{Backend, Dict, Name, Options, Raw, Version};
use durable_redis::RedisStore;
use durable_redis::redis::{self, AsyncCommands};

/// The tests take servers away: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a control script with `args` and returns its output; panics if it fails. (Its `kill`
/// returns once the port is free again, so a `start` right after it never finds it taken.)
async fn ctl(script: &str, args: &[&str]) -> String {
    let (script, args) = (
        script.to_owned(),
        args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(&script)
            .args(&args)
            .output()
            .expect("run the control script");
        assert!(
            out.status.success(),
            "`{script} {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("control script task")
}

fn options() -> Options {
    Options::new()
        .with_timeout(Duration::from_secs(5))
        .with_open_timeout(Duration::from_secs(20))
}

async fn open(store: RedisStore, namespace: &Name) -> RawDict {
    let backend = store.backend(namespace.as_str(), "restored").unwrap();
    Dict::open(backend, Raw, options()).await.expect("open")
}

/// Asserts that the store went back (`before`: its token just before the fault, `after`: just
/// after) and that the workload saw no anomaly.
fn check(report: &Report, before: Version, after: Version, what: &str) {
    eprintln!("{what}: the store went from {before} back to {after}; {report:#?}");
    assert!(
        report.writes > 200,
        "{what}: the workload wrote: {report:?}"
    );
    assert!(
        after.epoch() == before.epoch() && after.counter() < before.counter(),
        "{what}: the store lost acknowledged writes (token {before} before, {after} after)"
    );
    assert!(
        report.regressions_followed > 0,
        "{what}: handles saw the store go back: {report:?}"
    );
    assert_eq!(report.anomalies(), 0, "{what}: {report:?}");
}

/// A key written just before the fault, which the store then loses.
const LOST: &str = "lost-marker";

/// A handle that synced last just before the fault (holding [`LOST`]) and stays idle until the
/// store, back at an earlier state, has been written past the counter it holds (the workload's
/// handles sync every millisecond, so they never hold a token that long): its next sync must
/// not take the new history for a continuation of its own (a delta served by counter alone
/// would keep [`LOST`] and skip every key written below its counter), and it must end where a
/// fresh handle starts.
async fn idle_handle_converges(idle: &RawDict, held: Version, probe: &dyn Backend, fresh: RawDict) {
    let (mut i, mut errors) = (0u64, 0);
    loop {
        let v = match probe
            .persist(&format!("filler-{i}"), i.to_string().into())
            .await
        {
            Ok(v) => v,
            // A cluster client may still be following the last failover.
            Err(e) if errors < 100 => {
                errors += 1;
                eprintln!("filler write: {e}; again");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => panic!("filler write: {e:?}"),
        };
        i += 1;
        if v.counter() > held.counter() + 10 {
            eprintln!("{i} filler writes took the store from below {held} to {v}");
            break;
        }
    }
    // Its connection may have died with the server: the first request after that fails.
    let mut synced = idle.sync().await;
    for _ in 0..50 {
        match &synced {
            Err(e) if e.is_unavailable() => {
                eprintln!("idle handle sync: {e}; again");
                tokio::time::sleep(Duration::from_millis(20)).await;
                synced = idle.sync().await;
            }
            _ => break,
        }
    }
    let synced = synced.expect("the idle handle syncs").version();
    fresh.sync().await.expect("the fresh handle syncs");
    let contents = |d: &RawDict| -> Vec<(String, Vec<u8>)> {
        let mut items: Vec<_> = d
            .snapshot()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
        items.sort();
        items
    };
    assert!(
        idle.snapshot().get(LOST).is_none(),
        "the idle handle kept {LOST:?}, which the store lost"
    );
    assert_eq!(
        synced,
        fresh.snapshot().version(),
        "the idle handle's token"
    );
    assert!(
        contents(idle) == contents(&fresh),
        "the idle handle (synced from {held} to {synced}) differs from a fresh handle"
    );
}

/// Redis restarts from a snapshot taken a second before it was killed: the writes of that
/// second are gone, and the counter continues from the snapshot's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_an_older_snapshot_is_followed() {
    let _serial = SERIAL.lock().await;
    let (Some(url), Some(ctl_script)) = (
        server_from_env("DURABLE_TEST_REDIS_URL"),
        server_from_env("DURABLE_TEST_REDIS_CTL"),
    ) else {
        return;
    };
    let started = Instant::now();
    let namespace = Name::new(format!("f{:016x}", rand::random::<u64>())).unwrap();
    let connect = || async {
        let store = RedisStore::connect_with(&url, common::options())
            .await
            .expect("connect");
        open(store, &namespace).await
    };
    let (mut writers, mut readers) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        writers.push(connect().await);
        readers.push(connect().await);
    }
    let probe = RedisStore::lazy(&url, common::options())
        .unwrap()
        .backend(namespace.as_str(), "restored")
        .unwrap();
    let idle = connect().await;
    let mut tokens = (None, None);
    let mut held = None;
    let fault = async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("SAVE").query_async(&mut raw).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A key only the lost history has: a delta served by counter alone would leave it in
        // the idle handle.
        probe
            .persist(LOST, "1".into())
            .await
            .expect("write the lost marker");
        held = Some(idle.sync().await.expect("idle handle syncs").version());
        tokens.0 = Some(probe.last_updated().await.expect("token before the kill"));
        ctl(&ctl_script, &["kill"]).await;
        ctl(&ctl_script, &["start"]).await;
        // The probe's connection died with the server: its first request may fail.
        for attempt in 0.. {
            match probe.last_updated().await {
                Ok(v) => {
                    tokens.1 = Some(v);
                    break;
                }
                Err(e) if attempt < 50 => {
                    eprintln!("token after the restart: {e}; again");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("token after the restart: {e:?}"),
            }
        }
        eprintln!(
            "restarted from the snapshot after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    };
    // 16 keys per writer task, 128 in all: each handle's snapshot passes 64 changed keys and
    // merges its overlay in the background while the store restarts.
    let watched = readers[0].clone();
    let report = Workload {
        keys_per_writer: 16,
        ..Workload::default()
    }
    .run(writers, readers, fault, Duration::from_secs(2), connect)
    .await;
    assert!(
        watched.stats().merges > 0,
        "no snapshot merge during the run"
    );
    let (Some(before), Some(after)) = tokens else {
        unreachable!("the fault ran")
    };
    check(&report, before, after, "restart from an older snapshot");
    let held = held.expect("the fault ran");
    idle_handle_converges(&idle, held, &probe, connect().await).await;
    common::delete_matching(&url, &format!("durable:{{{namespace}:*"))
        .await
        .unwrap();
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

/// One node of the cluster as the control script's `nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    port: u16,
    role: String,
    master: Option<u16>,
}

async fn nodes(ctl_script: &str) -> Vec<Node> {
    ctl(ctl_script, &["nodes"])
        .await
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            Some(Node {
                port: parts.next()?.parse().ok()?,
                role: parts.next()?.to_owned(),
                master: parts.next()?.parse().ok(),
            })
        })
        .collect()
}

async fn node_conn(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// The master serving `key`'s slot: the one that answers for it instead of redirecting.
async fn master_of(nodes: &[Node], key: &str) -> u16 {
    for node in nodes.iter().filter(|n| n.role == "master") {
        let reply: redis::RedisResult<bool> = node_conn(node.port).await.exists(key).await;
        if reply.is_ok() {
            return node.port;
        }
    }
    panic!("no master serves {key}: {nodes:?}");
}

/// A Redis Cluster master keeps taking writes for a second while its replica is frozen, then
/// dies; the replica, which never saw that second, takes over; the old master comes back as its
/// replica and drops what only it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_lagging_replica_is_followed() {
    let _serial = SERIAL.lock().await;
    let (Some(urls), Some(ctl_script)) = (
        server_from_env("DURABLE_TEST_REDIS_CLUSTER_ALL_URLS"),
        server_from_env("DURABLE_TEST_REDIS_CLUSTER_CTL"),
    ) else {
        return;
    };
    let started = Instant::now();
    // Every node up and every replica in sync (a no-op when the cluster is healthy).
    ctl(&ctl_script, &["start"]).await;
    let urls = common::ClusterHarness::from_env_value(&urls).urls;
    let namespace = Name::new(format!("f{:016x}", rand::random::<u64>())).unwrap();
    let connect = || async {
        let store = RedisStore::connect_cluster(&urls, common::options())
            .await
            .expect("connect to the cluster");
        open(store, &namespace).await
    };
    let (mut writers, mut readers) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        writers.push(connect().await);
        readers.push(connect().await);
    }
    let version_key = RedisStore::lazy(&urls[0], common::options())
        .unwrap()
        .backend(namespace.as_str(), "restored")
        .unwrap()
        .version_key()
        .to_owned();
    let before = nodes(&ctl_script).await;
    let master = master_of(&before, &version_key).await;
    let replica = before
        .iter()
        .find(|n| n.master == Some(master))
        .unwrap_or_else(|| panic!("master {master} has no replica: {before:?}"))
        .port;
    eprintln!("dictionary on master {master}, replica {replica}");
    let probe = RedisStore::connect_cluster(&urls, common::options())
        .await
        .unwrap()
        .backend(namespace.as_str(), "restored")
        .unwrap();
    let idle = connect().await;
    let mut tokens = (None, None);
    let mut held = None;
    let fault = async {
        let (m, r) = (master.to_string(), replica.to_string());
        ctl(&ctl_script, &["node", &r, "stop-process"]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A key only the lost history has: a delta served by counter alone would leave it in
        // the idle handle.
        probe
            .persist(LOST, "1".into())
            .await
            .expect("write the lost marker");
        held = Some(idle.sync().await.expect("idle handle syncs").version());
        tokens.0 = Some(probe.last_updated().await.expect("token before the kill"));
        ctl(&ctl_script, &["node", &m, "kill"]).await;
        ctl(&ctl_script, &["node", &r, "cont"]).await;
        let mut conn = node_conn(replica).await;
        let () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .arg("TAKEOVER")
            .query_async(&mut conn)
            .await
            .expect("CLUSTER FAILOVER TAKEOVER");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .unwrap();
            if info.contains("role:master") {
                break;
            }
            assert!(Instant::now() < deadline, "{replica} did not take over");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "replica {replica} took over after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // Straight from the new master: the cluster client may still be rerouting.
        let fields: Vec<String> = redis::cmd("HMGET")
            .arg(&version_key)
            .arg("epoch")
            .arg("counter")
            .arg("stamp")
            .arg("parent")
            .query_async(&mut conn)
            .await
            .expect("the new master's version record");
        let field = |i: usize| fields[i].parse::<u64>().expect("a number");
        tokens.1 = Some(Version::stamped(field(0), field(1), field(2), field(3)));
        ctl(&ctl_script, &["node", &m, "start"]).await;
        // Waits for cluster_state:ok on every node and every replica in sync.
        ctl(&ctl_script, &["start"]).await;
        eprintln!(
            "cluster healthy again after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    };
    let report = Workload::default()
        .run(writers, readers, fault, Duration::from_secs(2), connect)
        .await;
    let roles = nodes(&ctl_script).await;
    eprintln!("nodes after: {roles:?}");
    // Give the slots back to the old master (a graceful failover: nothing lost), so the
    // cluster has the roles it was created with for whatever runs next.
    let mut old_master = node_conn(master).await;
    let fail_back: redis::RedisResult<()> = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query_async(&mut old_master)
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fail_back.is_ok()
        && Instant::now() < deadline
        && !nodes(&ctl_script)
            .await
            .iter()
            .any(|n| n.port == master && n.role == "master")
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ctl(&ctl_script, &["start"]).await;
    eprintln!("nodes at the end: {:?}", nodes(&ctl_script).await);
    assert!(
        roles
            .iter()
            .any(|n| n.port == master && n.master == Some(replica)),
        "the old master rejoined as the new master's replica: {roles:?}"
    );
    fail_back.expect("the old master takes its slots back");
    let (Some(before), Some(after)) = tokens else {
        unreachable!("the fault ran")
    };
    check(&report, before, after, "failover to a lagging replica");
    let held = held.expect("the fault ran");
    idle_handle_converges(&idle, held, &probe, connect().await).await;
    durable_core::conformance::Harness::cleanup(
        &common::ClusterHarness { urls: urls.clone() },
        &namespace,
    )
    .await
    .unwrap();
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}
