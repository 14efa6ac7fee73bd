//! `durable bench`: the standard scenarios against one store, as a table and a JSON file.
//!
//! Every figure compares two things measured side by side in the same run, because the absolute
//! numbers of a shared machine are noise; read the ratios.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use durable::{
    Backend, Capabilities, Dict, Forward, Hooks, Json, MemoryStore, Mode, Operation, Options, Raw,
    Result as DResult, Store,
};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use serde_json::{Value, json};

/// Options of `durable bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Small sizes and few samples: seconds instead of minutes (what the tests run).
    #[arg(long)]
    quick: bool,
    /// The largest dictionary size: sizes 1k, 10k, 100k, 1M and 10M up to this (default 1000000,
    /// or 10000 with --quick).
    #[arg(long)]
    max_size: Option<usize>,
    /// Write the results as JSON to this file.
    #[arg(long, default_value = "durable-bench.json")]
    json: PathBuf,
    /// Also write an SVG plot of sync time against dictionary size (delta vs full reload).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Run only these scenarios (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Concurrent writers in the `counters` scenario (at least 1).
    #[arg(long, default_value_t = 64, value_parser = at_least_one::<usize>)]
    writers: usize,
    /// Shards of the sharded counter in the `counters` scenario (at least 1).
    #[arg(long, default_value_t = 16, value_parser = at_least_one::<u32>)]
    shards: u32,
}

/// A count of at least 1, or a one-line reason.
fn at_least_one<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
{
    match text.trim().parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(_) => Err("expected a whole number of at least 1".into()),
    }
}

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// Snapshot reads vs a store round trip, and vs a foldhash `HashMap` at 1k, 100k and 1M
    /// keys on one and two threads (the engine alone, on a memory store).
    Reads,
    /// No-change sync with and without push hints.
    QuietSync,
    /// Sync time against dictionary size, delta vs full reload; the initial load against the
    /// driver's own fetch; the clear that ends each size.
    Sizes,
    /// Writes per second, sequential vs batched.
    Writes,
    /// Delay from a write to another handle, polling vs push.
    Propagation,
    /// Concurrent syncs sharing round trips.
    Coalescing,
    /// Increments per second on one hot counter from many writers, plain vs sharded.
    Counters,
    /// Resident memory of a loaded handle per entry beyond its key and value bytes, and the
    /// load's peak against its final size.
    Memory,
}

/// A backend wrapper that counts round trips and can hide capabilities, so one store can be
/// measured with and without delta sync or push hints. [`Forward`] forwards every operation, so
/// each store operation is counted and none falls back to `NotSupported`.
type Probe = Forward<Box<dyn Backend>, Count>;

/// The [`Hooks`] of a [`Probe`]: hide what was asked, count every operation let through.
#[derive(Debug)]
struct Count {
    hidden: Capabilities,
    calls: Arc<AtomicU64>,
}

impl Hooks for Count {
    fn hidden(&self) -> Capabilities {
        self.hidden
    }

    fn before(&self, _backend: &str, _operation: Operation) -> DResult<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A [`Probe`] over `inner`, without delta sync unless `delta`, without push unless `push`.
fn probe(inner: Box<dyn Backend>, delta: bool, push: bool) -> (Probe, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let hidden = Capabilities::none().with_delta(!delta).with_push(!push);
    let hooks = Count {
        hidden,
        calls: calls.clone(),
    };
    (Forward::new(inner, hooks), calls)
}

/// One measured figure.
struct Row {
    scenario: String,
    value: f64,
    unit: &'static str,
    /// The comparison, e.g. "37x faster than a store round trip".
    note: String,
}

struct Bench<'a> {
    store: &'a Store,
    /// The store's URL, for the Redis driver's own baseline.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    url: &'a str,
    namespace: &'a str,
    run: String,
    rows: Vec<Row>,
    json: Vec<Value>,
    quick: bool,
    /// The options every handle starts from: the command's time limits (`--timeout`,
    /// `--load-timeout`), so that a 10M-key dictionary opens as the user allowed.
    options: Options,
}

/// Acknowledged and abandoned increments of one [`hammer`] run.
#[derive(Default)]
struct Tally {
    acknowledged: u64,
    /// Increments the store refused after too many conflicting attempts ([`durable::Error::Contention`]).
    gave_up: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.acknowledged += other.acknowledged;
        self.gave_up += other.gave_up;
    }

    /// A note on abandoned increments, if there were any.
    fn note(&self) -> String {
        match self.gave_up {
            0 => String::new(),
            n => format!("; {n} gave up on contention"),
        }
    }
}

