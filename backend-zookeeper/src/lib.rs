#![doc = include_str!("../README.md")]

mod backend;
mod changelog;
mod dictionary;
mod entries;
mod error;
mod hints;
mod keys;
mod load;
mod options;
mod record;
mod repair;
mod store;

pub use dictionary::ZooKeeperBackend;
pub use entries::MAX_VALUE_SIZE;
pub use keys::MAX_KEY_LEN;
pub use options::ZooKeeperOptions;
pub use store::ZooKeeperStore;
/// The ZooKeeper client this backend is built on, re-exported so users get the matching
/// version (for ACLs and direct access through [`ZooKeeperStore::zookeeper_client`]).
pub use zookeeper_client;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<ZooKeeperBackend>();
        assert_send_sync::<ZooKeeperStore>();
        assert_send_sync::<ZooKeeperOptions>();
    }
}
