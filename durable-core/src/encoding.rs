//! How values become bytes in the store: [`Json`], [`Bincode`], [`Raw`], or your own.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The error type encodings return; the engine wraps it into
/// [`Error::Encode`](crate::Error::Encode) or [`Error::Decode`](crate::Error::Decode) with the
/// key and the backend.
pub type EncodingError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Turns values of type `V` into stored bytes and back.
///
/// Implement it to store values your own way (compressed, encrypted, a schema registry...).
/// Decoding must never panic on hostile input: stored bytes can be written by anyone with access
/// to the store.
pub trait Encoding<V>: Send + Sync + 'static {
    /// A short name for error messages, e.g. `json`.
    fn name(&self) -> &'static str;

    /// Encodes `value`.
    fn encode(&self, value: &V) -> Result<Bytes, EncodingError>;

    /// Decodes stored bytes.
    fn decode(&self, bytes: &[u8]) -> Result<V, EncodingError>;

    /// True if this encoding writes an `i64` as its ASCII decimal text (as JSON does), so that a
    /// store's native atomic increment produces a value this encoding reads back. Increments then
    /// take one round trip; otherwise they use a compare-and-swap loop.
    fn integers_are_decimal_text(&self) -> bool {
        false
    }
}

/// JSON through `serde_json`: readable in any tool, interoperable with other languages (Python
/// `json.dumps` / `json.loads`). The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<V: Serialize + DeserializeOwned> Encoding<V> for Json {
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode(&self, value: &V) -> Result<Bytes, EncodingError> {
        Ok(serde_json::to_vec(value)?.into())
    }

    fn decode(&self, bytes: &[u8]) -> Result<V, EncodingError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    fn integers_are_decimal_text(&self) -> bool {
        true
    }
}

/// Compact binary through bincode 2 (serde mode, standard configuration).
///
/// Decoding is bounded: a value may claim at most [`Bincode::DECODE_LIMIT`] bytes of memory, so
/// a hostile stored value cannot make the process allocate without limit, and trailing bytes are
/// rejected.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl Bincode {
    /// The most memory one decoded value may claim: 64 MiB.
    pub const DECODE_LIMIT: usize = 64 << 20;
}

#[derive(Debug, thiserror::Error)]
#[error("{0} trailing bytes after the value")]
struct TrailingBytes(usize);

impl<V: Serialize + DeserializeOwned> Encoding<V> for Bincode {
    fn name(&self) -> &'static str {
        "bincode"
    }

    fn encode(&self, value: &V) -> Result<Bytes, EncodingError> {
        Ok(bincode::serde::encode_to_vec(value, bincode::config::standard())?.into())
    }

    fn decode(&self, bytes: &[u8]) -> Result<V, EncodingError> {
        let config = bincode::config::standard().with_limit::<{ Bincode::DECODE_LIMIT }>();
        let (value, used) = bincode::serde::decode_from_slice(bytes, config)?;
        if used != bytes.len() {
            return Err(Box::new(TrailingBytes(bytes.len() - used)));
        }
        Ok(value)
    }
}

/// No encoding: the value's bytes are stored as they are. For `Vec<u8>`, [`Bytes`] and `String`
/// (which must hold UTF-8 when read back).
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Encoding<Vec<u8>> for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn encode(&self, value: &Vec<u8>) -> Result<Bytes, EncodingError> {
        Ok(Bytes::copy_from_slice(value))
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, EncodingError> {
        Ok(bytes.to_vec())
    }

    fn integers_are_decimal_text(&self) -> bool {
        true
    }
}

impl Encoding<Bytes> for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn encode(&self, value: &Bytes) -> Result<Bytes, EncodingError> {
        Ok(value.clone())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Bytes, EncodingError> {
        Ok(Bytes::copy_from_slice(bytes))
    }

    fn integers_are_decimal_text(&self) -> bool {
        true
    }
}

impl Encoding<String> for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn encode(&self, value: &String) -> Result<Bytes, EncodingError> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }

    fn decode(&self, bytes: &[u8]) -> Result<String, EncodingError> {
        Ok(String::from_utf8(bytes.to_vec())?)
    }

    fn integers_are_decimal_text(&self) -> bool {
        true
    }
}

/// Raw integers are their decimal text, as stores' native increments write them.
impl Encoding<i64> for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn encode(&self, value: &i64) -> Result<Bytes, EncodingError> {
        Ok(Bytes::from(value.to_string()))
    }

    fn decode(&self, bytes: &[u8]) -> Result<i64, EncodingError> {
        crate::types::parse_counter(bytes).ok_or_else(|| "not a decimal i64".into())
    }

    fn integers_are_decimal_text(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bincode_rejects_trailing_bytes_and_huge_claims() {
        let mut bytes = Encoding::<u32>::encode(&Bincode, &7).unwrap().to_vec();
        bytes.push(0);
        assert!(Encoding::<u32>::decode(&Bincode, &bytes).is_err());
        // A string claiming u64::MAX bytes.
        let hostile = [0xFFu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, b'a'];
        assert!(Encoding::<String>::decode(&Bincode, &hostile).is_err());
    }

    #[test]
    fn json_integers_are_decimal_text() {
        let bytes = Encoding::<i64>::encode(&Json, &-42).unwrap();
        assert_eq!(&bytes[..], b"-42");
        assert_eq!(Encoding::<i64>::decode(&Json, b"17").unwrap(), 17);
    }

    #[test]
    fn raw_string_requires_utf8() {
        assert!(Encoding::<String>::decode(&Raw, &[0xff, 0xfe]).is_err());
        assert_eq!(
            Encoding::<String>::decode(&Raw, "é".as_bytes()).unwrap(),
            "é"
        );
    }
}
