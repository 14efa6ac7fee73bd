//! The native layout's keys and the version record as stored: the key names of one dictionary,
//! the fields of the version hash and their checks, the stamp history's slots, and the sorted
//! set scores (revisions and expiries). The scripts in [`scripts`](crate::scripts) write this
//! layout; this file reads it as they do.

use durable_core::{Name, Version};

/// Counters, `oldest`, revisions and expiries (ms) stay below 2^53, where Lua's numbers and
/// sorted set scores (doubles) are exact.
pub(crate) const COUNTER_LIMIT: u64 = 1 << 53;

/// The longest time to live stored as given (2^52 ms, about 142 000 years); longer ones are
/// shortened to it, so that an expiry (the server's time plus the TTL) stays below
/// [`COUNTER_LIMIT`].
pub(crate) const MAX_TTL_MILLIS: u64 = 1 << 52;

/// The prefix of every key of dictionary `dictionary` in `namespace`: the key's hash tag
/// `{namespace:dictionary}` keeps them all on one cluster slot.
fn prefix(namespace: &str, dictionary: &str) -> String {
    format!("durable:{{{namespace}:{dictionary}}}:")
}

/// The suffix of the version record's key, after the prefix.
const VERSION_SUFFIX: &str = "version";

/// The keys of one dictionary, all sharing the hash tag `{namespace:dictionary}`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The version record (a hash of [`RECORD_FIELDS`]).
    pub(crate) version: String,
    /// The entries (a hash: field = key, value = encoded value).
    pub(crate) entries: String,
    /// The change log (a sorted set: member = key, score = revision of its last change).
    pub(crate) log: String,
    /// The tombstones (a sorted set: member = deleted key, score = deletion time in ms).
    pub(crate) tombstones: String,
    /// The expiry index (a sorted set: member = key, score = expiry in ms).
    pub(crate) expiries: String,
    /// The stamp history (a string of [`STAMP_HISTORY`](durable_core::STAMP_HISTORY) slots,
    /// see [`history_slot`]).
    pub(crate) stamps: String,
    /// The pub/sub channel of push hints.
    pub(crate) channel: String,
}

impl Keys {
    /// The keys of dictionary `dictionary` in `namespace`.
    pub(crate) fn new(namespace: &Name, dictionary: &Name) -> Self {
        let prefix = prefix(namespace.as_str(), dictionary.as_str());
        Keys {
            version: format!("{prefix}{VERSION_SUFFIX}"),
            entries: format!("{prefix}entries"),
            log: format!("{prefix}log"),
            tombstones: format!("{prefix}tombstones"),
            expiries: format!("{prefix}expiries"),
            stamps: format!("{prefix}stamps"),
            channel: format!("{prefix}hints"),
        }
    }
}

/// A `SCAN ... MATCH` pattern matching the version record's key of every dictionary of
/// `namespace`, and nothing else whose namespace is another one: the namespace is escaped
/// (glob characters `*`, `?`, `[`, `]` and `\` match themselves only).
pub(crate) fn version_pattern(namespace: &str) -> String {
    let mut escaped = String::with_capacity(namespace.len());
    for c in namespace.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!("durable:{{{escaped}:*}}:{VERSION_SUFFIX}")
}

/// The dictionary whose version record has the key `key` if it is one of `namespace`'s: the
/// inverse of [`Keys::new`], so `None` for keys the pattern of [`version_pattern`] also matches
/// but this layout never writes (such as `durable:{ns:a:b}:version`, written by hand: no
/// dictionary name holds `:`).
pub(crate) fn dictionary_of<'a>(namespace: &str, key: &'a str) -> Option<&'a str> {
    let dictionary = key
        .strip_prefix("durable:{")?
        .strip_prefix(namespace)?
        .strip_prefix(':')?
        .strip_suffix(VERSION_SUFFIX)?
        .strip_suffix("}:")?;
    // Validated as a name, so the name round-trips through `Keys::new`.
    durable_core::Name::new(dictionary).ok()?;
    Some(dictionary)
}

/// The fields of the version record, in the order [`parse_record`] takes them.
pub(crate) const RECORD_FIELDS: [&str; 5] = ["epoch", "counter", "stamp", "parent", "oldest"];

/// What a valid `field` of the version record holds, for messages about a damaged one.
pub(crate) fn expected(field: &str) -> &'static str {
    match field {
        "epoch" => "a decimal 64-bit integer without leading zeros",
        "parent" => "a decimal 64-bit integer",
        "stamp" => "a non-zero decimal 64-bit integer without leading zeros",
        _ => "a decimal integer in 0..2^53",
    }
}

