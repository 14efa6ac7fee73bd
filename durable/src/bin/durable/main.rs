//! `durable`: inspect, edit, back up and benchmark durable dictionaries in any store.
//!
//! ```sh
//! durable set beta true                      # SQLite file ./durable.sqlite by default
//! durable --url redis://127.0.0.1:6379/ -d flags list
//! durable export flags.jsonl && durable --url postgres://... import flags.jsonl
//! durable flags import flags.flagd.json        # OpenFeature flags (flagd format), dictionary `flags`
//! durable bench --quick
//! ```
//!
//! Values are stored as the JSON text given (validated), or as raw bytes with `--raw`. Keys and
//! text values are printed with control characters escaped (`\n`, `\u{1b}`), so stored data
//! cannot rewrite the terminal. Errors are one line on stderr and a non-zero exit code (2 for a
//! bad command line).

mod bench;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use durable::openfeature::{FlagFile, FlagStore, ImportMode, ImportReport};
use durable::{
    Cas, ChangeEvent, ChangeKind, Dict, Json, Mode, Operation, Options, Raw, Revision, Store,
};
use futures_util::StreamExt;
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
    /// Name of the dictionary [default: `default`; `flags` for the `flags` commands]
    #[arg(short, long = "dict", global = true)]
    dictionary: Option<String>,
    /// Time limit of one full load of the dictionary, in seconds (a million entries take
    /// seconds); opening waits this long plus --timeout.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "60",
        value_parser = parse_load_timeout,
        global = true
    )]
    load_timeout: Duration,
    /// Time limit of every other store operation, in seconds (a version check, a write, one
    /// batch of `import`).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "5",
        value_parser = parse_timeout,
        global = true
    )]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The dictionary's name: `-d`, else `flags` for the flags commands, else `default`.
    fn dictionary(&self) -> &str {
        match (&self.dictionary, &self.command) {
            (Some(name), _) => name,
            (None, Command::Flags { .. }) => "flags",
            (None, _) => "default",
        }
    }

    /// `namespace/dictionary`, for messages.
    fn place(&self) -> String {
        format!("{}/{}", self.namespace, self.dictionary())
    }

    /// The options of every handle the command opens (load and open time limits).
    fn options(&self) -> Options {
        Options::new()
            .with_timeout(self.timeout)
            .with_load_timeout(self.load_timeout)
            .with_open_timeout(self.load_timeout.saturating_add(self.timeout))
    }
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
        /// Print the stored bytes exactly (no escaping of control characters, no hex).
        #[arg(long)]
        raw: bool,
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
        /// Expire the entry after this many seconds (on the store's clock; 0.001 to 100 years).
        #[arg(
            long,
            value_name = "SECONDS",
            allow_negative_numbers = true,
            value_parser = parse_ttl
        )]
        ttl: Option<Duration>,
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
    /// Print the handle's health after a sync, as JSON (`ready: false` with the error and the
    /// snapshot's age when the store cannot be used); exits 1 unless ready.
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
    /// OpenFeature flags in flagd's flag file format (dictionary `flags` unless -d is given).
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
    },
    /// Run the standard benchmark scenarios against the store (see `durable bench --help`).
    Bench(bench::BenchArgs),
}

/// `durable flags ...`: flagd flag files in and out of a dictionary of flag definitions (the
/// layout of `durable-openfeature`, which its provider evaluates).
#[derive(Debug, Subcommand)]
enum FlagsCommand {
    /// Store a flagd flag file. Every flag is validated first (nothing is written if one is
    /// invalid; the error names its JSON path); afterwards the dictionary holds exactly the file
    /// (with --merge: the file's flags, and the others it held).
    Import {
        /// The flag file (`-`: standard input).
        file: PathBuf,
        /// Only add and replace the file's flags; remove nothing.
        #[arg(long)]
        merge: bool,
    },
    /// Write the stored flags as a flagd flag file (indented JSON).
    Export {
        /// The file to write (`-`: standard output).
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Check a flagd flag file without touching the store.
    Validate {
        /// The flag file (`-`: standard input).
        file: PathBuf,
    },
}

/// The longest `--ttl`: 100 years (a longer one is a mistake, and stores cap it anyway).
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600 + 25 * 24 * 3600);

