//! [`Forward`]: the one way to wrap a [`Backend`] (fault injection, counting, hiding
//! capabilities) without dropping any of its operations.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{Backend, Hints, LoadParts};
use crate::error::{Error, Operation, Result};
use crate::types::{
    BatchOp, Capabilities, Changes, IfAbsent, Load, Revision, StoreTime, Swap, Swept, Version,
};

/// What a wrapper adds to the backend it wraps: see [`Forward`].
///
/// Both methods have defaults that add nothing, so a wrapper implements only what it changes.
pub trait Hooks: Debug + Send + Sync + 'static {
    /// The capabilities to hide: every capability set to `true` here is reported `false` by
    /// [`Forward`]'s [`capabilities`](Backend::capabilities), and its operations return
    /// [`Error::NotSupported`] (naming the inner backend) without reaching the inner backend.
    /// Hiding [`stamps`](Capabilities::stamps) only stops claiming them (the engine then trusts
    /// tokens less); [`max_value_size`](Capabilities::max_value_size) is ignored. The default
    /// hides nothing.
    fn hidden(&self) -> Capabilities {
        Capabilities::none()
    }

    /// Called before every operation that reaches the store, with the inner backend's
    /// [`name`](Backend::name): an error is returned in place of the operation, which then never
    /// reaches the inner backend. The default lets everything through.
    fn before(&self, backend: &str, operation: Operation) -> Result<()> {
        let _ = (backend, operation);
        Ok(())
    }
}

/// [`Hooks`] that only hide capabilities: `Hide(Capabilities::none().with_delta(true))` makes a
/// backend without delta sync, to measure or test full reloads over any store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hide(pub Capabilities);

impl Hooks for Hide {
    fn hidden(&self) -> Capabilities {
        self.0
    }
}

/// A backend that forwards **every** [`Backend`] method to an inner backend, running its
/// [`Hooks`] first.
///
/// Write a wrapper (metrics, logging, fault injection, a store without some capability) as
/// hooks, never by implementing [`Backend`] by hand: a hand-written wrapper that leaves out an
/// optional method silently falls back to the trait's default, [`Error::NotSupported`], while its
/// [`capabilities`](Backend::capabilities) still report the inner backend's, so it claims an
/// operation it drops. `Forward` cannot: it forwards every method (its implementation denies
/// `clippy::missing_trait_methods`, so a method added to [`Backend`] fails the lint run until it
/// is forwarded here), and what it reports in `capabilities()` is exactly what it serves.
///
/// ```
/// use durable_core::{Backend, Error, Forward, Hooks, MemoryStore, Operation, Result};
///
/// /// Refuses every write: a read-only view of any store.
/// #[derive(Debug)]
/// struct ReadOnly;
///
/// impl Hooks for ReadOnly {
///     fn before(&self, backend: &str, operation: Operation) -> Result<()> {
///         match operation {
///             Operation::Version | Operation::Load | Operation::Changes | Operation::Subscribe
///             | Operation::Now => Ok(()),
///             _ => Err(Error::not_supported(backend, operation)),
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
/// let store = MemoryStore::new();
/// let backend = Forward::new(store.backend("prod", "flags")?, ReadOnly);
/// assert!(backend.last_updated().await.is_ok());
/// assert!(backend.persist("k", "v".into()).await.is_err());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Forward<B, H> {
    inner: B,
    hooks: H,
}

impl<B: Backend, H: Hooks> Forward<B, H> {
    /// Wraps `inner`, running `hooks` before each of its operations.
    pub fn new(inner: B, hooks: H) -> Self {
        Forward { inner, hooks }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The hooks.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }

    /// Checks that `operation` is not hidden, then runs the hooks.
    fn enter(&self, operation: Operation) -> Result<()> {
        if needs(&self.hooks.hidden(), operation) {
            return Err(Error::not_supported(self.inner.name(), operation));
        }
        self.hooks.before(self.inner.name(), operation)
    }
}

