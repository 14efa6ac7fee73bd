//! The [`Backend`] implementation of [`SqlBackend`]: each operation as one transaction of the
//! pieces in [`dictionary`](crate::dictionary).

use std::time::Duration;

use durable_core::bytes::Bytes;
use durable_core::{
    Backend, BatchOp, Capabilities, Changes, Delta, Error, Hints, IfAbsent, Load, LoadParts,
    Operation, Result, Revision, Rows, STAMP_HISTORY, StoreTime, Swap, Swept, Unreadable, Version,
    parse_counter,
};
use parking_lot::Mutex;

use crate::SqlBackend;
use crate::dialect::{Cells, Dialect, Run, Stmt};
use crate::record::{
    Field, RawRecord, Record, field, millis, shown_with_type, store_time, tombstone,
};

#[durable_core::async_trait]
impl<D: Dialect> Backend for SqlBackend<D> {
    fn name(&self) -> &str {
        D::NAME
    }

    /// `{backend}/{entries table}/{namespace}/{dictionary}`: no host, user or password.
    fn location(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            D::NAME,
            self.shared.sql.tables.entries,
            self.ns(),
            self.dict()
        )
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all().with_push(D::PUSH)
    }

    async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
        let op = Operation::Persist;
        Self::check_key(key)?;
        let value = &value;
        self.run(op, Some(key), || async move {
            let (mut tx, version) = self.begin(op).await?;
            self.upsert(&mut tx, key, value, version.counter(), None)
                .await?;
            self.commit(tx, version).await
        })
        .await
    }

    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        let op = Operation::Depersist;
        Self::check_key(key)?;
        self.run(op, Some(key), || async {
            let (mut tx, version) = self.begin(op).await?;
            if !self.tombstone(&mut tx, key, version.counter()).await? {
                Self::rollback(tx).await;
                return Ok(None);
            }
            self.commit(tx, version).await.map(Some)
        })
        .await
    }

    async fn durables(&self) -> Result<Load> {
        self.load(None).await
    }

    async fn durables_in_parts(&self, parts: &mut dyn LoadParts) -> Result<Load> {
        self.load(Some(&Mutex::new(parts))).await
    }

    async fn last_updated(&self) -> Result<Version> {
        let op = Operation::Version;
        self.run(op, None, || async {
            for _ in 0..5 {
                let record = {
                    let mut conn = self.shared.pool.acquire().await?;
                    let sql = &self.shared.sql.select_version;
                    self.read_record(&mut conn, sql).await?
                };
                match record {
                    Some(Record::Valid(stored)) => return Ok(stored.version),
                    Some(Record::Damaged(what)) => return Err(self.damaged(op, &what)),
                    // A new or wiped dictionary, or a record from before stamps.
                    Some(Record::Unstamped) | None => self.repair(op, false).await?,
                }
            }
            Err(Self::vanished(op).into())
        })
        .await
    }

    async fn changes_since(&self, since: Version) -> Result<Changes> {
        let op = Operation::Changes;
        self.run(op, None, || async move {
            let sql = &self.shared.sql;
            let mut tx = self.begin_read().await?;
            let slot = (since.counter() % STAMP_HISTORY) as i64;
            let at = Stmt::new(&sql.select_version_at)
                .bind(slot)
                .bind(self.ns())
                .bind(self.dict());
            let row = tx.fetch_optional(at).await?;
            let record = row.as_ref().map(|row| RawRecord::read(row).check());
            // Wiped, or from before stamps: the next version check gives a fresh epoch.
            let Some((mut tx, stored)) = self.valid_record(op, tx, record).await? else {
                return Ok(Changes::TooOld);
            };
            let current = stored.version;
            // The history must hold `since`'s very stamp for its counter: a store put
            // back to an earlier state and written again holds other stamps there.
            let recorded = row.as_ref().map(|row| (field(row, 5), field(row, 6)));
            let served = since.epoch() == current.epoch()
                && since.counter() <= current.counter()
                && since.counter() >= stored.oldest_served
                && recorded
                    == Some((
                        Field::Int(since.counter() as i64),
                        Field::Int(since.stamp() as i64),
                    ));
            if !served {
                Self::rollback(tx).await;
                return Ok(Changes::TooOld);
            }
            let changes = self.stmt(&sql.changes).bind(since.counter() as i64);
            let rows = tx.fetch_all(changes).await?;
            Self::rollback(tx).await;
            let mut upserts = Vec::new();
            let mut removals = Vec::new();
            let mut unreadable = Vec::new();
            for row in &rows {
                match tombstone(row, 4) {
                    // A delete: only its key matters. One of a key that cannot be read
                    // names no key a snapshot holds (its lossy form may be another,
                    // valid key: a BLOB "k" beside the text "k"): skipped.
                    Some(true) => {
                        let Ok(key) = Self::key_of(row, 0) else {
                            continue;
                        };
                        removals.push(key);
                    }
                    Some(false) => match self.read_entry(row) {
                        Ok(entry) => upserts.push(entry),
                        Err(bad) => unreadable.push(bad),
                    },
                    None => {
                        let key = Self::key_of(row, 0).unwrap_or_else(|lossy| lossy);
                        let shown = shown_with_type(row, 4);
                        unreadable.push(Unreadable {
                            key,
                            reason: self.row_reason(&format!("tombstone {shown} is not a boolean")),
                        });
                    }
                }
            }
            Ok(Changes::Delta(Delta {
                version: current,
                upserts,
                removals,
                unreadable,
            }))
        })
        .await
    }

    async fn subscribe(&self) -> Result<Hints> {
        D::subscribe(self).await
    }

    async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
        let op = Operation::InsertIfAbsent;
        Self::check_key(key)?;
        let value = &value;
        self.run(op, Some(key), || async move {
            let (mut tx, version) = self.begin(op).await?;
            if let Some(entry) = self.entry(op, &mut tx, key).await? {
                Self::rollback(tx).await;
                return Ok(IfAbsent::Present(entry));
            }
            self.upsert(&mut tx, key, value, version.counter(), None)
                .await?;
            self.commit(tx, version).await.map(IfAbsent::Inserted)
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        new: Option<Bytes>,
    ) -> Result<Swap> {
        let op = Operation::CompareAndSwap;
        Self::check_key(key)?;
        let new = &new;
        self.run(op, Some(key), || async move {
            let (mut tx, version) = self.begin(op).await?;
            let entry = self.entry(op, &mut tx, key).await?;
            if entry.as_ref().map(|e| e.revision) != expected || (entry.is_none() && new.is_none())
            {
                Self::rollback(tx).await;
                return Ok(Swap::Conflict(entry));
            }
            let revision = version.counter();
            match new {
                Some(value) => self.upsert(&mut tx, key, value, revision, None).await?,
                None => {
                    self.tombstone(&mut tx, key, revision).await?;
                }
            }
            self.commit(tx, version).await.map(Swap::Swapped)
        })
        .await
    }

    async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        let op = Operation::Pop;
        Self::check_key(key)?;
        self.run(op, Some(key), || async {
            let (mut tx, version) = self.begin(op).await?;
            let Some(entry) = self.entry(op, &mut tx, key).await? else {
                Self::rollback(tx).await;
                return Ok(None);
            };
            self.tombstone(&mut tx, key, version.counter()).await?;
            let version = self.commit(tx, version).await?;
            Ok(Some((entry.value, version)))
        })
        .await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        let op = Operation::Increment;
        Self::check_key(key)?;
        self.run(op, Some(key), || async {
            let (mut tx, version) = self.begin(op).await?;
            let value = match self.entry(op, &mut tx, key).await? {
                Some(entry) => parse_counter(&entry.value),
                None => Some(0),
            };
            let Some(new) = value.and_then(|v| v.checked_add(delta)) else {
                Self::rollback(tx).await;
                return Err(Error::NotAnInteger {
                    backend: D::NAME.to_owned(),
                    key: key.to_owned(),
                }
                .into());
            };
            let text = new.to_string();
            self.upsert(&mut tx, key, text.as_bytes(), version.counter(), None)
                .await?;
            let version = self.commit(tx, version).await?;
            Ok((new, version))
        })
        .await
    }

    async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
        // A batch holds many row locks: the database may roll it back as a deadlock.
        self.run(Operation::Batch, None, || self.batch_once(&ops))
            .await
    }

    async fn clear(&self) -> Result<Option<Version>> {
        let op = Operation::Clear;
        self.run(op, None, || async {
            let sql = &self.shared.sql;
            let (mut tx, version) = self.begin(op).await?;
            if D::rows_affected(&tx.run(self.stmt(&sql.clear)).await?) == 0 {
                Self::rollback(tx).await;
                return Ok(None);
            }
            // No tombstone per key (updating every row of a million-key dictionary takes
            // seconds, ten times its delete): the tombstones go too, and deltas start at this
            // counter, so an earlier token is served a full load (of an empty dictionary).
            tx.run(self.stmt(&sql.delete_entries)).await?;
            tx.run(self.set_oldest(version.counter() as i64)).await?;
            self.commit(tx, version).await.map(Some)
        })
        .await
    }

    async fn now(&self) -> Result<StoreTime> {
        self.run(Operation::Now, None, || async {
            let mut conn = self.shared.pool.acquire().await?;
            self.clock(&mut conn).await
        })
        .await
        .map(store_time)
    }

    async fn persist_expiring(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(Version, StoreTime)> {
        let op = Operation::PersistExpiring;
        Self::check_key(key)?;
        let value = &value;
        self.run(op, Some(key), || async move {
            let (mut tx, version) = self.begin(op).await?;
            // The database's time of the write, read under the version row lock.
            let expires_at = self.clock(&mut tx).await?.saturating_add(millis(ttl));
            self.upsert(&mut tx, key, value, version.counter(), Some(expires_at))
                .await?;
            let version = self.commit(tx, version).await?;
            Ok((version, store_time(expires_at)))
        })
        .await
    }

    async fn sweep(&self) -> Result<Option<Swept>> {
        let op = Operation::Sweep;
        self.run(op, None, || async {
            let sql = &self.shared.sql;
            let (mut tx, version) = self.begin(op).await?;
            // One reading of the clock, turned into one cutoff for both statements, so that
            // they agree on what is swept (writers of the dictionary wait for the version row
            // lock): the entries that expired first, at most about `SWEEP_STEP`.
            let now = self.clock(&mut tx).await?;
            let cutoff = tx
                .fetch_one(self.stmt(&sql.sweep_cutoff).bind(now))
                .await?
                .maybe_int(0)?;
            let Some(cutoff) = cutoff else {
                Self::rollback(tx).await;
                return Ok(None);
            };
            let rows = tx
                .fetch_all(self.stmt(&sql.select_expired).bind(cutoff))
                .await?;
            // Rows whose key cannot be read are swept too, but name no key a snapshot
            // holds.
            let keys = rows
                .iter()
                .filter_map(|row| Self::key_of(row, 0).ok())
                .collect();
            let sweep = self.tombstoning(&sql.sweep, version.counter()).bind(cutoff);
            tx.run(sweep).await?;
            let version = self.commit(tx, version).await?;
            Ok(Some(Swept { version, keys }))
        })
        .await
    }
}

