//! Connection and layout options.

use std::fmt;
use std::time::Duration;

use durable_core::credentials::percent_decode;
use durable_core::{Error, Result};
use zookeeper_client::{Acl, Acls, CreateMode, CreateOptions};

/// How to reach ZooKeeper and where to keep dictionaries.
///
/// Built from a connect string (`host:port[,host:port...][/chroot]`, the syntax of ZooKeeper's
/// own clients, optionally with `user:password@` in front for [digest
/// authentication](Self::with_digest_auth)) and `with_*` options. Every option has a documented
/// default.
///
/// ```
/// use std::time::Duration;
/// use durable_zookeeper::ZooKeeperOptions;
///
/// let options = ZooKeeperOptions::new("zk1:2181,zk2:2181,zk3:2181/apps")
///     .with_root("/durable")
///     .with_session_timeout(Duration::from_secs(10))
///     .with_digest_auth("app", "secret");
/// // The password never appears in debug output.
/// assert!(!format!("{options:?}").contains("secret"));
///
/// // The same credentials in the connect string, as in a `zk://` URL: the user and password go
/// // to digest authentication and out of the connect string.
/// let options = ZooKeeperOptions::new("app:s3/cr@t@zk1:2181,zk2:2181/apps");
/// assert_eq!(options.connect_string(), "zk1:2181,zk2:2181/apps");
/// assert!(!format!("{options:?}").contains("s3/cr@t"));
/// ```
///
/// # Credentials in the connect string
///
/// Everything before the last `@` that is followed by a valid server list is `user:password`
/// (the user up to the first `:`), so a password may hold `/`, `?`, `#`, `@`, `%`, `:` and any
/// other character without escaping. `%XX` escapes (two hex digits) are decoded as in URLs, so
/// a literal `%` followed by two hex digits must be written `%25`. Consequence: a chroot cannot
/// contain `@` when credentials come in the connect string; give them with
/// [`with_digest_auth`](Self::with_digest_auth) then. Neither the password nor the text that
/// held it ever appears in an error, in `Debug` output or in a log line.
#[derive(Clone)]
pub struct ZooKeeperOptions {
    pub(crate) connect: String,
    pub(crate) root: String,
    pub(crate) session_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) history: u32,
    pub(crate) auth: Option<Credentials>,
    pub(crate) acls: AclPolicy,
    /// What is wrong with the credentials of the connect string, for [`validate`](Self::validate)
    /// (never their text).
    problem: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) enum AclPolicy {
    AnyoneAll,
    CreatorAll,
    Custom(Vec<Acl>),
}

impl ZooKeeperOptions {
    /// The default root path under the chroot: `/durable`.
    pub const DEFAULT_ROOT: &'static str = "/durable";
    /// The default session timeout negotiated with the server: 10 s.
    pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default bound on one operation, including waiting for a lost connection: 10 s.
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default number of writes whose change log is kept for deltas: 1000.
    pub const DEFAULT_HISTORY: u32 = 1000;

    /// Options for the servers of `connect` (`[user:password@]host:port[,host:port...][/chroot]`,
    /// see [Credentials in the connect string](#credentials-in-the-connect-string)), with every
    /// other option at its default. A connect string that is not valid is reported by
    /// [`ZooKeeperStore::new`](crate::ZooKeeperStore::new) as [`Error::Config`] naming the
    /// problem.
    pub fn new(connect: impl Into<String>) -> Self {
        let connect = connect.into();
        let (connect, auth, problem) = match split_credentials(&connect) {
            Ok((auth, rest)) => (rest.to_owned(), auth, None),
            // Keep only what follows the last `@`: what precedes it may be a password.
            Err(problem) => {
                let rest = connect.rsplit_once('@').map_or("", |(_, rest)| rest);
                (rest.to_owned(), None, Some(problem))
            }
        };
        ZooKeeperOptions {
            connect,
            root: Self::DEFAULT_ROOT.to_owned(),
            session_timeout: Self::DEFAULT_SESSION_TIMEOUT,
            operation_timeout: Self::DEFAULT_OPERATION_TIMEOUT,
            history: Self::DEFAULT_HISTORY,
            auth,
            acls: AclPolicy::AnyoneAll,
            problem,
        }
    }

