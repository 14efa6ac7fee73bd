#![doc = include_str!("../README.md")]

mod cache;
mod context;
mod definition;
mod error;
mod events;
mod file;
mod provider;
mod resolution;
mod store;

pub use definition::{EVALUATOR_PREFIX, METADATA_KEY, SCHEMA_KEY};
pub use error::{Error, Result};
pub use events::{FlagEvents, FlagsChanged};
pub use file::FlagFile;
pub use provider::DurableProvider;
pub use resolution::{FlagType, Resolution};
pub use store::{FlagDict, FlagStore, ImportMode, ImportReport};

/// The OpenFeature SDK this provider implements (re-exported so the versions match).
pub use open_feature;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::FlagStore>();
        assert_send_sync::<crate::DurableProvider>();
        assert_send_sync::<crate::FlagEvents>();
        assert_send_sync::<crate::Error>();
    }
}
