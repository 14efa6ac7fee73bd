//! The [`Backend`] implementation.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use durable_core::{
    Backend, BatchOp, Capabilities, Changes, Delta, Error, Hints, IfAbsent, Load, Name, Operation,
    Result, Revision, StoreTime, StoredEntry, Swap, Swept, Version, parse_counter,
};
use parking_lot::Mutex;
use zookeeper_client as zk;

use crate::keys::{self, MAX_KEY_LEN};
use crate::store::{Failure, NAME, ZooKeeperStore};

/// The largest value stored, in bytes: ZooKeeper refuses requests above `jute.maxbuffer`
/// (1 MiB by default), and a write also carries the entry's path, its header (revision and
/// time to live) and a change-log line, so values are capped a little below.
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
/// Entries fetched per pipelined window in a full load or a sweep.
const LOAD_WINDOW: usize = 8192;
/// Set in the revision field of an entry's header when the entry has a time to live: 8 more
/// bytes follow, the TTL in milliseconds. Revisions (znode data versions) stay below 2^31.
const HAS_TTL: u64 = 1 << 63;

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
    /// The namespace's clock znode, written to read the server's time (its `mtime`). It sits
    /// outside every dictionary znode, so the hint watches never see it.
    pub(crate) clock: String,
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
            // Names never start with '.', so no dictionary is called `.clock`.
            clock: format!("{namespace}/.clock"),
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

/// What the last read of a changed entry saw, while catching up with the change log.
#[derive(Debug, Clone, Copy)]
enum Seen {
    /// The entry as written by this counter.
    Written(u64),
    /// No entry, in a state at or after this counter (the version known when it was sent).
    Absent(u64),
}

impl Seen {
    /// Whether the read shows the state after the key's last logged change, `last`.
    fn is_current(self, last: u64) -> bool {
        match self {
            Seen::Written(revision) => revision == last,
            Seen::Absent(after) => last <= after,
        }
    }
}

/// One entry operation of a write multi. `ttl`: the entry expires that long after the write.
#[derive(Debug)]
enum EntryWrite {
    Create {
        name: String,
        value: Bytes,
        ttl: Option<Duration>,
    },
    Set {
        name: String,
        value: Bytes,
        ttl: Option<Duration>,
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
            EntryWrite::Create { value, .. } | EntryWrite::Set { value, .. } => value.len() + 16,
            EntryWrite::Delete { .. } => 0,
        };
        // The path twice (entry and change log) and the op header with ACLs.
        2 * self.name().len() + value + 96
    }
}

/// The estimated size of the multi request of `writes`: the entry operations, the version
/// check and the change-log node. [`commit`](ZooKeeperBackend::commit) refuses one above
/// [`MAX_REQUEST`].
fn request_size(writes: &[EntryWrite]) -> usize {
    writes.iter().map(EntryWrite::size).sum::<usize>() + 256
}

