//! The [`Backend`] implementation.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use durable_core::{
    Backend, BatchOp, Capabilities, Changes, Delta, Error, Hints, IfAbsent, Load, Name, Operation,
    Result, Revision, StoreTime, StoredEntry, Swap, Swept, Unreadable, Version, parse_counter,
};
use parking_lot::Mutex;
use zookeeper_client as zk;

use crate::keys::{self, MAX_KEY_LEN};
use crate::record::{self, Record};
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
/// Rounds of catching up with concurrent writers before a delta falls back to a full load
/// (or a load starts again).
const MAX_ROUNDS: u32 = 32;
/// Attempts of a full load before it gives up with [`Error::Contention`].
const MAX_LOADS: u32 = 8;
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
    /// Holds one empty child named after the current stamp (the "head"): every write deletes
    /// it and creates the next one in its multi, so a write prepared from a state of another
    /// history (a restore that brought the data version back) fails instead of landing.
    pub(crate) stamps: String,
    /// The namespace's clock znode, written to read the server's time (its `mtime`). It sits
    /// outside every dictionary znode, so the hint watches never see it.
    pub(crate) clock: String,
}

/// The children of the dictionary znode, all created with it.
const CONTAINERS: [&str; 3] = ["entries", "log", "stamp"];

impl Paths {
    fn new(root: &str, namespace: &Name, dictionary: &Name) -> Self {
        let namespace = format!("{root}/{namespace}");
        let base = format!("{namespace}/{dictionary}");
        Paths {
            // The dictionary znode itself carries the version record (its data): ZooKeeper
            // deletes children before their parent, so a re-created dictionary znode (a new
            // epoch) can never sit above entries of an older epoch.
            version: base.clone(),
            entries: format!("{base}/entries"),
            log: format!("{base}/log"),
            stamps: format!("{base}/stamp"),
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

    fn head(&self, stamp: u64) -> String {
        format!("{}/{stamp:016x}", self.stamps)
    }

    fn container(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }
}

/// The version znode as read: its record and its data version (the expected version of the
/// next write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    record: Record,
    zversion: i32,
}

impl Node {
    fn token(self) -> Version {
        self.record.token()
    }
}

/// What a read of the version znode found.
enum Read {
    Node(Node),
    /// The znode exists with a record that cannot be read (`what` says why); `zversion` is its
    /// data version, for a repair that checks nothing moved meanwhile.
    Damaged {
        what: String,
        zversion: i32,
        /// The znode has no data and at most the two children of the layout before stamped
        /// tokens (`entries`, `log`): a dictionary written by an earlier version of this
        /// backend, or a znode created by hand. Not damaged: initialized as a wipe would be, by
        /// reads too. (A record deleted by hand leaves three children: that is damage.)
        unstamped: bool,
    },
    Missing,
}

impl Read {
    fn of(data: &[u8], stat: &zk::Stat) -> Read {
        match Record::parse(data) {
            Ok(record) => Read::Node(Node {
                record,
                zversion: stat.version,
            }),
            Err(what) => Read::Damaged {
                what,
                zversion: stat.version,
                unstamped: data.is_empty() && stat.num_children <= 2,
            },
        }
    }
}

/// An entry as read for a conditional write.
#[derive(Debug, Clone)]
struct Current {
    entry: StoredEntry,
    znode_version: i32,
}

/// Every child of `entries`, as [`ZooKeeperBackend::read_all`] read them.
#[derive(Debug)]
struct Listing {
    /// The entries, by znode name.
    entries: Vec<(String, Current)>,
    /// The children that are no entry or cannot be read, by znode name.
    unreadable: Vec<(String, Unreadable)>,
}

/// How a catch-up through the change log ended.
#[derive(Debug)]
enum CatchUp {
    /// At this version node: the entries read are its state.
    Reached(Node),
    /// The log cannot serve the start: another epoch or history, trimmed, wiped or damaged.
    TooOld,
    /// Writers kept the catch-up from settling for [`MAX_ROUNDS`] rounds (see
    /// [`ZooKeeperBackend::catch_up`]).
    TooBusy,
}

/// What [`ZooKeeperBackend::snapshot`] read.
#[derive(Debug)]
enum Snapshot {
    /// The record and each requested entry's state (`None`: absent) as of one state.
    At(Node, Vec<(String, Option<Row>)>),
    /// Read in several requests, between which the record moved.
    Moved,
    /// The record is missing or damaged.
    Gone,
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
/// record, the head znodes and the change-log node. [`commit`](ZooKeeperBackend::commit)
/// refuses one above [`MAX_REQUEST`].
fn request_size(writes: &[EntryWrite]) -> usize {
    writes.iter().map(EntryWrite::size).sum::<usize>() + 640
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
    /// The tree is gone or incomplete; it was re-created or repaired: read again.
    TreeMissing,
    /// The head znode of the expected stamp is gone: the state moved to another history (or the
    /// head was deleted by hand, which was repaired): read again.
    HeadMissing,
    /// A change-log node of the next counter exists already: the version record is behind the
    /// stored history, and was repaired: read again.
    StrayLog,
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

/// An entry znode as read: its entry, or why it cannot be read (see
/// [`ZooKeeperBackend::read_row`]).
type Row = Result<StoredEntry, Unreadable>;

/// Reads an entry znode's data (see [`entry_data`]); an entry with a TTL expires that long after
/// the znode's `mtime`, the server's time of the write that stored it. The error says what is
/// wrong with the data.
fn parse_entry(key: String, data: Vec<u8>, stat: &zk::Stat) -> Result<StoredEntry, String> {
    let word = |at: usize| {
        data.get(at..at + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    };
    let Some(first) = word(0) else {
        return Err(format!(
            "the entry holds {} bytes, shorter than its 8-byte header",
            data.len()
        ));
    };
    let (revision, expires_at, len) = if first & HAS_TTL == 0 {
        (first, None, 8)
    } else {
        let Some(ttl) = word(8) else {
            return Err(format!(
                "the entry holds {} bytes, shorter than its 16-byte header (revision and time \
                 to live)",
                data.len()
            ));
        };
        let ttl = Duration::from_millis(ttl);
        (first & !HAS_TTL, Some(mtime(stat).add(ttl)), 16)
    };
    if revision >= record::MAX_COUNTER {
        return Err(format!(
            "the revision in its header, {revision}, is out of range (at least 2^53)"
        ));
    }
    Ok(StoredEntry {
        key,
        value: Bytes::from(data).slice(len..),
        revision: Revision(revision),
        expires_at,
    })
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
    /// data is the version record; its children are `entries`, `log` and `stamp`.
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

    /// An [`Error::Damaged`] naming this dictionary and `what` is wrong.
    fn damaged(&self, operation: Operation, what: impl fmt::Display) -> Error {
        Error::Damaged {
            backend: NAME.into(),
            operation,
            reason: format!(
                "dictionary {}/{} (znode {}): {what}",
                self.namespace, self.dictionary, self.paths.base
            ),
        }
    }

    /// Reads entry znode `name` with its `data`: the entry, or an [`Unreadable`] naming the key
    /// (lossily, or the znode's name) and, in its reason, the dictionary, the znode and what is
    /// wrong: a name that is not an encoded key, data shorter than the header, a revision out
    /// of range.
    fn read_row(&self, name: &str, data: Vec<u8>, stat: &zk::Stat) -> Row {
        let Some(key) = keys::decode(name) else {
            return Err(self.unreadable(name, keys::why_not_a_key(name)));
        };
        parse_entry(key, data, stat).map_err(|what| self.unreadable(name, what))
    }

    /// The [`Unreadable`] row of entry znode `name`.
    fn unreadable(&self, name: &str, what: impl fmt::Display) -> Unreadable {
        Unreadable {
            key: keys::decode_lossy(name),
            reason: format!(
                "zookeeper dictionary {}/{}, znode {}: {what}",
                self.namespace,
                self.dictionary,
                self.paths.entry(name)
            ),
        }
    }

    /// The error of a conditional write that has to read the entry of `key` and cannot.
    fn unreadable_error(operation: Operation, key: &str, row: Unreadable) -> Failure {
        Failure::Durable(corrupt(
            operation,
            format!(
                "the stored entry of key {key:?} cannot be read ({}); write or remove the key \
                 to replace it",
                row.reason
            ),
        ))
    }

    /// Creates the dictionary when its znode is missing, in one multi: the znode with a fresh
    /// version record (a new epoch, counter 0: nothing can be stored below a missing znode),
    /// `entries`, `log`, `stamp` with the head of the new stamp, and the change-log node of
    /// counter 0 carrying that stamp (so a delta can start from the first token).
    async fn ensure_tree(&self, client: &zk::Client) -> Result<(), Failure> {
        let options = self.store.inner.config.create_options();
        client.mkdir(&self.paths.namespace, &options).await?;
        let record = Record::fresh(0);
        let mut multi = client.new_multi_writer();
        multi.add_create(&self.paths.base, &record.encode(), &options)?;
        for name in CONTAINERS {
            multi.add_create(&self.paths.container(name), b"", &options)?;
        }
        multi.add_create(&self.paths.head(record.stamp), b"", &options)?;
        multi.add_create(
            &self.paths.log_node(record.counter),
            &record::log_data(record.stamp, ""),
            &options,
        )?;
        match multi.commit().await {
            // Created; or another process created it meanwhile, or a concurrent wipe removed the
            // namespace again: the caller reads again.
            Ok(_)
            | Err(zk::MultiWriteError::OperationFailed {
                source: zk::Error::NodeExists | zk::Error::NoNode,
                ..
            }) => Ok(()),
            Err(
                zk::MultiWriteError::OperationFailed { source, .. }
                | zk::MultiWriteError::RequestFailed { source },
            ) => Err(source.into()),
        }
    }

    /// Reads the version znode; with `sync`, after a ZooKeeper `sync` of it, sent in the same
    /// round trip, so that the read sees every write acknowledged before it started even when
    /// this session's server is a follower that has not applied them yet.
    async fn read_version(&self, client: &zk::Client, sync: bool) -> Result<Read, Failure> {
        let synced = sync.then(|| client.sync(&self.paths.version));
        let read = client.get_data(&self.paths.version);
        if let Some(synced) = synced {
            match synced.await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match read.await {
            Ok((data, stat)) => Ok(Read::of(&data, &stat)),
            Err(zk::Error::NoNode) => Ok(Read::Missing),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the version node (after a `sync`), creating the dictionary if it is missing. A
    /// damaged record is repaired as a wipe if `repair` (writes), and is an
    /// [`Error::Damaged`] otherwise (reads), except an unstamped dictionary (see
    /// [`Read::Damaged`]), which reads initialize too.
    async fn read_node(
        &self,
        client: &zk::Client,
        operation: Operation,
        repair: bool,
    ) -> Result<Node, Failure> {
        for _ in 0..5 {
            match self.read_version(client, true).await? {
                Read::Node(node) => {
                    self.remember(Some(node));
                    return Ok(node);
                }
                Read::Missing => self.ensure_tree(client).await?,
                Read::Damaged {
                    what,
                    zversion,
                    unstamped,
                } => {
                    if !(repair || unstamped) {
                        return Err(self.damaged(operation, what).into());
                    }
                    self.repair(client, operation, zversion, &what).await?;
                }
            }
        }
        // Re-created, wiped or repaired by others five times in a row.
        Err(Self::contention(""))
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
            None => self.read_node(client, operation, true).await,
        }
    }

    /// Reads the version node and the entries `names` in one multi-read (an atomic snapshot),
    /// after a `sync`, in one round trip. A damaged record, or an entry whose revision is
    /// above the record's counter, is repaired (these reads prepare a write).
    async fn read_state(
        &self,
        client: &zk::Client,
        operation: Operation,
        names: &[String],
    ) -> Result<(Node, Vec<Option<Current>>), Failure> {
        for _ in 0..5 {
            let synced = client.sync(&self.paths.version);
            let mut reader = client.new_multi_reader();
            reader.add_get_data(&self.paths.version)?;
            for name in names {
                reader.add_get_data(&self.paths.entry(name))?;
            }
            let read = reader.commit();
            match synced.await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
            let results = read.await?;
            if results.len() != names.len() + 1 {
                return Err(corrupt(
                    operation,
                    format!(
                        "a multi-read of {} znodes returned {} results",
                        names.len() + 1,
                        results.len()
                    ),
                )
                .into());
            }
            let mut results = results.into_iter();
            let node = match results.next() {
                Some(zk::MultiReadResult::Data { data, stat }) => match Read::of(&data, &stat) {
                    Read::Node(node) => node,
                    Read::Damaged { what, zversion, .. } => {
                        self.repair(client, operation, zversion, &what).await?;
                        continue;
                    }
                    Read::Missing => continue,
                },
                Some(zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                }) => {
                    self.ensure_tree(client).await?;
                    continue;
                }
                Some(zk::MultiReadResult::Error { err }) => return Err(err.into()),
                other => {
                    return Err(corrupt(
                        operation,
                        format!("unexpected multi-read result {other:?}"),
                    )
                    .into());
                }
            };
            let mut current = Vec::with_capacity(names.len());
            let mut above = None;
            for (name, result) in names.iter().zip(results) {
                current.push(match result {
                    zk::MultiReadResult::Data { data, stat } => {
                        let entry = match self.read_row(name, data, &stat) {
                            Ok(entry) => entry,
                            Err(row) => {
                                let key = keys::decode_lossy(name);
                                return Err(Self::unreadable_error(operation, &key, row));
                            }
                        };
                        if entry.revision.0 > node.record.counter {
                            above = Some((entry.key.clone(), entry.revision));
                        }
                        Some(Current {
                            entry,
                            znode_version: stat.version,
                        })
                    }
                    zk::MultiReadResult::Error {
                        err: zk::Error::NoNode,
                    } => None,
                    zk::MultiReadResult::Error { err } => return Err(err.into()),
                    other => {
                        return Err(corrupt(
                            operation,
                            format!("unexpected multi-read result {other:?}"),
                        )
                        .into());
                    }
                });
            }
            if let Some((key, revision)) = above {
                let what = format!(
                    "entry {key:?} has revision {}, above the version record's counter {}",
                    revision.0, node.record.counter
                );
                self.repair(client, operation, node.zversion, &what).await?;
                continue;
            }
            self.remember(Some(node));
            return Ok((node, current));
        }
        Err(Self::contention(""))
    }

    /// Repairs a damaged version record as a wipe would: a fresh epoch and stamp, and the
    /// counter at the highest revision still stored (entries and change-log nodes), so that no
    /// token and no revision repeats. One multi, conditional on the data version `zversion` at
    /// which the damage was seen (so nothing moved meanwhile): the record, whatever container
    /// is missing, the head of the new stamp (old heads deleted) and the change-log node of the
    /// new counter with the new stamp. Returns `Ok` also when another process changed the
    /// record meanwhile: the caller reads again.
    async fn repair(
        &self,
        client: &zk::Client,
        operation: Operation,
        zversion: i32,
        what: &str,
    ) -> Result<(), Failure> {
        self.remember(None);
        let children = match client.list_children(&self.paths.base).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let has = |name: &str| children.iter().any(|c| c == name);
        let list = |path: &str| {
            let listed = client.list_children(path);
            async move {
                match listed.await {
                    Ok(names) => Ok(names),
                    Err(zk::Error::NoNode) => Ok(Vec::new()),
                    Err(e) => Err(Failure::from(e)),
                }
            }
        };
        let mut highest = 0;
        // Entries that cannot be read hold no revision: they cannot stand in the way.
        if has("entries")
            && let Some(listing) = self.read_all(client).await?
        {
            for (_, current) in &listing.entries {
                highest = highest.max(current.entry.revision.0);
            }
        }
        let logs: Vec<u64> = if has("log") {
            list(&self.paths.log)
                .await?
                .iter()
                .filter_map(|name| name.parse().ok())
                .collect()
        } else {
            Vec::new()
        };
        highest = highest.max(logs.iter().copied().max().unwrap_or(0));
        let heads = if has("stamp") {
            list(&self.paths.stamps).await?
        } else {
            Vec::new()
        };
        if highest >= record::MAX_COUNTER {
            return Err(self
                .damaged(
                    operation,
                    format!(
                        "{what}; it cannot be repaired: a stored revision, {highest}, is out of \
                         range"
                    ),
                )
                .into());
        }
        let record = Record::fresh(highest);
        let options = self.store.inner.config.create_options();
        let mut multi = client.new_multi_writer();
        multi.add_set_data(&self.paths.version, &record.encode(), Some(zversion))?;
        for name in CONTAINERS {
            if !has(name) {
                multi.add_create(&self.paths.container(name), b"", &options)?;
            }
        }
        for head in &heads {
            multi.add_delete(&format!("{}/{head}", self.paths.stamps), None)?;
        }
        multi.add_create(&self.paths.head(record.stamp), b"", &options)?;
        if logs.contains(&highest) {
            multi.add_delete(&self.paths.log_node(highest), None)?;
        }
        multi.add_create(
            &self.paths.log_node(highest),
            &record::log_data(record.stamp, ""),
            &options,
        )?;
        match multi.commit().await {
            Ok(results) => {
                if let Some(zk::MultiWriteResult::SetData { stat }) = results.first() {
                    self.remember(Some(Node {
                        record,
                        zversion: stat.version,
                    }));
                }
                tracing::warn!(
                    path = %self.paths.base,
                    damage = what,
                    epoch = %format!("{:016x}", record.epoch),
                    counter = highest,
                    "zookeeper: repaired a damaged version record as a wipe (a new epoch)"
                );
                Ok(())
            }
            // The record moved meanwhile (another process repaired it, or wrote): read again.
            Err(zk::MultiWriteError::OperationFailed { .. }) => Ok(()),
            Err(zk::MultiWriteError::RequestFailed { source }) => Err(source.into()),
        }
    }

    /// After a write found part of the tree missing: creates the dictionary if its znode is
    /// gone; repairs it (a new epoch) if one of its containers is gone, since a missing
    /// `entries` means entries vanished without a version bump, and a missing `stamp` or `log`
    /// means the record's history is gone.
    async fn fix_tree(&self, client: &zk::Client, operation: Operation) -> Result<(), Failure> {
        let stat = match client.check_stat(&self.paths.version).await? {
            Some(stat) => stat,
            None => return self.ensure_tree(client).await,
        };
        let children = match client.list_children(&self.paths.base).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return self.ensure_tree(client).await,
            Err(e) => return Err(e.into()),
        };
        let missing: Vec<String> = CONTAINERS
            .into_iter()
            .filter(|name| !children.iter().any(|c| c == name))
            .map(|name| self.paths.container(name))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let what = format!("znode {} is missing", missing.join(" and "));
        self.repair(client, operation, stat.version, &what).await
    }

    /// After a write found the head of its expected stamp missing: if the head of the current
    /// record's stamp is missing too, it was deleted by hand and the record is repaired;
    /// otherwise the dictionary moved on (or to another history) and the caller reads again.
    async fn check_head(&self, client: &zk::Client, operation: Operation) -> Result<(), Failure> {
        let Read::Node(node) = self.read_version(client, true).await? else {
            // Missing or damaged: the caller's next read deals with it.
            return Ok(());
        };
        let head = self.paths.head(node.record.stamp);
        if client.check_stat(&head).await?.is_some() {
            return Ok(());
        }
        let what = format!("the head znode {head} of the record's stamp is missing");
        self.repair(client, operation, node.zversion, &what).await
    }

    /// One write multi: the version record replaced by the next one (checked against the
    /// expected data version), the head of the expected stamp deleted and the next one created
    /// (so the write lands only on the very state it was prepared from), the entry operations,
    /// and the change-log node of the new counter (its stamp and the keys written), all or
    /// nothing. Returns the new token and the server's time of the write (the `mtime` of every
    /// znode the multi wrote).
    async fn commit(
        &self,
        client: &zk::Client,
        operation: Operation,
        node: Node,
        writes: &[EntryWrite],
    ) -> Result<Result<(Version, StoreTime), Conflict>, Failure> {
        /// The index of the first entry operation in the multi.
        const FIRST_ENTRY: usize = 3;
        let Some(next) = node.record.next() else {
            return Err(corrupt(
                operation,
                "the version counter is exhausted (2^53 writes): re-create the dictionary".into(),
            )
            .into());
        };
        if node.zversion == i32::MAX {
            return Err(corrupt(
                operation,
                "the dictionary znode's data version is exhausted (2^31 writes): re-create the \
                 dictionary"
                    .into(),
            )
            .into());
        }
        let revision = next.counter;
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
        multi.add_set_data(&self.paths.version, &next.encode(), Some(node.zversion))?;
        multi.add_delete(&self.paths.head(node.record.stamp), None)?;
        multi.add_create(&self.paths.head(next.stamp), b"", &options)?;
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
        multi.add_create(
            &self.paths.log_node(revision),
            &record::log_data(next.stamp, &log),
            &options,
        )?;
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
                self.remember(Some(Node {
                    record: next,
                    zversion: stat.version,
                }));
                // Trim the change log, keeping the nodes of the last `history` writes and of
                // the state before them (a delta from there reads its stamp): sending happens
                // now; the answer does not matter.
                let history = u64::from(self.store.inner.config.history);
                if let Some(old) = revision.checked_sub(history + 1) {
                    drop(client.delete(&self.paths.log_node(old), None));
                }
                Ok(Ok((next.token(), mtime(&stat))))
            }
            Err(zk::MultiWriteError::RequestFailed { source }) => Err(source.into()),
            Err(zk::MultiWriteError::OperationFailed { index, source }) => {
                self.remember(None);
                let log_index = FIRST_ENTRY + writes.len();
                let conflict = match (index, source) {
                    (0, zk::Error::BadVersion) => Conflict::Moved,
                    (0, zk::Error::NoNode) => Conflict::TreeMissing,
                    (1, zk::Error::NoNode) => Conflict::HeadMissing,
                    (2, zk::Error::NoNode) => Conflict::TreeMissing,
                    // Two writes drew the same stamp (one chance in 2^64): read again.
                    (2, zk::Error::NodeExists) => Conflict::Moved,
                    (i, e) if (FIRST_ENTRY..log_index).contains(&i) => {
                        match (&writes[i - FIRST_ENTRY], e) {
                            (EntryWrite::Create { .. }, zk::Error::NodeExists) => {
                                Conflict::EntryExists
                            }
                            (EntryWrite::Create { .. }, zk::Error::NoNode) => Conflict::TreeMissing,
                            (_, zk::Error::NoNode) => Conflict::EntryAbsent,
                            (_, zk::Error::BadVersion) => Conflict::EntryChanged,
                            (_, e) => return Err(e.into()),
                        }
                    }
                    (i, zk::Error::NodeExists) if i == log_index => Conflict::StrayLog,
                    (i, zk::Error::NoNode) if i == log_index => Conflict::TreeMissing,
                    (_, e) => return Err(e.into()),
                };
                match conflict {
                    Conflict::TreeMissing => self.fix_tree(client, operation).await?,
                    Conflict::HeadMissing => self.check_head(client, operation).await?,
                    Conflict::StrayLog => {
                        // The checks before it passed: the record is `node`'s.
                        let what = format!(
                            "change-log node {revision} exists already: the version record's \
                             counter {} is behind the stored history",
                            node.record.counter
                        );
                        self.repair(client, operation, node.zversion, &what).await?;
                    }
                    Conflict::Moved
                    | Conflict::EntryAbsent
                    | Conflict::EntryExists
                    | Conflict::EntryChanged => {}
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
    /// go to `removed` with the counter of their last change.
    ///
    /// `since` must be a state of the current history: the same epoch, and the stamp logged for
    /// its counter equal to its stamp (a store put back to an earlier state and written again
    /// has other stamps at the same counters); each read of the log checks again that it
    /// continues the states already read, so a restore in the middle ends the catch-up too.
    ///
    /// The log up to the target names the changed keys, all of them "missing" at first. Each
    /// round then reads every changed key together with the record in one multi-read, an
    /// atomic snapshot at some state `v` (see [`snapshot`](Self::snapshot) for more keys than
    /// one request holds), and the log from the target to `v`:
    /// - if no missing key was written after the target, the reads of the missing keys are
    ///   their state at the target: done, at the target (so writers creating new keys all the
    ///   time cannot hold a catch-up off);
    /// - otherwise the snapshot becomes the target: every key read has its state there, and
    ///   the keys logged after the old target that were not read are missing; none missing:
    ///   done (so writers rewriting the same keys cannot either).
    ///
    /// Only writers that, within one round, rewrite a key first seen in the round before and
    /// also write a key never seen, round after round, hold it off, for [`MAX_ROUNDS`] rounds
    /// ([`CatchUp::TooBusy`]).
    ///
    /// A changed entry that cannot be read goes to `unreadable` (by znode name) instead, and
    /// leaves `entries` and `removed`: it costs its key only.
    #[expect(
        clippy::too_many_arguments,
        reason = "the three maps are the caller's state, brought forward together"
    )]
    async fn catch_up(
        &self,
        client: &zk::Client,
        operation: Operation,
        since: Version,
        mut target: Node,
        entries: &mut HashMap<String, StoredEntry>,
        removed: &mut HashMap<String, Revision>,
        unreadable: &mut HashMap<String, Unreadable>,
    ) -> Result<CatchUp, Failure> {
        let from = Record {
            epoch: since.epoch(),
            counter: since.counter(),
            stamp: since.stamp(),
            parent: since.parent(),
        };
        // Per changed key (znode name): its last logged change up to the target; its state at
        // the target (`None`: absent), or missing.
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut resolved: HashMap<String, Option<Row>> = HashMap::new();
        let mut missing: HashSet<String> = HashSet::new();
        let Some(logged) = self.read_log(client, since, from, target.record).await? else {
            return Ok(CatchUp::TooOld);
        };
        for (name, counter) in logged {
            last.insert(name.clone(), counter);
            missing.insert(name);
        }
        for _ in 0..MAX_ROUNDS {
            if missing.is_empty() {
                self.settle(resolved, &last, entries, removed, unreadable);
                return Ok(CatchUp::Reached(target));
            }
            // Every changed key if they fit in one request, else the missing ones only.
            let mut requested: Vec<String> = missing.iter().cloned().collect();
            let all: usize = missing
                .iter()
                .chain(resolved.keys())
                .map(|name| self.read_size(name))
                .sum();
            if all <= MAX_REQUEST {
                requested.extend(resolved.keys().cloned());
            }
            let (at, reads) = match self.snapshot(client, operation, &requested).await? {
                Snapshot::At(at, reads) => (at, reads),
                // Written between the requests of a snapshot too big for one: another round.
                Snapshot::Moved => continue,
                Snapshot::Gone => return Ok(CatchUp::TooOld),
            };
            if at.record == target.record {
                resolved.extend(reads);
                self.settle(resolved, &last, entries, removed, unreadable);
                return Ok(CatchUp::Reached(target));
            }
            let Some(logged) = self
                .read_log(client, since, target.record, at.record)
                .await?
            else {
                return Ok(CatchUp::TooOld);
            };
            let written: HashSet<&String> = logged.iter().map(|(name, _)| name).collect();
            if missing.iter().all(|name| !written.contains(name)) {
                // The missing keys are as they were at the target.
                for (name, read) in reads {
                    if missing.contains(&name) {
                        resolved.insert(name, read);
                    }
                }
                self.settle(resolved, &last, entries, removed, unreadable);
                return Ok(CatchUp::Reached(target));
            }
            // Move to the snapshot: keys written since the target and not read are missing;
            // keys read have their state at the snapshot; the others did not change.
            let requested: HashSet<String> = requested.into_iter().collect();
            for (name, _) in &logged {
                resolved.remove(name);
            }
            missing = written
                .into_iter()
                .filter(|name| !requested.contains(*name))
                .cloned()
                .collect();
            resolved.extend(reads);
            for (name, counter) in logged {
                last.insert(name, counter);
            }
            target = at;
        }
        Ok(CatchUp::TooBusy)
    }

    /// Reads the change log from state `from` to state `to` (pipelined): the keys written by
    /// each write in (from, to], with its counter, in order. `None` if the log cannot serve
    /// it: another epoch than `since`'s, more than `history` writes after `since`, a node
    /// trimmed, or stamps that are not `from`'s and `to`'s (another history). A node that
    /// cannot be parsed (another program's, or one naming something that cannot be a znode)
    /// does not say which keys its write changed, so it cannot serve either: `None`, and the
    /// caller reloads in full, which reads no log.
    async fn read_log(
        &self,
        client: &zk::Client,
        since: Version,
        from: Record,
        to: Record,
    ) -> Result<Option<Vec<(String, u64)>>, Failure> {
        let history = u64::from(self.store.inner.config.history);
        if to.epoch != since.epoch()
            || to.counter < from.counter
            || to.counter - since.counter() > history
        {
            return Ok(None);
        }
        if to.counter == from.counter {
            return Ok((to.stamp == from.stamp).then(Vec::new));
        }
        let reads: Vec<_> = (from.counter..=to.counter)
            .map(|c| (c, client.get_data(&self.paths.log_node(c))))
            .collect();
        let mut logged = Vec::new();
        for (counter, read) in reads {
            let data = match read.await {
                Ok((data, _)) => data,
                Err(zk::Error::NoNode) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let parsed = record::parse_log(&data)
                .map(|(stamp, names)| (stamp, names.collect::<Vec<_>>()))
                .filter(|(_, names)| names.iter().all(|name| valid_name(name)));
            let Some((stamp, names)) = parsed else {
                tracing::warn!(
                    path = %self.paths.log_node(counter),
                    "zookeeper: a change-log node cannot be parsed; deltas across it reload in full"
                );
                return Ok(None);
            };
            let expected = if counter == from.counter {
                from.stamp
            } else if counter == to.counter {
                to.stamp
            } else {
                stamp
            };
            if stamp != expected {
                return Ok(None);
            }
            if counter > from.counter {
                logged.extend(names.into_iter().map(|name| (name.to_owned(), counter)));
            }
        }
        Ok(Some(logged))
    }

    /// The size of reading entry `name` in a multi-read request: its path and some framing.
    fn read_size(&self, name: &str) -> usize {
        self.paths.entries.len() + name.len() + 24
    }

    /// Reads the version record and the entries `names` in one multi-read, an atomic snapshot;
    /// in several (pipelined, each with the record) when they do not fit in one request, which
    /// make a snapshot if every record read is the same.
    async fn snapshot(
        &self,
        client: &zk::Client,
        operation: Operation,
        names: &[String],
    ) -> Result<Snapshot, Failure> {
        let mut windows: Vec<&[String]> = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (i, name) in names.iter().enumerate() {
            let more = self.read_size(name);
            if i > start && size + more > MAX_REQUEST {
                windows.push(&names[start..i]);
                (start, size) = (i, 0);
            }
            size += more;
        }
        windows.push(&names[start..]);
        let mut reads = Vec::new();
        for window in &windows {
            let mut reader = client.new_multi_reader();
            reader.add_get_data(&self.paths.version)?;
            for name in *window {
                reader.add_get_data(&self.paths.entry(name))?;
            }
            reads.push(reader.commit());
        }
        let mut at: Option<Node> = None;
        let mut states = Vec::with_capacity(names.len());
        let mut moved = false;
        for (window, read) in windows.into_iter().zip(reads) {
            let results = read.await?;
            if results.len() != window.len() + 1 {
                return Err(corrupt(
                    operation,
                    format!(
                        "a multi-read of {} znodes returned {} results",
                        window.len() + 1,
                        results.len()
                    ),
                )
                .into());
            }
            let unexpected = |other: &zk::MultiReadResult| {
                Failure::from(corrupt(
                    operation,
                    format!("unexpected multi-read result {other:?}"),
                ))
            };
            let mut results = results.into_iter();
            let node = match results.next() {
                Some(zk::MultiReadResult::Data { data, stat }) => match Read::of(&data, &stat) {
                    Read::Node(node) => node,
                    Read::Damaged { .. } | Read::Missing => return Ok(Snapshot::Gone),
                },
                Some(zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                })
                | None => return Ok(Snapshot::Gone),
                Some(zk::MultiReadResult::Error { err }) => return Err(err.into()),
                Some(other) => return Err(unexpected(&other)),
            };
            moved |= at.is_some_and(|at| at != node);
            at = Some(node);
            for (name, result) in window.iter().zip(results) {
                let state = match result {
                    zk::MultiReadResult::Data { data, stat } => {
                        let row = self.read_row(name, data, &stat);
                        if let Ok(entry) = &row
                            && entry.revision.0 > node.record.counter
                        {
                            // Impossible in one snapshot unless the record is behind the entries.
                            let what = format!(
                                "entry {:?} has revision {}, above the version record's counter {}",
                                entry.key, entry.revision.0, node.record.counter
                            );
                            return Err(self.damaged(operation, what).into());
                        }
                        Some(row)
                    }
                    zk::MultiReadResult::Error {
                        err: zk::Error::NoNode,
                    } => None,
                    zk::MultiReadResult::Error { err } => return Err(err.into()),
                    other => return Err(unexpected(&other)),
                };
                states.push((name.clone(), state));
            }
        }
        Ok(match at {
            _ if moved => Snapshot::Moved,
            Some(at) => Snapshot::At(at, states),
            None => Snapshot::Gone,
        })
    }

    /// Applies the states `resolved` (by znode name) to `entries`, `removed` and `unreadable`;
    /// a deleted key's revision is its last logged change. A znode whose name is not an encoded
    /// key was never an entry: its deletion removes no key, only its unreadable row.
    fn settle(
        &self,
        resolved: HashMap<String, Option<Row>>,
        last: &HashMap<String, u64>,
        entries: &mut HashMap<String, StoredEntry>,
        removed: &mut HashMap<String, Revision>,
        unreadable: &mut HashMap<String, Unreadable>,
    ) {
        for (name, state) in resolved {
            let key = keys::decode(&name);
            match state {
                Some(Ok(entry)) => {
                    unreadable.remove(&name);
                    removed.remove(&entry.key);
                    entries.insert(entry.key.clone(), entry);
                }
                Some(Err(row)) => {
                    if let Some(key) = &key {
                        entries.remove(key);
                        removed.remove(key);
                    }
                    unreadable.insert(name, row);
                }
                None => {
                    unreadable.remove(&name);
                    if let Some(key) = key {
                        entries.remove(&key);
                        let revision = last.get(&name).copied().unwrap_or_default();
                        removed.insert(key, Revision(revision));
                    }
                }
            }
        }
    }

    /// Lists and reads every entry (pipelined in windows), by znode name. `None`: the tree is
    /// missing. Entries deleted meanwhile are left out; callers check the version afterwards.
    /// A child of `entries` that is no entry (its name is not an encoded key, written by another
    /// program) or whose data cannot be read is listed in [`Listing::unreadable`] instead.
    async fn read_all(&self, client: &zk::Client) -> Result<Option<Listing>, Failure> {
        let names = match client.list_children(&self.paths.entries).await {
            Ok(names) => names,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut listing = Listing {
            entries: Vec::with_capacity(names.len()),
            unreadable: Vec::new(),
        };
        for window in names.chunks(LOAD_WINDOW) {
            let reads: Vec<_> = window
                .iter()
                .filter_map(|name| {
                    if keys::decode(name).is_none() {
                        // Not read: its name alone makes it no entry (and may not even be a
                        // path this client accepts).
                        let row = self.unreadable(name, keys::why_not_a_key(name));
                        listing.unreadable.push((name.clone(), row));
                        return None;
                    }
                    Some((name, client.get_data(&self.paths.entry(name))))
                })
                .collect();
            for (name, read) in reads {
                match read.await {
                    Ok((data, stat)) => match self.read_row(name, data, &stat) {
                        Ok(entry) => listing.entries.push((
                            name.clone(),
                            Current {
                                entry,
                                znode_version: stat.version,
                            },
                        )),
                        Err(row) => listing.unreadable.push((name.clone(), row)),
                    },
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Some(listing))
    }

    /// A full load: the record (after a `sync`), every entry, the record again; if it moved,
    /// a catch-up through the change log to a consistent state. Tried again from the start
    /// when the catch-up cannot serve (too old, too busy), at most [`MAX_LOADS`] times.
    async fn load_once(&self, client: &zk::Client) -> Result<Load, Failure> {
        let operation = Operation::Load;
        for _ in 0..MAX_LOADS {
            let first = self.read_node(client, operation, false).await?;
            let Some(listing) = self.read_all(client).await? else {
                // `entries` is missing under a record: damaged, unless the tree was just
                // wiped or repaired.
                if matches!(self.read_version(client, false).await?, Read::Node(node) if node == first)
                {
                    let what = format!("znode {} is missing", self.paths.entries);
                    return Err(self.damaged(operation, what).into());
                }
                continue;
            };
            let mut entries: HashMap<String, StoredEntry> = listing
                .entries
                .into_iter()
                .map(|(_, current)| (current.entry.key.clone(), current.entry))
                .collect();
            let mut unreadable: HashMap<String, Unreadable> =
                listing.unreadable.into_iter().collect();
            let last = match self.read_version(client, false).await? {
                Read::Node(node) => node,
                Read::Missing => continue,
                Read::Damaged { what, .. } => return Err(self.damaged(operation, what).into()),
            };
            let node = if last == first {
                first
            } else {
                let mut removed = HashMap::new();
                let caught = self
                    .catch_up(
                        client,
                        operation,
                        first.token(),
                        last,
                        &mut entries,
                        &mut removed,
                        &mut unreadable,
                    )
                    .await?;
                match caught {
                    CatchUp::Reached(node) => node,
                    CatchUp::TooOld | CatchUp::TooBusy => continue,
                }
            };
            // Every write records its counter as its entries' revision: an entry above the
            // record's counter means the record is behind what is stored.
            if let Some(entry) = entries
                .values()
                .find(|e| e.revision.0 > node.record.counter)
            {
                let what = format!(
                    "entry {:?} has revision {}, above the version record's counter {}",
                    entry.key, entry.revision.0, node.record.counter
                );
                return Err(self.damaged(operation, what).into());
            }
            self.remember(Some(node));
            if !unreadable.is_empty() {
                tracing::debug!(
                    path = %self.paths.base,
                    rows = unreadable.len(),
                    "zookeeper: load found entries that cannot be read"
                );
            }
            return Ok(Load {
                version: node.token(),
                entries: entries.into_values().collect(),
                unreadable: unreadable.into_values().collect(),
            });
        }
        // Writers kept the dictionary moving faster than every attempt could follow.
        Err(Self::contention(""))
    }

    async fn changes_once(&self, client: &zk::Client, since: Version) -> Result<Changes, Failure> {
        let operation = Operation::Changes;
        let node = self.read_node(client, operation, false).await?;
        let mut entries = HashMap::new();
        let mut removed = HashMap::new();
        let mut unreadable = HashMap::new();
        let caught = self
            .catch_up(
                client,
                operation,
                since,
                node,
                &mut entries,
                &mut removed,
                &mut unreadable,
            )
            .await?;
        Ok(match caught {
            CatchUp::Reached(node) => Changes::Delta(Delta {
                version: node.token(),
                upserts: entries.into_values().collect(),
                removals: removed.into_iter().collect(),
                unreadable: unreadable.into_values().collect(),
            }),
            CatchUp::TooOld => Changes::TooOld,
            CatchUp::TooBusy => {
                // Writers kept changing new keys: a full load (consistent through its own
                // catch-up, retried) serves instead of failing the sync.
                tracing::debug!(path = %self.paths.base, "zookeeper: delta too busy to follow, falling back to a full load");
                Changes::TooOld
            }
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

/// True if `name` can be the name of a znode this client reads: not `.` or `..`, and none of
/// the code points ZooKeeper refuses in paths (as `zookeeper-client` checks them).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.chars().any(|c| {
            matches!(u32::from(c), 0..=0x1f | 0x7f..=0x9f | 0xd800..=0xf8ff | 0xfff0..=0xffff)
                || c == '/'
        })
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

    /// `zookeeper`, then the dictionary's znode path with the chroot of the connect string in
    /// front: `zookeeper/<chroot>/<root>/<namespace>/<dictionary>`, e.g.
    /// `zookeeper/durable/prod/flags` with the default root and no chroot. No server and no
    /// credentials: a backup stays valid when the ensemble moves.
    fn location(&self) -> String {
        let chroot = self.store.chroot().unwrap_or("");
        format!("{NAME}{chroot}{}", self.paths.base)
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
                Ok(self
                    .read_node(&client, Operation::Version, false)
                    .await?
                    .token())
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
                    let node = self.read_node(&client, operation, true).await?;
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
                    let node = self.read_node(&client, operation, true).await?;
                    let Some(listing) = self.read_all(&client).await? else {
                        continue;
                    };
                    // Entries that cannot be read have no expiry this sweep could see.
                    let mut expired: Vec<(String, Current)> = listing
                        .entries
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
        let plain = parse_entry("k".into(), entry_data(7, None, b"v"), &stat(1000)).unwrap();
        assert_eq!(
            (plain.revision, plain.expires_at, &plain.value[..]),
            (Revision(7), None, &b"v"[..])
        );
        let ttl = Some(Duration::from_millis(1500));
        let expiring = parse_entry("k".into(), entry_data(7, ttl, b""), &stat(1000)).unwrap();
        assert_eq!(
            (expiring.revision, expiring.expires_at, &expiring.value[..]),
            (Revision(7), Some(StoreTime(2500)), &b""[..])
        );
        let cases: [(&[u8], &str); 4] = [
            (b"123", "3 bytes, shorter than its 8-byte header"),
            (
                &(7 | HAS_TTL).to_be_bytes(),
                "8 bytes, shorter than its 16-byte header",
            ),
            (
                &(1_u64 << 53).to_be_bytes(),
                "9007199254740992, is out of range",
            ),
            (&u64::MAX.to_be_bytes(), "shorter than its 16-byte header"),
        ];
        for (bad, expected) in cases {
            let error = parse_entry("k".into(), bad.to_vec(), &stat(0)).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
        let mut huge = ((1_u64 << 60) | HAS_TTL).to_be_bytes().to_vec();
        huge.extend_from_slice(&5u64.to_be_bytes());
        let error = parse_entry("k".into(), huge, &stat(0)).expect_err("out of range");
        assert!(error.contains("out of range"), "{error}");
        // The longest TTL saturates instead of overflowing.
        let mut forever = (3 | HAS_TTL).to_be_bytes().to_vec();
        forever.extend_from_slice(&u64::MAX.to_be_bytes());
        let entry = parse_entry("k".into(), forever, &stat(1000)).expect("reads");
        assert_eq!(entry.expires_at, Some(StoreTime(u64::MAX)));
    }

    #[test]
    fn log_names_must_be_znode_names() {
        for name in ["ka", "notakey", "k%FF", "é"] {
            assert!(valid_name(name), "{name}");
        }
        for name in ["", ".", "..", "a\u{0}", "a\u{7f}", "\u{fff0}", "\u{e000}"] {
            assert!(!valid_name(name), "{name:?}");
        }
    }
}
