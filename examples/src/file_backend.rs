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
//! (`delta`, `insert_if_absent`, `compare_and_swap`, `pop`, `increment`, `batch`, `clear`): under
//! an exclusive lock they are all easy to make atomic. Expiry is left out because a directory has
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
//! | `version` | `durable-files 1 <epoch hex> <counter> <oldest>`: the token, and the oldest token a delta can be served from |
//! | `entries/k<hex of key>` | one file per key: a header (revision, key) and the value's bytes |
//! | `entries/h<sha-256 of key>` | the same, for keys longer than 120 bytes (file names are limited to 255 bytes); the real key is inside |
//! | `log/<revision>` | the keys written by that revision, one per line (hex), for deltas; the last [`FileStore::with_history`] revisions are kept |
//! | `journal` | only during a write (or after a crash in one): the write-ahead record of the write in progress |
//! | `tmp/` | temporary files, renamed into place |
//!
//! Any string is a key: file names are `k` followed by the key's UTF-8 bytes in hex (so the empty
//! key, `/`, `..` and unicode are all safe), or a hash for long keys.
//!
//! # Writes, locks and crashes
//!
//! Every write takes the exclusive lock, reads the current entries it needs, and then:
//!
//! 1. writes the whole operation (every key's new value or deletion, and the new token) to
//!    `journal` (temporary file, `fsync`, rename, `fsync` of the directory). **This is the commit
//!    point.**
//! 2. applies it: each entry file is replaced by rename (or deleted), `log/<revision>` is written;
//! 3. replaces `version` by rename: readers now see the new token;
//! 4. deletes `journal` and releases the lock.
//!
//! Readers ([`durables`](Backend::durables), [`changes_since`](Backend::changes_since)) take the
//! shared lock, so they never see half a write from a live writer. If a writer crashes (process
//! killed, power lost) after step 1, the next process to take the lock finds `journal` and
//! completes the write (roll forward: every step is idempotent); if it crashed before step 1
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
//! # Errors
//!
//! File-system failures (missing permissions, a path that is not a directory, a full disk) are
//! [`Error::Unavailable`] naming the path and the operation: the store cannot be used right now.
//! A lock that cannot be had within [`FileStore::with_lock_timeout`] is [`Error::Timeout`].
//! A file that cannot be parsed is [`Error::Backend`] naming the file (and the key, for entries).
//! No input makes this backend panic.

