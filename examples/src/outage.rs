//! A backend wrapper that simulates an outage of any store, for demos and tests.
//!
//! Wrapping is also how to add behaviour to every backend at once (metrics, logging, fault
//! injection): implement [`Backend`] by forwarding to the inner backend. Forward **every**
//! method, the optional ones included: a method left out falls back to the trait's default,
//! [`Error::NotSupported`], while [`capabilities`](Backend::capabilities) still reports the inner
//! backend's, so the wrapper would claim an operation it drops.
//! (`examples/tests/outage_conformance.rs` runs the conformance suite through this wrapper, which
//! checks every declared capability.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use durable::bytes::Bytes;
use durable::{
    Backend, BatchOp, Capabilities, Changes, Error, Hints, IfAbsent, Load, Operation, Result,
    Revision, StoreTime, Swap, Swept, Version, async_trait,
};

/// A backend that forwards to `B`, except while its [`OutageSwitch`] is down: then every
/// operation fails with [`Error::Unavailable`] without reaching the store, as a closed port
/// would.
#[derive(Debug)]
pub struct Outage<B> {
    inner: B,
    down: Arc<AtomicBool>,
}

/// Turns the outage of an [`Outage`] backend on and off (clones switch the same backend).
#[derive(Debug, Clone)]
pub struct OutageSwitch {
    down: Arc<AtomicBool>,
}

impl<B: Backend> Outage<B> {
    /// Wraps `inner`, initially up; the switch controls it.
    pub fn new(inner: B) -> (Self, OutageSwitch) {
        let down = Arc::new(AtomicBool::new(false));
        let switch = OutageSwitch { down: down.clone() };
        (Outage { inner, down }, switch)
    }

    fn check(&self, operation: Operation) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::unavailable(
                self.inner.name(),
                operation,
                "the store is down (simulated outage)",
            ));
        }
        Ok(())
    }
}

impl OutageSwitch {
    /// Starts (`true`) or ends (`false`) the outage.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// True during the outage.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<B: Backend> Backend for Outage<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
        self.check(Operation::Persist)?;
        self.inner.persist(key, value).await
    }

    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        self.check(Operation::Depersist)?;
        self.inner.depersist(key).await
    }

    async fn durables(&self) -> Result<Load> {
        self.check(Operation::Load)?;
        self.inner.durables().await
    }

    async fn last_updated(&self) -> Result<Version> {
        self.check(Operation::Version)?;
        self.inner.last_updated().await
    }

    async fn changes_since(&self, since: Version) -> Result<Changes> {
        self.check(Operation::Changes)?;
        self.inner.changes_since(since).await
    }

    async fn subscribe(&self) -> Result<Hints> {
        self.check(Operation::Subscribe)?;
        self.inner.subscribe().await
    }

    async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
        self.check(Operation::InsertIfAbsent)?;
        self.inner.persist_if_absent(key, value).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        new: Option<Bytes>,
    ) -> Result<Swap> {
        self.check(Operation::CompareAndSwap)?;
        self.inner.compare_and_swap(key, expected, new).await
    }

    async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        self.check(Operation::Pop)?;
        self.inner.pop(key).await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        self.check(Operation::Increment)?;
        self.inner.increment(key, delta).await
    }

    async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
        self.check(Operation::Batch)?;
        self.inner.persist_batch(ops).await
    }

    async fn clear(&self) -> Result<Option<Version>> {
        self.check(Operation::Clear)?;
        self.inner.clear().await
    }

    async fn now(&self) -> Result<StoreTime> {
        self.check(Operation::Now)?;
        self.inner.now().await
    }

    async fn persist_expiring(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(Version, StoreTime)> {
        self.check(Operation::PersistExpiring)?;
        self.inner.persist_expiring(key, value, ttl).await
    }

    async fn sweep(&self) -> Result<Option<Swept>> {
        self.check(Operation::Sweep)?;
        self.inner.sweep().await
    }
}

#[cfg(test)]
mod tests {
    use durable::{Dict, MemoryStore, Options, Raw};

    use super::*;

    /// The location names the inner backend's dictionary (metrics labels, logs, the backup
    /// file's identity), not just the backend's name.
    #[test]
    fn location_is_the_inner_backends() {
        let store = MemoryStore::new();
        let inner = store.backend("ns", "d").unwrap();
        let expected = inner.location();
        let (backend, _) = Outage::new(inner);
        assert_eq!(backend.location(), expected);
        assert_ne!(backend.location(), backend.name());
    }

    #[tokio::test]
    async fn expiring_writes_and_sweeps_go_through() {
        let store = MemoryStore::new();
        let (backend, switch) = Outage::new(store.backend("ns", "d").unwrap());
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
        assert!(load.entries[0].expires_at.is_some());
    }
}
