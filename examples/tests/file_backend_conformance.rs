//! The full public conformance suite against the custom file backend
//! (`durable_examples::file_backend`), each test in its own temporary directory.
//!
//! This is what a user does for their own backend: implement `Harness` (open, wipe, trim the
//! history, open an unusable store, copy and put back what is stored, damage the version record,
//! clean up) and expand `durable_core::conformance_tests!`.

use std::path::{Path, PathBuf};

use durable::{Backend, Name, Result};
use durable_core::conformance::{Damage, Harness, StoredCopy};
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

/// A failed file operation of the harness itself.
fn failed(what: &str, path: &Path, e: std::io::Error) -> durable::Error {
    durable::Error::Config(format!("{what} {}: {e}", path.display()))
}

/// Copies directory `from` to `to` (which must not exist), files and sub-directories.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| failed("create", to, e))?;
    for item in std::fs::read_dir(from).map_err(|e| failed("list", from, e))? {
        let item = item.map_err(|e| failed("list", from, e))?;
        let (source, target) = (item.path(), to.join(item.file_name()));
        if item
            .file_type()
            .map_err(|e| failed("stat", &source, e))?
            .is_dir()
        {
            copy_dir(&source, &target)?;
        } else {
            std::fs::copy(&source, &target).map_err(|e| failed("copy", &source, e))?;
        }
    }
    Ok(())
}

/// Deletes directory `dir` if it exists.
fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed("remove", dir, e)),
    }
}

/// A copy of one dictionary's directory (`None`: the dictionary had no directory yet).
struct DirCopy(Option<PathBuf>);

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
        std::fs::remove_dir_all(&dir).map_err(|e| failed("wipe", &dir, e))
    }

    async fn forget_history(&self, namespace: &Name, dictionary: &Name) -> Result<()> {
        self.store
            .backend(namespace.as_str(), dictionary.as_str())?
            .forget_history()
            .await
    }

    async fn copy_stored(&self, namespace: &Name, dictionary: &Name) -> Result<StoredCopy> {
        // A backup: `cp -r` of the dictionary's directory (entries, log, version record).
        let dir = self.dictionary_dir(namespace, dictionary)?;
        if !dir.exists() {
            return Ok(Box::new(DirCopy(None)));
        }
        let copy = self
            .dir
            .path()
            .join("copies")
            .join(format!("{:016x}", rand::random::<u64>()));
        copy_dir(&dir, &copy)?;
        Ok(Box::new(DirCopy(Some(copy))))
    }

    async fn put_back(&self, namespace: &Name, dictionary: &Name, copy: StoredCopy) -> Result<()> {
        // Restoring that backup: the directory is replaced by the copy.
        let copy = copy.downcast::<DirCopy>().expect("a copy of this harness");
        let dir = self.dictionary_dir(namespace, dictionary)?;
        remove_dir(&dir)?;
        match &copy.0 {
            Some(copy) => copy_dir(copy, &dir),
            None => Ok(()),
        }
    }

    async fn damage_version_record(
        &self,
        namespace: &Name,
        dictionary: &Name,
        damage: Damage,
    ) -> Result<bool> {
        // The `version` file is text, one `<field> <value>` per line: it can hold every damage.
        let path = self.dictionary_dir(namespace, dictionary)?.join("version");
        if damage == Damage::RecordMissing {
            return std::fs::remove_file(&path)
                .map(|()| true)
                .map_err(|e| failed("remove", &path, e));
        }
        let (field, value) = match damage {
            Damage::CounterMissing => ("counter", None),
            Damage::CounterNotInteger => ("counter", Some("garbage")),
            Damage::CounterNegative => ("counter", Some("-5")),
            Damage::CounterHuge => ("counter", Some("9223372036854775808")),
            Damage::EpochNotInteger => ("epoch", Some("garbage")),
            _ => return Ok(false),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| failed("read", &path, e))?;
        let mut damaged = String::new();
        for line in text.lines() {
            match line.split_once(' ') {
                Some((name, _)) if name == field => {
                    if let Some(value) = value {
                        damaged.push_str(&format!("{field} {value}\n"));
                    }
                }
                _ => damaged.push_str(&format!("{line}\n")),
            }
        }
        assert_ne!(damaged, text, "the version file has no field {field}");
        std::fs::write(&path, damaged).map_err(|e| failed("write", &path, e))?;
        Ok(true)
    }

    async fn open_unreachable(
        &self,
        namespace: &Name,
        dictionary: &Name,
    ) -> Result<Box<dyn Backend>> {
        // A root below a regular file cannot be created or read, even by root (permissions would
        // not stop the test user when it is root).
        let file = self.dir.path().join("not-a-directory");
        std::fs::write(&file, b"").map_err(|e| failed("write", &file, e))?;
        let store = FileStore::new(file.join("store"));
        Ok(Box::new(
            store.backend(namespace.as_str(), dictionary.as_str())?,
        ))
    }

    async fn cleanup(&self, namespace: &Name) -> Result<()> {
        remove_dir(&self.store.root().join(namespace.as_str()))
    }
}

/// The harness factory: always available, no server needed.
async fn files() -> Option<Files> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = FileStore::new(dir.path().join("store"));
    Some(Files { dir, store })
}

durable_core::conformance_tests!(files, capabilities = {
    delta: true, push: false, insert_if_absent: true, compare_and_swap: true, pop: true,
    increment: true, batch: true, clear: true, expiry: false, stamps: true,
});