/// A number of seconds from the command line, between 0 and `max` (`max_text` in messages:
/// the messages never echo a 300-digit rendering of what was typed).
fn parse_seconds(text: &str, max: Duration, max_text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds, e.g. 30 or 0.5".to_owned())?;
    if seconds.is_nan() || seconds < 0.0 {
        return Err("expected a number of seconds of at least 0".into());
    }
    if seconds > max.as_secs_f64() {
        return Err(format!("at most {max_text}"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("at most {max_text}"))
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let max = format!(
        "{} seconds (100 years); leave out --ttl for an entry that never expires",
        MAX_TTL.as_secs()
    );
    let ttl = parse_seconds(text, MAX_TTL, &max)?;
    if ttl.is_zero() {
        return Err(
            "an entry that expires at once is never seen: give a positive number of seconds, \
             or leave out --ttl"
                .into(),
        );
    }
    if ttl < Duration::from_millis(1) {
        return Err("at least 0.001 (stores keep expiries to the millisecond)".into());
    }
    Ok(ttl)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_load_timeout(text)
}

fn parse_load_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_seconds(
        text,
        Duration::from_secs(24 * 3600),
        "86400 seconds (a day)",
    )?;
    if timeout.is_zero() {
        return Err("must be more than 0 seconds".into());
    }
    Ok(timeout)
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
        .open(&cli.namespace, cli.dictionary(), Raw, options)
        .await
        .map_err(|e| open_error(cli, e))?;
    Ok((store, dict))
}

/// An error of opening a dictionary, with a hint when its load ran out of time.
fn open_error(cli: &Cli, error: durable::Error) -> String {
    match &error {
        durable::Error::Timeout {
            operation: Operation::Load | Operation::Open,
            ..
        } => format!(
            "{error} (a large dictionary: raise --load-timeout, now {} s)",
            cli.load_timeout.as_secs_f64()
        ),
        _ => error.to_string(),
    }
}

/// An error of a store operation, with a hint when it ran out of time.
fn op_error(cli: &Cli, error: durable::Error) -> String {
    match &error {
        durable::Error::Timeout { .. } => format!(
            "{error} (raise --timeout, now {} s)",
            cli.timeout.as_secs_f64()
        ),
        _ => error.to_string(),
    }
}

/// `text` with control characters escaped (`\n`, `\t`, `\r`, `\u{1b}`...), Unicode
/// bidirectional controls included, so that stored data cannot move the cursor, recolour the
/// terminal, reorder what is shown or split a line of a listing.
fn escaped(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
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

/// How a stored value is shown: its text when UTF-8 (control characters escaped), hex
/// otherwise.
fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => escaped(text).into_owned(),
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

/// The text of `file` (`-`: standard input).
fn read_text(file: &Path) -> CliResult<String> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
    } else {
        text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    }
    Ok(text)
}

/// Up to ten keys, escaped, then how many more.
fn some_keys(keys: &[String]) -> String {
    let mut shown: Vec<String> = keys
        .iter()
        .take(10)
        .map(|k| escaped(k).into_owned())
        .collect();
    if keys.len() > 10 {
        shown.push(format!("and {} more", keys.len() - 10));
    }
    shown.join(", ")
}

fn import_summary(file: &str, place: &str, flags: usize, report: &ImportReport) -> String {
    let mut summary = format!(
        "imported {file} into {place} ({flags} flag{}): {} entries written",
        if flags == 1 { "" } else { "s" },
        report.written.len()
    );
    if !report.written.is_empty() {
        summary.push_str(&format!(" ({})", some_keys(&report.written)));
    }
    summary.push_str(&format!(", {} removed", report.removed.len()));
    if !report.removed.is_empty() {
        summary.push_str(&format!(" ({})", some_keys(&report.removed)));
    }
    summary.push_str(&format!(", {} unchanged", report.unchanged));
    summary
}

