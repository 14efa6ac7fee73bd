//! `durable`: inspect, edit, back up and benchmark durable dictionaries in any store.
//!
//! ```sh
//! durable set beta true                      # SQLite file ./durable.sqlite by default
//! durable --url redis://127.0.0.1:6379/ -d flags list
//! durable export flags.jsonl && durable --url postgres://... import --replace flags.jsonl
//! durable flags import flags.flagd.json        # OpenFeature flags (flagd format), dictionary `flags`
//! durable bench --quick
//! ```
//!
//! Values are stored as the JSON text given (validated, and refused where JSON readers would
//! change it: duplicate keys, numbers beyond 64 bits), or as raw bytes with `--raw`. Commands
//! print text for people (durations with units) and JSON with `--json`. Keys and text values are
//! printed with control characters escaped (`\n`, `\u{1b}`), so stored data cannot rewrite the
//! terminal. Errors are one line on stderr and a non-zero exit code, listed in [`EXIT_CODES`].

mod bench;
mod strict;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use durable::openfeature::{FlagFile, FlagStore, ImportMode, ImportReport};
use durable::{
    Backend, Cas, ChangeEvent, ChangeKind, Dict, Json, Mode, Operation, Options, Raw, Revision,
    Stats, Store, StoreOptions, StoreTime,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use strict::Refused;

/// mimalloc instead of glibc's malloc: freeing a large snapshot (a reload of 1M entries) with
/// glibc leaves hundreds of thousands of small blocks that glibc tidies up inside the next large
/// allocation, which stalled the next request by up to ~90 ms in `durable bench`. Wrapped in a
/// counter of the bytes allocated (no limit), which `durable bench --only memory` reads: resident
/// memory also counts what the allocator keeps after a load freed it.
#[global_allocator]
static ALLOCATOR: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

/// Inspect, edit, back up and benchmark durable dictionaries.
#[derive(Debug, Parser)]
#[command(name = "durable", version, about, after_help = EXIT_CODES)]
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

/// What `durable --help` says after the options.
const EXIT_CODES: &str = "\
Output: text for people; --json (on the commands that print a result) prints JSON for scripts.

Exit codes:
  0    success
  1    an error (the store, a file, a refused value, `health` not ready): one line on stderr
  2    a bad command line
  3    no such key (`get`, `del`)
  4    compare-and-swap conflict (`cas`): the key is at another revision
  5    no such dictionary (commands that only read: `get`, `list`, `stats`, `health`, `watch`,
       `export`, `flags export`)
  101  an internal error (a bug)

Commands that only read never write to the store: they create no dictionary and no SQL tables
(a read-only database role can run them). Writing commands create what they need; `durable
migrate` creates the SQL tables explicitly.";

/// Exit code of a failure without a code of its own (see [`EXIT_CODES`]).
const EXIT_ERROR: i32 = 1;
/// Exit code of `get` or `del` of a key that is not there.
const EXIT_NO_SUCH_KEY: i32 = 3;
/// Exit code of a `cas` that found the key at another revision.
const EXIT_CONFLICT: i32 = 4;
/// Exit code of a reading command on a dictionary that is not in the store.
const EXIT_NO_SUCH_DICTIONARY: i32 = 5;

/// `--json`, the same on every command that prints a result.
#[derive(Debug, Clone, Copy, clap::Args)]
struct Output {
    /// Print JSON for scripts instead of text for people.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the value of a key (with --json: the key, value, revision and expiry).
    Get {
        /// The key.
        key: String,
        /// Also print the entry's revision (for `cas`).
        #[arg(long)]
        revision: bool,
        /// Print the stored bytes exactly (no escaping of control characters, no hex).
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        #[command(flatten)]
        output: Output,
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
        #[command(flatten)]
        output: Output,
    },
    /// Delete every expired entry now (one atomic step) and print how many there were.
    Sweep {
        #[command(flatten)]
        output: Output,
    },
    /// Delete a key (exit code 3 if it is not there).
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        output: Output,
    },
    /// List every entry (with --json: one object of keys and values).
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Add to an integer value (absent counts as 0) and print the result.
    Incr {
        /// The key.
        key: String,
        /// The amount to add (may be negative).
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
        #[command(flatten)]
        output: Output,
    },
    /// Compare-and-swap: write only if the key is still at the expected revision (exit code 4
    /// if it is not).
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
        #[command(flatten)]
        output: Output,
    },
    /// Print changes as they happen (kind, key, old, new, token; with --json one object a line)
    /// until Ctrl-C.
    Watch {
        /// Seconds between version checks (push hints wake it earlier where the store has them).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        #[command(flatten)]
        output: Output,
    },
    /// Print the handle's statistics after a sync.
    Stats {
        #[command(flatten)]
        output: Output,
    },
    /// Print the handle's health after a sync (`ready: false` with the error and the snapshot's
    /// age when the store cannot be used); exits 1 unless ready.
    Health {
        #[command(flatten)]
        output: Output,
    },
    /// Write every entry as JSON lines to FILE (`-`: standard output).
    ///
    /// One line per entry, in key order: `{"key": K, "value": V}` where the stored bytes are
    /// JSON, else `"text"` (UTF-8) or `"hex"` instead of `"value"`. An entry set with --ttl also
    /// has `"expires_at_ms"`: when it expires, on the store's clock, in milliseconds since the
    /// Unix epoch (an absolute time, so a backup restored later does not bring back what had
    /// expired meanwhile). `durable import` reads it back (`import --replace` for an exact
    /// restore).
    Export {
        /// The file to write.
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Read JSON lines written by `export` and store them (see `durable export --help`).
    ///
    /// Every line is checked before anything is written (a key given twice, a value JSON readers
    /// would change, a malformed line: refused, naming the line). Without --replace the entries
    /// are merged: the file's keys are written, the others are left alone. With --replace the
    /// dictionary afterwards holds exactly the file: the keys it lacks (as loaded just before)
    /// are deleted in the same atomic batch as the writes, where the store has batches.
    ///
    /// Expiries: an entry with `"expires_at_ms"` gets the time it has left by the store's clock
    /// (an entry already expired is skipped, and with --replace deleted). A batch cannot carry
    /// expiries, so expiring entries are written one by one after the batch.
    Import {
        /// The file to read (`-`: standard input).
        #[arg(default_value = "-")]
        file: PathBuf,
        /// Make the dictionary hold exactly the file: also delete the keys it lacks.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        output: Output,
    },
    /// List the dictionaries of the namespace (-n), one per line.
    Dicts {
        #[command(flatten)]
        output: Output,
    },
    /// Create the SQL tables (and add the columns an older version's tables lack), as a role
    /// that may; writing commands do it themselves, reading commands never. Other stores need
    /// nothing.
    Migrate,
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
        #[command(flatten)]
        output: Output,
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
        #[command(flatten)]
        output: Output,
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

/// A failure: one line on stderr, and the exit code.
#[derive(Debug)]
struct Failure {
    message: String,
    code: i32,
}

impl Failure {
    /// `key` is not in the dictionary (exit code 3).
    fn no_such_key(cli: &Cli, key: &str) -> Failure {
        Failure {
            message: format!("no such key: {} in {}", escaped(key), cli.place()),
            code: EXIT_NO_SUCH_KEY,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            code: EXIT_ERROR,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        message.to_owned().into()
    }
}

type CliResult<T = ()> = Result<T, Failure>;

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
    if let Err(failure) = runtime.block_on(run(cli)) {
        eprintln!("durable: {}", failure.message);
        std::process::exit(failure.code);
    }
}

type Bytes = Dict<Vec<u8>, Raw>;

/// What a command does to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Only reads: connects without creating SQL tables, and fails with exit code 5 when the
    /// dictionary is not there (opening it would create its version record).
    Read,
    /// Writes: creates what it needs.
    Write,
}