/// Runs one task per handle, each calling `increment` with its writer number for `duration`;
/// returns the acknowledged increments per second and the tally. Contention errors are counted,
/// any other error ends the run.
async fn hammer<H, F, Fut>(
    handles: &[H],
    duration: Duration,
    increment: F,
) -> Result<(f64, Tally), String>
where
    H: Clone + Send + 'static,
    F: Fn(H, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = DResult<()>> + Send,
{
    let start = Instant::now();
    let tasks: Vec<tokio::task::JoinHandle<DResult<Tally>>> = handles
        .iter()
        .enumerate()
        .map(|(writer, dict)| {
            let (dict, increment) = (dict.clone(), increment.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while start.elapsed() < duration {
                    match increment(dict.clone(), writer as u64).await {
                        Ok(()) => tally.acknowledged += 1,
                        Err(durable::Error::Contention { .. }) => tally.gave_up += 1,
                        Err(error) => return Err(error),
                    }
                }
                Ok(tally)
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        total.add(&task.await.map_err(err)?.map_err(err)?);
    }
    let rate = total.acknowledged as f64 / start.elapsed().as_secs_f64();
    Ok((rate, total))
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median<T: PartialOrd + Copy + Default>(samples: Vec<T>) -> T {
    percentile(samples, 0.5)
}

fn percentile<T: PartialOrd + Copy + Default>(mut samples: Vec<T>, p: f64) -> T {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(index).copied().unwrap_or_default()
}

/// Resident and peak memory of this process in bytes (Linux), if known.
fn memory() -> (Option<u64>, Option<u64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The most heap in use while it runs, sampled every millisecond on a thread of its own: the
/// allocator counts only the current size, and a load's lists live for hundreds of milliseconds.
/// Unlike the resident peak, it does not count what the allocator keeps after a free.
struct HeapPeak {
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<usize>,
}

impl HeapPeak {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = crate::ALLOCATOR.allocated();
            loop {
                std::thread::sleep(Duration::from_millis(1));
                peak = peak.max(crate::ALLOCATOR.allocated());
                // One sample after the stop, so the peak covers the end.
                if stopped.load(Ordering::SeqCst) {
                    return peak;
                }
            }
        });
        HeapPeak { stop, sampler }
    }

    /// The peak, in bytes.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.sampler.join().unwrap_or_default()
    }
}

/// Fetches the live rows of one dictionary with sqlx alone (`mark`: `?` or `$` placeholders);
/// returns how many.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
async fn sql_fetch<DB, K>(
    pool: &durable::sql::sqlx::Pool<DB>,
    table: &str,
    mark: &str,
    namespace: &str,
    dictionary: &str,
) -> Result<usize, String>
where
    DB: durable::sql::sqlx::Database,
    for<'c> &'c durable::sql::sqlx::Pool<DB>: durable::sql::sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments: durable::sql::sqlx::IntoArguments<DB>,
    for<'q> &'q str: durable::sql::sqlx::Encode<'q, DB> + durable::sql::sqlx::Type<DB>,
    K: Send + Unpin,
    for<'r> (K, Vec<u8>, i64, Option<i64>): durable::sql::sqlx::FromRow<'r, DB::Row>,
{
    let (first, second) = if mark == "$" {
        ("$1", "$2")
    } else {
        ("?", "?")
    };
    let sql = format!(
        "SELECT entry_key, value, revision, expires_at FROM {table} WHERE namespace = {first} \
         AND dictionary = {second} AND tombstone = FALSE"
    );
    let rows: Vec<(K, Vec<u8>, i64, Option<i64>)> =
        durable::sql::sqlx::query_as(durable::sql::sqlx::AssertSqlSafe(sql))
            .bind(namespace)
            .bind(dictionary)
            .fetch_all(pool)
            .await
            .map_err(err)?;
    Ok(rows.len())
}

/// Writes `changes` with `writer` (one batch where the store takes batches), then times a sync of
/// `handle`.
async fn write_then_sync(
    writer: &Dict<u64>,
    handle: &Dict<u64>,
    changes: impl Iterator<Item = (String, u64)>,
) -> Result<Duration, String> {
    if writer.capabilities().batch {
        writer.insert_many(changes).await.map_err(err)?;
    } else {
        for (key, value) in changes {
            writer.insert(&key, value).await.map_err(err)?;
        }
    }
    let start = Instant::now();
    handle.sync().await.map_err(err)?;
    Ok(start.elapsed())
}

/// Waits (up to 10 s) until the heap holds still for 200 ms (background work of dropped handles
/// has ended), then has the allocator return the memory freed so far to the system at once.
///
/// mimalloc returns freed memory lazily, inside later allocations, so after the bench frees
/// gigabytes (a filling handle dropped, full reloads of 10M entries) the next operations paid
/// for it: one-change syncs at 10M keys took up to 280 µs (a median of 95 µs), falling to
/// about 5 µs only after some thousand rounds. A thread's exit makes mimalloc return at once
/// what sits in its arenas (segments freed whole) once the purge delay (10 ms) has passed, so a
/// short-lived thread does it here, safely (`mi_collect` would need `unsafe`). Pages freed
/// inside segments a thread still uses are returned by that thread, later, which this does not
/// reach.
async fn settle() {
    let mut last = crate::ALLOCATOR.allocated();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = crate::ALLOCATOR.allocated();
        if now == last {
            break;
        }
        last = now;
    }
    // The thread allocates, so that mimalloc gives it a heap to collect when it exits.
    let exited = std::thread::spawn(|| drop(std::hint::black_box(Box::new(0u64)))).join();
    debug_assert!(exited.is_ok());
}

