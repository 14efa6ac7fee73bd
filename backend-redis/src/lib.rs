#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod dictionary;
mod durabledict;
mod error;
mod hints;
mod load;
mod options;
mod record;
mod reply;
mod scripts;
mod store;

pub use dictionary::RedisBackend;
pub use durabledict::DurabledictBackend;
pub use options::RedisOptions;
pub use store::RedisStore;

/// The Redis driver this crate is built on, re-exported so your code uses the same version
/// (for example to pass a [`redis::ConnectionInfo`] or to run commands of your own).
pub use redis;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::RedisStore>();
        assert_send_sync::<crate::RedisBackend>();
        assert_send_sync::<crate::DurabledictBackend>();
        assert_send_sync::<crate::RedisOptions>();
    }
}
