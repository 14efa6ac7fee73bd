//! The read path: `get` through a snapshot vs a plain `HashMap` (std's SipHash, and foldhash as
//! the snapshot uses) and a `parking_lot::RwLock<HashMap>`,
//! on 1k, 100k and 1M keys, from one and two threads at once. The snapshot is read through the
//! handle that wrote the keys (its map holds the changes since its last merge in an overlay), a
//! handle opened after (one full load: the base table alone), and (up to 100k keys) a handle
//! whose every entry has a time to live, to price the expiry check.
//!
//! `cargo bench -p durable-core --bench read_path`

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use durable_core::{Dict, Json, MemoryStore, Options};
use parking_lot::RwLock;
use rand::seq::SliceRandom;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
/// The largest size measured with expiring entries (they are written one at a time).
const EXPIRING_UP_TO: usize = 100_000;
/// Lookups cycle through this many random keys of the map.
const PROBES: usize = 4096;

struct Fixture {
    plain: HashMap<String, u64>,
    /// The same map with the snapshot's hash function (foldhash), to separate hashing cost from
    /// structure cost.
    fast: HashMap<String, u64, foldhash::fast::RandomState>,
    locked: RwLock<HashMap<String, u64>>,
    dict: Dict<u64>,
    /// A second handle on the same dictionary, opened after it was filled: its snapshot is
    /// one full load, where `dict`'s holds the changes since its last merge in an overlay.
    loaded: Dict<u64>,
    /// The same entries, each with a time to live (only built up to `EXPIRING_UP_TO` keys).
    expiring: Option<Dict<u64>>,
    probes: Vec<String>,
    _runtime: tokio::runtime::Runtime,
}

fn fixture(n: usize) -> Fixture {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys: Vec<String> = (0..n).map(|i| format!("flag:{i}")).collect();
    let plain: HashMap<String, u64> = keys.iter().cloned().zip(0..).collect();
    let store = MemoryStore::new();
    let dict = runtime.block_on(async {
        let dict: Dict<u64> = Dict::open(
            store.backend("bench", "read").unwrap(),
            Json,
            Options::new(),
        )
        .await
        .expect("open");
        for chunk in keys.chunks(50_000) {
            let batch = chunk.iter().map(|k| (k.clone(), plain[k]));
            dict.insert_many(batch).await.expect("insert");
        }
        dict
    });
    let loaded = runtime.block_on(async {
        Dict::open(
            store.backend("bench", "read").unwrap(),
            Json,
            Options::new(),
        )
        .await
        .expect("open")
    });
    let expiring = (n <= EXPIRING_UP_TO).then(|| {
        runtime.block_on(async {
            let dict: Dict<u64> = Dict::open(
                store.backend("bench", "expiring").unwrap(),
                Json,
                Options::new(),
            )
            .await
            .expect("open");
            for key in &keys {
                dict.insert_with_ttl(key, plain[key], Duration::from_secs(3600))
                    .await
                    .expect("insert");
            }
            dict
        })
    });
    let mut probes: Vec<String> = keys.clone();
    probes.shuffle(&mut rand::rng());
    probes.truncate(PROBES);
    Fixture {
        fast: plain.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        locked: RwLock::new(plain.clone()),
        plain,
        dict,
        loaded,
        expiring,
        probes,
        _runtime: runtime,
    }
}

/// Runs `lookup` `iters` times on each of `threads` threads at once, each thread with its own
/// `setup()` state (a held snapshot, say); returns the wall time, i.e. the time per lookup of one
/// thread times `iters`.
fn timed<S>(
    threads: usize,
    iters: u64,
    probes: &[String],
    setup: &(dyn Fn() -> S + Sync),
    lookup: &(dyn Fn(&S, &str) -> u64 + Sync),
) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let state = setup();
                let mut sum = 0u64;
                for i in 0..iters as usize {
                    let key = &probes[(i + t * 997) % probes.len()];
                    sum = sum.wrapping_add(lookup(&state, key));
                }
                black_box(sum);
            });
        }
    });
    start.elapsed()
}

fn read_path(c: &mut Criterion) {
    for n in SIZES {
        let f = fixture(n);
        assert_eq!(f.dict.snapshot().len(), n);
        for threads in [1, 2] {
            let mut group = c.benchmark_group(format!("get/{threads}-thread"));
            group.measurement_time(Duration::from_secs(3));
            group.warm_up_time(Duration::from_secs(1));
            let probes = &f.probes;
            group.bench_function(BenchmarkId::new("HashMap", n), |b| {
                b.iter_custom(|iters| timed(threads, iters, probes, &|| (), &|_, k| f.plain[k]))
            });
            group.bench_function(BenchmarkId::new("HashMap (foldhash)", n), |b| {
                b.iter_custom(|iters| timed(threads, iters, probes, &|| (), &|_, k| f.fast[k]))
            });
            group.bench_function(BenchmarkId::new("RwLock<HashMap>", n), |b| {
                b.iter_custom(|iters| {
                    timed(threads, iters, probes, &|| (), &|_, k| f.locked.read()[k])
                })
            });
            let held = [
                ("snapshot guard held", Some(&f.dict)),
                ("snapshot guard held, loaded", Some(&f.loaded)),
                ("snapshot guard held, TTLs", f.expiring.as_ref()),
            ];
            for (name, dict) in held {
                let Some(dict) = dict else { continue };
                group.bench_function(BenchmarkId::new(name, n), |b| {
                    b.iter_custom(|iters| {
                        timed(
                            threads,
                            iters,
                            probes,
                            &|| dict.snapshot(),
                            &|snapshot, k| *snapshot.get(k).expect("present"),
                        )
                    })
                });
            }
            group.bench_function(BenchmarkId::new("snapshot guard per lookup", n), |b| {
                b.iter_custom(|iters| {
                    timed(threads, iters, probes, &|| (), &|_, k| {
                        *f.dict.snapshot().get(k).expect("present")
                    })
                })
            });
            if let Some(expiring) = &f.expiring {
                group.bench_function(
                    BenchmarkId::new("snapshot guard per lookup, TTLs", n),
                    |b| {
                        b.iter_custom(|iters| {
                            timed(threads, iters, probes, &|| (), &|_, k| {
                                *expiring.snapshot().get(k).expect("present")
                            })
                        })
                    },
                );
            }
            group.finish();
        }
    }
}

criterion_group!(benches, read_path);
criterion_main!(benches);
