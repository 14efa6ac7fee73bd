//! Tests on a three-server ZooKeeper ensemble: the servers' client addresses are in
//! `DURABLE_TEST_ZOOKEEPER_ENSEMBLE` (in server order), controlled by the script in
//! `DURABLE_TEST_ZOOKEEPER_ENSEMBLE_CTL` (`node N kill|stop|start|status`, `leader`,
//! `followers`). Each handle is pinned to one server (its connect string names only that one).
//!
//! - A write through one server and a `sync()` through another right after: the sync shows the
//!   write (the version check reads after a ZooKeeper `sync`, so a lagging follower catches up
//!   first). Plain reads without the `sync`, on the same servers, are counted as a control.
//! - The conformance workload with writers on one follower and readers on the other servers
//!   while the leader is killed, a new one elected and the old one started again.

mod common;

use std::time::{Duration, Instant};

use durable_core::conformance::server_from_env;
use durable_core::conformance::workload::{RawDict, Workload};
use durable_core::{Backend, Dict, Mode, Name, Options, Raw};
use durable_zookeeper::{ZooKeeperBackend, ZooKeeperStore, zookeeper_client as zk};

use common::{ROOT, ZkHarness, config};

/// The tests stop servers of the shared ensemble: one at a time.
static ENSEMBLE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Ensemble {
    /// Client addresses, server 1 first.
    servers: Vec<String>,
    ctl: String,
    namespace: Name,
}

fn ensemble() -> Option<Ensemble> {
    let servers = server_from_env("DURABLE_TEST_ZOOKEEPER_ENSEMBLE")?;
    let ctl = server_from_env("DURABLE_TEST_ZOOKEEPER_ENSEMBLE_CTL")?;
    let servers: Vec<String> = servers.split(',').map(|s| s.trim().to_owned()).collect();
    assert_eq!(
        servers.len(),
        3,
        "three servers in DURABLE_TEST_ZOOKEEPER_ENSEMBLE"
    );
    let namespace = Name::new(format!("e{:016x}", rand::random::<u64>())).expect("name");
    Some(Ensemble {
        servers,
        ctl,
        namespace,
    })
}

fn options() -> Options {
    Options::new()
        .with_mode(Mode::Manual)
        .with_trust_hints_for(None)
        .with_timeout(Duration::from_secs(10))
        .with_open_timeout(Duration::from_secs(20))
}

impl Ensemble {
    /// Runs the control script with `args`; its standard output. Panics if it fails.
    async fn ctl(&self, args: &[&str]) -> String {
        let script = self.ctl.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let shown = args.join(" ");
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(script).args(args).output()
        })
        .await
        .expect("ctl task")
        .expect("run the ensemble's control script");
        assert!(
            output.status.success(),
            "ensemble control script {shown}: {:?}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("text")
    }

    async fn leader(&self) -> String {
        self.ctl(&["leader"]).await.trim().to_owned()
    }

    async fn followers(&self) -> Vec<String> {
        let followers: Vec<String> = self
            .ctl(&["followers"])
            .await
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(followers.len(), 2, "two followers: {followers:?}");
        followers
    }

    /// Server number (1-based, the order of `DURABLE_TEST_ZOOKEEPER_ENSEMBLE`) of `address`.
    fn number(&self, address: &str) -> String {
        let i = self
            .servers
            .iter()
            .position(|s| s == address)
            .unwrap_or_else(|| panic!("{address} is not one of {:?}", self.servers));
        (i + 1).to_string()
    }

    /// Starts whatever server is down and waits until all three serve.
    async fn all_up(&self) {
        self.ctl(&["start"]).await;
    }

    async fn backend(&self, server: &str, dictionary: &str) -> ZooKeeperBackend {
        ZooKeeperStore::connect(config(server))
            .await
            .expect("connect")
            .backend(self.namespace.as_str(), dictionary)
            .expect("backend")
    }

    async fn dict(&self, server: &str, dictionary: &str) -> RawDict {
        Dict::open(self.backend(server, dictionary).await, Raw, options())
            .await
            .expect("open")
    }

    async fn client(&self, server: &str) -> zk::Client {
        zk::Client::connector()
            .connect(server)
            .await
            .expect("connect")
    }

    async fn cleanup(&self) {
        let harness = ZkHarness::new(self.servers.join(","));
        durable_core::conformance::Harness::cleanup(&harness, &self.namespace)
            .await
            .expect("cleanup");
    }
}

/// The counter in a version record's text.
fn counter_of(record: &[u8]) -> u64 {
    std::str::from_utf8(record)
        .ok()
        .and_then(|text| {
            text.split_ascii_whitespace()
                .find_map(|w| w.strip_prefix("counter="))
        })
        .and_then(|c| c.parse().ok())
        .expect("a version record")
}

fn micros(d: Duration, n: u32) -> f64 {
    d.as_secs_f64() * 1e6 / f64::from(n.max(1))
}