/// `durable flags ...`.
async fn flags(cli: &Cli, command: &FlagsCommand, out: &mut impl Write) -> CliResult {
    let what = |file: &Path| {
        if file.as_os_str() == "-" {
            "standard input".to_owned()
        } else {
            file.display().to_string()
        }
    };
    if let FlagsCommand::Validate { file } = command {
        let parsed =
            FlagFile::parse(&read_text(file)?).map_err(|e| format!("{}: {e}", what(file)))?;
        let flags = parsed.flag_keys().count();
        writeln!(
            out,
            "{}: a valid flagd flag file ({flags} flag{})",
            what(file),
            if flags == 1 { "" } else { "s" }
        )
        .map_err(err)?;
        return Ok(());
    }
    let store = Store::connect(&cli.url).await.map_err(err)?;
    let dict: Dict<Value, Json> = store
        .open(&cli.namespace, cli.dictionary(), Json, cli.options())
        .await
        .map_err(|e| open_error(cli, e))?;
    let flags = FlagStore::new(dict);
    match command {
        FlagsCommand::Import { file, merge } => {
            let mode = if *merge {
                ImportMode::Merge
            } else {
                ImportMode::Replace
            };
            let text = read_text(file)?;
            let report = flags
                .import(&text, mode)
                .await
                .map_err(|e| format!("{}: {e}", what(file)))?;
            let count = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|file| file.get("flags")?.as_object().map(|flags| flags.len()))
                .unwrap_or(0);
            let summary = import_summary(&what(file), &cli.place(), count, &report);
            writeln!(out, "{summary}").map_err(err)?;
        }
        FlagsCommand::Export { file } => {
            let exported = flags.export();
            if file.as_os_str() == "-" {
                out.write_all(exported.to_pretty_string().as_bytes())
                    .map_err(err)?;
            } else {
                flags.export_file(file).map_err(err)?;
                eprintln!(
                    "exported {} flags from {} to {}",
                    exported.flag_keys().count(),
                    cli.place(),
                    file.display()
                );
            }
        }
        FlagsCommand::Validate { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// `durable health`: the handle's health as JSON, with `ready` true only when the store
/// answered, and `error` saying why not. `Err` (exit 1) unless ready.
async fn health(cli: &Cli, out: &mut impl Write) -> CliResult {
    let (mut report, error) = match open(cli, cli.options()).await {
        Ok((_, dict)) => {
            let synced = dict.sync_or_stale().await;
            let error = match &synced.freshness {
                durable::Freshness::Fresh => None,
                durable::Freshness::Stale { error, .. }
                | durable::Freshness::FromBackup { error } => Some(error.to_string()),
                _ => Some("not fresh".to_owned()),
            };
            drop(synced);
            let report = serde_json::to_value(dict.health()).map_err(err)?;
            (report, error)
        }
        // No snapshot at all: the same fields, empty.
        Err(error) => (
            json!({
                "fresh": false,
                "stale_since": null,
                "last_error": error,
                "bad_keys": [],
                "age": null,
                "version": null,
            }),
            Some(error),
        ),
    };
    if let Value::Object(fields) = &mut report {
        fields.insert("ready".into(), json!(error.is_none()));
        fields.insert("error".into(), json!(error));
        fields.insert("namespace".into(), json!(cli.namespace));
        fields.insert("dictionary".into(), json!(cli.dictionary()));
    }
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&report).map_err(err)?
    )
    .map_err(err)?;
    match error {
        None => Ok(()),
        Some(error) => Err(format!("{} is not ready: {error}", cli.place())),
    }
}

