//! Parsed flags, cached by the identity of the stored value they were parsed from.
//!
//! A snapshot's entry holds its value behind an `Arc`; a write or a sync that changes a key puts
//! a new allocation there. A cache entry keeps the `Arc` it was parsed from (so that allocation
//! cannot be reused while cached) and is current while the snapshot still points at it: one
//! pointer comparison per evaluation, one parse per change. Flags that use shared evaluators
//! (`$ref`) also keep the evaluators' values and compare them the same way.

use std::collections::{BTreeSet, HashMap};
use std::ptr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use datalogic_rs::Engine;
use durable_core::{Shared, Snapshot};
use foldhash::fast::RandomState;
use serde_json::Value;

use crate::definition::{EVALUATOR_PREFIX, ParsedFlag, parse_flag};

/// One flag, parsed from one stored value.
#[derive(Debug)]
pub(crate) struct Compiled {
    /// The stored value this was parsed from (kept alive: it is the cache key; `None`: absent).
    source: Option<Shared<Value>>,
    /// The shared evaluators the flag looked up: dictionary key and value (`None`: missing).
    deps: Box<[(String, Option<Shared<Value>>)]>,
    /// The parsed flag, or why the stored definition is not valid.
    pub(crate) flag: Result<ParsedFlag, String>,
}

impl Compiled {
    pub(crate) fn parsed(&self) -> Option<&ParsedFlag> {
        self.flag.as_ref().ok()
    }

    fn is_current(&self, snapshot: &Snapshot<Value>, value: &Value) -> bool {
        self.source
            .as_deref()
            .is_some_and(|source| ptr::eq(source, value))
            && self
                .deps
                .iter()
                .all(|(key, dep)| match (snapshot.get(key), dep) {
                    (None, None) => true,
                    (Some(now), Some(then)) => ptr::eq(&**then, now),
                    _ => false,
                })
    }
}

type Map = HashMap<Arc<str>, Arc<Compiled>, RandomState>;

/// The parsed flags of one dictionary, shared by all clones of a [`FlagStore`](crate::FlagStore).
pub(crate) struct Cache {
    map: ArcSwap<Map>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("flags", &self.map.load().len())
            .finish()
    }
}

impl Cache {
    pub(crate) fn new() -> Self {
        Cache {
            map: ArcSwap::from_pointee(Map::default()),
        }
    }

    /// The parsed form of flag `key`, whose stored value in `snapshot` is `value`: from the cache
    /// when current, else parsed now and cached.
    pub(crate) fn get(
        &self,
        engine: &Engine,
        snapshot: &Snapshot<Value>,
        key: &str,
        value: &Value,
    ) -> Arc<Compiled> {
        if let Some(hit) = self.map.load().get(key)
            && hit.is_current(snapshot, value)
        {
            return hit.clone();
        }
        let compiled = Arc::new(compile(engine, snapshot, key));
        let key: Arc<str> = key.into();
        self.map.rcu(|map| {
            // Copy-on-write: misses happen once per change. Entries of keys the snapshot no
            // longer holds are dropped on the way.
            let mut next: Map = map
                .iter()
                .filter(|(k, _)| snapshot.contains_key(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            next.insert(key.clone(), compiled.clone());
            next
        });
        compiled
    }
}

fn compile(engine: &Engine, snapshot: &Snapshot<Value>, key: &str) -> Compiled {
    let source = snapshot.get_versioned(key).map(|v| v.value);
    let mut refs = BTreeSet::new();
    let lookup = |name: &str| snapshot.get(&format!("{EVALUATOR_PREFIX}{name}"));
    let flag = parse_flag(
        key,
        source.as_deref().unwrap_or(&Value::Null),
        &lookup,
        engine,
        &mut refs,
    )
    .map_err(|e| {
        tracing::warn!(flag = key, error = %e, "stored flag definition is not valid");
        format!("stored definition of flag {key:?} is not valid: {e}")
    });
    let deps = refs
        .into_iter()
        .map(|name| {
            let dep = format!("{EVALUATOR_PREFIX}{name}");
            let value = snapshot.get_versioned(&dep).map(|v| v.value);
            (dep, value)
        })
        .collect();
    Compiled { source, deps, flag }
}