/// Connects to the store for `access`: SQL tables are created only for a write.
async fn connect_store(cli: &Cli, access: Access) -> CliResult<Store> {
    let options = StoreOptions::new().with_create_schema(access == Access::Write);
    Ok(Store::connect_with(&cli.url, &options).await.map_err(err)?)
}

/// Connects to the store for `access`, checking that the dictionary exists for a read.
async fn connect(cli: &Cli, access: Access) -> CliResult<Store> {
    let store = connect_store(cli, access).await?;
    if access == Access::Read {
        let dictionaries = store.dictionaries(&cli.namespace).await.map_err(err)?;
        if !dictionaries.iter().any(|d| d == cli.dictionary()) {
            let there = if dictionaries.is_empty() {
                "none".to_owned()
            } else {
                dictionaries.join(", ")
            };
            return Err(Failure {
                message: format!(
                    "no dictionary {:?} in namespace {:?} (dictionaries there: {there}; \
                     `durable dicts` lists them)",
                    cli.dictionary(),
                    cli.namespace
                ),
                code: EXIT_NO_SUCH_DICTIONARY,
            });
        }
    }
    Ok(store)
}

async fn open(cli: &Cli, access: Access, options: Options) -> CliResult<(Store, Bytes)> {
    let store = connect(cli, access).await?;
    let dict = store
        .open(&cli.namespace, cli.dictionary(), Raw, options)
        .await
        .map_err(|e| op_error(cli, e))?;
    Ok((store, dict))
}

