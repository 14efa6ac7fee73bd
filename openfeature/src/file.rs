//! flagd flag files: validated as a whole, split into dictionary entries, and put back together.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::definition::{
    EVALUATOR_PREFIX, KeyKind, METADATA_KEY, SCHEMA_KEY, check_evaluator, describe, engine, escape,
    key_kind, parse_flag,
};
use crate::error::{Error, Result};

/// A validated flagd flag file (`{"$schema": .., "flags": {..}, "$evaluators": {..},
/// "metadata": {..}}`), as the dictionary entries it is stored as.
///
/// Every flag is one entry (key: the flag key, value: its definition as written, `$ref`s
/// included); each shared evaluator is one entry under [`EVALUATOR_PREFIX`]; the flag-set
/// `metadata` and `$schema` are one entry each ([`METADATA_KEY`], [`SCHEMA_KEY`]).
/// [`FlagFile::to_json`] puts the same document back together.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagFile {
    entries: BTreeMap<String, Value>,
}

impl FlagFile {
    /// Parses and validates a flag file. Every flag is checked as [`FlagStore::insert_flag`]
    /// checks one (its `$ref`s must name evaluators of this file); the first problem is returned
    /// with its JSON Pointer.
    ///
    /// [`FlagStore::insert_flag`]: crate::FlagStore::insert_flag
    pub fn parse(text: &str) -> Result<Self> {
        let document: Value = serde_json::from_str(text).map_err(Error::json)?;
        Self::from_json(&document)
    }

    /// [`FlagFile::parse`] for a document already parsed.
    pub fn from_json(document: &Value) -> Result<Self> {
        Self::from_json_with(document, &|_| None)
    }

    /// Like [`FlagFile::from_json`], with `more_evaluators` answering `$ref`s to evaluators the
    /// file does not define (the ones already in a store, for a merge).
    pub(crate) fn from_json_with<'e>(
        document: &'e Value,
        more_evaluators: &dyn Fn(&str) -> Option<&'e Value>,
    ) -> Result<Self> {
        let root = document.as_object().ok_or_else(|| {
            Error::invalid(
                "",
                format!("a flag file is a JSON object, not {}", describe(document)),
            )
        })?;
        let mut entries = BTreeMap::new();
        for (member, value) in root {
            match member.as_str() {
                "flags" | "$evaluators" => {}
                "$schema" => {
                    if !value.is_string() {
                        return Err(Error::invalid("/$schema", "must be a string (a URL)"));
                    }
                    entries.insert(SCHEMA_KEY.to_owned(), value.clone());
                }
                "metadata" => {
                    if !value.is_object() {
                        return Err(Error::invalid(
                            "/metadata",
                            format!("must be an object, not {}", describe(value)),
                        ));
                    }
                    entries.insert(METADATA_KEY.to_owned(), value.clone());
                }
                other => {
                    return Err(Error::invalid(
                        format!("/{}", escape(other)),
                        "unknown member (a flag file has flags, $evaluators, metadata and $schema)",
                    ));
                }
            }
        }

        let empty = Map::new();
        let evaluators = match root.get("$evaluators") {
            None => &empty,
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(Error::invalid(
                    "/$evaluators",
                    format!(
                        "must be an object of name to JSONLogic, not {}",
                        describe(other)
                    ),
                ));
            }
        };
        for (name, logic) in evaluators {
            check_evaluator(name, logic, &format!("/$evaluators/{}", escape(name)))?;
            entries.insert(format!("{EVALUATOR_PREFIX}{name}"), logic.clone());
        }

        let flags = match root.get("flags") {
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(Error::invalid(
                    "/flags",
                    format!(
                        "must be an object of flag key to definition, not {}",
                        describe(other)
                    ),
                ));
            }
            None => return Err(Error::invalid("/flags", "missing")),
        };
        let engine = engine();
        let lookup = |name: &str| evaluators.get(name).or_else(|| more_evaluators(name));
        for (key, definition) in flags {
            parse_flag(key, definition, &lookup, &engine, &mut BTreeSet::new())?;
            entries.insert(key.clone(), definition.clone());
        }
        Ok(FlagFile { entries })
    }

    /// Builds the file from dictionary entries (keys this crate does not use are skipped).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Self {
        FlagFile {
            entries: entries
                .into_iter()
                .filter(|(k, _)| key_kind(k) != KeyKind::Unknown)
                .map(|(k, v)| (k.to_owned(), v.clone()))
                .collect(),
        }
    }

    /// The dictionary entries, key to value, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The flag keys, in order.
    pub fn flag_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.keys().filter_map(|k| match key_kind(k) {
            KeyKind::Flag(key) => Some(key),
            _ => None,
        })
    }

    /// The flag file as a JSON document: `$schema` (if any), `flags`, `$evaluators` (if any),
    /// `metadata` (if any).
    pub fn to_json(&self) -> Value {
        let mut root = Map::new();
        let mut flags = Map::new();
        let mut evaluators = Map::new();
        for (key, value) in &self.entries {
            match key_kind(key) {
                KeyKind::Flag(key) => {
                    flags.insert(key.to_owned(), value.clone());
                }
                KeyKind::Evaluator(name) => {
                    evaluators.insert(name.to_owned(), value.clone());
                }
                KeyKind::File if key == SCHEMA_KEY => {
                    root.insert("$schema".into(), value.clone());
                }
                KeyKind::File => {
                    root.insert("metadata".into(), value.clone());
                }
                KeyKind::Unknown => {}
            }
        }
        root.insert("flags".into(), Value::Object(flags));
        if !evaluators.is_empty() {
            root.insert("$evaluators".into(), Value::Object(evaluators));
        }
        Value::Object(root)
    }

    /// [`FlagFile::to_json`] as indented text with a final newline.
    pub fn to_pretty_string(&self) -> String {
        let mut text =
            serde_json::to_string_pretty(&self.to_json()).expect("a JSON value serializes");
        text.push('\n');
        text
    }
}
