//! [`SqlBackend`]: one dictionary of a store, and the transactions its operations are made of.
//!
//! Every operation runs its attempts through `run`: it first makes sure a pool without a single
//! connection can connect (else it fails at once with the cause, [`Gate`](crate::error::Gate)),
//! then [`retry`] runs the attempts: an attempt returns the driver's error unclassified
//! ([`Failure`]), `retry` decides whether to run it again, and the store's
//! [`Target`](crate::error::Target) says what it means.
//!
//! Every write is one transaction whose first statement bumps the version record
//! ([`begin`](SqlBackend::begin)), which locks it until the commit.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable_core::bytes::Bytes;
use durable_core::{
    BatchOp, Error, Name, Operation, Result, Revision, STAMP_HISTORY, StoredEntry, Unreadable,
    Version,
};
use sqlx::Database;

use crate::dialect::{Arg, Cells, DbRow, Dialect, Run, Stmt};
use crate::error::{Failure, retry};
use crate::record::{
    COUNTER_LIMIT, Field, RawRecord, Record, Stored, damage_reason, field, fresh_epoch,
    fresh_stamp, loose_key, millis, now_millis, shown_with_type, store_time,
};
use crate::sql::{Bump, UPSERT_PARAMS, check_key};
use crate::store::{Shared, begin_write};

/// A write transaction.
pub(crate) type Tx<D> = sqlx::Transaction<'static, <D as Dialect>::Db>;
/// A connection of the dialect's database.
type Conn<D> = <<D as Dialect>::Db as Database>::Connection;
/// The result of one attempt: a driver error stays one until `retry` classifies it.
pub(crate) type Attempt<T> = std::result::Result<T, Failure>;

/// One dictionary of a [`SqlStore`](crate::SqlStore): a [`Backend`](durable_core::Backend)
/// with every capability (push hints where the database sends them: PostgreSQL).
pub struct SqlBackend<D: Dialect> {
    pub(crate) shared: Arc<Shared<D>>,
    pub(crate) namespace: Name,
    pub(crate) dictionary: Name,
    pub(crate) last_trim: Mutex<Instant>,
}

impl<D: Dialect> fmt::Debug for SqlBackend<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(&format!("{}Backend", D::TYPE_NAME))
            .field("url", &self.shared.url)
            .field("namespace", &self.namespace)
            .field("dictionary", &self.dictionary)
            .finish()
    }
}

impl<D: Dialect> SqlBackend<D> {
    /// Trims tombstones written more than `older_than` ago, recording the oldest token that
    /// can still be served a delta. Returns how many tombstones were removed.
    ///
    /// Writes do this by themselves from time to time (at most every half retention per
    /// backend value); call it from a maintenance job to control when it happens. Fails with
    /// [`Error::Damaged`] if the dictionary's version record is damaged.
    pub async fn trim_tombstones(&self, older_than: Duration) -> Result<u64> {
        let op = Operation::Trim;
        self.run(op, None, || async {
            let sql = &self.shared.sql;
            let cutoff = now_millis().saturating_sub(millis(older_than));
            let mut tx = self.begin_write().await?;
            let record = self.read_record(&mut tx, &sql.lock_version).await?;
            // Nothing to trim before the record is created (it then serves no older token
            // anyway).
            let Some((mut tx, _)) = self.valid_record(op, tx, record).await? else {
                return Ok(0);
            };
            let max = tx
                .fetch_one(self.stmt(&sql.trim_max).bind(cutoff))
                .await?
                .maybe_int(0)?;
            let Some(max) = max else {
                Self::rollback(tx).await;
                return Ok(0);
            };
            let removed = D::rows_affected(&tx.run(self.stmt(&sql.trim_delete).bind(max)).await?);
            tx.run(self.set_oldest(max)).await?;
            tx.commit().await?;
            tracing::debug!(
                backend = D::NAME,
                dictionary = %self.dictionary,
                removed,
                oldest_served = max,
                "trimmed tombstones"
            );
            Ok(removed)
        })
        .await
    }

    /// Deletes every row of this dictionary (entries, tombstones, the version record and its
    /// stamp history), as an operator would; open handles see a new epoch on their next check.
    pub async fn drop_dictionary(&self) -> Result<()> {
        self.run(Operation::Clear, None, || async {
            let sql = &self.shared.sql;
            let mut tx = self.begin_write().await?;
            for statement in [&sql.delete_entries, &sql.delete_version, &sql.delete_stamps] {
                tx.run(self.stmt(statement)).await?;
            }
            Ok(tx.commit().await?)
        })
        .await
    }