/// A write acknowledged through one server, then at once a `sync()` through another: the sync
/// shows the write, every time. The same pairs of servers also serve plain reads of the
/// version record without a `sync` (the control: they may lag), and the cost of a version
/// check with and without the `sync` is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_server_is_seen_by_a_sync_through_another() {
    let Some(e) = ensemble() else { return };
    let _ensemble = ENSEMBLE.lock().await;
    e.all_up().await;
    let leader = e.leader().await;
    let followers = e.followers().await;
    let pairs = [
        ("follower", &followers[0], "follower", &followers[1]),
        ("leader", &leader, "follower", &followers[0]),
        ("follower", &followers[1], "follower", &followers[0]),
        // The leader answers a `sync` from its own sessions at once, without waiting for the
        // writes it has committed but not applied yet (which a follower may have applied and
        // acknowledged already): the check reads after a barrier instead.
        ("follower", &followers[0], "leader", &leader),
    ];
    // Other writers keep the servers busy applying commits, which widens that window.
    let load = WriteLoad::start(&e, &followers).await;
    const ROUNDS: u32 = 300;
    let mut anomalies = 0;
    for (i, (wrote_on, writer, read_on, reader)) in pairs.into_iter().enumerate() {
        let dictionary = format!("pair{i}");
        let w = e.dict(writer, &dictionary).await;
        let r = e.dict(reader, &dictionary).await;
        let plain = e.client(reader).await;
        let checker = e.backend(reader, &dictionary).await;
        let path = format!("{ROOT}/{}/{dictionary}", e.namespace);
        let (mut stale_syncs, mut stale_plain, mut stale_synced) = (0, 0, 0);
        let (mut synced, mut plain_time, mut check_time) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for round in 0..ROUNDS {
            let value = round.to_string().into_bytes();
            let token = w.insert("k", value.clone()).await.expect("insert");
            if round % 2 == 0 {
                let started = Instant::now();
                let snapshot = r.sync().await.expect("sync");
                synced += started.elapsed();
                if snapshot.get("k") != Some(&value) {
                    eprintln!(
                        "round {round}: a sync on {reader} after write {token} on {writer} shows {:?}",
                        snapshot
                            .get("k")
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    );
                    stale_syncs += 1;
                }
            } else {
                let started = Instant::now();
                let (record, _) = plain.get_data(&path).await.expect("get_data");
                plain_time += started.elapsed();
                if counter_of(&record) < token.counter() {
                    stale_plain += 1;
                }
                // The same read after a ZooKeeper `sync` (what the check did before it used a
                // barrier), pipelined on the same session.
                let synced = plain.sync(&path);
                let read = plain.get_data(&path);
                synced.await.expect("sync");
                let (record, _) = read.await.expect("get_data");
                if counter_of(&record) < token.counter() {
                    stale_synced += 1;
                }
                // The version check alone (a `sync` and the read, one round trip).
                let started = Instant::now();
                checker.last_updated().await.expect("last_updated");
                check_time += started.elapsed();
            }
        }
        let half = ROUNDS / 2;
        println!(
            "write on the {wrote_on} {writer}, read on the {read_on} {reader}: {stale_syncs} of \
             {half} syncs stale (mean {:.0} µs, a check and a delta); control: {stale_plain} of \
             {half} plain reads without sync stale, {stale_synced} of {half} reads after a \
             ZooKeeper sync stale; version check {:.0} µs with the barrier vs plain read {:.0} µs",
            micros(synced, half),
            micros(check_time, half),
            micros(plain_time, half),
        );
        anomalies += stale_syncs;
    }
    load.stop().await;
    e.cleanup().await;
    assert_eq!(anomalies, 0, "syncs that missed an acknowledged write");
}

/// Sessions writing other znodes through the followers in a loop, 32 writes pipelined at a time.
struct WriteLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WriteLoad {
    async fn start(e: &Ensemble, followers: &[String]) -> WriteLoad {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        let base = format!("{ROOT}/{}", e.namespace);
        let writer = e.client(&followers[0]).await;
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        writer.mkdir(&base, &options).await.expect("mkdir");
        for i in 0..4 {
            let client = e.client(&followers[i % followers.len()]).await;
            let path = format!("{base}/load{i}");
            client.create(&path, b"", &options).await.expect("create");
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let writes: Vec<_> = (0..32)
                        .map(|_| client.set_data(&path, b"x", None))
                        .collect();
                    for write in writes {
                        write.await.expect("load write");
                    }
                }
            }));
        }
        WriteLoad { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
    }
}

/// The conformance workload: writers on one follower, readers on the leader and the other
/// follower; the leader is killed, a new one is elected, the old one is started again. No token
/// may lie, and every handle ends at the state a fresh handle loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_survives_killing_the_leader() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_ansi(false)
            .with_test_writer()
            .try_init();
    }
    let Some(e) = ensemble() else { return };
    let _ensemble = ENSEMBLE.lock().await;
    e.all_up().await;
    let leader = e.leader().await;
    let followers = e.followers().await;
    let mut writers = Vec::new();
    for _ in 0..2 {
        writers.push(e.dict(&followers[0], "workload").await);
    }
    let mut readers = Vec::new();
    for server in [&leader, &followers[1], &leader, &followers[1]] {
        readers.push(e.dict(server, "workload").await);
    }
    let fault = async {
        let n = e.number(&leader);
        let started = Instant::now();
        e.ctl(&["node", &n, "kill"]).await;
        let elected = loop {
            let new = e.leader().await;
            if new != leader {
                break new;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let election = started.elapsed();
        e.ctl(&["node", &n, "start"]).await;
        println!(
            "fault: killed the leader {leader} (server {n}); {elected} leads after {election:?}; \
             the old leader serves again after {:?}",
            started.elapsed()
        );
    };
    let all = e.servers.join(",");
    let fresh = || async {
        Dict::open(
            ZooKeeperStore::connect(config(&all))
                .await
                .expect("connect")
                .backend(e.namespace.as_str(), "workload")
                .expect("backend"),
            Raw,
            options(),
        )
        .await
        .expect("open")
    };
    let report = Workload::default()
        .run(writers, readers, fault, Duration::from_secs(2), fresh)
        .await;
    println!("{report:#?}");
    e.all_up().await;
    e.cleanup().await;
    assert!(report.writes > 100, "the workload wrote: {report:?}");
    assert_eq!(report.anomalies(), 0, "{report:?}");
}
