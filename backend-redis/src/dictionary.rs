//! [`RedisBackend`]: one dictionary in the native layout, and the pieces its operations are
//! made of: running a script with the dictionary's keys and fresh stamps, reading its reply
//! (a status, a token, damage), and reading stored rows (entries, deletes, rows another program
//! wrote that cannot be read).

use std::fmt;

use bytes::Bytes;
use durable_core::{
    Backend, Error, Name, Operation, Result, Revision, StoreTime, StoredEntry, Version,
};
use redis::{Script, Value};

use crate::RedisStore;
use crate::error::{bad_reply, map_err};
use crate::record::{
    Keys, RECORD_FIELDS, Unusable, expected, history_slot, parse_record, stamp_bytes, whole_score,
};
use crate::reply::{Reply, shown};
use crate::scripts;

/// One dictionary in the native layout of a [`RedisStore`]; every capability of the
/// [`Backend`] trait.
///
/// Created by [`RedisStore::backend`]. See the crate docs for the key layout.
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) store: RedisStore,
    pub(crate) keys: Keys,
    pub(crate) namespace: Name,
    pub(crate) dictionary: Name,
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
pub(crate) enum Written {
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

    /// The Redis key of the change log: a sorted set of every key written, scored by the
    /// revision of its last write (a delete's too, until its tombstone is trimmed).
    pub fn log_key(&self) -> &str {
        &self.keys.log
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

    /// The current token: one `HMGET` of the version record, validated as the scripts validate
    /// it. A missing record (or one from before stamps) is created by a script, as after a wipe.
    pub(crate) async fn read_version(&self) -> Result<Version> {
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

    /// Invokes a native script with the common keys and arguments, then `extra` arguments.
    pub(crate) async fn run(
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
        let stamps = stamp_bytes(created, written);
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

    pub(crate) async fn write(
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
    pub(crate) fn status(&self, value: Value, operation: Operation) -> Result<(i64, Reply)> {
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
    pub(crate) fn damaged(&self, operation: Operation, field: &str, value: Option<&[u8]>) -> Error {
        let expected = expected(field);
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
    pub(crate) fn entry(
        &self,
        key: &str,
        reply: &mut Reply,
        operation: Operation,
    ) -> Result<StoredEntry> {
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
    pub(crate) fn row(
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
            return Row::Removed(key);
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
    pub(crate) fn not_utf8(&self, key: Vec<u8>) -> Row {
        let reason = format!(
            "{}: the key is not UTF-8 (field `{}` of {})",
            self.location(),
            shown(&key),
            self.keys.entries
        );
        Row::Unreadable(key, reason)
    }

    /// Why a row whose `what` (revision or expiry), its score in `set`, is `score`, is unreadable.
    pub(crate) fn bad_score(&self, what: &str, set: &str, score: &[u8]) -> String {
        let unit = if what == "expiry" { " (ms)" } else { "" };
        format!(
            "{}: its {what} (score in {set}) is `{}`, expected a whole number{unit} in 0..2^53",
            self.location(),
            shown(score)
        )
    }

    /// The rows changed since `since` (the delta script), or `None` when it is too old.
    pub(crate) async fn changed_rows(&self, since: Version) -> Result<Option<(Version, Vec<Row>)>> {
        let max = self.store.inner.options.max_delta();
        let slot = history_slot(since.counter(), since.stamp());
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
pub(crate) enum Row {
    /// A readable entry.
    Entry(StoredEntry),
    /// A deleted key.
    Removed(String),
    /// A deleted key that is not UTF-8 (no handle holds it: nothing to tell).
    Gone(Vec<u8>),
    /// A row that cannot be read: its key as stored and why.
    Unreadable(Vec<u8>, String),
}
