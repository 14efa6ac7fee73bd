//! Faults: tables truncated by hand (also while handles load and write: MariaDB's 1412), a
//! garbage value written by hand (and rows of every kind the layouts can hold that the backend
//! cannot read), the LISTEN connection killed, a load's connection killed mid-stream, and two
//! processes writing to one SQLite file.

mod support;

use std::time::Duration;

use durable_core::conformance::{self, server_from_env};
use durable_core::{DecodeErrors, Error, Json, Mode, Raw};
use durable_sql::SqlOptions;
use support::{Store, random_name};

/// Each test gets private tables, so that truncating them disturbs nobody.
async fn private_store(kind: &str, url: &str) -> Store {
    let options = SqlOptions::new().with_table_prefix(random_name("fault_"));
    Store::open(kind, url, options)
        .await
        .expect("open the store")
}

async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("f.db").display());
    out.push((private_store("sqlite", &url).await, Some(dir)));
    if let Some(url) = server_from_env("DURABLE_TEST_POSTGRES_URL") {
        out.push((private_store("postgres", &url).await, None));
    }
    if let Some(url) = server_from_env("DURABLE_TEST_MYSQL_URL") {
        out.push((private_store("mysql", &url).await, None));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_tables_make_every_handle_reload() {
    for (store, _dir) in stores().await {
        let ns = random_name("ns");
        let a = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
        let b = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
        for i in 0..3 {
            a.insert(&format!("k{i}"), b"v".to_vec()).await.unwrap();
        }
        let other = store
            .dict::<Vec<u8>, _>(&ns, "other", Raw, Mode::Manual)
            .await;
        other.insert("x", b"1".to_vec()).await.unwrap();
        assert_eq!(b.sync().await.unwrap().len(), 3);
        let before = (a.stats().reloads, b.stats().reloads, other.stats().reloads);
        store.truncate().await;
        for (handle, reloads) in [(&a, before.0), (&b, before.1), (&other, before.2)] {
            let snapshot = handle.sync().await.unwrap();
            assert!(
                snapshot.is_empty(),
                "{store:?}: stale entries after TRUNCATE: {:?} {:?}",
                snapshot.keys().collect::<Vec<_>>(),
                handle.stats()
            );
            assert_eq!(handle.stats().reloads, reloads + 1, "{store:?}: no reload");
        }
        // Writing again starts a new epoch; the other handles follow.
        a.insert("again", b"1".to_vec()).await.unwrap();
        assert_eq!(b.sync().await.unwrap().len(), 1);
        store.drop_tables().await;
    }
}

/// A value written by hand that the handle's encoding cannot decode costs that key only (the
/// default, `DecodeErrors::Isolate`): syncs and opens succeed, the key keeps its last good value
/// (absent in a fresh handle) and health names it; with `DecodeErrors::Fail` the sync fails
/// with a typed decode error naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_value_costs_its_key_only() {
    for (store, _dir) in stores().await {
        let ns = random_name("ns");
        let d = store.dict::<u32, _>(&ns, "json", Json, Mode::Manual).await;
        let strict = durable_core::Dict::<u32, Json>::open(
            store.backend(&ns, "json"),
            Json,
            durable_core::Options::new().with_decode_errors(DecodeErrors::Fail),
        )
        .await
        .unwrap();
        d.insert("good", 1).await.unwrap();
        d.insert("bad", 2).await.unwrap();
        strict.sync().await.unwrap();
        store
            .exec(&format!(
                "UPDATE {{e}} SET value = 'garbage{{', revision = revision + 1000 WHERE \
                 namespace = '{ns}' AND entry_key = 'bad'"
            ))
            .await;
        store
            .exec(&format!(
                "UPDATE {{v}} SET counter = counter + 1000 WHERE namespace = '{ns}'"
            ))
            .await;
        let snapshot = d.sync().await.unwrap_or_else(|e| panic!("{store:?}: {e}"));
        assert_eq!(snapshot.get("good"), Some(&1), "{store:?}");
        assert_eq!(
            snapshot.get("bad"),
            Some(&2),
            "{store:?}: the last good value stays"
        );
        drop(snapshot);
        let bad = d.health().bad_keys;
        assert!(
            bad.iter()
                .any(|b| b.key == "bad" && b.error.contains("json")),
            "{store:?}: {bad:?}"
        );
        // A fresh handle opens, without the key, and names it.
        let fresh = store.dict::<u32, _>(&ns, "json", Json, Mode::Manual).await;
        assert_eq!(fresh.snapshot().get("good"), Some(&1), "{store:?}");
        assert_eq!(fresh.snapshot().get("bad"), None, "{store:?}");
        assert!(
            fresh.health().bad_keys.iter().any(|b| b.key == "bad"),
            "{store:?}"
        );
        // Under DecodeErrors::Fail the sync fails, naming the key, and the snapshot stays.
        match strict.sync().await {
            Err(Error::Decode { key, .. }) => assert_eq!(key, "bad", "{store:?}"),
            other => panic!("{store:?}: expected a decode error, got {other:?}"),
        }
        assert_eq!(strict.snapshot().get("bad"), Some(&2));
        // Rewriting the key clears it.
        d.insert("bad", 3).await.unwrap();
        assert_eq!(fresh.sync().await.unwrap().get("bad"), Some(&3));
        assert!(fresh.health().bad_keys.is_empty(), "{store:?}");
        store.drop_tables().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_listen_connection_still_sees_the_next_change() {
    let Some(url) = server_from_env("DURABLE_TEST_POSTGRES_URL") else {
        return;
    };
    let store = private_store("postgres", &url).await;
    let Store::Pg(pg) = &store else {
        unreachable!()
    };
    let ns = random_name("ns");
    // Background mode with an hour between polls: only hints (or a resubscription) can wake it.
    let watcher = store
        .dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::background(Duration::from_secs(3600)))
        .await;
    let writer = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
    let seen = async |value: &[u8]| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while watcher.snapshot().get("k").map(Vec::as_slice) != Some(value) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "change {value:?} not seen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    writer.insert("k", b"1".to_vec()).await.unwrap();
    seen(b"1").await;

    let killed: Vec<(bool,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN \"{}\"'",
        pg.channel()
    )))
    .fetch_all(pg.pool())
    .await
    .unwrap();
    assert_eq!(killed.len(), 1, "exactly one LISTEN connection");
    // Written right after the kill: its notification may be lost in the gap, but the listener
    // reconnects and tells the handle to check.
    writer.insert("k", b"2".to_vec()).await.unwrap();
    seen(b"2").await;
    // And hints flow again afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.insert("k", b"3".to_vec()).await.unwrap();
    seen(b"3").await;
    store.drop_tables().await;
}

