//! The backend logic shared by the three databases, written once as a macro over the concrete
//! sqlx database type (sqlx's generic bounds across databases are unwieldy; the SQL text itself
//! comes from [`Sql`](crate::common::Sql)).
//!
//! The invoking module defines: `type Db`, `const NAME`, `const KEYS_AS_BYTES` (keys are
//! stored as bytes that must be UTF-8), `begin_write(&Pool)`, `begin_read(&Pool)`,
//! `key_arg(&str)`, `probe(&Shared)` (one connection made directly, to learn why the pool cannot
//! connect), and on the backend type `capabilities_impl(&self)`, `subscribe_impl(&self)`.
//! The backend type has fields `shared: Arc<Shared>` (with `pool`, `sql`, `options`, `target`,
//! `gate`), `namespace: Name`, `dictionary: Name`, `last_trim: Mutex<Instant>`.
//!
//! Every operation runs its attempts through `run`: it first makes sure a pool without a single
//! connection can connect (else it fails at once with the cause, [`Gate`](crate::error::Gate)),
//! then [`retry`](crate::error::retry) runs the attempts: an attempt returns the driver's error
//! unclassified ([`Failure`](crate::error::Failure)), `retry` decides whether to run it again,
//! and the store's [`Target`](crate::error::Target) says what it means.
//!
//! Entry rows are read loosely: a row another program wrote that cannot be read (a key that is
//! not UTF-8 or stored as a BLOB, a value of another type, a revision out of range, a NULL) is
//! reported as [`Unreadable`](durable_core::Unreadable) and costs its key only.

