//! Shared test helpers: the conformance harness and server control.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use durable_core::conformance::{Damage, Garbage, Harness, StoredCopy, server_from_env};
use durable_core::{Backend, Error, Name, Operation, Result};
use durable_zookeeper::{ZooKeeperOptions, ZooKeeperStore, zookeeper_client as zk};

pub const ROOT: &str = "/durable-test";

pub fn config(connect: &str) -> ZooKeeperOptions {
    ZooKeeperOptions::new(connect)
        .with_root(ROOT)
        .with_session_timeout(Duration::from_secs(6))
        .with_operation_timeout(Duration::from_secs(8))
}

pub struct ZkHarness {
    pub connect: String,
    admin: ZooKeeperStore,
    /// The server's control script, for [`Harness::restart`]; `None`: restarts are not offered.
    ctl: Option<String>,
}

impl ZkHarness {
    pub fn new(connect: String) -> Self {
        let admin = ZooKeeperStore::new(config(&connect)).expect("valid config");
        ZkHarness {
            connect,
            admin,
            ctl: None,
        }
    }

    /// Offers [`Harness::restart`] through the control script `ctl`. Only for a test binary of
    /// its own: a restart takes the server away from every test running meanwhile.
    pub fn with_ctl(mut self, ctl: String) -> Self {
        self.ctl = Some(ctl);
        self
    }

    /// The dictionary's znode.
    pub fn path(namespace: &Name, dictionary: &Name) -> String {
        format!("{ROOT}/{namespace}/{dictionary}")
    }

    pub async fn delete_tree(&self, path: &str) -> Result<()> {
        let client = self.admin.zookeeper_client().await?;
        delete_recursive(&client, path)
            .await
            .map_err(|e| Error::backend("zookeeper", Operation::Clear, e))
    }
}

/// Runs the ZooKeeper control script `script` with `action` (stop, start, restart, kill,
/// status). A failed `start` or `restart` is followed by up to ten `start`s: the script refuses a
/// port the old process still holds for a moment after `stop`.
pub async fn ctl(script: &str, action: &'static str) {
    let mut action = action;
    let mut status = None;
    for _ in 0..10 {
        let script = script.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            std::process::Command::new(script).arg(action).status()
        })
        .await
        .expect("ctl task")
        .expect("run the zookeeper control script");
        if result.success() {
            return;
        }
        status = Some(result);
        if !matches!(action, "start" | "restart") {
            break;
        }
        action = "start";
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("zookeeper control script {action}: {status:?}");
}

/// Every znode at and below `path` with its data, parents before children; empty if `path` is
/// missing. Repeated until the version record (the data of `path`) reads the same before and
/// after, so the copy is one state of a dictionary whose writers pause now and then.
pub async fn read_tree(
    client: &zk::Client,
    path: &str,
) -> Result<Vec<(String, Vec<u8>)>, zk::Error> {
    'attempt: for _ in 0..50 {
        let before = match client.get_data(path).await {
            Ok((data, _)) => data,
            Err(zk::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut nodes = Vec::new();
        let mut queue = std::collections::VecDeque::from([path.to_owned()]);
        while let Some(node) = queue.pop_front() {
            let (data, _) = match client.get_data(&node).await {
                Ok(found) => found,
                Err(zk::Error::NoNode) => continue 'attempt,
                Err(e) => return Err(e),
            };
            let children = match client.list_children(&node).await {
                Ok(children) => children,
                Err(zk::Error::NoNode) => continue 'attempt,
                Err(e) => return Err(e),
            };
            nodes.push((node.clone(), data));
            queue.extend(children.into_iter().map(|c| format!("{node}/{c}")));
        }
        match client.get_data(path).await {
            Ok((after, _)) if after == before => return Ok(nodes),
            Ok(_) | Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(zk::Error::BadVersion)
}

/// Replaces the tree at `path` with `nodes` (from [`read_tree`]) in one multi, as restoring a
/// backup would: every znode deleted (children first) and the copies created (parents first),
/// with new creation zxids and data versions. Retried when live handles change the tree between
/// the listing and the multi.
pub async fn replace_tree(
    client: &zk::Client,
    path: &str,
    nodes: &[(String, Vec<u8>)],
) -> Result<(), zk::Error> {
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let mut last = zk::Error::BadVersion;
    for _ in 0..50 {
        let current = read_tree(client, path).await?;
        let mut multi = client.new_multi_writer();
        for (node, _) in current.iter().rev() {
            multi.add_delete(node, None)?;
        }
        for (node, data) in nodes {
            multi.add_create(node, data, &options)?;
        }
        match multi.commit().await {
            Ok(_) => return Ok(()),
            Err(zk::MultiWriteError::RequestFailed { source }) => return Err(source),
            Err(zk::MultiWriteError::OperationFailed { source, .. }) => last = source,
        }
    }
    Err(last)
}

/// The version record `data` with field `name` replaced by `value` (removed if `None`).
pub fn edit_record(data: &[u8], name: &str, value: Option<&str>) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let words: Vec<String> = text
        .split_ascii_whitespace()
        .filter_map(|word| match word.split_once('=') {
            Some((field, _)) if field == name => value.map(|v| format!("{name}={v}")),
            _ => Some(word.to_owned()),
        })
        .collect();
    words.join(" ").into_bytes()
}

/// The znode name of `key`, as the backend encodes it: `k`, then every byte outside
/// `[A-Za-z0-9_.-]` written `%XX`.
pub fn encoded(key: &str) -> String {
    let mut name = String::from("k");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name
}

/// The value of field `name` in the version record `text`.
fn record_field<'a>(text: &'a str, name: &str) -> &'a str {
    text.split_ascii_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the record {text:?} has no {name}"))
}