const CHILD_ENV: &str = "DURABLE_SQL_CHILD_DB";
const CHILD_WRITES: u32 = 150;

/// The writer run in each child process (does nothing when run directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_child_writer() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let id = std::env::var("DURABLE_SQL_CHILD_ID").unwrap();
    let store = Store::open("sqlite", &url, SqlOptions::new())
        .await
        .expect("open the store");
    let counters = store
        .dict::<i64, _>("procs", "shared", Json, Mode::Manual)
        .await;
    for i in 0..CHILD_WRITES {
        counters.increment("total", 1).await.unwrap();
        counters
            .insert(&format!("{id}-{i}"), i64::from(i))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_sqlite_file_without_lost_writes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    // Create the file and schema first, as the first process of a deployment would.
    let store = Store::open("sqlite", &url, SqlOptions::new())
        .await
        .expect("open the store");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|id| {
            tokio::process::Command::new(&exe)
                .args(["--exact", "sqlite_child_writer", "--test-threads", "1"])
                .env(CHILD_ENV, &url)
                .env("DURABLE_SQL_CHILD_ID", id)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().await.unwrap().success(),
            "a writer process failed"
        );
    }
    let d = store
        .dict::<i64, _>("procs", "shared", Json, Mode::Manual)
        .await;
    let snapshot = d.snapshot();
    assert_eq!(snapshot.get("total"), Some(&i64::from(2 * CHILD_WRITES)));
    assert_eq!(snapshot.len(), 1 + 2 * CHILD_WRITES as usize);
    let version = store
        .backend("procs", "shared")
        .last_updated()
        .await
        .unwrap();
    assert_eq!(
        version.counter(),
        u64::from(4 * CHILD_WRITES),
        "one bump per write"
    );
}