macro_rules! backend_impl {
    ($Backend:ident) => {
        use $crate::common::{
            UPSERT_PARAMS, check_key, fresh_epoch, fresh_stamp, millis, now_millis, store_time,
        };
        use $crate::error::{Failure, retry};
        use $crate::record::{BadKey, COUNTER_LIMIT, Field, RawRecord, Record, damage_reason};
        use durable_core::{
            BatchOp, Capabilities, Changes, Delta, Error, Hints, IfAbsent, Load, Operation,
            Result, Revision, STAMP_HISTORY, StoreTime, StoredEntry, Swap, Swept, Unreadable,
            Version, parse_counter,
        };
        use durable_core::bytes::Bytes;
        use sqlx::{AssertSqlSafe, Row, TypeInfo, ValueRef};

        type Tx = sqlx::Transaction<'static, Db>;
        type DbRow = <Db as sqlx::Database>::Row;
        type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>;
        /// The result of one attempt: a driver error stays one until `retry` classifies it.
        type Attempt<T> = std::result::Result<T, Failure>;

        fn q(sql: &str) -> Query<'_> {
            sqlx::query(AssertSqlSafe(sql))
        }

        /// The key in column `i` of `row`, read loosely: text (bytes that are UTF-8 where
        /// `KEYS_AS_BYTES`), or what it is instead.
        fn loose_key(row: &DbRow, i: usize) -> std::result::Result<String, BadKey> {
            let type_name = match row.try_get_raw(i) {
                Ok(value) if value.is_null() => {
                    return Err(BadKey {
                        lossy: String::new(),
                        what: "the key is NULL".to_owned(),
                    });
                }
                Ok(value) => value.type_info().name().to_owned(),
                Err(e) => {
                    return Err(BadKey {
                        lossy: String::new(),
                        what: format!("the key cannot be read: {e}"),
                    });
                }
            };
            if !KEYS_AS_BYTES && let Ok(key) = row.try_get::<String, _>(i) {
                return Ok(key);
            }
            match row.try_get::<Vec<u8>, _>(i) {
                Ok(bytes) if KEYS_AS_BYTES => String::from_utf8(bytes)
                    .map_err(|e| BadKey::from_bytes(e.as_bytes(), &type_name)),
                Ok(bytes) => Err(BadKey::from_bytes(&bytes, &type_name)),
                Err(_) => {
                    let shown = field(row, i).describe();
                    Err(BadKey {
                        what: format!("the key is {type_name} {shown}, not text"),
                        lossy: shown,
                    })
                }
            }
        }

        /// Column `i` of `row` as a person would read it, with its type (`INTEGER 12345`).
        fn shown_with_type(row: &DbRow, i: usize) -> String {
            let type_name = row
                .try_get_raw(i)
                .map(|value| value.type_info().name().to_owned())
                .unwrap_or_default();
            format!("{type_name} {}", field(row, i).describe())
        }

        /// Column `i` of `row`, read loosely: a hand-edited row may hold anything (SQLite lets
        /// text and real numbers into INTEGER columns).
        fn field(row: &DbRow, i: usize) -> Field {
            match row.try_get::<Option<i64>, _>(i) {
                Ok(Some(value)) => Field::Int(value),
                Ok(None) => Field::Null,
                Err(_) => Field::Other(match row.try_get::<String, _>(i) {
                    Ok(text) => format!("{text:?}"),
                    Err(_) => match row.try_get::<f64, _>(i) {
                        Ok(real) => real.to_string(),
                        Err(_) => row.try_get_raw(i).map_or_else(
                            |e| e.to_string(),
                            |value| format!("a value of type {}", value.type_info().name()),
                        ),
                    },
                }),
            }
        }

        /// A version row from its first five columns (see `Sql::select_version`).
        fn raw_record(row: &DbRow) -> RawRecord {
            RawRecord {
                epoch: field(row, 0),
                counter: field(row, 1),
                stamp: field(row, 2),
                parent: field(row, 3),
                oldest_served: field(row, 4),
            }
        }

        /// Adds the columns the versions table gained since its first release, when missing
        /// (run by the store's `migrate`, after the `CREATE ... IF NOT EXISTS` statements).
        async fn add_missing_columns(
            conn: &mut <Db as sqlx::Database>::Connection,
            sql: &$crate::common::Sql,
        ) -> std::result::Result<(), sqlx::Error> {
            let present: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql.columns.as_str()))
                .bind(sql.versions.as_str())
                .fetch_all(&mut *conn)
                .await?;
            for (column, ddl) in &sql.added_columns {
                if !present.iter().any(|c| c.eq_ignore_ascii_case(column)) {
                    tracing::info!(backend = NAME, table = %sql.versions, column, "adding column");
                    q(ddl).execute(&mut *conn).await?;
                }
            }
            Ok(())
        }

        impl $Backend {
            fn ns(&self) -> &str {
                self.namespace.as_str()
            }

            fn dict(&self) -> &str {
                self.dictionary.as_str()
            }

            fn vanished(op: Operation) -> Error {
                Error::backend(
                    NAME,
                    op,
                    "the dictionary's version row was deleted again and again while being created",
                )
            }

            /// Runs one operation: fails at once, with the cause, when the pool holds no
            /// connection and a new one cannot be made ([`Gate`]($crate::error::Gate)); otherwise
            /// runs `attempt` through [`retry`] and explains the error it ends with.
            async fn run<T, F, Fut>(
                &self,
                op: Operation,
                key: Option<&str>,
                attempt: F,
            ) -> Result<T>
            where
                F: FnMut() -> Fut,
                Fut: std::future::Future<Output = Attempt<T>>,
            {
                let shared = &self.shared;
                if shared.pool.size() == 0 {
                    shared.gate.pass(&shared.target, op, || probe(shared)).await?;
                }
                match retry(NAME, op, key, attempt).await {
                    Ok(value) => Ok(value),
                    Err(Failure::Done(error)) => Err(error),
                    // The pool kept failing to connect (it retries a refused connection until
                    // its timeout): one connection made directly says why.
                    Err(Failure::Sql(sqlx::Error::PoolTimedOut)) => {
                        match shared.gate.probe_now(&shared.target, op, || probe(shared)).await {
                            Err(error) => Err(error),
                            Ok(()) => Err(shared.target.explain(op, sqlx::Error::PoolTimedOut)),
                        }
                    }
                    Err(Failure::Sql(error)) => Err(shared.target.explain(op, error)),
                }
            }

            /// The reason of an unreadable entry row of this dictionary.
            fn row_reason(&self, what: &str) -> String {
                damage_reason(&self.shared.sql.entries, self.ns(), self.dict(), what)
            }

            /// An entry from a row whose first columns are `entry_key, value, revision,
            /// expires_at`, read loosely: a row that cannot be read is [`Unreadable`], with its
            /// key as far as it can be read.
            fn read_entry(&self, row: &DbRow) -> std::result::Result<StoredEntry, Unreadable> {
                let bad = |key: String, what: String| Unreadable {
                    key,
                    reason: self.row_reason(&what),
                };
                let key = loose_key(row, 0).map_err(|b| bad(b.lossy, b.what))?;
                let value = match row.try_get::<Option<Vec<u8>>, _>(1) {
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

            /// Whether a row of `changes` (column 4) is a tombstone; `None` if that cannot be
            /// read.
            fn read_tombstone(row: &DbRow) -> Option<bool> {
                match row.try_get::<bool, _>(4) {
                    Ok(tombstone) => Some(tombstone),
                    Err(_) => match field(row, 4) {
                        Field::Int(0) => Some(false),
                        Field::Int(1) => Some(true),
                        _ => None,
                    },
                }
            }

            /// [`Error::Damaged`] for this dictionary's version record.
            fn damaged(&self, op: Operation, what: &str) -> Failure {
                Failure::Done(Error::Damaged {
                    backend: NAME.to_owned(),
                    operation: op,
                    reason: damage_reason(&self.shared.sql.versions, self.ns(), self.dict(), what),
                })
            }

            /// The version record (`None`: there is none), read by `sql` (`select_version` or
            /// `lock_version`) through `executor`.
            async fn read_record<'e, E>(&self, executor: E, sql: &str) -> Attempt<Option<Record>>
            where
                E: sqlx::Executor<'e, Database = Db>,
            {
                let row = q(sql)
                    .bind(self.ns())
                    .bind(self.dict())
                    .fetch_optional(executor)
                    .await?;
                Ok(row.as_ref().map(|row| raw_record(row).check()))
            }

            /// Creates or repairs the version record, in a transaction of its own. A missing
            /// record (a new dictionary, or one deleted by hand) and one written before stamps
            /// existed get a fresh epoch, the highest revision still stored as counter and a
            /// fresh stamp, so that no token handed out before names the new state and
            /// revisions keep growing. A damaged record gets the same when `damaged_too` (a
            /// write treats it as wiped); otherwise (a read) this fails with
            /// [`Error::Damaged`], having written nothing. Nothing happens if the record is
            /// valid (another process repaired it meanwhile).
            async fn repair(&self, op: Operation, damaged_too: bool) -> Attempt<()> {
                let sql = &self.shared.sql;
                let mut tx = begin_write(&self.shared.pool).await?;
                let row = q(&sql.lock_version)
                    .bind(self.ns())
                    .bind(self.dict())
                    .fetch_optional(&mut *tx)
                    .await?;
                let raw = row.as_ref().map(raw_record);
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
                let highest = q(&sql.max_revision)
                    .bind(self.ns())
                    .bind(self.dict())
                    .fetch_one(&mut *tx)
                    .await?;
                let counter = match field(&highest, 0) {
                    Field::Null => 0,
                    Field::Int(revision) if revision < COUNTER_LIMIT => revision.max(0),
                    other => {
                        Self::rollback(tx).await;
                        return Err(self.damaged(
                            op,
                            &format!(
                                "{why}, and the entries' highest revision {} is not below \
                                 2^53 - 1, so no fresh counter can be chosen",
                                other.describe()
                            ),
                        ));
                    }
                };
                let (epoch, stamp) = (fresh_epoch(), fresh_stamp());
                if raw.is_none() {
                    let created = q(&sql.insert_version)
                        .bind(self.ns())
                        .bind(self.dict())
                        .bind(epoch)
                        .bind(counter)
                        .bind(counter)
                        .bind(stamp)
                        .execute(&mut *tx)
                        .await?;
                    if created.rows_affected() == 0 {
                        // Another process created it meanwhile.
                        Self::rollback(tx).await;
                        return Ok(());
                    }
                } else {
                    q(&sql.reset_version)
                        .bind(epoch)
                        .bind(counter)
                        .bind(counter)
                        .bind(stamp)
                        .bind(self.ns())
                        .bind(self.dict())
                        .execute(&mut *tx)
                        .await?;
                }
                self.record_stamp(&mut tx, counter, stamp).await?;
                tx.commit().await?;
                match raw {
                    None => tracing::debug!(
                        backend = NAME,
                        namespace = self.ns(),
                        dictionary = self.dict(),
                        counter,
                        "created the version record"
                    ),
                    Some(raw) => tracing::warn!(
                        backend = NAME,
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
            async fn record_stamp(&self, tx: &mut Tx, counter: i64, stamp: i64) -> Attempt<()> {
                q(&self.shared.sql.record_stamp)
                    .bind(self.ns())
                    .bind(self.dict())
                    .bind(counter % STAMP_HISTORY as i64)
                    .bind(counter)
                    .bind(stamp)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Bumps a valid version record in `tx` (counter + 1, a fresh stamp recorded in the
            /// history, the old stamp as parent) and returns the new token; `None`, having
            /// written nothing, if the record is missing, damaged or unstamped.
            async fn bump(&self, tx: &mut Tx) -> Attempt<Option<Version>> {
                let sql = &self.shared.sql;
                let stamp = fresh_stamp();
                let bumped: Option<(i64, i64, i64)> = match &sql.read_bumped {
                    // Every row, so that every statement of the call runs (SQLite's bump is two).
                    None => sqlx::query_as(AssertSqlSafe(sql.bump.as_str()))
                        .bind(stamp)
                        .bind(self.ns())
                        .bind(self.dict())
                        .fetch_all(&mut **tx)
                        .await?
                        .into_iter()
                        .next(),
                    Some(read) => {
                        let done = q(&sql.bump)
                            .bind(stamp)
                            .bind(self.ns())
                            .bind(self.dict())
                            .execute(&mut **tx)
                            .await?;
                        if done.rows_affected() == 0 {
                            None
                        } else {
                            sqlx::query_as(AssertSqlSafe(read.as_str()))
                                .bind(self.ns())
                                .bind(self.dict())
                                .fetch_optional(&mut **tx)
                                .await?
                        }
                    }
                };
                let Some((epoch, counter, parent)) = bumped else {
                    return Ok(None);
                };
                if !sql.bump_records_stamp {
                    self.record_stamp(tx, counter, stamp).await?;
                }
                Ok(Some(Version::stamped(
                    epoch as u64,
                    counter as u64,
                    stamp as u64,
                    parent as u64,
                )))
            }

            /// Begins a write transaction whose first statement bumps the version record, which
            /// locks it until the commit, and returns the token the write commits (rolling back
            /// undoes the bump). A missing, unstamped or damaged record is repaired first (see
            /// [`repair`](Self::repair)), before anything is written.
            async fn begin(&self, op: Operation) -> Attempt<(Tx, Version)> {
                for _ in 0..5 {
                    let mut tx = begin_write(&self.shared.pool).await?;
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
            async fn commit(&self, tx: Tx, version: Version) -> Attempt<Version> {
                tx.commit().await?;
                self.maybe_trim().await;
                Ok(version)
            }

            async fn rollback(tx: Tx) {
                // A failed rollback means a broken connection: the pool discards it and the
                // server ends the transaction.
                let _ = tx.rollback().await;
            }

            /// The database's clock, in milliseconds since the Unix epoch.
            async fn clock<'e, E>(&self, executor: E) -> Attempt<i64>
            where
                E: sqlx::Executor<'e, Database = Db>,
            {
                Ok(sqlx::query_scalar(AssertSqlSafe(self.shared.sql.now.as_str()))
                    .fetch_one(executor)
                    .await?)
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
            ) -> Attempt<()> {
                let query = q(&self.shared.sql.upsert_entry);
                self.bind_upsert(query, key, value, revision, expires_at)
                    .execute(&mut **tx)
                    .await?;
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
            async fn tombstone(&self, tx: &mut Tx, key: &str, revision: u64) -> Attempt<bool> {
                let done = self
                    .tombstoning(&self.shared.sql.tombstone_entry, revision)
                    .bind(key_arg(key))
                    .execute(&mut **tx)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            /// The live entry of `key` (locked in a write transaction). A row that cannot be
            /// read fails `op` (writing the key replaces it).
            async fn entry(
                &self,
                op: Operation,
                tx: &mut Tx,
                key: &str,
            ) -> Attempt<Option<StoredEntry>> {
                let row = q(&self.shared.sql.select_entry)
                    .bind(self.ns())
                    .bind(self.dict())
                    .bind(key_arg(key))
                    .fetch_optional(&mut **tx)
                    .await?;
                match row.as_ref().map(|row| self.read_entry(row)).transpose() {
                    Ok(entry) => Ok(entry),
                    Err(unreadable) => Err(Failure::Done(Error::backend(
                        NAME,
                        op,
                        format!(
                            "the stored row of key {key:?} cannot be read ({}); a plain write of \
                             the key replaces it",
                            unreadable.reason
                        ),
                    ))),
                }
            }

            /// One attempt of [`persist_batch`](durable_core::Backend::persist_batch).
            async fn batch_once(&self, ops: &[BatchOp]) -> Attempt<Option<Version>> {
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
                    let mut query = q(&text);
                    for (key, value) in chunk {
                        query = self.bind_upsert(query, key, value, revision, None);
                    }
                    query.execute(&mut *tx).await?;
                }
                self.commit(tx, version).await.map(Some)
            }

            /// Trims tombstones written more than `older_than` ago, recording the oldest token
            /// that can still be served a delta. Returns how many tombstones were removed.
            ///
            /// Writes do this by themselves from time to time (at most every half retention
            /// per backend value); call it from a maintenance job to control when it happens.
            /// Fails with [`Error::Damaged`] if the dictionary's version record is damaged.
            pub async fn trim_tombstones(&self, older_than: std::time::Duration) -> Result<u64> {
                let op = Operation::Trim;
                self.run(op, None, || async {
                    let sql = &self.shared.sql;
                    let cutoff = now_millis().saturating_sub(millis(older_than));
                    let mut tx = begin_write(&self.shared.pool).await?;
                    match self.read_record(&mut *tx, &sql.lock_version).await? {
                        Some(Record::Valid(_)) => {}
                        Some(Record::Damaged(what)) => {
                            Self::rollback(tx).await;
                            return Err(self.damaged(op, &what));
                        }
                        // Nothing to trim before the record is created (it then serves no
                        // older token anyway).
                        Some(Record::Unstamped) | None => {
                            Self::rollback(tx).await;
                            return Ok(0);
                        }
                    }
                    let max: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql.trim_max.as_str()))
                        .bind(self.ns())
                        .bind(self.dict())
                        .bind(cutoff)
                        .fetch_one(&mut *tx)
                        .await?;
                    let Some(max) = max else {
                        Self::rollback(tx).await;
                        return Ok(0);
                    };
                    let removed = q(&sql.trim_delete)
                        .bind(self.ns())
                        .bind(self.dict())
                        .bind(max)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    q(&sql.set_oldest)
                        .bind(max)
                        .bind(self.ns())
                        .bind(self.dict())
                        .bind(max)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
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

            /// Deletes every row of this dictionary (entries, tombstones, the version record and
            /// its stamp history), as an operator would; open handles see a new epoch on their
            /// next check.
            pub async fn drop_dictionary(&self) -> Result<()> {
                self.run(Operation::Clear, None, || async {
                    let sql = &self.shared.sql;
                    let mut tx = begin_write(&self.shared.pool).await?;
                    for statement in [&sql.delete_entries, &sql.delete_version, &sql.delete_stamps]
                    {
                        q(statement)
                            .bind(self.ns())
                            .bind(self.dict())
                            .execute(&mut *tx)
                            .await?;
                    }
                    Ok(tx.commit().await?)
                })
                .await
            }
        }

        #[durable_core::async_trait]
        impl durable_core::Backend for $Backend {
            fn name(&self) -> &str {
                NAME
            }

            /// `{backend}/{entries table}/{namespace}/{dictionary}`: no host, user or password.
            fn location(&self) -> String {
                format!(
                    "{NAME}/{}/{}/{}",
                    self.shared.sql.entries,
                    self.ns(),
                    self.dict()
                )
            }

            fn capabilities(&self) -> Capabilities {
                self.capabilities_impl()
            }

            async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
                let op = Operation::Persist;
                check_key(NAME, key)?;
                let value = &value;
                self.run(op, Some(key), || async move {
                    let (mut tx, version) = self.begin(op).await?;
                    self.upsert(&mut tx, key, value, version.counter(), None).await?;
                    self.commit(tx, version).await
                })
                .await
            }

            async fn depersist(&self, key: &str) -> Result<Option<Version>> {
                let op = Operation::Depersist;
                check_key(NAME, key)?;
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
                let op = Operation::Load;
                self.run(op, None, || async {
                    for _ in 0..5 {
                        let mut tx = begin_read(&self.shared.pool).await?;
                        let stored =
                            match self.read_record(&mut *tx, &self.shared.sql.select_version).await? {
                                Some(Record::Valid(stored)) => stored,
                                Some(Record::Damaged(what)) => {
                                    Self::rollback(tx).await;
                                    return Err(self.damaged(op, &what));
                                }
                                // A new or wiped dictionary, or a record from before stamps.
                                Some(Record::Unstamped) | None => {
                                    Self::rollback(tx).await;
                                    self.repair(op, false).await?;
                                    continue;
                                }
                            };
                        let rows = q(&self.shared.sql.load_entries)
                            .bind(self.ns())
                            .bind(self.dict())
                            .fetch_all(&mut *tx)
                            .await?;
                        Self::rollback(tx).await;
                        let mut entries = Vec::with_capacity(rows.len());
                        let mut unreadable = Vec::new();
                        for row in &rows {
                            match self.read_entry(row) {
                                Ok(entry) => entries.push(entry),
                                Err(bad) => unreadable.push(bad),
                            }
                        }
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

            async fn last_updated(&self) -> Result<Version> {
                let op = Operation::Version;
                self.run(op, None, || async {
                    for _ in 0..5 {
                        let sql = &self.shared.sql.select_version;
                        match self.read_record(&self.shared.pool, sql).await? {
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
                    let mut tx = begin_read(&self.shared.pool).await?;
                    let slot = (since.counter() % STAMP_HISTORY) as i64;
                    let row = q(&sql.select_version_at)
                        .bind(slot)
                        .bind(self.ns())
                        .bind(self.dict())
                        .fetch_optional(&mut *tx)
                        .await?;
                    let stored = match row.as_ref().map(|row| raw_record(row).check()) {
                        Some(Record::Valid(stored)) => stored,
                        Some(Record::Damaged(what)) => {
                            Self::rollback(tx).await;
                            return Err(self.damaged(op, &what));
                        }
                        // Wiped, or from before stamps: the next version check gives a fresh
                        // epoch.
                        Some(Record::Unstamped) | None => {
                            Self::rollback(tx).await;
                            return Ok(Changes::TooOld);
                        }
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
                    let rows = q(&sql.changes)
                        .bind(self.ns())
                        .bind(self.dict())
                        .bind(since.counter() as i64)
                        .fetch_all(&mut *tx)
                        .await?;
                    Self::rollback(tx).await;
                    let mut upserts = Vec::new();
                    let mut removals = Vec::new();
                    let mut unreadable = Vec::new();
                    for row in &rows {
                        match Self::read_tombstone(row) {
                            // A delete: only its key matters. One of a key that cannot be read
                            // names no key a snapshot holds (its lossy form may be another,
                            // valid key: a BLOB "k" beside the text "k"): skipped.
                            Some(true) => {
                                let Ok(key) = loose_key(row, 0) else {
                                    continue;
                                };
                                let revision = match field(row, 2) {
                                    Field::Int(revision) => Revision(revision.max(0) as u64),
                                    _ => Revision(0),
                                };
                                removals.push((key, revision));
                            }
                            Some(false) => match self.read_entry(row) {
                                Ok(entry) => upserts.push(entry),
                                Err(bad) => unreadable.push(bad),
                            },
                            None => {
                                let key = loose_key(row, 0).unwrap_or_else(|bad| bad.lossy);
                                let shown = shown_with_type(row, 4);
                                unreadable.push(Unreadable {
                                    key,
                                    reason: self.row_reason(&format!(
                                        "tombstone {shown} is not a boolean"
                                    )),
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
                self.subscribe_impl().await
            }

            async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
                let op = Operation::InsertIfAbsent;
                check_key(NAME, key)?;
                let value = &value;
                self.run(op, Some(key), || async move {
                    let (mut tx, version) = self.begin(op).await?;
                    if let Some(entry) = self.entry(op, &mut tx, key).await? {
                        Self::rollback(tx).await;
                        return Ok(IfAbsent::Present(entry));
                    }
                    self.upsert(&mut tx, key, value, version.counter(), None).await?;
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
                check_key(NAME, key)?;
                let new = &new;
                self.run(op, Some(key), || async move {
                    let (mut tx, version) = self.begin(op).await?;
                    let entry = self.entry(op, &mut tx, key).await?;
                    if entry.as_ref().map(|e| e.revision) != expected
                        || (entry.is_none() && new.is_none())
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
                check_key(NAME, key)?;
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
                check_key(NAME, key)?;
                self.run(op, Some(key), || async {
                    let (mut tx, version) = self.begin(op).await?;
                    let value = match self.entry(op, &mut tx, key).await? {
                        Some(entry) => parse_counter(&entry.value),
                        None => Some(0),
                    };
                    let Some(new) = value.and_then(|v| v.checked_add(delta)) else {
                        Self::rollback(tx).await;
                        return Err(Error::NotAnInteger {
                            backend: NAME.to_owned(),
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
                self.run(Operation::Batch, None, || self.batch_once(&ops)).await
            }

            async fn clear(&self) -> Result<Option<Version>> {
                let op = Operation::Clear;
                self.run(op, None, || async {
                    let (mut tx, version) = self.begin(op).await?;
                    let done = self
                        .tombstoning(&self.shared.sql.clear, version.counter())
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        Self::rollback(tx).await;
                        return Ok(None);
                    }
                    self.commit(tx, version).await.map(Some)
                })
                .await
            }

            async fn now(&self) -> Result<StoreTime> {
                self.run(Operation::Now, None, || self.clock(&self.shared.pool))
                    .await
                    .map(store_time)
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
                self.run(op, Some(key), || async move {
                    let (mut tx, version) = self.begin(op).await?;
                    // The database's time of the write, read under the version row lock.
                    let expires_at = self.clock(&mut *tx).await?.saturating_add(millis(ttl));
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
                    let (mut tx, version) = self.begin(op).await?;
                    // One reading of the clock for both statements, so that they agree on what
                    // has expired (writers of the dictionary wait for the version row lock).
                    let now = self.clock(&mut *tx).await?;
                    let rows = q(&self.shared.sql.select_expired)
                        .bind(self.ns())
                        .bind(self.dict())
                        .bind(now)
                        .fetch_all(&mut *tx)
                        .await?;
                    if rows.is_empty() {
                        Self::rollback(tx).await;
                        return Ok(None);
                    }
                    // Rows whose key cannot be read are swept too, but name no key a snapshot
                    // holds.
                    let keys = rows.iter().filter_map(|row| loose_key(row, 0).ok()).collect();
                    self.tombstoning(&self.shared.sql.sweep, version.counter())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    let version = self.commit(tx, version).await?;
                    Ok(Some(Swept { version, keys }))
                })
                .await
            }
        }
    };
}

pub(crate) use backend_impl;
