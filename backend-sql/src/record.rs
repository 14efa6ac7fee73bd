//! The version record (one row of `{prefix}_versions` per dictionary) as read, and the checks
//! that decide whether it can be trusted.
//!
//! Columns are read loosely ([`Field`]), because a hand-edited row may hold anything: SQLite's
//! dynamic typing lets text or a REAL into an INTEGER column, and any database lets a negative or
//! absurd counter in. [`RawRecord::check`] then says whether the row is a valid stamped record,
//! a record written before stamps existed, or damaged (and why). Entry rows are read as loosely
//! ([`loose_key`]), so that a row another program wrote costs its key only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durable_core::{StoreTime, Version};

use crate::dialect::Cells;

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

/// Column `i` of `row`, read loosely: a hand-edited row may hold anything (SQLite lets text
/// and real numbers into INTEGER columns).
pub(crate) fn field(row: &impl Cells, i: usize) -> Field {
    match row.maybe_int(i) {
        Ok(Some(value)) => Field::Int(value),
        Ok(None) => Field::Null,
        Err(_) => Field::Other(match row.text(i) {
            Ok(text) => format!("{text:?}"),
            Err(_) => match row.real(i) {
                Ok(real) => real.to_string(),
                Err(_) => row.column_type(i).map_or_else(
                    |e| e.to_string(),
                    |(type_name, _)| format!("a value of type {type_name}"),
                ),
            },
        }),
    }
}

/// Column `i` of `row` as a person would read it, with its type (`INTEGER 12345`).
pub(crate) fn shown_with_type(row: &impl Cells, i: usize) -> String {
    let type_name = row
        .column_type(i)
        .map(|(type_name, _)| type_name)
        .unwrap_or_default();
    format!("{type_name} {}", field(row, i).describe())
}

/// The key in column `i` of `row`, read loosely: text (bytes that are UTF-8 where
/// `as_bytes`), or what it is instead.
pub(crate) fn loose_key(row: &impl Cells, i: usize, as_bytes: bool) -> Result<String, BadKey> {
    let type_name = match row.column_type(i) {
        Ok((_, true)) => {
            return Err(BadKey {
                lossy: String::new(),
                what: "the key is NULL".to_owned(),
            });
        }
        Ok((type_name, false)) => type_name,
        Err(e) => {
            return Err(BadKey {
                lossy: String::new(),
                what: format!("the key cannot be read: {e}"),
            });
        }
    };
    if !as_bytes && let Ok(key) = row.text(i) {
        return Ok(key);
    }
    match row.bytes(i) {
        Ok(bytes) if as_bytes => {
            String::from_utf8(bytes).map_err(|e| BadKey::from_bytes(e.as_bytes(), &type_name))
        }
        Ok(bytes) => Err(BadKey::from_bytes(&bytes, &type_name)),
        Err(_) => {
            let shown = field(row, i).describe();
            Err(BadKey {
                what: format!("the key is {type_name} {shown}, not text"),
                lossy: shown,
            })
        }
    }
}

/// Whether an entry row is a tombstone (column `i`); `None` if that cannot be read.
pub(crate) fn tombstone(row: &impl Cells, i: usize) -> Option<bool> {
    match row.flag(i) {
        Ok(tombstone) => Some(tombstone),
        Err(_) => match field(row, i) {
            Field::Int(0) => Some(false),
            Field::Int(1) => Some(true),
            _ => None,
        },
    }
}

/// Milliseconds since the Unix epoch on this process's clock, for tombstone ages (expiry times
/// come from the database's clock instead).
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// `duration` in whole milliseconds, as stored (saturating).
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A stored time (milliseconds since the Unix epoch on the database's clock) as a [`StoreTime`].
pub(crate) fn store_time(millis: i64) -> StoreTime {
    StoreTime(u64::try_from(millis).unwrap_or(0))
}

/// A fresh random epoch, never 0, as stored (a BIGINT holding the u64's bits).
pub(crate) fn fresh_epoch() -> i64 {
    loop {
        let epoch: u64 = rand::random();
        if epoch != 0 {
            return epoch as i64;
        }
    }
}

/// A fresh random stamp for a write ([`Version::new_stamp`], never 0), as stored: the u64's
/// bits in a signed BIGINT.
pub(crate) fn fresh_stamp() -> i64 {
    Version::new_stamp() as i64
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
    /// A version row from its first five columns (see `Sql::select_version`).
    pub(crate) fn read(row: &impl Cells) -> RawRecord {
        RawRecord {
            epoch: field(row, 0),
            counter: field(row, 1),
            stamp: field(row, 2),
            parent: field(row, 3),
            oldest_served: field(row, 4),
        }
    }

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
