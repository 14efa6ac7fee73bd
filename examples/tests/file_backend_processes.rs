//! Several processes writing one file-backend dictionary at once: the lock file serializes them,
//! so no increment is lost and every token is a step of one.
//!
//! The test re-runs its own binary as the writer processes (with `FILES_CHILD_DIR` set).

use std::process::{Command, Stdio};

use durable::{Backend, Changes};
use durable_examples::file_backend::FileStore;

const PROCESSES: usize = 3;
const INCREMENTS: i64 = 40;
const TEST: &str = "several_processes_write_one_dictionary";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_write_one_dictionary() {
    if let Ok(dir) = std::env::var("FILES_CHILD_DIR") {
        // A writer process.
        let backend = FileStore::new(dir)
            .backend("ns", "shared")
            .expect("backend");
        for _ in 0..INCREMENTS {
            backend.increment("n", 1).await.expect("increment");
        }
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let backend = FileStore::new(dir.path())
        .backend("ns", "shared")
        .expect("backend");
    let start = backend.last_updated().await.expect("version");
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args([TEST, "--exact", "--quiet"])
                .env("FILES_CHILD_DIR", dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("start a writer process")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("writer").success(), "a writer failed");
    }
    let total = PROCESSES as i64 * INCREMENTS;
    let load = backend.durables().await.expect("load");
    assert_eq!(load.entries.len(), 1);
    let entry = load.entries.iter().next().expect("the counter");
    assert_eq!(&entry.value[..], total.to_string().as_bytes());
    assert_eq!(load.version.epoch(), start.epoch());
    assert_eq!(load.version.counter(), start.counter() + total as u64);
    assert_ne!(load.version.stamp(), 0, "tokens carry a stamp");
    // A delta from the first token needs the logs of every process's writes to form one chain
    // of stamps from it to the current one.
    let Changes::Delta(delta) = backend.changes_since(start).await.expect("delta") else {
        panic!("the whole history should still be there");
    };
    assert_eq!(delta.upserts.len(), 1);
}
