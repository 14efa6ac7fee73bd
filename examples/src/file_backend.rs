//! A custom backend: a durable dictionary kept in a directory of files, one file per key.
//!
//! This module is the proof that "implement your own backend" works from outside the workspace:
//! it uses only the public API of `durable` (the [`Backend`] trait and its value types), the
//! standard library, `tokio::task::spawn_blocking`, `rand` for epochs and `sha2` for long file
//! names. It passes the full public conformance suite
//! (`examples/tests/file_backend_conformance.rs`).
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> durable::Result<()> {
//! use durable::{Dict, Json, Options};
//! use durable_examples::file_backend::FileStore;
//!
//! let store = FileStore::new("/var/lib/myapp/durable");
//! let flags: Dict<bool> = Dict::open(store.backend("prod", "flags")?, Json, Options::new()).await?;
//! flags.insert("new-checkout", true).await?;
//! assert_eq!(flags.sync().await?.get("new-checkout"), Some(&true));
//! # Ok(()) }
//! ```
//!
//! # The few methods a user writes
//!
//! A backend is a value bound to one dictionary that implements [`Backend`]: a name, its
//! capabilities, and four required operations, each **one atomic step** that bumps the version
//! token when it changes something. Everything else (snapshots, decoding, sync modes, backups,
//! listeners) is the engine's job.
//!
//! ```ignore
//! #[durable::async_trait]
//! impl Backend for FileBackend {
//!     fn name(&self) -> &str { "files" }
//!     fn capabilities(&self) -> Capabilities { Capabilities::none() /* or what you offer */ }
//!
//!     // store `value` under `key` and bump the version, atomically; return the new token
//!     async fn persist(&self, key: &str, value: Bytes) -> Result<Version> { .. }
//!     // delete `key`; bump and return the new token only if it existed
//!     async fn depersist(&self, key: &str) -> Result<Option<Version>> { .. }
//!     // every entry, and the token of exactly that state
//!     async fn durables(&self) -> Result<Load> { .. }
//!     // the current token: the cheap check every sync() makes
//!     async fn last_updated(&self) -> Result<Version> { .. }
//!
//!     // optional, declared in capabilities(): changes_since (delta), persist_if_absent,
//!     // compare_and_swap, pop, increment, persist_batch, clear, subscribe (push),
//!     // now + persist_expiring + sweep (expiry)
//! }
//! ```
//!
//! This backend offers every optional capability except push hints and expiring entries
//! (`delta`, `insert_if_absent`, `compare_and_swap`, `pop`, `increment`, `batch`, `clear`, and
//! `stamps`, see [below](#tokens-that-cannot-lie)): under an exclusive lock they are all easy to
//! make atomic. Expiry is left out because a directory has
//! no clock of its own that every process reads alike; sets and sharded counters, which are layers
//! over the dictionary, work on it unchanged.
//!
//! # Layout
//!
//! A [`FileStore`] is a root directory; dictionary `name` of namespace `ns` lives in
//! `<root>/<ns>/<name>/` (names are validated by [`Name`], so they are safe path segments):
//!
//! | path | contents |
//! | --- | --- |
//! | `lock` | empty; `flock`ed shared by readers and exclusively by writers |
//! | `version` | the version record: a first line `durable-files 2`, then one field per line, `epoch <hex>`, `counter <decimal>`, `stamp <hex>`, `parent <hex>` (the token) and `oldest <decimal>` (the oldest counter a delta can be served from) |
//! | `entries/k<hex of key>` | one file per key: a header (revision, key) and the value's bytes |
//! | `entries/h<sha-256 of key>` | the same, for keys longer than 120 bytes (file names are limited to 255 bytes); the real key is inside |
//! | `log/<revision>` | that revision's write, for deltas: a first line `<stamp hex> <parent hex>`, then the keys it wrote, one per line (hex); the last [`FileStore::with_history`] revisions are kept |
//! | `journal` | only during a write (or after a crash in one): the write-ahead record of the write in progress |
//! | `tmp/` | temporary files, renamed into place |
//!
//! Any string is a key: file names are `k` followed by the key's UTF-8 bytes in hex (so the empty
//! key, `/`, `..` and unicode are all safe), or a hash for long keys.
//!
//! # Writes, locks and crashes
//!
//! Every write takes the exclusive lock, reads the version record (repairing it if it is missing
//! or damaged, see below) and the current entries it needs, and then:
//!
//! 1. writes the whole operation (every key's new value or deletion, and the new token with its
//!    fresh stamp) to `journal` (temporary file, `fsync`, rename, `fsync` of the directory).
//!    **This is the commit point.**
//! 2. applies it: each entry file is replaced by rename (or deleted), `log/<revision>` is written;
//! 3. replaces `version` by rename: readers now see the new token;
//! 4. deletes `journal` and releases the lock.
//!
//! Readers ([`durables`](Backend::durables), [`changes_since`](Backend::changes_since)) take the
//! shared lock, so they never see half a write from a live writer. If a writer crashes (process
//! killed, power lost) after step 1, the next process to take the lock finds `journal` and
//! completes the write (roll forward: every step is idempotent; if the version record was lost
//! or damaged meanwhile, the write lands on the repaired record); if it crashed before step 1
//! finished, nothing happened. So every write, including a batch or a clear, is applied entirely
//! or not at all, and a load always matches its token. [`last_updated`](Backend::last_updated)
//! reads `version` without a lock: renames are atomic, so it sees the old or the new token.
//!
//! The price of that guarantee: each value is written twice (journal and entry file) and a write
//! costs several `fsync`s. [`FileStore::with_fsync`]`(false)` skips them: writes stay atomic
//! against process crashes, but a power loss may then lose recent writes or leave the files
//! inconsistent.
//!
//! Limits, honestly: `flock` locks are advisory and, on network file systems, only as good as the
//! server's lock support; deleting the directory while processes are writing to it (rather than
//! between operations) can let two writers in at once. Deleting it between operations is a wipe:
//! the next operation creates a fresh dictionary with a new epoch, and every handle reloads.
//!
//! # Tokens that cannot lie
//!
//! A token ([`Version`]) is the epoch, the counter and a **stamp**: a random number drawn by
//! every write ([`Version::new_stamp`]) and stored with the counter, beside the stamp it replaced
//! (its **parent**). This is what makes the token of a state unique even when the directory goes
//! back in time:
//!
//! - **Putting back an older copy** of the directory (a backup restore) puts back its `version`
//!   file: the token is again the one of that older state, which differs from the token of every
//!   handle that saw later writes, so they all check and follow the store. Writes made after that
//!   draw new stamps, so even when the counter passes the old one, no token names two states.
//! - **Deltas check the history.** Each `log/<revision>` file records its write's stamp and
//!   parent, so the logs form a chain. [`changes_since`](Backend::changes_since)`(t)` serves a
//!   delta only if the chain from `t`'s counter to the current record starts at `t`'s stamp;
//!   a token from a history the directory no longer has gets [`Changes::TooOld`], and its handle
//!   reloads in full.
//! - **A missing or damaged `version` file** (deleted, truncated, a field missing or not a
//!   number, a counter of 2^53 or more) is treated as a wipe, by every operation, before
//!   anything else is written: a fresh epoch, and a counter starting at the highest revision
//!   still stored in `entries/` and `log/`, so no token and no entry revision is ever given twice
//!   (compare-and-swap relies on revisions). The entries stay; every handle reloads them. A
//!   warning names the file and what was wrong with it. (If a stored revision is itself 2^53 or
//!   more, no counter can follow it: operations fail with [`Error::Damaged`], writing nothing. A
//!   `version` file of format 1, written before stamps existed, reads as damaged: the first
//!   operation after the upgrade starts a fresh epoch.)
//!
//! # Errors
//!
//! File-system failures (missing permissions, a path that is not a directory, a full disk) are
//! [`Error::Unavailable`] naming the path and the operation: the store cannot be used right now.
//! A lock that cannot be had within [`FileStore::with_lock_timeout`] is [`Error::Timeout`].
//! An entry, log or journal file that cannot be parsed is [`Error::Backend`] naming the file (and
//! the key, for entries); a damaged `version` file is repaired as described above. No input makes
//! this backend panic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable::bytes::Bytes;
use durable::{
    Backend, BatchOp, Capabilities, Changes, Delta, Error, IfAbsent, Load, Name, Operation, Result,
    Revision, StoredEntry, Swap, Version, async_trait, parse_counter,
};
use sha2::{Digest, Sha256};

/// The backend's name in errors and messages.
const BACKEND: &str = "files";

/// First line of an entry file.
const ENTRY_MAGIC: &[u8] = b"durable-files-entry 1\n";
/// First bytes of the journal.
const JOURNAL_MAGIC: &[u8] = b"durable-files-journal 2\n";
/// First line of the version file.
const VERSION_HEADER: &str = "durable-files 2";
/// Counters from here on are damage, not history: 2^53, the largest integer every JSON reader
/// and every double-based store holds exactly.
const MAX_COUNTER: u64 = 1 << 53;

/// Keys up to this many bytes are stored under their hex encoding (2 × 120 + 1 = 241 bytes, below
/// the usual 255-byte file name limit); longer keys under their SHA-256.
const MAX_PLAIN_KEY: usize = 120;

/// A directory holding durable dictionaries, one sub-directory per namespace and dictionary.
///
/// Cheap to clone; it is only configuration. See the [module docs](self) for the layout and the
/// crash guarantees.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    history: u64,
    lock_timeout: Duration,
    fsync: bool,
}