/// Rows handed to the engine per part of a full load (`durables_in_parts`).
const LOAD_PART: usize = 1024;

impl<D: Dialect> SqlBackend<D> {
    /// A full load: the version record and every row in one read transaction. With `parts`,
    /// rows are handed over every [`LOAD_PART`] as they are read (each attempt restarts them).
    async fn load(&self, parts: Option<&Mutex<&mut dyn LoadParts>>) -> Result<Load> {
        let op = Operation::Load;
        self.run(op, None, || async {
            for _ in 0..5 {
                if let Some(parts) = parts {
                    parts.lock().restart();
                }
                let mut tx = self.begin_read().await?;
                let select = &self.shared.sql.select_version;
                let record = self.read_record(&mut tx, select).await?;
                let Some((mut tx, stored)) = self.valid_record(op, tx, record).await? else {
                    self.repair(op, false).await?;
                    continue;
                };
                let mut entries = Rows::new();
                let mut unreadable = Vec::new();
                tx.for_each_row(self.stmt(&self.shared.sql.load_entries), |row| {
                    match self.read_entry(&row) {
                        Ok(entry) => entries.push(entry),
                        Err(bad) => unreadable.push(bad),
                    }
                    if let Some(parts) = parts.filter(|_| entries.len() >= LOAD_PART) {
                        parts.lock().rows(std::mem::take(&mut entries));
                    }
                })
                .await?;
                Self::rollback(tx).await;
                return Ok(Load {
                    version: stored.version,
                    entries,
                    unreadable,
                });
            }
            Err(Self::vanished(op).into())
        })
        .await
    }
}
