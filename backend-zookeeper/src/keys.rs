//! Key encoding: any string becomes one valid znode name.

use std::fmt::Write;

/// The longest key accepted, in bytes of UTF-8. An encoded key is at most three times as long
/// plus one, which keeps an entry's path and its change-log line far below ZooKeeper's request
/// limit.
pub const MAX_KEY_LEN: usize = 4096;

/// `k` followed by the key with every byte outside `[A-Za-z0-9_.-]` written as `%XX`.
///
/// The prefix makes `""`, `"."` and `".."` valid names; `/`, control characters and the code
/// points ZooKeeper rejects in paths are all escaped; case is kept, so `K` and `k` differ.
pub(crate) fn encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 1);
    out.push('k');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The inverse of [`encode`]; `None` for a name this backend did not write.
pub(crate) fn decode(name: &str) -> Option<String> {
    let rest = name.strip_prefix('k')?.as_bytes();
    let mut bytes = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        if rest[i] == b'%' {
            let hex = std::str::from_utf8(rest.get(i + 1..i + 3)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            bytes.push(rest[i]);
            i += 1;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_awkward_keys() {
        let long = "é".repeat(512);
        for key in [
            "", "/", ".", "..", "a/b", "%", "%2F", "K", "k", "日本", "🎉", " ", "\0", &long,
        ] {
            let name = encode(key);
            assert!(!name.contains('/') && name != "." && name != "..", "{name}");
            assert!(name.bytes().all(|b| b.is_ascii_graphic()), "{name}");
            assert_eq!(decode(&name).as_deref(), Some(key));
        }
        assert_ne!(encode("K"), encode("k"));
        assert_eq!(decode("x"), None);
        assert_eq!(decode("k%zz"), None);
    }
}