/// An error of a store operation, with a hint when it ran out of time: the option that sets its
/// limit (`--load-timeout` for opening, which loads, and for what grows with the dictionary).
fn op_error(cli: &Cli, error: durable::Error) -> String {
    match &error {
        durable::Error::Timeout { operation, .. }
            if *operation == Operation::Open || operation.grows_with_dictionary() =>
        {
            format!(
                "{error} (a large dictionary: raise --load-timeout, now {} s)",
                cli.load_timeout.as_secs_f64()
            )
        }
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
    let parsed = strict::parse(value).map_err(|refused| match refused {
        Refused::Syntax(e) => format!(
            "value {:?} is not JSON ({e}); quote text (\"text\") or pass --raw",
            Shortened(value)
        ),
        Refused::Changed(why) => format!(
            "value {:?} refused: {why}, or pass --raw to store the bytes as they are",
            Shortened(value)
        ),
    })?;
    Ok(serde_json::to_vec(&parsed).map_err(err)?)
}

/// Text for a message, cut after 60 characters.
struct Shortened<'a>(&'a str);

impl std::fmt::Debug for Shortened<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(60) {
            Some((end, _)) => write!(f, "{:?}...", &self.0[..end]),
            None => write!(f, "{:?}", self.0),
        }
    }
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

/// One line of an `export` file.
#[derive(Debug)]
struct ExportLine {
    key: String,
    bytes: Vec<u8>,
    /// When the entry expires, on the store's clock.
    expires_at: Option<StoreTime>,
}

fn entry_from_json(line: &str, number: usize) -> CliResult<ExportLine> {
    let bad = |why: &str| format!("line {number}: {why}");
    let object = strict::parse(line).map_err(|refused| match refused {
        Refused::Syntax(e) => bad(&e.to_string()),
        Refused::Changed(why) => bad(&why),
    })?;
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
        return Err(bad("no \"value\", \"text\" or \"hex\"").into());
    };
    let expires_at = match object.get("expires_at_ms") {
        None | Some(Value::Null) => None,
        Some(at) => Some(StoreTime(at.as_u64().ok_or_else(|| {
            bad("\"expires_at_ms\" is not a whole number of milliseconds since the Unix epoch")
        })?)),
    };
    Ok(ExportLine {
        key,
        bytes,
        expires_at,
    })
}

