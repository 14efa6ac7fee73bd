//! The [`Backend`] implementation.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use durable_core::{
    Backend, BatchOp, Capabilities, Changes, Delta, Error, Hints, IfAbsent, Load, Name, Operation,
    Result, Revision, StoredEntry, Swap, Version, parse_counter,
};
use parking_lot::Mutex;
use zookeeper_client as zk;

use crate::keys::{self, MAX_KEY_LEN};
use crate::store::{Failure, NAME, ZooKeeperStore};

/// The largest value stored, in bytes: ZooKeeper refuses requests above `jute.maxbuffer`
/// (1 MiB by default), and a write also carries the entry's path, an 8-byte revision and a
/// change-log line, so values are capped a little below.
pub const MAX_VALUE_SIZE: usize = 1_000_000;

/// The estimated size of one multi request that is refused before sending (below ZooKeeper's
/// default `jute.maxbuffer` of 1,048,575 bytes).
const MAX_REQUEST: usize = 1_040_000;
/// Attempts of an optimistic write before giving up with [`Error::Contention`].
const MAX_ATTEMPTS: u32 = 64;
/// The longest pause between two attempts of a write that lost a race.
const MAX_BACKOFF_MICROS: u64 = 50_000;
/// Rounds of catching up with concurrent writers before a load or delta gives up.
const MAX_ROUNDS: u32 = 32;
/// Entries fetched per pipelined window in a full load.
const LOAD_WINDOW: usize = 8192;

/// One dictionary in ZooKeeper. Every optional capability, atomically.
///
/// Created by [`ZooKeeperStore::backend`]. See the crate documentation for the layout and the
/// cost of each operation.
pub struct ZooKeeperBackend {
    pub(crate) store: ZooKeeperStore,
    namespace: Name,
    dictionary: Name,
    pub(crate) paths: Arc<Paths>,
    /// The version node as this backend last saw it: the expected version of the next write.
    cached: Mutex<Option<Node>>,
    /// Whether the last plain `persist` had to create its entry (a guess for the next one).
    guess_create: AtomicBool,
}

impl fmt::Debug for ZooKeeperBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZooKeeperBackend")
            .field("namespace", &self.namespace)
            .field("dictionary", &self.dictionary)
            .field("path", &self.paths.base)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The znode paths of one dictionary.
#[derive(Debug)]
pub(crate) struct Paths {
    pub(crate) namespace: String,
    pub(crate) base: String,
    pub(crate) version: String,
    pub(crate) entries: String,
    pub(crate) log: String,
}

impl Paths {
    fn new(root: &str, namespace: &Name, dictionary: &Name) -> Self {
        let namespace = format!("{root}/{namespace}");
        let base = format!("{namespace}/{dictionary}");
        Paths {
            // The dictionary znode itself carries the version (its creation zxid and data
            // version): ZooKeeper deletes children before their parent, so a re-created
            // dictionary znode (a new epoch) can never sit above entries of an older epoch.
            version: base.clone(),
            entries: format!("{base}/entries"),
            log: format!("{base}/log"),
            namespace,
            base,
        }
    }

    fn entry(&self, name: &str) -> String {
        format!("{}/{name}", self.entries)
    }

    fn log_node(&self, counter: u64) -> String {
        format!("{}/{counter:020}", self.log)
    }
}

/// The identity and data version of the version znode: the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    czxid: i64,
    version: i32,
}

impl Node {
    fn from_stat(stat: &zk::Stat) -> Self {
        Node {
            czxid: stat.czxid,
            version: stat.version,
        }
    }

    fn token(self) -> Version {
        Version::new(self.czxid as u64, u64::try_from(self.version).unwrap_or(0))
    }
}

/// An entry as read for a conditional write.
#[derive(Debug, Clone)]
struct Current {
    entry: StoredEntry,
    znode_version: i32,
}

