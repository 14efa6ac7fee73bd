//! The version record (the dictionary znode's data) and the change-log node format.
//!
//! The record is one line of text, readable in `zkCli.sh get`:
//!
//! ```text
//! durable-zookeeper/1 epoch=<16 hex digits> counter=<decimal> stamp=<16 hex digits> parent=<16 hex digits>
//! ```
//!
//! A change-log node holds `stamp=<16 hex digits>`, a newline, then the encoded names of the keys
//! its write changed, joined by `/`.

use durable_core::Version;

/// The first word of every version record.
pub(crate) const TAG: &str = "durable-zookeeper/1";

/// Counters stay below 2^53, so that every store (and JSON) holds them exactly.
pub(crate) const MAX_COUNTER: u64 = 1 << 53;

/// The version record: the token of the dictionary's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) epoch: u64,
    pub(crate) counter: u64,
    pub(crate) stamp: u64,
    pub(crate) parent: u64,
}

impl Record {
    /// A record for a new or re-created dictionary: a fresh random epoch and stamp, `counter`
    /// (the highest revision still stored, so that revisions never repeat), no parent.
    pub(crate) fn fresh(counter: u64) -> Self {
        Record {
            epoch: Version::new_stamp(),
            counter,
            stamp: Version::new_stamp(),
            parent: 0,
        }
    }

    /// The record a write from this state stores: the next counter, a fresh stamp, this
    /// state's stamp as parent. `None` once the counter would reach [`MAX_COUNTER`].
    pub(crate) fn next(self) -> Option<Self> {
        let counter = self.counter.checked_add(1).filter(|c| *c < MAX_COUNTER)?;
        Some(Record {
            epoch: self.epoch,
            counter,
            stamp: Version::new_stamp(),
            parent: self.stamp,
        })
    }

    pub(crate) fn token(self) -> Version {
        Version::stamped(self.epoch, self.counter, self.stamp, self.parent)
    }

    pub(crate) fn encode(self) -> Vec<u8> {
        format!(
            "{TAG} epoch={:016x} counter={} stamp={:016x} parent={:016x}",
            self.epoch, self.counter, self.stamp, self.parent
        )
        .into_bytes()
    }

    /// Parses a record; the error says what is wrong with it.
    pub(crate) fn parse(data: &[u8]) -> Result<Self, String> {
        if data.is_empty() {
            return Err("the version record is missing (the znode has no data)".into());
        }
        let shown = || {
            let text = String::from_utf8_lossy(data);
            let short: String = text.chars().take(120).collect();
            format!("{short:?}")
        };
        let Ok(text) = std::str::from_utf8(data) else {
            return Err(format!("the version record is not text: {}", shown()));
        };
        let mut words = text.split_ascii_whitespace();
        if words.next() != Some(TAG) {
            return Err(format!(
                "the znode's data is not a version record (it should start with {TAG}): {}",
                shown()
            ));
        }
        let mut fields: [Option<&str>; 4] = [None; 4];
        const NAMES: [&str; 4] = ["epoch", "counter", "stamp", "parent"];
        for word in words {
            let Some((name, value)) = word.split_once('=') else {
                return Err(format!("the version record has a malformed field {word:?}"));
            };
            // Unknown fields are left for later versions of this format.
            if let Some(i) = NAMES.iter().position(|n| *n == name)
                && fields[i].replace(value).is_some()
            {
                return Err(format!("the version record has field {name} twice"));
            }
        }
        let field =
            |i: usize| fields[i].ok_or_else(|| format!("the version record has no {}", NAMES[i]));
        let hex = |i: usize| -> Result<u64, String> {
            let value = field(i)?;
            if value.is_empty() || value.len() > 16 || !value.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(format!(
                    "the {} of the version record, {value:?}, is not an integer (16 hex digits)",
                    NAMES[i]
                ));
            }
            Ok(u64::from_str_radix(value, 16).expect("checked hex digits"))
        };
        let epoch = hex(0)?;
        let counter = field(1)?;
        let counter = match counter.parse::<u64>() {
            Ok(c) if c < MAX_COUNTER => c,
            Ok(c) => {
                return Err(format!(
                    "the counter of the version record, {c}, is out of range (at least 2^53)"
                ));
            }
            Err(_) if counter.starts_with('-') && counter[1..].parse::<u64>().is_ok() => {
                return Err(format!(
                    "the counter of the version record, {counter}, is negative"
                ));
            }
            Err(_) if !counter.is_empty() && counter.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!(
                    "the counter of the version record, {counter}, is out of range (at least 2^53)"
                ));
            }
            Err(_) => {
                return Err(format!(
                    "the counter of the version record, {counter:?}, is not an integer"
                ));
            }
        };
        let stamp = hex(2)?;
        if stamp == 0 {
            return Err("the stamp of the version record is 0 (no stamp)".into());
        }
        let parent = hex(3)?;
        Ok(Record {
            epoch,
            counter,
            stamp,
            parent,
        })
    }
}

