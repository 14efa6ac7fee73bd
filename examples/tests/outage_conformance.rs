//! The full public conformance suite through the `Outage` wrapper (over the in-memory store):
//! a wrapper must forward every operation, so it offers exactly what it declares. Its unreachable
//! store is the wrapper with the outage switched on.

use durable::{Backend, MemoryCopy, MemoryStore, Name, Result};
use durable_core::conformance::{Damage, Harness, StoredCopy};
use durable_examples::outage::OutageSwitch;

#[derive(Debug, Default)]
struct Wrapped {
    store: MemoryStore,
}

#[durable::async_trait]
impl Harness for Wrapped {
    async fn open(&self, namespace: &Name, dictionary: &Name) -> Result<Box<dyn Backend>> {
        let inner = self
            .store
            .backend(namespace.as_str(), dictionary.as_str())?;
        Ok(Box::new(OutageSwitch::new().wrap(inner)))
    }

    async fn wipe(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        self.store.wipe(namespace.as_str(), dictionary.as_str())
    }

    async fn forget_history(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        self.store
            .forget_history(namespace.as_str(), dictionary.as_str())
    }

    async fn copy_stored(&self, namespace: &Name, dictionary: &Name) -> Result<StoredCopy> {
        Ok(Box::new(
            self.store.copy(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn put_back(&self, namespace: &Name, dictionary: &Name, copy: StoredCopy) -> Result<()> {
        let copy = copy
            .downcast::<MemoryCopy>()
            .expect("a copy of this harness");
        self.store
            .put_back(namespace.as_str(), dictionary.as_str(), &copy)
    }

    async fn damage_version_record(
        &self,
        namespace: &Name,
        dictionary: &Name,
        damage: Damage,
    ) -> Result<bool> {
        // The memory store's record is typed: it can only go missing.
        if damage != Damage::RecordMissing {
            return Ok(false);
        }
        self.store
            .lose_version_record(namespace.as_str(), dictionary.as_str())?;
        Ok(true)
    }

    async fn open_unreachable(
        &self,
        namespace: &Name,
        dictionary: &Name,
    ) -> Result<Box<dyn Backend>> {
        let inner = self
            .store
            .backend(namespace.as_str(), dictionary.as_str())?;
        let switch = OutageSwitch::new();
        switch.set_down(true);
        Ok(Box::new(switch.wrap(inner)))
    }

    async fn cleanup(&self, _namespace: &Name) -> Result<()> {
        Ok(())
    }
}

async fn wrapped() -> Option<Wrapped> {
    Some(Wrapped::default())
}

durable_core::conformance_tests!(wrapped, capabilities = {
    delta: true, push: true, insert_if_absent: true, compare_and_swap: true, pop: true,
    increment: true, batch: true, clear: true, expiry: true, stamps: true,
});
