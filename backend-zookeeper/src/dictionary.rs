//! [`ZooKeeperBackend`]: one dictionary's znodes, and the pieces its operations are made of:
//! reading the version record (after a read barrier) and entries in atomic multi-reads, and
//! the write multi that lands only on the very state it was prepared from.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use durable_core::{Error, Name, Operation, Result, StoreTime, StoredEntry, Unreadable, Version};
use parking_lot::Mutex;
use zookeeper_client as zk;

use crate::entries::{
    EntryWrite, MAX_VALUE_SIZE, Row, check_request, entry_data, mtime, parse_entry,
};
use crate::error::{Failure, corrupt};
use crate::keys::{self, MAX_KEY_LEN};
use crate::record::{self, Record};
use crate::store::{NAME, ZooKeeperStore};

/// Attempts of an optimistic write before giving up with [`Error::Contention`].
pub(crate) const MAX_ATTEMPTS: u32 = 64;

/// The longest pause between two attempts of a write that lost a race.
const MAX_BACKOFF_MICROS: u64 = 50_000;

/// One dictionary in ZooKeeper. Every optional capability, atomically.
///
/// Created by [`ZooKeeperStore::backend`]. See the crate documentation for the layout and the
/// cost of each operation.
pub struct ZooKeeperBackend {
    pub(crate) store: ZooKeeperStore,
    pub(crate) namespace: Name,
    pub(crate) dictionary: Name,
    pub(crate) paths: Arc<Paths>,
    /// The version node as this backend last saw it: the expected version of the next write.
    pub(crate) cached: Mutex<Option<Node>>,
    /// Whether the last plain `persist` had to create its entry (a guess for the next one).
    pub(crate) guess_create: AtomicBool,
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
pub(crate) const CONTAINERS: [&str; 3] = ["entries", "log", "stamp"];

impl Paths {
    pub(crate) fn new(root: &str, namespace: &Name, dictionary: &Name) -> Self {
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

    pub(crate) fn entry(&self, name: &str) -> String {
        format!("{}/{name}", self.entries)
    }

    pub(crate) fn log_node(&self, counter: u64) -> String {
        format!("{}/{counter:020}", self.log)
    }

    pub(crate) fn head(&self, stamp: u64) -> String {
        format!("{}/{stamp:016x}", self.stamps)
    }

    pub(crate) fn container(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }
}

/// The version znode as read: its record and its data version (the expected version of the
/// next write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) record: Record,
    pub(crate) zversion: i32,
}

impl Node {
    pub(crate) fn token(self) -> Version {
        self.record.token()
    }
}

/// What a read of the version znode found.
pub(crate) enum Read {
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
    pub(crate) fn of(data: &[u8], stat: &zk::Stat) -> Read {
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
pub(crate) struct Current {
    pub(crate) entry: StoredEntry,
    pub(crate) znode_version: i32,
}

/// Why a write multi was refused.
#[derive(Debug)]
pub(crate) enum Conflict {
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

impl ZooKeeperBackend {
    pub(crate) fn new(store: ZooKeeperStore, namespace: Name, dictionary: Name) -> Self {
        let paths = Arc::new(Paths::new(
            &store.inner.options.root,
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

    pub(crate) fn check_key(&self, key: &str) -> Result<String> {
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

    pub(crate) fn check_value(key: &str, value: &[u8]) -> Result<()> {
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

    pub(crate) fn remember(&self, node: Option<Node>) {
        *self.cached.lock() = node;
    }

    /// An [`Error::Damaged`] naming this dictionary and `what` is wrong.
    pub(crate) fn damaged(&self, operation: Operation, what: impl fmt::Display) -> Error {
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
    pub(crate) fn read_row(&self, name: &str, data: Vec<u8>, stat: &zk::Stat) -> Row {
        let Some(key) = keys::decode(name) else {
            return Err(self.unreadable(name, keys::why_not_a_key(name)));
        };
        parse_entry(key, data, stat).map_err(|what| self.unreadable(name, what))
    }

    /// The [`Unreadable`] row of entry znode `name`.
    pub(crate) fn unreadable(&self, name: &str, what: impl fmt::Display) -> Unreadable {
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

    /// Reads the version znode; if `fresh`, after a [`barrier`] on it, sent in the same round
    /// trip, so that the read sees every write acknowledged before it started, whichever server
    /// this session is on (a follower that has not applied them yet, or the leader).
    pub(crate) async fn read_version(
        &self,
        client: &zk::Client,
        fresh: bool,
    ) -> Result<Read, Failure> {
        let passed = fresh.then(|| barrier(client, &self.paths.version));
        let read = client.get_data(&self.paths.version);
        if let Some(passed) = passed {
            passed.await?;
        }
        match read.await {
            Ok((data, stat)) => {
                tracing::trace!(
                    session = %client.session_id(),
                    fresh,
                    mzxid = stat.mzxid,
                    record = %String::from_utf8_lossy(&data),
                    "zookeeper: read the version record"
                );
                Ok(Read::of(&data, &stat))
            }
            Err(zk::Error::NoNode) => Ok(Read::Missing),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the version node (after a [`barrier`]), creating the dictionary if it is missing.
    /// A damaged record is repaired as a wipe if `repair` (writes), and is an
    /// [`Error::Damaged`] otherwise (reads), except an unstamped dictionary (see
    /// [`Read::Damaged`]), which reads initialize too.
    pub(crate) async fn read_node(
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
    /// after a [`barrier`], in one round trip. A damaged record, or an entry whose revision is
    /// above the record's counter, is repaired (these reads prepare a write).
    async fn read_state(
        &self,
        client: &zk::Client,
        operation: Operation,
        names: &[String],
    ) -> Result<(Node, Vec<Option<Current>>), Failure> {
        for _ in 0..5 {
            let passed = barrier(client, &self.paths.version);
            let mut reader = client.new_multi_reader();
            reader.add_get_data(&self.paths.version)?;
            for name in names {
                reader.add_get_data(&self.paths.entry(name))?;
            }
            let read = reader.commit();
            passed.await?;
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

    /// One write multi: the version record replaced by the next one (checked against the
    /// expected data version), the head of the expected stamp deleted and the next one created
    /// (so the write lands only on the very state it was prepared from), the entry operations,
    /// and the change-log node of the new counter (its stamp and the keys written), all or
    /// nothing. Returns the new token and the server's time of the write (the `mtime` of every
    /// znode the multi wrote).
    pub(crate) async fn commit(
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
        check_request(operation, writes)?;
        let options = self.store.inner.options.create_options();
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
                let history = u64::from(self.store.inner.options.history);
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
    pub(crate) async fn store_value(
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
    pub(crate) async fn now_once(&self, client: &zk::Client) -> Result<StoreTime, Failure> {
        for _ in 0..5 {
            match client.set_data(&self.paths.clock, b"", None).await {
                Ok(stat) => return Ok(mtime(&stat)),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
            let options = self.store.inner.options.create_options();
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

    pub(crate) fn contention(key: &str) -> Failure {
        Failure::Durable(Error::Contention {
            backend: NAME.into(),
            key: key.into(),
            attempts: MAX_ATTEMPTS,
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

    pub(crate) async fn depersist_once(
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
    pub(crate) async fn conditional<T>(
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

/// Sends a read barrier on `path` and returns the future of its answer: the requests this
/// session sends after it are answered as of a state that holds every write acknowledged
/// before it was sent, whichever server the session is on. It fails only when the request
/// does (connection lost, session expired): never ignore it.
///
/// The barrier is a `multi` holding one version check of `path` that any version passes: a
/// write that writes nothing (no znode, no data version, no watch changes; it needs only READ
/// on `path`, and a missing `path` fails the check but not the barrier), which the leader
/// orders after every write committed before it, so the server holds the session's later
/// reads until it has applied them all. A ZooKeeper `sync` would be cheaper (no quorum, no
/// transaction-log record) but is no barrier on the leader: the leader answers a `sync` from
/// one of its own sessions at once, as a read (its `CommitProcessor` matches syncs only on
/// followers), and serves the next read before the writes it has committed but not yet
/// applied, which a follower may already have applied and acknowledged (the crate's README,
/// "Linearizable checks", has the measurements). Nor is a `sync` acknowledged by a quorum, so
/// a deposed leader can answer one (ZOOKEEPER-1675); the barrier's quorum rules that out too.
pub(crate) fn barrier<'a>(
    client: &'a zk::Client,
    path: &str,
) -> impl Future<Output = Result<(), Failure>> + Send + 'a {
    let mut multi = client.new_multi_writer();
    // Fails only on a path the client refuses (never one of ours): then the multi is empty and
    // its answer says so.
    let added = multi.add_check_version(path, -1);
    let passed = multi.commit();
    async move {
        added?;
        match passed.await {
            Ok(_) => Ok(()),
            // The check failed (the znode is missing): the multi was still ordered and applied.
            Err(zk::MultiWriteError::OperationFailed { .. }) => Ok(()),
            Err(zk::MultiWriteError::RequestFailed { source }) => {
                tracing::trace!(
                    session = %client.session_id(),
                    error = %source,
                    "zookeeper: read barrier failed"
                );
                Err(source.into())
            }
        }
    }
}

/// Waits a random time, growing with `attempt`, before retrying a write that lost a race: a
/// writer with a fresh cached version commits in one round trip while a loser needs two (read,
/// then commit), so without the pause a busy writer could starve the others.
pub(crate) async fn backoff(attempt: u32) {
    let ceiling = (200u64 << attempt.min(12)).min(MAX_BACKOFF_MICROS);
    let micros = rand::random::<u64>() % (ceiling + 1);
    tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
}

/// What a conditional operation decided after reading.
pub(crate) enum Decision<T> {
    /// Nothing to write; the answer.
    Done(T),
    /// Write these, then answer with the new token.
    Write(Vec<EntryWrite>, Box<dyn FnOnce(Version) -> T + Send>),
}

/// The write that stores `value`, without expiry, given the entry's current state.
pub(crate) fn put(name: &str, current: Option<&Current>, value: Bytes) -> EntryWrite {
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