    /// The path (inside the chroot) under which dictionaries live, as
    /// `<root>/<namespace>/<dictionary>`. Default [`DEFAULT_ROOT`](Self::DEFAULT_ROOT).
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// The session timeout asked of the server (the server clamps it to 2 to 20 ticks). A
    /// disconnection shorter than this keeps the session; a longer one expires it, and the
    /// backend then builds a new client. Default
    /// [`DEFAULT_SESSION_TIMEOUT`](Self::DEFAULT_SESSION_TIMEOUT).
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// The bound on one backend operation. ZooKeeper clients queue requests while disconnected;
    /// this turns a long wait into [`Error::Timeout`]. Default
    /// [`DEFAULT_OPERATION_TIMEOUT`](Self::DEFAULT_OPERATION_TIMEOUT).
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How many recent writes keep their change-log node, which serves deltas: a handle more
    /// than this many writes behind does a full reload. Each node also holds its write's stamp,
    /// so this is the stamp history too (`durable_core::STAMP_HISTORY` suggests 65,536; the
    /// default keeps one small znode per write for the last 1000). At least 1. Default
    /// [`DEFAULT_HISTORY`](Self::DEFAULT_HISTORY).
    pub fn with_history(mut self, writes: u32) -> Self {
        self.history = writes.max(1);
        self
    }

    /// Authenticates the session with ZooKeeper's `digest` scheme (`user:password`), instead
    /// of credentials given in the connect string. The password is kept out of `Debug` output,
    /// errors and logs.
    pub fn with_digest_auth(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// Creates znodes readable and writable by the authenticated identities of the creating
    /// session only (`auth` scheme, ZooKeeper's `CREATOR_ALL_ACL`); combine with
    /// [`with_digest_auth`](Self::with_digest_auth). The default is `world:anyone` with all
    /// permissions.
    pub fn with_creator_acls(mut self) -> Self {
        self.acls = AclPolicy::CreatorAll;
        self
    }

    /// Creates znodes with these ACLs.
    pub fn with_acls(mut self, acls: Vec<Acl>) -> Self {
        self.acls = AclPolicy::Custom(acls);
        self
    }

    /// The connect string: servers and chroot, without credentials.
    pub fn connect_string(&self) -> &str {
        &self.connect
    }

    /// The user name of digest authentication, if any (the password is never shown).
    pub fn digest_user(&self) -> Option<&str> {
        self.auth.as_ref().map(|(user, _)| &user[..])
    }

    pub(crate) fn create_options(&self) -> CreateOptions<'_> {
        let acls = match &self.acls {
            AclPolicy::AnyoneAll => Acls::anyone_all(),
            AclPolicy::CreatorAll => Acls::creator_all(),
            AclPolicy::Custom(acls) => Acls::new(acls),
        };
        CreateMode::Persistent.with_acls(acls)
    }

    /// Splits the connect string into servers (checked, `host:port` joined by `,`) and chroot,
    /// and checks the root. Errors name the problem, never the credentials.
    pub(crate) fn validate(&self) -> Result<(Vec<Server>, Option<String>)> {
        if let Some(problem) = &self.problem {
            return Err(Error::Config(format!("zookeeper: {problem}")));
        }
        let (hosts, chroot) = split_chroot(&self.connect);
        let servers = parse_servers(hosts).map_err(|problem| {
            Error::Config(format!(
                "zookeeper: connect string {:?}: {problem}",
                self.connect
            ))
        })?;
        let chroot = chroot.filter(|c| *c != "/").map(str::to_owned);
        for (what, path) in [
            ("chroot", chroot.as_deref()),
            ("root", Some(&self.root[..])),
        ] {
            if let Some(path) = path
                && !valid_path(path)
            {
                return Err(Error::Config(format!(
                    "zookeeper: {what} {path:?} must be an absolute path like /a/b without a trailing slash"
                )));
            }
        }
        if self.auth.as_ref().is_some_and(|(user, _)| user.is_empty()) {
            return Err(Error::Config(
                "zookeeper: the digest user name is empty (credentials are `user:password`)".into(),
            ));
        }
        Ok((servers, chroot))
    }
}