/// Runs `batch` lookups of `probes` (from an offset that moves with `round`) on each of
/// `threads` threads, started together, each with its own `setup()` (a held guard); returns
/// the slowest thread's time for its lookups.
fn lookups<S>(
    threads: usize,
    batch: usize,
    round: usize,
    probes: &[String],
    setup: impl Fn() -> S + Sync,
    get: impl Fn(&S, &str) -> u64 + Sync,
) -> Duration {
    let start = std::sync::Barrier::new(threads);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..threads)
            .map(|t| {
                let (setup, get, start) = (&setup, &get, &start);
                scope.spawn(move || {
                    let state = setup();
                    let offset = round * 7_919 + t * 997;
                    start.wait();
                    let began = Instant::now();
                    let mut sum = 0u64;
                    for i in 0..batch {
                        sum = sum.wrapping_add(get(&state, &probes[(offset + i) % probes.len()]));
                    }
                    std::hint::black_box(sum);
                    began.elapsed()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .max()
            .unwrap_or_default()
    })
}

fn ratio(slow: f64, fast: f64) -> String {
    if fast > 0.0 {
        format!("{:.1}x", slow / fast)
    } else {
        "n/a".into()
    }
}

impl Bench<'_> {
    fn record(
        &mut self,
        scenario: String,
        value: f64,
        unit: &'static str,
        note: String,
        data: Value,
    ) {
        let mut entry = json!({ "scenario": scenario, "value": value, "unit": unit, "note": note });
        if let (Value::Object(entry), Value::Object(data)) = (&mut entry, data) {
            entry.extend(data);
        }
        self.json.push(entry);
        self.rows.push(Row {
            scenario,
            value,
            unit,
            note,
        });
    }

    fn name(&self, what: &str) -> String {
        format!("bench-{}-{what}", self.run)
    }

    async fn probe(
        &self,
        dictionary: &str,
        delta: bool,
        push: bool,
    ) -> Result<(Probe, Arc<AtomicU64>), String> {
        let inner = self
            .store
            .backend(self.namespace, dictionary)
            .map_err(err)?;
        Ok(probe(inner, delta, push))
    }

    async fn open(
        &self,
        dictionary: &str,
        delta: bool,
        push: bool,
        options: Options,
    ) -> Result<(Dict<u64>, Arc<AtomicU64>), String> {
        let (probe, calls) = self.probe(dictionary, delta, push).await?;
        let dict = Dict::open(probe, Json, options).await.map_err(err)?;
        Ok((dict, calls))
    }

    /// A handle that checks the version on every sync (no trust in push hints), with or without
    /// delta sync.
    async fn polling(
        &self,
        dictionary: &str,
        delta: bool,
    ) -> Result<(Dict<u64>, Arc<AtomicU64>), String> {
        let options = self.options.clone().with_trust_hints_for(None);
        self.open(dictionary, delta, false, options).await
    }

    /// Fills `dictionary` with `n` keys (`key0`, `key1`, ...) holding `i` as JSON, in batches
    /// where the store has them.
    async fn populate(&self, dictionary: &str, n: usize) -> Result<(), String> {
        self.populate_with(dictionary, n, |i| i.to_string().into_bytes())
            .await
            .map(drop)
    }

    /// Fills `dictionary` with `n` keys (`key0`, `key1`, ...) holding `value(i)`, in batches
    /// where the store has them; returns the handle that wrote them.
    async fn populate_with(
        &self,
        dictionary: &str,
        n: usize,
        value: impl Fn(usize) -> Vec<u8>,
    ) -> Result<Dict<Vec<u8>, Raw>, String> {
        let writer: Dict<Vec<u8>, Raw> = self
            .store
            .open(self.namespace, dictionary, Raw, self.options.clone())
            .await
            .map_err(err)?;
        let bar = ProgressBar::new(n as u64).with_message(format!("filling {n} keys"));
        bar.set_style(
            ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} {eta}").map_err(err)?,
        );
        let chunk = if writer.capabilities().batch { 2000 } else { 1 };
        let mut next = 0;
        while next < n {
            let end = (next + chunk).min(n);
            if chunk == 1 {
                writer
                    .insert(&format!("key{next}"), value(next))
                    .await
                    .map_err(err)?;
            } else {
                writer
                    .insert_many((next..end).map(|i| (format!("key{i}"), value(i))))
                    .await
                    .map_err(err)?;
            }
            bar.set_position(end as u64);
            next = end;
        }
        bar.finish_and_clear();
        Ok(writer)
    }

    /// Memory of one loaded handle per entry beyond its key and value bytes (9-byte and 100-byte
    /// raw values, a small JSON struct decoded): the heap bytes the handle holds (what dropping it
    /// frees), counted by the global allocator, with the heap and resident memory the open grew
    /// beside it, and the load's peak against its
    /// final size. Resident memory also counts what the allocator keeps after the load freed it
    /// (the store's rows, the decoded list), so it varies by tens of bytes per entry from run to
    /// run; the heap count does not. When the open grew resident memory by less than half the
    /// heap it grew, it reused memory kept resident after earlier frees (the filling writer's,
    /// dropped before), and the resident figures are reported as not measured.
    async fn memory(&mut self, size: usize) -> Result<(), String> {
        /// The JSON struct kind's values, decoded.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Flag {
            enabled: bool,
            rollout: u32,
            variant: String,
        }
        /// A kind of value: its label and the value of key `i`.
        type Kind = (&'static str, fn(usize) -> Vec<u8>);
        let kinds: [Kind; 3] = [
            ("9-byte values", |i| format!("{i:09}").into_bytes()),
            ("100-byte values", |i| format!("{i:0100}").into_bytes()),
            ("JSON struct values", |i| {
                format!(
                    r#"{{"enabled":{},"rollout":{},"variant":"v{}"}}"#,
                    i % 2 == 0,
                    i % 100,
                    i % 7
                )
                .into_bytes()
            }),
        ];
        for (n, (label, value)) in kinds.into_iter().enumerate() {
            let name = self.name(&format!("memory{n}"));
            // The writer's last merge of its snapshot's overlay (on a blocking thread) would
            // run during the measured open: drop it and wait for the heap to settle.
            drop(self.populate_with(&name, size, value).await?);
            settle().await;
            let payload: usize = (0..size)
                .map(|i| format!("key{i}").len() + value(i).len())
                .sum();
            // Resets the peak (VmHWM) to the current resident size (Linux).
            let peak_known = std::fs::write("/proc/self/clear_refs", "5").is_ok();
            let (before, _) = memory();
            let heap_before = crate::ALLOCATOR.allocated();
            let heap_peak = HeapPeak::start();
            let options = self.options.clone();
            let handle: Box<dyn std::any::Any> = if n == 2 {
                Box::new(
                    (self.store)
                        .open::<Flag, _>(self.namespace, &name, Json, options)
                        .await
                        .map_err(err)?,
                )
            } else {
                Box::new(
                    (self.store)
                        .open::<Vec<u8>, _>(self.namespace, &name, Raw, options)
                        .await
                        .map_err(err)?,
                )
            };
            let heap_peak = heap_peak.stop().saturating_sub(heap_before) as f64;
            let grown_heap = crate::ALLOCATOR.allocated().saturating_sub(heap_before) as f64;
            let heap_peak_ratio = heap_peak / grown_heap;
            let (after, peak) = memory();
            // What the handle holds is what dropping it frees: the open also leaves the store's
            // side (the memory store's own indexes, a driver's buffers) grown, which is not the
            // handle's to give back.
            let held = crate::ALLOCATOR.allocated();
            drop(handle);
            let heap = held.saturating_sub(crate::ALLOCATOR.allocated()) as f64;
            let (Some(before), Some(after), Some(peak)) = (before, after, peak) else {
                return Err("resident memory is only known on Linux".into());
            };
            let grown = after.saturating_sub(before) as f64;
            let per_entry = heap / size as f64;
            let resident = (grown >= grown_heap / 2.0).then_some(grown / size as f64);
            let payload = payload as f64 / size as f64;
            let peak_ratio = resident
                .filter(|_| peak_known)
                .map(|_| peak.saturating_sub(before) as f64 / grown);
            let resident_text = match resident {
                Some(resident) => format!("resident memory {resident:.0} B per entry"),
                None => "resident memory not measured: the open reused memory already \
                         resident"
                    .into(),
            };
            self.record(
                format!("memory per entry, {size} keys, {label}"),
                per_entry - payload,
                "B",
                format!(
                    "beyond {payload:.0} key+value bytes ({per_entry:.0} B of heap held by the \
                     handle per entry; the open grew the heap {:.0} B per entry, \
                     {resident_text}); load peak {heap_peak_ratio:.2}x the heap the open \
                     grew, resident peak {}",
                    grown_heap / size as f64,
                    peak_ratio.map_or("unknown".into(), |r| format!("{r:.2}x the final size"))
                ),
                json!({"size": size, "overhead_bytes": per_entry - payload,
                       "heap_bytes": per_entry, "heap_grown_bytes": grown_heap / size as f64,
                       "resident_bytes": resident, "payload_bytes": payload,
                       "heap_peak_ratio": heap_peak_ratio, "peak_ratio": peak_ratio}),
            );
            self.clear(&name).await;
        }
        Ok(())
    }

    async fn clear(&self, dictionary: &str) {
        if let Ok(dict) = self
            .store
            .open::<u64, _>(self.namespace, dictionary, Json, self.options.clone())
            .await
            && dict.capabilities().clear
        {
            let _ = dict.clear().await;
        }
    }

    /// Snapshot reads vs a store round trip per read.
    async fn reads(&mut self) -> Result<(), String> {
        let name = self.name("reads");
        self.populate(&name, 1000).await?;
        let (dict, _) = self.open(&name, true, false, self.options.clone()).await?;
        let keys: Vec<String> = (0..1000).map(|i| format!("key{i}")).collect();
        let n = if self.quick { 200_000 } else { 2_000_000 };
        let start = Instant::now();
        let mut sum = 0u64;
        for i in 0..n {
            sum = sum.wrapping_add(*dict.snapshot().get(&keys[i % keys.len()]).unwrap_or(&0));
        }
        std::hint::black_box(sum);
        let local = start.elapsed() / n as u32;
        let (probe, _) = self.probe(&name, true, false).await?;
        let trips = if self.quick { 50 } else { 500 };
        let start = Instant::now();
        for _ in 0..trips {
            probe.last_updated().await.map_err(err)?;
        }
        let remote = start.elapsed() / trips;
        let note = format!(
            "{} faster than one store round trip ({:.1} us)",
            ratio(micros(remote), micros(local)),
            micros(remote)
        );
        self.record(
            "read: snapshot guard get (1k keys)".into(),
            micros(local) * 1000.0,
            "ns",
            note,
            json!({"store_round_trip_us": micros(remote)}),
        );
        self.clear(&name).await;
        Ok(())
    }

    /// Snapshot reads against a foldhash `HashMap<String, u64>` of the same keys, at 1k, 100k
    /// and 1M keys (up to `--max-size`), on one thread and on two at once, each thread holding
    /// its guard. A read never reaches the store, so the dictionary is a memory store's, opened
    /// after the fill (one full load). Rounds of lookups of 4,096 random keys alternate between
    /// the two maps, so both meet the same moments of a noisy machine; the figure is the median
    /// of the rounds' ratios.
    async fn read_path(&mut self, sizes: &[usize]) -> Result<(), String> {
        let rounds = if self.quick { 20 } else { 200 };
        let batch = if self.quick { 10_000 } else { 100_000 };
        for &size in sizes
            .iter()
            .filter(|n| [1_000, 100_000, 1_000_000].contains(n))
        {
            let store = MemoryStore::new();
            let open = || async {
                let backend = store.backend("bench", "read-path").map_err(err)?;
                Dict::<u64>::open(backend, Json, self.options.clone())
                    .await
                    .map_err(err)
            };
            let keys: Vec<String> = (0..size).map(|i| format!("key{i}")).collect();
            let writer = open().await?;
            for (chunk, first) in keys.chunks(50_000).zip((0u64..).step_by(50_000)) {
                let entries = chunk.iter().cloned().zip(first..);
                writer.insert_many(entries).await.map_err(err)?;
            }
            drop(writer);
            let loaded = open().await?;
            let held = loaded.snapshot().len();
            if held != size {
                return Err(format!(
                    "the read-path dictionary holds {held} of {size} keys"
                ));
            }
            let map: HashMap<String, u64, foldhash::fast::RandomState> =
                keys.iter().zip(0..).map(|(k, v)| (k.clone(), v)).collect();
            let mut probes = keys;
            probes.shuffle(&mut rand::rng());
            probes.truncate(4096);
            settle().await;
            for threads in [1, 2] {
                let mut ratios = Vec::with_capacity(rounds);
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                for round in 0..rounds {
                    let snapshot = || {
                        lookups(
                            threads,
                            batch,
                            round,
                            &probes,
                            || loaded.snapshot(),
                            |s, k| s.get(k).copied().unwrap_or(0),
                        )
                    };
                    let hashmap = || {
                        lookups(
                            threads,
                            batch,
                            round,
                            &probes,
                            || (),
                            |_, k| map.get(k).copied().unwrap_or(0),
                        )
                    };
                    let (s, h) = if round % 2 == 0 {
                        let s = snapshot();
                        (s, hashmap())
                    } else {
                        let h = hashmap();
                        (snapshot(), h)
                    };
                    ratios.push(s.as_secs_f64() / h.as_secs_f64());
                    ours.push(s);
                    theirs.push(h);
                }
                let ratio = median(ratios.clone());
                let (low, high) = (percentile(ratios.clone(), 0.1), percentile(ratios, 0.9));
                // Nanoseconds per lookup.
                let per_lookup = |times| micros(median(times)) * 1000.0 / batch as f64;
                let (ours, theirs) = (per_lookup(ours), per_lookup(theirs));
                let plural = if threads == 1 { "" } else { "s" };
                let scenario = format!(
                    "read: snapshot guard held vs HashMap ({size} keys, {threads} thread{plural})"
                );
                let note = format!(
                    "{ratio:.2}x a foldhash HashMap ({theirs:.1} ns); rounds {low:.2}-{high:.2}x"
                );
                let data = json!({
                    "hashmap_ns": theirs,
                    "ratio": ratio,
                    "ratio_p10": low,
                    "ratio_p90": high,
                    "rounds": rounds,
                });
                self.record(scenario, ours, "ns", note, data);
            }
        }
        Ok(())
    }

    /// No-change sync with and without push hints.
    async fn quiet_sync(&mut self) -> Result<(), String> {
        let name = self.name("quiet");
        self.populate(&name, 100).await?;
        let (polling, _) = self.polling(&name, true).await?;
        let n = if self.quick { 50 } else { 500 };
        let start = Instant::now();
        for _ in 0..n {
            polling.sync().await.map_err(err)?;
        }
        let without = start.elapsed() / n;
        self.record(
            "no-change sync(), version check".into(),
            micros(without),
            "us",
            "one round trip".into(),
            json!({}),
        );
        let trusting = self
            .options
            .clone()
            .with_trust_hints_for(Some(Duration::from_secs(1)));
        let (hinted, _) = self.open(&name, true, true, trusting).await?;
        if hinted.capabilities().push {
            hinted.sync().await.map_err(err)?;
            let n = 100_000u32;
            let start = Instant::now();
            for _ in 0..n {
                hinted.sync().await.map_err(err)?;
            }
            let with = start.elapsed() / n;
            let note = format!(
                "{} faster than the version check",
                ratio(micros(without), micros(with))
            );
            self.record(
                "no-change sync(), live push hints".into(),
                micros(with) * 1000.0,
                "ns",
                note,
                json!({}),
            );
        } else {
            self.record(
                "no-change sync(), live push hints".into(),
                f64::NAN,
                "ns",
                "n/a: no push hints in this store".into(),
                json!({}),
            );
        }
        self.clear(&name).await;
        Ok(())
    }

    /// How long the store's own driver takes to fetch the fields a full load reads (key, value,
    /// revision, expiry) of `dictionary`'s `size` entries into memory in this process, right
    /// after a handle loaded them; `None` for the memory store and a Redis Cluster.
    async fn driver_fetch(
        &self,
        dictionary: &str,
        size: usize,
    ) -> Result<Option<Duration>, String> {
        let start = Instant::now();
        let fetched = match self.store {
            #[cfg(feature = "sqlite")]
            Store::Sqlite(store) => {
                let table = store.entries_table();
                sql_fetch::<_, String>(store.pool(), table, "?", self.namespace, dictionary).await?
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(store) => {
                let table = store.entries_table();
                sql_fetch::<_, String>(store.pool(), table, "$", self.namespace, dictionary).await?
            }
            #[cfg(feature = "mysql")]
            Store::MySql(store) => {
                // Keys are VARBINARY there.
                let table = store.entries_table();
                sql_fetch::<_, Vec<u8>>(store.pool(), table, "?", self.namespace, dictionary)
                    .await?
            }
            #[cfg(feature = "redis")]
            Store::Redis(store) => {
                // One server: HSCAN pages of the values and ZRANGE pages of the revisions, of the
                // load's size, on one connection (a cluster keeps a dictionary on one node too,
                // but the driver would need that node's own address).
                if store.is_cluster() {
                    return Ok(None);
                }
                use durable::redis::redis;
                let backend = store.backend(self.namespace, dictionary).map_err(err)?;
                // The driver's own errors may quote the URL: scrub its credentials.
                let secrets = durable::credentials::Secrets::from_url(self.url);
                let scrubbed = |e: redis::RedisError| secrets.scrub(&e.to_string());
                let client = redis::Client::open(self.url).map_err(scrubbed)?;
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(scrubbed)?;
                let chunk = store.options().load_chunk();
                let (mut cursor, mut fetched) = (0u64, 0);
                loop {
                    /// One HSCAN reply: the next cursor and a page of fields and values.
                    type Page = (u64, Vec<(Vec<u8>, Vec<u8>)>);
                    let (next, page): Page = redis::cmd("HSCAN")
                        .arg(backend.entries_key())
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(chunk)
                        .query_async(&mut conn)
                        .await
                        .map_err(scrubbed)?;
                    fetched += page.len();
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
                // The revisions, which live in the change log (keys scored by revision): ZRANGE
                // pages by rank, four to a pipeline, as the load reads them.
                for first in (0..).step_by(4 * chunk) {
                    let mut pipe = redis::pipe();
                    for page in 0..4 {
                        let start = first + page * chunk;
                        pipe.cmd("ZRANGE")
                            .arg(backend.log_key())
                            .arg(start)
                            .arg(start + chunk - 1)
                            .arg("WITHSCORES");
                    }
                    let pages: Vec<Vec<(Vec<u8>, f64)>> =
                        pipe.query_async(&mut conn).await.map_err(scrubbed)?;
                    if pages.iter().any(|page| page.len() < chunk) {
                        break;
                    }
                }
                fetched
            }
            #[cfg(feature = "zookeeper")]
            Store::ZooKeeper(store) => {
                // Every entry znode's data, requests pipelined in windows of 8192 as the load
                // does (the entries are the children of `<dictionary>/entries`).
                let backend = store.backend(self.namespace, dictionary).map_err(err)?;
                let client = store.zookeeper_client().await.map_err(err)?;
                let entries = format!("{}/entries", backend.path());
                let names = client.list_children(&entries).await.map_err(err)?;
                let mut fetched = 0;
                for window in names.chunks(8192) {
                    let paths: Vec<String> = window
                        .iter()
                        .map(|name| format!("{entries}/{name}"))
                        .collect();
                    let reads = paths.iter().map(|path| client.get_data(path));
                    for read in futures_util::future::join_all(reads).await {
                        read.map_err(err)?;
                        fetched += 1;
                    }
                }
                fetched
            }
            _ => return Ok(None),
        };
        if fetched != size {
            return Err(format!(
                "the driver fetched {fetched} rows of {dictionary}, not {size}"
            ));
        }
        Ok(Some(start.elapsed()))
    }

    /// Initial load, then sync after k changed keys, delta vs full reload, per size. Returns
    /// (size, delta, full) for the plot.
    async fn sizes(&mut self, sizes: &[usize]) -> Result<Vec<(usize, f64, f64)>, String> {
        let mut plot = Vec::new();
        for &size in sizes {
            let name = self.name(&format!("n{size}"));
            self.populate(&name, size).await?;
            settle().await;
            let start = Instant::now();
            let (delta, _) = self.polling(&name, true).await?;
            let load = start.elapsed();
            let baseline = self.driver_fetch(&name, size).await?;
            let note = match baseline {
                Some(fetch) => format!(
                    "{} the driver's own fetch of the same rows ({:.1} ms)",
                    ratio(load.as_secs_f64(), fetch.as_secs_f64()),
                    fetch.as_secs_f64() * 1000.0
                ),
                None => "no driver to compare with (the engine alone)".into(),
            };
            self.record(
                format!("initial load, {size} keys"),
                load.as_secs_f64() * 1000.0,
                "ms",
                note,
                json!({"size": size, "driver_ms": baseline.map(|b| b.as_secs_f64() * 1000.0)}),
            );
            let (full, _) = self.polling(&name, false).await?;
            let writer: Dict<u64> = self
                .store
                .open(self.namespace, &name, Json, self.options.clone())
                .await
                .map_err(err)?;
            let repeats = if self.quick { 3 } else { 5 };
            // Every delta sync first, then every full reload. A full reload frees the snapshot
            // before it, and the allocator returns that memory lazily, inside later allocations:
            // at 10M keys, 100-change delta syncs right after full loads took 4.6, 2.0, 1.5, 1.0
            // and 0.8 ms, against about 0.3 ms a dozen rounds later (a cost of the reloads).
            const CHANGED: [usize; 2] = [1, 100];
            let mut times = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
            for (handle, times) in [&delta, &full].into_iter().zip(&mut times) {
                settle().await;
                for (k, times) in CHANGED.into_iter().zip(times) {
                    for round in 0..repeats {
                        let changes = (0..k)
                            .map(|i| (format!("key{}", (i * 7919 + round) % size), round as u64));
                        times.push(write_then_sync(&writer, handle, changes).await?);
                    }
                }
            }
            let [delta_times, full_times] = times;
            for ((k, delta_times), full_times) in
                CHANGED.into_iter().zip(delta_times).zip(full_times)
            {
                let (d, f) = (median(delta_times), median(full_times));
                let kind = if delta.capabilities().delta {
                    "delta"
                } else {
                    "full (no delta in this store)"
                };
                self.record(
                    format!("sync after {k} changed, {size} keys, {kind}"),
                    micros(d),
                    "us",
                    format!(
                        "{} faster than a full reload ({:.1} ms)",
                        ratio(micros(f), micros(d)),
                        f.as_secs_f64() * 1000.0
                    ),
                    json!({"size": size, "k": k, "delta_us": micros(d), "full_us": micros(f)}),
                );
                if k == 1 {
                    plot.push((size, micros(d), micros(f)));
                }
            }
            settle().await;
            self.sustained(&writer, &delta, size).await?;
            settle().await;
            self.timed_clear(&writer, &delta, size).await?;
        }
        Ok(plot)
    }

    /// Syncs `handle` after each of many rounds of 100 changed keys, an eighth of the dictionary
    /// in all (with `--quick`, 10 rounds): the mean includes the rare syncs that fold the
    /// snapshot's overlay of changes into its base, which a median of a few rounds misses.
    async fn sustained(
        &mut self,
        writer: &Dict<u64>,
        handle: &Dict<u64>,
        size: usize,
    ) -> Result<(), String> {
        const K: usize = 100;
        let rounds = if self.quick {
            10
        } else {
            (size / 8 / K).max(10)
        };
        let mut times = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let changes = (0..K).map(|i| (format!("key{}", (round * K + i) % size), round as u64));
            times.push(write_then_sync(writer, handle, changes).await?);
        }
        let mean = times.iter().sum::<Duration>() / rounds as u32;
        let max = times.iter().max().copied().unwrap_or_default();
        self.record(
            format!("sync after {K} changed, {size} keys, mean of {rounds} rounds"),
            micros(mean),
            "us",
            format!(
                "{} keys changed in all; median {:.1} us, slowest {:.1} ms",
                rounds * K,
                micros(median(times)),
                max.as_secs_f64() * 1000.0
            ),
            json!({"size": size, "k": K, "rounds": rounds, "max_us": micros(max)}),
        );
        Ok(())
    }

    /// Clears a filled dictionary with `writer`, timed, and how long `other` takes to follow.
    /// A store that cannot clear this many entries (ZooKeeper: one request) is recorded as
    /// failed, with the error.
    async fn timed_clear(
        &mut self,
        writer: &Dict<u64>,
        other: &Dict<u64>,
        size: usize,
    ) -> Result<(), String> {
        if !writer.capabilities().clear {
            return Ok(());
        }
        let scenario = format!("clear, {size} keys");
        let start = Instant::now();
        if let Err(error) = writer.clear().await {
            let note = format!("failed: {error}");
            self.record(scenario, f64::NAN, "ms", note, json!({"size": size}));
            return Ok(());
        }
        let cleared = start.elapsed();
        let start = Instant::now();
        other.sync().await.map_err(err)?;
        let followed = start.elapsed().as_secs_f64() * 1000.0;
        self.record(
            scenario,
            cleared.as_secs_f64() * 1000.0,
            "ms",
            format!("another handle followed in {followed:.1} ms"),
            json!({"size": size, "follow_ms": followed}),
        );
        Ok(())
    }

    /// Writes per second, one at a time vs batched.
    async fn writes(&mut self) -> Result<(), String> {
        let name = self.name("writes");
        let dict: Dict<u64> = self
            .store
            .open(self.namespace, &name, Json, self.options.clone())
            .await
            .map_err(err)?;
        let n = if self.quick { 50 } else { 1000 };
        let start = Instant::now();
        for i in 0..n {
            dict.insert(&format!("w{i}"), i).await.map_err(err)?;
        }
        let sequential = n as f64 / start.elapsed().as_secs_f64();
        self.record(
            "writes, sequential".into(),
            sequential,
            "writes/s",
            "one round trip each".into(),
            json!({}),
        );
        if dict.capabilities().batch {
            let (batches, size) = if self.quick { (2, 200) } else { (10, 1000) };
            let start = Instant::now();
            for b in 0..batches {
                dict.insert_many((0..size).map(|i| (format!("b{b}-{i}"), i)))
                    .await
                    .map_err(err)?;
            }
            let batched = (batches * size) as f64 / start.elapsed().as_secs_f64();
            let note = format!(
                "batches of {size}: {} the sequential rate",
                ratio(batched, sequential)
            );
            self.record(
                "writes, batched".into(),
                batched,
                "keys/s",
                note,
                json!({"batch": size}),
            );
        }
        self.clear(&name).await;
        Ok(())
    }

    /// Increments per second on one hot counter from many concurrent writers (each with its own
    /// handle, as separate processes would), a plain counter key vs a sharded counter, in
    /// alternating rounds so both see the same machine.
    async fn counters(&mut self, writers: usize, shards: u32) -> Result<(), String> {
        let name = self.name("counters");
        let mut handles = Vec::with_capacity(writers);
        for _ in 0..writers {
            let dict: Dict<i64> = self
                .store
                .open(self.namespace, &name, Json, self.options.clone())
                .await
                .map_err(err)?;
            handles.push(dict);
        }
        let round = Duration::from_secs(if self.quick { 1 } else { 5 });
        let counters = handles
            .iter()
            .map(|dict| durable::ShardedCounter::new(dict, "hot-sharded", shards))
            .collect::<DResult<Vec<_>>>()
            .map_err(err)?;
        let (mut plain, mut sharded) = (Vec::new(), Vec::new());
        let (mut plain_tally, mut sharded_tally) = (Tally::default(), Tally::default());
        for _ in 0..2 {
            let (rate, tally) = hammer(&handles, round, |dict: Dict<i64>, _| async move {
                dict.increment("hot", 1).await.map(drop)
            })
            .await?;
            plain.push(rate);
            plain_tally.add(&tally);
            let (rate, tally) = hammer(
                &counters,
                round,
                |counter: durable::ShardedCounter, writer| async move {
                    counter.increment_as(writer, 1).await
                },
            )
            .await?;
            sharded.push(rate);
            sharded_tally.add(&tally);
        }
        // The same writers as tasks of one process: clones of one handle, whose concurrent
        // increments of a key are combined into one store write.
        let shared = vec![handles[0].clone(); writers];
        let (one_handle, tally) = hammer(&shared, round, |dict: Dict<i64>, _| async move {
            dict.increment("hot", 1).await.map(drop)
        })
        .await?;
        plain_tally.add(&tally);
        let (plain_count, sharded_count) = (plain_tally.acknowledged, sharded_tally.acknowledged);
        let check: Dict<i64> = self
            .store
            .open(self.namespace, &name, Json, self.options.clone())
            .await
            .map_err(err)?;
        let stored_plain = check.snapshot().get("hot").copied().unwrap_or(0);
        let stored_sharded = durable::ShardedCounter::new(&check, "hot-sharded", 1)
            .map_err(err)?
            .value();
        // An increment that gave up wrote nothing; every acknowledged one must be there.
        if stored_plain != plain_count as i64 || stored_sharded != sharded_count as i64 {
            return Err(format!(
                "counter totals do not match the acknowledged increments: plain {stored_plain} \
                 vs {plain_count}, sharded {stored_sharded} vs {sharded_count}"
            ));
        }
        let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len() as f64;
        let (plain, sharded) = (mean(&plain), mean(&sharded));
        self.record(
            format!("hot counter, {writers} writers, plain"),
            plain,
            "incr/s",
            format!("one key{}", plain_tally.note()),
            json!({"writers": writers, "gave_up": plain_tally.gave_up}),
        );
        self.record(
            format!("hot counter, {writers} writers, {shards} shards"),
            sharded,
            "incr/s",
            format!(
                "{} the plain counter's rate{}",
                ratio(sharded, plain),
                sharded_tally.note()
            ),
            json!({"writers": writers, "shards": shards, "gave_up": sharded_tally.gave_up}),
        );
        self.record(
            format!("hot counter, {writers} tasks on one handle"),
            one_handle,
            "incr/s",
            format!(
                "{} the {writers} handles' rate (increments combined)",
                ratio(one_handle, plain)
            ),
            json!({"writers": writers, "handles": 1}),
        );
        self.clear(&name).await;
        Ok(())
    }

    /// Delay from a write in one handle to another handle's snapshot, polling vs push.
    async fn propagation(&mut self) -> Result<(), String> {
        let name = self.name("propagation");
        let writer: Dict<u64> = self
            .store
            .open(self.namespace, &name, Json, self.options.clone())
            .await
            .map_err(err)?;
        let samples = if self.quick { 10 } else { 50 };
        let push_capable = writer.capabilities().push;
        for (label, push, interval) in [
            ("polling every 100 ms", false, Duration::from_millis(100)),
            ("push hints", true, Duration::from_secs(60)),
        ] {
            if push && !push_capable {
                self.record(
                    format!("propagation to another handle, {label}"),
                    f64::NAN,
                    "ms",
                    "n/a: no push hints in this store".into(),
                    json!({}),
                );
                continue;
            }
            let options = self.options.clone().with_mode(Mode::background(interval));
            let (reader, _) = self.open(&name, true, push, options).await?;
            let mut changes = reader.subscribe();
            let mut delays = Vec::new();
            for i in 0..samples {
                let start = Instant::now();
                writer.insert("p", i).await.map_err(err)?;
                loop {
                    let change = tokio::time::timeout(Duration::from_secs(30), changes.recv())
                        .await
                        .map_err(|_| {
                            "a write did not reach the other handle within 30 s".to_owned()
                        })?
                        .map_err(err)?;
                    if change.new.as_deref() == Some(&i) {
                        break;
                    }
                }
                delays.push(start.elapsed());
            }
            let (p50, p99) = (median(delays.clone()), percentile(delays, 0.99));
            self.record(
                format!("propagation to another handle, {label}"),
                p50.as_secs_f64() * 1000.0,
                "ms",
                format!("median; p99 {:.2} ms", p99.as_secs_f64() * 1000.0),
                json!({"p50_ms": p50.as_secs_f64() * 1000.0, "p99_ms": p99.as_secs_f64() * 1000.0}),
            );
        }
        self.clear(&name).await;
        Ok(())
    }

    /// 64 concurrent `sync()` callers vs the round trips they cause.
    async fn coalescing(&mut self) -> Result<(), String> {
        let name = self.name("coalescing");
        self.populate(&name, 10).await?;
        let (dict, calls) = self.polling(&name, true).await?;
        let before = calls.load(Ordering::Relaxed);
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let dict = dict.clone();
                tokio::spawn(async move { dict.sync().await.map(drop) })
            })
            .collect();
        for task in tasks {
            task.await.map_err(err)?.map_err(err)?;
        }
        let trips = calls.load(Ordering::Relaxed) - before;
        self.record(
            "64 concurrent sync() callers".into(),
            trips as f64,
            "round trips",
            format!("{} callers per round trip", ratio(64.0, trips as f64)),
            json!({"callers": 64, "round_trips": trips}),
        );
        self.clear(&name).await;
        Ok(())
    }
}

