//! A process starting from its backup file while the store is down.
//!
//! ```sh
//! cargo run -p durable-examples --bin cold_start                       # SQLite file in a temp dir
//! cargo run -p durable-examples --bin cold_start -- --url redis://127.0.0.1:6379/
//! ```
//!
//! Works with any store. It plays three moments of a service's life in one run:
//!
//! 1. **Yesterday**: the service runs with [`Options::with_backup_file`]; the handle saves its
//!    snapshot to that file (atomically: temporary file, rename, checksum) after every change.
//! 2. **Today, the store is down** when the process starts. `Dict::open` cannot load from the
//!    store, so it starts from the backup: reads work at once, the snapshot says
//!    [`is_from_backup`](durable::Snapshot::is_from_backup), `sync()` and writes fail with typed
//!    errors, and the handle keeps retrying the store in the background. Without a backup file
//!    the same `open` fails.
//! 3. **The store is back**: the next successful sync replaces the backup's data with the store's,
//!    including what other processes wrote during the outage.
//!
//! The outage is simulated with an [`OutageSwitch`]: the backends it wraps fail every operation
//! as a closed port would, so the example needs no server to stop. A real outage looks the same to
//! the handle: `open` gets [`Error::Unavailable`] or a timeout, and
//! falls back to the backup.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use durable::{Dict, Error, Json, Options, Result};
use durable_examples::ExampleStore;
use durable_examples::outage::OutageSwitch;
use serde_json::{Value, json};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Start from a backup file while the store is down")]
struct Args {
    /// The store (default: a SQLite file in the work directory). Any durable URL or files:DIR.
    #[arg(long, env = "DURABLE_URL")]
    url: Option<String>,
    /// Work directory for the backup file (and the default SQLite file). Default: a temporary
    /// directory, removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Namespace of the dictionary.
    #[arg(long, default_value = "examples")]
    namespace: String,
}

const DICTIONARY: &str = "settings";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    durable_examples::init_logging("warn");
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("durable-cold-start-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Config(format!("work directory {}: {e}", dir.display())))?;
    let result = run(&args, &dir).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run(args: &Args, dir: &Path) -> Result<()> {
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("store.sqlite").display()));
    let backup = dir.join("settings.backup");
    let _ = std::fs::remove_file(&backup);
    let store = ExampleStore::connect(&url).await?;
    let ns = args.namespace.as_str();

    // 1. Yesterday: settings are written, and the running service keeps a backup of them.
    let admin: Dict<Value> = store.open(ns, DICTIONARY, Json, Options::new()).await?;
    admin.insert("greeting", json!("hello")).await?;
    admin.insert("max_upload_mb", json!(25)).await?;
    admin.insert("maintenance", json!(false)).await?;
    {
        let options = Options::new().with_backup_file(&backup);
        let _service: Dict<Value> = store.open(ns, DICTIONARY, Json, options).await?;
        wait_for_file(&backup, Duration::from_secs(10)).await?;
    } // the process stops
    let size = std::fs::metadata(&backup).map_or(0, |m| m.len());
    println!(
        "1. first run against {url}: 3 settings written, backup saved to {} ({size} bytes)",
        backup.display()
    );

    // 2. Today: the process starts while the store is down.
    let outage = OutageSwitch::new();
    let backend = outage.wrap(store.backend(ns, DICTIONARY)?);
    outage.set_down(true);
    // Meanwhile another process, which can still reach the store, changes a setting.
    admin.insert("greeting", json!("hello again")).await?;

    let no_backup = outage.wrap(store.backend(ns, DICTIONARY)?);
    match Dict::<Value>::open(no_backup, Json, Options::new()).await {
        Err(error) => println!("2. store down: without a backup file, open fails: {error}"),
        Ok(_) => println!("2. store down: open without a backup unexpectedly worked"),
    }

    let options = Options::new()
        .with_backup_file(&backup)
        .with_open_timeout(Duration::from_secs(5));
    let settings: Dict<Value> = Dict::open(backend, Json, options).await?;
    let snapshot = settings.snapshot();
    println!(
        "   with the backup file, open works: from_backup={}, {} settings, greeting={}, age {:.1?}",
        snapshot.is_from_backup(),
        snapshot.len(),
        snapshot.get("greeting").unwrap_or(&Value::Null),
        snapshot.age()
    );
    match settings.sync().await {
        Err(error) => println!("   sync() while down: {error}"),
        Ok(_) => println!("   sync() while down unexpectedly worked"),
    }
    match settings.insert("maintenance", json!(true)).await {
        Err(error) => println!("   a write while down fails and changes nothing: {error}"),
        Ok(_) => println!("   a write while down unexpectedly worked"),
    }
    println!("   health: fresh={}", settings.health().fresh);

    // 3. The store is back: the next sync (or the background retry) replaces the backup's data.
    outage.set_down(false);
    let snapshot = settings.sync().await?;
    println!(
        "3. store is back: from_backup={}, greeting={}, health: fresh={}",
        snapshot.is_from_backup(),
        snapshot.get("greeting").unwrap_or(&Value::Null),
        settings.health().fresh
    );
    Ok(())
}

/// Waits until the backup file exists (it is renamed into place, so it is complete).
async fn wait_for_file(path: &Path, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > limit {
            return Err(Error::Config(format!(
                "the backup file {} was not written within {limit:?}",
                path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
