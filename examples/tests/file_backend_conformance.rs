//! The full public conformance suite against the custom file backend
//! (`durable_examples::file_backend`), each test in its own temporary directory.
//!
//! This is what a user does for their own backend: implement `Harness` (open, wipe, trim the
//! history, open an unusable store, clean up) and expand `durable_core::conformance_tests!`.

use std::path::PathBuf;

use durable::{Backend, Name, Result};
use durable_core::conformance::Harness;
use durable_examples::file_backend::FileStore;

/// A store in a fresh temporary directory, deleted when the test ends.
struct Files {
    dir: tempfile::TempDir,
    store: FileStore,
}

impl Files {
    fn dictionary_dir(&self, namespace: &Name, dictionary: &Name) -> Result<PathBuf> {
        self.store
            .dictionary_dir(namespace.as_str(), dictionary.as_str())
    }
}

#[durable::async_trait]
impl Harness for Files {
    async fn open(&self, namespace: &Name, dictionary: &Name) -> Result<Box<dyn Backend>> {
        Ok(Box::new(
            self.store
                .backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn wipe(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        // What an operator would do: `rm -r <root>/<namespace>/<dictionary>`.
        let dir = self.dictionary_dir(namespace, dictionary)?;
        std::fs::remove_dir_all(&dir)
            .map_err(|e| durable::Error::Config(format!("wipe {}: {e}", dir.display())))
    }

    async fn forget_history(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        self.store
            .backend(namespace.as_str(), dictionary.as_str())?
            .forget_history()
            .await
    }

    async fn open_unreachable(
        &self,
        namespace: &Name,
        dictionary: &Name,
    ) -> Result<Box<dyn Backend>> {
        // A root below a regular file cannot be created or read, even by root (permissions would
        // not stop the test user when it is root).
        let file = self.dir.path().join("not-a-directory");
        std::fs::write(&file, b"")
            .map_err(|e| durable::Error::Config(format!("{}: {e}", file.display())))?;
        let store = FileStore::new(file.join("store"));
        Ok(Box::new(
            store.backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn cleanup(&self, namespace: &Name) -> Result<()> {
        let dir = self.store.root().join(namespace.as_str());
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(durable::Error::Config(format!(
                "cleanup {}: {e}",
                dir.display()
            ))),
        }
    }
}

/// The harness factory: always available, no server needed.
async fn files() -> Option<Files> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = FileStore::new(dir.path().join("store"));
    Some(Files { dir, store })
}

durable_core::conformance_tests!(files);