/// True if `operation` needs a capability set in `capabilities` (so a hidden one, when it is the
/// hidden set). Exhaustive: a new operation must say which capability it needs.
fn needs(capabilities: &Capabilities, operation: Operation) -> bool {
    match operation {
        Operation::Open
        | Operation::Version
        | Operation::Load
        | Operation::Persist
        | Operation::Depersist
        | Operation::Schema
        | Operation::Trim => false,
        Operation::Changes => capabilities.delta,
        Operation::Subscribe => capabilities.push,
        Operation::InsertIfAbsent => capabilities.insert_if_absent,
        Operation::CompareAndSwap => capabilities.compare_and_swap,
        Operation::Pop => capabilities.pop,
        Operation::Increment => capabilities.increment,
        Operation::Batch => capabilities.batch,
        Operation::Clear => capabilities.clear,
        Operation::Now | Operation::PersistExpiring | Operation::Sweep => capabilities.expiry,
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: Backend, H: Hooks> Backend for Forward<B, H> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn capabilities(&self) -> Capabilities {
        let (inner, hidden) = (self.inner.capabilities(), self.hooks.hidden());
        // A struct literal, not `with_*` calls: a capability added to the struct must be
        // handled here.
        Capabilities {
            delta: inner.delta && !hidden.delta,
            push: inner.push && !hidden.push,
            insert_if_absent: inner.insert_if_absent && !hidden.insert_if_absent,
            compare_and_swap: inner.compare_and_swap && !hidden.compare_and_swap,
            pop: inner.pop && !hidden.pop,
            increment: inner.increment && !hidden.increment,
            batch: inner.batch && !hidden.batch,
            clear: inner.clear && !hidden.clear,
            expiry: inner.expiry && !hidden.expiry,
            stamps: inner.stamps && !hidden.stamps,
            max_value_size: inner.max_value_size,
        }
    }

    async fn persist(&self, key: &str, value: Bytes) -> Result<Version> {
        self.enter(Operation::Persist)?;
        self.inner.persist(key, value).await
    }

    async fn depersist(&self, key: &str) -> Result<Option<Version>> {
        self.enter(Operation::Depersist)?;
        self.inner.depersist(key).await
    }

    async fn durables(&self) -> Result<Load> {
        self.enter(Operation::Load)?;
        self.inner.durables().await
    }

    async fn durables_in_parts(&self, parts: &mut dyn LoadParts) -> Result<Load> {
        self.enter(Operation::Load)?;
        self.inner.durables_in_parts(parts).await
    }

    async fn last_updated(&self) -> Result<Version> {
        self.enter(Operation::Version)?;
        self.inner.last_updated().await
    }

    async fn changes_since(&self, since: Version) -> Result<Changes> {
        self.enter(Operation::Changes)?;
        self.inner.changes_since(since).await
    }

    async fn subscribe(&self) -> Result<Hints> {
        self.enter(Operation::Subscribe)?;
        self.inner.subscribe().await
    }

    async fn persist_if_absent(&self, key: &str, value: Bytes) -> Result<IfAbsent> {
        self.enter(Operation::InsertIfAbsent)?;
        self.inner.persist_if_absent(key, value).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        new: Option<Bytes>,
    ) -> Result<Swap> {
        self.enter(Operation::CompareAndSwap)?;
        self.inner.compare_and_swap(key, expected, new).await
    }

    async fn pop(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        self.enter(Operation::Pop)?;
        self.inner.pop(key).await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        self.enter(Operation::Increment)?;
        self.inner.increment(key, delta).await
    }

    async fn persist_batch(&self, ops: Vec<BatchOp>) -> Result<Option<Version>> {
        self.enter(Operation::Batch)?;
        self.inner.persist_batch(ops).await
    }

    async fn clear(&self) -> Result<Option<Version>> {
        self.enter(Operation::Clear)?;
        self.inner.clear().await
    }

    async fn now(&self) -> Result<StoreTime> {
        self.enter(Operation::Now)?;
        self.inner.now().await
    }

    async fn persist_expiring(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(Version, StoreTime)> {
        self.enter(Operation::PersistExpiring)?;
        self.inner.persist_expiring(key, value, ttl).await
    }

    async fn sweep(&self) -> Result<Option<Swept>> {
        self.enter(Operation::Sweep)?;
        self.inner.sweep().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::MemoryStore;

    /// Counts the operations it lets through.
    #[derive(Debug, Default)]
    struct Count(AtomicU64);

    impl Hooks for Count {
        fn before(&self, _: &str, _: Operation) -> Result<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    /// Calls every optional operation once; returns each one's error, if any.
    async fn call_every_optional_operation(b: &dyn Backend) -> Vec<(Operation, Option<Error>)> {
        let v = b.persist("a", Bytes::from_static(b"1")).await.unwrap();
        let value = || Bytes::from_static(b"2");
        vec![
            (Operation::Changes, b.changes_since(v).await.err()),
            (Operation::Subscribe, b.subscribe().await.err()),
            (
                Operation::InsertIfAbsent,
                b.persist_if_absent("b", value()).await.err(),
            ),
            (
                Operation::CompareAndSwap,
                b.compare_and_swap("c", None, Some(value())).await.err(),
            ),
            (Operation::Pop, b.pop("b").await.err()),
            (Operation::Increment, b.increment("n", 2).await.err()),
            (Operation::Batch, b.persist_batch(Vec::new()).await.err()),
            (Operation::Clear, b.clear().await.err()),
            (Operation::Now, b.now().await.err()),
            (
                Operation::PersistExpiring,
                b.persist_expiring("e", value(), Duration::ZERO).await.err(),
            ),
            (Operation::Sweep, b.sweep().await.err()),
        ]
    }

    #[tokio::test]
    async fn every_operation_is_forwarded_through_the_hooks() {
        let store = MemoryStore::new();
        let inner = store.backend("ns", "d").unwrap();
        let location = inner.location();
        let b = Forward::new(inner, Count::default());
        assert_eq!(b.capabilities(), Capabilities::all());
        assert_eq!(b.location(), location, "the inner dictionary's");
        for (operation, error) in call_every_optional_operation(&b).await {
            assert!(error.is_none(), "{operation}: {error:?}");
        }
        b.durables().await.unwrap();
        b.last_updated().await.unwrap();
        b.depersist("a").await.unwrap();
        // The persist in the helper, its 11 optional operations, and the 3 above.
        assert_eq!(b.hooks().0.load(Ordering::Relaxed), 15);
    }

    #[tokio::test]
    async fn hidden_capabilities_are_not_declared_and_not_reached() {
        let store = MemoryStore::new();
        let hidden = Capabilities::none()
            .with_delta(true)
            .with_pop(true)
            .with_expiry(true);
        let b = Forward::new(store.backend("ns", "d").unwrap(), Hide(hidden));
        assert_eq!(
            b.capabilities(),
            Capabilities::all()
                .with_delta(false)
                .with_pop(false)
                .with_expiry(false)
        );
        let calls = store.calls();
        let refused: Vec<Operation> = call_every_optional_operation(&b)
            .await
            .into_iter()
            .filter_map(|(operation, error)| match error? {
                Error::NotSupported {
                    backend,
                    operation: named,
                } => {
                    assert_eq!((backend.as_str(), named), ("memory", operation));
                    Some(operation)
                }
                other => panic!("{operation}: {other:?}"),
            })
            .collect();
        use Operation::*;
        assert_eq!(refused, [Changes, Pop, Now, PersistExpiring, Sweep]);
        // The helper's persist and the 6 operations let through reached the store; none of the
        // refused ones did.
        assert_eq!(store.calls() - calls, 7);
    }

    #[tokio::test]
    async fn an_error_from_the_hooks_stops_the_operation() {
        #[derive(Debug)]
        struct Down;
        impl Hooks for Down {
            fn before(&self, backend: &str, operation: Operation) -> Result<()> {
                Err(Error::unavailable(backend, operation, "down"))
            }
        }
        let store = MemoryStore::new();
        let b = Forward::new(store.backend("ns", "d").unwrap(), Down);
        let calls = store.calls();
        assert!(b.last_updated().await.unwrap_err().is_unavailable());
        assert!(b.sweep().await.unwrap_err().is_unavailable());
        assert_eq!(store.calls(), calls);
    }
}
