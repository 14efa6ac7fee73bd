//! Version records the current code did not write: tables and rows of the previous release
//! (no stamps), records without a stamp, and damaged records, on every database (PostgreSQL and
//! MariaDB from `DURABLE_TEST_POSTGRES_URL` / `DURABLE_TEST_MYSQL_URL`, SQLite in a temporary
//! file).

mod support;

use durable_core::conformance::server_from_env;
use durable_core::{Changes, Error, Mode, Raw};
use durable_sql::SqlOptions;
use support::{Store, random_name};

/// The stores to test, each over private tables (prefix returned), with a directory to keep.
async fn databases() -> Vec<(&'static str, String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut out = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("records.db").display()),
        Some(dir),
    )];
    if let Some(url) = server_from_env("DURABLE_TEST_POSTGRES_URL") {
        out.push(("postgres", url, None));
    }
    if let Some(url) = server_from_env("DURABLE_TEST_MYSQL_URL") {
        out.push(("mysql", url, None));
    }
    out
}

async fn open(kind: &str, url: &str, prefix: &str) -> Store {
    let options = SqlOptions::new().with_table_prefix(prefix);
    Store::open(kind, url, options)
        .await
        .expect("open the store")
}

/// The tables of the previous release (before stamps), as it created them.
fn old_schema(kind: &str, p: &str) -> Vec<String> {
    let (name, int, bytes) = match kind {
        "postgres" => ("TEXT", "BIGINT", "BYTEA"),
        "mysql" => ("VARBINARY(128)", "BIGINT", "LONGBLOB"),
        _ => ("TEXT", "INTEGER", "BLOB"),
    };
    let key = if kind == "mysql" {
        "VARBINARY(2048)"
    } else {
        "TEXT"
    };
    vec![
        format!(
            "CREATE TABLE {p}_versions (namespace {name} NOT NULL, dictionary {name} NOT NULL, \
             epoch {int} NOT NULL, counter {int} NOT NULL, oldest_served {int} NOT NULL DEFAULT \
             0, PRIMARY KEY (namespace, dictionary))"
        ),
        format!(
            "CREATE TABLE {p}_entries (namespace {name} NOT NULL, dictionary {name} NOT NULL, \
             entry_key {key} NOT NULL, value {bytes} NOT NULL, revision {int} NOT NULL, tombstone \
             BOOLEAN NOT NULL DEFAULT FALSE, written_at {int} NOT NULL DEFAULT 0, expires_at \
             {int}, PRIMARY KEY (namespace, dictionary, entry_key))"
        ),
    ]
}

/// A byte string literal `s` in `kind`'s SQL.
fn bytes_literal(kind: &str, s: &str) -> String {
    let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
    match kind {
        "postgres" => format!("decode('{hex}', 'hex')"),
        _ => format!("X'{hex}'"),
    }
}

/// Tables and rows written by the previous release are migrated on connect without losing
/// data; the unstamped record gets a fresh epoch and a stamp, and everything works from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_the_previous_release_are_migrated_on_connect() {
    for (kind, url, _dir) in databases().await {
        let prefix = random_name("old_");
        // A store over other tables, only for its pool.
        let setup = open(kind, &url, &random_name("setup_")).await;
        for ddl in old_schema(kind, &prefix) {
            setup.exec(&ddl).await;
        }
        let ns = random_name("ns");
        setup
            .exec(&format!(
                "INSERT INTO {prefix}_versions (namespace, dictionary, epoch, counter, \
                 oldest_served) VALUES ('{ns}', 'd', 1234, 5, 0)"
            ))
            .await;
        for revision in 1..=5 {
            setup
                .exec(&format!(
                    "INSERT INTO {prefix}_entries (namespace, dictionary, entry_key, value, \
                     revision, tombstone, written_at) VALUES ('{ns}', 'd', 'k{revision}', {}, \
                     {revision}, {}, 0)",
                    bytes_literal(kind, &format!("v{revision}")),
                    if revision == 3 { "TRUE" } else { "FALSE" }
                ))
                .await;
        }

        let store = open(kind, &url, &prefix).await;
        let d = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
        let snapshot = d.snapshot();
        let keys: Vec<_> = snapshot.keys().map(str::to_owned).collect::<Vec<_>>();
        let mut keys = keys;
        keys.sort();
        assert_eq!(
            keys,
            ["k1", "k2", "k4", "k5"],
            "{kind}: the entries survived"
        );
        assert_eq!(snapshot.get("k5"), Some(&b"v5".to_vec()));
        let token = snapshot.version();
        assert_ne!(
            token.epoch(),
            1234,
            "{kind}: an unstamped record gets a fresh epoch"
        );
        assert_ne!(token.stamp(), 0, "{kind}: and a stamp");
        assert_eq!(
            token.counter(),
            5,
            "{kind}: counter = the highest stored revision"
        );
        let backend = store.backend(&ns, "d");
        assert_eq!(
            backend.last_updated().await.unwrap(),
            token,
            "{kind}: stable"
        );

        // Writes and deltas work from there on.
        let written = backend.persist("k6", b"v6".to_vec().into()).await.unwrap();
        assert!(written.follows(&token), "{kind}: {written} follows {token}");
        match backend.changes_since(token).await.unwrap() {
            Changes::Delta(delta) => {
                assert_eq!(delta.version, written);
                assert_eq!(delta.upserts.len(), 1);
            }
            Changes::TooOld => panic!("{kind}: no delta from the migrated token"),
        }
        assert_eq!(d.sync().await.unwrap().len(), 5);

        // A second connect finds nothing to do.
        let again = open(kind, &url, &prefix).await;
        assert_eq!(
            again.backend(&ns, "d").last_updated().await.unwrap(),
            written
        );
        store.drop_tables().await;
        setup.drop_tables().await;
    }
}

