//! A backend wrapper that simulates an outage of any store, for demos and tests.
//!
//! Wrapping is also how to add behaviour to every backend at once (metrics, logging, fault
//! injection): implement [`Backend`] by forwarding to the inner backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use durable::bytes::Bytes;
use durable::{
    Backend, BatchOp, Capabilities, Changes, Error, Hints, IfAbsent, Load, Operation, Result,
    Revision, Swap, Version, async_trait,
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
}
