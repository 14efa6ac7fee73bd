//! [`FlagStore`]: a durable dictionary of flagd flag definitions, their parsed forms, and the
//! evaluation of a flag against the local snapshot.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datalogic_rs::bumpalo::Bump;
use datalogic_rs::{DataValue, Engine};
use durable_core::{Backend, Dict, Json, Options, Snapshot, Version};
use open_feature::{EvaluationContext, EvaluationErrorCode, EvaluationReason};
use serde_json::Value;

use crate::cache::Cache;
use crate::context;
use crate::definition::{
    EVALUATOR_PREFIX, KeyKind, ParsedFlag, engine, flag_pointer, key_kind, parse_flag,
};
use crate::error::{Error, Result};
use crate::events::FlagEvents;
use crate::file::FlagFile;
use crate::resolution::{FlagType, Outcome, Resolution};

/// The dictionary type flags live in: one key per flag, its flagd definition as the JSON value.
pub type FlagDict = Dict<Value, Json>;

/// A durable dictionary of flagd flag definitions, evaluated locally.
///
/// Cheap to clone (clones share the dictionary handle and the parsed flags). Evaluation
/// ([`resolve`](Self::resolve), and [`DurableProvider`](crate::DurableProvider) through
/// OpenFeature) reads the dictionary's local snapshot only: keep it fresh with
/// [`sync`](Self::sync) once per request, or open the dictionary in background mode
/// ([`durable_core::Mode::background`]).
#[derive(Clone)]
pub struct FlagStore {
    inner: Arc<Inner>,
}

struct Inner {
    dict: FlagDict,
    engine: Engine,
    cache: Cache,
}

impl fmt::Debug for FlagStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagStore")
            .field("dict", &self.inner.dict)
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

/// How [`FlagStore::import`] treats flags that are in the store but not in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ImportMode {
    /// Remove them (and evaluators, metadata and schema the file lacks): afterwards the store
    /// holds exactly the file, and [`FlagStore::export`] gives it back.
    #[default]
    Replace,
    /// Keep them: the file's flags are added or replaced, nothing is removed.
    Merge,
}

/// What [`FlagStore::import`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Keys written (new or changed definitions), in order.
    pub written: Vec<String>,
    /// Keys removed ([`ImportMode::Replace`] only), in order.
    pub removed: Vec<String>,
    /// Keys whose stored value already equalled the file's (not written).
    pub unchanged: usize,
}

impl FlagStore {
    /// Wraps an open dictionary of flag definitions. No I/O.
    pub fn new(dict: FlagDict) -> Self {
        FlagStore {
            inner: Arc::new(Inner {
                dict,
                engine: engine(),
                cache: Cache::new(),
            }),
        }
    }

    /// Opens the dictionary on `backend` (JSON encoding) and wraps it.
    pub async fn open<B: Backend>(backend: B, options: Options) -> Result<Self> {
        Ok(Self::new(Dict::open(backend, Json, options).await?))
    }

    /// The dictionary handle, for everything else durable offers (health, stats, modes).
    pub fn dict(&self) -> &FlagDict {
        &self.inner.dict
    }

    /// Brings the local snapshot up to date (one version check; the changed keys only) and
    /// returns it. Call it once per request in manual mode; background mode needs none.
    pub async fn sync(&self) -> Result<Snapshot<Value>> {
        Ok(self.inner.dict.sync().await?)
    }

    /// The local snapshot (no I/O), to resolve several flags from one version with
    /// [`resolve_in`](Self::resolve_in).
    pub fn snapshot(&self) -> Snapshot<Value> {
        self.inner.dict.snapshot()
    }

    /// Validates flag `key`'s flagd definition and stores it (one write). `$ref`s must name
    /// evaluators in the local snapshot. An invalid definition is refused with
    /// [`Error::Invalid`], naming the problem's JSON Pointer (`/flags/KEY/...`); nothing is
    /// written.
    pub async fn insert_flag(&self, key: &str, definition: Value) -> Result<Version> {
        let snapshot = self.snapshot();
        let lookup = |name: &str| snapshot.get(&format!("{EVALUATOR_PREFIX}{name}"));
        parse_flag(
            key,
            &definition,
            &lookup,
            &self.inner.engine,
            &mut BTreeSet::new(),
        )?;
        drop(snapshot);
        Ok(self.inner.dict.insert(key, definition).await?)
    }

    /// Removes flag `key`; `false` if it was absent.
    pub async fn remove_flag(&self, key: &str) -> Result<bool> {
        crate::definition::check_flag_key(key, &flag_pointer(key))?;
        Ok(self.inner.dict.remove(key).await?.is_some())
    }

