//! Hide credentials in URLs and messages: one set of rules for every backend, so that a store
//! URL's user name and password never reach `Debug` output, an error or a log line.
//!
//! - [`redact`] shows a URL with its user information replaced by `***` (`postgres://***@db/x`)
//!   and the values of `user=`, `username=` and `*pass*=` query parameters too.
//! - [`ParsedUrl::parse`] takes the user information out of a URL, percent-decoded, so that a
//!   backend hands it to its driver apart from the rest and no parser of the driver ever sees it.
//! - [`Secrets`] holds the written and percent-decoded forms of the user names and passwords of a
//!   URL; [`Secrets::scrub`] hides them in a driver's or a server's message.
//!
//! # Where the user information ends
//!
//! A host holds no `@`, so the user information of `scheme://user:password@host...` ends at the
//! **last** `@` followed by a host ([`split_user_info`]: host-like characters up to the next `/`,
//! `?` or `#`, a comma-separated list of hosts for a cluster, or nothing for a socket). A user
//! name or password may therefore hold `/`, `?`, `#`, `@`, `%` (and the password `:`) without
//! percent-encoding; an `@` in a query must be percent-encoded. `%XX` escapes are decoded
//! ([`percent_decode`]); a `%` that starts no escape stays as written.
//!
//! For hiding (never for parsing), a text where no `@` is followed by a host (an invalid host,
//! or no `scheme://` at all) is taken to hold credentials up to its last `@` that is not in the
//! value of a hidden query parameter: hiding too much is safe, showing a password is not. URLs of
//! Unix sockets (schemes `unix` and `*+unix`, [`is_socket_scheme`]) have a file path, which may
//! hold `@`, instead of user information: only their query parameters are hidden.
//!
//! User names are hidden as well as passwords: a URL shows `***@host`, never `user:***@host`.
//!
//! ```
//! use durable_core::credentials::{ParsedUrl, Secrets, redact};
//!
//! assert_eq!(redact("postgres://app:s3/cr@t@db:5432/flags"), "postgres://***@db:5432/flags");
//! assert_eq!(redact("redis://:pw@h1:6379,h2:6380/"), "redis://***@h1:6379,h2:6380/");
//! assert_eq!(redact("mysql://db/x?user=root&password=pw"), "mysql://db/x?user=***&password=***");
//!
//! let url = ParsedUrl::parse("postgres://app:s3%2Fcret@db/flags");
//! assert_eq!(url.bare, "postgres://db/flags");
//! assert_eq!(url.password.as_deref(), Some("s3/cret"));
//!
//! let secrets = Secrets::from_url("postgres://app:s3%2Fcret@db/flags");
//! assert_eq!(
//!     secrets.scrub("password authentication failed for user \"app\" (s3/cret)"),
//!     "password authentication failed for user \"***\" (***)"
//! );
//! ```

use std::fmt;

/// The user names and passwords of a URL (or given one by one): what no message may show.
///
/// Each is kept as written and percent-decoded. Its `Debug` output shows none of them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Passwords as written and percent-decoded: hidden wherever they occur.
    passwords: Vec<String>,
    /// User names as written and percent-decoded: hidden where a message quotes them (a user
    /// name such as `app` may also be an ordinary word of the message).
    users: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(***)")
    }
}

impl Secrets {
    /// No secrets.
    pub fn new() -> Self {
        Self::default()
    }