/// One server of the connect string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    /// The host name or address (an IPv6 address without its brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// ZooKeeper's client port, used for a server given without one.
const DEFAULT_PORT: u16 = 2181;

/// A digest user and password.
type Credentials = (String, String);

/// Splits `user:password@` off the connect string at the last `@` that is followed by a valid
/// server list: `(credentials, the rest)`. The error never holds the credentials' text.
fn split_credentials(connect: &str) -> Result<(Option<Credentials>, &str), String> {
    if !connect.contains('@') {
        return Ok((None, connect));
    }
    let found = connect
        .match_indices('@')
        .rev()
        .map(|(i, _)| (&connect[..i], &connect[i + 1..]))
        .find(|(_, rest)| parse_servers(split_chroot(rest).0).is_ok());
    let Some((info, rest)) = found else {
        let last = connect.rsplit_once('@').map_or("", |(_, rest)| rest);
        let problem = parse_servers(split_chroot(last).0)
            .err()
            .unwrap_or_default();
        return Err(format!(
            "the connect string holds `@`, read as credentials `user:password@` before the \
             servers, but no valid server list follows any `@`; after the last one, \
             {:?}: {problem}",
            last
        ));
    };
    let Some((user, password)) = info.split_once(':') else {
        return Err(
            "the credentials before `@` in the connect string must be `user:password` (no `:` \
             found)"
                .into(),
        );
    };
    Ok((Some((percent_decode(user), percent_decode(password))), rest))
}

/// Splits servers from the chroot: the chroot starts at the first `/` that is not part of a
/// server's `tcp://` prefix.
fn split_chroot(connect: &str) -> (&str, Option<&str>) {
    let mut at = 0;
    loop {
        let rest = &connect[at..];
        for prefix in ["tcp://", "tcp+tls://"] {
            if rest.starts_with(prefix) {
                at += prefix.len();
                break;
            }
        }
        match connect[at..].find([',', '/']) {
            Some(i) if connect[at + i..].starts_with(',') => at += i + 1,
            Some(i) => return (&connect[..at + i], Some(&connect[at + i..])),
            None => return (connect, None),
        }
    }
}

/// Parses `host[:port][,host[:port]...]` (each optionally `tcp://`; `[v6]:port` for IPv6
/// addresses). The error names the server and what is wrong with it.
fn parse_servers(hosts: &str) -> Result<Vec<Server>, String> {
    if hosts.trim().is_empty() {
        return Err("it names no server (expected host:port[,host:port...][/chroot])".into());
    }
    hosts
        .split(',')
        .map(|entry| {
            if entry.starts_with("tcp+tls://") {
                return Err(format!(
                    "server {entry:?}: TLS (`tcp+tls://`) is not supported by this backend"
                ));
            }
            let address = entry.strip_prefix("tcp://").unwrap_or(entry);
            parse_server(address).map_err(|what| format!("server {entry:?}: {what}"))
        })
        .collect()
}

fn parse_server(address: &str) -> Result<Server, String> {
    if address.is_empty() {
        return Err("empty (two commas in a row, or a comma at an end)".into());
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("an IPv6 address opened with `[` is not closed with `]`".into());
        };
        if !host.contains(':')
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":.%".contains(c))
        {
            return Err(format!("{host:?} in brackets is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("expected `:port` after the `]` of an IPv6 address".into()),
            },
        }
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if !address.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "host {host:?} is not a host name or address (letters, digits, `.`, `-`, `_`; an \
             IPv6 address goes in brackets: [::1]:2181)"
        ));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(number) if number > 0 && port.bytes().all(|b| b.is_ascii_digit()) => number,
            _ => return Err(format!("port {port:?} is not a number from 1 to 65535")),
        },
    };
    Ok(Server {
        host: host.to_owned(),
        port,
    })
}

fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && path[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.chars().any(char::is_control))
}