    pub(crate) fn ns(&self) -> &str {
        self.namespace.as_str()
    }

    pub(crate) fn dict(&self) -> &str {
        self.dictionary.as_str()
    }

    /// Records that deltas are served from `counter` on (earlier tokens get a full load).
    pub(crate) fn set_oldest(&self, counter: i64) -> Stmt<'_> {
        Stmt::new(&self.shared.sql.set_oldest)
            .bind(counter)
            .bind(self.ns())
            .bind(self.dict())
            .bind(counter)
    }

    /// `sql` with its first two parameters, namespace and dictionary, bound.
    pub(crate) fn stmt<'a>(&'a self, sql: &'a str) -> Stmt<'a> {
        Stmt::new(sql).bind(self.ns()).bind(self.dict())
    }

    /// `key` as the dialect stores it.
    fn key_arg(key: &str) -> Arg<'_> {
        if D::KEYS_AS_BYTES {
            Arg::Bytes(key.as_bytes())
        } else {
            Arg::Text(key)
        }
    }

    /// Checks `key` for an operation that writes it.
    pub(crate) fn check_key(key: &str) -> Result<()> {
        check_key(D::NAME, key)
    }

    pub(crate) fn vanished(op: Operation) -> Error {
        Error::backend(
            D::NAME,
            op,
            "the dictionary's version row was deleted again and again while being created",
        )
    }

    /// Runs one operation: fails at once, with the cause, when the pool holds no connection
    /// and a new one cannot be made ([`Gate`](crate::error::Gate)); otherwise runs `attempt`
    /// through [`retry`] and explains the error it ends with.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        op: Operation,
        key: Option<&str>,
        attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let shared = &self.shared;
        if shared.pool.size() == 0 {
            shared
                .gate
                .pass(&shared.target, op, || shared.probe())
                .await?;
        }
        match retry::<D, _, _, _>(op, key, attempt).await {
            Ok(value) => Ok(value),
            Err(Failure::Done(error)) => Err(error),
            // The pool kept failing to connect (it retries a refused connection until its
            // timeout): one connection made directly says why.
            Err(Failure::Sql(sqlx::Error::PoolTimedOut)) => {
                match shared
                    .gate
                    .probe_now(&shared.target, op, || shared.probe())
                    .await
                {
                    Err(error) => Err(error),
                    Ok(()) => Err(shared.target.explain(op, sqlx::Error::PoolTimedOut)),
                }
            }
            Err(Failure::Sql(error)) => Err(shared.target.explain(op, error)),
        }
    }

    /// Begins a write transaction.
    pub(crate) async fn begin_write(&self) -> sqlx::Result<Tx<D>> {
        begin_write::<D>(&self.shared.pool).await
    }

    /// Begins a read transaction that sees one consistent snapshot.
    pub(crate) async fn begin_read(&self) -> sqlx::Result<Tx<D>> {
        self.shared.pool.begin_with(D::BEGIN_READ).await
    }

    /// The reason of an unreadable entry row of this dictionary.
    pub(crate) fn row_reason(&self, what: &str) -> String {
        damage_reason(
            &self.shared.sql.tables.entries,
            self.ns(),
            self.dict(),
            what,
        )
    }

    /// The key in column `i` of an entry row, read loosely (see [`loose_key`]).
    pub(crate) fn key_of(row: &DbRow<D>, i: usize) -> std::result::Result<String, String> {
        loose_key(row, i, D::KEYS_AS_BYTES).map_err(|bad| bad.lossy)
    }

    /// An entry from a row whose first columns are `entry_key, value, revision, expires_at`,
    /// read loosely: a row that cannot be read is [`Unreadable`], with its key as far as it
    /// can be read.
    pub(crate) fn read_entry(
        &self,
        row: &DbRow<D>,
    ) -> std::result::Result<StoredEntry, Unreadable> {
        let bad = |key: String, what: String| Unreadable {
            key,
            reason: self.row_reason(&what),
        };
        let key = loose_key(row, 0, D::KEYS_AS_BYTES).map_err(|b| bad(b.lossy, b.what))?;
        let value = match row.maybe_bytes(1) {
            Ok(Some(value)) => value,
            Ok(None) => return Err(bad(key, "the value is NULL".to_owned())),
            Err(_) => {
                let shown = shown_with_type(row, 1);
                return Err(bad(key, format!("the value is {shown}, not bytes")));
            }
        };
        let revision = match field(row, 2) {
            Field::Int(revision) if (0..COUNTER_LIMIT).contains(&revision) => revision,
            other => {
                let shown = other.describe();
                return Err(bad(
                    key,
                    format!("revision {shown} is not an integer from 0 to 2^53 - 2"),
                ));
            }
        };
        let expires_at = match field(row, 3) {
            Field::Null => None,
            Field::Int(at) => Some(store_time(at)),
            other => {
                let shown = other.describe();
                return Err(bad(key, format!("expires_at {shown} is not an integer")));
            }
        };
        Ok(StoredEntry {
            key,
            value: Bytes::from(value),
            revision: Revision(revision as u64),
            expires_at,
        })
    }

    /// [`Error::Damaged`] for this dictionary's version record.
    pub(crate) fn damaged(&self, op: Operation, what: &str) -> Failure {
        Failure::Done(Error::Damaged {
            backend: D::NAME.to_owned(),
            operation: op,
            reason: damage_reason(
                &self.shared.sql.tables.versions,
                self.ns(),
                self.dict(),
                what,
            ),
        })
    }

    /// The version record (`None`: there is none), read by `sql` (`select_version` or
    /// `lock_version`) on `conn`.
    pub(crate) async fn read_record(
        &self,
        conn: &mut Conn<D>,
        sql: &str,
    ) -> Attempt<Option<Record>> {
        let row = conn.fetch_optional(self.stmt(sql)).await?;
        Ok(row.as_ref().map(|row| RawRecord::read(row).check()))
    }

    /// The version record of `tx` as read (`record`), when it is valid. Otherwise `tx` is
    /// rolled back: a damaged record fails `op`, a missing or unstamped one gives `None`.
    pub(crate) async fn valid_record(
        &self,
        op: Operation,
        tx: Tx<D>,
        record: Option<Record>,
    ) -> Attempt<Option<(Tx<D>, Stored)>> {
        match record {
            Some(Record::Valid(stored)) => Ok(Some((tx, stored))),
            Some(Record::Damaged(what)) => {
                Self::rollback(tx).await;
                Err(self.damaged(op, &what))
            }
            // A new or wiped dictionary, or a record from before stamps.
            Some(Record::Unstamped) | None => {
                Self::rollback(tx).await;
                Ok(None)
            }
        }
    }

    /// Creates or repairs the version record, in a transaction of its own. A missing record
    /// (a new dictionary, or one deleted by hand) and one written before stamps existed get a
    /// fresh epoch, the highest revision still stored as counter and a fresh stamp, so that no
    /// token handed out before names the new state and revisions keep growing. A damaged
    /// record gets the same when `damaged_too` (a write treats it as wiped); otherwise (a
    /// read) this fails with [`Error::Damaged`], having written nothing. Nothing happens if
    /// the record is valid (another process repaired it meanwhile).
    pub(crate) async fn repair(&self, op: Operation, damaged_too: bool) -> Attempt<()> {
        let sql = &self.shared.sql;
        let mut tx = self.begin_write().await?;
        let row = tx.fetch_optional(self.stmt(&sql.lock_version)).await?;
        let raw = row.as_ref().map(RawRecord::read);
        let why = match raw.as_ref().map(RawRecord::check) {
            Some(Record::Valid(_)) => {
                Self::rollback(tx).await;
                return Ok(());
            }
            Some(Record::Damaged(what)) if !damaged_too => {
                Self::rollback(tx).await;
                return Err(self.damaged(op, &what));
            }
            Some(Record::Damaged(what)) => what,
            Some(Record::Unstamped) => "written before tokens had stamps".to_owned(),
            None => "missing".to_owned(),
        };
        let highest = tx.fetch_one(self.stmt(&sql.max_revision)).await?;
        let counter = match field(&highest, 0) {
            Field::Null => 0,
            Field::Int(revision) if revision < COUNTER_LIMIT => revision.max(0),
            other => {
                Self::rollback(tx).await;
                return Err(self.damaged(
                    op,
                    &format!(
                        "{why}, and the entries' highest revision {} is not below 2^53 - 1, so \
                         no fresh counter can be chosen",
                        other.describe()
                    ),
                ));
            }
        };
        let (epoch, stamp) = (fresh_epoch(), fresh_stamp());
        if raw.is_none() {
            let insert = self
                .stmt(&sql.insert_version)
                .bind(epoch)
                .bind(counter)
                .bind(counter)
                .bind(stamp);
            if D::rows_affected(&tx.run(insert).await?) == 0 {
                // Another process created it meanwhile.
                Self::rollback(tx).await;
                return Ok(());
            }
        } else {
            let reset = Stmt::new(&sql.reset_version)
                .bind(epoch)
                .bind(counter)
                .bind(counter)
                .bind(stamp)
                .bind(self.ns())
                .bind(self.dict());
            tx.run(reset).await?;
        }
        self.record_stamp(&mut tx, counter, stamp).await?;
        tx.commit().await?;
        match raw {
            None => tracing::debug!(
                backend = D::NAME,
                namespace = self.ns(),
                dictionary = self.dict(),
                counter,
                "created the version record"
            ),
            Some(raw) => tracing::warn!(
                backend = D::NAME,
                namespace = self.ns(),
                dictionary = self.dict(),
                record = %raw.describe(),
                counter,
                "version record {why}: replaced with a fresh epoch (every handle reloads)"
            ),
        }
        Ok(())
    }

    /// Stores `stamp` as the stamp of `counter` in the stamp history.
    async fn record_stamp(&self, tx: &mut Tx<D>, counter: i64, stamp: i64) -> Attempt<()> {
        let record = self
            .stmt(&self.shared.sql.record_stamp)
            .bind(counter % STAMP_HISTORY as i64)
            .bind(counter)
            .bind(stamp);
        tx.run(record).await?;
        Ok(())
    }

    /// Bumps a valid version record in `tx` (counter + 1, a fresh stamp recorded in the
    /// history, the old stamp as parent) and returns the new token; `None`, having written
    /// nothing, if the record is missing, damaged or unstamped.
    async fn bump(&self, tx: &mut Tx<D>) -> Attempt<Option<Version>> {
        let stamp = fresh_stamp();
        let bump = |sql| Stmt::new(sql).bind(stamp).bind(self.ns()).bind(self.dict());
        let bumped = match &self.shared.sql.bump {
            // Every row, so that every statement of the call runs (SQLite's bump is two).
            Bump::Returning(sql) => tx.fetch_all(bump(sql)).await?.into_iter().next(),
            Bump::ReadBack { update, read } => {
                if D::rows_affected(&tx.run(bump(update)).await?) == 0 {
                    None
                } else {
                    tx.fetch_optional(self.stmt(read)).await?
                }
            }
        };
        let Some(row) = bumped else {
            return Ok(None);
        };
        let (epoch, counter, parent) = (row.int(0)?, row.int(1)?, row.int(2)?);
        if let Bump::ReadBack { .. } = self.shared.sql.bump {
            self.record_stamp(tx, counter, stamp).await?;
        }
        Ok(Some(Version::stamped(
            epoch as u64,
            counter as u64,
            stamp as u64,
            parent as u64,
        )))
    }

    /// Begins a write transaction whose first statement bumps the version record, which locks
    /// it until the commit, and returns the token the write commits (rolling back undoes the
    /// bump). A missing, unstamped or damaged record is repaired first (see
    /// [`repair`](Self::repair)), before anything is written.
    pub(crate) async fn begin(&self, op: Operation) -> Attempt<(Tx<D>, Version)> {
        for _ in 0..5 {
            let mut tx = self.begin_write().await?;
            if let Some(version) = self.bump(&mut tx).await? {
                return Ok((tx, version));
            }
            Self::rollback(tx).await;
            self.repair(op, true).await?;
        }
        Err(Self::vanished(op).into())
    }

    /// Commits the write of `version` (from `begin`, which also queued PostgreSQL's push
    /// hint).
    pub(crate) async fn commit(&self, tx: Tx<D>, version: Version) -> Attempt<Version> {
        tx.commit().await?;
        self.maybe_trim().await;
        Ok(version)
    }

    pub(crate) async fn rollback(tx: Tx<D>) {
        // A failed rollback means a broken connection: the pool discards it and the server
        // ends the transaction.
        let _ = tx.rollback().await;
    }

    /// The database's clock, in milliseconds since the Unix epoch.
    pub(crate) async fn clock(&self, conn: &mut Conn<D>) -> Attempt<i64> {
        let row = conn.fetch_one(Stmt::new(&self.shared.sql.now)).await?;
        Ok(row.int(0)?)
    }

    /// Binds one row of an upsert (see [`Sql::upsert_row`](crate::sql::Sql::upsert_row)).
    fn bind_upsert<'a>(
        &'a self,
        stmt: Stmt<'a>,
        key: &'a str,
        value: &'a [u8],
        revision: u64,
        expires_at: Option<i64>,
    ) -> Stmt<'a> {
        stmt.bind(self.ns())
            .bind(self.dict())
            .bind(Self::key_arg(key))
            .bind(value)
            .bind(revision as i64)
            .bind(now_millis())
            .bind(expires_at)
    }

    /// Stores `value` under `key`, expiring at `expires_at` (store time) or never.
    pub(crate) async fn upsert(
        &self,
        tx: &mut Tx<D>,
        key: &str,
        value: &[u8],
        revision: u64,
        expires_at: Option<i64>,
    ) -> Attempt<()> {
        let stmt = Stmt::new(&self.shared.sql.upsert_entry);
        tx.run(self.bind_upsert(stmt, key, value, revision, expires_at))
            .await?;
        Ok(())
    }

    /// `sql`, one of the statements that turn live entries into tombstones, with its first
    /// five parameters bound (see [`Sql::clear`](crate::sql::Sql::clear)).
    pub(crate) fn tombstoning<'a>(&'a self, sql: &'a str, revision: u64) -> Stmt<'a> {
        Stmt::new(sql)
            .bind(&[][..] as &[u8])
            .bind(revision as i64)
            .bind(now_millis())
            .bind(self.ns())
            .bind(self.dict())
    }

    /// Turns a live entry into a tombstone; false if there was none.
    pub(crate) async fn tombstone(
        &self,
        tx: &mut Tx<D>,
        key: &str,
        revision: u64,
    ) -> Attempt<bool> {
        let stmt = self
            .tombstoning(&self.shared.sql.tombstone_entry, revision)
            .bind(Self::key_arg(key));
        Ok(D::rows_affected(&tx.run(stmt).await?) > 0)
    }

    /// The live entry of `key` (locked in a write transaction). A row that cannot be read
    /// fails `op` (writing the key replaces it).
    pub(crate) async fn entry(
        &self,
        op: Operation,
        tx: &mut Tx<D>,
        key: &str,
    ) -> Attempt<Option<StoredEntry>> {
        let stmt = self
            .stmt(&self.shared.sql.select_entry)
            .bind(Self::key_arg(key));
        let row = tx.fetch_optional(stmt).await?;
        match row.as_ref().map(|row| self.read_entry(row)).transpose() {
            Ok(entry) => Ok(entry),
            Err(unreadable) => Err(Failure::Done(Error::backend(
                D::NAME,
                op,
                format!(
                    "the stored row of key {key:?} cannot be read ({}); a plain write of the \
                     key replaces it",
                    unreadable.reason
                ),
            ))),
        }
    }

    /// One attempt of [`persist_batch`](durable_core::Backend::persist_batch).
    pub(crate) async fn batch_once(&self, ops: &[BatchOp]) -> Attempt<Option<Version>> {
        if ops.is_empty() {
            return Ok(None);
        }
        // The last operation on each key wins.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(ops.len());
        for (i, o) in ops.iter().enumerate() {
            Self::check_key(o.key())?;
            last.insert(o.key(), i);
        }
        let mut puts: Vec<(&str, &[u8])> = Vec::new();
        let mut deletes: Vec<&str> = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            if last.get(o.key()) != Some(&i) {
                continue;
            }
            match o {
                BatchOp::Put { key, value } => puts.push((key, value)),
                BatchOp::Delete { key } => deletes.push(key),
            }
        }
        let (mut tx, version) = self.begin(Operation::Batch).await?;
        let revision = version.counter();
        let mut changed = !puts.is_empty();
        for key in deletes {
            changed |= self.tombstone(&mut tx, key, revision).await?;
        }
        if !changed {
            Self::rollback(tx).await;
            return Ok(None);
        }
        let sql = &self.shared.sql;
        for chunk in puts.chunks(200) {
            let mut text = sql.upsert_head.clone();
            for i in 0..chunk.len() {
                if i > 0 {
                    text.push_str(", ");
                }
                text.push_str(&sql.upsert_row(i * UPSERT_PARAMS));
            }
            text.push_str(&sql.upsert_tail);
            let mut stmt = Stmt::new(&text);
            for (key, value) in chunk {
                stmt = self.bind_upsert(stmt, key, value, revision, None);
            }
            tx.run(stmt).await?;
        }
        self.commit(tx, version).await.map(Some)
    }

    async fn maybe_trim(&self) {
        let retention = self.shared.options.tombstone_retention();
        let interval = (retention / 2).max(Duration::from_secs(1));
        {
            let mut last = self.last_trim.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < interval {
                return;
            }
            *last = Instant::now();
        }
        if let Err(error) = self.trim_tombstones(retention).await {
            tracing::warn!(backend = D::NAME, %error, "trimming tombstones failed");
        }
    }
}
