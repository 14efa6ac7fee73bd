//! The whole conformance suite against the in-memory backend.

use durable_core::conformance::Harness;
use durable_core::{Backend, MemoryStore, Name, Result};

#[derive(Debug, Default)]
struct Memory {
    store: MemoryStore,
}

#[durable_core::async_trait]
impl Harness for Memory {
    async fn open(&self, namespace: &Name, dictionary: &Name) -> Result<Box<dyn Backend>> {
        Ok(Box::new(
            self.store
                .backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn wipe(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        self.store.wipe(namespace.as_str(), dictionary.as_str())
    }

    async fn forget_history(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        self.store
            .forget_history(namespace.as_str(), dictionary.as_str())
    }

    async fn open_unreachable(
        &self,
        namespace: &Name,
        dictionary: &Name,
    ) -> Result<Box<dyn Backend>> {
        let down = MemoryStore::new();
        down.set_available(false);
        Ok(Box::new(
            down.backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn cleanup(&self, _namespace: &Name) -> Result<()> {
        Ok(())
    }
}

async fn memory() -> Option<Memory> {
    Some(Memory::default())
}

durable_core::conformance_tests!(memory);
