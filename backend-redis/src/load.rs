//! The full load of a native dictionary: one script when it fits in one chunk, else chunks
//! (`HSCAN` pages, a walk of the change log, `ZSCAN` pages of the expiries) repaired with the
//! changes since the first chunk's token.

use std::hash::BuildHasher;

use durable_core::{
    Error, Load, Operation, Result, Revision, Rows, StoreTime, StoredEntry, Unreadable, Version,
};
use foldhash::HashMap;
use hashbrown::HashTable;
use redis::Value;

use crate::RedisBackend;
use crate::dictionary::Row;
use crate::error::{bad_reply, map_err};
use crate::record::whole_score;
use crate::reply::Reply;
use crate::scripts;

/// How often a full load starts over when the dictionary changed too much while it ran.
const LOAD_ATTEMPTS: u32 = 5;

impl RedisBackend {
    /// A full load: the first chunk with the token in one script; more chunks if the
    /// dictionary does not fit in one, repaired with the changes since that token (started over
    /// when those are too old, at most [`LOAD_ATTEMPTS`] times).
    pub(crate) async fn load(&self) -> Result<Load> {
        for _ in 0..LOAD_ATTEMPTS {
            let mut entries = LoadMap::default();
            let (start, cursor) = self.load_first_chunk(&mut entries).await?;
            if cursor == "0" {
                // One chunk: read in the same script as the token.
                return Ok(entries.into_load(start));
            }
            self.reserve(&mut entries).await?;
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
        into.reserve(reply.len() / 4);
        self.load_rows(&mut reply, into)?;
        Ok((version, next))
    }

    /// Room for every entry the hash holds now (`HLEN`), so the entries read by the pages that
    /// follow are not rehashed as they come in.
    async fn reserve(&self, into: &mut LoadMap) -> Result<()> {
        let len: usize = redis::cmd("HLEN")
            .arg(&self.keys.entries)
            .query_async(&mut self.store.conn())
            .await
            .map_err(|e| map_err(Operation::Load, e))?;
        into.reserve(len.saturating_sub(into.entries.len()));
        Ok(())
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
            match into.get_mut(&key) {
                Some(entry) => entry.value = value,
                None => into.insert_new(StoredEntry {
                    key,
                    value,
                    revision: UNKNOWN,
                    expires_at: None,
                }),
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
            let Some(entry) = into.get_mut(&key) else {
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
            .filter(|entry| entry.revision == UNKNOWN)
            .map(|entry| entry.key.clone())
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
        let Some(slot) = into.get_mut(&key) else {
            return;
        };
        match revision {
            Some(revision) => slot.revision = Revision(revision),
            None => {
                let reason = self.bad_score("revision", &self.keys.log, score);
                into.apply(Row::Unreadable(key.into_bytes(), reason));
            }
        }
    }
}

/// The hash of the key at position `at` of `entries`, for the index.
fn hash_at(hasher: &foldhash::fast::RandomState, entries: &Rows, at: &u32) -> u64 {
    hasher.hash_one(entries.get(*at as usize).map_or("", |e| e.key.as_str()))
}

/// Whether the position an index slot holds is `key`'s entry.
fn holds<'a>(entries: &'a Rows, key: &'a str) -> impl Fn(&u32) -> bool + 'a {
    move |&at| entries.get(at as usize).is_some_and(|e| e.key == key)
}

/// The revision of an entry whose revision is not known yet (counters stay below 2^53).
const UNKNOWN: Revision = Revision(u64::MAX);

/// Rows being loaded: the readable entries, in the list the load returns and found by key
/// through an index of their positions (a map of keys to entries would hold every entry twice
/// over, counting its empty buckets, beside the list made from it at the end), and the
/// unreadable rows by their key as stored, with why.
#[derive(Default)]
struct LoadMap {
    entries: Rows,
    /// Positions in `entries`, hashed by key.
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    unreadable: HashMap<Vec<u8>, String>,
}

impl LoadMap {
    /// Room for `more` entries.
    fn reserve(&mut self, more: usize) {
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.reserve(more, |at| hash_at(hasher, entries, at));
    }

    /// The position of `key`'s entry.
    fn find(&self, key: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, holds(&self.entries, key))
            .map(|&at| at as usize)
    }

    /// The entry of `key`, to change in place.
    fn get_mut(&mut self, key: &str) -> Option<&mut StoredEntry> {
        let at = self.find(key)?;
        self.entries.get_mut(at)
    }

    /// Adds `entry`, or replaces the entry of its key.
    fn upsert(&mut self, entry: StoredEntry) {
        match self.get_mut(&entry.key) {
            Some(old) => *old = entry,
            None => self.insert_new(entry),
        }
    }

    /// Adds `entry`, whose key has no entry yet.
    fn insert_new(&mut self, entry: StoredEntry) {
        // A Redis hash holds fewer than 2^32 fields.
        let at = self.entries.len() as u32;
        let hash = self.hasher.hash_one(&entry.key);
        self.entries.push(entry);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index
            .insert_unique(hash, at, |at| hash_at(hasher, entries, at));
    }

    /// Removes the entry of `key`; the last entry moves into its place.
    fn remove(&mut self, key: &str) {
        let hash = self.hasher.hash_one(key);
        let Ok(slot) = self.index.find_entry(hash, holds(&self.entries, key)) else {
            return;
        };
        let at = slot.remove().0 as usize;
        self.entries.swap_remove(at);
        let Some(moved) = self.entries.get(at) else {
            return;
        };
        // The entry that was last now sits at `at`.
        let last = self.entries.len() as u32;
        let hash = self.hasher.hash_one(&moved.key);
        if let Some(slot) = self.index.find_mut(hash, |&p| p == last) {
            *slot = at as u32;
        }
    }

    /// Applies a row read now over what was read before.
    fn apply(&mut self, row: Row) {
        match row {
            Row::Entry(entry) => {
                self.unreadable.remove(entry.key.as_bytes());
                self.upsert(entry);
            }
            Row::Removed(key) => {
                self.unreadable.remove(key.as_bytes());
                self.remove(&key);
            }
            Row::Gone(key) => {
                self.unreadable.remove(&key);
            }
            Row::Unreadable(key, reason) => {
                if let Ok(key) = std::str::from_utf8(&key) {
                    self.remove(key);
                }
                self.unreadable.insert(key, reason);
            }
        }
    }

    fn into_load(mut self, version: Version) -> Load {
        for entry in self.entries.iter_mut() {
            if entry.revision == UNKNOWN {
                entry.revision = Revision(0);
            }
        }
        Load {
            version,
            entries: self.entries,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{Rng, SeedableRng};

    use super::*;

    fn entry(key: &str, revision: u64) -> StoredEntry {
        StoredEntry {
            key: key.to_owned(),
            value: bytes::Bytes::from(revision.to_string()),
            revision: Revision(revision),
            expires_at: None,
        }
    }

    /// Rows applied in any order leave the map holding exactly what a plain map would: removals
    /// move the last entry into the hole, and the index must follow it (across the list's
    /// chunks).
    #[test]
    fn applied_rows_match_a_plain_map() {
        let seed = rand::random::<u64>();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut map = LoadMap::default();
        let mut model = BTreeMap::new();
        for step in 1..=20_000u64 {
            let key = format!("k{}", rng.random_range(0..3_000u32));
            match rng.random_range(0..4) {
                0 => {
                    map.apply(Row::Removed(key.clone()));
                    model.remove(&key);
                }
                1 => {
                    map.apply(Row::Unreadable(key.clone().into_bytes(), "bad".into()));
                    model.remove(&key);
                }
                _ => {
                    map.apply(Row::Entry(entry(&key, step)));
                    model.insert(key.clone(), step);
                }
            }
            let got = map.get_mut(&key).map(|e| e.revision.0);
            assert_eq!(got, model.get(&key).copied(), "seed {seed}, step {step}");
        }
        let load = map.into_load(Version::stamped(1, 1, 1, 0));
        let got: BTreeMap<String, u64> = load
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.revision.0))
            .collect();
        assert_eq!(got.len(), load.entries.len(), "each key once (seed {seed})");
        assert_eq!(got, model, "seed {seed}");
    }
}