async fn run(cli: Cli) -> CliResult {
    let mut out = std::io::stdout().lock();
    let manual = || cli.options();
    match &cli.command {
        Command::Get { key, revision, raw } => {
            let (_, dict) = open(&cli, manual()).await?;
            let snapshot = dict.snapshot();
            let entry = snapshot
                .get_versioned(key)
                .ok_or_else(|| format!("key {key:?} not found in {}", cli.place()))?;
            if *revision {
                write!(out, "{}\t", entry.revision).map_err(err)?;
            }
            if *raw {
                out.write_all(&entry.value).map_err(err)?;
                writeln!(out).map_err(err)?;
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
            let (_, dict) = open(&cli, manual()).await?;
            let version = match ttl {
                Some(ttl) => dict.insert_with_ttl(key, bytes, *ttl).await,
                None => dict.insert(key, bytes).await,
            }
            .map_err(|e| op_error(&cli, e))?;
            writeln!(out, "version {version}").map_err(err)?;
        }
        Command::Sweep => {
            let (_, dict) = open(&cli, manual()).await?;
            let removed = dict.sweep().await.map_err(|e| op_error(&cli, e))?;
            writeln!(out, "{removed}").map_err(err)?;
        }
        Command::Del { key } => {
            let (_, dict) = open(&cli, manual()).await?;
            match dict.remove(key).await.map_err(|e| op_error(&cli, e))? {
                Some(version) => writeln!(out, "version {version}").map_err(err)?,
                None => {
                    return Err(format!(
                        "key {key:?} not found in {}: nothing deleted",
                        cli.place()
                    ));
                }
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
                let keys: Vec<Cow<'_, str>> = entries.keys().map(|k| escaped(k)).collect();
                let width = keys
                    .iter()
                    .map(|k| k.chars().count())
                    .max()
                    .unwrap_or(3)
                    .clamp(3, 40);
                writeln!(out, "{:width$}  VALUE", "KEY").map_err(err)?;
                for (key, value) in keys.iter().zip(entries.values()) {
                    let mut text = shown(value);
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
            let (value, _) = dict
                .increment(key, *delta)
                .await
                .map_err(|e| op_error(&cli, e))?;
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
                .map_err(|e| op_error(&cli, e))?
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
            let options = cli.options().with_mode(Mode::background(interval));
            let (_, dict) = open(&cli, options).await?;
            let changes = dict.changes();
            let mut changes = std::pin::pin!(changes);
            eprintln!(
                "watching {} at {} ({} entries); Ctrl-C to stop",
                cli.place(),
                dict.snapshot().version(),
                dict.snapshot().len()
            );
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    event = changes.next() => match event {
                        Some(ChangeEvent::Changed(change)) => {
                            let show = |v: Option<&std::sync::Arc<Vec<u8>>>| {
                                v.map_or("-".to_owned(), |v| shown(v))
                            };
                            let kind = match change.kind {
                                ChangeKind::Inserted => "inserted",
                                ChangeKind::Updated => "updated",
                                ChangeKind::Removed => "removed",
                                _ => "changed",
                            };
                            writeln!(out, "{kind}\t{}\t{}\t{}\t{}", escaped(&change.key),
                                show(change.old.as_ref()), show(change.new.as_ref()), change.version)
                                .map_err(err)?;
                            out.flush().map_err(err)?;
                        }
                        Some(ChangeEvent::Resynced { missed, snapshot }) => {
                            writeln!(out, "resynced\t{missed} changes missed\t-\t-\t{}",
                                snapshot.version()).map_err(err)?;
                            out.flush().map_err(err)?;
                            eprintln!("durable: {missed} changes were missed (too fast to print); \
                                the dictionary is now at {} with {} entries",
                                snapshot.version(), snapshot.len());
                        }
                        Some(_) => {}
                        None => return Ok(()),
                    }
                }
            }
        }
        Command::Stats => {
            let (_, dict) = open(&cli, manual()).await?;
            dict.sync().await.map_err(|e| op_error(&cli, e))?;
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&dict.stats()).map_err(err)?
            )
            .map_err(err)?;
        }
        Command::Health => health(&cli, &mut out).await?,
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
                dict.insert_many(entries)
                    .await
                    .map_err(|e| op_error(&cli, e))?;
                eprintln!("imported {count} entries in one atomic batch");
            } else {
                for (key, value) in entries {
                    dict.insert(&key, value)
                        .await
                        .map_err(|e| op_error(&cli, e))?;
                }
                eprintln!("imported {count} entries one by one (this store has no batches)");
            }
        }
        Command::Flags { command } => flags(&cli, command, &mut out).await?,
        Command::Bench(args) => {
            let store = Store::connect(&cli.url).await.map_err(err)?;
            bench::run(&store, &cli.namespace, args).await?;
        }
    }
    Ok(())
}
