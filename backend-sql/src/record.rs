//! The version record (one row of `{prefix}_versions` per dictionary) as read, and the checks
//! that decide whether it can be trusted.
//!
//! Columns are read loosely ([`Field`]), because a hand-edited row may hold anything: SQLite's
//! dynamic typing lets text or a REAL into an INTEGER column, and any database lets a negative or
//! absurd counter in. [`RawRecord::check`] then says whether the row is a valid stamped record,
//! a record written before stamps existed, or damaged (and why).

use durable_core::Version;

/// Counters stay below 2^53 - 1 (so that a bump stays below 2^53, the range every client of the
/// store, JavaScript included, reads exactly); a counter at or beyond it is damage.
pub(crate) const COUNTER_LIMIT: i64 = (1 << 53) - 1;

/// One column of a version row as read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field {
    /// An integer.
    Int(i64),
    /// SQL `NULL`.
    Null,
    /// Something else (text, a real number), described for messages.
    Other(String),
}

impl Field {
    /// The value as a person would read it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Field::Int(v) => v.to_string(),
            Field::Null => "NULL".to_owned(),
            Field::Other(what) => what.clone(),
        }
    }
}

/// A version row's columns, as read by `select_version`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawRecord {
    pub(crate) epoch: Field,
    pub(crate) counter: Field,
    pub(crate) stamp: Field,
    pub(crate) parent: Field,
    pub(crate) oldest_served: Field,
}

/// A version record that can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The current token (epoch and stamp as stored bits, reinterpreted as u64).
    pub(crate) version: Version,
    /// Tokens below this counter get a full reload (tombstones were trimmed).
    pub(crate) oldest_served: u64,
}

/// What a version row is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// A valid stamped record.
    Valid(Stored),
    /// A record written before stamps existed (no stamp, or stamp 0), otherwise valid: it gets a
    /// fresh epoch and stamp, as after a wipe, so every handle reloads once.
    Unstamped,
    /// A damaged record: what is wrong with it.
    Damaged(String),
}

impl RawRecord {
    /// Checks the row. The SQL of a write's bump (`Sql::bump`) accepts exactly the rows this
    /// calls [`Record::Valid`].
    pub(crate) fn check(&self) -> Record {
        let int = |field: &Field, name: &str| match field {
            Field::Int(v) => Ok(*v),
            Field::Null => Err(format!("{name} is NULL")),
            Field::Other(what) => Err(format!("{name} is not an integer: {what}")),
        };
        let checked = (|| {
            let epoch = int(&self.epoch, "epoch")?;
            let counter = int(&self.counter, "counter")?;
            if counter < 0 {
                return Err(format!("counter {counter} is negative"));
            }
            if counter >= COUNTER_LIMIT {
                return Err(format!("counter {counter} is not below 2^53 - 1"));
            }
            let parent = int(&self.parent, "parent")?;
            let oldest_served = int(&self.oldest_served, "oldest_served")?;
            let stamp = match &self.stamp {
                Field::Int(0) | Field::Null => None,
                Field::Int(stamp) => Some(*stamp),
                Field::Other(_) => Some(int(&self.stamp, "stamp")?),
            };
            Ok((epoch, counter, stamp, parent, oldest_served))
        })();
        match checked {
            Err(reason) => Record::Damaged(reason),
            Ok((_, _, None, _, _)) => Record::Unstamped,
            Ok((epoch, counter, Some(stamp), parent, oldest_served)) => Record::Valid(Stored {
                version: Version::stamped(
                    epoch as u64,
                    counter as u64,
                    stamp as u64,
                    parent as u64,
                ),
                oldest_served: u64::try_from(oldest_served).unwrap_or(0),
            }),
        }
    }

    /// The row as a person would read it, for messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "epoch {}, counter {}, stamp {}, parent {}, oldest_served {}",
            self.epoch.describe(),
            self.counter.describe(),
            self.stamp.describe(),
            self.parent.describe(),
            self.oldest_served.describe()
        )
    }
}

