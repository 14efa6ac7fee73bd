//! Dynamic configuration reloaded in the background, with a change listener, against Redis.
//!
//! ```sh
//! cargo run -p durable-examples --bin dynamic_config                    # redis://127.0.0.1:6379/
//! cargo run -p durable-examples --bin dynamic_config -- --watch         # keep running; then, elsewhere:
//! cargo run -p durable-examples --bin dynamic_config -- --set log_level=debug
//! cargo run -p durable-examples --bin dynamic_config -- --remove log_level
//! ```
//!
//! The service never calls `sync()`: in [`Mode::background`] a task keeps the snapshot current,
//! woken at once by Redis pub/sub push hints and polling every few seconds as the guarantee (a
//! lost hint costs at most one interval). Code that needs a setting reads the snapshot (one
//! atomic load, no I/O), and [`Dict::subscribe`] tells the service what changed, so it can
//! react (resize a pool, change the log level).
//!
//! Meant for Redis; any store works (`--url`), stores without push hints just pick changes up at
//! the next poll.
//!
//! Without `--watch` or `--set`, the example plays both sides: another process (a separate
//! handle) changes three settings, and the listener prints each change and how long it took to
//! arrive.

use std::time::{Duration, Instant};

use clap::Parser;
use durable::{ChangeKind, Dict, Error, Json, Mode, Options, Result};
use durable_examples::ExampleStore;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Dynamic configuration reloaded in the background, with a change listener")]
struct Args {
    /// The store; meant for Redis, works with any durable URL or files:DIR.
    #[arg(long, env = "DURABLE_URL", default_value = "redis://127.0.0.1:6379/")]
    url: String,
    /// Namespace of the dictionary.
    #[arg(long, default_value = "examples")]
    namespace: String,
    /// Polling interval of the background reload, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    interval_ms: u64,
    /// Keep running and print every change until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// Set one setting (`KEY=VALUE`, VALUE as JSON or else a string) and exit.
    #[arg(long, value_name = "KEY=VALUE")]
    set: Option<String>,
    /// Remove one setting and exit.
    #[arg(long, value_name = "KEY")]
    remove: Option<String>,
}

type Config = Dict<Value>;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    durable_examples::init_logging("warn");
    let store = ExampleStore::connect(&args.url).await?;

    if let Some(assignment) = &args.set {
        let Some((key, value)) = assignment.split_once('=') else {
            return Err(Error::Config(format!(
                "--set expects KEY=VALUE, got {assignment:?}"
            )));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
        let admin: Config = store
            .open(&args.namespace, "config", Json, Options::new())
            .await?;
        let version = admin.insert(key, value.clone()).await?;
        println!("set {key} = {value} (version {version})");
        return Ok(());
    }

    if let Some(key) = &args.remove {
        let admin: Config = store
            .open(&args.namespace, "config", Json, Options::new())
            .await?;
        let removed = admin.remove(key).await?;
        println!(
            "{key}: {}",
            if removed.is_some() {
                "removed"
            } else {
                "was not set"
            }
        );
        return Ok(());
    }

    let interval = Duration::from_millis(args.interval_ms.max(10));
    let options = Options::new().with_mode(Mode::background(interval));
    let config: Config = store.open(&args.namespace, "config", Json, options).await?;
    let mut changes = config.subscribe();
    println!(
        "config from {} (push hints: {}), polling every {interval:?}:",
        config.backend_name(),
        config.capabilities().push
    );
    for (key, value) in config.snapshot().iter() {
        println!("  {key} = {value}");
    }

    // The service's own work reads the snapshot: no I/O, always the latest applied version.
    let worker_config = config.clone();
    let worker = tokio::spawn(async move {
        loop {
            let snapshot = worker_config.snapshot();
            let _level = snapshot.get("log_level").and_then(Value::as_str);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    if args.watch {
        println!("watching for changes (Ctrl-C to stop)");
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) => println!("  {} {:?}: {}", change.key, change.kind, show(change.new.as_deref())),
                    Err(RecvError::Lagged(n)) => println!("  ({n} changes missed; the snapshot is still current)"),
                    Err(RecvError::Closed) => break,
                },
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        worker.abort();
        return Ok(());
    }

    // The demo: another process changes settings; this one hears about each.
    let admin: Config = store
        .open(&args.namespace, "config", Json, Options::new())
        .await?;
    let level = if config.snapshot().get("log_level") == Some(&json!("debug")) {
        "info"
    } else {
        "debug"
    };
    let edits = [
        ("log_level", json!(level)),
        ("pool_size", json!(8 + config.snapshot().len())),
        ("deployed_by_pid", json!(std::process::id())),
    ];
    for (key, value) in edits {
        let written = Instant::now();
        admin.insert(key, value).await?;
        let deadline = interval * 3;
        loop {
            let change = tokio::time::timeout(deadline, changes.recv()).await;
            match change {
                Ok(Ok(change)) if &*change.key == key => {
                    let how = match change.kind {
                        ChangeKind::Inserted => "new",
                        ChangeKind::Updated => "changed",
                        _ => "removed",
                    };
                    println!(
                        "  {key} {how}: {} (arrived {:.1?} after the write)",
                        show(change.new.as_deref()),
                        written.elapsed()
                    );
                    break;
                }
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Err(RecvError::Closed)) | Err(_) => {
                    println!("  {key}: no change heard within {deadline:?}");
                    break;
                }
            }
        }
    }
    let stats = config.stats();
    println!(
        "background handle: {} checks, {} hints, {} deltas, {} reloads",
        stats.checks, stats.hints, stats.deltas, stats.reloads
    );
    worker.abort();
    Ok(())
}

fn show(value: Option<&Value>) -> String {
    value.map_or_else(|| "(removed)".to_owned(), Value::to_string)
}
