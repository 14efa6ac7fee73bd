//! Flag change events, from the dictionary's change stream.

use std::collections::BTreeSet;

use durable_core::Change;
use serde_json::Value;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::FlagStore;
use crate::definition::{KeyKind, key_kind};

/// The flags that changed, as OpenFeature's `PROVIDER_CONFIGURATION_CHANGED` event reports them
/// (`flagsChanged`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlagsChanged {
    /// The keys of the flags whose definition changed (added, replaced or removed), sorted.
    pub flags: Vec<String>,
    /// True when the change may reach every flag: a shared evaluator or the flag-set metadata
    /// changed, or the listener fell behind and lost events. `flags` then lists every flag of
    /// the snapshot (and those known to be removed).
    pub all: bool,
}

/// A stream of [`FlagsChanged`] events ([`FlagStore::events`],
/// [`DurableProvider::events`](crate::DurableProvider::events)).
///
/// open-feature 0.3 has no provider event API (no event handlers on the client or the API), so
/// events are offered here, to be forwarded wherever the application needs them. Changes that
/// arrive together (one sync, one batch import) come as one event.
#[derive(Debug)]
pub struct FlagEvents {
    store: FlagStore,
    changes: Receiver<Change<Value>>,
}

impl FlagEvents {
    pub(crate) fn new(store: FlagStore, changes: Receiver<Change<Value>>) -> Self {
        FlagEvents { store, changes }
    }

    /// Waits for the next change. `None` once the dictionary handle is gone.
    pub async fn recv(&mut self) -> Option<FlagsChanged> {
        loop {
            let mut keys = BTreeSet::new();
            let mut all = false;
            match self.changes.recv().await {
                Ok(change) => all |= note(&mut keys, &change.key),
                Err(RecvError::Lagged(_)) => all = true,
                Err(RecvError::Closed) => return None,
            }
            loop {
                match self.changes.try_recv() {
                    Ok(change) => all |= note(&mut keys, &change.key),
                    Err(TryRecvError::Lagged(_)) => all = true,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            if all {
                keys.extend(self.store.flag_keys());
            } else if keys.is_empty() {
                continue; // only keys this crate does not use
            }
            return Some(FlagsChanged {
                flags: keys.into_iter().collect(),
                all,
            });
        }
    }
}

/// Adds `key` if it is a flag; true if the change can affect every flag.
fn note(keys: &mut BTreeSet<String>, key: &str) -> bool {
    match key_kind(key) {
        KeyKind::Flag(flag) => {
            keys.insert(flag.to_owned());
            false
        }
        KeyKind::Evaluator(_) | KeyKind::File => true,
        KeyKind::Unknown => false,
    }
}