fn parse_revision(text: &str) -> CliResult<Option<Revision>> {
    if text == "absent" {
        return Ok(None);
    }
    text.trim_start_matches('r')
        .parse()
        .map(|n| Some(Revision(n)))
        .map_err(|_| format!("--expect {text:?}: give a revision such as r12, or `absent`").into())
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
    if let FlagsCommand::Validate { file, output } = command {
        let parsed =
            FlagFile::parse(&read_text(file)?).map_err(|e| format!("{}: {e}", what(file)))?;
        let flags = parsed.flag_keys().count();
        if output.json {
            let report = json!({"file": what(file), "valid": true, "flags": flags});
            writeln!(out, "{report}").map_err(err)?;
            return Ok(());
        }
        writeln!(
            out,
            "{}: a valid flagd flag file ({flags} flag{})",
            what(file),
            if flags == 1 { "" } else { "s" }
        )
        .map_err(err)?;
        return Ok(());
    }
    let access = match command {
        FlagsCommand::Export { .. } => Access::Read,
        _ => Access::Write,
    };
    let store = connect(cli, access).await?;
    let dict: Dict<Value, Json> = store
        .open(&cli.namespace, cli.dictionary(), Json, cli.options())
        .await
        .map_err(|e| op_error(cli, e))?;
    let flags = FlagStore::new(dict);
    match command {
        FlagsCommand::Import {
            file,
            merge,
            output,
        } => {
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
            if output.json {
                let report = json!({
                    "file": what(file),
                    "namespace": cli.namespace,
                    "dictionary": cli.dictionary(),
                    "flags": count,
                    "written": report.written,
                    "removed": report.removed,
                    "unchanged": report.unchanged,
                });
                writeln!(out, "{report}").map_err(err)?;
                return Ok(());
            }
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

/// A duration for people: `850 ns`, `5.2 µs`, `340.0 ms`, `1.5 s`, `2.0 min`, `3.0 h`,
/// `2.5 days`.
fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    let (value, unit) = if seconds < 1e-6 {
        return format!("{} ns", duration.as_nanos());
    } else if seconds < 1e-3 {
        (seconds * 1e6, "µs")
    } else if seconds < 1.0 {
        (seconds * 1e3, "ms")
    } else if seconds < 60.0 {
        (seconds, "s")
    } else if seconds < 3600.0 {
        (seconds / 60.0, "min")
    } else if seconds < 86_400.0 {
        (seconds / 3600.0, "h")
    } else {
        (seconds / 86_400.0, "days")
    };
    format!("{value:.1} {unit}")
}

/// How long ago `time` was, for people (`never` for none).
fn ago(time: Option<SystemTime>) -> String {
    match time.map(|time| SystemTime::now().duration_since(time)) {
        None => "never".into(),
        Some(Ok(since)) => format!("{} ago", human_duration(since)),
        Some(Err(_)) => "just now".into(),
    }
}

/// A size for people: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `1 entry`, `2 entries`.
fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// `durable stats` for people: one `name: value` line each, durations and sizes with units.
fn print_stats(cli: &Cli, stats: &Stats, out: &mut impl Write) -> CliResult {
    let clock = match (
        stats.store_clock_offset_ms,
        stats.store_clock_uncertainty_ms,
    ) {
        (Some(offset), uncertainty) => format!(
            "{} {} this machine's (± {})",
            human_duration(Duration::from_millis(offset.unsigned_abs())),
            if offset < 0 { "behind" } else { "ahead of" },
            human_duration(Duration::from_millis(uncertainty.unwrap_or(0)))
        ),
        (None, _) => "not measured (no expiring entries)".into(),
    };
    let lines = [
        ("dictionary", cli.place()),
        ("version", stats.version.clone()),
        (
            "entries",
            format!(
                "{} ({} of values, {} expiring, {} undecodable)",
                stats.entries,
                human_bytes(stats.bytes),
                stats.expiring,
                stats.bad_keys
            ),
        ),
        (
            "age",
            format!(
                "{} (since the store last confirmed the snapshot)",
                human_duration(stats.age)
            ),
        ),
        ("last check", ago(stats.last_check)),
        ("last change", ago(stats.last_change)),
        (
            "checks",
            format!(
                "{} ({} unchanged, {} full reloads, {} deltas, {} regressions)",
                stats.checks, stats.unchanged, stats.reloads, stats.deltas, stats.regressions
            ),
        ),
        (
            "syncs without a round trip",
            format!(
                "{} coalesced, {} skipped by push hints ({} hints received)",
                stats.coalesced, stats.hint_skips, stats.hints
            ),
        ),
        ("writes", stats.writes.to_string()),
        ("errors", stats.errors.to_string()),
        (
            "undecodable values skipped",
            stats.skipped_values.to_string(),
        ),
        ("store clock", clock),
    ];
    for (name, value) in lines {
        writeln!(out, "{name}: {value}").map_err(err)?;
    }
    Ok(())
}

/// `durable health`: the handle's health, with `ready` true only when the store answered, and
/// `error` saying why not. `Err` (exit 1) unless ready.
async fn health(cli: &Cli, output: Output, out: &mut impl Write) -> CliResult {
    let (health, error) = match open(cli, Access::Read, cli.options()).await {
        Ok((_, dict)) => {
            let synced = dict.sync_or_stale().await;
            let error = match &synced.freshness {
                durable::Freshness::Fresh => None,
                durable::Freshness::Stale { error, .. }
                | durable::Freshness::FromBackup { error } => Some(error.to_string()),
                _ => Some("not fresh".to_owned()),
            };
            drop(synced);
            (Some(dict.health()), error)
        }
        // No snapshot at all.
        Err(failure) => (None, Some(failure.message)),
    };
    if output.json {
        let mut report = match &health {
            Some(health) => serde_json::to_value(health).map_err(err)?,
            // The same fields, empty.
            None => json!({
                "fresh": false,
                "stale_since": null,
                "last_error": error,
                "bad_keys": [],
                "age": null,
                "version": null,
            }),
        };
        if let Value::Object(fields) = &mut report {
            fields.insert("ready".into(), json!(error.is_none()));
            fields.insert("error".into(), json!(error));
            fields.insert("namespace".into(), json!(cli.namespace));
            fields.insert("dictionary".into(), json!(cli.dictionary()));
        }
        let text = serde_json::to_string_pretty(&report).map_err(err)?;
        writeln!(out, "{text}").map_err(err)?;
    } else {
        writeln!(out, "ready: {}", error.is_none()).map_err(err)?;
        if let Some(error) = &error {
            writeln!(out, "error: {}", escaped(error)).map_err(err)?;
        }
        match &health {
            Some(health) => {
                let lines = [
                    (
                        "dictionary",
                        format!("{} ({})", cli.place(), health.dictionary),
                    ),
                    ("fresh", health.fresh.to_string()),
                    ("version", health.version.clone()),
                    (
                        "age",
                        format!(
                            "{} (since the store last confirmed the snapshot)",
                            human_duration(health.age)
                        ),
                    ),
                ];
                for (name, value) in lines {
                    writeln!(out, "{name}: {value}").map_err(err)?;
                }
                if health.stale_since.is_some() {
                    writeln!(out, "stale since: {}", ago(health.stale_since)).map_err(err)?;
                }
                if let Some(last) = health
                    .last_error
                    .as_ref()
                    .filter(|e| Some(*e) != error.as_ref())
                {
                    writeln!(out, "last error: {}", escaped(last)).map_err(err)?;
                }
                if !health.bad_keys.is_empty() {
                    writeln!(out, "undecodable keys: {}", health.bad_keys.len()).map_err(err)?;
                    for bad in &health.bad_keys {
                        writeln!(out, "  {}: {}", escaped(&bad.key), escaped(&bad.error))
                            .map_err(err)?;
                    }
                }
            }
            None => {
                writeln!(out, "dictionary: {}", cli.place()).map_err(err)?;
                writeln!(out, "age: no snapshot (the dictionary could not be opened)")
                    .map_err(err)?;
            }
        }
    }
    match error {
        None => Ok(()),
        Some(error) => Err(format!("{} is not ready: {error}", cli.place()).into()),
    }
}

/// The store's clock now, for the time an imported entry has left.
async fn store_now(cli: &Cli, store: &Store) -> CliResult<StoreTime> {
    let backend = store
        .backend(&cli.namespace, cli.dictionary())
        .map_err(err)?;
    match tokio::time::timeout(cli.timeout, backend.now()).await {
        Ok(now) => Ok(now.map_err(|e| op_error(cli, e))?),
        Err(_) => Err(format!(
            "reading the store's clock timed out (raise --timeout, now {} s)",
            cli.timeout.as_secs_f64()
        )
        .into()),
    }
}

/// `durable import`: every line checked first, then the plain entries (and with `replace` the
/// deletes) in one batch where the store has batches, then the expiring entries one by one.
async fn import(
    cli: &Cli,
    file: &Path,
    replace: bool,
    output: Output,
    out: &mut impl Write,
) -> CliResult {
    let name = if file.as_os_str() == "-" {
        "standard input".to_owned()
    } else {
        file.display().to_string()
    };
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let opened = std::fs::File::open(file).map_err(|e| format!("cannot read {name}: {e}"))?;
        Box::new(std::io::BufReader::new(opened))
    };
    let mut lines = Vec::new();
    let mut first_line = HashMap::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read {name}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = entry_from_json(&line, index + 1)?;
        if let Some(first) = first_line.insert(entry.key.clone(), index + 1) {
            return Err(format!(
                "line {}: key {:?} is already given on line {first}",
                index + 1,
                entry.key
            )
            .into());
        }
        lines.push(entry);
    }
    let (store, dict) = open(cli, Access::Write, cli.options()).await?;
    let op = |e| op_error(cli, e);

    let (timed, plain): (Vec<ExportLine>, Vec<ExportLine>) =
        lines.into_iter().partition(|l| l.expires_at.is_some());
    let (mut expiring, mut expired) = (Vec::new(), Vec::new());
    if !timed.is_empty() {
        if !dict.capabilities().expiry {
            return Err(format!(
                "{name} has entries with an expiry (\"expires_at_ms\"), which the {} backend \
                 cannot keep; nothing written",
                dict.backend_name()
            )
            .into());
        }
        let now = store_now(cli, &store).await?;
        for line in timed {
            match line.expires_at.map_or(0, |at| at.0.saturating_sub(now.0)) {
                0 => expired.push(line.key),
                left => expiring.push((line.key, line.bytes, Duration::from_millis(left))),
            }
        }
    }
    let removed: Vec<String> = if replace {
        let wanted: HashSet<&str> = plain
            .iter()
            .map(|l| l.key.as_str())
            .chain(expiring.iter().map(|(key, _, _)| key.as_str()))
            .collect();
        let mut removed: Vec<String> = dict
            .snapshot()
            .keys()
            .filter(|key| !wanted.contains(key))
            .map(str::to_owned)
            .collect();
        removed.sort();
        removed
    } else {
        Vec::new()
    };

    let written = plain.len();
    let batch = dict.capabilities().batch;
    if batch {
        let writes: Vec<(String, Option<Vec<u8>>)> = plain
            .into_iter()
            .map(|l| (l.key, Some(l.bytes)))
            .chain(removed.iter().map(|key| (key.clone(), None)))
            .collect();
        if !writes.is_empty() {
            dict.write_many(writes).await.map_err(op)?;
        }
    } else {
        for line in plain {
            dict.insert(&line.key, line.bytes).await.map_err(op)?;
        }
        for key in &removed {
            dict.remove(key).await.map_err(op)?;
        }
    }
    for (key, value, ttl) in &expiring {
        dict.insert_with_ttl(key, value.clone(), *ttl)
            .await
            .map_err(op)?;
    }

    if output.json {
        let report = json!({
            "file": name,
            "namespace": cli.namespace,
            "dictionary": cli.dictionary(),
            "written": written,
            "expiring": expiring.len(),
            "removed": removed,
            "expired": expired,
            "atomic": batch && expiring.is_empty(),
        });
        writeln!(out, "{report}").map_err(err)?;
        return Ok(());
    }
    let mut summary = format!(
        "imported {name} into {}: {} written",
        cli.place(),
        plural(written + expiring.len(), "entry", "entries")
    );
    if !expiring.is_empty() {
        summary.push_str(&format!(" ({} with an expiry)", expiring.len()));
    }
    if replace {
        summary.push_str(&format!(", {} removed", removed.len()));
        if !removed.is_empty() {
            summary.push_str(&format!(" ({})", some_keys(&removed)));
        }
    }
    if !expired.is_empty() {
        summary.push_str(&format!(
            ", {} skipped (already expired: {})",
            expired.len(),
            some_keys(&expired)
        ));
    }
    summary.push_str(match (batch, expiring.is_empty()) {
        (true, true) => "; in one atomic batch",
        (true, false) => {
            "; in one atomic batch, then the expiring entries one by one (a batch cannot carry \
             expiries)"
        }
        (false, _) => "; one by one (this store has no batches)",
    });
    writeln!(out, "{summary}").map_err(err)?;
    Ok(())
}

