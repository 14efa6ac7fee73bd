//! A backend wrapper that simulates an outage of any store, for demos and tests.
//!
//! Wrapping is also how to add behaviour to every backend at once (metrics, logging, fault
//! injection). Write the wrapper as [`Hooks`] of a [`Forward`], never by implementing
//! [`Backend`] by hand: `Forward` forwards every method, the optional ones
//! included, so the wrapper cannot claim a capability it drops (a method left out of a
//! hand-written wrapper falls back to the trait's default, `NotSupported`).
//! (`examples/tests/outage_conformance.rs` runs the conformance suite through this wrapper, whose
//! rule `declared_capabilities_work` calls every declared operation.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use durable::{Backend, Error, Forward, Hooks, Operation, Result};

/// A backend that forwards to `B`, except while its [`OutageSwitch`] is down: then every
/// operation fails with [`Error::Unavailable`] without reaching the store, as a closed port
/// would. Made by [`OutageSwitch::wrap`].
pub type Outage<B> = Forward<B, OutageSwitch>;

/// Turns the outage of the [`Outage`] backends it wrapped on and off (clones switch the same
/// backends).
#[derive(Debug, Clone, Default)]
pub struct OutageSwitch {
    down: Arc<AtomicBool>,
}

impl OutageSwitch {
    /// A new switch, initially up.
    pub fn new() -> Self {
        OutageSwitch::default()
    }

    /// Wraps `inner` in an outage controlled by this switch.
    pub fn wrap<B: Backend>(&self, inner: B) -> Outage<B> {
        Forward::new(inner, self.clone())
    }

    /// Starts (`true`) or ends (`false`) the outage.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// True during the outage.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }
}

impl Hooks for OutageSwitch {
    fn before(&self, backend: &str, operation: Operation) -> Result<()> {
        if self.is_down() {
            return Err(Error::unavailable(
                backend,
                operation,
                "the store is down (simulated outage)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use durable::bytes::Bytes;
    use durable::{Dict, MemoryStore, Options, Raw};

    use super::*;

    /// The location names the inner backend's dictionary (metrics labels, logs, the backup
    /// file's identity), not just the backend's name.
    #[test]
    fn location_is_the_inner_backends() {
        let store = MemoryStore::new();
        let inner = store.backend("ns", "d").unwrap();
        let expected = inner.location();
        let backend = OutageSwitch::new().wrap(inner);
        assert_eq!(backend.location(), expected);
        assert_ne!(backend.location(), backend.name());
    }

    #[tokio::test]
    async fn expiring_writes_and_sweeps_go_through() {
        let store = MemoryStore::new();
        let switch = OutageSwitch::new();
        let backend = switch.wrap(store.backend("ns", "d").unwrap());
        let backend = Arc::new(backend);
        assert!(backend.capabilities().expiry);

        let before = backend.now().await.unwrap();
        let (_, expires_at) = backend
            .persist_expiring("gone", Bytes::from_static(b"1"), Duration::ZERO)
            .await
            .unwrap();
        assert!(expires_at >= before, "the expiry is on the store's clock");
        let swept = backend.sweep().await.unwrap().expect("an expired entry");
        assert_eq!(swept.keys, vec!["gone".to_owned()]);
        assert_eq!(
            backend.sweep().await.unwrap(),
            None,
            "nothing left to sweep"
        );

        // During the outage the expiry operations fail like every other, reaching nothing.
        switch.set_down(true);
        let calls = store.calls();
        assert!(backend.now().await.unwrap_err().is_unavailable());
        let error = backend
            .persist_expiring("k", Bytes::new(), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(error.is_unavailable());
        assert!(backend.sweep().await.unwrap_err().is_unavailable());
        assert_eq!(
            store.calls(),
            calls,
            "the store was reached during the outage"
        );
        switch.set_down(false);

        // Through a handle, as an application uses it.
        let dict: Dict<Vec<u8>, Raw> = Dict::open(backend.clone(), Raw, Options::new())
            .await
            .unwrap();
        dict.insert_with_ttl("session", b"s".to_vec(), Duration::from_secs(3600))
            .await
            .unwrap();
        dict.insert_with_ttl("expired", b"e".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        // (A write may already have swept it lazily.)
        dict.sweep().await.unwrap();
        let load = backend.durables().await.unwrap();
        let keys: Vec<&str> = load.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, vec!["session"]);
        assert!(load.entries.iter().all(|entry| entry.expires_at.is_some()));
    }
}
