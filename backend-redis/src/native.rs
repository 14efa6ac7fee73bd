//! The native layout: [`RedisBackend`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use durable_core::{
    Backend, BatchOp, Capabilities, Changes, Delta, Error, Hints, IfAbsent, Load, Name, Operation,
    Result, Revision, StoreTime, StoredEntry, Swap, Swept, Unreadable, Version,
};
use redis::{Script, Value};

use crate::conn::{bad_reply, map_err};
use crate::scripts;
use crate::store::RedisStore;
use crate::value::{Reply, shown, whole_score};

/// How often a full load starts over when the dictionary changed too much while it ran.
const LOAD_ATTEMPTS: u32 = 5;

/// The longest time to live stored as given (2^52 ms, about 142 000 years); longer ones are
/// shortened to it. Expiries are whole milliseconds in Lua numbers and sorted set scores
/// (doubles), which are exact below 2^53.
const MAX_TTL_MILLIS: u64 = 1 << 52;

/// The keys of one dictionary, all sharing the hash tag `{namespace:dictionary}`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) version: String,
    pub(crate) entries: String,
    pub(crate) log: String,
    pub(crate) tombstones: String,
    pub(crate) expiries: String,
    pub(crate) stamps: String,
    pub(crate) channel: String,
}

impl Keys {
    pub(crate) fn new(namespace: &Name, dictionary: &Name) -> Self {
        let prefix = format!("durable:{{{namespace}:{dictionary}}}:");
        Keys {
            version: format!("{prefix}version"),
            entries: format!("{prefix}entries"),
            log: format!("{prefix}log"),
            tombstones: format!("{prefix}tombstones"),
            expiries: format!("{prefix}expiries"),
            stamps: format!("{prefix}stamps"),
            channel: format!("{prefix}hints"),
        }
    }
}

/// One dictionary in the native layout of a [`RedisStore`]; every capability of the
/// [`Backend`] trait.
///
/// Created by [`RedisStore::backend`]. See the crate docs for the key layout.
#[derive(Clone)]
pub struct RedisBackend {
    store: RedisStore,
    keys: Keys,
    namespace: Name,
    dictionary: Name,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("namespace", &self.namespace)
            .field("dictionary", &self.dictionary)
            .field("store", &self.store)
            .finish()
    }
}

/// The outcome of a write script.
enum Written {
    /// Nothing changed; the rest of the reply.
    Unchanged(Reply),
    /// The new token; the rest of the reply.
    Changed(Version, Reply),
    /// `increment` of a non-integer.
    NotAnInteger,
}

impl RedisBackend {
    pub(crate) fn new(store: RedisStore, namespace: &Name, dictionary: &Name) -> Self {
        RedisBackend {
            keys: Keys::new(namespace, dictionary),
            store,
            namespace: namespace.clone(),
            dictionary: dictionary.clone(),
        }
    }

    /// The Redis key of the version record (a hash with fields `epoch`, `counter`, `stamp`,
    /// `parent`, `oldest`).
    pub fn version_key(&self) -> &str {
        &self.keys.version
    }

    /// The Redis key of the entries hash (field = key, value = encoded value).
    pub fn entries_key(&self) -> &str {
        &self.keys.entries
    }

    /// The pub/sub channel hints are published on (sharded pub/sub on a cluster).
    pub fn hint_channel(&self) -> &str {
        &self.keys.channel
    }

    /// Every Redis key of this dictionary: version, entries, change log, tombstones, expiries
    /// and stamp history (the hint channel is not a key).
    pub fn redis_keys(&self) -> [&str; 6] {
        [
            &self.keys.version,
            &self.keys.entries,
            &self.keys.log,
            &self.keys.tombstones,
            &self.keys.expiries,
            &self.keys.stamps,
        ]
    }

    /// Forgets every tombstone now: afterwards only the current token can be served a delta
    /// (older ones get a full reload). Tombstones are otherwise trimmed by writes once older
    /// than [`RedisOptions::with_tombstone_retention`](crate::RedisOptions::with_tombstone_retention).
    pub async fn forget_history(&self) -> Result<Version> {
        let value = self
            .run(&scripts::FORGET_HISTORY, Operation::Changes, |_| {})
            .await?;
        let mut reply = self.status(value, Operation::Changes)?.1;
        reply.version()
    }

