//! The backend logic shared by the three databases, written once as a macro over the concrete
//! sqlx database type (sqlx's generic bounds across databases are unwieldy; the SQL text itself
//! comes from [`Sql`](crate::common::Sql)).
//!
//! The invoking module defines: `type Db`, `const NAME`, `begin_write(&Pool)`,
//! `begin_read(&Pool)`, `key_arg(&str)`, `key_from(&Row, usize)`, and on the backend type
//! `capabilities_impl(&self)`, `subscribe_impl(&self)`.
//! The backend type has fields `shared: Arc<Shared>` (with `pool`, `sql`, `options`),
//! `namespace: Name`, `dictionary: Name`, `last_trim: Mutex<Instant>`.

macro_rules! backend_impl {
    ($Backend:ident) => {
        use $crate::common::{
            UPSERT_PARAMS, check_key, fresh_epoch, map_err, millis, now_millis, store_time,
            version_of,
        };
        use durable_core::{
            BatchOp, Capabilities, Changes, Delta, Error, Hints, IfAbsent, Load, Operation,
            Result, Revision, StoreTime, StoredEntry, Swap, Swept, Version, parse_counter,
        };
        use durable_core::bytes::Bytes;
        use sqlx::{AssertSqlSafe, Row};

        type Tx = sqlx::Transaction<'static, Db>;
        type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>;

        fn q(sql: &str) -> Query<'_> {
            sqlx::query(AssertSqlSafe(sql))
        }

        /// An entry from a row whose first columns are `entry_key, value, revision, expires_at`.
        fn stored_entry(row: &<Db as sqlx::Database>::Row) -> Result<StoredEntry, sqlx::Error> {
            let value: Vec<u8> = row.try_get(1)?;
            let revision: i64 = row.try_get(2)?;
            let expires_at: Option<i64> = row.try_get(3)?;
            Ok(StoredEntry {
                key: key_from(row, 0)?,
                value: Bytes::from(value),
                revision: Revision(revision as u64),
                expires_at: expires_at.map(store_time),
            })
        }

        impl $Backend {
            fn ns(&self) -> &str {
                self.namespace.as_str()
            }

            fn dict(&self) -> &str {
                self.dictionary.as_str()
            }

            fn err(op: Operation) -> impl Fn(sqlx::Error) -> Error {
                move |e| map_err(NAME, op, e)
            }

            /// Creates the version row with a fresh epoch if it is missing.
            /// Concurrent creators may deadlock on MySQL (duplicate-key inserts); they retry.
            async fn ensure_version(&self, op: Operation) -> Result<()> {
                $crate::common::retry_rolled_back(|| async {
                    q(&self.shared.sql.insert_version)
                        .bind(self.ns())
                        .bind(self.dict())
                        .bind(fresh_epoch())
                        .bind(self.ns())
                        .bind(self.dict())
                        .execute(&self.shared.pool)
                        .await
                        .map(drop)
                        .map_err(Self::err(op))
                })
                .await
            }

            fn vanished(op: Operation) -> Error {
                Error::backend(
                    NAME,
                    op,
                    "the dictionary's version row was deleted again and again while being created",
                )
            }

            /// Begins a write transaction that holds the dictionary's version row (created if
            /// missing) and returns the token it commits: with `bump`, the counter is already
            /// one higher (rolling back undoes that), so that the lock is taken and the
            /// counter read and bumped in one round trip (two on MySQL); without, the current
            /// token. Callers run the whole transaction in
            /// [`retry_rolled_back`]($crate::common::retry_rolled_back), which also covers a
            /// deadlock while taking the lock here.
            async fn begin(&self, op: Operation, bump: bool) -> Result<(Tx, Version)> {
                let sql = &self.shared.sql;
                let mut missing = 0;
                while missing < 5 {
                    let mut tx = begin_write(&self.shared.pool)
                        .await
                        .map_err(Self::err(op))?;
                    // A statement to run first, and the one that returns (epoch, counter).
                    let (first, read) = match (bump, &sql.read_bumped) {
                        (true, Some(read)) => (Some(&sql.bump), read),
                        (true, None) => (None, &sql.bump),
                        (false, _) => (None, &sql.lock_version),
                    };
                    let version: Option<(i64, i64)> = async {
                        if let Some(first) = first {
                            q(first).bind(self.ns()).bind(self.dict()).execute(&mut *tx).await?;
                        }
                        sqlx::query_as(AssertSqlSafe(read.as_str()))
                            .bind(self.ns())
                            .bind(self.dict())
                            .fetch_optional(&mut *tx)
                            .await
                    }
                    .await
                    .map_err(Self::err(op))?;
                    match version {
                        Some((epoch, counter)) => return Ok((tx, version_of(epoch, counter))),
                        None => {
                            let _ = tx.rollback().await;
                            missing += 1;
                            self.ensure_version(op).await?;
                        }
                    }
                }
                Err(Self::vanished(op))
            }

            /// Commits the write of `version` (from `begin(op, true)`, which also queued
            /// PostgreSQL's push hint).
            async fn commit(&self, tx: Tx, version: Version, op: Operation) -> Result<Version> {
                tx.commit().await.map_err(Self::err(op))?;
                self.maybe_trim().await;
                Ok(version)
            }

            async fn rollback(tx: Tx) {
                // A failed rollback means a broken connection: the pool discards it and the
                // server ends the transaction.
                let _ = tx.rollback().await;
            }

            /// The database's clock, in milliseconds since the Unix epoch.
            async fn clock<'e, E>(&self, executor: E, op: Operation) -> Result<i64>
            where
                E: sqlx::Executor<'e, Database = Db>,
            {
                sqlx::query_scalar(AssertSqlSafe(self.shared.sql.now.as_str()))
                    .fetch_one(executor)
                    .await
                    .map_err(Self::err(op))
            }

            /// Binds one row of an upsert (see [`Sql::upsert_row`]($crate::common::Sql::upsert_row)).
            fn bind_upsert<'q>(
                &'q self,
                query: Query<'q>,
                key: &'q str,
                value: &'q [u8],
                revision: u64,
                expires_at: Option<i64>,
            ) -> Query<'q> {
                query
                    .bind(self.ns())
                    .bind(self.dict())
                    .bind(key_arg(key))
                    .bind(value)
                    .bind(revision as i64)
                    .bind(now_millis())
                    .bind(expires_at)
            }

            /// Stores `value` under `key`, expiring at `expires_at` (store time) or never.
            async fn upsert(
                &self,
                tx: &mut Tx,
                key: &str,
                value: &[u8],
                revision: u64,
                expires_at: Option<i64>,
                op: Operation,
            ) -> Result<()> {
                let query = q(&self.shared.sql.upsert_entry);
                self.bind_upsert(query, key, value, revision, expires_at)
                    .execute(&mut **tx)
                    .await
                    .map_err(Self::err(op))?;
                Ok(())
            }

            /// `sql`, one of the statements that turn live entries into tombstones, with its
            /// first five parameters bound (see [`Sql::clear`]($crate::common::Sql::clear)).
            fn tombstoning<'q>(&'q self, sql: &'q str, revision: u64) -> Query<'q> {
                q(sql)
                    .bind(&[][..] as &[u8])
                    .bind(revision as i64)
                    .bind(now_millis())
                    .bind(self.ns())
                    .bind(self.dict())
            }

            /// Turns a live entry into a tombstone; false if there was none.
            async fn tombstone(
                &self,
                tx: &mut Tx,
                key: &str,
                revision: u64,
                op: Operation,
            ) -> Result<bool> {
                let done = self
                    .tombstoning(&self.shared.sql.tombstone_entry, revision)
                    .bind(key_arg(key))
                    .execute(&mut **tx)
                    .await
                    .map_err(Self::err(op))?;
                Ok(done.rows_affected() > 0)
            }

            /// The live entry of `key` (locked in a write transaction).
            async fn entry(&self, tx: &mut Tx, key: &str, op: Operation) -> Result<Option<StoredEntry>> {
                let row = q(&self.shared.sql.select_entry)
                    .bind(self.ns())
                    .bind(self.dict())
                    .bind(key_arg(key))
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(Self::err(op))?;
                row.as_ref().map(stored_entry).transpose().map_err(Self::err(op))
            }

            /// One attempt of [`persist_batch`](durable_core::Backend::persist_batch).
            async fn batch_once(&self, ops: &[BatchOp]) -> Result<Option<Version>> {
                let op = Operation::Batch;
                if ops.is_empty() {
                    return Ok(None);
                }
                // The last operation on each key wins.
                let mut last: std::collections::HashMap<&str, usize> =
                    std::collections::HashMap::with_capacity(ops.len());
                for (i, o) in ops.iter().enumerate() {
                    check_key(NAME, o.key())?;
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
                let (mut tx, current) = self.begin(op, true).await?;
                let revision = current.counter();
                let mut changed = !puts.is_empty();
                for key in deletes {
                    changed |= self.tombstone(&mut tx, key, revision, op).await?;
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
                    let mut query = q(&text);
                    for (key, value) in chunk {
                        query = self.bind_upsert(query, key, value, revision, None);
                    }
                    query.execute(&mut *tx).await.map_err(Self::err(op))?;
                }
                self.commit(tx, current, op).await.map(Some)
            }

            /// Trims tombstones written more than `older_than` ago, recording the oldest token
            /// that can still be served a delta. Returns how many tombstones were removed.
            ///
            /// Writes do this by themselves from time to time (at most every half retention
            /// per backend value); call it from a maintenance job to control when it happens.
            pub async fn trim_tombstones(&self, older_than: std::time::Duration) -> Result<u64> {
                $crate::common::retry_rolled_back(|| async {
                    let op = Operation::Trim;
                    let cutoff = now_millis().saturating_sub(millis(older_than));
                    let (mut tx, _) = self.begin(op, false).await?;
                    let max: Option<i64> =
                        sqlx::query_scalar(AssertSqlSafe(self.shared.sql.trim_max.as_str()))
                            .bind(self.ns())
                            .bind(self.dict())
                            .bind(cutoff)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(Self::err(op))?;
                    let Some(max) = max else {
                        Self::rollback(tx).await;
                        return Ok(0);
                    };
                    let removed = q(&self.shared.sql.trim_delete)
                        .bind(self.ns())
                        .bind(self.dict())
                        .bind(max)
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::err(op))?
                        .rows_affected();
                    q(&self.shared.sql.set_oldest)
                        .bind(max)
                        .bind(self.ns())
                        .bind(self.dict())
                        .bind(max)
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::err(op))?;
                    tx.commit().await.map_err(Self::err(op))?;
                    tracing::debug!(
                        backend = NAME,
                        dictionary = %self.dictionary,
                        removed,
                        oldest_served = max,
                        "trimmed tombstones"
                    );
                    Ok(removed)
                })
                .await
            }

            async fn maybe_trim(&self) {
                let retention = self.shared.options.tombstone_retention();
                let interval = (retention / 2).max(std::time::Duration::from_secs(1));
                {
                    let mut last = self.last_trim.lock().unwrap_or_else(|e| e.into_inner());
                    if last.elapsed() < interval {
                        return;
                    }
                    *last = std::time::Instant::now();
                }
                if let Err(error) = self.trim_tombstones(retention).await {
                    tracing::warn!(backend = NAME, %error, "trimming tombstones failed");
                }
            }

            /// Deletes every row of this dictionary (entries, tombstones and the version
            /// record), as an operator would; open handles see a new epoch on their next check.
            pub async fn drop_dictionary(&self) -> Result<()> {
                let op = Operation::Clear;
                let mut tx = begin_write(&self.shared.pool).await.map_err(Self::err(op))?;
                for sql in [&self.shared.sql.delete_entries, &self.shared.sql.delete_version] {
                    q(sql)
                        .bind(self.ns())
                        .bind(self.dict())
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::err(op))?;
                }
                tx.commit().await.map_err(Self::err(op))
            }
        }

        #[durable_core::async_trait]
        impl durable_core::Backend for $Backend {
            fn name(&self) -> &str {
                NAME
            }

            fn capabilities(&self) -> Capabilities {
                self.capabilities_impl()
            }

            async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
                let op = Operation::Persist;
                check_key(NAME, key)?;
                let value = &value;
                $crate::common::retry_rolled_back(|| async move {
                    let (mut tx, current) = self.begin(op, true).await?;
                    self.upsert(&mut tx, key, value, current.counter(), None, op).await?;
                    self.commit(tx, current, op).await
                })
                .await
            }

            async fn depersist(&self, key: &str) -> Result<Option<Version>> {
                $crate::common::retry_rolled_back(|| async {
                    let op = Operation::Depersist;
                    check_key(NAME, key)?;
                    let (mut tx, current) = self.begin(op, true).await?;
                    if !self.tombstone(&mut tx, key, current.counter(), op).await? {
                        Self::rollback(tx).await;
                        return Ok(None);
                    }
                    self.commit(tx, current, op).await.map(Some)
                })
                .await
            }

            async fn durables(&self) -> Result<Load> {
                let op = Operation::Load;
                // A deadlock or serialization failure wrote nothing: read again.
                $crate::common::retry_rolled_back(|| async {
                    let mut missing = 0;
                    while missing < 5 {
                        let mut tx = begin_read(&self.shared.pool).await.map_err(Self::err(op))?;
                        let read = async {
                            let version: Option<(i64, i64, i64)> =
                                sqlx::query_as(AssertSqlSafe(self.shared.sql.select_version.as_str()))
                                    .bind(self.ns())
                                    .bind(self.dict())
                                    .fetch_optional(&mut *tx)
                                    .await?;
                            let Some((epoch, counter, _)) = version else {
                                return Ok(None);
                            };
                            let rows = q(&self.shared.sql.load_entries)
                                .bind(self.ns())
                                .bind(self.dict())
                                .fetch_all(&mut *tx)
                                .await?;
                            Ok(Some((epoch, counter, rows)))
                        }
                        .await;
                        Self::rollback(tx).await;
                        let (epoch, counter, rows) = match read {
                            Ok(Some(read)) => read,
                            Ok(None) => {
                                missing += 1;
                                self.ensure_version(op).await?;
                                continue;
                            }
                            Err(e) => return Err(map_err(NAME, op, e)),
                        };
                        let entries = rows
                            .iter()
                            .map(stored_entry)
                            .collect::<Result<_, _>>()
                            .map_err(Self::err(op))?;
                        return Ok(Load {
                            version: version_of(epoch, counter),
                            entries,
                        });
                    }
                    Err(Self::vanished(op))
                })
                .await
            }

            async fn last_updated(&self) -> Result<Version> {
                let op = Operation::Version;
                for _ in 0..5 {
                    let row: Option<(i64, i64, i64)> =
                        sqlx::query_as(AssertSqlSafe(self.shared.sql.select_version.as_str()))
                            .bind(self.ns())
                            .bind(self.dict())
                            .fetch_optional(&self.shared.pool)
                            .await
                            .map_err(Self::err(op))?;
                    match row {
                        Some((epoch, counter, _)) => return Ok(version_of(epoch, counter)),
                        None => self.ensure_version(op).await?,
                    }
                }
                Err(Self::vanished(op))
            }

            async fn changes_since(&self, since: Version) -> Result<Changes> {
                let op = Operation::Changes;
                let mut tx = begin_read(&self.shared.pool).await.map_err(Self::err(op))?;
                let version: Option<(i64, i64, i64)> =
                    sqlx::query_as(AssertSqlSafe(self.shared.sql.select_version.as_str()))
                        .bind(self.ns())
                        .bind(self.dict())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(Self::err(op))?;
                let Some((epoch, counter, oldest)) = version else {
                    // Wiped: whatever comes next has a new epoch.
                    Self::rollback(tx).await;
                    return Ok(Changes::TooOld);
                };
                let current = version_of(epoch, counter);
                if since.epoch() != current.epoch()
                    || since.counter() > current.counter()
                    || since.counter() < oldest as u64
                {
                    Self::rollback(tx).await;
                    return Ok(Changes::TooOld);
                }
                let rows = q(&self.shared.sql.changes)
                    .bind(self.ns())
                    .bind(self.dict())
                    .bind(since.counter() as i64)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(Self::err(op))?;
                Self::rollback(tx).await;
                let mut upserts = Vec::new();
                let mut removals = Vec::new();
                for row in rows {
                    let entry = stored_entry(&row).map_err(Self::err(op))?;
                    let tombstone: bool = row.try_get(4).map_err(Self::err(op))?;
                    if tombstone {
                        removals.push((entry.key, entry.revision));
                    } else {
                        upserts.push(entry);
                    }
                }
                Ok(Changes::Delta(Delta {
                    version: current,
                    upserts,
                    removals,
                }))
            }

            async fn subscribe(&self) -> Result<Hints> {
                self.subscribe_impl().await
            }

            async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
                $crate::common::retry_rolled_back(|| async {
                    let op = Operation::InsertIfAbsent;
                    check_key(NAME, key)?;
                    let (mut tx, current) = self.begin(op, true).await?;
                    if let Some(entry) = self.entry(&mut tx, key, op).await? {
                        Self::rollback(tx).await;
                        return Ok(IfAbsent::Present(entry));
                    }
                    self.upsert(&mut tx, key, &value, current.counter(), None, op).await?;
                    self.commit(tx, current, op).await.map(IfAbsent::Inserted)
                })
                .await
            }

            async fn compare_and_swap(
                &self,
                key: &str,
                expected: Option<Revision>,
                new: Option<Bytes>,
            ) -> Result<Swap> {
                $crate::common::retry_rolled_back(|| async {
                    let op = Operation::CompareAndSwap;
                    check_key(NAME, key)?;
                    let (mut tx, current) = self.begin(op, true).await?;
                    let entry = self.entry(&mut tx, key, op).await?;
                    if entry.as_ref().map(|e| e.revision) != expected
                        || (entry.is_none() && new.is_none())
                    {
                        Self::rollback(tx).await;
                        return Ok(Swap::Conflict(entry));
                    }
                    let revision = current.counter();
                    match &new {
                        Some(value) => self.upsert(&mut tx, key, value, revision, None, op).await?,
                        None => {
                            self.tombstone(&mut tx, key, revision, op).await?;
                        }
                    }
                    self.commit(tx, current, op).await.map(Swap::Swapped)
                })
                .await
            }

            async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
                $crate::common::retry_rolled_back(|| async {
                    let op = Operation::Pop;
                    check_key(NAME, key)?;
                    let (mut tx, current) = self.begin(op, true).await?;
                    let Some(entry) = self.entry(&mut tx, key, op).await? else {
                        Self::rollback(tx).await;
                        return Ok(None);
                    };
                    self.tombstone(&mut tx, key, current.counter(), op).await?;
                    let version = self.commit(tx, current, op).await?;
                    Ok(Some((entry.value, version)))
                })
                .await
            }

            async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
                $crate::common::retry_rolled_back(|| async {
                    let op = Operation::Increment;
                    check_key(NAME, key)?;
                    let (mut tx, current) = self.begin(op, true).await?;
                    let value = match self.entry(&mut tx, key, op).await? {
                        Some(entry) => parse_counter(&entry.value),
                        None => Some(0),
                    };
                    let Some(new) = value.and_then(|v| v.checked_add(delta)) else {
                        Self::rollback(tx).await;
                        return Err(Error::NotAnInteger {
                            backend: NAME.to_owned(),
                            key: key.to_owned(),
                        });
                    };
                    let text = new.to_string();
                    self.upsert(&mut tx, key, text.as_bytes(), current.counter(), None, op)
                        .await?;
                    let version = self.commit(tx, current, op).await?;
                    Ok((new, version))
                })
                .await
            }

            async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
                // A batch holds many row locks: the database may roll it back as a deadlock.
                $crate::common::retry_rolled_back(|| self.batch_once(&ops)).await
            }

            async fn clear(&self) -> Result<Option<Version>> {
                $crate::common::retry_rolled_back(|| async {
                    let op = Operation::Clear;
                    let (mut tx, current) = self.begin(op, true).await?;
                    let done = self
                        .tombstoning(&self.shared.sql.clear, current.counter())
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::err(op))?;
                    if done.rows_affected() == 0 {
                        Self::rollback(tx).await;
                        return Ok(None);
                    }
                    self.commit(tx, current, op).await.map(Some)
                })
                .await
            }

            async fn now(&self) -> Result<StoreTime> {
                self.clock(&self.shared.pool, Operation::Now).await.map(store_time)
            }

            async fn persist_expiring(
                &self,
                key: &str,
                value: Bytes,
                ttl: std::time::Duration,
            ) -> Result<(Version, StoreTime)> {
                let op = Operation::PersistExpiring;
                check_key(NAME, key)?;
                let value = &value;
                $crate::common::retry_rolled_back(|| async move {
                    let (mut tx, current) = self.begin(op, true).await?;
                    // The database's time of the write, read under the version row lock.
                    let expires_at = self.clock(&mut *tx, op).await?.saturating_add(millis(ttl));
                    self.upsert(&mut tx, key, value, current.counter(), Some(expires_at), op)
                        .await?;
                    let version = self.commit(tx, current, op).await?;
                    Ok((version, store_time(expires_at)))
                })
                .await
            }

            async fn sweep(&self) -> Result<Option<Swept>> {
                $crate::common::retry_rolled_back(|| async {
                    let op = Operation::Sweep;
                    let (mut tx, current) = self.begin(op, true).await?;
                    // One reading of the clock for both statements, so that they agree on what
                    // has expired (writers of the dictionary wait for the version row lock).
                    let now = self.clock(&mut *tx, op).await?;
                    let rows = q(&self.shared.sql.select_expired)
                        .bind(self.ns())
                        .bind(self.dict())
                        .bind(now)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(Self::err(op))?;
                    if rows.is_empty() {
                        Self::rollback(tx).await;
                        return Ok(None);
                    }
                    let keys = rows
                        .iter()
                        .map(|row| key_from(row, 0))
                        .collect::<Result<_, _>>()
                        .map_err(Self::err(op))?;
                    self.tombstoning(&self.shared.sql.sweep, current.counter())
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::err(op))?;
                    let version = self.commit(tx, current, op).await?;
                    Ok(Some(Swept { version, keys }))
                })
                .await
            }
        }
    };
}

pub(crate) use backend_impl;