    /// The secrets of `url`: the user name and password of its user information, and the
    /// values of its query parameters named `user` or `username` (user names) or whose name
    /// holds `pass` (passwords), in any case.
    ///
    /// Where no `@` is followed by a host, everything before the last `@` is taken for user
    /// information (see the [module documentation](self)); a Unix socket URL has none.
    pub fn from_url(url: &str) -> Self {
        let mut secrets = Secrets::default();
        if let Some((_, query)) = url.split_once('?') {
            for pair in split_fragment(query).0.split('&') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                // A `#` in a value, as written and as a driver reading it as a fragment sees it.
                let before_hash = value.split_once('#').map_or(value, |(before, _)| before);
                for value in [value, before_hash] {
                    match secret_parameter(name) {
                        Some(Kind::Password) => secrets.add_password(value),
                        Some(Kind::User) => secrets.add_user(value),
                        None => {}
                    }
                }
            }
        }
        let (_, rest) = split_scheme(url);
        if is_socket(url) {
            return secrets;
        }
        let info = split_user_info(rest)
            .map(|(info, _)| info)
            .or_else(|| rest.rsplit_once('@').map(|(info, _)| info));
        if let Some(info) = info {
            let (user, password) = split_password(info);
            secrets.add_user(user);
            if let Some(password) = password {
                secrets.add_password(password);
            }
        }
        secrets
    }

    /// Adds a password (its written and percent-decoded forms; an empty one is no secret).
    pub fn add_password(&mut self, password: &str) {
        add_forms(&mut self.passwords, password);
    }

    /// Adds a user name (its written and percent-decoded forms; an empty one is no secret).
    pub fn add_user(&mut self, user: &str) {
        add_forms(&mut self.users, user);
    }

    /// True if there is nothing to hide.
    pub fn is_empty(&self) -> bool {
        self.passwords.is_empty() && self.users.is_empty()
    }

    /// True if `text` shows a secret (as [`scrub`](Self::scrub) would hide it).
    pub fn shown_in(&self, text: &str) -> bool {
        self.scrub(text) != text
    }

    /// `text` with every password and every quoted user name (`"app"`, `'app'`, `` `app` ``,
    /// `user=app`) replaced by `***`. Longer secrets first, so that one holding another is
    /// hidden whole.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        let mut passwords: Vec<&String> = self.passwords.iter().collect();
        passwords.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for password in passwords {
            out = out.replace(password.as_str(), "***");
        }
        let mut users: Vec<&String> = self.users.iter().collect();
        users.sort_by_key(|u| std::cmp::Reverse(u.len()));
        for user in users {
            for (open, close) in [("\"", "\""), ("'", "'"), ("user=", ""), ("`", "`")] {
                out = out.replace(
                    &format!("{open}{user}{close}"),
                    &format!("{open}***{close}"),
                );
            }
        }
        out
    }
}

/// Adds `secret` as written and percent-decoded to `forms`, once each, unless empty.
fn add_forms(forms: &mut Vec<String>, secret: &str) {
    for form in [secret.to_owned(), percent_decode(secret)] {
        if !form.is_empty() && !forms.contains(&form) {
            forms.push(form);
        }
    }
}

/// A URL taken apart for a driver: `scheme://[user[:password]@]rest`.
///
/// Its `Debug` output shows only [`shown`](Self::shown).
#[derive(Clone)]
#[non_exhaustive]
pub struct ParsedUrl {
    /// The URL without its user information (the whole URL when it has none), for the driver.
    pub bare: String,
    /// The user name, percent-decoded (`None`: none given, or empty).
    pub user: Option<String>,
    /// The password, percent-decoded (`None`: none given, or empty).
    pub password: Option<String>,
    /// The URL as messages show it ([`redact`]).
    pub shown: String,
    /// The credentials it holds ([`Secrets::from_url`]), for scrubbing messages.
    pub secrets: Secrets,
}

impl fmt::Debug for ParsedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedUrl")
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

impl ParsedUrl {
    /// Takes `url` apart. The user information ends at the **last** `@` followed by a host
    /// ([`split_user_info`]), so a user name or password may hold `/`, `?`, `#`, `@`, `%` (and
    /// the password `:`) without percent-encoding; an `@` in a query must then be
    /// percent-encoded. A text without `scheme://`, a Unix socket URL ([`is_socket_scheme`])
    /// and a URL where no `@` is followed by a host have no user information: `bare` is `url`.
    pub fn parse(url: &str) -> ParsedUrl {
        let secrets = Secrets::from_url(url);
        let shown = redact(url);
        let parts = url
            .split_once("://")
            .filter(|_| !is_socket(url))
            .and_then(|(scheme, rest)| Some((scheme, split_user_info(rest)?)));
        let Some((scheme, (info, host))) = parts else {
            return ParsedUrl {
                bare: url.to_owned(),
                user: None,
                password: None,
                shown,
                secrets,
            };
        };
        let (user, password) = split_password(info);
        ParsedUrl {
            bare: format!("{scheme}://{host}"),
            user: (!user.is_empty()).then(|| percent_decode(user)),
            password: password.filter(|p| !p.is_empty()).map(percent_decode),
            shown,
            secrets,
        }
    }
}