impl FileStore {
    /// A store rooted at `root` (created on first use), with the defaults: 1000 revisions of
    /// history for deltas, a 5 second lock timeout, `fsync` on.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileStore {
            root: root.into(),
            history: 1000,
            lock_timeout: Duration::from_secs(5),
            fsync: true,
        }
    }

    /// How many revisions of the change log to keep (at least 1). A handle whose snapshot is older
    /// than that reloads in full instead of applying a delta.
    pub fn with_history(mut self, revisions: u64) -> Self {
        self.history = revisions.max(1);
        self
    }

    /// How long an operation waits for the dictionary's lock before failing with
    /// [`Error::Timeout`].
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Whether writes `fsync` files and directories (default true). Without it, writes are
    /// still atomic against process crashes, but not against power loss.
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of dictionary `dictionary` in `namespace`.
    pub fn dictionary_dir(&self, namespace: &str, dictionary: &str) -> Result<PathBuf> {
        let namespace = Name::new(namespace)?;
        let dictionary = Name::new(dictionary)?;
        Ok(self.root.join(namespace.as_str()).join(dictionary.as_str()))
    }

    /// A backend over dictionary `dictionary` in `namespace`. Touches no file: a store that
    /// cannot be used fails on the first operation.
    pub fn backend(&self, namespace: &str, dictionary: &str) -> Result<FileBackend> {
        Ok(FileBackend {
            dir: Arc::new(Dir {
                path: self.dictionary_dir(namespace, dictionary)?,
                history: self.history,
                lock_timeout: self.lock_timeout,
                fsync: self.fsync,
            }),
        })
    }
}

/// One dictionary of a [`FileStore`]: implements [`Backend`] with every capability but push.
#[derive(Debug, Clone)]
pub struct FileBackend {
    dir: Arc<Dir>,
}

impl FileBackend {
    /// The dictionary's directory.
    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    /// Trims the change log now, so that only the current token can be served a delta (older
    /// handles reload in full). Writes nothing else and bumps nothing.
    pub async fn forget_history(&self) -> Result<()> {
        self.run(Operation::Changes, |dir| {
            dir.write(Operation::Changes, |tx| tx.forget_history())
        })
        .await
    }

    /// Runs blocking file work on tokio's blocking pool.
    async fn run<T, F>(&self, operation: Operation, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Dir) -> Result<T> + Send + 'static,
    {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || work(&dir))
            .await
            .map_err(|e| Error::backend(BACKEND, operation, format!("file task failed: {e}")))?
    }
}