/// An SVG plot of sync time (log) against dictionary size (log): delta vs full reload.
fn svg(points: &[(usize, f64, f64)]) -> String {
    let (w, h, margin) = (640.0, 400.0, 60.0);
    let xs: Vec<f64> = points.iter().map(|p| (p.0 as f64).log10()).collect();
    let ys: Vec<f64> = points
        .iter()
        .flat_map(|p| [p.1, p.2])
        .filter(|v| *v > 0.0)
        .map(f64::log10)
        .collect();
    let (x0, x1) = (
        xs.iter().cloned().fold(f64::MAX, f64::min),
        xs.iter().cloned().fold(f64::MIN, f64::max),
    );
    let (y0, y1) = (
        ys.iter().cloned().fold(f64::MAX, f64::min).floor(),
        ys.iter().cloned().fold(f64::MIN, f64::max).ceil(),
    );
    let px = |x: f64| margin + (x - x0) / (x1 - x0).max(1e-9) * (w - 2.0 * margin);
    let py = |y: f64| h - margin - (y - y0) / (y1 - y0).max(1e-9) * (h - 2.0 * margin);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = write!(
        out,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{margin}\" y=\"24\" font-size=\"14\">sync() after one change: delta vs full reload</text>"
    );
    for exp in (y0 as i32)..=(y1 as i32) {
        let y = py(f64::from(exp));
        let _ = write!(
            out,
            "<line x1=\"{margin}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"4\" y=\"{}\">{} us</text>",
            w - margin,
            y + 4.0,
            10f64.powi(exp)
        );
    }
    for (i, p) in points.iter().enumerate() {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{} keys</text>",
            px(xs[i]),
            h - margin + 20.0,
            p.0
        );
    }
    for (label, color, pick) in [("delta", "#0a7", 1), ("full reload", "#c33", 2)] {
        let line: Vec<String> = points
            .iter()
            .zip(&xs)
            .map(|(p, x)| (x, if pick == 1 { p.1 } else { p.2 }))
            .filter(|(_, v)| *v > 0.0)
            .map(|(x, v)| format!("{:.1},{:.1}", px(*x), py(v.log10())))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            line.join(" ")
        );
        let legend_y = if pick == 1 { 44.0 } else { 60.0 };
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{legend_y}\" fill=\"{color}\">{label}</text>",
            w - margin - 80.0
        );
    }
    out.push_str("</svg>\n");
    out
}