/// How many of `writes`, from the first, fit in one multi request (see [`request_size`]).
fn fitting(writes: &[EntryWrite]) -> usize {
    let mut size = request_size(&[]);
    writes
        .iter()
        .take_while(|write| {
            size += write.size();
            size <= MAX_REQUEST
        })
        .count()
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

/// An entry znode's data: the revision (8 bytes, big-endian; [`HAS_TTL`] set if a TTL follows),
/// the TTL in milliseconds if any (8 bytes), then the value.
fn entry_data(revision: u64, ttl: Option<Duration>, value: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(16 + value.len());
    match ttl {
        Some(ttl) => {
            data.extend_from_slice(&(revision | HAS_TTL).to_be_bytes());
            data.extend_from_slice(&millis(ttl).to_be_bytes());
        }
        None => data.extend_from_slice(&revision.to_be_bytes()),
    }
    data.extend_from_slice(value);
    data
}

/// `ttl` in whole milliseconds, saturating.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// The server's time of the write that last changed a znode.
fn mtime(stat: &zk::Stat) -> StoreTime {
    StoreTime(u64::try_from(stat.mtime).unwrap_or(0))
}

fn corrupt(operation: Operation, what: String) -> Error {
    Error::backend(NAME, operation, what)
}

/// Reads an entry znode (see [`entry_data`]); an entry with a TTL expires that long after the
/// znode's `mtime`, the server's time of the write that stored it.
fn parse_entry(
    operation: Operation,
    key: String,
    data: Vec<u8>,
    stat: &zk::Stat,
) -> Result<StoredEntry> {
    let word = |at: usize| {
        data.get(at..at + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    };
    let header = word(0).and_then(|revision| {
        if revision & HAS_TTL == 0 {
            return Some((revision, None, 8));
        }
        let ttl = Duration::from_millis(word(8)?);
        Some((revision & !HAS_TTL, Some(mtime(stat).add(ttl)), 16))
    });
    let Some((revision, expires_at, len)) = header else {
        return Err(corrupt(
            operation,
            format!(
                "entry of key {key:?} is not a durable entry ({} bytes)",
                data.len()
            ),
        ));
    };
    Ok(StoredEntry {
        key,
        value: Bytes::from(data).slice(len..),
        revision: Revision(revision),
        expires_at,
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
                        entry: parse_entry(operation, decode_name(operation, name)?, data, &stat)?,
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
    /// change-log node of the new counter, all or nothing. Returns the new token and the
    /// server's time of the write (the `mtime` of every znode the multi wrote).
    async fn commit(
        &self,
        client: &zk::Client,
        operation: Operation,
        node: Node,
        writes: &[EntryWrite],
    ) -> Result<Result<(Version, StoreTime), Conflict>, Failure> {
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
        let size = request_size(writes);
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
                EntryWrite::Create { name, value, ttl } => multi.add_create(
                    &self.paths.entry(name),
                    &entry_data(revision, *ttl, value),
                    &options,
                )?,
                EntryWrite::Set {
                    name,
                    value,
                    ttl,
                    expected,
                } => multi.add_set_data(
                    &self.paths.entry(name),
                    &entry_data(revision, *ttl, value),
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
                Ok(Ok((new.token(), mtime(&stat))))
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

    /// `persist` and `persist_expiring`: checks, then [`persist_once`](Self::persist_once).
    async fn store_value(
        &self,
        operation: Operation,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(Version, StoreTime)> {
        let name = self.check_key(key)?;
        Self::check_value(key, &value)?;
        let (name, value) = (&name, &value);
        self.store
            .run(operation, false, |client| async move {
                self.persist_once(&client, operation, name, key, value, ttl)
                    .await
            })
            .await
    }

    /// Writes the namespace's clock znode and returns its new `mtime`: the server's time now.
    async fn now_once(&self, client: &zk::Client) -> Result<StoreTime, Failure> {
        for _ in 0..5 {
            match client.set_data(&self.paths.clock, b"", None).await {
                Ok(stat) => return Ok(mtime(&stat)),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
            let options = self.store.inner.config.create_options();
            client.mkdir(&self.paths.namespace, &options).await?;
            match client.create(&self.paths.clock, b"", &options).await {
                // Another process created it meanwhile, or a concurrent wipe removed the
                // namespace again: write again.
                Ok(_) | Err(zk::Error::NodeExists | zk::Error::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(corrupt(Operation::Now, "the clock node keeps disappearing".into()).into())
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
    ///
    /// Each round reads the log up to the target, then (if a read is not current) every changed
    /// entry again and the version node, which becomes the next target. The state of a target
    /// is reached when each changed key's last read saw its last logged change: writers may
    /// stay busy all along, since a write that lands before its key's read is seen by the read.
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
        // Per changed entry (znode name): the counter of its last logged change up to `known`,
        // and what its last read saw.
        let mut changed: HashMap<String, u64> = HashMap::new();
        let mut seen: HashMap<String, Seen> = HashMap::new();
        let mut known = since.counter();
        for _ in 0..MAX_ROUNDS {
            let to = target.token();
            if to.epoch() != since.epoch()
                || to.counter() < known
                || to.counter() - since.counter() > history
            {
                return Ok(None);
            }
            // Round trip 1: the change-log nodes of the counters (known, to].
            let logs: Vec<_> = (known + 1..=to.counter())
                .map(|c| (c, client.get_data(&self.paths.log_node(c))))
                .collect();
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
            known = to.counter();
            let current = changed
                .iter()
                .all(|(name, last)| seen.get(name).is_some_and(|s| s.is_current(*last)));
            if current {
                return Ok(Some(target));
            }
            // Round trip 2: every changed entry, then the version node. (Reading only the
            // stale ones would chase writers that keep hitting other keys.)
            let reads: Vec<_> = changed
                .iter()
                .map(|(name, last)| (name, *last, client.get_data(&self.paths.entry(name))))
                .collect();
            let version = client.check_stat(&self.paths.version);
            for (name, last, read) in reads {
                let key = decode_name(operation, name)?;
                match read.await {
                    Ok((data, stat)) => {
                        let entry = parse_entry(operation, key.clone(), data, &stat)?;
                        seen.insert(name.clone(), Seen::Written(entry.revision.0));
                        removed.remove(&key);
                        entries.insert(key, entry);
                    }
                    Err(zk::Error::NoNode) => {
                        seen.insert(name.clone(), Seen::Absent(known));
                        entries.remove(&key);
                        removed.insert(key, Revision(last));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let Some(stat) = version.await? else {
                return Ok(None);
            };
            target = Node::from_stat(&stat);
        }
        Err(corrupt(
            operation,
            format!("the dictionary changed faster than {MAX_ROUNDS} rounds of reads could follow"),
        )
        .into())
    }

    /// Lists and reads every entry (pipelined in windows), by znode name. `None`: the tree is
    /// missing. Entries deleted meanwhile are left out; callers check the version afterwards.
    async fn read_all(
        &self,
        client: &zk::Client,
        operation: Operation,
    ) -> Result<Option<Vec<(String, Current)>>, Failure> {
        let names = match client.list_children(&self.paths.entries).await {
            Ok(names) => names,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut entries = Vec::with_capacity(names.len());
        for window in names.chunks(LOAD_WINDOW) {
            let reads: Vec<_> = window
                .iter()
                .map(|name| (name, client.get_data(&self.paths.entry(name))))
                .collect();
            for (name, read) in reads {
                match read.await {
                    Ok((data, stat)) => {
                        let key = decode_name(operation, name)?;
                        let current = Current {
                            entry: parse_entry(operation, key, data, &stat)?,
                            znode_version: stat.version,
                        };
                        entries.push((name.clone(), current));
                    }
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Some(entries))
    }

    async fn load_once(&self, client: &zk::Client) -> Result<Load, Failure> {
        let operation = Operation::Load;
        for _ in 0..MAX_ROUNDS {
            let first = self.read_node(client, operation).await?;
            let Some(read) = self.read_all(client, operation).await? else {
                continue;
            };
            let mut entries: HashMap<String, StoredEntry> = read
                .into_iter()
                .map(|(_, current)| (current.entry.key.clone(), current.entry))
                .collect();
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

    /// Stores `value` under `key` (znode `name`), expiring `ttl` after the write if given, with
    /// a blind write against the cached version. Returns the token and the time of the write.
    async fn persist_once(
        &self,
        client: &zk::Client,
        operation: Operation,
        name: &str,
        key: &str,
        value: &Bytes,
        ttl: Option<Duration>,
    ) -> Result<(Version, StoreTime), Failure> {
        let mut create = self.guess_create.load(Ordering::Relaxed);
        for attempt in 0..MAX_ATTEMPTS {
            let node = self.expected_node(client, operation).await?;
            let write = if create {
                EntryWrite::Create {
                    name: name.to_owned(),
                    value: value.clone(),
                    ttl,
                }
            } else {
                EntryWrite::Set {
                    name: name.to_owned(),
                    value: value.clone(),
                    ttl,
                    expected: None,
                }
            };
            match self.commit(client, operation, node, &[write]).await? {
                Ok(written) => {
                    self.guess_create.store(create, Ordering::Relaxed);
                    return Ok(written);
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
                Ok((version, _)) => return Ok(Some(version)),
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
                    if let Ok((version, _)) = self.commit(client, operation, node, &writes).await? {
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

/// The write that stores `value`, without expiry, given the entry's current state.
fn put(name: &str, current: Option<&Current>, value: Bytes) -> EntryWrite {
    match current {
        Some(current) => EntryWrite::Set {
            name: name.to_owned(),
            value,
            ttl: None,
            expected: Some(current.znode_version),
        },
        None => EntryWrite::Create {
            name: name.to_owned(),
            value,
            ttl: None,
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
        let (version, _) = self
            .store_value(Operation::Persist, key, value, None)
            .await?;
        Ok(version)
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
                    if let Ok((version, _)) = self.commit(&client, operation, node, &writes).await?
                    {
                        return Ok(Some(version));
                    }
                    backoff(attempt).await;
                }
                Err(Self::contention(""))
            })
            .await
    }

    async fn now(&self) -> Result<StoreTime> {
        // Writing the clock node again changes nothing else: retried on a new session like a read.
        self.store
            .run(Operation::Now, true, |client| async move {
                self.now_once(&client).await
            })
            .await
    }

    async fn persist_expiring(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(Version, StoreTime)> {
        let (version, written_at) = self
            .store_value(Operation::PersistExpiring, key, value, Some(ttl))
            .await?;
        Ok((version, written_at.add(ttl)))
    }

    async fn sweep(&self) -> Result<Option<Swept>> {
        let operation = Operation::Sweep;
        self.store
            .run(operation, false, |client| async move {
                let now = self.now_once(&client).await?;
                for attempt in 0..MAX_ATTEMPTS {
                    // As in `clear`: the multi's version check proves that the entries read
                    // after the version are still the dictionary's.
                    let node = self.read_node(&client, operation).await?;
                    let Some(entries) = self.read_all(&client, operation).await? else {
                        continue;
                    };
                    let mut expired: Vec<(String, Current)> = entries
                        .into_iter()
                        .filter(|(_, c)| c.entry.expires_at.is_some_and(|at| at <= now))
                        .collect();
                    if expired.is_empty() {
                        return Ok(None);
                    }
                    // Earliest expiry first: when they do not all fit in one request, this
                    // sweep deletes the first ones that fit and the rest wait for the next.
                    expired.sort_unstable_by(|(_, a), (_, b)| {
                        (a.entry.expires_at, &a.entry.key).cmp(&(b.entry.expires_at, &b.entry.key))
                    });
                    let mut writes: Vec<EntryWrite> = expired
                        .iter()
                        .map(|(name, current)| EntryWrite::Delete {
                            name: name.clone(),
                            expected: Some(current.znode_version),
                        })
                        .collect();
                    // At least one: a single delete that does not fit fails in `commit`.
                    let fit = fitting(&writes).max(1);
                    writes.truncate(fit);
                    expired.truncate(fit);
                    if let Ok((version, _)) = self.commit(&client, operation, node, &writes).await?
                    {
                        let keys = expired.into_iter().map(|(_, c)| c.entry.key).collect();
                        return Ok(Some(Swept { version, keys }));
                    }
                    backoff(attempt).await;
                }
                Err(Self::contention(""))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mtime: i64) -> zk::Stat {
        zk::Stat {
            czxid: 1,
            mzxid: 2,
            pzxid: 2,
            ctime: mtime,
            mtime,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        }
    }

    #[test]
    fn fitting_counts_the_writes_commit_accepts() {
        let delete = |i: usize| EntryWrite::Delete {
            name: format!("k{i:04}{}", "x".repeat(995)),
            expected: None,
        };
        let writes: Vec<EntryWrite> = (0..1000).map(delete).collect();
        assert!(request_size(&writes) > MAX_REQUEST);
        let fit = fitting(&writes);
        assert!(fit > 0 && fit < writes.len());
        assert!(request_size(&writes[..fit]) <= MAX_REQUEST);
        assert!(request_size(&writes[..=fit]) > MAX_REQUEST);
        assert_eq!(fitting(&writes[..fit]), fit);
        assert_eq!(fitting(&[]), 0);
    }

    #[test]
    fn entry_header_carries_revision_and_ttl() {
        let op = Operation::Load;
        let plain = parse_entry(op, "k".into(), entry_data(7, None, b"v"), &stat(1000)).unwrap();
        assert_eq!(
            (plain.revision, plain.expires_at, &plain.value[..]),
            (Revision(7), None, &b"v"[..])
        );
        let ttl = Some(Duration::from_millis(1500));
        let expiring = parse_entry(op, "k".into(), entry_data(7, ttl, b""), &stat(1000)).unwrap();
        assert_eq!(
            (expiring.revision, expiring.expires_at, &expiring.value[..]),
            (Revision(7), Some(StoreTime(2500)), &b""[..])
        );
        for bad in [&b"1234567"[..], &(7 | HAS_TTL).to_be_bytes()[..]] {
            assert!(parse_entry(op, "k".into(), bad.to_vec(), &stat(0)).is_err());
        }
    }
}