/// Decimal text of a `u64`: 1 to 20 digits, at most `u64::MAX` (leading zeros allowed unless
/// `canonical`), as the scripts check it.
fn decimal_u64(text: &[u8], canonical: bool) -> Option<u64> {
    let ok = (1..=20).contains(&text.len())
        && text.iter().all(u8::is_ascii_digit)
        && (!canonical || text.len() == 1 || text[0] != b'0');
    ok.then(|| std::str::from_utf8(text).ok()?.parse().ok())
        .flatten()
}

/// A counter (or `oldest`): 1 to 16 digits, below 2^53.
fn decimal_count(text: &[u8]) -> Option<u64> {
    (text.len() <= 16)
        .then(|| decimal_u64(text, false))
        .flatten()
        .filter(|c| *c < COUNTER_LIMIT)
}

/// Why a version record read with `HMGET` gives no token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unusable<'a> {
    /// No record, or one from before stamps: the scripts create it afresh.
    Missing,
    /// A damaged field and its value (`None`: missing).
    Damaged(&'static str, Option<&'a [u8]>),
}

/// The token of a version record read with `HMGET` of [`RECORD_FIELDS`], validated as the
/// scripts validate it.
pub(crate) fn parse_record(fields: &[Option<Vec<u8>>]) -> Result<Version, Unusable<'_>> {
    let field = |i: usize| fields.get(i).and_then(Option::as_deref);
    if (0..4).all(|i| field(i).is_none()) {
        return Err(Unusable::Missing);
    }
    let damaged = |i: usize| Unusable::Damaged(RECORD_FIELDS[i], field(i));
    // Epoch and stamp are compared as text by the scripts: canonical.
    let epoch = field(0)
        .and_then(|t| decimal_u64(t, true))
        .ok_or_else(|| damaged(0))?;
    let counter = field(1).and_then(decimal_count).ok_or_else(|| damaged(1))?;
    if field(2).is_none() && field(3).is_none() {
        return Err(Unusable::Missing);
    }
    let stamp = field(2)
        .and_then(|t| decimal_u64(t, true))
        .filter(|s| *s != 0)
        .ok_or_else(|| damaged(2))?;
    let parent = field(3)
        .and_then(|t| decimal_u64(t, false))
        .ok_or_else(|| damaged(3))?;
    field(4).and_then(decimal_count).ok_or_else(|| damaged(4))?;
    Ok(Version::stamped(epoch, counter, stamp, parent))
}

/// Two 64-bit words, big-endian, one after the other.
fn words(first: u64, second: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&first.to_be_bytes());
    bytes[8..].copy_from_slice(&second.to_be_bytes());
    bytes
}

/// The slot of the stamp history that records the write producing `counter` with `stamp`: the
/// counter and the stamp, big-endian (slot `counter % STAMP_HISTORY` of the history string).
pub(crate) fn history_slot(counter: u64, stamp: u64) -> [u8; 16] {
    words(counter, stamp)
}

/// The two fresh stamps every script receives as bytes (for the stamp history): the one for a
/// record it may have to create, then the one for its write.
pub(crate) fn stamp_bytes(created: u64, written: u64) -> [u8; 16] {
    words(created, written)
}

