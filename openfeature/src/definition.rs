//! flagd's flag definition format: validation, `$ref` resolution, and how a flag file maps onto
//! the keys of a dictionary.
//!
//! One parser serves both sides: [`parse_flag`] refuses a bad definition at write time with the
//! JSON Pointer of the problem, and the evaluation cache runs the same function on whatever the
//! store holds, so a bad stored definition fails (as `PARSE_ERROR`) with the same message.

use std::collections::BTreeSet;

use datalogic_rs::{Engine, Logic};
use open_feature::{FlagMetadata, FlagMetadataValue, StructValue, Value as OfValue};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Dictionary key prefix of a shared targeting rule (an entry of the file's `$evaluators`).
pub const EVALUATOR_PREFIX: &str = "$evaluators/";
/// Dictionary key of the flag file's flag-set `metadata` object.
pub const METADATA_KEY: &str = "$metadata";
/// Dictionary key of the flag file's `$schema` string.
pub const SCHEMA_KEY: &str = "$schema";

/// What a key of the flag dictionary holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind<'a> {
    /// A flag definition (the key is the flag key).
    Flag(&'a str),
    /// A shared evaluator, by name.
    Evaluator(&'a str),
    /// The flag-set metadata or the schema reference.
    File,
    /// A key starting with `$` that this crate does not use.
    Unknown,
}

pub(crate) fn key_kind(key: &str) -> KeyKind<'_> {
    if let Some(name) = key.strip_prefix(EVALUATOR_PREFIX) {
        KeyKind::Evaluator(name)
    } else if key == METADATA_KEY || key == SCHEMA_KEY {
        KeyKind::File
    } else if key.starts_with('$') {
        KeyKind::Unknown
    } else {
        KeyKind::Flag(key)
    }
}

/// The JSONLogic engine flags are compiled with: the JSONLogic core, flagd's `fractional` and
/// `sem_ver`, and the string operators (`starts_with`, `ends_with`), the `datalogic-rs`
/// features this crate enables.
pub(crate) fn engine() -> Engine {
    Engine::builder().build()
}

/// Escapes one JSON Pointer segment (RFC 6901).
pub(crate) fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The pointer of a flag in a flag file.
pub(crate) fn flag_pointer(key: &str) -> String {
    format!("/flags/{}", escape(key))
}

/// The value type every variant of a flag shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    String,
    Number,
    Object,
}

impl Kind {
    fn of(value: &Value) -> Option<Kind> {
        match value {
            Value::Bool(_) => Some(Kind::Bool),
            Value::String(_) => Some(Kind::String),
            Value::Number(_) => Some(Kind::Number),
            Value::Object(_) => Some(Kind::Object),
            Value::Null | Value::Array(_) => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Bool => "boolean",
            Kind::String => "string",
            Kind::Number => "number",
            Kind::Object => "object",
        }
    }
}

/// One variant, with its value converted once for every requested type that can hold it.
#[derive(Debug)]
pub(crate) struct Variant {
    pub(crate) name: String,
    pub(crate) value: Value,
    /// For object variants: the OpenFeature struct, built once.
    pub(crate) structure: Option<StructValue>,
}

/// A validated, compiled flag definition.
#[derive(Debug)]
pub(crate) struct ParsedFlag {
    pub(crate) enabled: bool,
    pub(crate) variants: Vec<Variant>,
    /// Index into `variants`; `None` when `defaultVariant` is null or absent (the caller's
    /// default applies, reason `DEFAULT`).
    pub(crate) default_variant: Option<usize>,
    /// `None` when the flag has no targeting (absent, `null` or `{}`).
    pub(crate) targeting: Option<Logic>,
    pub(crate) metadata: Option<FlagMetadata>,
}

