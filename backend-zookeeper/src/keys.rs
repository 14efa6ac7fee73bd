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
    let key = String::from_utf8(decode_bytes(name)?).ok()?;
    // One znode per key: `k%61` is not another name of `ka`.
    (encode(&key) == name).then_some(key)
}

/// What a name that is not an encoded key holds, for messages: the key with every byte that is
/// not UTF-8 replaced by U+FFFD when the name is well-formed but its bytes are not UTF-8
/// (another program wrote `k%FF`), else the name itself (a stray znode such as `notakey`).
pub(crate) fn decode_lossy(name: &str) -> String {
    match decode_bytes(name) {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => name.to_owned(),
    }
}

/// Why `name` is not an encoded key (for a name [`decode`] refuses).
pub(crate) fn why_not_a_key(name: &str) -> String {
    match decode_bytes(name).map(String::from_utf8) {
        None => "it is not an encoded key (`k`, then `[A-Za-z0-9_.-]` and `%XX` escapes)".into(),
        Some(Err(_)) => "its escapes decode to bytes that are not UTF-8".into(),
        Some(Ok(key)) => format!(
            "it is not the encoding of key {key:?}, which is stored as {:?}",
            encode(&key)
        ),
    }
}

/// The bytes an encoded name stands for; `None` if it is not `k` followed by safe bytes and
/// `%XX` escapes.
fn decode_bytes(name: &str) -> Option<Vec<u8>> {
    let rest = name.strip_prefix('k')?.as_bytes();
    let mut bytes = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        if rest[i] == b'%' {
            let hex = std::str::from_utf8(rest.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if rest[i].is_ascii_alphanumeric() || matches!(rest[i], b'_' | b'-' | b'.') {
            bytes.push(rest[i]);
            i += 1;
        } else {
            return None;
        }
    }
    Some(bytes)
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
        assert_eq!(decode("k%+1"), None, "from_str_radix accepts a sign");
        assert_eq!(decode("ka b"), None, "a byte encode escapes, unescaped");
    }

    #[test]
    fn names_that_are_not_keys_are_shown_lossily() {
        assert_eq!(decode("kvictim%FF"), None);
        assert_eq!(decode_lossy("kvictim%FF"), "victim\u{FFFD}");
        assert!(why_not_a_key("kvictim%FF").contains("UTF-8"));
        assert_eq!(decode_lossy("notakey"), "notakey");
        assert!(why_not_a_key("notakey").contains("not an encoded key"));
        assert_eq!(decode_lossy("ka%2Fb"), "a/b");
        assert_eq!(decode("k%61"), None, "one name per key");
        assert_eq!(decode_lossy("k%61"), "a");
        assert!(why_not_a_key("k%61").contains("\"ka\""));
    }
}