/// Writes into the dictionary at `base` as another program imitating a write would, in one
/// multi: the version record bumped (the next counter, a new stamp, the old one as parent), the
/// head moved to the new stamp, the operations `add` puts in (given the new counter, the
/// revision of the write), and the change-log node of the new counter naming `names`. Retried
/// when the record moved meanwhile.
pub async fn write_raw(
    client: &zk::Client,
    base: &str,
    names: &[&str],
    add: impl Fn(&mut zk::MultiWriter<'_>, u64) -> Result<(), zk::Error>,
) -> Result<(), zk::Error> {
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    for _ in 0..20 {
        let (data, stat) = client.get_data(base).await?;
        let text = String::from_utf8_lossy(&data).into_owned();
        let counter: u64 = record_field(&text, "counter").parse().expect("a counter");
        let old = record_field(&text, "stamp").to_owned();
        let new = format!("{:016x}", rand::random::<u64>() | 1);
        let next = counter + 1;
        let record = edit_record(&data, "counter", Some(&next.to_string()));
        let record = edit_record(&record, "stamp", Some(&new));
        let record = edit_record(&record, "parent", Some(&old));
        let mut multi = client.new_multi_writer();
        multi.add_set_data(base, &record, Some(stat.version))?;
        multi.add_delete(&format!("{base}/stamp/{old}"), None)?;
        multi.add_create(&format!("{base}/stamp/{new}"), b"", &options)?;
        add(&mut multi, next)?;
        let log = format!("stamp={new}\n{}", names.join("/"));
        multi.add_create(&format!("{base}/log/{next:020}"), log.as_bytes(), &options)?;
        match multi.commit().await {
            Ok(_) => return Ok(()),
            Err(zk::MultiWriteError::OperationFailed {
                source: zk::Error::BadVersion,
                ..
            }) => continue,
            Err(
                zk::MultiWriteError::OperationFailed { source, .. }
                | zk::MultiWriteError::RequestFailed { source },
            ) => return Err(source),
        }
    }
    Err(zk::Error::BadVersion)
}

/// Deletes `path` and everything below it, as `deleteall` in zkCli does, retrying when live
/// handles re-create children meanwhile.
pub async fn delete_recursive(client: &zk::Client, path: &str) -> Result<(), zk::Error> {
    for _ in 0..20 {
        let mut stack = vec![(path.to_owned(), false)];
        let mut busy = false;
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                match client.delete(&node, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => {}
                    Err(zk::Error::NotEmpty) => busy = true,
                    Err(e) => return Err(e),
                }
                continue;
            }
            match client.list_children(&node).await {
                Ok(children) => {
                    stack.push((node.clone(), true));
                    for child in children {
                        stack.push((format!("{node}/{child}"), false));
                    }
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        if !busy {
            return Ok(());
        }
    }
    Err(zk::Error::NotEmpty)
}

#[durable_core::async_trait]
impl Harness for ZkHarness {
    async fn open(&self, namespace: &Name, dictionary: &Name) -> Result<Box<dyn Backend>> {
        let store = ZooKeeperStore::connect(config(&self.connect)).await?;
        Ok(Box::new(
            store.backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn wipe(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        self.delete_tree(&format!("{ROOT}/{namespace}/{dictionary}"))
            .await
    }

    async fn forget_history(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        self.admin
            .backend(namespace.as_str(), dictionary.as_str())?
            .forget_history()
            .await
            .map(drop)
    }

    async fn open_unreachable(
        &self,
        namespace: &Name,
        dictionary: &Name,
    ) -> Result<Box<dyn Backend>> {
        // Port 1 on loopback: nothing listens there.
        let store = ZooKeeperStore::new(config("127.0.0.1:1"))?;
        Ok(Box::new(
            store.backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn copy_stored(&self, namespace: &Name, dictionary: &Name) -> Result<StoredCopy> {
        let client = self.admin.zookeeper_client().await?;
        let nodes = read_tree(&client, &Self::path(namespace, dictionary))
            .await
            .map_err(|e| Error::backend("zookeeper", Operation::Load, e))?;
        Ok(Box::new(nodes))
    }

    async fn put_back(&self, namespace: &Name, dictionary: &Name, copy: StoredCopy) -> Result<()> {
        let nodes = copy
            .downcast::<Vec<(String, Vec<u8>)>>()
            .expect("a copy taken by this harness");
        let client = self.admin.zookeeper_client().await?;
        replace_tree(&client, &Self::path(namespace, dictionary), &nodes)
            .await
            .map_err(|e| Error::backend("zookeeper", Operation::Batch, e))
    }

    async fn damage_version_record(
        &self,
        namespace: &Name,
        dictionary: &Name,
        damage: Damage,
    ) -> Result<bool> {
        let client = self.admin.zookeeper_client().await?;
        let path = Self::path(namespace, dictionary);
        let fail = |e| Error::backend("zookeeper", Operation::Persist, e);
        let (data, _) = client.get_data(&path).await.map_err(fail)?;
        let damaged = match damage {
            // The record is the data of the dictionary znode, the parent of the entries: the
            // znode itself cannot go while they stay, its data can.
            Damage::RecordMissing => Vec::new(),
            Damage::CounterMissing => edit_record(&data, "counter", None),
            Damage::CounterNotInteger => edit_record(&data, "counter", Some("garbage")),
            Damage::CounterNegative => edit_record(&data, "counter", Some("-5")),
            Damage::CounterHuge => edit_record(&data, "counter", Some("9223372036854775808")),
            Damage::EpochNotInteger => edit_record(&data, "epoch", Some("garbage")),
            _ => return Ok(false),
        };
        client.set_data(&path, &damaged, None).await.map_err(fail)?;
        Ok(true)
    }

    async fn write_garbage(
        &self,
        namespace: &Name,
        dictionary: &Name,
        garbage: Garbage,
        key: &str,
    ) -> Result<bool> {
        let client = self.admin.zookeeper_client().await?;
        let base = Self::path(namespace, dictionary);
        let entries = format!("{base}/entries");
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let written = match garbage {
            Garbage::UndecodableValue => {
                let backend = self.open(namespace, dictionary).await?;
                backend
                    .persist(key, Bytes::from_static(b"{not json \xff"))
                    .await?;
                return Ok(true);
            }
            // `k<key>%FF`: well-formed escapes whose bytes are not UTF-8, with a good header.
            Garbage::NonUtf8Key => {
                let name = format!("{}%FF", encoded(key));
                let path = format!("{entries}/{name}");
                write_raw(&client, &base, &[&name], |multi, revision| {
                    let mut data = revision.to_be_bytes().to_vec();
                    data.extend_from_slice(b"1");
                    multi.add_create(&path, &data, &options)
                })
                .await
            }
            // The key's entry cut to 3 bytes, shorter than its 8-byte header.
            Garbage::Malformed => {
                let name = encoded(key);
                let path = format!("{entries}/{name}");
                write_raw(&client, &base, &[&name], |multi, _| {
                    multi.add_set_data(&path, b"\x00\x00\x01", None)
                })
                .await
            }
            // A child of `entries` that is no encoded key.
            Garbage::Stray => {
                let path = format!("{entries}/notakey");
                write_raw(&client, &base, &["notakey"], |multi, _| {
                    multi.add_create(&path, b"garbage", &options)
                })
                .await
            }
            // Every znode holds bytes: there is no type to get wrong.
            _ => return Ok(false),
        };
        written.map_err(|e| Error::backend("zookeeper", Operation::Persist, e))?;
        Ok(true)
    }

    async fn cleanup(&self, namespace: &Name) -> Result<()> {
        self.delete_tree(&format!("{ROOT}/{namespace}")).await
    }

    async fn restart(&self) -> Result<bool> {
        let Some(script) = &self.ctl else {
            return Ok(false);
        };
        ctl(script, "restart").await;
        Ok(true)
    }
}

pub async fn harness() -> Option<ZkHarness> {
    server_from_env("DURABLE_TEST_ZOOKEEPER").map(ZkHarness::new)
}

/// [`harness`] with restarts through the script in `DURABLE_TEST_ZOOKEEPER_CTL`.
pub async fn restartable_harness() -> Option<ZkHarness> {
    let harness = harness().await?;
    let script = server_from_env("DURABLE_TEST_ZOOKEEPER_CTL")?;
    Some(harness.with_ctl(script))
}