    /// The keys of the flags in the local snapshot, in no particular order.
    pub fn flag_keys(&self) -> Vec<String> {
        self.snapshot()
            .keys()
            .filter(|k| matches!(key_kind(k), KeyKind::Flag(_)))
            .map(str::to_owned)
            .collect()
    }

    /// Imports a flagd flag file (its text): validates every flag first (nothing is written if
    /// one is invalid; the error names its JSON Pointer), then writes the definitions that
    /// differ from the store's, in one atomic step where the backend has the `batch`
    /// capability, and, in [`ImportMode::Replace`], removes what the file lacks (a second
    /// step). Definitions are stored as written: [`export`](Self::export) gives the same
    /// document back.
    pub async fn import(&self, text: &str, mode: ImportMode) -> Result<ImportReport> {
        let document: Value = serde_json::from_str(text).map_err(Error::json)?;
        self.import_json(&document, mode).await
    }

    /// [`import`](Self::import) of a file on disk.
    pub async fn import_file(
        &self,
        path: impl AsRef<Path>,
        mode: ImportMode,
    ) -> Result<ImportReport> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        self.import(&text, mode).await
    }

    /// [`import`](Self::import) of a document already parsed.
    pub async fn import_json(&self, document: &Value, mode: ImportMode) -> Result<ImportReport> {
        let snapshot = self.snapshot();
        let file = match mode {
            ImportMode::Replace => FlagFile::from_json(document)?,
            ImportMode::Merge => FlagFile::from_json_with(document, &|name| {
                snapshot.get(&format!("{EVALUATOR_PREFIX}{name}"))
            })?,
        };
        let mut report = ImportReport::default();
        let mut puts = Vec::new();
        for (key, value) in file.entries() {
            if snapshot.get(key) == Some(value) {
                report.unchanged += 1;
            } else {
                report.written.push(key.to_owned());
                puts.push((key.to_owned(), value.clone()));
            }
        }
        if mode == ImportMode::Replace {
            let wanted: BTreeSet<&str> = file.entries().map(|(k, _)| k).collect();
            report.removed = snapshot
                .keys()
                .filter(|k| key_kind(k) != KeyKind::Unknown && !wanted.contains(k))
                .map(str::to_owned)
                .collect();
            report.removed.sort();
        }
        drop(snapshot);

        let dict = &self.inner.dict;
        if dict.capabilities().batch {
            if !puts.is_empty() {
                dict.insert_many(puts).await?;
            }
            if !report.removed.is_empty() {
                dict.remove_many(report.removed.iter().cloned()).await?;
            }
        } else {
            for (key, value) in puts {
                dict.insert(&key, value).await?;
            }
            for key in &report.removed {
                dict.remove(key).await?;
            }
        }
        Ok(report)
    }

    /// The flags in the local snapshot as a flagd flag file (no I/O). After an
    /// [`ImportMode::Replace`] import, equal to the imported document (as JSON values:
    /// whitespace and member order are not kept).
    pub fn export(&self) -> FlagFile {
        let snapshot = self.snapshot();
        FlagFile::from_entries(snapshot.iter())
    }

    /// Writes [`export`](Self::export) to `path` (indented JSON).
    pub fn export_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.export().to_pretty_string()).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Resolves flag `key` for `context` from the local snapshot, with the caller's `default`
    /// where the OpenFeature specification calls for it (see [`Resolution`]).
    pub fn resolve<T: FlagType>(
        &self,
        key: &str,
        context: &EvaluationContext,
        default: T,
    ) -> Resolution<T> {
        self.resolve_in(&self.snapshot(), key, context, default)
    }

    /// [`resolve`](Self::resolve) against a given snapshot, so one request sees one version of
    /// every flag.
    pub fn resolve_in<T: FlagType>(
        &self,
        snapshot: &Snapshot<Value>,
        key: &str,
        context: &EvaluationContext,
        default: T,
    ) -> Resolution<T> {
        self.outcome(snapshot, key, context)
            .into_resolution(key, default)
    }

    /// Listens to flag changes (from this handle's writes and from syncs).
    pub fn events(&self) -> FlagEvents {
        FlagEvents::new(self.clone(), self.inner.dict.subscribe())
    }

    pub(crate) fn outcome(
        &self,
        snapshot: &Snapshot<Value>,
        key: &str,
        context: &EvaluationContext,
    ) -> Outcome {
        let stored = match key_kind(key) {
            KeyKind::Flag(_) => snapshot.get(key),
            _ => None,
        };
        let Some(stored) = stored else {
            return Outcome::Error {
                code: EvaluationErrorCode::FlagNotFound,
                message: format!("no flag {key:?}"),
            };
        };
        let flag = self
            .inner
            .cache
            .get(&self.inner.engine, snapshot, key, stored);
        let parsed = match &flag.flag {
            Ok(parsed) => parsed,
            Err(message) => {
                return Outcome::Error {
                    code: EvaluationErrorCode::ParseError,
                    message: message.clone(),
                };
            }
        };
        if !parsed.enabled {
            return Outcome::CallerDefault {
                flag,
                reason: EvaluationReason::Disabled,
            };
        }
        let (picked, reason) = match &parsed.targeting {
            None => (None, EvaluationReason::Static),
            Some(_) => match self.target(parsed, key, context) {
                Ok(Some(index)) => (Some(index), EvaluationReason::TargetingMatch),
                Ok(None) => (None, EvaluationReason::Default),
                Err((code, message)) => return Outcome::Error { code, message },
            },
        };
        match picked.or(parsed.default_variant) {
            Some(index) => Outcome::Variant {
                flag,
                index,
                reason,
            },
            None => Outcome::CallerDefault {
                flag,
                reason: EvaluationReason::Default,
            },
        }
    }

    /// Runs the flag's targeting: `Ok(Some(variant index))`, `Ok(None)` when it returned
    /// `null` (the default variant applies).
    fn target(
        &self,
        flag: &ParsedFlag,
        key: &str,
        context: &EvaluationContext,
    ) -> Result<Option<usize>, (EvaluationErrorCode, String)> {
        let logic = flag.targeting.as_ref().expect("called for targeted flags");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        with_arena(|arena| {
            let data = context::data(context, key, now, arena);
            let result = self
                .inner
                .engine
                .evaluate(logic, data, arena)
                .map_err(|e| {
                    (
                        EvaluationErrorCode::ParseError,
                        format!("targeting of flag {key:?} failed: {e}"),
                    )
                })?;
            let name = match result {
                DataValue::Null => return Ok(None),
                DataValue::String(name) => *name,
                DataValue::Bool(true) => "true",
                DataValue::Bool(false) => "false",
                other => {
                    return Err((
                        EvaluationErrorCode::General("TARGETING".into()),
                        format!("targeting of flag {key:?} returned {other:?}, not a variant name"),
                    ));
                }
            };
            match flag.variants.iter().position(|v| v.name == name) {
                Some(index) => Ok(Some(index)),
                None => Err((
                    EvaluationErrorCode::General("GENERAL".into()),
                    format!(
                        "targeting of flag {key:?} returned variant {name:?}, which the flag does not define"
                    ),
                )),
            }
        })
    }
}