/// A change-log node's data: the stamp of the write, then the names of the keys it changed.
pub(crate) fn log_data(stamp: u64, names: &str) -> Vec<u8> {
    format!("stamp={stamp:016x}\n{names}").into_bytes()
}

/// Parses a change-log node: its stamp and the names of the keys its write changed. `None`
/// for data this backend did not write.
pub(crate) fn parse_log(data: &[u8]) -> Option<(u64, impl Iterator<Item = &str>)> {
    let text = std::str::from_utf8(data).ok()?;
    let (head, names) = text.split_once('\n').unwrap_or((text, ""));
    let hex = head.strip_prefix("stamp=")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let stamp = u64::from_str_radix(hex, 16).ok()?;
    Some((stamp, names.split('/').filter(|n| !n.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let record = Record {
            epoch: 0xfeed,
            counter: 41,
            stamp: 7,
            parent: u64::MAX,
        };
        assert_eq!(Record::parse(&record.encode()), Ok(record));
        let next = record.next().expect("next");
        assert_eq!(
            (next.epoch, next.counter, next.parent),
            (0xfeed, 42, 7),
            "same epoch, next counter, parent = previous stamp"
        );
        assert!(next.token().follows(&record.token()));
        assert_ne!(next.stamp, 0);
        let fresh = Record::fresh(12);
        assert_eq!((fresh.counter, fresh.parent), (12, 0));
        assert!(
            Record {
                counter: MAX_COUNTER - 1,
                ..record
            }
            .next()
            .is_none()
        );
        // Unknown fields are ignored; order does not matter.
        let text = format!(
            "{TAG} parent=0000000000000000 later=x counter=3 stamp=00000000000000ff epoch=1"
        );
        assert_eq!(
            Record::parse(text.as_bytes()),
            Ok(Record {
                epoch: 1,
                counter: 3,
                stamp: 0xff,
                parent: 0
            })
        );
    }

    #[test]
    fn damaged_records_say_what_is_wrong() {
        let good =
            "epoch=0000000000000001 counter=5 stamp=0000000000000002 parent=0000000000000003";
        let cases = [
            ("", "missing"),
            ("garbage", "not a version record"),
            (
                &format!(
                    "{TAG} epoch=0000000000000001 stamp=0000000000000002 parent=0000000000000003"
                )[..],
                "no counter",
            ),
            (
                &format!("{TAG} {}", good.replace("counter=5", "counter=garbage"))[..],
                "is not an integer",
            ),
            (
                &format!("{TAG} {}", good.replace("counter=5", "counter=-5"))[..],
                "negative",
            ),
            (
                &format!(
                    "{TAG} {}",
                    good.replace("counter=5", "counter=9007199254740992")
                )[..],
                "out of range",
            ),
            (
                &format!(
                    "{TAG} {}",
                    good.replace("counter=5", "counter=99999999999999999999999")
                )[..],
                "out of range",
            ),
            (
                &format!("{TAG} {}", good.replace("counter=5", "counter=1e300"))[..],
                "not an integer",
            ),
            (
                &format!(
                    "{TAG} {}",
                    good.replace("epoch=0000000000000001", "epoch=garbage")
                )[..],
                "epoch",
            ),
            (
                &format!(
                    "{TAG} {}",
                    good.replace("stamp=0000000000000002", "stamp=0000000000000000")
                )[..],
                "stamp",
            ),
            (&format!("{TAG} {} counter=6", good)[..], "twice"),
            (&format!("{TAG} {} oops", good)[..], "malformed"),
        ];
        for (data, expected) in cases {
            let error = Record::parse(data.as_bytes()).expect_err(data);
            assert!(error.contains(expected), "{data:?}: {error}");
        }
        assert!(Record::parse(format!("{TAG} {good}").as_bytes()).is_ok());
        assert!(Record::parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn log_nodes_carry_their_stamp() {
        let data = log_data(0xabc, "ka/kb");
        let (stamp, names) = parse_log(&data).expect("parses");
        assert_eq!(stamp, 0xabc);
        assert_eq!(names.collect::<Vec<_>>(), ["ka", "kb"]);
        let empty = log_data(1, "");
        let (_, names) = parse_log(&empty).expect("parses");
        assert_eq!(names.count(), 0);
        assert!(parse_log(b"ka/kb").is_none());
        assert!(parse_log(b"stamp=12\nka").is_none());
    }
}
