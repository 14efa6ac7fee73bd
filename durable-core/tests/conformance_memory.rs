//! The whole conformance suite against the in-memory backend.

use durable_core::conformance::{Damage, Garbage, Harness, StoredCopy};
use durable_core::{Backend, MemoryCopy, MemoryStore, Name, Result};

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

    async fn write_garbage(
        &self,
        namespace: &Name,
        dictionary: &Name,
        garbage: Garbage,
        key: &str,
    ) -> Result<bool> {
        let (namespace, dictionary) = (namespace.as_str(), dictionary.as_str());
        match garbage {
            Garbage::UndecodableValue => {
                self.store
                    .corrupt(namespace, dictionary, key, b"{not json \xff")?;
            }
            // The memory store keeps typed rows: a malformed one is injected as unreadable.
            Garbage::Malformed => {
                self.store
                    .make_unreadable(namespace, dictionary, key, "too short")?;
            }
            _ => return Ok(false),
        }
        Ok(true)
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