/// One entry operation of a write multi.
#[derive(Debug)]
enum EntryWrite {
    Create {
        name: String,
        value: Bytes,
    },
    Set {
        name: String,
        value: Bytes,
        expected: Option<i32>,
    },
    Delete {
        name: String,
        expected: Option<i32>,
    },
}

impl EntryWrite {
    fn name(&self) -> &str {
        match self {
            EntryWrite::Create { name, .. }
            | EntryWrite::Set { name, .. }
            | EntryWrite::Delete { name, .. } => name,
        }
    }

    fn size(&self) -> usize {
        let value = match self {
            EntryWrite::Create { value, .. } | EntryWrite::Set { value, .. } => value.len() + 8,
            EntryWrite::Delete { .. } => 0,
        };
        // The path twice (entry and change log) and the op header with ACLs.
        2 * self.name().len() + value + 96
    }
}

/// Why a write multi was refused.
#[derive(Debug)]
enum Conflict {
    /// Another write moved the version node: read again.
    Moved,
    /// The tree is gone or incomplete; it was re-created: read again.
    TreeMissing,
    /// An entry operation found its entry absent.
    EntryAbsent,
    /// An entry operation found its entry present.
    EntryExists,
    /// An entry operation found its entry changed.
    EntryChanged,
}

fn entry_data(revision: u64, value: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(8 + value.len());
    data.extend_from_slice(&revision.to_be_bytes());
    data.extend_from_slice(value);
    data
}

fn corrupt(operation: Operation, what: String) -> Error {
    Error::backend(NAME, operation, what)
}

fn parse_entry(operation: Operation, key: String, data: Vec<u8>) -> Result<StoredEntry> {
    if data.len() < 8 {
        return Err(corrupt(
            operation,
            format!(
                "entry of key {key:?} is not a durable entry ({} bytes)",
                data.len()
            ),
        ));
    }
    let mut revision = [0u8; 8];
    revision.copy_from_slice(&data[..8]);
    Ok(StoredEntry {
        key,
        value: Bytes::from(data).slice(8..),
        revision: Revision(u64::from_be_bytes(revision)),
        expires_at: None,
    })
}

fn decode_name(operation: Operation, name: &str) -> Result<String> {
    keys::decode(name)
        .ok_or_else(|| corrupt(operation, format!("znode {name:?} is not an encoded key")))
}

impl ZooKeeperBackend {
    pub(crate) fn new(store: ZooKeeperStore, namespace: Name, dictionary: Name) -> Self {
        let paths = Arc::new(Paths::new(
            &store.inner.config.root,
            &namespace,
            &dictionary,
        ));
        ZooKeeperBackend {
            store,
            namespace,
            dictionary,
            paths,
            cached: Mutex::new(None),
            guess_create: AtomicBool::new(false),
        }
    }

    /// The store (connection) this backend uses.
    pub fn store(&self) -> &ZooKeeperStore {
        &self.store
    }

    /// The znode of this dictionary (inside the chroot): `<root>/<namespace>/<dictionary>`. Its
    /// stat is the version; its children are `entries` and `log`.
    pub fn path(&self) -> &str {
        &self.paths.base
    }

