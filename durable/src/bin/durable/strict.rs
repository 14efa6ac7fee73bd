//! JSON read strictly: text that `serde_json` would silently change is refused.
//!
//! `serde_json` keeps the last of duplicate object keys and turns a number that fits neither a
//! 64-bit integer nor a 64-bit float into the nearest float (`12345678901234567890123` becomes
//! `1.2345678901234568e22`). The CLI stores the JSON it parsed, so either would store something
//! other than what was typed: [`parse`] refuses both, naming the key or the number. (serde_json's
//! `arbitrary_precision` would keep such numbers, but Cargo unifies features across a build, so
//! enabling it for the CLI would change how every other crate of the workspace reads numbers.)

use std::collections::HashSet;

use serde_json::Value;

/// Why [`parse`] refused a text.
#[derive(Debug)]
pub(crate) enum Refused {
    /// It is not JSON.
    Syntax(serde_json::Error),
    /// It is JSON that would be stored changed (the message says how).
    Changed(String),
}

/// `text` parsed as JSON, refused when it has an object with a key twice or a number that would
/// not be stored exactly.
pub(crate) fn parse(text: &str) -> Result<Value, Refused> {
    let value: Value = serde_json::from_str(text).map_err(Refused::Syntax)?;
    Scanner { text, at: 0 }.value().map_err(Refused::Changed)?;
    Ok(value)
}

/// A walk over JSON text that `serde_json` has already accepted (so its syntax is valid and its
/// nesting is at most serde_json's recursion limit deep).
#[derive(Debug)]
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> u8 {
        self.text.as_bytes().get(self.at).copied().unwrap_or(b'\0')
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    fn value(&mut self) -> Result<(), String> {
        self.skip_whitespace();
        match self.peek() {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string().map(drop),
            b't' | b'f' | b'n' => {
                while self.peek().is_ascii_alphabetic() {
                    self.at += 1;
                }
                Ok(())
            }
            _ => self.number(),
        }
    }

    fn object(&mut self) -> Result<(), String> {
        self.at += 1;
        let mut keys = HashSet::new();
        loop {
            self.skip_whitespace();
            if self.peek() == b'}' {
                self.at += 1;
                return Ok(());
            }
            let key = self.string()?;
            if keys.contains(&key) {
                return Err(format!(
                    "duplicate key {key:?} in a JSON object (JSON readers would keep only one of \
                     its values); give each key once"
                ));
            }
            keys.insert(key);
            self.skip_whitespace();
            self.at += 1; // ':'
            self.value()?;
            self.skip_whitespace();
            if self.peek() == b',' {
                self.at += 1;
            }
        }
    }

    fn array(&mut self) -> Result<(), String> {
        self.at += 1;
        loop {
            self.skip_whitespace();
            if self.peek() == b']' {
                self.at += 1;
                return Ok(());
            }
            self.value()?;
            self.skip_whitespace();
            if self.peek() == b',' {
                self.at += 1;
            }
        }
    }

    /// A string token, unescaped.
    fn string(&mut self) -> Result<String, String> {
        let start = self.at;
        self.at += 1;
        loop {
            match self.peek() {
                b'\\' => self.at += 2,
                b'"' => break,
                _ => self.at += 1,
            }
        }
        self.at += 1;
        serde_json::from_str(&self.text[start..self.at]).map_err(|e| e.to_string())
    }

    fn number(&mut self) -> Result<(), String> {
        let start = self.at;
        while matches!(self.peek(), b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            self.at += 1;
        }
        let literal = &self.text[start..self.at];
        let number: serde_json::Number =
            serde_json::from_str(literal).map_err(|e| e.to_string())?;
        let stored = number.to_string();
        if Decimal::of(literal) == Decimal::of(&stored) {
            return Ok(());
        }
        let shown = if literal.len() > 40 {
            format!("{}... ({} characters)", &literal[..30], literal.len())
        } else {
            literal.to_owned()
        };
        Err(format!(
            "the number {shown} cannot be stored exactly: JSON numbers are kept as 64-bit \
             integers or floats, which would make it {stored}; quote it to store it as text"
        ))
    }
}

/// The exact value of a JSON number literal: sign, significant digits (no leading or trailing
/// zeros) and the power of ten of the last one. Zero is `(false, "", 0)` whatever its sign.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i128,
}

impl Decimal {
    fn of(literal: &str) -> Decimal {
        let (negative, rest) = match literal.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, literal),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, "0"),
        };
        let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        // Saturating: a literal's exponent may have any number of digits.
        let (exponent_negative, exponent_digits) = match exponent.as_bytes().first() {
            Some(b'-') => (true, &exponent[1..]),
            Some(b'+') => (false, &exponent[1..]),
            _ => (false, exponent),
        };
        let magnitude = exponent_digits.bytes().fold(0i128, |sum, digit| {
            (sum * 10 + i128::from(digit - b'0')).min(i128::from(i64::MAX))
        });
        let mut exponent = if exponent_negative {
            -magnitude
        } else {
            magnitude
        };
        exponent -= fraction.len() as i128;
        let all = format!("{integer}{fraction}");
        let significant = all.trim_start_matches('0');
        let digits = significant.trim_end_matches('0');
        if digits.is_empty() {
            return Decimal {
                negative: false,
                digits: String::new(),
                exponent: 0,
            };
        }
        exponent += (significant.len() - digits.len()) as i128;
        Decimal {
            negative,
            digits: digits.to_owned(),
            exponent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_numbers_and_unique_keys_are_accepted() {
        for text in [
            "0",
            "-0",
            "-0.0",
            "1.0",
            "1E2",
            "100",
            "0.1",
            "0.30000000000000004",
            "-9223372036854775808",
            "18446744073709551615",
            "1.5e300",
            r#"{"a": [1, 2.5, {"a": true}], "b": "x\"y", "\u0063": null}"#,
        ] {
            assert!(parse(text).is_ok(), "{text}: {:?}", parse(text));
        }
    }

    #[test]
    fn numbers_that_would_change_are_refused() {
        for text in [
            "12345678901234567890123",
            "0.1000000000000000000000001",
            "18446744073709551616",
            "-9223372036854775809",
            "3.141592653589793238",
            "1e-400",
            "[1, 2, 12345678901234567890123]",
        ] {
            let Err(Refused::Changed(error)) = parse(text) else {
                panic!("{text} is accepted");
            };
            assert!(
                error.contains("cannot be stored exactly"),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn duplicate_keys_are_refused_after_unescaping() {
        for text in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": 1, "\u0061": 2}"#,
            r#"[{"x": {"k": 1, "k": 1}}]"#,
        ] {
            let Err(Refused::Changed(error)) = parse(text) else {
                panic!("{text} is accepted");
            };
            assert!(error.contains("duplicate key"), "{text}: {error}");
        }
        assert!(parse(r#"[{"a": 1}, {"a": 2}]"#).is_ok());
    }
}