    /// Invokes a native script with the common keys and arguments, then `extra` arguments.
    async fn run(
        &self,
        script: &Script,
        operation: Operation,
        extra: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<Value> {
        let options = &self.store.inner.options;
        let mut conn = self.store.conn();
        let mut invocation = script.prepare_invoke();
        // Fresh stamps: one for a version record the script may have to create, one for the
        // write; as decimal text for the record and as bytes for the stamp history.
        let (created, written) = (Version::new_stamp(), Version::new_stamp());
        let mut stamps = [0u8; 16];
        stamps[..8].copy_from_slice(&created.to_be_bytes());
        stamps[8..].copy_from_slice(&written.to_be_bytes());
        invocation
            .key(&self.keys.version)
            .key(&self.keys.entries)
            .key(&self.keys.log)
            .key(&self.keys.tombstones)
            .key(&self.keys.expiries)
            .key(&self.keys.stamps)
            .arg(rand::random::<u64>().to_string())
            .arg(created.to_string())
            .arg(written.to_string())
            .arg(&stamps[..])
            .arg(u64::try_from(options.tombstone_retention().as_millis()).unwrap_or(u64::MAX))
            .arg(conn.publish_command())
            .arg(&self.keys.channel);
        extra(&mut invocation);
        invocation
            .invoke_async::<Value>(&mut conn)
            .await
            .map_err(|e| map_err(operation, e))
    }

    async fn write(
        &self,
        script: &Script,
        operation: Operation,
        extra: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<Written> {
        let value = self.run(script, operation, extra).await?;
        match self.status(value, operation)? {
            (0, reply) => Ok(Written::Unchanged(reply)),
            (1, mut reply) => {
                let version = reply.version()?;
                Ok(Written::Changed(version, reply))
            }
            (-1, _) => Ok(Written::NotAnInteger),
            (other, _) => Err(bad_reply(operation, format!("unknown status {other}"))),
        }
    }

    /// The status a script's reply starts with and the rest of the reply; a damaged version
    /// record (`{-2, field, value}`) is an [`Error::Damaged`].
    fn status(&self, value: Value, operation: Operation) -> Result<(i64, Reply)> {
        let mut reply = Reply::new(value, operation)?;
        let status = reply.int()?;
        if status == -2 {
            let field = reply.string()?;
            let value = reply.opt_bytes()?;
            return Err(self.damaged(operation, &field, value.as_deref()));
        }
        Ok((status, reply))
    }

    /// The error for a version record whose `field` holds `value` (`None`: missing).
    fn damaged(&self, operation: Operation, field: &str, value: Option<&[u8]>) -> Error {
        let expected = match field {
            "epoch" => "a decimal 64-bit integer without leading zeros",
            "parent" => "a decimal 64-bit integer",
            "stamp" => "a non-zero decimal 64-bit integer without leading zeros",
            _ => "a decimal integer in 0..2^53",
        };
        let found = match value {
            None => "missing".to_owned(),
            Some(v) => {
                let text = String::from_utf8_lossy(&v[..v.len().min(64)]);
                format!("{text:?}")
            }
        };
        Error::Damaged {
            backend: "redis".into(),
            operation,
            reason: format!(
                "dictionary {}/{}: field `{field}` of {} is {found}, expected {expected}",
                self.namespace, self.dictionary, self.keys.version
            ),
        }
    }

    /// The current entry of `key` sent by a write script that changed nothing, as (value,
    /// revision, expiry or nil); a row that cannot be read fails the operation, naming the key.
    fn entry(&self, key: &str, reply: &mut Reply, operation: Operation) -> Result<StoredEntry> {
        let value = reply.bytes()?;
        let revision = reply.bytes()?;
        let expiry = reply.opt_bytes()?;
        match self.row(
            Ok(key.to_owned()),
            Some(value),
            &revision,
            expiry.as_deref(),
        ) {
            Row::Entry(entry) => Ok(entry),
            Row::Unreadable(_, reason) => Err(Error::backend(
                "redis",
                operation,
                format!("the stored row of key {key:?} cannot be read: {reason}"),
            )),
            Row::Removed(..) | Row::Gone(_) => Err(bad_reply(operation, "unexpected nil")),
        }
    }

    /// A row as stored: its key (`Err`: not UTF-8), value (`None`: deleted), change-log score
    /// and expiry score, checked. Hand-written data (a key that is not UTF-8, a score that is no
    /// revision or no time) is [`Row::Unreadable`], never an error of the whole read.
    fn row(
        &self,
        key: std::result::Result<String, Vec<u8>>,
        value: Option<Bytes>,
        revision: &[u8],
        expiry: Option<&[u8]>,
    ) -> Row {
        let key = match key {
            Ok(key) => key,
            Err(bytes) if value.is_none() => return Row::Gone(bytes),
            Err(bytes) => return self.not_utf8(bytes),
        };
        let checked = whole_score(revision);
        let Some(value) = value else {
            // A delete: its revision only orders it, and nothing is left to read.
            return Row::Removed(key, Revision(checked.unwrap_or(0)));
        };
        let Some(revision) = checked else {
            let reason = self.bad_score("revision", &self.keys.log, revision);
            return Row::Unreadable(key.into_bytes(), reason);
        };
        let expires_at = match expiry {
            None => None,
            Some(text) => match whole_score(text) {
                Some(ms) => Some(StoreTime(ms)),
                None => {
                    let reason = self.bad_score("expiry", &self.keys.expiries, text);
                    return Row::Unreadable(key.into_bytes(), reason);
                }
            },
        };
        Row::Entry(StoredEntry {
            key,
            value,
            revision: Revision(revision),
            expires_at,
        })
    }

    /// The row of a key that is not UTF-8 (a hash field written by another program).
    fn not_utf8(&self, key: Vec<u8>) -> Row {
        let reason = format!(
            "{}: the key is not UTF-8 (field `{}` of {})",
            self.location(),
            shown(&key),
            self.keys.entries
        );
        Row::Unreadable(key, reason)
    }

    /// Why a row whose `what` (revision or expiry), its score in `set`, is `score`, is unreadable.
    fn bad_score(&self, what: &str, set: &str, score: &[u8]) -> String {
        let unit = if what == "expiry" { " (ms)" } else { "" };
        format!(
            "{}: its {what} (score in {set}) is `{}`, expected a whole number{unit} in 0..2^53",
            self.location(),
            shown(score)
        )
    }

    /// The rows of a reply sent as (key, value, revision, expiry or nil)... (the first chunk
    /// of a full load).
    fn load_rows(&self, reply: &mut Reply, into: &mut LoadMap) -> Result<()> {
        while reply.len() > 0 {
            let key = reply.key()?;
            let value = reply.bytes()?;
            let revision = reply.bytes()?;
            let expiry = reply.opt_bytes()?;
            into.apply(self.row(key, Some(value), &revision, expiry.as_deref()));
        }
        Ok(())
    }

    /// The first chunk of a full load, in one script with the token: the token, the next
    /// cursor and the entries with their revisions.
    async fn load_first_chunk(&self, into: &mut LoadMap) -> Result<(Version, String)> {
        let chunk = self.store.inner.options.load_chunk();
        let value = self
            .run(&scripts::LOAD_CHUNK, Operation::Load, |inv| {
                inv.arg("0").arg(chunk);
            })
            .await?;
        let mut reply = self.status(value, Operation::Load)?.1;
        let version = reply.version()?;
        let next = reply.string()?;
        into.entries.reserve(reply.len() / 4);
        self.load_rows(&mut reply, into)?;
        Ok((version, next))
    }

    /// The values of the remaining chunks: `HSCAN` pages from `cursor`.
    async fn scan_values(&self, cursor: String, into: &mut LoadMap) -> Result<()> {
        self.scan("HSCAN", &self.keys.entries, cursor, |items| {
            let key = match items.key()? {
                Ok(key) => key,
                Err(bytes) => {
                    items.bytes()?;
                    into.apply(self.not_utf8(bytes));
                    return Ok(());
                }
            };
            let value = items.bytes()?;
            if into.unreadable.contains_key(key.as_bytes()) {
                // Seen again (the hash was resized during the scan): still unreadable.
                return Ok(());
            }
            // A key seen twice (the hash was resized during the scan) keeps its revision.
            match into.entries.entry(key) {
                Entry::Occupied(mut e) => e.get_mut().value = value,
                Entry::Vacant(e) => {
                    e.insert(Loading {
                        value,
                        revision: None,
                        expires_at: None,
                    });
                }
            }
            Ok(())
        })
        .await
    }

    /// The expiries of the entries read by [`scan_values`](Self::scan_values): `ZSCAN` pages of
    /// the expiry index. A full `ZSCAN` returns every member that stays in the set while it
    /// runs, and an entry unchanged since the load's token keeps its expiry (only a write of the
    /// key changes it); the changes since the token repair the others.
    async fn scan_expiries(&self, into: &mut LoadMap) -> Result<()> {
        self.scan("ZSCAN", &self.keys.expiries, "0".to_owned(), |items| {
            // A key that is not UTF-8 is reported from the entries already.
            let key = items.key()?;
            let score = items.bytes()?;
            let Ok(key) = key else { return Ok(()) };
            let Some(entry) = into.entries.get_mut(&key) else {
                return Ok(());
            };
            match whole_score(&score) {
                Some(ms) => entry.expires_at = Some(StoreTime(ms)),
                None => {
                    let reason = self.bad_score("expiry", &self.keys.expiries, &score);
                    into.apply(Row::Unreadable(key.into_bytes(), reason));
                }
            }
            Ok(())
        })
        .await
    }

    /// Every page of an `HSCAN` or `ZSCAN` (`command`) of `key` from `cursor`, handing the
    /// items of each page to `each` (which reads one pair per call). Each next page is requested
    /// as soon as the previous reply arrives, so the server works on it while this task decodes
    /// the previous one.
    async fn scan(
        &self,
        command: &'static str,
        key: &str,
        cursor: String,
        mut each: impl FnMut(&mut Reply) -> Result<()>,
    ) -> Result<()> {
        let chunk = self.store.inner.options.load_chunk();
        let request = |cursor: String| {
            let mut conn = self.store.conn();
            let mut cmd = redis::cmd(command);
            cmd.arg(key).arg(cursor).arg("COUNT").arg(chunk);
            tokio::spawn(async move { cmd.query_async::<Value>(&mut conn).await })
        };
        let mut pending = Some(request(cursor));
        while let Some(task) = pending.take() {
            let page = task
                .await
                .map_err(|e| bad_reply(Operation::Load, format!("{command} task failed: {e}")))?
                .map_err(|e| map_err(Operation::Load, e))?;
            let mut page = Reply::new(page, Operation::Load)?;
            let cursor = page.string()?;
            if cursor != "0" {
                pending = Some(request(cursor));
            }
            let items = page.next_value().ok_or_else(|| {
                bad_reply(Operation::Load, format!("{command} reply is too short"))
            })?;
            let mut items = Reply::new(items, Operation::Load)?;
            while items.len() > 0 {
                each(&mut items)?;
            }
        }
        Ok(())
    }

    /// The revisions of the entries read by [`scan_values`](Self::scan_values), from a walk of
    /// the change log by rank (`ZRANGE ... WITHSCORES`, pages requested ahead): a sequential
    /// read of the sorted set, about three times cheaper for the server than `ZMSCORE` of
    /// every key. The walk stops at the first revision above `start`: later writes are
    /// repaired by the changes since `start` anyway. Log entries removed while the walk runs
    /// shift the ranks and may hide a few keys from it; those, and keys with no log entry
    /// (written into the hash by hand), are looked up with `ZMSCORE` afterwards.
    async fn read_revisions(&self, start: Version, into: &mut LoadMap) -> Result<()> {
        const PAGES_PER_REQUEST: usize = 4;
        let chunk = self.store.inner.options.load_chunk();
        let request = |first_page: usize| {
            let mut conn = self.store.conn();
            let mut pipe = redis::pipe();
            for page in first_page..first_page + PAGES_PER_REQUEST {
                pipe.cmd("ZRANGE")
                    .arg(&self.keys.log)
                    .arg(page * chunk)
                    .arg((page + 1) * chunk - 1)
                    .arg("WITHSCORES");
            }
            tokio::spawn(async move { pipe.query_async::<Vec<Value>>(&mut conn).await })
        };
        let mut next_page = 0;
        let mut pending = Some(request(next_page));
        while let Some(task) = pending.take() {
            let pages = task
                .await
                .map_err(|e| bad_reply(Operation::Load, format!("ZRANGE task failed: {e}")))?
                .map_err(|e| map_err(Operation::Load, e))?;
            next_page += PAGES_PER_REQUEST;
            pending = Some(request(next_page));
            let mut done = false;
            for page in pages {
                let mut page = Reply::new(page, Operation::Load)?;
                let mut seen = 0;
                let mut top = f64::NEG_INFINITY;
                while page.len() > 0 {
                    let (member, score) = page.member_score()?;
                    seen += 1;
                    let revision = whole_score(&score);
                    top = match revision {
                        Some(revision) => revision as f64,
                        // Scores that are no revision sort where their number does.
                        None => std::str::from_utf8(&score)
                            .ok()
                            .and_then(|s| s.parse::<f64>().ok())
                            .unwrap_or(f64::INFINITY),
                    };
                    let Ok(key) = String::from_utf8(member) else {
                        continue;
                    };
                    self.found_revision(key, revision, &score, into);
                }
                // Counters are below 2^53: exact as doubles.
                if seen < chunk || top > start.counter() as f64 {
                    done = true;
                    break;
                }
            }
            if done && let Some(task) = pending.take() {
                task.abort();
            }
        }
        let missing: Vec<String> = into
            .entries
            .iter()
            .filter(|(_, entry)| entry.revision.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        let mut conn = self.store.conn();
        for keys in missing.chunks(chunk) {
            let revisions: Value = redis::cmd("ZMSCORE")
                .arg(&self.keys.log)
                .arg(keys)
                .query_async(&mut conn)
                .await
                .map_err(|e| map_err(Operation::Load, e))?;
            let mut revisions = Reply::new(revisions, Operation::Load)?;
            for key in keys {
                // A key written into the hash by hand has no logged revision: 0.
                let score = revisions.opt_bytes()?;
                let score = score.as_deref().unwrap_or(b"0");
                self.found_revision(key.clone(), whole_score(score), score, into);
            }
        }
        Ok(())
    }

    /// Records `revision`, read from `score`, the change-log score of `key`, if `key` is being
    /// loaded; a score that is no revision (`None`) makes the row unreadable.
    fn found_revision(&self, key: String, revision: Option<u64>, score: &[u8], into: &mut LoadMap) {
        let Some(slot) = into.entries.get_mut(&key) else {
            return;
        };
        match revision {
            Some(revision) => slot.revision = Some(revision),
            None => {
                let reason = self.bad_score("revision", &self.keys.log, score);
                into.apply(Row::Unreadable(key.into_bytes(), reason));
            }
        }
    }

    /// The rows changed since `since` (the delta script), or `None` when it is too old.
    async fn changed_rows(&self, since: Version) -> Result<Option<(Version, Vec<Row>)>> {
        let max = self.store.inner.options.max_delta();
        let mut slot = [0u8; 16];
        slot[..8].copy_from_slice(&since.counter().to_be_bytes());
        slot[8..].copy_from_slice(&since.stamp().to_be_bytes());
        let value = self
            .run(&scripts::CHANGES, Operation::Changes, |inv| {
                inv.arg(since.epoch().to_string())
                    .arg(since.counter())
                    .arg(since.stamp().to_string())
                    .arg(&slot[..])
                    .arg(max);
            })
            .await?;
        let (status, mut reply) = self.status(value, Operation::Changes)?;
        if status == 0 {
            return Ok(None);
        }
        let version = reply.version()?;
        let mut rows = Vec::with_capacity(reply.len() / 4);
        while reply.len() > 0 {
            let key = reply.key()?;
            let revision = reply.bytes()?;
            let value = reply.opt_bytes()?;
            let expiry = reply.opt_bytes()?;
            rows.push(self.row(key, value, &revision, expiry.as_deref()));
        }
        Ok(Some((version, rows)))
    }
}

/// One stored row of a dictionary, as read.
enum Row {
    /// A readable entry.
    Entry(StoredEntry),
    /// A deleted key, with the revision of the delete.
    Removed(String, Revision),
    /// A deleted key that is not UTF-8 (no handle holds it: nothing to tell).
    Gone(Vec<u8>),
    /// A row that cannot be read: its key as stored and why.
    Unreadable(Vec<u8>, String),
}

/// The fields of the version record, in the order [`parse_record`] takes them.
const RECORD_FIELDS: [&str; 5] = ["epoch", "counter", "stamp", "parent", "oldest"];

/// Counters (and `oldest`) stay below 2^53, where Lua's numbers (doubles) are exact.
const COUNTER_LIMIT: u64 = 1 << 53;

/// Decimal text of a `u64`: 1 to 20 digits, at most `u64::MAX` (leading zeros allowed unless
/// `canonical`), as the scripts check it.
fn decimal_u64(text: &[u8], canonical: bool) -> Option<u64> {
    let ok = (1..=20).contains(&text.len())
        && text.iter().all(u8::is_ascii_digit)
        && (!canonical || text.len() == 1 || text[0] != b'0');
    ok.then(|| std::str::from_utf8(text).ok()?.parse().ok())
        .flatten()
}

/// A counter (or `oldest`): 1 to 16 digits, below 2^53.
fn decimal_count(text: &[u8]) -> Option<u64> {
    (text.len() <= 16)
        .then(|| decimal_u64(text, false))
        .flatten()
        .filter(|c| *c < COUNTER_LIMIT)
}

/// Why a version record read with `HMGET` gives no token.
#[derive(Debug, PartialEq, Eq)]
enum Unusable<'a> {
    /// No record, or one from before stamps: the scripts create it afresh.
    Missing,
    /// A damaged field and its value (`None`: missing).
    Damaged(&'static str, Option<&'a [u8]>),
}

/// The token of a version record read with `HMGET` of [`RECORD_FIELDS`], validated as the
/// scripts validate it.
fn parse_record(fields: &[Option<Vec<u8>>]) -> Result<Version, Unusable<'_>> {
    let field = |i: usize| fields.get(i).and_then(Option::as_deref);
    if (0..4).all(|i| field(i).is_none()) {
        return Err(Unusable::Missing);
    }
    let damaged = |i: usize| Unusable::Damaged(RECORD_FIELDS[i], field(i));
    // Epoch and stamp are compared as text by the scripts: canonical.
    let epoch = field(0)
        .and_then(|t| decimal_u64(t, true))
        .ok_or_else(|| damaged(0))?;
    let counter = field(1).and_then(decimal_count).ok_or_else(|| damaged(1))?;
    if field(2).is_none() && field(3).is_none() {
        return Err(Unusable::Missing);
    }
    let stamp = field(2)
        .and_then(|t| decimal_u64(t, true))
        .filter(|s| *s != 0)
        .ok_or_else(|| damaged(2))?;
    let parent = field(3)
        .and_then(|t| decimal_u64(t, false))
        .ok_or_else(|| damaged(3))?;
    field(4).and_then(decimal_count).ok_or_else(|| damaged(4))?;
    Ok(Version::stamped(epoch, counter, stamp, parent))
}

/// One entry being loaded.
struct Loading {
    value: Bytes,
    /// `None` until known.
    revision: Option<u64>,
    expires_at: Option<StoreTime>,
}

/// Rows being loaded: the readable entries by key, and the unreadable rows by their key as
/// stored, with why.
#[derive(Default)]
struct LoadMap {
    entries: HashMap<String, Loading>,
    unreadable: HashMap<Vec<u8>, String>,
}

impl LoadMap {
    /// Applies a row read now over what was read before.
    fn apply(&mut self, row: Row) {
        match row {
            Row::Entry(entry) => {
                self.unreadable.remove(entry.key.as_bytes());
                self.entries.insert(
                    entry.key,
                    Loading {
                        value: entry.value,
                        revision: Some(entry.revision.0),
                        expires_at: entry.expires_at,
                    },
                );
            }
            Row::Removed(key, _) => {
                self.unreadable.remove(key.as_bytes());
                self.entries.remove(&key);
            }
            Row::Gone(key) => {
                self.unreadable.remove(&key);
            }
            Row::Unreadable(key, reason) => {
                if let Ok(key) = std::str::from_utf8(&key) {
                    self.entries.remove(key);
                }
                self.unreadable.insert(key, reason);
            }
        }
    }