/// `rest` (a URL after `scheme://`) split into the user information and what follows it: the
/// user information ends at the last `@` that is followed by a host (up to the next `/`, `?` or
/// `#`: letters, digits, `.`, `-`, `_`, `:`, `[`, `]`, `%`, `,`, `~`, so also a cluster's
/// `h1:1,h2:2`, or empty for a socket). An `@` in a query (`?password=a@b&...`) is followed by
/// no host, so a URL without user information whose query holds one is not taken for
/// credentials.
///
/// ```
/// use durable_core::credentials::split_user_info;
///
/// assert_eq!(split_user_info("u:p@ss/w@h1:1,h2:2/0"), Some(("u:p@ss/w", "h1:1,h2:2/0")));
/// assert_eq!(split_user_info("db/x?note=a@b&c"), None);
/// ```
pub fn split_user_info(rest: &str) -> Option<(&str, &str)> {
    let mut end = rest.len();
    while let Some(at) = rest[..end].rfind('@') {
        let after = &rest[at + 1..];
        let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let host_like = after[..host_end].chars().all(|c| {
            c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']' | '%' | ',' | '~')
        });
        if host_like {
            return Some((&rest[..at], after));
        }
        end = at;
    }
    None
}

/// Whether `scheme` names a Unix socket (`unix`, `redis+unix`, `valkey+unix`, any case): its
/// URL has a file path, not user information and a host.
pub fn is_socket_scheme(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("unix") || scheme.to_ascii_lowercase().ends_with("+unix")
}

/// Whether `url` is a Unix socket URL ([`is_socket_scheme`]).
fn is_socket(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| is_socket_scheme(scheme))
}

/// `url` split after `scheme://` (`("", url)` without one).
fn split_scheme(url: &str) -> (&str, &str) {
    match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    }
}

/// User information split into the user name and the password (after the first `:`).
fn split_password(info: &str) -> (&str, Option<&str>) {
    match info.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (info, None),
    }
}

/// `url` as `Debug` output, errors, logs and locations show it: the user information (user
/// name and password, whatever characters they hold) replaced by `***`, and the values of query
/// parameters named `user` or `username` or whose name holds `pass` too. Idempotent.
///
/// ```
/// use durable_core::credentials::redact;
///
/// assert_eq!(redact("redis://app:s3#cr@t@h/0?protocol=resp3"), "redis://***@h/0?protocol=resp3");
/// assert_eq!(redact("redis+unix:///run/redis.sock?pass=pw#x"), "redis+unix:///run/redis.sock?pass=***#x");
/// assert_eq!(redact("app:pw@db/flags"), "***@db/flags");
/// assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
/// ```
pub fn redact(url: &str) -> String {
    if is_socket(url) {
        return redact_query(url);
    }
    let (prefix, rest) = split_scheme(url);
    if let Some((_, after)) = split_user_info(rest) {
        return format!("{prefix}***@{}", redact_query(after));
    }
    // No `@` is followed by a host: one that is not in a hidden query value may still end
    // credentials (before an invalid host). Hide up to the last of them.
    let shown = redact_query(url);
    let (prefix, rest) = split_scheme(&shown);
    match rest.rfind('@') {
        Some(at) => format!("{prefix}***{}", &rest[at..]),
        None => shown,
    }
}

/// What a query parameter's value is, by its name (`None`: no secret).
enum Kind {
    User,
    Password,
}

/// The secret a query parameter named `name` holds: `user`/`username` a user name, any name
/// holding `pass` (any case) a password.
fn secret_parameter(name: &str) -> Option<Kind> {
    if name.to_ascii_lowercase().contains("pass") {
        Some(Kind::Password)
    } else if name.eq_ignore_ascii_case("user") || name.eq_ignore_ascii_case("username") {
        Some(Kind::User)
    } else {
        None
    }
}

