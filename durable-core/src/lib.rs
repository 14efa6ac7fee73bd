#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod backup;
mod clock;
mod counter;
pub mod credentials;
mod dict;
mod encoding;
mod error;
mod forward;
mod map;
mod memory;
mod metrics;
mod options;
mod set;
mod shared;
mod snapshot;
mod stats;
mod types;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

pub use backend::{Backend, Hint, HintSender, Hints, LoadParts, STAMP_HISTORY};
pub use counter::ShardedCounter;
pub use dict::{Cas, Change, ChangeEvent, ChangeKind, Dict};
pub use encoding::{Bincode, Encoding, EncodingError, Json, Raw};
pub use error::{Error, Operation, Result, Source};
pub use forward::{Forward, Hide, Hooks};
pub use memory::{MemoryBackend, MemoryCopy, MemoryStore};
pub use options::{DecodeErrors, Mode, Options};
pub use set::{DurableSet, SetSnapshot};
pub use shared::Shared;
pub use snapshot::{Freshness, Snapshot, Synced, Versioned};
pub use stats::{BadKey, Health, Stats};
pub use types::{
    BatchOp, Capabilities, Changes, Delta, IfAbsent, Load, Name, Revision, Rows, StoreTime,
    StoredEntry, Swap, Swept, Unreadable, Version, parse_counter,
};

/// Re-exported so backend crates and custom backends use the same version.
pub use async_trait::async_trait;
/// Re-exported: values cross the [`Backend`] trait as [`bytes::Bytes`].
pub use bytes;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::Dict<String>>();
        assert_send_sync::<crate::Snapshot<String>>();
        assert_send_sync::<crate::Error>();
        assert_send_sync::<crate::MemoryStore>();
        assert_send_sync::<crate::Change<String>>();
        assert_send_sync::<crate::ChangeEvent<String>>();
    }
}
