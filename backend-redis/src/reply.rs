//! Reading replies (`redis::Value`) without copying values twice, and showing stored bytes in
//! messages.

use bytes::Bytes;
use durable_core::{Error, Operation, Version};
use redis::Value;

use crate::error::bad_reply;

/// A cursor over the items of an array reply.
pub(crate) struct Reply {
    items: std::vec::IntoIter<Value>,
    operation: Operation,
}

impl Reply {
    pub(crate) fn new(value: Value, operation: Operation) -> Result<Self, Error> {
        match value {
            Value::Array(items) | Value::Set(items) => Ok(Reply {
                items: items.into_iter(),
                operation,
            }),
            other => Err(bad_reply(
                operation,
                format!("expected an array, got {other:?}"),
            )),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The next item as it came.
    pub(crate) fn next_value(&mut self) -> Option<Value> {
        self.items.next()
    }

    fn next(&mut self) -> Result<Value, Error> {
        self.items
            .next()
            .ok_or_else(|| bad_reply(self.operation, "reply is too short"))
    }

    /// An item that may be nil.
    pub(crate) fn opt_bytes(&mut self) -> Result<Option<Bytes>, Error> {
        let value = self.next()?;
        self.to_bytes(value)
    }

    fn to_bytes(&self, value: Value) -> Result<Option<Bytes>, Error> {
        match value {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(Bytes::from(b))),
            Value::SimpleString(s) => Ok(Some(Bytes::from(s))),
            Value::Okay => Ok(Some(Bytes::from_static(b"OK"))),
            Value::Int(i) => Ok(Some(Bytes::from(i.to_string()))),
            // RESP3 sends sorted set scores as doubles.
            Value::Double(d) => Ok(Some(Bytes::from(d.to_string()))),
            Value::Boolean(false) => Ok(None),
            other => Err(bad_reply(
                self.operation,
                format!("expected a string, got {other:?}"),
            )),
        }
    }

    pub(crate) fn bytes(&mut self) -> Result<Bytes, Error> {
        self.opt_bytes()?
            .ok_or_else(|| bad_reply(self.operation, "unexpected nil"))
    }

    pub(crate) fn string(&mut self) -> Result<String, Error> {
        let bytes = match self.next()? {
            // Reuse the reply's buffer instead of copying it.
            Value::BulkString(b) => b,
            Value::SimpleString(s) => return Ok(s),
            other => self
                .to_bytes(other)?
                .ok_or_else(|| bad_reply(self.operation, "unexpected nil"))?
                .to_vec(),
        };
        String::from_utf8(bytes).map_err(|_| bad_reply(self.operation, "key is not UTF-8"))
    }

    /// A key (hash field or sorted set member): `Err` with its bytes when it is not UTF-8.
    pub(crate) fn key(&mut self) -> Result<Result<String, Vec<u8>>, Error> {
        let bytes = match self.next()? {
            Value::BulkString(b) => b,
            Value::SimpleString(s) => return Ok(Ok(s)),
            other => self
                .to_bytes(other)?
                .ok_or_else(|| bad_reply(self.operation, "unexpected nil"))?
                .to_vec(),
        };
        Ok(String::from_utf8(bytes).map_err(|e| e.into_bytes()))
    }

    /// A sorted set member and its score as sent (decimal text, or in float notation), two
    /// items (RESP2) or one pair (RESP3).
    pub(crate) fn member_score(&mut self) -> Result<(Vec<u8>, Bytes), Error> {
        if let Some(Value::Array(_)) = self.items.as_slice().first() {
            let Some(pair) = self.items.next() else {
                unreachable!("checked above")
            };
            let mut pair = Reply::new(pair, self.operation)?;
            return pair.member_score();
        }
        let member = match self.next()? {
            Value::BulkString(b) => b,
            other => {
                return Err(bad_reply(
                    self.operation,
                    format!("expected a member, got {other:?}"),
                ));
            }
        };
        Ok((member, self.bytes()?))
    }

    /// An integer, sent as an integer reply or as decimal text (scores, hash fields).
    pub(crate) fn int(&mut self) -> Result<i64, Error> {
        match self.next()? {
            Value::Int(i) => Ok(i),
            Value::BulkString(b) => parse_int(&b, self.operation),
            Value::SimpleString(s) => parse_int(s.as_bytes(), self.operation),
            Value::Double(d) if d.fract() == 0.0 => Ok(d as i64),
            other => Err(bad_reply(
                self.operation,
                format!("expected an integer, got {other:?}"),
            )),
        }
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        let i = self.int()?;
        u64::try_from(i).map_err(|_| bad_reply(self.operation, format!("negative counter {i}")))
    }

    /// A version token sent as (epoch text, counter, stamp text, parent text).
    pub(crate) fn version(&mut self) -> Result<Version, Error> {
        let epoch = self.decimal("epoch")?;
        let counter = self.u64()?;
        let stamp = self.decimal("stamp")?;
        let parent = self.decimal("parent")?;
        Ok(Version::stamped(epoch, counter, stamp, parent))
    }

    /// A 64-bit unsigned integer sent as decimal text (epochs and stamps, which Lua keeps as
    /// text because its numbers are doubles).
    fn decimal(&mut self, what: &str) -> Result<u64, Error> {
        let text = self.bytes()?;
        std::str::from_utf8(&text)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                bad_reply(
                    self.operation,
                    format!("the token's {what} is not a number"),
                )
            })
    }
}

/// Stored bytes for a message: at most 64 bytes, escaped where they are not printable ASCII.
pub(crate) fn shown(bytes: &[u8]) -> String {
    let mut text = bytes[..bytes.len().min(64)].escape_ascii().to_string();
    if bytes.len() > 64 {
        text.push_str("...");
    }
    text
}

fn parse_int(b: &[u8], operation: Operation) -> Result<i64, Error> {
    let s = std::str::from_utf8(b).map_err(|_| bad_reply(operation, "integer is not text"))?;
    if let Ok(i) = s.parse::<i64>() {
        return Ok(i);
    }
    // Sorted set scores may come back as "5" or, rarely, in float notation.
    match s.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(bad_reply(operation, format!("{s:?} is not an integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_bytes_are_escaped_and_short() {
        assert_eq!(shown(b"bad\xffkey"), "bad\\xffkey");
        assert_eq!(shown(&[b'a'; 100]).len(), 67);
    }
}