/// Counts durable-sql's `retrying` events whose error is MariaDB's 1412 ("Table definition has
/// changed, please retry transaction").
#[derive(Clone, Default)]
struct Retries1412(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Retries1412 {
    fn count(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl tracing::Subscriber for Retries1412 {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        #[derive(Default)]
        struct Fields {
            retrying: bool,
            table_changed: bool,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let text = format!("{value:?}");
                match field.name() {
                    "message" => self.retrying = text == "retrying",
                    "error" => self.table_changed = text.contains("1412"),
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.retrying && fields.table_changed {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// MariaDB answers 1412 to a consistent-snapshot transaction that reads a table truncated after
/// its snapshot began. Loads and deltas of one dictionary and writes of another, while the
/// entries table is truncated again and again: the reads meet 1412, retry, and no
/// `Error::Backend` escapes (every error is Unavailable, Timeout or Contention).
///
/// One thread, so that the counting subscriber sees every task's events.
#[tokio::test(flavor = "current_thread")]
async fn mariadb_table_definition_changed_is_retried() {
    let Some(url) = server_from_env("DURABLE_TEST_MYSQL_URL") else {
        return;
    };
    let retries = Retries1412::default();
    let _subscriber = tracing::subscriber::set_default(retries.clone());
    let store = private_store("mysql", &url).await;
    let Store::My(my) = &store else {
        unreachable!()
    };
    let (entries, versions, _) = store.tables();
    let ns = random_name("ns");

    // The server's answer, provoked by hand: a snapshot taken, the table truncated, then read.
    let writer = store.backend(&ns, "read");
    for i in 0..50 {
        writer
            .persist(&format!("k{i}"), vec![1; 100].into())
            .await
            .unwrap();
    }
    let begin = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";
    let mut snapshot = my.pool().begin_with(begin).await.unwrap();
    let count = |table: &str| format!("SELECT COUNT(*) FROM {table}");
    let _: (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(count(versions)))
        .fetch_one(&mut *snapshot)
        .await
        .unwrap();
    store.exec("TRUNCATE TABLE {e}").await;
    let error = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(count(entries)))
        .fetch_one(&mut *snapshot)
        .await
        .expect_err("a snapshot older than the TRUNCATE reads the table");
    let number = error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .map(|e| e.number());
    assert_eq!(number, Some(1412), "{error}");
    snapshot.rollback().await.unwrap();

    // The same through durable, with handles busy on two dictionaries.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..6 {
        let backend = store.backend(&ns, if task < 4 { "read" } else { "write" });
        let stop = stop.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut done = 0u64;
            let mut token = backend.last_updated().await.unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let result = match task {
                    // Full loads, and deltas from a token of the same epoch.
                    0 | 1 => backend.durables().await.map(drop),
                    2 | 3 => backend.changes_since(token).await.map(drop),
                    _ => backend
                        .persist(&format!("w{}", done % 20), vec![2; 100].into())
                        .await
                        .map(|v| token = v),
                };
                match result {
                    Ok(()) => {
                        done += 1;
                        progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(error) => errors.push(error),
                }
                if task == 2 || task == 3 {
                    token = backend.last_updated().await.unwrap_or(token);
                }
            }
            (done, errors)
        }));
    }
    // Until enough work met enough truncates (a loaded machine gets there later, not less).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut truncates = 0;
    while (truncates < 20 || progress.load(std::sync::atomic::Ordering::SeqCst) <= 100)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
        store.exec("TRUNCATE TABLE {e}").await;
        truncates += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut done, mut errors) = (0, Vec::new());
    for task in tasks {
        let (d, e) = task.await.unwrap();
        done += d;
        errors.extend(e);
    }
    eprintln!(
        "{truncates} truncates, {done} operations, {} retries after 1412, errors: {errors:?}",
        retries.count()
    );
    for error in &errors {
        assert!(
            error.is_unavailable() || matches!(error, Error::Contention { .. }),
            "an operation failed with {error:?}"
        );
    }
    assert!(done > 100, "the handles worked: {done} operations");
    assert!(retries.count() > 0, "no operation met 1412");
    store.drop_tables().await;
}

/// Rows written by hand that the backend cannot read, of every kind each database can hold (a
/// NULL value, where a table created by another program allows it; a revision out of range; on
/// MySQL a key that is not UTF-8; on SQLite, whose columns take any type, values, revisions and
/// expiry times of other types, a key that is not UTF-8 and one stored as a BLOB): each costs its
/// key only, in deltas and full loads, named (as far as it can be read) with a reason naming the
/// table, namespace and dictionary; a write that must read such a row fails naming the key, and a
/// plain write replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_rows_cost_their_key_only() {
    for (store, _dir) in stores().await {
        let (e, _, _) = store.tables();
        let e = e.to_owned();
        // The value column made nullable, as a table created by another program may be.
        match &store {
            Store::Pg(_) => {
                store
                    .exec("ALTER TABLE {e} ALTER COLUMN value DROP NOT NULL")
                    .await
            }
            Store::My(_) => {
                store
                    .exec("ALTER TABLE {e} MODIFY value LONGBLOB NULL")
                    .await
            }
            Store::Lite(_) => {
                store.exec("DROP TABLE {e}").await;
                store
                    .exec(
                        "CREATE TABLE {e} (namespace TEXT NOT NULL, dictionary TEXT NOT NULL, \
                         entry_key TEXT NOT NULL, value BLOB, revision INTEGER NOT NULL, \
                         tombstone BOOLEAN NOT NULL DEFAULT FALSE, written_at INTEGER NOT NULL \
                         DEFAULT 0, expires_at INTEGER, PRIMARY KEY (namespace, dictionary, \
                         entry_key))",
                    )
                    .await;
            }
        }
        let ns = random_name("ns");
        let d = store.dict::<u32, _>(&ns, "d", Json, Mode::Manual).await;
        let mut victims = vec!["null-value", "huge-revision"];
        if matches!(store, Store::Lite(_)) {
            victims.extend(["int-value", "real-value", "text-revision", "text-expiry"]);
        }
        d.insert("good", 1).await.unwrap();
        for (i, key) in victims.iter().enumerate() {
            d.insert(key, i as u32 + 10).await.unwrap();
        }
        // Another program's write: a bump of the version record (a stamp recorded in the
        // history), then the rows with the new counter as their revision.
        let rows = format!("namespace = '{ns}' AND dictionary = 'd'");
        let counter = format!("(SELECT counter FROM {{v}} WHERE {rows})");
        let history = durable_core::STAMP_HISTORY;
        let mut statements = vec![
            format!(
                "UPDATE {{v}} SET counter = counter + 1, parent = stamp, stamp = 77 WHERE {rows}"
            ),
            format!(
                "DELETE FROM {{s}} WHERE {rows} AND slot = (SELECT counter % {history} FROM {{v}} \
                 WHERE {rows})"
            ),
            format!(
                "INSERT INTO {{s}} (namespace, dictionary, slot, counter, stamp) SELECT \
                 namespace, dictionary, counter % {history}, counter, stamp FROM {{v}} WHERE {rows}"
            ),
            format!(
                "UPDATE {{e}} SET value = NULL, revision = {counter} WHERE {rows} AND entry_key = 'null-value'"
            ),
            format!(
                "UPDATE {{e}} SET revision = 9007199254740991 WHERE {rows} AND entry_key = 'huge-revision'"
            ),
        ];
        let insert = |key_sql: &str| {
            format!(
                "INSERT INTO {{e}} (namespace, dictionary, entry_key, value, revision, tombstone, \
                 written_at) SELECT namespace, dictionary, {key_sql}, X'31', counter, FALSE, 0 \
                 FROM {{v}} WHERE {rows}"
            )
        };
        // Keys that cannot be read, and how they are named: lossy UTF-8.
        let mut bad_keys: Vec<&str> = Vec::new();
        match &store {
            Store::My(_) => {
                statements.push(insert("X'6b6579ff'"));
                bad_keys.push("key\u{fffd}");
            }
            Store::Lite(_) => {
                statements.extend([
                    format!("UPDATE {{e}} SET value = 12345, revision = {counter} WHERE {rows} AND entry_key = 'int-value'"),
                    format!("UPDATE {{e}} SET value = 1.5, revision = {counter} WHERE {rows} AND entry_key = 'real-value'"),
                    format!("UPDATE {{e}} SET revision = 'soon' WHERE {rows} AND entry_key = 'text-revision'"),
                    format!("UPDATE {{e}} SET expires_at = 'later', revision = {counter} WHERE {rows} AND entry_key = 'text-expiry'"),
                    insert("CAST(X'6b6579ff' AS TEXT)"),
                    insert("X'626c6f62'"),
                ]);
                bad_keys.extend(["key\u{fffd}", "blob"]);
            }
            Store::Pg(_) => {}
        }
        store.exec_in_transaction(&statements).await;

        let named = |bad: &[durable_core::BadKey], key: &str| {
            bad.iter().any(|b| {
                b.key == key
                    && b.error.contains(&e)
                    && b.error.contains(&format!("namespace \"{ns}\""))
                    && b.error.contains("dictionary \"d\"")
            })
        };
        // A delta (the other program recorded its stamp, so the handle's token is served).
        let deltas = d.stats().deltas;
        let snapshot = d
            .sync()
            .await
            .unwrap_or_else(|err| panic!("{store:?}: {err}"));
        assert_eq!(snapshot.get("good"), Some(&1), "{store:?}");
        for (i, key) in victims.iter().enumerate() {
            assert_eq!(
                snapshot.get(key),
                Some(&(i as u32 + 10)),
                "{store:?}: {key}"
            );
        }
        drop(snapshot);
        assert_eq!(d.stats().deltas, deltas + 1, "{store:?}: {:?}", d.stats());
        let bad = d.health().bad_keys;
        for key in victims.iter().chain(&bad_keys) {
            assert!(named(&bad, key), "{store:?}: {key:?} not named: {bad:?}");
        }
        // A full load.
        let load = store.backend(&ns, "d").durables().await.unwrap();
        assert_eq!(load.entries.len(), 1, "{store:?}: {load:?}");
        assert_eq!(
            load.unreadable.len(),
            victims.len() + bad_keys.len(),
            "{store:?}: {load:?}"
        );
        let fresh = store.dict::<u32, _>(&ns, "d", Json, Mode::Manual).await;
        assert_eq!(fresh.snapshot().len(), 1, "{store:?}");
        let bad = fresh.health().bad_keys;
        for key in victims.iter().chain(&bad_keys) {
            assert!(named(&bad, key), "{store:?}: {key:?} not named: {bad:?}");
        }
        // A write that reads the row fails, naming the key; a plain write replaces it.
        let error = d
            .increment("null-value", 1)
            .await
            .expect_err("an unreadable row");
        assert!(
            error.to_string().contains("\"null-value\""),
            "{store:?}: {error}"
        );
        for key in &victims {
            d.insert(key, 7).await.unwrap();
        }
        let snapshot = fresh.sync().await.unwrap();
        for key in &victims {
            assert_eq!(snapshot.get(key), Some(&7), "{store:?}");
        }
        drop(snapshot);
        let bad = fresh.health().bad_keys;
        assert!(
            bad.iter().all(|b| !victims.contains(&b.key.as_str())),
            "{store:?}: {bad:?}"
        );
        store.drop_tables().await;
    }
}