    fn into_load(self, version: Version) -> Load {
        Load {
            version,
            entries: self
                .entries
                .into_iter()
                .map(|(key, entry)| StoredEntry {
                    key,
                    value: entry.value,
                    revision: Revision(entry.revision.unwrap_or(0)),
                    expires_at: entry.expires_at,
                })
                .collect(),
            unreadable: self
                .unreadable
                .into_iter()
                .map(|(key, reason)| Unreadable {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason,
                })
                .collect(),
        }
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &str {
        "redis"
    }

    /// `redis/native/<namespace>/<dictionary>`.
    fn location(&self) -> String {
        format!("redis/native/{}/{}", self.namespace, self.dictionary)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
        match self
            .write(&scripts::PERSIST, Operation::Persist, |inv| {
                inv.arg(key).arg(value.as_ref());
            })
            .await?
        {
            Written::Changed(version, _) => Ok(version),
            _ => Err(bad_reply(
                Operation::Persist,
                "a store did not change anything",
            )),
        }
    }

    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        match self
            .write(&scripts::DEPERSIST, Operation::Depersist, |inv| {
                inv.arg(key);
            })
            .await?
        {
            Written::Changed(version, _) => Ok(Some(version)),
            _ => Ok(None),
        }
    }

    async fn durables(&self) -> Result<Load> {
        for _ in 0..LOAD_ATTEMPTS {
            let mut entries = LoadMap::default();
            let (start, cursor) = self.load_first_chunk(&mut entries).await?;
            if cursor == "0" {
                // One chunk: read in the same script as the token.
                return Ok(entries.into_load(start));
            }
            self.scan_values(cursor, &mut entries).await?;
            self.read_revisions(start, &mut entries).await?;
            self.scan_expiries(&mut entries).await?;
            // The chunks may mix states after `start`: repair with every change since it.
            match self.changed_rows(start).await? {
                Some((version, rows)) => {
                    for row in rows {
                        entries.apply(row);
                    }
                    tracing::debug!(
                        target: "durable_redis",
                        dictionary = %self.dictionary,
                        entries = entries.entries.len(),
                        unreadable = entries.unreadable.len(),
                        "chunked full load"
                    );
                    return Ok(entries.into_load(version));
                }
                None => {
                    tracing::debug!(
                        target: "durable_redis",
                        dictionary = %self.dictionary,
                        "dictionary changed too much during a chunked full load, starting over"
                    );
                }
            }
        }
        Err(Error::backend(
            "redis",
            Operation::Load,
            format!(
                "the dictionary kept changing too much during {LOAD_ATTEMPTS} chunked full loads"
            ),
        ))
    }

