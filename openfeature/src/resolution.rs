//! The outcome of evaluating one flag, and its two presentations: the full [`Resolution`] (with
//! the caller's default value) and OpenFeature's `ResolutionDetails`.

use std::sync::Arc;

use open_feature::provider::ResolutionDetails;
use open_feature::{
    EvaluationError, EvaluationErrorCode, EvaluationReason, EvaluationResult, FlagMetadata,
    StructValue,
};
use serde_json::Value;

use crate::cache::Compiled;

/// The result of resolving a flag with [`FlagStore::resolve`](crate::FlagStore::resolve), as
/// the OpenFeature specification describes it (value, variant, reason, error code, flag
/// metadata).
///
/// | outcome | `value` | `variant` | `reason` | `error` |
/// | --- | --- | --- | --- | --- |
/// | no targeting, `defaultVariant` set | that variant's value | its name | `STATIC` | — |
/// | targeting picked a variant | that variant's value | its name | `TARGETING_MATCH` | — |
/// | targeting returned `null` | the default variant's value | its name | `DEFAULT` | — |
/// | no default variant applies (`defaultVariant` null or absent) | the caller's default | — | `DEFAULT` | — |
/// | `state: DISABLED` | the caller's default | — | `DISABLED` | — |
/// | no such flag | the caller's default | — | `ERROR` | `FLAG_NOT_FOUND` |
/// | stored definition invalid, or targeting failed | the caller's default | — | `ERROR` | `PARSE_ERROR` |
/// | variant of another type than asked | the caller's default | — | `ERROR` | `TYPE_MISMATCH` |
/// | targeting named a variant the flag lacks | the caller's default | — | `ERROR` | `GENERAL` |
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Resolution<T> {
    /// The resolved value.
    pub value: T,
    /// The variant's name, when a variant was chosen.
    pub variant: Option<String>,
    /// Why this value.
    pub reason: EvaluationReason,
    /// The error, when `reason` is `ERROR`.
    pub error: Option<EvaluationError>,
    /// The flag's `metadata` (empty when it has none or could not be parsed).
    pub flag_metadata: FlagMetadata,
}

mod sealed {
    use open_feature::StructValue;
    use serde_json::Value;

    pub trait Sealed: Sized {
        fn convert(value: &Value, structure: Option<&StructValue>) -> Option<Self>;
    }
}

/// The value types a flag resolves to: `bool`, `i64`, `f64`, `String` and
/// [`StructValue`](open_feature::StructValue) (object variants). An integer variant also
/// resolves as `f64`; any other pairing is a `TYPE_MISMATCH`.
pub trait FlagType: sealed::Sealed {}

impl sealed::Sealed for bool {
    fn convert(value: &Value, _: Option<&StructValue>) -> Option<Self> {
        value.as_bool()
    }
}
impl FlagType for bool {}

impl sealed::Sealed for i64 {
    fn convert(value: &Value, _: Option<&StructValue>) -> Option<Self> {
        value.as_i64()
    }
}
impl FlagType for i64 {}

impl sealed::Sealed for f64 {
    fn convert(value: &Value, _: Option<&StructValue>) -> Option<Self> {
        value.as_f64()
    }
}
impl FlagType for f64 {}

impl sealed::Sealed for String {
    fn convert(value: &Value, _: Option<&StructValue>) -> Option<Self> {
        value.as_str().map(str::to_owned)
    }
}
impl FlagType for String {}

impl sealed::Sealed for StructValue {
    fn convert(_: &Value, structure: Option<&StructValue>) -> Option<Self> {
        structure.cloned()
    }
}
impl FlagType for StructValue {}

/// What evaluating a flag came to, before it is converted to the requested type.
pub(crate) enum Outcome {
    /// A variant of the flag, with the reason it was chosen.
    Variant {
        flag: Arc<Compiled>,
        index: usize,
        reason: EvaluationReason,
    },
    /// The caller's default applies (disabled flag, or no default variant).
    CallerDefault {
        flag: Arc<Compiled>,
        reason: EvaluationReason,
    },
    /// The evaluation failed.
    Error {
        code: EvaluationErrorCode,
        message: String,
    },
}

fn error(code: EvaluationErrorCode, message: String) -> EvaluationError {
    EvaluationError {
        code,
        message: Some(message),
    }
}

fn mismatch<T>(key: &str, value: &Value) -> EvaluationError {
    error(
        EvaluationErrorCode::TypeMismatch,
        format!(
            "flag {key:?} has {} variants, not {}",
            kind(value),
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("?")
        ),
    )
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::Null => "null",
    }
}

impl Outcome {
    /// The full resolution, with `default` where the specification says the caller's default.
    pub(crate) fn into_resolution<T: FlagType>(self, key: &str, default: T) -> Resolution<T> {
        match self {
            Outcome::Variant {
                flag,
                index,
                reason,
            } => {
                let parsed = flag.parsed().expect("a variant comes from a parsed flag");
                let variant = &parsed.variants[index];
                let metadata = parsed.metadata.clone().unwrap_or_default();
                match T::convert(&variant.value, variant.structure.as_ref()) {
                    Some(value) => Resolution {
                        value,
                        variant: Some(variant.name.clone()),
                        reason,
                        error: None,
                        flag_metadata: metadata,
                    },
                    None => Resolution {
                        value: default,
                        variant: None,
                        reason: EvaluationReason::Error,
                        error: Some(mismatch::<T>(key, &variant.value)),
                        flag_metadata: metadata,
                    },
                }
            }
            Outcome::CallerDefault { flag, reason } => Resolution {
                value: default,
                variant: None,
                reason,
                error: None,
                flag_metadata: flag
                    .parsed()
                    .and_then(|p| p.metadata.clone())
                    .unwrap_or_default(),
            },
            Outcome::Error { code, message } => Resolution {
                value: default,
                variant: None,
                reason: EvaluationReason::Error,
                error: Some(error(code, message)),
                flag_metadata: FlagMetadata::default(),
            },
        }
    }

    /// OpenFeature's provider answer. open-feature 0.3 does not pass the caller's default to a
    /// provider, so where the specification says "the caller's default" (a disabled flag, no
    /// default variant) this is an error with code `General("DISABLED")` or
    /// `General("DEFAULT")`: `client.get_bool_value(..).unwrap_or(default)` then yields the
    /// caller's default, as flagd specifies.
    pub(crate) fn into_details<T: FlagType>(
        self,
        key: &str,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        match self {
            Outcome::Variant {
                flag,
                index,
                reason,
            } => {
                let parsed = flag.parsed().expect("a variant comes from a parsed flag");
                let variant = &parsed.variants[index];
                let value = T::convert(&variant.value, variant.structure.as_ref())
                    .ok_or_else(|| mismatch::<T>(key, &variant.value))?;
                Ok(ResolutionDetails {
                    value,
                    variant: Some(variant.name.clone()),
                    reason: Some(reason),
                    flag_metadata: parsed.metadata.clone(),
                })
            }
            Outcome::CallerDefault { reason, .. } => {
                let (code, why) = if reason == EvaluationReason::Disabled {
                    ("DISABLED", "is disabled")
                } else {
                    ("DEFAULT", "has no default variant and no targeting match")
                };
                Err(error(
                    EvaluationErrorCode::General(code.into()),
                    format!("flag {key:?} {why}: the caller's default value applies"),
                ))
            }
            Outcome::Error { code, message } => Err(error(code, message)),
        }
    }
}