/// A full load whose connection is killed after its first part was handed over fails as
/// unavailable, naming the backend, and never ends short; the next load hands over every key
/// once. 32 MiB of rows, more than loopback sockets buffer, make the kill land mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_killed_mid_stream_fails_and_the_next_is_whole() {
    const KEYS: usize = 32_768;
    for (store, _dir) in stores().await {
        if matches!(store, Store::Lite(_)) {
            continue; // a file has no connection to kill
        }
        let ns = random_name("ns");
        let d = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
        let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i:05}")).collect();
        for chunk in keys.chunks(2_048) {
            let batch = chunk.iter().map(|k| (k.clone(), vec![b'v'; 1024]));
            d.insert_many(batch).await.unwrap();
        }
        let backend = store.backend(&ns, "d");
        let mut killed = 0;
        let kill = async { killed = store.kill_queries_on_entries().await };
        let cut = conformance::load_cut_after_its_first_part(&*backend, kill).await;
        assert!(cut.cut, "{store:?}: the load handed a part over");
        assert_eq!(killed, 1, "{store:?}: one connection killed");
        let error = match cut.load {
            Ok(load) => panic!(
                "{store:?}: the load ended without error after its connection was killed, with \
                 {} of {KEYS} keys",
                cut.handed.len() + load.entries.len()
            ),
            Err(error) => error,
        };
        let message = error.to_string();
        assert!(error.is_unavailable(), "{store:?}: {message}");
        assert!(
            message.contains(backend.name()),
            "{store:?}: the error names the backend: {message}"
        );

        let (_, rows) = conformance::load_in_parts(&*backend).await.unwrap();
        let mut loaded: Vec<String> = rows.into_iter().map(|row| row.key).collect();
        loaded.sort();
        assert_eq!(loaded, keys, "{store:?}: every key once");
        store.drop_tables().await;
    }
}