use std::collections::BTreeMap;
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
const JOURNAL_MAGIC: &[u8] = b"durable-files-journal 1\n";
/// First word of the version file.
const VERSION_MAGIC: &str = "durable-files";

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
                    entries: dir.all_entries(Operation::Load)?,
                })
            })
        })
        .await
    }

    async fn last_updated(&self) -> Result<Version> {
        self.run(Operation::Version, |dir| {
            // No lock: `version` is only ever replaced by rename, so this sees a whole token.
            match dir.read_head(Operation::Version)? {
                Some(head) => Ok(head.version()),
                // A new or wiped dictionary: create its version record under the lock.
                None => dir.write(Operation::Version, |tx| Ok(tx.head.version())),
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

/// The contents of the `version` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    epoch: u64,
    counter: u64,
    /// The oldest counter a delta can start from: log files exist for `oldest + 1 ..= counter`.
    oldest: u64,
}

impl Head {
    fn version(&self) -> Version {
        Version::new(self.epoch, self.counter)
    }
}

/// One write, as recorded in the journal before it is applied.
#[derive(Debug)]
struct Journal {
    epoch: u64,
    /// The counter this write produces.
    counter: u64,
    /// The `oldest` of the version record after this write (the log is trimmed to it).
    oldest: u64,
    /// Every key's new value, or `None` for a deletion.
    changes: Vec<(String, Option<Bytes>)>,
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
                if !crashed && let Some(head) = self.read_head(operation)? {
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

    /// Runs `write` under the exclusive lock, after completing any crashed write and creating the
    /// version record if needed.
    fn write<T>(
        &self,
        operation: Operation,
        write: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.lock(operation, true)?;
        self.clean_tmp(operation)?;
        self.recover(operation)?;
        let head = self.ensure_head(operation)?;
        write(&mut Tx {
            dir: self,
            operation,
            head,
        })
    }

    /// Reads the version record; `None` if there is none (a new or wiped dictionary).
    fn read_head(&self, operation: Operation) -> Result<Option<Head>> {
        let path = self.version_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(corrupt(operation, &path, "not UTF-8 text"));
            }
            Err(e) => return Err(io_error(operation, &path, e)),
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let parsed = match fields.as_slice() {
            [VERSION_MAGIC, "1", epoch, counter, oldest] => (|| {
                Some(Head {
                    epoch: u64::from_str_radix(epoch, 16).ok()?,
                    counter: counter.parse().ok()?,
                    oldest: oldest.parse().ok()?,
                })
            })(),
            _ => None,
        };
        match parsed {
            Some(head) if head.oldest <= head.counter => Ok(Some(head)),
            _ => Err(corrupt(
                operation,
                &path,
                format_args!("expected `{VERSION_MAGIC} 1 <epoch> <counter> <oldest>`"),
            )),
        }
    }

    fn write_head(&self, operation: Operation, head: Head) -> Result<()> {
        let text = format!(
            "{VERSION_MAGIC} 1 {:016x} {} {}\n",
            head.epoch, head.counter, head.oldest
        );
        self.replace(operation, &self.version_path(), &[text.as_bytes()])?;
        self.sync_dir(operation, &self.path)
    }

    /// The version record, created with a fresh random epoch if missing (exclusive lock held).
    fn ensure_head(&self, operation: Operation) -> Result<Head> {
        if let Some(head) = self.read_head(operation)? {
            return Ok(head);
        }
        // A new dictionary, or one whose version record was deleted: a new epoch, so no token
        // of the old one is ever repeated. Log files of the old epoch must not serve deltas.
        let log = self.log_dir();
        match fs::remove_dir_all(&log) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(operation, &log, e)),
        }
        let head = Head {
            epoch: rand::random(),
            counter: 0,
            oldest: 0,
        };
        self.write_head(operation, head)?;
        Ok(head)
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
        // The last revision that wrote each key since `since`: O(revisions since), not O(keys).
        let mut touched: BTreeMap<String, u64> = BTreeMap::new();
        for counter in since.counter() + 1..=head.counter {
            let path = self.log_path(counter);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                // Trimmed (or lost in a crash before the version record was raised): too old.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Changes::TooOld),
                Err(e) => return Err(io_error(operation, &path, e)),
            };
            for key in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let key = unhex_key(key).ok_or_else(|| corrupt(operation, &path, "bad key"))?;
                touched.insert(key, counter);
            }
        }
        let mut delta = Delta {
            version: head.version(),
            upserts: Vec::new(),
            removals: Vec::new(),
        };
        for (key, counter) in touched {
            match self.entry(operation, &key)? {
                Some(entry) => delta.upserts.push(entry),
                None => delta.removals.push((key, Revision(counter))),
            }
        }
        Ok(Changes::Delta(delta))
    }

    // -- the journal

    fn write_journal(&self, operation: Operation, journal: &Journal) -> Result<()> {
        let mut header = Vec::with_capacity(JOURNAL_MAGIC.len() + 28);
        header.extend_from_slice(JOURNAL_MAGIC);
        header.extend_from_slice(&journal.epoch.to_le_bytes());
        header.extend_from_slice(&journal.counter.to_le_bytes());
        header.extend_from_slice(&journal.oldest.to_le_bytes());
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
            let epoch = u64_of(take(8)?)?;
            let counter = u64_of(take(8)?)?;
            let oldest = u64_of(take(8)?)?;
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
            (at == bytes.len()).then_some(Journal {
                epoch,
                counter,
                oldest,
                changes,
            })
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

    /// Completes a write that crashed after its journal was committed (exclusive lock held).
    fn recover(&self, operation: Operation) -> Result<()> {
        let Some(journal) = self.read_journal(operation)? else {
            return Ok(());
        };
        match self.read_head(operation)? {
            Some(head) if head.epoch == journal.epoch && head.counter + 1 == journal.counter => {
                tracing::warn!(
                    dir = %self.path.display(),
                    counter = journal.counter,
                    "completing a write interrupted by a crash"
                );
                self.apply(operation, head, &journal)
            }
            // Already applied (the crash came after the version record was replaced), or the
            // dictionary was re-created since: nothing to do.
            _ => self.remove(operation, &self.journal_path()),
        }
    }

    /// Applies a committed journal: entries, log, version record, then removes the journal.
    /// Every step is idempotent, so a crash anywhere here is repaired by running it again.
    fn apply(&self, operation: Operation, head: Head, journal: &Journal) -> Result<()> {
        let entries = self.entries_dir();
        let log = self.log_dir();
        for dir in [&entries, &log] {
            fs::create_dir_all(dir).map_err(|e| io_error(operation, dir, e))?;
        }
        let mut keys = String::new();
        for (key, value) in &journal.changes {
            let path = self.entry_path(key);
            match value {
                Some(value) => {
                    let header = format!("{}\n{}\n", journal.counter, hex(key.as_bytes()));
                    self.replace(operation, &path, &[ENTRY_MAGIC, header.as_bytes(), value])?;
                }
                None => self.remove(operation, &path)?,
            }
            keys.push_str(&hex(key.as_bytes()));
            keys.push('\n');
        }
        self.replace(
            operation,
            &self.log_path(journal.counter),
            &[keys.as_bytes()],
        )?;
        // Trim the log before raising `oldest`: a missing log file reads as "too old", so a crash
        // in between is harmless.
        for counter in head.oldest + 1..=journal.oldest {
            self.remove(operation, &self.log_path(counter))?;
        }
        self.sync_dir(operation, &entries)?;
        self.sync_dir(operation, &log)?;
        self.write_head(
            operation,
            Head {
                epoch: journal.epoch,
                counter: journal.counter,
                oldest: journal.oldest,
            },
        )?;
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
        let counter = self.head.counter + 1;
        let journal = Journal {
            epoch: self.head.epoch,
            counter,
            oldest: self
                .head
                .oldest
                .max(counter.saturating_sub(self.dir.history)),
            changes,
        };
        self.dir.write_journal(self.operation, &journal)?;
        self.dir.apply(self.operation, self.head, &journal)?;
        self.head = Head {
            epoch: journal.epoch,
            counter,
            oldest: journal.oldest,
        };
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

        fs::write(backend.path().join("version"), "nonsense").unwrap();
        let error = backend.last_updated().await.unwrap_err();
        assert!(matches!(error, Error::Backend { .. }), "{error:?}");
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
        let journal = Journal {
            epoch: v1.epoch(),
            counter: v1.counter() + 1,
            oldest: 0,
            changes: vec![
                ("a".into(), None),
                ("b".into(), Some(Bytes::from_static(b"2"))),
            ],
        };
        dir.write_journal(Operation::Batch, &journal).unwrap();
        assert_eq!(backend.last_updated().await.unwrap(), v1, "not yet applied");
        let load = backend.durables().await.unwrap();
        assert_eq!(load.version, Version::new(v1.epoch(), v1.counter() + 1));
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
    }
}