#[async_trait]
impl Backend for FileBackend {
    fn name(&self) -> &str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all().with_push(false).with_expiry(false)
    }

    async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
        let key = key.to_owned();
        self.run(Operation::Persist, move |dir| {
            dir.write(Operation::Persist, |tx| tx.commit(vec![(key, Some(value))]))
        })
        .await
    }

    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        let key = key.to_owned();
        self.run(Operation::Depersist, move |dir| {
            dir.write(Operation::Depersist, |tx| {
                if !tx.contains(&key)? {
                    return Ok(None);
                }
                tx.commit(vec![(key, None)]).map(Some)
            })
        })
        .await
    }

    async fn durables(&self) -> Result<Load> {
        self.run(Operation::Load, |dir| {
            dir.read(Operation::Load, |dir, head| {
                Ok(Load {
                    version: head.version(),
                    entries: dir.all_entries(Operation::Load)?.into(),
                    unreadable: Vec::new(),
                })
            })
        })
        .await
    }

    async fn last_updated(&self) -> Result<Version> {
        self.run(Operation::Version, |dir| {
            // No lock: `version` is only ever replaced by rename, so this sees a whole token.
            match dir.read_record(Operation::Version)? {
                Record::Valid(head) => Ok(head.version()),
                // A new, wiped or damaged dictionary: (re)create its record under the lock.
                Record::Missing | Record::Damaged(_) => {
                    dir.write(Operation::Version, |tx| Ok(tx.head.version()))
                }
            }
        })
        .await
    }

    async fn changes_since(&self, since: Version) -> Result<Changes> {
        self.run(Operation::Changes, move |dir| {
            dir.read(Operation::Changes, |dir, head| dir.changes(head, since))
        })
        .await
    }

    async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
        let key = key.to_owned();
        self.run(Operation::InsertIfAbsent, move |dir| {
            dir.write(Operation::InsertIfAbsent, |tx| match tx.entry(&key)? {
                Some(entry) => Ok(IfAbsent::Present(entry)),
                None => tx.commit(vec![(key, Some(value))]).map(IfAbsent::Inserted),
            })
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        new: Option<Bytes>,
    ) -> Result<Swap> {
        let key = key.to_owned();
        self.run(Operation::CompareAndSwap, move |dir| {
            dir.write(Operation::CompareAndSwap, |tx| {
                let current = tx.entry(&key)?;
                let matches = current.as_ref().map(|e| e.revision) == expected;
                if !matches || (current.is_none() && new.is_none()) {
                    return Ok(Swap::Conflict(current));
                }
                tx.commit(vec![(key, new)]).map(Swap::Swapped)
            })
        })
        .await
    }

    async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        let key = key.to_owned();
        self.run(Operation::Pop, move |dir| {
            dir.write(Operation::Pop, |tx| {
                let Some(entry) = tx.entry(&key)? else {
                    return Ok(None);
                };
                let version = tx.commit(vec![(key, None)])?;
                Ok(Some((entry.value, version)))
            })
        })
        .await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        let key = key.to_owned();
        self.run(Operation::Increment, move |dir| {
            dir.write(Operation::Increment, |tx| {
                let current = match tx.entry(&key)? {
                    Some(entry) => parse_counter(&entry.value),
                    None => Some(0),
                };
                let Some(new) = current.and_then(|c| c.checked_add(delta)) else {
                    return Err(Error::NotAnInteger {
                        backend: BACKEND.into(),
                        key,
                    });
                };
                let version = tx.commit(vec![(key, Some(Bytes::from(new.to_string())))])?;
                Ok((new, version))
            })
        })
        .await
    }

    async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
        self.run(Operation::Batch, move |dir| {
            dir.write(Operation::Batch, |tx| {
                // Each key's final state, applying the operations in order; whether the batch
                // changes anything is decided against the entries as they were before it.
                let mut finals: BTreeMap<String, Option<Bytes>> = BTreeMap::new();
                let mut existed: BTreeMap<String, bool> = BTreeMap::new();
                let mut changes = false;
                for op in ops {
                    let key = op.key().to_owned();
                    if !existed.contains_key(&key) {
                        let present = tx.contains(&key)?;
                        existed.insert(key.clone(), present);
                    }
                    match op {
                        BatchOp::Put { key, value } => {
                            changes = true;
                            finals.insert(key, Some(value));
                        }
                        BatchOp::Delete { key } => {
                            changes |= existed.get(&key).copied().unwrap_or(false);
                            finals.insert(key, None);
                        }
                    }
                }
                if !changes {
                    return Ok(None);
                }
                // A key absent before and deleted in the end is not a change of the stored data.
                let writes = finals
                    .into_iter()
                    .filter(|(key, value)| {
                        value.is_some() || existed.get(key).copied().unwrap_or(true)
                    })
                    .collect();
                tx.commit(writes).map(Some)
            })
        })
        .await
    }

    async fn clear(&self) -> Result<Option<Version>> {
        self.run(Operation::Clear, |dir| {
            dir.write(Operation::Clear, |tx| {
                let keys = tx.dir.all_entries(Operation::Clear)?;
                if keys.is_empty() {
                    return Ok(None);
                }
                let deletes = keys.into_iter().map(|e| (e.key, None)).collect();
                tx.commit(deletes).map(Some)
            })
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// The directory of one dictionary

/// Paths and settings of one dictionary; all methods do blocking I/O.
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    history: u64,
    lock_timeout: Duration,
    fsync: bool,
}

/// The version record: the contents of a valid `version` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    epoch: u64,
    counter: u64,
    /// The random stamp of the write that produced this state.
    stamp: u64,
    /// The stamp of the state that write started from (0 for a record created afresh).
    parent: u64,
    /// The oldest counter a delta can start from: log files exist for `oldest + 1 ..= counter`.
    oldest: u64,
}

impl Head {
    /// The record of a new dictionary, or one replacing a lost or damaged record: a fresh epoch
    /// and stamp, the counter at `counter` and no history.
    fn fresh(counter: u64) -> Head {
        Head {
            epoch: rand::random(),
            counter,
            stamp: Version::new_stamp(),
            parent: 0,
            oldest: counter,
        }
    }

    /// The record after one more write: the next counter, a fresh stamp, this record's stamp as
    /// parent, and a history of at most `history` revisions.
    fn next(&self, history: u64) -> Head {
        let next = self.version().next(Version::new_stamp());
        Head {
            epoch: next.epoch(),
            counter: next.counter(),
            stamp: next.stamp(),
            parent: next.parent(),
            oldest: self.oldest.max(next.counter().saturating_sub(history)),
        }
    }

    fn version(&self) -> Version {
        Version::stamped(self.epoch, self.counter, self.stamp, self.parent)
    }

    /// The text of the `version` file.
    fn to_text(self) -> String {
        format!(
            "{VERSION_HEADER}\nepoch {:016x}\ncounter {}\nstamp {:016x}\nparent {:016x}\noldest {}\n",
            self.epoch, self.counter, self.stamp, self.parent, self.oldest
        )
    }

    /// Parses the text of a `version` file; the error says what is wrong with it.
    fn parse(text: &str) -> std::result::Result<Head, String> {
        let mut lines = text.lines();
        if lines.next() != Some(VERSION_HEADER) {
            return Err(format!("the first line is not `{VERSION_HEADER}`"));
        }
        let mut fields = BTreeMap::new();
        for line in lines.filter(|line| !line.trim().is_empty()) {
            let Some((name, value)) = line.split_once(' ') else {
                return Err(format!("line {line:?} is not `<field> <value>`"));
            };
            if fields.insert(name, value.trim()).is_some() {
                return Err(format!("field `{name}` appears twice"));
            }
        }
        let field = |name: &str, radix: u32| {
            let value = fields
                .get(name)
                .ok_or_else(|| format!("field `{name}` is missing"))?;
            u64::from_str_radix(value, radix).map_err(|_| {
                let kind = if radix == 16 {
                    "hexadecimal"
                } else {
                    "decimal"
                };
                format!("field `{name}` is {value:?}, not a {kind} integer of 0 or more")
            })
        };
        let head = Head {
            epoch: field("epoch", 16)?,
            counter: field("counter", 10)?,
            stamp: field("stamp", 16)?,
            parent: field("parent", 16)?,
            oldest: field("oldest", 10)?,
        };
        if fields.len() > 5 {
            return Err("it has fields other than epoch, counter, stamp, parent, oldest".into());
        }
        if head.counter >= MAX_COUNTER {
            return Err(format!("counter {} is 2^53 or more", head.counter));
        }
        if head.stamp == 0 {
            return Err("stamp is 0".into());
        }
        if head.oldest > head.counter {
            return Err(format!(
                "oldest {} is above counter {}",
                head.oldest, head.counter
            ));
        }
        Ok(head)
    }
}

/// What the `version` file holds.
#[derive(Debug)]
enum Record {
    /// A valid version record.
    Valid(Head),
    /// No `version` file: a new dictionary, or a wiped one.
    Missing,
    /// A `version` file that cannot be read; the reason says what is wrong with it.
    Damaged(String),
}

/// One write, as recorded in the journal before it is applied.
#[derive(Debug)]
struct Journal {
    /// The version record after this write (the log is trimmed to its `oldest`).
    head: Head,
    /// Every key's new value, or `None` for a deletion.
    changes: Vec<(String, Option<Bytes>)>,
}

/// The contents of a `log/<revision>` file.
#[derive(Debug)]
struct LogRecord {
    /// The stamp of the write.
    stamp: u64,
    /// The stamp of the state it started from.
    parent: u64,
    /// The keys it wrote or deleted.
    keys: Vec<String>,
}

/// An I/O error with the path it happened on.
#[derive(Debug)]
struct PathError {
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A file-system failure: the store cannot be used right now.
fn io_error(operation: Operation, path: &Path, source: io::Error) -> Error {
    Error::unavailable(
        BACKEND,
        operation,
        PathError {
            path: path.to_owned(),
            source,
        },
    )
}

/// A file whose contents make no sense.
fn corrupt(operation: Operation, path: &Path, what: impl fmt::Display) -> Error {
    Error::backend(
        BACKEND,
        operation,
        format!("{} is corrupt: {what}", path.display()),
    )
}

/// The file name of `key` in `entries/`.
fn entry_name(key: &str) -> String {
    if key.len() <= MAX_PLAIN_KEY {
        format!("k{}", hex(key.as_bytes()))
    } else {
        format!("h{}", hex(&Sha256::digest(key.as_bytes())))
    }
}

/// True for names [`entry_name`] can produce.
fn is_entry_name(name: &str) -> bool {
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match (name.strip_prefix('k'), name.strip_prefix('h')) {
        (Some(hex), _) => {
            hex.len() <= 2 * MAX_PLAIN_KEY && hex.len().is_multiple_of(2) && lower_hex(hex)
        }
        (_, Some(hash)) => hash.len() == 64 && lower_hex(hash),
        _ => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Decodes a hex-encoded UTF-8 key.
fn unhex_key(text: &[u8]) -> Option<String> {
    String::from_utf8(unhex(text)?).ok()
}

/// Splits `bytes` at its first newline: (line, rest).
fn line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == b'\n')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

impl Dir {
    fn lock_path(&self) -> PathBuf {
        self.path.join("lock")
    }
    fn version_path(&self) -> PathBuf {
        self.path.join("version")
    }
    fn journal_path(&self) -> PathBuf {
        self.path.join("journal")
    }
    fn entries_dir(&self) -> PathBuf {
        self.path.join("entries")
    }
    fn log_dir(&self) -> PathBuf {
        self.path.join("log")
    }
    fn tmp_dir(&self) -> PathBuf {
        self.path.join("tmp")
    }
    fn entry_path(&self, key: &str) -> PathBuf {
        self.entries_dir().join(entry_name(key))
    }
    fn log_path(&self, counter: u64) -> PathBuf {
        self.log_dir().join(format!("{counter:020}"))
    }

    /// Opens the lock file and locks it (shared or exclusive), waiting at most the lock timeout.
    /// The lock is released when the returned file is closed.
    fn lock(&self, operation: Operation, exclusive: bool) -> Result<File> {
        fs::create_dir_all(&self.path).map_err(|e| io_error(operation, &self.path, e))?;
        let path = self.lock_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(operation, &path, e))?;
        let deadline = Instant::now() + self.lock_timeout;
        let mut pause = Duration::from_micros(100);
        loop {
            let attempt = if exclusive {
                file.try_lock()
            } else {
                file.try_lock_shared()
            };
            match attempt {
                Ok(()) => return Ok(file),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::Timeout {
                        backend: BACKEND.into(),
                        operation,
                        after: self.lock_timeout,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io_error(operation, &path, e)),
            }
        }
    }

    /// Runs `read` under the shared lock with the current version record, after completing a
    /// crashed write or creating the version record if needed (under the exclusive lock).
    fn read<T>(
        &self,
        operation: Operation,
        read: impl FnOnce(&Dir, Head) -> Result<T>,
    ) -> Result<T> {
        for _ in 0..3 {
            {
                let _lock = self.lock(operation, false)?;
                let journal = self.journal_path();
                let crashed = journal
                    .try_exists()
                    .map_err(|e| io_error(operation, &journal, e))?;
                if !crashed && let Record::Valid(head) = self.read_record(operation)? {
                    return read(self, head);
                }
            }
            self.write(operation, |_| Ok(()))?;
        }
        Err(Error::backend(
            BACKEND,
            operation,
            format!(
                "{} keeps changing under the lock (is it being deleted?)",
                self.path.display()
            ),
        ))
    }

    /// Runs `write` under the exclusive lock, after repairing or creating the version record if
    /// needed and completing any crashed write.
    fn write<T>(
        &self,
        operation: Operation,
        write: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.lock(operation, true)?;
        self.clean_tmp(operation)?;
        let head = self.ensure_head(operation)?;
        let head = self.recover(operation, head)?;
        write(&mut Tx {
            dir: self,
            operation,
            head,
        })
    }

    /// Reads the version record.
    fn read_record(&self, operation: Operation) -> Result<Record> {
        let path = self.version_path();
        match fs::read_to_string(&path) {
            Ok(text) => Ok(match Head::parse(&text) {
                Ok(head) => Record::Valid(head),
                Err(reason) => Record::Damaged(reason),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Record::Missing),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                Ok(Record::Damaged("it is not UTF-8 text".into()))
            }
            Err(e) => Err(io_error(operation, &path, e)),
        }
    }

    fn write_head(&self, operation: Operation, head: Head) -> Result<()> {
        let text = head.to_text();
        self.replace(operation, &self.version_path(), &[text.as_bytes()])?;
        self.sync_dir(operation, &self.path)
    }

    /// The version record; a missing or damaged one is created afresh, as after a wipe
    /// (exclusive lock held). Nothing else is written before this.
    fn ensure_head(&self, operation: Operation) -> Result<Head> {
        match self.read_record(operation)? {
            Record::Valid(head) => return Ok(head),
            Record::Missing => {}
            Record::Damaged(reason) => tracing::warn!(
                file = %self.version_path().display(),
                %reason,
                "the version record is damaged; starting a fresh epoch, as after a wipe"
            ),
        }
        // A fresh epoch, so no token of the old record is ever repeated, and a counter at the
        // highest revision still stored, so no revision is ever given twice. Log files of the
        // old epoch must not serve deltas.
        let highest = self.highest_revision(operation)?;
        if highest >= MAX_COUNTER {
            return Err(Error::Damaged {
                backend: BACKEND.into(),
                operation,
                reason: format!(
                    "{}: a stored revision ({highest}) is 2^53 or more, no counter can follow it",
                    self.path.display()
                ),
            });
        }
        let head = Head::fresh(highest);
        let log = self.log_dir();
        match fs::remove_dir_all(&log) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(operation, &log, e)),
        }
        self.write_head(operation, head)?;
        Ok(head)
    }

    /// The highest revision of any entry or log file (0 for an empty directory).
    fn highest_revision(&self, operation: Operation) -> Result<u64> {
        let entries = self.all_entries(operation)?;
        let mut highest = entries.iter().map(|e| e.revision.0).max().unwrap_or(0);
        let log = self.log_dir();
        let listing = match fs::read_dir(&log) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(highest),
            Err(e) => return Err(io_error(operation, &log, e)),
        };
        for item in listing {
            let item = item.map_err(|e| io_error(operation, &log, e))?;
            if let Some(revision) = item.file_name().to_str().and_then(|n| n.parse().ok()) {
                highest = highest.max(revision);
            }
        }
        Ok(highest)
    }

    /// Writes `parts` to a temporary file and renames it to `target`: readers see the old file or
    /// the whole new one.
    fn replace(&self, operation: Operation, target: &Path, parts: &[&[u8]]) -> Result<()> {
        let tmp_dir = self.tmp_dir();
        fs::create_dir_all(&tmp_dir).map_err(|e| io_error(operation, &tmp_dir, e))?;
        let tmp = tmp_dir.join(format!("{:016x}", rand::random::<u64>()));
        let written = (|| {
            let mut file = File::create(&tmp)?;
            for part in parts {
                file.write_all(part)?;
            }
            if self.fsync {
                file.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(operation, &tmp, e));
        }
        fs::rename(&tmp, target).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error(operation, target, e)
        })
    }

    fn sync_dir(&self, operation: Operation, dir: &Path) -> Result<()> {
        if self.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(operation, dir, e))?;
        }
        Ok(())
    }

    fn remove(&self, operation: Operation, path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(operation, path, e)),
        }
    }

    /// Deletes temporary files left by a crashed writer (exclusive lock held: nobody else writes
    /// temporary files now).
    fn clean_tmp(&self, operation: Operation) -> Result<()> {
        let tmp = self.tmp_dir();
        let listing = match fs::read_dir(&tmp) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(operation, &tmp, e)),
        };
        for item in listing {
            let item = item.map_err(|e| io_error(operation, &tmp, e))?;
            self.remove(operation, &item.path())?;
        }
        Ok(())
    }

    // -- entries

    /// The entry of `key`, if present.
    fn entry(&self, operation: Operation, key: &str) -> Result<Option<StoredEntry>> {
        let path = self.entry_path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(operation, &path, e)),
        };
        let entry = self.parse_entry(operation, &path, bytes)?;
        if entry.key != key {
            // Only possible for hashed names: a SHA-256 collision, or a file copied by hand.
            return Err(corrupt(
                operation,
                &path,
                format_args!("holds key {:?}, expected key {key:?}", entry.key),
            ));
        }
        Ok(Some(entry))
    }

    fn parse_entry(
        &self,
        operation: Operation,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<StoredEntry> {
        let parsed = (|| {
            let rest = bytes.strip_prefix(ENTRY_MAGIC)?;
            let (revision, rest) = line(rest)?;
            let revision: u64 = std::str::from_utf8(revision).ok()?.parse().ok()?;
            let (key, rest) = line(rest)?;
            let key = unhex_key(key)?;
            let header = bytes.len() - rest.len();
            Some((revision, key, header))
        })();
        let Some((revision, key, header)) = parsed else {
            return Err(corrupt(operation, path, "not an entry file"));
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if entry_name(&key) != name {
            return Err(corrupt(
                operation,
                path,
                format_args!("holds key {key:?}, which belongs in {}", entry_name(&key)),
            ));
        }
        let value = Bytes::from(bytes).slice(header..);
        Ok(StoredEntry {
            key,
            value,
            revision: Revision(revision),
            expires_at: None,
        })
    }

    /// Every entry (the caller holds a lock).
    fn all_entries(&self, operation: Operation) -> Result<Vec<StoredEntry>> {
        let dir = self.entries_dir();
        let listing = match fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(operation, &dir, e)),
        };
        let mut entries = Vec::new();
        for item in listing {
            let item = item.map_err(|e| io_error(operation, &dir, e))?;
            let name = item.file_name();
            // Skip anything that is not ours (an editor's backup file, say).
            if !name.to_str().is_some_and(is_entry_name) {
                continue;
            }
            let path = item.path();
            let bytes = fs::read(&path).map_err(|e| io_error(operation, &path, e))?;
            entries.push(self.parse_entry(operation, &path, bytes)?);
        }
        Ok(entries)
    }

    // -- deltas

    fn changes(&self, head: Head, since: Version) -> Result<Changes> {
        let operation = Operation::Changes;
        if since.epoch() != head.epoch
            || since.counter() < head.oldest
            || since.counter() > head.counter
        {
            return Ok(Changes::TooOld);
        }
        // The keys written since `since`: O(revisions since), not O(keys).
        // The logs must chain the stamps from `since` to the current record: a log whose parent
        // is not the stamp before it was written on another history (the directory was put back
        // to an older copy and written again), and `since` names a state that is gone.
        let mut stamp = since.stamp();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for counter in since.counter() + 1..=head.counter {
            // Trimmed (or lost in a crash before the version record was raised): too old.
            let Some(log) = self.read_log(operation, counter)? else {
                return Ok(Changes::TooOld);
            };
            if log.parent != stamp {
                return Ok(Changes::TooOld);
            }
            stamp = log.stamp;
            touched.extend(log.keys);
        }
        if stamp != head.stamp {
            return Ok(Changes::TooOld);
        }
        let mut delta = Delta {
            version: head.version(),
            upserts: Vec::new(),
            removals: Vec::new(),
            unreadable: Vec::new(),
        };
        for key in touched {
            match self.entry(operation, &key)? {
                Some(entry) => delta.upserts.push(entry),
                None => delta.removals.push(key),
            }
        }
        Ok(Changes::Delta(delta))
    }

    /// The log of revision `counter`; `None` if it was trimmed.
    fn read_log(&self, operation: Operation, counter: u64) -> Result<Option<LogRecord>> {
        let path = self.log_path(counter);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(operation, &path, e)),
        };
        let parsed = (|| {
            let (first, rest) = line(&bytes)?;
            let (stamp, parent) = std::str::from_utf8(first).ok()?.split_once(' ')?;
            let keys = rest
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(unhex_key)
                .collect::<Option<Vec<String>>>()?;
            Some(LogRecord {
                stamp: u64::from_str_radix(stamp, 16).ok()?,
                parent: u64::from_str_radix(parent, 16).ok()?,
                keys,
            })
        })();
        parsed
            .map(Some)
            .ok_or_else(|| corrupt(operation, &path, "not a log file"))
    }

    // -- the journal

    fn write_journal(&self, operation: Operation, journal: &Journal) -> Result<()> {
        let head = &journal.head;
        let mut header = Vec::with_capacity(JOURNAL_MAGIC.len() + 44);
        header.extend_from_slice(JOURNAL_MAGIC);
        for field in [
            head.epoch,
            head.counter,
            head.stamp,
            head.parent,
            head.oldest,
        ] {
            header.extend_from_slice(&field.to_le_bytes());
        }
        let count = u32::try_from(journal.changes.len()).map_err(|_| {
            Error::backend(BACKEND, operation, "more than 4 billion keys in one write")
        })?;
        header.extend_from_slice(&count.to_le_bytes());
        // Per change: key length (u64), key, tag (1 = value follows), value length (u64), value.
        let mut parts: Vec<Vec<u8>> = vec![header];
        let mut values: Vec<&[u8]> = Vec::new();
        for (key, value) in &journal.changes {
            let mut part = Vec::with_capacity(key.len() + 17);
            part.extend_from_slice(&(key.len() as u64).to_le_bytes());
            part.extend_from_slice(key.as_bytes());
            match value {
                Some(value) => {
                    part.push(1);
                    part.extend_from_slice(&(value.len() as u64).to_le_bytes());
                }
                None => part.push(0),
            }
            parts.push(part);
            values.push(value.as_deref().unwrap_or_default());
        }
        let mut slices: Vec<&[u8]> = Vec::with_capacity(parts.len() * 2);
        slices.push(&parts[0]);
        for (part, value) in parts[1..].iter().zip(&values) {
            slices.push(part);
            slices.push(value);
        }
        self.replace(operation, &self.journal_path(), &slices)?;
        self.sync_dir(operation, &self.path)
    }

    fn read_journal(&self, operation: Operation) -> Result<Option<Journal>> {
        let path = self.journal_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(operation, &path, e)),
        };
        let parsed = (|| {
            let mut at = JOURNAL_MAGIC.len();
            if !bytes.starts_with(JOURNAL_MAGIC) {
                return None;
            }
            let mut take = |n: usize| {
                let end = at.checked_add(n).filter(|&end| end <= bytes.len())?;
                let slice = bytes.slice(at..end);
                at = end;
                Some(slice)
            };
            let u64_of = |b: Bytes| Some(u64::from_le_bytes(b[..].try_into().ok()?));
            let head = Head {
                epoch: u64_of(take(8)?)?,
                counter: u64_of(take(8)?)?,
                stamp: u64_of(take(8)?)?,
                parent: u64_of(take(8)?)?,
                oldest: u64_of(take(8)?)?,
            };
            let count = u32::from_le_bytes(take(4)?[..].try_into().ok()?);
            let mut changes = Vec::new();
            for _ in 0..count {
                let key_len = usize::try_from(u64_of(take(8)?)?).ok()?;
                let key = String::from_utf8(take(key_len)?.to_vec()).ok()?;
                let value = match take(1)?[0] {
                    0 => None,
                    1 => {
                        let len = usize::try_from(u64_of(take(8)?)?).ok()?;
                        Some(take(len)?)
                    }
                    _ => return None,
                };
                changes.push((key, value));
            }
            (at == bytes.len()).then_some(Journal { head, changes })
        })();
        match parsed {
            Some(journal) => Ok(Some(journal)),
            None => Err(corrupt(
                operation,
                &path,
                "the write-ahead journal cannot be parsed; no write can proceed until it is \
                 removed by hand (the write it records is then lost)",
            )),
        }
    }

    /// Completes a write that crashed after its journal was committed (exclusive lock held), and
    /// returns the version record after it.
    fn recover(&self, operation: Operation, head: Head) -> Result<Head> {
        let Some(journal) = self.read_journal(operation)? else {
            return Ok(head);
        };
        let (written, current) = (journal.head.version(), head.version());
        if written == current {
            // Applied already: the crash came after the version record was replaced.
            self.remove(operation, &self.journal_path())?;
            return Ok(head);
        }
        tracing::warn!(
            dir = %self.path.display(),
            counter = journal.head.counter,
            "completing a write interrupted by a crash"
        );
        if written.follows(&current) {
            self.apply(operation, head, &journal)?;
            return Ok(journal.head);
        }
        // The version record was lost or damaged since, and repaired: the write lands on it
        // as a new write.
        let mut tx = Tx {
            dir: self,
            operation,
            head,
        };
        tx.commit(journal.changes)?;
        Ok(tx.head)
    }

    /// Applies a committed journal on top of version record `head`: entries, log, version
    /// record, then removes the journal. Every step is idempotent, so a crash anywhere here is
    /// repaired by running it again.
    fn apply(&self, operation: Operation, head: Head, journal: &Journal) -> Result<()> {
        let entries_dir = self.entries_dir();
        let log_dir = self.log_dir();
        for dir in [&entries_dir, &log_dir] {
            fs::create_dir_all(dir).map_err(|e| io_error(operation, dir, e))?;
        }
        let new = journal.head;
        let mut log = format!("{:016x} {:016x}\n", new.stamp, new.parent);
        for (key, value) in &journal.changes {
            let path = self.entry_path(key);
            match value {
                Some(value) => {
                    let header = format!("{}\n{}\n", new.counter, hex(key.as_bytes()));
                    self.replace(operation, &path, &[ENTRY_MAGIC, header.as_bytes(), value])?;
                }
                None => self.remove(operation, &path)?,
            }
            log.push_str(&hex(key.as_bytes()));
            log.push('\n');
        }
        self.replace(operation, &self.log_path(new.counter), &[log.as_bytes()])?;
        // Trim the log before raising `oldest`: a missing log file reads as "too old", so a crash
        // in between is harmless.
        for counter in head.oldest + 1..=new.oldest {
            self.remove(operation, &self.log_path(counter))?;
        }
        self.sync_dir(operation, &entries_dir)?;
        self.sync_dir(operation, &log_dir)?;
        self.write_head(operation, new)?;
        self.remove(operation, &self.journal_path())
    }
}

