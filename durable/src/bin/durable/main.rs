//! `durable`: inspect, edit, back up and benchmark durable dictionaries in any store.
//!
//! ```sh
//! durable set beta true                      # SQLite file ./durable.sqlite by default
//! durable --url redis://127.0.0.1:6379/ -d flags list
//! durable export flags.jsonl && durable --url postgres://... import flags.jsonl
//! durable bench --quick
//! ```
//!
//! Values are stored as the JSON text given (validated), or as raw bytes with `--raw`. Errors are
//! one line on stderr and a non-zero exit code.

mod bench;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use durable::{Cas, ChangeKind, Dict, Mode, Options, Raw, Revision, Store};
use serde_json::{Value, json};

/// mimalloc instead of glibc's malloc: freeing a large snapshot (a reload of 1M entries) with
/// glibc leaves hundreds of thousands of small blocks that glibc tidies up inside the next large
/// allocation, which stalled the next request by up to ~90 ms in `durable bench`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Inspect, edit, back up and benchmark durable dictionaries.
#[derive(Debug, Parser)]
#[command(name = "durable", version, about)]
struct Cli {
    /// The store: sqlite://FILE, memory:, redis://HOST:PORT/DB, postgres://..., mysql://...,
    /// zk://HOST:PORT[,HOST:PORT][/CHROOT]
    #[arg(
        long,
        env = "DURABLE_URL",
        default_value = "sqlite://durable.sqlite",
        global = true
    )]
    url: String,
    /// Namespace of the dictionary.
    #[arg(short, long, default_value = "default", global = true)]
    namespace: String,
    /// Name of the dictionary.
    #[arg(short, long = "dict", default_value = "default", global = true)]
    dictionary: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the value of a key.
    Get {
        /// The key.
        key: String,
        /// Also print the entry's revision (for `cas`).
        #[arg(long)]
        revision: bool,
    },
    /// Store a value (JSON, or raw text with --raw).
    Set {
        /// The key.
        key: String,
        /// The value: JSON text (`true`, `42`, `"text"`, `{"a": 1}`), or any text with --raw.
        value: String,
        /// Store the value's bytes as they are, not as JSON.
        #[arg(long)]
        raw: bool,
        /// Expire the entry after this many seconds (on the store's clock).
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
        ttl: Option<f64>,
    },
    /// Delete every expired entry now (one atomic step) and print how many there were.
    Sweep,
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// List every entry.
    List {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add to an integer value (absent counts as 0) and print the result.
    Incr {
        /// The key.
        key: String,
        /// The amount to add (may be negative).
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
    },
    /// Compare-and-swap: write only if the key is still at the expected revision.
    Cas {
        /// The key.
        key: String,
        /// The revision read with `get --revision` (e.g. `r12` or `12`), or `absent`.
        #[arg(long)]
        expect: String,
        /// The new value (JSON, or text with --raw); omit with --delete.
        value: Option<String>,
        /// Delete the key instead of writing a value.
        #[arg(long, conflicts_with = "value")]
        delete: bool,
        /// Store the value's bytes as they are, not as JSON.
        #[arg(long)]
        raw: bool,
    },
    /// Print changes as they happen (key, old, new, token) until Ctrl-C.
    Watch {
        /// Seconds between version checks (push hints wake it earlier where the store has them).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Print the handle's statistics after a sync, as JSON.
    Stats,
    /// Print the handle's health after a sync, as JSON; exits 1 if the store is unreachable.
    Health,
    /// Write every entry as JSON lines to FILE (`-`: standard output).
    Export {
        /// The file to write.
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Read JSON lines written by `export` and store them in one atomic batch where the store
    /// allows it.
    Import {
        /// The file to read (`-`: standard input).
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Run the standard benchmark scenarios against the store (see `durable bench --help`).
    Bench(bench::BenchArgs),
}

/// A failure, printed as one line.
type CliResult<T = ()> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn main() {
    // Never let a panic's message and backtrace reach the user: one line, exit 101.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!("durable: internal error: {message}");
    }));
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("durable: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(message) = runtime.block_on(run(cli)) {
        eprintln!("durable: {message}");
        std::process::exit(1);
    }
}

type Bytes = Dict<Vec<u8>, Raw>;

async fn open(cli: &Cli, options: Options) -> CliResult<(Store, Bytes)> {
    let store = Store::connect(&cli.url).await.map_err(err)?;
    let dict = store
        .open(&cli.namespace, &cli.dictionary, Raw, options)
        .await
        .map_err(err)?;
    Ok((store, dict))
}

/// The bytes to store for a value given on the command line.
fn value_bytes(value: &str, raw: bool) -> CliResult<Vec<u8>> {
    if raw {
        return Ok(value.as_bytes().to_vec());
    }
    let parsed: Value = serde_json::from_str(value).map_err(|e| {
        format!("value {value:?} is not JSON ({e}); quote text (\"text\") or pass --raw")
    })?;
    serde_json::to_vec(&parsed).map_err(err)
}

