//! The whole conformance suite against the in-memory backend, and again through a wrapper that
//! hides every optional capability: a backend declaring `Capabilities::none()` runs the rules
//! that need none, and `cargo test` lists the others as ignored.

use durable_core::conformance::{self, Damage, Garbage, Harness, StoredCopy};
use durable_core::{
    Backend, Capabilities, Forward, Hide, MemoryBackend, MemoryCopy, MemoryStore, Name, Operation,
    Result,
};

#[derive(Debug)]
struct Memory {
    store: MemoryStore,
    /// What the suite gets for each backend of the store: the backend, or a wrapper of it.
    wrap: fn(MemoryBackend) -> Box<dyn Backend>,
}

impl Memory {
    fn new(wrap: fn(MemoryBackend) -> Box<dyn Backend>) -> Self {
        Memory {
            store: MemoryStore::new(),
            wrap,
        }
    }
}

#[durable_core::async_trait]
impl Harness for Memory {
    async fn open(&self, namespace: &Name, dictionary: &Name) -> Result<Box<dyn Backend>> {
        Ok((self.wrap)(
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
        Ok((self.wrap)(
            down.backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn cleanup(&self, _namespace: &Name) -> Result<()> {
        Ok(())
    }
}

async fn memory() -> Option<Memory> {
    Some(Memory::new(|backend| Box::new(backend)))
}

/// The memory store declaring no optional capability.
mod declaring_nothing {
    use super::*;

    async fn memory() -> Option<Memory> {
        Some(Memory::new(|backend| {
            Box::new(Forward::new(backend, Hide(Capabilities::all())))
        }))
    }

    durable_core::conformance_tests!(memory, capabilities = {
        delta: false, push: false, insert_if_absent: false, compare_and_swap: false, pop: false,
        increment: false, batch: false, clear: false, expiry: false, stamps: false,
    });
}

durable_core::conformance_tests!(memory, capabilities = {
    delta: true, push: true, insert_if_absent: true, compare_and_swap: true, pop: true,
    increment: true, batch: true, clear: true, expiry: true, stamps: true,
});

/// A wrapper that claims an operation it drops (here by refusing `sweep` while declaring
/// `expiry`, as a hand-written wrapper missing that method would) fails the rule.
#[tokio::test]
#[should_panic(expected = "sweep is declared but failed")]
async fn a_dropped_operation_fails_declared_capabilities_work() {
    #[derive(Debug)]
    struct DropsSweep;
    impl durable_core::Hooks for DropsSweep {
        fn before(&self, backend: &str, operation: Operation) -> Result<()> {
            match operation {
                Operation::Sweep => Err(durable_core::Error::not_supported(backend, operation)),
                _ => Ok(()),
            }
        }
    }
    let memory = Memory::new(|backend| Box::new(Forward::new(backend, DropsSweep)));
    conformance::run(Some(memory), |ctx| async move {
        conformance::declared_capabilities_work(&ctx).await
    })
    .await;
}

/// A backend that no longer declares a capability its test pins fails at the start of every
/// rule, naming the capability.
#[tokio::test]
#[should_panic(expected = "does not declare `delta`, which its test pins")]
async fn a_lost_capability_fails_the_pin() {
    let memory = Memory::new(|backend| {
        Box::new(Forward::new(
            backend,
            Hide(Capabilities::none().with_delta(true)),
        ))
    });
    conformance::run_pinned(Some(memory), Capabilities::all(), |ctx| async move {
        conformance::missing_key_is_absent(&ctx).await
    })
    .await;
}
