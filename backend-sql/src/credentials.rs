//! Database URLs taken apart so that credentials never print: the user information is handed to
//! the driver on its own (so a password may hold `/`, `?`, `#`, `@` or `%` without
//! percent-encoding), URLs are shown with it replaced by `***`, and the driver's and the server's
//! messages are scrubbed of the user name and password before they reach an error or a log.

use std::fmt;

/// The user information and the `user=` / `password=` parameters of a URL: what no message may
/// show.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Secrets {
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
    /// Adds a password (its written and percent-decoded forms).
    pub(crate) fn add_password(&mut self, password: &str) {
        for form in [password.to_owned(), percent_decode(password)] {
            if !form.is_empty() && !self.passwords.contains(&form) {
                self.passwords.push(form);
            }
        }
    }

    /// Adds a user name (its written and percent-decoded forms).
    pub(crate) fn add_user(&mut self, user: &str) {
        for form in [user.to_owned(), percent_decode(user)] {
            if !form.is_empty() && !self.users.contains(&form) {
                self.users.push(form);
            }
        }
    }

    /// True if `text` shows a secret (as [`scrub`](Self::scrub) would hide it).
    pub(crate) fn shown_in(&self, text: &str) -> bool {
        self.scrub(text) != text
    }

    /// `text` with every password and every quoted user name (`"app"`, `'app'`, `user=app`)
    /// replaced by `***`. Longer secrets first, so that one holding another is hidden whole.
    pub(crate) fn scrub(&self, text: &str) -> String {
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

/// A database URL taken apart: `scheme://[user[:password]@]rest`.
#[derive(Clone)]
pub(crate) struct Url {
    /// The URL without its user information, for the driver.
    pub(crate) bare: String,
    /// The user name, percent-decoded (`None`: none given).
    pub(crate) user: Option<String>,
    /// The password, percent-decoded (`None`: none given).
    pub(crate) password: Option<String>,
    /// The URL as messages show it ([`redact_url`]).
    pub(crate) shown: String,
    /// The credentials it holds, for scrubbing messages.
    pub(crate) secrets: Secrets,
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Url")
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Url {
    /// Takes `url` apart. The user information ends at the **last** `@` followed by a host
    /// ([`split_user_info`]), so a user name or password may hold `/`, `?`, `#`, `@`, `%` (and
    /// the password `:`) without percent-encoding; an `@` in a query must then be
    /// percent-encoded.
    pub(crate) fn parse(url: &str) -> Url {
        let mut secrets = query_secrets(url);
        let parts = url
            .split_once("://")
            .and_then(|(scheme, rest)| Some((scheme, split_user_info(rest)?)));
        let Some((scheme, (info, host))) = parts else {
            return Url {
                bare: url.to_owned(),
                user: None,
                password: None,
                shown: redact_url(url),
                secrets,
            };
        };
        let (user, password) = match info.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (info, None),
        };
        secrets.add_user(user);
        if let Some(password) = password {
            secrets.add_password(password);
        }
        Url {
            bare: format!("{scheme}://{host}"),
            user: (!user.is_empty()).then(|| percent_decode(user)),
            password: password.filter(|p| !p.is_empty()).map(percent_decode),
            shown: redact_url(url),
            secrets,
        }
    }
}

/// `rest` (a URL after `scheme://`) split into the user information and what follows it: the
/// user information ends at the last `@` that is followed by a host (`host[:port]`, up to the
/// next `/`, `?` or `#`: letters, digits, `.`, `-`, `_`, `:`, `[`, `]`, `%`, `,`, `~`, or empty for
/// a socket). An `@` in a query (`?password=a@b&...`) is followed by no host, so a URL without
/// user information whose query holds one is not taken for credentials.
fn split_user_info(rest: &str) -> Option<(&str, &str)> {
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

/// The values of `user=` and `password=` query parameters of `url`.
fn query_secrets(url: &str) -> Secrets {
    let mut secrets = Secrets::default();
    let Some((_, query)) = url.split_once('?') else {
        return secrets;
    };
    for pair in query.split(['&', '#']) {
        if let Some((name, value)) = pair.split_once('=') {
            let name = name.to_ascii_lowercase();
            if name.contains("pass") {
                secrets.add_password(value);
            } else if name == "user" || name == "username" {
                secrets.add_user(value);
            }
        }
    }
    secrets
}

/// `url` as messages and `Debug` show it: the user information (user name and password,
/// whatever characters they hold) replaced by `***`, and so the values of `user=` and
/// `password=` query parameters.
pub(crate) fn redact_url(url: &str) -> String {
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => match split_user_info(rest) {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    let Some((head, query)) = shown.split_once('?') else {
        return shown;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if name.to_ascii_lowercase().contains("pass")
                    || name.eq_ignore_ascii_case("user")
                    || name.eq_ignore_ascii_case("username") =>
            {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", query.join("&"))
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits stays as written, and escapes that
/// do not decode to UTF-8 leave the text as written.
pub(crate) fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_or_else(|_| text.to_owned(), std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// User names and passwords with every character that ends a URL's authority, a `%` that
    /// is no escape, an escape, and non-ASCII letters, none percent-encoded.
    const NASTY: [&str; 8] = [
        "s3/cret",
        "s3?cret",
        "s3#cret",
        "s3@cret",
        "s3%cret",
        "s3%41cret",
        "sëcrét✓",
        "a/b?c#d@e%f:g",
    ];

    #[test]
    fn credentials_end_at_the_last_at_sign() {
        for user in ["app", "a/p?p#@%ü"] {
            for password in NASTY {
                let url =
                    format!("postgres://{user}:{password}@db.internal:5432/app?sslmode=disable");
                let parsed = Url::parse(&url);
                assert_eq!(
                    parsed.bare,
                    "postgres://db.internal:5432/app?sslmode=disable"
                );
                assert_eq!(parsed.user.as_deref(), Some(percent_decode(user).as_str()));
                assert_eq!(parsed.password, Some(percent_decode(password)));
                assert_eq!(
                    parsed.shown,
                    "postgres://***@db.internal:5432/app?sslmode=disable"
                );
                for text in [&parsed.shown, &format!("{parsed:?}")] {
                    assert!(!text.contains(password), "{text}");
                    assert!(!text.contains(&percent_decode(password)), "{text}");
                }
            }
        }
        let plain = Url::parse("mysql://db:3306/app");
        assert_eq!(
            (plain.bare.as_str(), plain.user, plain.password),
            ("mysql://db:3306/app", None, None)
        );
        let user_only = Url::parse("mysql://app@db/x");
        assert_eq!(user_only.user.as_deref(), Some("app"));
        assert_eq!(user_only.password, None);
        assert_eq!(user_only.shown, "mysql://***@db/x");
    }

    #[test]
    fn an_at_sign_in_a_query_is_no_user_information() {
        let url = "postgres://127.0.0.1:5/db?user=u/x?y#z@w&password=pw0/secret&sslmode=bogus";
        let parsed = Url::parse(url);
        assert_eq!(parsed.bare, url);
        assert_eq!(parsed.user, None);
        assert!(!parsed.shown.contains("pw0"), "{}", parsed.shown);
        assert!(parsed.secrets.scrub("pw0/secret").contains("***"));
        // The user information ends at the last '@' followed by a host.
        let parsed = Url::parse("mysql://u:p@ss@db.internal:3306/x?note=a@b&c");
        assert_eq!(parsed.bare, "mysql://db.internal:3306/x?note=a@b&c");
        assert_eq!(parsed.password.as_deref(), Some("p@ss"));
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            redact_url("postgres://user:secret@host:5432/db?sslmode=require"),
            "postgres://***@host:5432/db?sslmode=require"
        );
        assert_eq!(
            redact_url("mysql://127.0.0.1/test?user=root&password=x&ssl-mode=required"),
            "mysql://127.0.0.1/test?user=***&password=***&ssl-mode=required"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact_url("sqlite://data.db"), "sqlite://data.db");
        for password in NASTY {
            let shown = redact_url(&format!("postgres://u:{password}@h/db"));
            assert_eq!(shown, "postgres://***@h/db");
        }
    }

    #[test]
    fn messages_are_scrubbed() {
        let url = Url::parse("postgres://app%40x:p%2Fw/1@h/db?password=qq1&user=bob");
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
        let mut app = Secrets::default();
        app.add_user("database");
        assert_eq!(
            app.scrub("database \"x\" does not exist"),
            "database \"x\" does not exist"
        );
        assert_eq!(format!("{app:?}"), "Secrets(***)");
    }

    #[test]
    fn percent_escapes_are_decoded_where_they_are_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "%ff");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