/// A stored value as one JSON value (`list --json`, `watch --json`): the JSON itself, a string
/// for text, `{"key": ..., "hex": ...}` for other bytes.
fn value_json(key: &str, bytes: &[u8]) -> Value {
    let mut entry = entry_json(key, bytes);
    ["value", "text"]
        .iter()
        .find_map(|f| entry.get_mut(*f).map(Value::take))
        .unwrap_or(entry)
}

/// `durable watch`: each change as a tab-separated line (or a JSON object), until Ctrl-C.
async fn watch(cli: &Cli, interval: f64, output: Output, out: &mut impl Write) -> CliResult {
    let interval = Duration::try_from_secs_f64(interval)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or("--interval must be a positive number of seconds")?;
    let options = cli.options().with_mode(Mode::background(interval));
    let (_, dict) = open(cli, Access::Read, options).await?;
    let changes = dict.changes();
    let mut changes = std::pin::pin!(changes);
    eprintln!(
        "watching {} at {} ({} entries); Ctrl-C to stop",
        cli.place(),
        dict.snapshot().version(),
        dict.snapshot().len()
    );
    loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            event = changes.next() => event,
        };
        match event {
            Some(ChangeEvent::Changed(change)) => {
                let kind = match change.kind {
                    ChangeKind::Inserted => "inserted",
                    ChangeKind::Updated => "updated",
                    ChangeKind::Removed => "removed",
                    _ => "changed",
                };
                if output.json {
                    let value = |v: Option<&durable::Shared<Vec<u8>>>| {
                        v.map_or(Value::Null, |v| value_json(&change.key, v))
                    };
                    let line = json!({
                        "kind": kind,
                        "key": &*change.key,
                        "old": value(change.old.as_ref()),
                        "new": value(change.new.as_ref()),
                        "version": change.version.to_string(),
                    });
                    writeln!(out, "{line}").map_err(err)?;
                } else {
                    let show = |v: Option<&durable::Shared<Vec<u8>>>| {
                        v.map_or("-".to_owned(), |v| shown(v))
                    };
                    writeln!(
                        out,
                        "{kind}\t{}\t{}\t{}\t{}",
                        escaped(&change.key),
                        show(change.old.as_ref()),
                        show(change.new.as_ref()),
                        change.version
                    )
                    .map_err(err)?;
                }
                out.flush().map_err(err)?;
            }
            Some(ChangeEvent::Resynced { missed, snapshot }) => {
                if output.json {
                    let line = json!({
                        "kind": "resynced",
                        "missed": missed,
                        "version": snapshot.version().to_string(),
                    });
                    writeln!(out, "{line}").map_err(err)?;
                } else {
                    writeln!(
                        out,
                        "resynced\t{missed} changes missed\t-\t-\t{}",
                        snapshot.version()
                    )
                    .map_err(err)?;
                }
                out.flush().map_err(err)?;
                eprintln!(
                    "durable: {missed} changes were missed (too fast to print); the dictionary \
                     is now at {} with {} entries",
                    snapshot.version(),
                    snapshot.len()
                );
            }
            Some(_) => {}
            None => return Ok(()),
        }
    }
}