impl fmt::Debug for ZooKeeperOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZooKeeperOptions")
            .field("connect", &self.connect)
            .field("root", &self.root)
            .field("session_timeout", &self.session_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("history", &self.history)
            .field(
                "auth",
                &self
                    .auth
                    .as_ref()
                    .map(|(user, _)| format!("digest {user}:***")),
            )
            .field("acls", &self.acls)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ZooKeeperStore;

    /// User names and passwords with the characters that end a URL's authority, written raw.
    const SECRETS: [(&str, &str); 8] = [
        ("app", "s3/cret"),
        ("app", "s?cret"),
        ("app", "s#cret"),
        ("app", "s@cr@t"),
        ("app", "100%pure"),
        ("app", "p:w/?#@%"),
        ("ü/s?e#r", "sécret/€?#@"),
        ("me@corp", "pa@ss:w/rd"),
    ];

    #[test]
    fn credentials_leave_the_connect_string() {
        for (user, password) in SECRETS {
            for servers in ["h1:2181", "h1:2181,h2:2182/apps", "tcp://h1,[::1]:2181/a/b"] {
                let options = ZooKeeperOptions::new(format!("{user}:{password}@{servers}"));
                assert_eq!(options.connect_string(), servers);
                assert_eq!(
                    options.auth.as_ref().map(|(u, p)| (&u[..], &p[..])),
                    Some((user, password)),
                    "{user}:{password}@{servers}"
                );
                let shown = format!("{options:?}");
                assert!(!shown.contains(password), "{shown}");
                options.validate().expect("valid");
            }
        }
        let options = ZooKeeperOptions::new("app:p%40ss%2Fw@h1:2181");
        assert_eq!(
            options.auth,
            Some(("app".into(), "p@ss/w".into())),
            "%XX escapes decode"
        );
        assert_eq!(ZooKeeperOptions::new("h1:2181/apps").auth, None);
    }

    #[test]
    fn configuration_errors_name_the_problem_not_the_password() {
        for (user, password) in SECRETS {
            for (servers, expected) in [
                ("h1:notaport", "port \"notaport\""),
                ("h1:0", "port \"0\""),
                ("h1:65536", "from 1 to 65535"),
                ("h1,,h2", "empty"),
                ("", "no valid server list"),
                ("h 1:2181", "not a host name"),
                ("[::1", "not closed"),
                ("tcp+tls://h1:2181", "TLS"),
                ("h1:2181/apps/", "chroot \"/apps/\""),
            ] {
                let connect = format!("{user}:{password}@{servers}");
                let Err(Error::Config(message)) =
                    ZooKeeperStore::new(ZooKeeperOptions::new(&connect))
                else {
                    panic!("{connect}: not a configuration error");
                };
                assert!(message.contains(expected), "{connect}: {message}");
                assert!(!message.contains(password), "{connect}: {message}");
            }
        }
        for (connect, expected) in [
            ("", "names no server"),
            ("h1:x", "port \"x\""),
            ("h1:+5", "port \"+5\""),
            ("app@h1:2181", "must be `user:password`"),
            (":pw@h1:2181", "user name is empty"),
        ] {
            let Err(Error::Config(message)) = ZooKeeperStore::new(ZooKeeperOptions::new(connect))
            else {
                panic!("{connect}: not a configuration error");
            };
            assert!(message.contains(expected), "{connect}: {message}");
            assert!(!message.contains("pw"), "{connect}: {message}");
        }
        let Err(Error::Config(message)) =
            ZooKeeperStore::new(ZooKeeperOptions::new("h1").with_root("durable"))
        else {
            panic!("a relative root");
        };
        assert!(message.contains("root \"durable\""), "{message}");
    }

    #[test]
    fn servers_parse_like_zookeeper_clients() {
        let servers = |connect: &str| {
            let (hosts, chroot) = split_chroot(connect);
            let servers: Vec<String> = parse_servers(hosts)
                .expect(connect)
                .iter()
                .map(Server::to_string)
                .collect();
            (servers.join(","), chroot.map(str::to_owned))
        };
        assert_eq!(servers("h1"), ("h1:2181".into(), None));
        assert_eq!(
            servers("tcp://h1:1,h2:2/a/b"),
            ("h1:1,h2:2".into(), Some("/a/b".into()))
        );
        assert_eq!(
            servers("[::1]:2182,[fe80::1%eth0]/x"),
            ("[::1]:2182,[fe80::1%eth0]:2181".into(), Some("/x".into()))
        );
    }
}
