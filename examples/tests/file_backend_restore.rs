//! The fault workload of the conformance suite against the file backend: several handles write
//! and sync while the dictionary's directory is put back to a backup taken earlier. Tokens must
//! not lie: every handle notices that the store went back and follows it.

use std::fs::{self, File};
use std::path::Path;
use std::time::Duration;

use durable::{Dict, Options, Raw};
use durable_core::conformance::workload::{RawDict, Workload};
use durable_examples::file_backend::FileStore;

/// Opens the dictionary's lock file, as a backup tool that knows the layout would: the backend
/// holds it shared while reading and exclusively while writing.
fn lock_file(dir: &Path) -> File {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))
        .expect("open the lock file")
}

/// Copies directory `from` into `to`, leaving out the lock file.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create");
    for item in fs::read_dir(from).expect("list") {
        let item = item.expect("list");
        let (source, target) = (item.path(), to.join(item.file_name()));
        if item.file_name() == "lock" {
            continue;
        }
        if item.file_type().expect("stat").is_dir() {
            copy_dir(&source, &target);
        } else {
            fs::copy(&source, &target).expect("copy");
        }
    }
}

/// A consistent backup of the dictionary's directory: copied under the shared lock.
fn back_up(dir: &Path, backup: &Path) {
    let lock = lock_file(dir);
    lock.lock_shared().expect("shared lock");
    copy_dir(dir, backup);
}

/// Puts the backup back under the exclusive lock: everything but the lock file is replaced.
fn put_back(dir: &Path, backup: &Path) {
    let lock = lock_file(dir);
    lock.lock().expect("exclusive lock");
    for item in fs::read_dir(dir).expect("list") {
        let item = item.expect("list");
        if item.file_name() == "lock" {
            continue;
        }
        if item.file_type().expect("stat").is_dir() {
            fs::remove_dir_all(item.path()).expect("remove");
        } else {
            fs::remove_file(item.path()).expect("remove");
        }
    }
    copy_dir(backup, dir);
}

async fn handle(store: &FileStore) -> RawDict {
    let backend = store.backend("ns", "restored").expect("valid names");
    Dict::open(backend, Raw, Options::new())
        .await
        .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_follow_a_directory_put_back_while_they_write_and_sync() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let store = FileStore::new(tmp.path().join("store")).with_fsync(false);
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..3 {
        writers.push(handle(&store).await);
        readers.push(handle(&store).await);
    }
    let dir = store.dictionary_dir("ns", "restored").expect("valid names");
    let backup = tmp.path().join("backup");
    let fault = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (from, to) = (dir.clone(), backup.clone());
        tokio::task::spawn_blocking(move || back_up(&from, &to))
            .await
            .expect("back up");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (to, from) = (dir.clone(), backup.clone());
        tokio::task::spawn_blocking(move || put_back(&to, &from))
            .await
            .expect("put back");
    };
    let report = Workload::default()
        .run(writers, readers, fault, Duration::from_millis(500), || {
            handle(&store)
        })
        .await;
    eprintln!("{report:?}");
    eprintln!("anomalies: {}", report.anomalies());
    assert!(report.writes > 50, "the workload wrote: {report:?}");
    assert!(
        report.regressions_followed > 0,
        "handles saw the store go back: {report:?}"
    );
    assert_eq!(report.anomalies(), 0, "{report:?}");
}