/// A sorted set score that must be a whole number in 0..2^53 (a revision, or an expiry in ms
/// since the Unix epoch), as Redis sends it (decimal text, or in float notation); `None` for
/// anything else (negative, fractional, `inf`, 1e300, not a number).
pub(crate) fn whole_score(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    if let Ok(n) = text.parse::<u64>() {
        return (n < COUNTER_LIMIT).then_some(n);
    }
    let f = text.parse::<f64>().ok()?;
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < COUNTER_LIMIT as f64).then_some(f as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: [Option<&str>; 5]) -> Vec<Option<Vec<u8>>> {
        fields
            .iter()
            .map(|f| f.map(|s| s.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_valid_record_is_a_stamped_token() {
        let r = record([Some("7"), Some("12"), Some("99"), Some("0"), Some("3")]);
        let v = parse_record(&r).unwrap();
        assert_eq!(
            (v.epoch(), v.counter(), v.stamp(), v.parent()),
            (7, 12, 99, 0)
        );
        let max = u64::MAX.to_string();
        let r = record([
            Some(&max),
            Some("9007199254740991"),
            Some(&max),
            Some(&max),
            Some("0"),
        ]);
        assert!(parse_record(&r).is_ok());
        // Leading zeros are fine where the scripts read numbers, not where they compare text.
        let r = record([Some("0"), Some("012"), Some("1"), Some("007"), Some("03")]);
        let v = parse_record(&r).unwrap();
        assert_eq!((v.counter(), v.parent()), (12, 7));
    }

    #[test]
    fn no_record_or_one_without_stamps_is_missing() {
        assert_eq!(parse_record(&record([None; 5])), Err(Unusable::Missing));
        let old = record([Some("7"), Some("12"), None, None, Some("3")]);
        assert_eq!(parse_record(&old), Err(Unusable::Missing));
        let only_oldest = record([None, None, None, None, Some("3")]);
        assert_eq!(parse_record(&only_oldest), Err(Unusable::Missing));
    }

    #[test]
    fn damaged_fields_are_named() {
        let ok = ["7", "12", "99", "5", "3"];
        let bad: [&[&str]; 5] = [
            &[
                "",
                "x",
                "-1",
                "+7",
                "07",
                "1e3",
                "18446744073709551616",
                "7 ",
            ],
            &[
                "",
                "garbage",
                "-5",
                "9007199254740992",
                "9007199254740993",
                "1e300",
            ],
            &["", "0", "00", "012", "x", "18446744073709551616", "-1"],
            &[
                "",
                "x",
                "-1",
                "18446744073709551616",
                "000000000000000000001",
            ],
            &[
                "",
                "x",
                "-1",
                "9007199254740992",
                "1.5",
                "00000000000000001",
            ],
        ];
        for (i, values) in bad.iter().enumerate() {
            let mut missing: Vec<Option<&str>> = ok.iter().map(|s| Some(*s)).collect();
            missing[i] = None;
            // Stamp or parent alone missing is damage (both missing: from before stamps).
            let r = record(missing.try_into().unwrap());
            assert_eq!(
                parse_record(&r),
                Err(Unusable::Damaged(RECORD_FIELDS[i], None)),
                "field {i} missing"
            );
            for value in *values {
                let mut fields: Vec<Option<&str>> = ok.iter().map(|s| Some(*s)).collect();
                fields[i] = Some(value);
                let r = record(fields.try_into().unwrap());
                assert_eq!(
                    parse_record(&r),
                    Err(Unusable::Damaged(RECORD_FIELDS[i], Some(value.as_bytes()))),
                    "field {} = {value:?}",
                    RECORD_FIELDS[i]
                );
            }
        }
    }

    #[test]
    fn whole_scores_are_revisions_and_nothing_else_is() {
        for (text, expected) in [
            ("0", Some(0)),
            ("5", Some(5)),
            ("9007199254740991", Some((1 << 53) - 1)),
            ("1e3", Some(1000)),
            ("5.0", Some(5)),
            ("9007199254740992", None),
            ("1e300", None),
            ("1.0000000000000001e+300", None),
            ("-5", None),
            ("-9223372036854775808", None),
            ("1.5", None),
            ("inf", None),
            ("-inf", None),
            ("nan", None),
            ("", None),
            ("x", None),
        ] {
            assert_eq!(whole_score(text.as_bytes()), expected, "{text:?}");
        }
        assert_eq!(whole_score(b"\xff"), None);
    }

    #[test]
    fn the_listing_pattern_escapes_globs_and_decodes_what_keys_new_encodes() {
        assert_eq!(version_pattern("prod"), "durable:{prod:*}:version");
        // Glob characters of a namespace match themselves only (`{`, `}`, `:` and unicode are
        // no glob characters in Redis).
        assert_eq!(
            version_pattern(r"a*b?[c]\d{é}:"),
            r"durable:{a\*b\?\[c\]\\d{é}::*}:version"
        );
        let ns = Name::new("a.b-c_D9").unwrap();
        for dictionary in [
            "x",
            "flags",
            "a.b",
            "-",
            "_x-y.z",
            &"d".repeat(Name::MAX_LEN),
        ] {
            let keys = Keys::new(&ns, &Name::new(dictionary).unwrap());
            assert_eq!(dictionary_of(ns.as_str(), &keys.version), Some(dictionary));
            // Another key of the dictionary, or the same name in another namespace: not listed.
            assert_eq!(dictionary_of(ns.as_str(), &keys.entries), None);
            assert_eq!(dictionary_of("a.b-c_D", &keys.version), None);
            assert_eq!(dictionary_of("a.b-c_D99", &keys.version), None);
        }
        // Keys the pattern matches that this layout never writes (written by hand).
        for key in [
            "durable:{ns:a:b}:version",
            "durable:{ns:}:version",
            "durable:{ns:a}b}:version",
            "durable:{ns:é}:version",
            "durable:{ns:.hidden}:version",
            "durable:{ns:*}:version",
        ] {
            assert_eq!(dictionary_of("ns", key), None, "{key}");
        }
    }

    #[test]
    fn history_slots_are_counter_then_stamp_big_endian() {
        let slot = history_slot(0x0102, 0x0a0b);
        assert_eq!(&slot[..8], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&slot[8..], &[0, 0, 0, 0, 0, 0, 0x0a, 0x0b]);
        assert_eq!(stamp_bytes(1, 2), history_slot(1, 2));
    }
}