thread_local! {
    /// One arena per thread, reset before each evaluation: no allocation in the steady state.
    static ARENA: RefCell<Bump> = RefCell::new(Bump::new());
}

fn with_arena<R>(f: impl FnOnce(&Bump) -> R) -> R {
    ARENA.with(|cell| match cell.try_borrow_mut() {
        Ok(mut arena) => {
            arena.reset();
            f(&arena)
        }
        // Re-entered (an evaluation inside an evaluation): a fresh arena.
        Err(_) => f(&Bump::new()),
    })
}

#[cfg(test)]
mod tests {
    use durable_core::MemoryStore;
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_definition_is_parsed_once_per_change() {
        let memory = MemoryStore::new();
        let store = FlagStore::open(memory.backend("t", "flags").unwrap(), Options::new())
            .await
            .unwrap();
        let flag = |default: &str| json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": default});
        store.insert_flag("f", flag("on")).await.unwrap();
        let parsed = |snapshot: &Snapshot<Value>| {
            let value = snapshot.get("f").unwrap();
            store
                .inner
                .cache
                .get(&store.inner.engine, snapshot, "f", value)
        };
        let snapshot = store.snapshot();
        let first = parsed(&snapshot);
        for _ in 0..3 {
            assert!(
                Arc::ptr_eq(&first, &parsed(&snapshot)),
                "served from the cache"
            );
        }
        drop(snapshot);
        store.insert_flag("f", flag("off")).await.unwrap();
        let snapshot = store.snapshot();
        let second = parsed(&snapshot);
        assert!(
            !Arc::ptr_eq(&first, &second),
            "parsed again after the change"
        );
        assert!(Arc::ptr_eq(&second, &parsed(&snapshot)));
    }
}
