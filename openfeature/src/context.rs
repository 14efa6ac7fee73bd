//! The OpenFeature evaluation context as the data a targeting rule reads, built directly in the
//! evaluation's arena (strings are borrowed, not copied).

use datalogic_rs::DataValue;
use datalogic_rs::bumpalo::Bump;
use open_feature::{EvaluationContext, EvaluationContextFieldValue, StructValue, Value as OfValue};
use serde_json::Value;

/// The data object of one evaluation, as flagd builds it: the context's custom fields at the top
/// level, `targetingKey`, and `$flagd` with `flagKey` and `timestamp` (Unix seconds).
///
/// Custom fields of type `DateTime` become Unix seconds (a number, comparable with
/// `$flagd.timestamp`). `Struct` fields holding an [`open_feature::StructValue`], an
/// [`open_feature::Value`] or a [`serde_json::Value`] become objects; any other struct type is
/// `null`.
pub(crate) fn data<'a>(
    ctx: &'a EvaluationContext,
    flag_key: &'a str,
    now: u64,
    arena: &'a Bump,
) -> DataValue<'a> {
    let flagd = arena.alloc_slice_copy(&[
        ("flagKey", DataValue::String(flag_key)),
        (
            "timestamp",
            DataValue::from_i64(i64::try_from(now).unwrap_or(i64::MAX)),
        ),
    ]);
    let extra = 1 + usize::from(ctx.targeting_key.is_some());
    let mut pairs = datalogic_rs::bumpalo::collections::Vec::with_capacity_in(
        ctx.custom_fields.len() + extra,
        arena,
    );
    for (key, value) in &ctx.custom_fields {
        if key == "targetingKey" && ctx.targeting_key.is_some() {
            continue;
        }
        pairs.push((key.as_str(), field(value, arena)));
    }
    if let Some(key) = &ctx.targeting_key {
        pairs.push(("targetingKey", DataValue::String(key)));
    }
    pairs.push(("$flagd", DataValue::Object(flagd)));
    DataValue::Object(pairs.into_bump_slice())
}

fn field<'a>(value: &'a EvaluationContextFieldValue, arena: &'a Bump) -> DataValue<'a> {
    match value {
        EvaluationContextFieldValue::Bool(b) => DataValue::Bool(*b),
        EvaluationContextFieldValue::Int(i) => DataValue::from_i64(*i),
        EvaluationContextFieldValue::Float(f) => DataValue::from_f64(*f),
        EvaluationContextFieldValue::String(s) => DataValue::String(s),
        EvaluationContextFieldValue::DateTime(t) => DataValue::from_i64(t.unix_timestamp()),
        EvaluationContextFieldValue::Struct(any) => {
            if let Some(s) = any.downcast_ref::<StructValue>() {
                structure(s, arena)
            } else if let Some(v) = any.downcast_ref::<OfValue>() {
                of_value(v, arena)
            } else if let Some(v) = any.downcast_ref::<Value>() {
                json(v, arena)
            } else {
                DataValue::Null
            }
        }
    }
}

fn structure<'a>(s: &'a StructValue, arena: &'a Bump) -> DataValue<'a> {
    let pairs = arena.alloc_slice_fill_iter(
        s.fields
            .iter()
            .map(|(k, v)| (k.as_str(), of_value(v, arena))),
    );
    DataValue::Object(pairs)
}

fn of_value<'a>(value: &'a OfValue, arena: &'a Bump) -> DataValue<'a> {
    match value {
        OfValue::Bool(b) => DataValue::Bool(*b),
        OfValue::Int(i) => DataValue::from_i64(*i),
        OfValue::Float(f) => DataValue::from_f64(*f),
        OfValue::String(s) => DataValue::String(s),
        OfValue::Array(items) => {
            DataValue::Array(arena.alloc_slice_fill_iter(items.iter().map(|v| of_value(v, arena))))
        }
        OfValue::Struct(s) => structure(s, arena),
    }
}

fn json<'a>(value: &'a Value, arena: &'a Bump) -> DataValue<'a> {
    match value {
        Value::Null => DataValue::Null,
        Value::Bool(b) => DataValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => DataValue::from_i64(i),
            None => DataValue::from_f64(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => DataValue::String(s),
        Value::Array(items) => {
            DataValue::Array(arena.alloc_slice_fill_iter(items.iter().map(|v| json(v, arena))))
        }
        Value::Object(map) => DataValue::Object(
            arena.alloc_slice_fill_iter(map.iter().map(|(k, v)| (k.as_str(), json(v, arena)))),
        ),
    }
}
