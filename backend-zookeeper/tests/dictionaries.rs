//! `ZooKeeperStore::dictionaries`: the dictionaries of a namespace, against the ZooKeeper in
//! `DURABLE_TEST_ZOOKEEPER`.

mod common;

use bytes::Bytes;
use durable_core::conformance::Harness;
use durable_core::{Backend, Dict, Error, Json, Name, Options};
use durable_zookeeper::ZooKeeperStore;
use durable_zookeeper::zookeeper_client as zk;

/// Whether the znode at `path` exists.
async fn exists(client: &zk::Client, path: &str) -> bool {
    client.check_stat(path).await.unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_the_dictionaries_of_a_namespace() {
    let Some(harness) = common::harness().await else {
        return;
    };
    let store = ZooKeeperStore::connect(common::config(&harness.connect))
        .await
        .unwrap();
    let raw = store.zookeeper_client().await.unwrap();
    // `ns` is a prefix of `longer`; `dotted` holds every kind of character a name may hold.
    let ns = format!("ls{:012x}", rand::random::<u64>() >> 16);
    let longer = format!("{ns}b");
    let dotted = format!("{ns}.x-Y_9");
    let path = |namespace: &str| format!("{}/{namespace}", common::ROOT);

    // A namespace nothing was ever stored in: empty, and listing it creates nothing (not even
    // the namespace's znode).
    assert_eq!(store.dictionaries(&ns).await.unwrap(), Vec::<String>::new());
    assert!(
        !exists(&raw, &path(&ns)).await,
        "listing created the namespace"
    );

    // Written dictionaries, with every kind of character a name may hold, and the longest name.
    let mut names: Vec<String> = ["a.b", "-", "_x-y.Z9", "flags", "0"]
        .map(str::to_owned)
        .to_vec();
    names.push("d".repeat(Name::MAX_LEN));
    for name in &names {
        let backend = store.backend(&ns, name).unwrap();
        backend
            .persist("k", Bytes::from_static(b"1"))
            .await
            .unwrap();
    }
    for (namespace, name) in [(&longer, "only-in-longer"), (&dotted, "only-in-dotted")] {
        store
            .backend(namespace, name)
            .unwrap()
            .persist("k", Bytes::from_static(b"1"))
            .await
            .unwrap();
    }
    // A dictionary only opened for reading: reads create its znode (with a fresh version
    // record), so it is listed too. Opening also reads the store's clock, which creates the
    // namespace's `.clock` znode: not a dictionary.
    let read: Dict<bool, Json> = Dict::open(
        store.backend(&ns, "read-only").unwrap(),
        Json,
        Options::new(),
    )
    .await
    .unwrap();
    assert!(read.sync().await.unwrap().is_empty());
    store.backend(&ns, "flags").unwrap().now().await.unwrap();
    assert!(exists(&raw, &format!("{}/.clock", path(&ns))).await);
    // Children no dictionary can be named (created by hand): not listed.
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    for name in ["a:b", "é", "{x}", "a*"] {
        raw.create(&format!("{}/{name}", path(&ns)), b"", &options)
            .await
            .unwrap();
    }

    let mut expected = names.clone();
    expected.push("read-only".to_owned());
    expected.sort();
    assert_eq!(store.dictionaries(&ns).await.unwrap(), expected);
    assert_eq!(
        store.dictionaries(&longer).await.unwrap(),
        ["only-in-longer"]
    );
    assert_eq!(
        store.dictionaries(&dotted).await.unwrap(),
        ["only-in-dotted"]
    );

    // A dictionary deleted by hand is no longer listed.
    harness
        .delete_tree(&format!("{}/flags", path(&ns)))
        .await
        .unwrap();
    expected.retain(|name| name != "flags");
    assert_eq!(store.dictionaries(&ns).await.unwrap(), expected);

    // Names no dictionary can have: refused.
    for bad in ["", "a*", "a:b", "é", "{x}", ".clock", "a/b"] {
        assert!(
            matches!(
                store.dictionaries(bad).await,
                Err(Error::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }

    for namespace in [&ns, &longer, &dotted] {
        harness
            .cleanup(&Name::new(namespace.as_str()).unwrap())
            .await
            .unwrap();
    }
}