/// A query split into its parameters and its fragment: the fragment follows the last `#`, unless
/// it holds `&` or `=` (then that `#` is part of a value, such as an unencoded `#` in a password,
/// and there is no fragment).
fn split_fragment(query: &str) -> (&str, Option<&str>) {
    match query.rsplit_once('#') {
        Some((query, fragment)) if !fragment.contains(['&', '=']) => (query, Some(fragment)),
        _ => (query, None),
    }
}

/// `text` with the values of its secret query parameters ([`secret_parameter`]) replaced by
/// `***`, each up to the next `&`; a `#fragment` after the query ([`split_fragment`]) is kept.
fn redact_query(text: &str) -> String {
    let Some((head, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let (query, fragment) = split_fragment(query);
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret_parameter(name).is_some() => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    match fragment {
        Some(fragment) => format!("{head}?{query}#{fragment}"),
        None => format!("{head}?{query}"),
    }
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits stays as written, and escapes that
/// do not decode to UTF-8 leave the text as written.
///
/// ```
/// use durable_core::credentials::percent_decode;
///
/// assert_eq!(percent_decode("p%40ss%2Fw"), "p@ss/w");
/// assert_eq!(percent_decode("100%sure"), "100%sure");
/// ```
pub fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_or_else(|_| text.to_owned(), std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// User names and passwords with every character that ends a URL's authority, a `%` that
    /// is no escape, an escape, and non-ASCII letters, none percent-encoded.
    const NASTY: [&str; 11] = [
        "s3cret",
        "s3%2Fcret",
        "s3/cret",
        "s3?cret",
        "s3#cret",
        "s3@cret",
        "s3%cret",
        "s3%41cret",
        "100%sure",
        "sëcrét✓€",
        "a/b?c#d@e%f:g€",
    ];
    const USERS: [&str; 8] = [
        "app",
        "us/er",
        "us?er",
        "us#er",
        "us@er",
        "us%er",
        "üser€",
        "a/p?p#@%ü",
    ];

    /// Asserts that `text` shows neither `secret` nor its percent-decoded form.
    fn assert_hidden(text: &str, secret: &str) {
        assert!(!text.contains(secret), "{secret:?} in {text}");
        assert!(
            !text.contains(&percent_decode(secret)),
            "{secret:?} in {text}"
        );
    }

    #[test]
    fn credentials_end_at_the_last_at_sign_followed_by_a_host() {
        for user in USERS {
            for password in NASTY {
                for (scheme, tail) in [
                    ("postgres", "db.internal:5432/app?sslmode=disable"),
                    ("redis", "db.example:6380"),
                    ("redis", "db.example:6380/"),
                    ("redis", "db.example:6380/2?protocol=resp3"),
                    ("rediss", "h1:6379,h2:6380,h3/"),
                    ("mysql", "[::1]:3306/x#frag"),
                ] {
                    let url = format!("{scheme}://{user}:{password}@{tail}");
                    let parsed = ParsedUrl::parse(&url);
                    assert_eq!(parsed.bare, format!("{scheme}://{tail}"), "{url}");
                    assert_eq!(parsed.user, Some(percent_decode(user)), "{url}");
                    assert_eq!(parsed.password, Some(percent_decode(password)), "{url}");
                    assert_eq!(parsed.shown, format!("{scheme}://***@{tail}"), "{url}");
                    assert_eq!(redact(&url), parsed.shown);
                    // The user name is hidden too: `shown` is `scheme://***@tail`.
                    for text in [&parsed.shown, &format!("{parsed:?}")] {
                        assert_hidden(text, password);
                    }
                    let scrubbed = parsed
                        .secrets
                        .scrub(&format!("{password} for user \"{}\"", percent_decode(user)));
                    assert_eq!(scrubbed, "*** for user \"***\"", "{url}");
                }
            }
        }
    }

    #[test]
    fn user_only_password_only_and_no_credentials() {
        let plain = ParsedUrl::parse("mysql://db:3306/app");
        assert_eq!(
            (plain.bare.as_str(), plain.user, plain.password),
            ("mysql://db:3306/app", None, None)
        );
        assert!(plain.secrets.is_empty());
        let user_only = ParsedUrl::parse("mysql://app@db/x");
        assert_eq!(user_only.user.as_deref(), Some("app"));
        assert_eq!(user_only.password, None);
        assert_eq!(user_only.shown, "mysql://***@db/x");
        let password_only = ParsedUrl::parse("redis://:s3/cr?t@127.0.0.1:7000/");
        assert_eq!(password_only.user, None);
        assert_eq!(password_only.password.as_deref(), Some("s3/cr?t"));
        assert_eq!(password_only.bare, "redis://127.0.0.1:7000/");
        assert_eq!(password_only.shown, "redis://***@127.0.0.1:7000/");
        assert_eq!(redact("rediss://:secret@host/"), "rediss://***@host/");
        assert_eq!(redact("redis://user@host/"), "redis://***@host/");
        assert_eq!(redact("redis://host:1/"), "redis://host:1/");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact("sqlite://data.db"), "sqlite://data.db");
        assert_eq!(redact("memory:"), "memory:");
    }

    #[test]
    fn an_at_sign_in_a_query_is_no_user_information() {
        let url = "postgres://127.0.0.1:5/db?user=u/x?y#z@w&password=pw0/secret&sslmode=bogus";
        let parsed = ParsedUrl::parse(url);
        assert_eq!(parsed.bare, url);
        assert_eq!(parsed.user, None);
        assert_eq!(
            parsed.shown,
            "postgres://127.0.0.1:5/db?user=***&password=***&sslmode=bogus"
        );
        assert!(parsed.secrets.scrub("pw0/secret").contains("***"));
        let parsed = ParsedUrl::parse("mysql://u:p@ss@db.internal:3306/x?note=a@b&c");
        assert_eq!(parsed.bare, "mysql://db.internal:3306/x?note=a@b&c");
        assert_eq!(parsed.password.as_deref(), Some("p@ss"));
        assert_eq!(parsed.shown, "mysql://***@db.internal:3306/x?note=a@b&c");
    }

    #[test]
    fn texts_without_a_host_after_the_at_sign_hide_up_to_it() {
        // Not URLs: whatever comes before an `@` may be credentials.
        assert_eq!(redact("app:s3cret@db/flags"), "***@db/flags");
        assert_eq!(redact("u:s3/cret@host:1/"), "***@host:1/");
        assert_eq!(redact("u:pw@not a host/x"), "***@not a host/x");
        // An invalid host.
        assert_eq!(
            redact("postgres://u:s3/cret@bad host/db?password=x"),
            "postgres://***@bad host/db?password=***"
        );
        assert_eq!(
            redact("postgres://u:s3?cret@bad host/db"),
            "postgres://***@bad host/db"
        );
        // The `@` of a hidden query value is no end of credentials.
        assert_eq!(
            redact("h/db?note=a b@c d&password=p@w x"),
            "***@c d&password=***"
        );
        for url in [
            "postgres://u:s3/cret@bad host/db",
            "ftp://u:s3/cret@host/",
            "u:s3/cret@host:1/",
            "u:s3/cret@not a host",
        ] {
            let secrets = Secrets::from_url(url);
            assert_eq!(secrets.scrub("s3/cret"), "***", "{url}");
            let parsed = ParsedUrl::parse(url);
            assert_hidden(&parsed.shown, "s3/cret");
            assert_hidden(&format!("{parsed:?}"), "s3/cret");
        }
    }

    #[test]
    fn unix_socket_urls_hide_query_passwords_only() {
        for scheme in ["redis+unix", "unix", "valkey+unix", "REDIS+UNIX"] {
            let url = format!("{scheme}:///run/a@b/redis.sock?db=1&pass=s3/cret#x");
            assert_eq!(
                redact(&url),
                format!("{scheme}:///run/a@b/redis.sock?db=1&pass=***#x")
            );
            let parsed = ParsedUrl::parse(&url);
            assert_eq!((parsed.bare.as_str(), parsed.user), (url.as_str(), None));
            assert_eq!(parsed.secrets.scrub("s3/cret a"), "*** a");
        }
        assert!(is_socket_scheme("unix") && is_socket_scheme("Valkey+Unix"));
        assert!(!is_socket_scheme("redis") && !is_socket_scheme("unixish"));
    }

    #[test]
    fn query_parameters_are_hidden() {
        assert_eq!(
            redact("postgres://user:secret@host:5432/db?sslmode=require"),
            "postgres://***@host:5432/db?sslmode=require"
        );
        assert_eq!(
            redact("mysql://127.0.0.1/test?user=root&password=x&ssl-mode=required"),
            "mysql://127.0.0.1/test?user=***&password=***&ssl-mode=required"
        );
        assert_eq!(
            redact("redis://h/?password=s3cret&protocol=resp3"),
            "redis://h/?password=***&protocol=resp3"
        );
        assert_eq!(
            redact("postgres://db/flags?USERNAME=app&sslpassword=s3cret&Pass=x#frag"),
            "postgres://db/flags?USERNAME=***&sslpassword=***&Pass=***#frag"
        );
        // A `#` followed by more parameters is part of a value; the last `#` starts a fragment.
        assert_eq!(
            redact("mysql://h/x?password=a#b&user=u#v&x=1#frag"),
            "mysql://h/x?password=***&user=***&x=1#frag"
        );
        let secrets = Secrets::from_url("mysql://h/x?password=a#b&user=u#v&x=1#frag");
        assert_eq!(
            secrets.scrub("a#b; a; 'u#v'; 'u'"),
            "***; ***; '***'; '***'"
        );
        let secrets = Secrets::from_url("postgres://db/x?user=bob&sslpassword=s3%2Fc#f");
        assert_eq!(
            secrets.scrub("user=bob 's3/c' s3%2Fc bob"),
            "user=*** '***' *** bob"
        );
    }

    #[test]
    fn redacting_twice_changes_nothing() {
        for url in [
            "postgres://app:s3/cret@db:5432/flags?password=x&user=y",
            "redis://:pw@h1:1,h2:2/0",
            "app:pw@db/flags",
            "redis+unix:///s.sock?pass=x",
            "postgres://u:pw@bad host/db",
        ] {
            let once = redact(url);
            assert_eq!(redact(&once), once, "{url}");
        }
    }

    #[test]
    fn messages_are_scrubbed() {
        let url = ParsedUrl::parse("postgres://app%40x:p%2Fw/1@h/db?password=qq1&user=bob");
        let secrets = &url.secrets;
        let text = "password authentication failed for user \"app@x\" ('bob'): p/w/1 p%2Fw/1 qq1";
        let scrubbed = secrets.scrub(text);
        assert_eq!(
            scrubbed,
            "password authentication failed for user \"***\" ('***'): *** *** ***"
        );
        assert!(secrets.shown_in(text));
        assert!(!secrets.shown_in(&scrubbed));
        // An unquoted user name that is an ordinary word stays.
        let mut app = Secrets::new();
        app.add_user("database");
        assert_eq!(
            app.scrub("database \"x\" does not exist"),
            "database \"x\" does not exist"
        );
        assert_eq!(format!("{app:?}"), "Secrets(***)");
        // A longer secret holding a shorter one is hidden whole.
        let mut nested = Secrets::new();
        nested.add_password("pw");
        nested.add_password("pw-long");
        assert_eq!(nested.scrub("pw-long pw"), "*** ***");
        assert!(Secrets::new().is_empty());
        nested.add_password("");
        assert!(!nested.shown_in("nothing"));
    }

    #[test]
    fn percent_escapes_are_decoded_where_they_are_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "%ff");
        assert_eq!(percent_decode("%ff%fe"), "%ff%fe");
        assert_eq!(percent_decode("%C3%A9"), "é");
        let parsed = ParsedUrl::parse("redis://u%40x:p%2Fw%3F@h/");
        assert_eq!(
            (parsed.user.as_deref(), parsed.password.as_deref()),
            (Some("u@x"), Some("p/w?"))
        );
        let parsed = ParsedUrl::parse("redis://:100%sure%zz%4@h/");
        assert_eq!(parsed.password.as_deref(), Some("100%sure%zz%4"));
    }
}