pub(crate) async fn run(
    store: &Store,
    url: &str,
    namespace: &str,
    options: Options,
    args: &BenchArgs,
) -> Result<(), String> {
    let max = args
        .max_size
        .unwrap_or(if args.quick { 10_000 } else { 1_000_000 });
    let sizes: Vec<usize> = [1_000, 10_000, 100_000, 1_000_000, 10_000_000]
        .into_iter()
        .filter(|s| *s <= max)
        .collect();
    let mut bench = Bench {
        store,
        url,
        namespace,
        run: format!("{:08x}", rand::random::<u32>()),
        rows: Vec::new(),
        json: Vec::new(),
        quick: args.quick,
        options,
    };
    let backend = store.backend(namespace, "probe").map_err(err)?;
    eprintln!(
        "durable bench: {} ({}), sizes {sizes:?}",
        backend.name(),
        if args.quick { "quick" } else { "full" }
    );
    let wanted = |scenario| args.only.is_empty() || args.only.contains(&scenario);
    if wanted(Scenario::Reads) {
        bench.reads().await?;
        bench.read_path(&sizes).await?;
    }
    if wanted(Scenario::QuietSync) {
        bench.quiet_sync().await?;
    }
    let mut plot = Vec::new();
    if wanted(Scenario::Sizes) {
        plot = bench.sizes(&sizes).await?;
    }
    if wanted(Scenario::Writes) {
        bench.writes().await?;
    }
    if wanted(Scenario::Propagation) {
        bench.propagation().await?;
    }
    if wanted(Scenario::Coalescing) {
        bench.coalescing().await?;
    }
    if wanted(Scenario::Counters) {
        bench.counters(args.writers, args.shards).await?;
    }
    if wanted(Scenario::Memory) {
        bench.memory(max).await?;
    }

    let width = bench
        .rows
        .iter()
        .map(|r| r.scenario.len())
        .max()
        .unwrap_or(10);
    println!(
        "{:width$}  {:>12}  {:<10}  comparison",
        "scenario", "value", "unit"
    );
    for row in &bench.rows {
        let value = if row.value.is_nan() {
            "-".to_owned()
        } else {
            format!("{:.2}", row.value)
        };
        println!(
            "{:width$}  {value:>12}  {:<10}  {}",
            row.scenario, row.unit, row.note
        );
    }
    let report = json!({ "backend": backend.name(), "quick": args.quick, "results": bench.json });
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&report).map_err(err)? + "\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", args.json.display()))?;
    eprintln!("wrote {}", args.json.display());
    if let Some(path) = args.svg.as_ref().filter(|_| !plot.is_empty()) {
        std::fs::write(path, svg(&plot))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// A run id, so concurrent benchmarks against one store do not collide.
#[cfg(test)]
mod tests {
    use durable::bytes::Bytes;
    use durable::{BatchOp, MemoryStore};

    use super::*;

    fn memory_probe(delta: bool, push: bool) -> Probe {
        let store = MemoryStore::new();
        probe(Box::new(store.backend("ns", "probe").unwrap()), delta, push).0
    }

    /// Every operation reaches the store (none falls back to `NotSupported`) and is counted.
    #[tokio::test]
    async fn probe_forwards_and_counts_every_operation() {
        let p = memory_probe(true, true);
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let v = p.persist("a", b("1")).await.unwrap();
        p.depersist("a").await.unwrap().unwrap();
        p.durables().await.unwrap();
        p.last_updated().await.unwrap();
        p.changes_since(v).await.unwrap();
        p.subscribe().await.unwrap();
        p.persist_if_absent("b", b("2")).await.unwrap();
        p.compare_and_swap("c", None, Some(b("3"))).await.unwrap();
        p.pop("b").await.unwrap().unwrap();
        assert_eq!(p.increment("n", 2).await.unwrap().0, 2);
        let ops = vec![BatchOp::Put {
            key: "d".into(),
            value: b("4"),
        }];
        p.persist_batch(ops).await.unwrap().unwrap();
        p.clear().await.unwrap().unwrap();
        p.now().await.unwrap();
        p.persist_expiring("e", b("5"), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(p.sweep().await.unwrap().unwrap().keys, vec!["e".to_owned()]);
        assert_eq!(p.hooks().calls.load(Ordering::Relaxed), 15);
        assert_eq!(p.capabilities(), Capabilities::all());
        assert_eq!(p.location(), p.inner().location(), "the inner dictionary's");
    }

    #[test]
    fn probe_hides_only_what_it_is_told_to() {
        let caps = memory_probe(false, false).capabilities();
        assert_eq!(caps, Capabilities::all().with_delta(false).with_push(false));
    }
}