/// Validates and compiles the definition of flag `key`. `evaluator` looks a shared evaluator up
/// by name (for `$ref`); the names looked up are added to `refs`, found or not, so a cache can
/// tell when a change of one of them must recompile the flag.
pub(crate) fn parse_flag<'e>(
    key: &str,
    definition: &Value,
    evaluator: &dyn Fn(&str) -> Option<&'e Value>,
    engine: &Engine,
    refs: &mut BTreeSet<String>,
) -> Result<ParsedFlag> {
    let at = flag_pointer(key);
    check_flag_key(key, &at)?;
    let object = definition.as_object().ok_or_else(|| {
        Error::invalid(
            &at,
            format!("a flag is a JSON object, not {}", describe(definition)),
        )
    })?;
    for member in object.keys() {
        if !matches!(
            member.as_str(),
            "state" | "variants" | "defaultVariant" | "targeting" | "metadata"
        ) {
            return Err(Error::invalid(
                format!("{at}/{}", escape(member)),
                "unknown member (a flag has state, variants, defaultVariant, targeting and metadata)",
            ));
        }
    }

    let enabled = match object.get("state") {
        Some(Value::String(s)) if s == "ENABLED" => true,
        Some(Value::String(s)) if s == "DISABLED" => false,
        Some(other) => {
            return Err(Error::invalid(
                format!("{at}/state"),
                format!(
                    "must be \"ENABLED\" or \"DISABLED\", not {}",
                    describe(other)
                ),
            ));
        }
        None => {
            return Err(Error::invalid(
                format!("{at}/state"),
                "missing (\"ENABLED\" or \"DISABLED\")",
            ));
        }
    };

    let variants = parse_variants(object.get("variants"), &at)?;

    let default_variant = match object.get("defaultVariant") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(
            variants
                .iter()
                .position(|v| &v.name == name)
                .ok_or_else(|| {
                    Error::invalid(
                        format!("{at}/defaultVariant"),
                        format!(
                            "{name:?} is not one of the variants ({})",
                            variants
                                .iter()
                                .map(|v| v.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?,
        ),
        Some(other) => {
            return Err(Error::invalid(
                format!("{at}/defaultVariant"),
                format!("must be a variant name or null, not {}", describe(other)),
            ));
        }
    };

    let targeting = match object.get("targeting") {
        None | Some(Value::Null) => None,
        Some(Value::Object(rule)) if rule.is_empty() => None,
        Some(rule @ Value::Object(_)) => {
            let path = format!("{at}/targeting");
            let mut rule = rule.clone();
            resolve_value(&mut rule, &path, evaluator, refs, &mut Vec::new())?;
            check_operators(&rule, &path)?;
            Some(compile(engine, &rule, &path)?)
        }
        Some(other) => {
            return Err(Error::invalid(
                format!("{at}/targeting"),
                format!("must be a JSONLogic object, not {}", describe(other)),
            ));
        }
    };

    let metadata = match object.get("metadata") {
        None => None,
        Some(value) => parse_metadata(value, &format!("{at}/metadata"))?,
    };

    Ok(ParsedFlag {
        enabled,
        variants,
        default_variant,
        targeting,
        metadata,
    })
}

pub(crate) fn check_flag_key(key: &str, at: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(at, "a flag key cannot be empty"));
    }
    if key.starts_with('$') {
        return Err(Error::invalid(
            at,
            "a flag key cannot start with '$' (reserved for $evaluators, $metadata and $schema)",
        ));
    }
    Ok(())
}

fn parse_variants(value: Option<&Value>, at: &str) -> Result<Vec<Variant>> {
    let path = format!("{at}/variants");
    let object = match value {
        Some(Value::Object(object)) => object,
        Some(other) => {
            return Err(Error::invalid(
                path,
                format!(
                    "must be an object of variant name to value, not {}",
                    describe(other)
                ),
            ));
        }
        None => {
            return Err(Error::invalid(
                path,
                "missing (an object of variant name to value)",
            ));
        }
    };
    if object.is_empty() {
        return Err(Error::invalid(path, "a flag needs at least one variant"));
    }
    let mut kind = None;
    let mut variants = Vec::with_capacity(object.len());
    for (name, value) in object {
        let here = format!("{path}/{}", escape(name));
        let this = Kind::of(value).ok_or_else(|| {
            Error::invalid(
                &here,
                format!(
                    "a variant is a boolean, string, number or object, not {}",
                    describe(value)
                ),
            )
        })?;
        match kind {
            None => kind = Some((this, name)),
            Some((first, first_name)) if first != this => {
                return Err(Error::invalid(
                    here,
                    format!(
                        "is a {}, but variant {first_name:?} is a {}: all variants of a flag have one type",
                        this.name(),
                        first.name()
                    ),
                ));
            }
            Some(_) => {}
        }
        variants.push(Variant {
            name: name.clone(),
            structure: match value {
                Value::Object(map) => Some(to_struct(map)),
                _ => None,
            },
            value: value.clone(),
        });
    }
    Ok(variants)
}

fn parse_metadata(value: &Value, path: &str) -> Result<Option<FlagMetadata>> {
    let object = value.as_object().ok_or_else(|| {
        Error::invalid(path, format!("must be an object, not {}", describe(value)))
    })?;
    let mut metadata = FlagMetadata::default();
    for (name, value) in object {
        let entry = match value {
            Value::Bool(b) => FlagMetadataValue::Bool(*b),
            Value::String(s) => FlagMetadataValue::String(s.clone()),
            Value::Number(n) => match n.as_i64() {
                Some(i) => FlagMetadataValue::Int(i),
                None => FlagMetadataValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            other => {
                return Err(Error::invalid(
                    format!("{path}/{}", escape(name)),
                    format!(
                        "metadata values are booleans, strings or numbers, not {}",
                        describe(other)
                    ),
                ));
            }
        };
        metadata.add_value(name.clone(), entry);
    }
    Ok((!object.is_empty()).then_some(metadata))
}

/// Replaces every `{"$ref": "NAME"}` in `rule` by the evaluator of that name, recursively, and
/// records the names it looked up.
fn resolve_refs<'e>(
    rule: &mut Map<String, Value>,
    path: &str,
    evaluator: &dyn Fn(&str) -> Option<&'e Value>,
    refs: &mut BTreeSet<String>,
    stack: &mut Vec<String>,
) -> Result<()> {
    for (member, value) in rule.iter_mut() {
        resolve_value(
            value,
            &format!("{path}/{}", escape(member)),
            evaluator,
            refs,
            stack,
        )?;
    }
    Ok(())
}

fn resolve_value<'e>(
    value: &mut Value,
    path: &str,
    evaluator: &dyn Fn(&str) -> Option<&'e Value>,
    refs: &mut BTreeSet<String>,
    stack: &mut Vec<String>,
) -> Result<()> {
    match value {
        Value::Object(object) if object.len() == 1 && object.contains_key("$ref") => {
            let Some(Value::String(name)) = object.get("$ref") else {
                return Err(Error::invalid(
                    format!("{path}/$ref"),
                    "must be the name of an evaluator",
                ));
            };
            let name = name.clone();
            refs.insert(name.clone());
            if stack.contains(&name) {
                return Err(Error::invalid(
                    format!("{path}/$ref"),
                    format!(
                        "evaluator {name:?} refers to itself (through {})",
                        stack.join(" -> ")
                    ),
                ));
            }
            let mut replacement = evaluator(&name).cloned().ok_or_else(|| {
                Error::invalid(
                    format!("{path}/$ref"),
                    format!("there is no evaluator {name:?} in $evaluators"),
                )
            })?;
            stack.push(name);
            resolve_value(&mut replacement, path, evaluator, refs, stack)?;
            stack.pop();
            *value = replacement;
            Ok(())
        }
        Value::Object(object) => resolve_refs(object, path, evaluator, refs, stack),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_value(item, &format!("{path}/{i}"), evaluator, refs, stack)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The operators flagd's targeting rules may use: JSONLogic's, and flagd's custom operations.
const OPERATORS: &[&str] = &[
    "var",
    "missing",
    "missing_some",
    "if",
    "?:",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "or",
    "and",
    ">",
    ">=",
    "<",
    "<=",
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "%",
    "map",
    "reduce",
    "filter",
    "all",
    "none",
    "some",
    "merge",
    "in",
    "cat",
    "substr",
    "fractional",
    "sem_ver",
    "starts_with",
    "ends_with",
];

/// Refuses operators flagd does not know (the engine would only fail when it reaches them).
fn check_operators(rule: &Value, path: &str) -> Result<()> {
    match rule {
        Value::Object(object) if object.len() == 1 => {
            let (operator, args) = object.iter().next().expect("one member");
            let here = format!("{path}/{}", escape(operator));
            if !OPERATORS.contains(&operator.as_str()) {
                return Err(Error::invalid(
                    here,
                    format!(
                        "unknown operator {operator:?} (flagd supports JSONLogic's operators and fractional, sem_ver, starts_with, ends_with)"
                    ),
                ));
            }
            check_operators(args, &here)
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_operators(item, &format!("{path}/{i}"))),
        _ => Ok(()),
    }
}

fn compile(engine: &Engine, rule: &Value, path: &str) -> Result<Logic> {
    let text = serde_json::to_string(rule).map_err(|e| Error::invalid(path, e.to_string()))?;
    engine
        .compile(text.as_str())
        .map_err(|e| Error::invalid(path, format!("not valid JSONLogic: {e}")))
}

/// Checks a shared evaluator (an entry of `$evaluators`).
pub(crate) fn check_evaluator(name: &str, logic: &Value, path: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(path, "an evaluator name cannot be empty"));
    }
    if !logic.is_object() {
        return Err(Error::invalid(
            path,
            format!(
                "an evaluator is a JSONLogic object, not {}",
                describe(logic)
            ),
        ));
    }
    Ok(())
}

fn to_struct(map: &Map<String, Value>) -> StructValue {
    StructValue {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), to_of_value(v)))
            .collect(),
    }
}

/// A JSON value as an OpenFeature value (`null` becomes an empty string: OpenFeature has no
/// null).
pub(crate) fn to_of_value(value: &Value) -> OfValue {
    match value {
        Value::Null => OfValue::String(String::new()),
        Value::Bool(b) => OfValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => OfValue::Int(i),
            None => OfValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => OfValue::String(s.clone()),
        Value::Array(items) => OfValue::Array(items.iter().map(to_of_value).collect()),
        Value::Object(map) => OfValue::Struct(to_struct(map)),
    }
}

pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}