    async fn last_updated(&self) -> Result<Version> {
        let mut conn = self.store.conn();
        let fields: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&self.keys.version)
            .arg(&RECORD_FIELDS[..])
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err(Operation::Version, e))?;
        match parse_record(&fields) {
            Ok(version) => Ok(version),
            Err(Unusable::Damaged(field, value)) => {
                Err(self.damaged(Operation::Version, field, value))
            }
            // No version record (new dictionary, flushed or evicted), or one written before
            // stamps existed: create it afresh, so the token differs from every earlier one.
            Err(Unusable::Missing) => {
                let value = self
                    .run(&scripts::TOUCH, Operation::Version, |_| {})
                    .await?;
                self.status(value, Operation::Version)?.1.version()
            }
        }
    }

    async fn changes_since(&self, since: Version) -> Result<Changes> {
        let Some((version, rows)) = self.changed_rows(since).await? else {
            return Ok(Changes::TooOld);
        };
        let mut delta = Delta {
            version,
            upserts: Vec::with_capacity(rows.len()),
            removals: Vec::new(),
            unreadable: Vec::new(),
        };
        for row in rows {
            match row {
                Row::Entry(entry) => delta.upserts.push(entry),
                Row::Removed(key, revision) => delta.removals.push((key, revision)),
                // Its lossy name may be another key's: reporting a removal could drop that
                // key; the next full load forgets it.
                Row::Gone(_) => {}
                Row::Unreadable(key, reason) => delta.unreadable.push(Unreadable {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason,
                }),
            }
        }
        Ok(Changes::Delta(delta))
    }

    async fn subscribe(&self) -> Result<Hints> {
        crate::hints::subscribe(&self.store, &self.keys.channel).await
    }

    async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
        match self
            .write(
                &scripts::INSERT_IF_ABSENT,
                Operation::InsertIfAbsent,
                |inv| {
                    inv.arg(key).arg(value.as_ref());
                },
            )
            .await?
        {
            Written::Changed(version, _) => Ok(IfAbsent::Inserted(version)),
            Written::Unchanged(mut reply) => Ok(IfAbsent::Present(self.entry(
                key,
                &mut reply,
                Operation::InsertIfAbsent,
            )?)),
            Written::NotAnInteger => Err(bad_reply(Operation::InsertIfAbsent, "status -1")),
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        new: Option<Bytes>,
    ) -> Result<Swap> {
        let expected = expected.map(|r| r.0.to_string()).unwrap_or_default();
        match self
            .write(
                &scripts::COMPARE_AND_SWAP,
                Operation::CompareAndSwap,
                |inv| {
                    inv.arg(key).arg(expected);
                    match &new {
                        Some(value) => inv.arg("1").arg(value.as_ref()),
                        None => inv.arg("0").arg(""),
                    };
                },
            )
            .await?
        {
            Written::Changed(version, _) => Ok(Swap::Swapped(version)),
            Written::Unchanged(mut reply) => {
                if reply.len() == 0 {
                    Ok(Swap::Conflict(None))
                } else {
                    Ok(Swap::Conflict(Some(self.entry(
                        key,
                        &mut reply,
                        Operation::CompareAndSwap,
                    )?)))
                }
            }
            Written::NotAnInteger => Err(bad_reply(Operation::CompareAndSwap, "status -1")),
        }
    }

    async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        match self
            .write(&scripts::POP, Operation::Pop, |inv| {
                inv.arg(key);
            })
            .await?
        {
            Written::Changed(version, mut reply) => Ok(Some((reply.bytes()?, version))),
            _ => Ok(None),
        }
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        match self
            .write(&scripts::INCREMENT, Operation::Increment, |inv| {
                inv.arg(key).arg(delta);
            })
            .await?
        {
            Written::Changed(version, mut reply) => Ok((reply.int()?, version)),
            _ => Err(Error::NotAnInteger {
                backend: "redis".into(),
                key: key.into(),
            }),
        }
    }

    async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
        if ops.is_empty() {
            return Ok(None);
        }
        match self
            .write(&scripts::BATCH, Operation::Batch, |inv| {
                for op in &ops {
                    match op {
                        BatchOp::Put { key, value } => inv.arg("P").arg(key).arg(value.as_ref()),
                        BatchOp::Delete { key } => inv.arg("D").arg(key).arg(""),
                    };
                }
            })
            .await?
        {
            Written::Changed(version, _) => Ok(Some(version)),
            _ => Ok(None),
        }
    }

    async fn clear(&self) -> Result<Option<Version>> {
        match self
            .write(&scripts::CLEAR, Operation::Clear, |_| {})
            .await?
        {
            Written::Changed(version, _) => Ok(Some(version)),
            _ => Ok(None),
        }
    }

    async fn now(&self) -> Result<StoreTime> {
        let value = self.run(&scripts::NOW, Operation::Now, |_| {}).await?;
        Reply::new(value, Operation::Now)?.u64().map(StoreTime)
    }

    async fn persist_expiring(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(Version, StoreTime)> {
        let ttl = u64::try_from(ttl.as_millis())
            .unwrap_or(u64::MAX)
            .min(MAX_TTL_MILLIS);
        match self
            .write(
                &scripts::PERSIST_EXPIRING,
                Operation::PersistExpiring,
                |inv| {
                    inv.arg(key).arg(value.as_ref()).arg(ttl);
                },
            )
            .await?
        {
            Written::Changed(version, mut reply) => Ok((version, StoreTime(reply.u64()?))),
            _ => Err(bad_reply(
                Operation::PersistExpiring,
                "a store did not change anything",
            )),
        }
    }

    async fn sweep(&self) -> Result<Option<Swept>> {
        match self
            .write(&scripts::SWEEP, Operation::Sweep, |_| {})
            .await?
        {
            Written::Changed(version, mut reply) => {
                let mut keys = Vec::with_capacity(reply.len());
                while reply.len() > 0 {
                    // A key that is not UTF-8 is in no handle's snapshot.
                    if let Ok(key) = reply.key()? {
                        keys.push(key);
                    }
                }
                Ok(Some(Swept { version, keys }))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    fn record(fields: [Option<&str>; 5]) -> Vec<Option<Vec<u8>>> {
        fields
            .iter()
            .map(|f| f.map(|s| s.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_valid_record_is_a_stamped_token() {
        let r = record([Some("7"), Some("12"), Some("99"), Some("0"), Some("3")]);
        let v = parse_record(&r).unwrap();
        assert_eq!(
            (v.epoch(), v.counter(), v.stamp(), v.parent()),
            (7, 12, 99, 0)
        );
        let max = u64::MAX.to_string();
        let r = record([
            Some(&max),
            Some("9007199254740991"),
            Some(&max),
            Some(&max),
            Some("0"),
        ]);
        assert!(parse_record(&r).is_ok());
        // Leading zeros are fine where the scripts read numbers, not where they compare text.
        let r = record([Some("0"), Some("012"), Some("1"), Some("007"), Some("03")]);
        let v = parse_record(&r).unwrap();
        assert_eq!((v.counter(), v.parent()), (12, 7));
    }

    #[test]
    fn no_record_or_one_without_stamps_is_missing() {
        assert_eq!(parse_record(&record([None; 5])), Err(Unusable::Missing));
        let old = record([Some("7"), Some("12"), None, None, Some("3")]);
        assert_eq!(parse_record(&old), Err(Unusable::Missing));
        let only_oldest = record([None, None, None, None, Some("3")]);
        assert_eq!(parse_record(&only_oldest), Err(Unusable::Missing));
    }

    #[test]
    fn damaged_fields_are_named() {
        let ok = ["7", "12", "99", "5", "3"];
        let bad: [&[&str]; 5] = [
            &[
                "",
                "x",
                "-1",
                "+7",
                "07",
                "1e3",
                "18446744073709551616",
                "7 ",
            ],
            &[
                "",
                "garbage",
                "-5",
                "9007199254740992",
                "9007199254740993",
                "1e300",
            ],
            &["", "0", "00", "012", "x", "18446744073709551616", "-1"],
            &[
                "",
                "x",
                "-1",
                "18446744073709551616",
                "000000000000000000001",
            ],
            &[
                "",
                "x",
                "-1",
                "9007199254740992",
                "1.5",
                "00000000000000001",
            ],
        ];
        for (i, values) in bad.iter().enumerate() {
            let mut missing: Vec<Option<&str>> = ok.iter().map(|s| Some(*s)).collect();
            missing[i] = None;
            // Stamp or parent alone missing is damage (both missing: from before stamps).
            let r = record(missing.try_into().unwrap());
            assert_eq!(
                parse_record(&r),
                Err(Unusable::Damaged(RECORD_FIELDS[i], None)),
                "field {i} missing"
            );
            for value in *values {
                let mut fields: Vec<Option<&str>> = ok.iter().map(|s| Some(*s)).collect();
                fields[i] = Some(value);
                let r = record(fields.try_into().unwrap());
                assert_eq!(
                    parse_record(&r),
                    Err(Unusable::Damaged(RECORD_FIELDS[i], Some(value.as_bytes()))),
                    "field {} = {value:?}",
                    RECORD_FIELDS[i]
                );
            }
        }
    }
}