/// A record whose stamp is missing (written by a process of the previous release, say) is
/// treated as a fresh epoch: open handles reload once, then carry on with deltas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_stamp_makes_handles_reload_once() {
    for (kind, url, _dir) in databases().await {
        let store = open(kind, &url, &random_name("nostamp_")).await;
        let ns = random_name("ns");
        let d = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
        d.insert("a", b"1".to_vec()).await.unwrap();
        let before = d.snapshot().version();
        let reloads = d.stats().reloads;
        store
            .exec(&format!(
                "UPDATE {{v}} SET stamp = NULL, counter = counter + 1 WHERE namespace = '{ns}'"
            ))
            .await;
        let after = d.sync().await.unwrap().version();
        assert_ne!(after.epoch(), before.epoch(), "{kind}: a fresh epoch");
        assert_ne!(after.stamp(), 0, "{kind}");
        assert_eq!(d.stats().reloads, reloads + 1, "{kind}: one reload");
        d.insert("b", b"2".to_vec()).await.unwrap();
        let other = store.dict::<Vec<u8>, _>(&ns, "d", Raw, Mode::Manual).await;
        other.insert("c", b"3".to_vec()).await.unwrap();
        assert_eq!(d.sync().await.unwrap().len(), 3);
        assert_eq!(
            d.stats().reloads,
            reloads + 1,
            "{kind}: a delta, no second reload"
        );
        store.drop_tables().await;
    }
}

/// Reads of a damaged record fail with `Error::Damaged` naming the table, namespace,
/// dictionary and what is wrong; a write treats the record as wiped (a fresh epoch, the counter
/// at the highest stored revision) before writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_record_reads_name_the_row_and_a_write_repairs_it() {
    for (kind, url, _dir) in databases().await {
        let store = open(kind, &url, &random_name("damaged_")).await;
        let (_, versions, _) = store.tables();
        let versions = versions.to_owned();
        let ns = random_name("ns");
        let backend = store.backend(&ns, "d");
        let mut issued = Vec::new();
        for i in 0..3 {
            issued.push(
                backend
                    .persist(&format!("k{i}"), b"v".to_vec().into())
                    .await
                    .unwrap(),
            );
        }
        let mut damages = vec![("counter = -5", "counter -5 is negative")];
        if kind == "sqlite" {
            damages.push(("counter = 'x'", "counter is not an integer: \"x\""));
            damages.push(("stamp = 'x'", "stamp is not an integer: \"x\""));
            damages.push(("counter = 2.5", "counter is not an integer: 2.5"));
        }
        for (set, what) in damages {
            store
                .exec(&format!("UPDATE {{v}} SET {set} WHERE namespace = '{ns}'"))
                .await;
            for result in [
                backend.last_updated().await.map(drop),
                backend.durables().await.map(drop),
                backend.changes_since(issued[0]).await.map(drop),
            ] {
                match result {
                    Err(Error::Damaged { reason, .. }) => {
                        for part in [versions.as_str(), ns.as_str(), "\"d\"", what] {
                            assert!(reason.contains(part), "{kind}: {reason:?} names {part:?}");
                        }
                    }
                    other => panic!("{kind}, {set}: expected Damaged, got {other:?}"),
                }
            }
            let repaired = backend.persist("k9", b"w".to_vec().into()).await.unwrap();
            assert!(
                issued.iter().all(|v| v.epoch() != repaired.epoch()),
                "{kind}, {set}: a fresh epoch"
            );
            assert_eq!(
                repaired.counter(),
                issued.last().unwrap().counter() + 1,
                "{kind}"
            );
            let load = backend.durables().await.unwrap();
            assert_eq!(load.version, repaired, "{kind}, {set}");
            assert_eq!(load.entries.len(), 4, "{kind}, {set}: nothing lost");
            issued.push(repaired);
        }
        // A token without a stamp (from a backup file of the previous release) gets a reload.
        let current = backend.last_updated().await.unwrap();
        let unstamped = durable_core::Version::new(current.epoch(), current.counter());
        assert_eq!(
            backend.changes_since(unstamped).await.unwrap(),
            Changes::TooOld,
            "{kind}"
        );
        store.drop_tables().await;
    }
}