/// A write in progress: the exclusive lock is held and `head` is the current version record.
struct Tx<'a> {
    dir: &'a Dir,
    operation: Operation,
    head: Head,
}

impl Tx<'_> {
    fn entry(&self, key: &str) -> Result<Option<StoredEntry>> {
        self.dir.entry(self.operation, key)
    }

    fn contains(&self, key: &str) -> Result<bool> {
        let path = self.dir.entry_path(key);
        path.try_exists()
            .map_err(|e| io_error(self.operation, &path, e))
    }

    /// Commits `changes` as one write with one version bump; returns the new token.
    fn commit(&mut self, changes: Vec<(String, Option<Bytes>)>) -> Result<Version> {
        let journal = Journal {
            head: self.head.next(self.dir.history),
            changes,
        };
        self.dir.write_journal(self.operation, &journal)?;
        self.dir.apply(self.operation, self.head, &journal)?;
        self.head = journal.head;
        Ok(self.head.version())
    }

    /// Drops the whole change log: only the current token can be served a delta.
    fn forget_history(&mut self) -> Result<()> {
        for counter in self.head.oldest + 1..=self.head.counter {
            self.dir
                .remove(self.operation, &self.dir.log_path(counter))?;
        }
        self.head.oldest = self.head.counter;
        self.dir.write_head(self.operation, self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_safe_file_names() {
        assert_eq!(entry_name(""), "k");
        assert_eq!(entry_name("/"), "k2f");
        assert_eq!(entry_name(".."), "k2e2e");
        let long = "é".repeat(512);
        assert_eq!(entry_name(&long).len(), 65);
        assert!(entry_name(&"x".repeat(MAX_PLAIN_KEY)).len() <= 255);
        assert_ne!(entry_name("K"), entry_name("k"));
    }

    #[test]
    fn only_entry_names_are_read_as_entries() {
        assert!(is_entry_name(&entry_name("")));
        assert!(is_entry_name(&entry_name("é/..")));
        assert!(is_entry_name(&entry_name(&"x".repeat(1024))));
        assert!(!is_entry_name("hello.txt"));
        assert!(!is_entry_name("k2f~"));
        assert!(!is_entry_name("kabc"));
    }

    #[tokio::test]
    async fn deltas_need_the_retained_history() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::new(tmp.path()).with_history(2);
        let backend = store.backend("ns", "d").unwrap();
        let mut versions = Vec::new();
        for i in 0..5 {
            versions.push(
                backend
                    .persist(&format!("k{i}"), Bytes::new())
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(
            backend.changes_since(versions[1]).await.unwrap(),
            Changes::TooOld
        );
        let Changes::Delta(delta) = backend.changes_since(versions[2]).await.unwrap() else {
            panic!("a token within the history was answered TooOld");
        };
        let keys: Vec<&str> = delta.upserts.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, vec!["k3", "k4"]);
        let logs = fs::read_dir(backend.path().join("log")).unwrap().count();
        assert_eq!(logs, 2, "the log was trimmed to the history");
    }

    #[test]
    fn hex_round_trips() {
        let key = "a/b ✓ 🎉";
        assert_eq!(
            unhex_key(hex(key.as_bytes()).as_bytes()).as_deref(),
            Some(key)
        );
        assert_eq!(unhex_key(b"zz"), None);
        assert_eq!(unhex_key(b"abc"), None);
    }

    #[tokio::test]
    async fn corrupt_files_are_typed_errors_naming_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = FileStore::new(tmp.path()).backend("ns", "d").unwrap();
        backend
            .persist("k", Bytes::from_static(b"v"))
            .await
            .unwrap();
        let path = backend.path().join("entries").join(entry_name("k"));
        fs::write(&path, b"garbage").unwrap();
        let error = backend.durables().await.unwrap_err();
        assert!(matches!(error, Error::Backend { .. }), "{error:?}");
        assert!(error.to_string().contains("files"), "{error}");

        // A valid entry file holding another key, under this key's name.
        let mut forged = ENTRY_MAGIC.to_vec();
        forged.extend_from_slice(format!("1\n{}\nv", hex(b"other")).as_bytes());
        fs::write(&path, forged).unwrap();
        let error = backend.increment("k", 1).await.unwrap_err();
        assert!(error.to_string().contains("\"other\""), "{error}");
    }

    #[test]
    fn version_records_round_trip_and_damage_is_named() {
        let head = Head::fresh(41).next(1000);
        assert_eq!(Head::parse(&head.to_text()), Ok(head));
        let damaged = |from: &str, to: &str| {
            let text = head.to_text().replace(from, to);
            Head::parse(&text).expect_err(&text)
        };
        let counter = format!("counter {}", head.counter);
        let reason = damaged(&counter, "counter garbage");
        assert!(
            reason.contains("counter") && reason.contains("garbage"),
            "{reason}"
        );
        assert!(damaged(&counter, "counter -5").contains("counter"));
        assert!(damaged(&counter, "counter 9007199254740992").contains("2^53"));
        assert!(damaged(&(counter.clone() + "\n"), "").contains("`counter` is missing"));
        assert!(damaged("epoch ", "epoch x").contains("epoch"));
        assert!(damaged("durable-files 2", "durable-files 1").contains("first line"));
    }

    #[tokio::test]
    async fn a_damaged_version_file_starts_a_fresh_epoch_above_every_revision() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = FileStore::new(tmp.path()).backend("ns", "d").unwrap();
        backend.persist("a", Bytes::new()).await.unwrap();
        let before = backend.persist("b", Bytes::new()).await.unwrap();
        backend.depersist("b").await.unwrap();
        fs::write(backend.path().join("version"), "nonsense").unwrap();

        let after = backend.last_updated().await.unwrap();
        assert_ne!(after.epoch(), before.epoch());
        assert_eq!(
            after.counter(),
            3,
            "the counter starts at the highest stored revision"
        );
        let v = backend.persist("c", Bytes::new()).await.unwrap();
        assert!(v.follows(&after));
        let load = backend.durables().await.unwrap();
        let keys: Vec<&str> = load.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(load.version, v);
        assert_eq!(keys.len(), 2, "the entries stayed: {keys:?}");
    }

    #[tokio::test]
    async fn a_crashed_write_is_completed_by_the_next_process() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = FileStore::new(tmp.path()).backend("ns", "d").unwrap();
        let v1 = backend
            .persist("a", Bytes::from_static(b"1"))
            .await
            .unwrap();
        // Simulate a writer killed right after committing its journal.
        let dir = backend.dir.clone();
        let Record::Valid(head) = dir.read_record(Operation::Batch).unwrap() else {
            panic!("no version record");
        };
        let journal = Journal {
            head: head.next(1000),
            changes: vec![
                ("a".into(), None),
                ("b".into(), Some(Bytes::from_static(b"2"))),
            ],
        };
        dir.write_journal(Operation::Batch, &journal).unwrap();
        assert_eq!(backend.last_updated().await.unwrap(), v1, "not yet applied");
        let load = backend.durables().await.unwrap();
        assert_eq!(load.version, journal.head.version());
        assert!(load.version.follows(&v1));
        let keys: Vec<&str> = load.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, vec!["b"]);
        assert!(!dir.journal_path().exists());
        // A journal that was already applied is just removed.
        dir.write_journal(Operation::Batch, &journal).unwrap();
        let v3 = backend
            .persist("c", Bytes::from_static(b"3"))
            .await
            .unwrap();
        assert_eq!(v3.counter(), v1.counter() + 2);
        assert!(!dir.journal_path().exists());

        // A crash, and then the version record is lost: the committed write still lands, as a
        // new write on the repaired record.
        let journal = Journal {
            head: Head::fresh(0).next(1000),
            changes: vec![("d".into(), Some(Bytes::from_static(b"4")))],
        };
        dir.write_journal(Operation::Persist, &journal).unwrap();
        fs::remove_file(dir.version_path()).unwrap();
        let load = backend.durables().await.unwrap();
        assert_ne!(load.version.epoch(), v3.epoch());
        let d = load
            .entries
            .iter()
            .find(|e| e.key == "d")
            .expect("the write landed");
        assert_eq!(d.revision, load.version.revision());
        assert_eq!(load.version.counter(), v3.counter() + 1);
    }
}