/// `durable list`: a table, or one JSON object.
fn list(cli: &Cli, dict: &Bytes, output: Output, out: &mut impl Write) -> CliResult {
    let snapshot = dict.snapshot();
    let entries: BTreeMap<&str, &Vec<u8>> = snapshot.iter().collect();
    if output.json {
        let object: serde_json::Map<String, Value> = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), value_json(k, v)))
            .collect();
        writeln!(out, "{}", Value::Object(object)).map_err(err)?;
        return Ok(());
    }
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
        "({} in {}, version {})",
        plural(entries.len(), "entry", "entries"),
        cli.place(),
        snapshot.version()
    )
    .map_err(err)?;
    Ok(())
}

async fn run(cli: Cli) -> CliResult {
    let mut out = std::io::stdout().lock();
    let manual = || cli.options();
    let op = |e| op_error(&cli, e);
    match &cli.command {
        Command::Get {
            key,
            revision,
            raw,
            output,
        } => {
            let (_, dict) = open(&cli, Access::Read, manual()).await?;
            let snapshot = dict.snapshot();
            let entry = snapshot
                .get_versioned(key)
                .ok_or_else(|| Failure::no_such_key(&cli, key))?;
            if output.json {
                let mut line = entry_json(key, &entry.value);
                line["revision"] = json!(entry.revision.to_string());
                line["expires_at_ms"] = json!(snapshot.expires_at(key).map(|at| at.0));
                writeln!(out, "{line}").map_err(err)?;
                return Ok(());
            }
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
            output,
        } => {
            let bytes = value_bytes(value, *raw)?;
            let (_, dict) = open(&cli, Access::Write, manual()).await?;
            let version = match ttl {
                Some(ttl) => dict.insert_with_ttl(key, bytes, *ttl).await,
                None => dict.insert(key, bytes).await,
            }
            .map_err(op)?;
            let expires_at = dict.snapshot().expires_at(key);
            if output.json {
                let line = json!({
                    "key": key,
                    "version": version.to_string(),
                    "expires_at_ms": expires_at.map(|at| at.0),
                });
                writeln!(out, "{line}").map_err(err)?;
            } else {
                let expiry = ttl
                    .map(|ttl| format!(", expires in {}", human_duration(ttl)))
                    .unwrap_or_default();
                writeln!(out, "set {}{expiry} (version {version})", escaped(key)).map_err(err)?;
            }
        }
        Command::Sweep { output } => {
            let (_, dict) = open(&cli, Access::Write, manual()).await?;
            let removed = dict.sweep().await.map_err(op)?;
            if output.json {
                writeln!(out, "{}", json!({ "removed": removed })).map_err(err)?;
            } else {
                let entries = plural(removed, "expired entry", "expired entries");
                writeln!(out, "swept {entries} from {}", cli.place()).map_err(err)?;
            }
        }
        Command::Del { key, output } => {
            let (_, dict) = open(&cli, Access::Write, manual()).await?;
            let version = dict
                .remove(key)
                .await
                .map_err(op)?
                .ok_or_else(|| Failure::no_such_key(&cli, key))?;
            if output.json {
                let line = json!({ "key": key, "version": version.to_string() });
                writeln!(out, "{line}").map_err(err)?;
            } else {
                writeln!(out, "deleted {} (version {version})", escaped(key)).map_err(err)?;
            }
        }
        Command::List { output } => {
            let (_, dict) = open(&cli, Access::Read, manual()).await?;
            list(&cli, &dict, *output, &mut out)?;
        }
        Command::Incr { key, delta, output } => {
            let (_, dict) = open(&cli, Access::Write, manual()).await?;
            let (value, version) = dict.increment(key, *delta).await.map_err(op)?;
            if output.json {
                let line = json!({ "key": key, "value": value, "version": version.to_string() });
                writeln!(out, "{line}").map_err(err)?;
            } else {
                writeln!(
                    out,
                    "{} is now {value} (added {delta}; version {version})",
                    escaped(key)
                )
                .map_err(err)?;
            }
        }
        Command::Cas {
            key,
            expect,
            value,
            delete,
            raw,
            output,
        } => {
            let expected = parse_revision(expect)?;
            let new = match (value, delete) {
                (Some(value), false) => Some(value_bytes(value, *raw)?),
                (None, true) => None,
                _ => return Err("give a new value, or --delete".into()),
            };
            let deleting = new.is_none();
            let (_, dict) = open(&cli, Access::Write, manual()).await?;
            match dict
                .compare_and_swap(key, expected, new)
                .await
                .map_err(op)?
            {
                Cas::Swapped { version } => {
                    if output.json {
                        let line = json!({
                            "key": key,
                            "swapped": true,
                            "deleted": deleting,
                            "version": version.to_string(),
                        });
                        writeln!(out, "{line}").map_err(err)?;
                    } else {
                        let what = if deleting { ": deleted" } else { "" };
                        writeln!(out, "swapped {}{what} (version {version})", escaped(key))
                            .map_err(err)?;
                    }
                }
                Cas::Conflict { current } => {
                    if output.json {
                        let current = current.as_ref().map(|c| {
                            let mut entry = entry_json(key, &c.value);
                            entry["revision"] = json!(c.revision.to_string());
                            entry
                        });
                        let line = json!({ "key": key, "swapped": false, "current": current });
                        writeln!(out, "{line}").map_err(err)?;
                    }
                    let now = current.map_or("absent".to_owned(), |c| {
                        format!("{} {}", c.revision, shown(&c.value))
                    });
                    return Err(Failure {
                        message: format!("conflict: {key:?} is now {now}"),
                        code: EXIT_CONFLICT,
                    });
                }
            }
        }
        Command::Watch { interval, output } => watch(&cli, *interval, *output, &mut out).await?,
        Command::Stats { output } => {
            let (_, dict) = open(&cli, Access::Read, manual()).await?;
            dict.sync().await.map_err(op)?;
            let stats = dict.stats();
            if output.json {
                let text = serde_json::to_string_pretty(&stats).map_err(err)?;
                writeln!(out, "{text}").map_err(err)?;
            } else {
                print_stats(&cli, &stats, &mut out)?;
            }
        }
        Command::Health { output } => health(&cli, *output, &mut out).await?,
        Command::Export { file } => {
            let (_, dict) = open(&cli, Access::Read, manual()).await?;
            let snapshot = dict.snapshot();
            let entries: BTreeMap<&str, &Vec<u8>> = snapshot.iter().collect();
            let mut text = String::new();
            for (key, value) in &entries {
                let mut line = entry_json(key, value);
                if let Some(at) = snapshot.expires_at(key) {
                    line["expires_at_ms"] = json!(at.0);
                }
                text.push_str(&line.to_string());
                text.push('\n');
            }
            if file.as_os_str() == "-" {
                out.write_all(text.as_bytes()).map_err(err)?;
            } else {
                std::fs::write(file, text)
                    .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
                eprintln!(
                    "exported {} from {} to {}",
                    plural(entries.len(), "entry", "entries"),
                    cli.place(),
                    file.display()
                );
            }
        }
        Command::Import {
            file,
            replace,
            output,
        } => import(&cli, file, *replace, *output, &mut out).await?,
        Command::Flags { command } => flags(&cli, command, &mut out).await?,
        Command::Dicts { output } => {
            let store = connect_store(&cli, Access::Read).await?;
            let names = store.dictionaries(&cli.namespace).await.map_err(err)?;
            if output.json {
                writeln!(out, "{}", json!(names)).map_err(err)?;
            } else if names.is_empty() {
                eprintln!("no dictionaries in namespace {:?}", cli.namespace);
            } else {
                for name in names {
                    writeln!(out, "{name}").map_err(err)?;
                }
            }
        }
        Command::Migrate => {
            // `migrate` creates the tables itself, and says so.
            let store = connect_store(&cli, Access::Read).await?;
            if store.migrate().await.map_err(err)? {
                writeln!(out, "the store's tables are ready").map_err(err)?;
            } else {
                writeln!(out, "nothing to create: this store needs no schema").map_err(err)?;
            }
        }
        Command::Bench(args) => {
            let store = connect_store(&cli, Access::Write).await?;
            bench::run(&store, &cli.url, &cli.namespace, cli.options(), args).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_have_units() {
        for (seconds, shown) in [
            (5.239e-6, "5.2 µs"),
            (850e-9, "850 ns"),
            (0.0123, "12.3 ms"),
            (1.5, "1.5 s"),
            (90.0, "1.5 min"),
            (5400.0, "1.5 h"),
            (3.0 * 86_400.0, "3.0 days"),
        ] {
            assert_eq!(human_duration(Duration::from_secs_f64(seconds)), shown);
        }
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