/// An entry's key that cannot be read as a key: as far as it can be read (lossy UTF-8, or the
/// value as text), and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadKey {
    pub(crate) lossy: String,
    pub(crate) what: String,
}

impl BadKey {
    /// A key stored as `bytes` in a column of type `type_name`: text that is not UTF-8, or
    /// bytes (a BLOB) where text belongs.
    pub(crate) fn from_bytes(bytes: &[u8], type_name: &str) -> BadKey {
        match std::str::from_utf8(bytes) {
            Ok(text) => BadKey {
                lossy: text.to_owned(),
                what: format!("the key is stored as {type_name}, not as text"),
            },
            Err(_) => BadKey {
                lossy: String::from_utf8_lossy(bytes).into_owned(),
                what: format!("the key is not UTF-8: b\"{}\"", bytes.escape_ascii()),
            },
        }
    }
}

/// The reason of an [`Error::Damaged`](durable_core::Error::Damaged) or an
/// [`Unreadable`](durable_core::Unreadable) row: which row, what is wrong.
pub(crate) fn damage_reason(table: &str, namespace: &str, dictionary: &str, what: &str) -> String {
    format!("{table} row of namespace {namespace:?}, dictionary {dictionary:?}: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(counter: Field, stamp: Field) -> RawRecord {
        RawRecord {
            epoch: Field::Int(-7),
            counter,
            stamp,
            parent: Field::Int(3),
            oldest_served: Field::Int(0),
        }
    }

    #[test]
    fn a_valid_record_gives_its_stamped_token_with_u64_bits() {
        let record = raw(Field::Int(12), Field::Int(-1)).check();
        let Record::Valid(stored) = record else {
            panic!("{record:?}");
        };
        assert_eq!(stored.version.epoch(), (-7i64) as u64);
        assert_eq!(stored.version.counter(), 12);
        assert_eq!(stored.version.stamp(), u64::MAX);
        assert_eq!(stored.version.parent(), 3);
    }

    #[test]
    fn a_record_without_stamp_is_unstamped() {
        assert_eq!(raw(Field::Int(12), Field::Null).check(), Record::Unstamped);
        assert_eq!(
            raw(Field::Int(12), Field::Int(0)).check(),
            Record::Unstamped
        );
    }

    #[test]
    fn bad_keys_are_read_as_far_as_they_can_be() {
        let blob = BadKey::from_bytes(b"victim", "BLOB");
        assert_eq!(blob.lossy, "victim");
        assert!(blob.what.contains("stored as BLOB"), "{}", blob.what);
        let bytes = BadKey::from_bytes(b"k\xff\xfe", "TEXT");
        assert_eq!(bytes.lossy, "k\u{fffd}\u{fffd}");
        assert!(bytes.what.contains(r"k\xff\xfe"), "{}", bytes.what);
    }

    #[test]
    fn damage_is_named() {
        let damaged = |record: RawRecord| match record.check() {
            Record::Damaged(reason) => reason,
            other => panic!("{other:?}"),
        };
        assert!(damaged(raw(Field::Null, Field::Int(1))).contains("counter is NULL"));
        assert!(damaged(raw(Field::Int(-5), Field::Int(1))).contains("negative"));
        assert!(damaged(raw(Field::Int(1 << 53), Field::Int(1))).contains("not below"));
        assert!(damaged(raw(Field::Int(COUNTER_LIMIT), Field::Int(1))).contains("not below"));
        let text = Field::Other("\"garbage\"".to_owned());
        assert!(damaged(raw(text.clone(), Field::Int(1))).contains("counter is not an integer"));
        assert!(damaged(raw(Field::Int(1), text.clone())).contains("stamp is not an integer"));
        let mut bad_epoch = raw(Field::Int(1), Field::Int(1));
        bad_epoch.epoch = text;
        assert!(damaged(bad_epoch).contains("epoch is not an integer"));
        // Damage wins over a missing stamp.
        assert!(damaged(raw(Field::Int(-1), Field::Null)).contains("negative"));
    }
}