/// How a stored value is shown: its text when UTF-8, hex otherwise.
fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("0x{}", hex(bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A stored value as JSON: the value itself when it is JSON, else `{"text": ...}` or
/// `{"hex": ...}`. The export line format, which `import` reads back byte for byte.
fn entry_json(key: &str, bytes: &[u8]) -> Value {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes)
        && serde_json::to_vec(&value).is_ok_and(|again| again == bytes)
    {
        return json!({ "key": key, "value": value });
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({ "key": key, "text": text }),
        Err(_) => json!({ "key": key, "hex": hex(bytes) }),
    }
}

fn entry_from_json(line: &str, number: usize) -> CliResult<(String, Vec<u8>)> {
    let bad = |why: &str| format!("line {number}: {why}");
    let object: Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
    let key = object["key"]
        .as_str()
        .ok_or_else(|| bad("no \"key\" string"))?
        .to_owned();
    let bytes = if let Some(value) = object.get("value") {
        serde_json::to_vec(value).map_err(err)?
    } else if let Some(text) = object["text"].as_str() {
        text.as_bytes().to_vec()
    } else if let Some(hex) = object["hex"].as_str() {
        unhex(hex).ok_or_else(|| bad("\"hex\" is not hexadecimal"))?
    } else {
        return Err(bad("no \"value\", \"text\" or \"hex\""));
    };
    Ok((key, bytes))
}

fn parse_revision(text: &str) -> CliResult<Option<Revision>> {
    if text == "absent" {
        return Ok(None);
    }
    text.trim_start_matches('r')
        .parse()
        .map(|n| Some(Revision(n)))
        .map_err(|_| format!("--expect {text:?}: give a revision such as r12, or `absent`"))
}

fn manual() -> Options {
    Options::new()
}

async fn run(cli: Cli) -> CliResult {
    let mut out = std::io::stdout().lock();
    match &cli.command {
        Command::Get { key, revision } => {
            let (_, dict) = open(&cli, manual()).await?;
            let snapshot = dict.snapshot();
            let entry = snapshot
                .get_versioned(key)
                .ok_or_else(|| format!("key {key:?} not found in {}", cli.dictionary))?;
            if *revision {
                writeln!(out, "{}\t{}", entry.revision, shown(&entry.value)).map_err(err)?;
            } else {
                writeln!(out, "{}", shown(&entry.value)).map_err(err)?;
            }
        }
        Command::Set {
            key,
            value,
            raw,
            ttl,
        } => {
            let bytes = value_bytes(value, *raw)?;
            let ttl = ttl
                .map(|seconds| {
                    Duration::try_from_secs_f64(seconds)
                        .map_err(|_| format!("--ttl {seconds}: give a number of seconds >= 0"))
                })
                .transpose()?;
            let (_, dict) = open(&cli, manual()).await?;
            let version = match ttl {
                Some(ttl) => dict.insert_with_ttl(key, bytes, ttl).await,
                None => dict.insert(key, bytes).await,
            }
            .map_err(err)?;
            writeln!(out, "{version}").map_err(err)?;
        }
        Command::Sweep => {
            let (_, dict) = open(&cli, manual()).await?;
            let removed = dict.sweep().await.map_err(err)?;
            writeln!(out, "{removed}").map_err(err)?;
        }
        Command::Del { key } => {
            let (_, dict) = open(&cli, manual()).await?;
            if dict.remove(key).await.map_err(err)?.is_none() {
                return Err(format!("key {key:?} not found in {}", cli.dictionary));
            }
        }
        Command::List { json } => {
            let (_, dict) = open(&cli, manual()).await?;
            let snapshot = dict.snapshot();
            let entries: BTreeMap<&str, &Vec<u8>> = snapshot.iter().collect();
            if *json {
                let object: serde_json::Map<String, Value> = entries
                    .iter()
                    .map(|(k, v)| {
                        let mut entry = entry_json(k, v);
                        let value = ["value", "text"]
                            .iter()
                            .find_map(|f| entry.get_mut(*f).map(Value::take))
                            .unwrap_or(entry);
                        ((*k).to_owned(), value)
                    })
                    .collect();
                writeln!(out, "{}", Value::Object(object)).map_err(err)?;
            } else {
                let width = entries
                    .keys()
                    .map(|k| k.chars().count())
                    .max()
                    .unwrap_or(3)
                    .clamp(3, 40);
                writeln!(out, "{:width$}  VALUE", "KEY").map_err(err)?;
                for (key, value) in &entries {
                    let mut text = shown(value).replace('\n', "\\n");
                    if text.chars().count() > 80 {
                        text = text.chars().take(77).collect::<String>() + "...";
                    }
                    writeln!(out, "{key:width$}  {text}").map_err(err)?;
                }
                writeln!(
                    out,
                    "({} entries, version {})",
                    entries.len(),
                    snapshot.version()
                )
                .map_err(err)?;
            }
        }
        Command::Incr { key, delta } => {
            let (_, dict) = open(&cli, manual()).await?;
            let (value, _) = dict.increment(key, *delta).await.map_err(err)?;
            writeln!(out, "{value}").map_err(err)?;
        }
        Command::Cas {
            key,
            expect,
            value,
            delete,
            raw,
        } => {
            let expected = parse_revision(expect)?;
            let new = match (value, delete) {
                (Some(value), false) => Some(value_bytes(value, *raw)?),
                (None, true) => None,
                _ => return Err("give a new value, or --delete".into()),
            };
            let (_, dict) = open(&cli, manual()).await?;
            match dict
                .compare_and_swap(key, expected, new)
                .await
                .map_err(err)?
            {
                Cas::Swapped { version } => writeln!(out, "swapped {version}").map_err(err)?,
                Cas::Conflict { current } => {
                    let now = current.map_or("absent".to_owned(), |c| {
                        format!("{} {}", c.revision, shown(&c.value))
                    });
                    return Err(format!("conflict: {key:?} is now {now}"));
                }
            }
        }
        Command::Watch { interval } => {
            let interval = Duration::try_from_secs_f64(*interval)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or("--interval must be a positive number of seconds")?;
            let options = Options::new().with_mode(Mode::background(interval));
            let (_, dict) = open(&cli, options).await?;
            let mut changes = dict.subscribe();
            eprintln!(
                "watching {}/{} at {} ({} entries); Ctrl-C to stop",
                cli.namespace,
                cli.dictionary,
                dict.snapshot().version(),
                dict.snapshot().len()
            );
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    change = changes.recv() => match change {
                        Ok(change) => {
                            let show = |v: Option<&std::sync::Arc<Vec<u8>>>| {
                                v.map_or("-".to_owned(), |v| shown(v))
                            };
                            let kind = match change.kind {
                                ChangeKind::Inserted => "inserted",
                                ChangeKind::Updated => "updated",
                                ChangeKind::Removed => "removed",
                                _ => "changed",
                            };
                            writeln!(out, "{kind}\t{}\t{}\t{}\t{}", change.key,
                                show(change.old.as_ref()), show(change.new.as_ref()), change.version)
                                .map_err(err)?;
                            out.flush().map_err(err)?;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            eprintln!("durable: {n} changes were missed (too fast to print)");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                    }
                }
            }
        }
        Command::Stats => {
            let (_, dict) = open(&cli, manual()).await?;
            dict.sync().await.map_err(err)?;
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&dict.stats()).map_err(err)?
            )
            .map_err(err)?;
        }
        Command::Health => {
            let (_, dict) = open(&cli, manual()).await?;
            let synced = dict.sync().await;
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&dict.health()).map_err(err)?
            )
            .map_err(err)?;
            synced.map_err(err)?;
        }
        Command::Export { file } => {
            let (_, dict) = open(&cli, manual()).await?;
            let snapshot = dict.snapshot();
            let entries: BTreeMap<&str, &Vec<u8>> = snapshot.iter().collect();
            let mut text = String::new();
            for (key, value) in &entries {
                text.push_str(&entry_json(key, value).to_string());
                text.push('\n');
            }
            if file.as_os_str() == "-" {
                out.write_all(text.as_bytes()).map_err(err)?;
            } else {
                std::fs::write(file, text)
                    .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
                eprintln!("exported {} entries to {}", entries.len(), file.display());
            }
        }
        Command::Import { file } => {
            let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                let opened = std::fs::File::open(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                Box::new(std::io::BufReader::new(opened))
            };
            let mut entries = Vec::new();
            for (number, line) in reader.lines().enumerate() {
                let line = line.map_err(err)?;
                if !line.trim().is_empty() {
                    entries.push(entry_from_json(&line, number + 1)?);
                }
            }
            let (_, dict) = open(&cli, manual()).await?;
            let count = entries.len();
            if dict.capabilities().batch {
                dict.insert_many(entries).await.map_err(err)?;
                eprintln!("imported {count} entries in one atomic batch");
            } else {
                for (key, value) in entries {
                    dict.insert(&key, value).await.map_err(err)?;
                }
                eprintln!("imported {count} entries one by one (this store has no batches)");
            }
        }
        Command::Bench(args) => {
            let store = Store::connect(&cli.url).await.map_err(err)?;
            bench::run(&store, &cli.namespace, args).await?;
        }
    }
    Ok(())
}
