//! `SqlStore::dictionaries`: the dictionaries of a namespace, read without writing anything, on
//! SQLite, PostgreSQL and MariaDB (`DURABLE_TEST_POSTGRES_URL`, `DURABLE_TEST_MYSQL_URL`, set by
//! scripts/test.sh).

mod support;

use durable_core::conformance::server_from_env;
use durable_core::{Json, Mode};
use durable_sql::SqlOptions;
use support::{Store, random_name};

/// Each database (a SQLite file in `dir`), with a fresh table prefix and `create_schema`.
async fn stores(dir: &tempfile::TempDir, prefix: &str, create_schema: bool) -> Vec<Store> {
    let options = || {
        SqlOptions::new()
            .with_table_prefix(prefix)
            .with_create_schema(create_schema)
    };
    let sqlite = format!("sqlite://{}", dir.path().join("d.db").display());
    let mut out = vec![Store::open("sqlite", &sqlite, options()).await.unwrap()];
    for (kind, var) in [
        ("postgres", "DURABLE_TEST_POSTGRES_URL"),
        ("mysql", "DURABLE_TEST_MYSQL_URL"),
    ] {
        if let Some(url) = server_from_env(var) {
            out.push(Store::open(kind, &url, options()).await.unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_the_schema_lists_nothing_and_stays_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = random_name("lst");
    for store in stores(&dir, &prefix, false).await {
        assert_eq!(
            store.dictionaries("ns").await.unwrap(),
            Vec::<String>::new()
        );
        // Still no tables: a backend cannot read a version record.
        let backend = store.backend("ns", "d");
        assert!(
            backend.last_updated().await.is_err(),
            "{store:?}: listing created the schema"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_the_dictionaries_of_one_namespace_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = random_name("lst");
    let odd = "x.y_Z-9";
    for store in stores(&dir, &prefix, true).await {
        let ns = random_name("ns");
        // A namespace that the first one is a prefix of, and one ending in LIKE's wildcard.
        let longer = format!("{ns}b");
        let wild = format!("{ns}_");
        assert_eq!(store.dictionaries(&ns).await.unwrap(), Vec::<String>::new());
        for (namespace, name) in [
            (&ns, "b"),
            (&ns, "a"),
            (&ns, odd),
            (&longer, "c"),
            (&wild, "w"),
        ] {
            let dict = store
                .dict::<u64, _>(namespace, name, Json, Mode::Manual)
                .await;
            dict.insert("k", 1).await.unwrap();
        }
        assert_eq!(
            store.dictionaries(&ns).await.unwrap(),
            ["a", "b", odd],
            "{store:?}"
        );
        assert_eq!(store.dictionaries(&longer).await.unwrap(), ["c"]);
        assert_eq!(store.dictionaries(&wild).await.unwrap(), ["w"]);
        assert_eq!(
            store.dictionaries("no such namespace").await.unwrap(),
            Vec::<String>::new()
        );
    }
}