    /// Deletes the dictionary's change log, so that only the current token can be served a
    /// delta (older handles reload in full). Returns how many log nodes were deleted.
    pub async fn forget_history(&self) -> Result<usize> {
        self.store
            .run(Operation::Changes, true, |client| async move {
                let names = match client.list_children(&self.paths.log).await {
                    Ok(names) => names,
                    Err(zk::Error::NoNode) => return Ok(0),
                    Err(e) => return Err(e.into()),
                };
                let deletes: Vec<_> = names
                    .iter()
                    .map(|n| client.delete(&format!("{}/{n}", self.paths.log), None))
                    .collect();
                for delete in deletes {
                    match delete.await {
                        Ok(()) | Err(zk::Error::NoNode) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(names.len())
            })
            .await
    }

    fn check_key(&self, key: &str) -> Result<String> {
        if key.len() > MAX_KEY_LEN {
            let shown: String = key.chars().take(32).collect();
            return Err(Error::InvalidKey {
                backend: NAME.into(),
                key: format!("{shown}..."),
                reason: format!(
                    "{} bytes, the zookeeper backend accepts keys up to {MAX_KEY_LEN} bytes",
                    key.len()
                ),
            });
        }
        Ok(keys::encode(key))
    }

    fn check_value(key: &str, value: &[u8]) -> Result<()> {
        if value.len() > MAX_VALUE_SIZE {
            return Err(Error::ValueTooLarge {
                backend: NAME.into(),
                key: key.into(),
                size: value.len(),
                limit: MAX_VALUE_SIZE,
            });
        }
        Ok(())
    }

    fn remember(&self, node: Option<Node>) {
        *self.cached.lock() = node;
    }

    /// Creates whatever part of the tree is missing: the namespace, the dictionary znode (whose
    /// creation zxid becomes the new epoch), `entries` and `log`.
    async fn ensure_tree(&self, client: &zk::Client) -> Result<(), Failure> {
        let options = self.store.inner.config.create_options();
        client.mkdir(&self.paths.namespace, &options).await?;
        // Pipelined: sent in this order, so each parent exists before its child is created.
        let creates: Vec<_> = [&self.paths.base, &self.paths.entries, &self.paths.log]
            .into_iter()
            .map(|path| client.create(path, b"", &options))
            .collect();
        for create in creates {
            match create.await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                // A concurrent wipe removed a parent again: the caller reads and retries.
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads the version node, creating the tree if it is missing.
    async fn read_node(&self, client: &zk::Client, operation: Operation) -> Result<Node, Failure> {
        for _ in 0..5 {
            if let Some(stat) = client.check_stat(&self.paths.version).await? {
                let node = Node::from_stat(&stat);
                self.remember(Some(node));
                return Ok(node);
            }
            self.ensure_tree(client).await?;
        }
        Err(corrupt(operation, "the version node keeps disappearing".into()).into())
    }

    /// The expected version node for a blind write: the cached one, or a fresh read.
    async fn expected_node(
        &self,
        client: &zk::Client,
        operation: Operation,
    ) -> Result<Node, Failure> {
        let cached = *self.cached.lock();
        match cached {
            Some(node) => Ok(node),
            None => self.read_node(client, operation).await,
        }
    }

    /// Reads the version node and the entries `names` (pipelined, one round trip).
    async fn read_state(
        &self,
        client: &zk::Client,
        operation: Operation,
        names: &[String],
    ) -> Result<(Node, Vec<Option<Current>>), Failure> {
        for _ in 0..5 {
            let version = client.check_stat(&self.paths.version);
            let reads: Vec<_> = names
                .iter()
                .map(|name| client.get_data(&self.paths.entry(name)))
                .collect();
            let Some(stat) = version.await? else {
                self.ensure_tree(client).await?;
                continue;
            };
            let mut current = Vec::with_capacity(names.len());
            for (name, read) in names.iter().zip(reads) {
                current.push(match read.await {
                    Ok((data, stat)) => Some(Current {
                        entry: parse_entry(operation, decode_name(operation, name)?, data)?,
                        znode_version: stat.version,
                    }),
                    Err(zk::Error::NoNode) => None,
                    Err(e) => return Err(e.into()),
                });
            }
            let node = Node::from_stat(&stat);
            self.remember(Some(node));
            return Ok((node, current));
        }
        Err(corrupt(operation, "the version node keeps disappearing".into()).into())
    }

    /// One write multi: the version node checked and bumped, the entry operations, and the
    /// change-log node of the new counter, all or nothing.
    async fn commit(
        &self,
        client: &zk::Client,
        operation: Operation,
        node: Node,
        writes: &[EntryWrite],
    ) -> Result<Result<Version, Conflict>, Failure> {
        let Some(next) = node.version.checked_add(1) else {
            return Err(corrupt(
                operation,
                "the version counter is exhausted (2^31 writes): re-create the dictionary".into(),
            )
            .into());
        };
        let revision = u64::try_from(next).unwrap_or(0);
        let log: Vec<&str> = writes.iter().map(EntryWrite::name).collect();
        let log = log.join("/");
        let size: usize = writes.iter().map(EntryWrite::size).sum::<usize>() + 256;
        if size > MAX_REQUEST {
            return Err(corrupt(
                operation,
                format!(
                    "the write needs a multi of about {size} bytes, more than ZooKeeper accepts \
                     in one request ({MAX_REQUEST}): split it"
                ),
            )
            .into());
        }
        let options = self.store.inner.config.create_options();
        let mut multi = client.new_multi_writer();
        multi.add_set_data(&self.paths.version, b"", Some(node.version))?;
        for write in writes {
            match write {
                EntryWrite::Create { name, value } => multi.add_create(
                    &self.paths.entry(name),
                    &entry_data(revision, value),
                    &options,
                )?,
                EntryWrite::Set {
                    name,
                    value,
                    expected,
                } => multi.add_set_data(
                    &self.paths.entry(name),
                    &entry_data(revision, value),
                    *expected,
                )?,
                EntryWrite::Delete { name, expected } => {
                    multi.add_delete(&self.paths.entry(name), *expected)?
                }
            }
        }
        multi.add_create(&self.paths.log_node(revision), log.as_bytes(), &options)?;
        match multi.commit().await {
            Ok(results) => {
                let stat = match results.first() {
                    Some(zk::MultiWriteResult::SetData { stat }) => *stat,
                    other => {
                        return Err(corrupt(
                            operation,
                            format!("unexpected multi result {other:?}"),
                        )
                        .into());
                    }
                };
                let new = Node::from_stat(&stat);
                if new.version != next || new.czxid != node.czxid {
                    return Err(corrupt(
                        operation,
                        format!("version node moved from {node:?} to {new:?} in one multi"),
                    )
                    .into());
                }
                self.remember(Some(new));
                // Trim the change log: sending happens now; the answer does not matter.
                let history = u64::from(self.store.inner.config.history);
                if revision > history {
                    drop(client.delete(&self.paths.log_node(revision - history), None));
                }
                Ok(Ok(new.token()))
            }
            Err(zk::MultiWriteError::RequestFailed { source }) => Err(source.into()),
            Err(zk::MultiWriteError::OperationFailed { index, source }) => {
                self.remember(None);
                let conflict = match (index, source) {
                    (0, zk::Error::BadVersion) => Conflict::Moved,
                    (0, zk::Error::NoNode) => Conflict::TreeMissing,
                    (i, e) if i >= 1 && i <= writes.len() => match (&writes[i - 1], e) {
                        (EntryWrite::Create { .. }, zk::Error::NodeExists) => Conflict::EntryExists,
                        (EntryWrite::Create { .. }, zk::Error::NoNode) => Conflict::TreeMissing,
                        (_, zk::Error::NoNode) => Conflict::EntryAbsent,
                        (_, zk::Error::BadVersion) => Conflict::EntryChanged,
                        (_, e) => return Err(e.into()),
                    },
                    (_, zk::Error::NoNode) => Conflict::TreeMissing,
                    (_, zk::Error::NodeExists) => {
                        // A change-log node of this counter survived from an older tree.
                        let _ = client.delete(&self.paths.log_node(revision), None).await;
                        Conflict::Moved
                    }
                    (_, e) => return Err(e.into()),
                };
                if matches!(conflict, Conflict::TreeMissing) {
                    self.ensure_tree(client).await?;
                }
                Ok(Err(conflict))
            }
        }
    }

    fn contention(key: &str) -> Failure {
        Failure::Durable(Error::Contention {
            backend: NAME.into(),
            key: key.into(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Brings `entries` (keyed by key) from the state `since` to a consistent later state,
    /// starting with the version node `target`, by reading the change log. Keys found deleted
    /// go to `removed` with the counter of their last change. `None`: the log cannot serve
    /// `since` (another epoch, trimmed history, a wiped tree).
    async fn catch_up(
        &self,
        client: &zk::Client,
        operation: Operation,
        since: Version,
        mut target: Node,
        entries: &mut HashMap<String, StoredEntry>,
        removed: &mut HashMap<String, Revision>,
    ) -> Result<Option<Node>, Failure> {
        let history = u64::from(self.store.inner.config.history);
        let mut from = since.counter();
        for _ in 0..MAX_ROUNDS {
            let to = target.token();
            if to.epoch() != since.epoch()
                || to.counter() < from
                || to.counter() - since.counter() > history
            {
                return Ok(None);
            }
            if to.counter() == from {
                return Ok(Some(target));
            }
            // Round trip 1: the change-log nodes of the counters (from, to].
            let logs: Vec<_> = (from + 1..=to.counter())
                .map(|c| (c, client.get_data(&self.paths.log_node(c))))
                .collect();
            let mut changed: HashMap<String, u64> = HashMap::new();
            for (counter, log) in logs {
                match log.await {
                    Ok((data, _)) => {
                        let text = String::from_utf8(data).map_err(|_| {
                            corrupt(operation, format!("change log {counter} is not text"))
                        })?;
                        for name in text.split('/').filter(|n| !n.is_empty()) {
                            changed.insert(name.to_owned(), counter);
                        }
                    }
                    Err(zk::Error::NoNode) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
            // Round trip 2: those entries, then the version node again.
            let reads: Vec<_> = changed
                .iter()
                .map(|(name, counter)| (name, *counter, client.get_data(&self.paths.entry(name))))
                .collect();
            let version = client.check_stat(&self.paths.version);
            for (name, counter, read) in reads {
                let key = decode_name(operation, name)?;
                match read.await {
                    Ok((data, _)) => {
                        removed.remove(&key);
                        entries.insert(key.clone(), parse_entry(operation, key, data)?);
                    }
                    Err(zk::Error::NoNode) => {
                        entries.remove(&key);
                        removed.insert(key, Revision(counter));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let Some(stat) = version.await? else {
                return Ok(None);
            };
            let now = Node::from_stat(&stat);
            if now == target {
                return Ok(Some(target));
            }
            // Writers were busy meanwhile: what was read may be newer than `to`; catch up.
            from = to.counter();
            target = now;
        }
        Err(corrupt(
            operation,
            format!("the dictionary changed faster than {MAX_ROUNDS} rounds of reads could follow"),
        )
        .into())
    }

    async fn load_once(&self, client: &zk::Client) -> Result<Load, Failure> {
        let operation = Operation::Load;
        for _ in 0..MAX_ROUNDS {
            let first = self.read_node(client, operation).await?;
            let names = match client.list_children(&self.paths.entries).await {
                Ok(names) => names,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut entries = HashMap::with_capacity(names.len());
            for window in names.chunks(LOAD_WINDOW) {
                let reads: Vec<_> = window
                    .iter()
                    .map(|name| (name, client.get_data(&self.paths.entry(name))))
                    .collect();
                for (name, read) in reads {
                    match read.await {
                        Ok((data, _)) => {
                            let key = decode_name(operation, name)?;
                            entries.insert(key.clone(), parse_entry(operation, key, data)?);
                        }
                        Err(zk::Error::NoNode) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            let Some(stat) = client.check_stat(&self.paths.version).await? else {
                continue;
            };
            let last = Node::from_stat(&stat);
            let version = if last == first {
                Some(first)
            } else {
                let mut removed = HashMap::new();
                self.catch_up(
                    client,
                    operation,
                    first.token(),
                    last,
                    &mut entries,
                    &mut removed,
                )
                .await?
            };
            if let Some(node) = version {
                self.remember(Some(node));
                return Ok(Load {
                    version: node.token(),
                    entries: entries.into_values().collect(),
                });
            }
        }
        Err(corrupt(
            operation,
            "no consistent load after repeated attempts".into(),
        )
        .into())
    }

    async fn changes_once(&self, client: &zk::Client, since: Version) -> Result<Changes, Failure> {
        let operation = Operation::Changes;
        let node = self.read_node(client, operation).await?;
        let mut entries = HashMap::new();
        let mut removed = HashMap::new();
        let caught = self
            .catch_up(client, operation, since, node, &mut entries, &mut removed)
            .await?;
        Ok(match caught {
            None => Changes::TooOld,
            Some(node) => Changes::Delta(Delta {
                version: node.token(),
                upserts: entries.into_values().collect(),
                removals: removed.into_iter().collect(),
            }),
        })
    }

    async fn persist_once(
        &self,
        client: &zk::Client,
        name: &str,
        key: &str,
        value: &Bytes,
    ) -> Result<Version, Failure> {
        let operation = Operation::Persist;
        let mut create = self.guess_create.load(Ordering::Relaxed);
        for attempt in 0..MAX_ATTEMPTS {
            let node = self.expected_node(client, operation).await?;
            let write = if create {
                EntryWrite::Create {
                    name: name.to_owned(),
                    value: value.clone(),
                }
            } else {
                EntryWrite::Set {
                    name: name.to_owned(),
                    value: value.clone(),
                    expected: None,
                }
            };
            match self.commit(client, operation, node, &[write]).await? {
                Ok(version) => {
                    self.guess_create.store(create, Ordering::Relaxed);
                    return Ok(version);
                }
                Err(Conflict::EntryAbsent) => {
                    create = true;
                    self.remember(Some(node));
                }
                Err(Conflict::EntryExists) => {
                    create = false;
                    self.remember(Some(node));
                }
                Err(_) => backoff(attempt).await,
            }
        }
        Err(Self::contention(key))
    }

    async fn depersist_once(
        &self,
        client: &zk::Client,
        name: &str,
        key: &str,
    ) -> Result<Option<Version>, Failure> {
        let operation = Operation::Depersist;
        for attempt in 0..MAX_ATTEMPTS {
            let node = self.expected_node(client, operation).await?;
            let write = EntryWrite::Delete {
                name: name.to_owned(),
                expected: None,
            };
            match self.commit(client, operation, node, &[write]).await? {
                Ok(version) => return Ok(Some(version)),
                // The version check passed and the entry was absent: nothing to do, atomically.
                Err(Conflict::EntryAbsent) => {
                    self.remember(Some(node));
                    return Ok(None);
                }
                Err(_) => backoff(attempt).await,
            }
        }
        Err(Self::contention(key))
    }

    /// Read, decide, write with every check; on a conflict read again.
    async fn conditional<T>(
        &self,
        client: &zk::Client,
        operation: Operation,
        key: &str,
        names: &[String],
        mut decide: impl FnMut(&[Option<Current>]) -> Result<Decision<T>>,
    ) -> Result<T, Failure> {
        for attempt in 0..MAX_ATTEMPTS {
            let (node, current) = self.read_state(client, operation, names).await?;
            match decide(&current)? {
                Decision::Done(value) => return Ok(value),
                Decision::Write(writes, finish) => {
                    if let Ok(version) = self.commit(client, operation, node, &writes).await? {
                        return Ok(finish(version));
                    }
                    backoff(attempt).await;
                }
            }
        }
        Err(Self::contention(key))
    }
}

/// Waits a random time, growing with `attempt`, before retrying a write that lost a race: a
/// writer with a fresh cached version commits in one round trip while a loser needs two (read,
/// then commit), so without the pause a busy writer could starve the others.
async fn backoff(attempt: u32) {
    let ceiling = (200u64 << attempt.min(12)).min(MAX_BACKOFF_MICROS);
    let micros = rand::random::<u64>() % (ceiling + 1);
    tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
}

/// What a conditional operation decided after reading.
enum Decision<T> {
    /// Nothing to write; the answer.
    Done(T),
    /// Write these, then answer with the new token.
    Write(Vec<EntryWrite>, Box<dyn FnOnce(Version) -> T + Send>),
}

/// The write that stores `value` given the entry's current state.
fn put(name: &str, current: Option<&Current>, value: Bytes) -> EntryWrite {
    match current {
        Some(current) => EntryWrite::Set {
            name: name.to_owned(),
            value,
            expected: Some(current.znode_version),
        },
        None => EntryWrite::Create {
            name: name.to_owned(),
            value,
        },
    }
}

#[async_trait]
impl Backend for ZooKeeperBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all().with_max_value_size(Some(MAX_VALUE_SIZE))
    }

    async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
        let name = self.check_key(key)?;
        Self::check_value(key, &value)?;
        let (name, value) = (&name, &value);
        self.store
            .run(Operation::Persist, false, |client| async move {
                self.persist_once(&client, name, key, value).await
            })
            .await
    }

    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        let name = &self.check_key(key)?;
        self.store
            .run(Operation::Depersist, false, |client| async move {
                self.depersist_once(&client, name, key).await
            })
            .await
    }

    async fn durables(&self) -> Result<Load> {
        self.store
            .run(Operation::Load, true, |client| async move {
                self.load_once(&client).await
            })
            .await
    }

    async fn last_updated(&self) -> Result<Version> {
        self.store
            .run(Operation::Version, true, |client| async move {
                Ok(self.read_node(&client, Operation::Version).await?.token())
            })
            .await
    }

    async fn changes_since(&self, since: Version) -> Result<Changes> {
        self.store
            .run(Operation::Changes, true, |client| async move {
                self.changes_once(&client, since).await
            })
            .await
    }

    async fn subscribe(&self) -> Result<Hints> {
        crate::hints::subscribe(self).await
    }

    async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
        let name = self.check_key(key)?;
        Self::check_value(key, &value)?;
        let names = &[name][..];
        let value = &value;
        self.store
            .run(Operation::InsertIfAbsent, false, |client| async move {
                self.conditional(&client, Operation::InsertIfAbsent, key, names, |current| {
                    Ok(match &current[0] {
                        Some(present) => Decision::Done(IfAbsent::Present(present.entry.clone())),
                        None => Decision::Write(
                            vec![put(&names[0], None, value.clone())],
                            Box::new(IfAbsent::Inserted),
                        ),
                    })
                })
                .await
            })
            .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        new: Option<Bytes>,
    ) -> Result<Swap> {
        let name = self.check_key(key)?;
        if let Some(value) = &new {
            Self::check_value(key, value)?;
        }
        let names = &[name][..];
        let new = &new;
        self.store
            .run(Operation::CompareAndSwap, false, |client| async move {
                self.conditional(&client, Operation::CompareAndSwap, key, names, |current| {
                    let current = current[0].as_ref();
                    let entry = current.map(|c| c.entry.clone());
                    if entry.as_ref().map(|e| e.revision) != expected
                        || (current.is_none() && new.is_none())
                    {
                        return Ok(Decision::Done(Swap::Conflict(entry)));
                    }
                    let write = match (new, current) {
                        (Some(value), current) => put(&names[0], current, value.clone()),
                        (None, Some(current)) => EntryWrite::Delete {
                            name: names[0].clone(),
                            expected: Some(current.znode_version),
                        },
                        (None, None) => unreachable!("handled above"),
                    };
                    Ok(Decision::Write(vec![write], Box::new(Swap::Swapped)))
                })
                .await
            })
            .await
    }

    async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        let names = &[self.check_key(key)?][..];
        self.store
            .run(Operation::Pop, false, |client| async move {
                self.conditional(&client, Operation::Pop, key, names, |current| {
                    Ok(match &current[0] {
                        None => Decision::Done(None),
                        Some(current) => {
                            let value = current.entry.value.clone();
                            Decision::Write(
                                vec![EntryWrite::Delete {
                                    name: names[0].clone(),
                                    expected: Some(current.znode_version),
                                }],
                                Box::new(move |version| Some((value, version))),
                            )
                        }
                    })
                })
                .await
            })
            .await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        let names = &[self.check_key(key)?][..];
        self.store
            .run(Operation::Increment, false, |client| async move {
                self.conditional(&client, Operation::Increment, key, names, |current| {
                    let current = current[0].as_ref();
                    let old = match current {
                        Some(c) => parse_counter(&c.entry.value),
                        None => Some(0),
                    };
                    let Some(new) = old.and_then(|old| old.checked_add(delta)) else {
                        return Err(Error::NotAnInteger {
                            backend: NAME.into(),
                            key: key.into(),
                        });
                    };
                    Ok(Decision::Write(
                        vec![put(&names[0], current, Bytes::from(new.to_string()))],
                        Box::new(move |version| (new, version)),
                    ))
                })
                .await
            })
            .await
    }

    async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
        // The last operation on each key wins; keys in order of first appearance.
        let mut order: Vec<String> = Vec::new();
        let mut last: HashMap<String, (String, Option<Bytes>)> = HashMap::new();
        let any_put = ops.iter().any(|op| matches!(op, BatchOp::Put { .. }));
        for op in ops {
            let (key, value) = match op {
                BatchOp::Put { key, value } => {
                    Self::check_value(&key, &value)?;
                    (key, Some(value))
                }
                BatchOp::Delete { key } => (key, None),
            };
            let name = self.check_key(&key)?;
            if !last.contains_key(&key) {
                order.push(key.clone());
            }
            last.insert(key, (name, value));
        }
        if order.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = order.iter().map(|k| last[k].0.clone()).collect();
        let finals: Vec<Option<Bytes>> = order.iter().map(|k| last[k].1.clone()).collect();
        let (names, finals) = (&names[..], &finals[..]);
        let first_key = &order[0];
        self.store
            .run(Operation::Batch, false, |client| async move {
                self.conditional(&client, Operation::Batch, first_key, names, |current| {
                    let mut writes = Vec::new();
                    let mut changes = any_put;
                    for ((name, value), current) in names.iter().zip(finals).zip(current) {
                        match (value, current) {
                            (Some(value), current) => {
                                writes.push(put(name, current.as_ref(), value.clone()))
                            }
                            (None, Some(current)) => {
                                changes = true;
                                writes.push(EntryWrite::Delete {
                                    name: name.clone(),
                                    expected: Some(current.znode_version),
                                });
                            }
                            (None, None) => {}
                        }
                    }
                    if !changes {
                        return Ok(Decision::Done(None));
                    }
                    Ok(Decision::Write(writes, Box::new(Some)))
                })
                .await
            })
            .await
    }

    async fn clear(&self) -> Result<Option<Version>> {
        let operation = Operation::Clear;
        self.store
            .run(operation, false, |client| async move {
                for attempt in 0..MAX_ATTEMPTS {
                    // The listing happens after the version read; the multi's version check
                    // proves nothing was written in between, so the listing is exact.
                    let node = self.read_node(&client, operation).await?;
                    let names = match client.list_children(&self.paths.entries).await {
                        Ok(names) => names,
                        Err(zk::Error::NoNode) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    if names.is_empty() {
                        return Ok(None);
                    }
                    let writes: Vec<EntryWrite> = names
                        .into_iter()
                        .map(|name| EntryWrite::Delete {
                            name,
                            expected: None,
                        })
                        .collect();
                    if let Ok(version) = self.commit(&client, operation, node, &writes).await? {
                        return Ok(Some(version));
                    }
                    backoff(attempt).await;
                }
                Err(Self::contention(""))
            })
            .await
    }
}
