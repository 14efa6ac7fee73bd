//! Connection and layout options.

use std::fmt;
use std::time::Duration;

use durable_core::{Error, Result};
use zookeeper_client::{Acl, Acls, CreateMode, CreateOptions};

/// How to reach ZooKeeper and where to keep dictionaries.
///
/// Built from a connect string (`host:port[,host:port...][/chroot]`, the syntax of ZooKeeper's
/// own clients) and `with_*` options. Every option has a documented default.
///
/// ```
/// use std::time::Duration;
/// use durable_zookeeper::ZooKeeperConfig;
///
/// let config = ZooKeeperConfig::new("zk1:2181,zk2:2181,zk3:2181/apps")
///     .with_root("/durable")
///     .with_session_timeout(Duration::from_secs(10))
///     .with_digest_auth("app", "secret");
/// // The password never appears in debug output.
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct ZooKeeperConfig {
    pub(crate) connect: String,
    pub(crate) root: String,
    pub(crate) session_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) history: u32,
    pub(crate) auth: Option<(String, String)>,
    pub(crate) acls: AclPolicy,
}

#[derive(Clone, Debug)]
pub(crate) enum AclPolicy {
    AnyoneAll,
    CreatorAll,
    Custom(Vec<Acl>),
}

impl ZooKeeperConfig {
    /// The default root path under the chroot: `/durable`.
    pub const DEFAULT_ROOT: &'static str = "/durable";
    /// The default session timeout negotiated with the server: 10 s.
    pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default bound on one operation, including waiting for a lost connection: 10 s.
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default number of writes whose change log is kept for deltas: 1000.
    pub const DEFAULT_HISTORY: u32 = 1000;

    /// Options for the servers of `connect` (`host:port[,host:port...][/chroot]`), with every
    /// other option at its default.
    pub fn new(connect: impl Into<String>) -> Self {
        ZooKeeperConfig {
            connect: connect.into(),
            root: Self::DEFAULT_ROOT.to_owned(),
            session_timeout: Self::DEFAULT_SESSION_TIMEOUT,
            operation_timeout: Self::DEFAULT_OPERATION_TIMEOUT,
            history: Self::DEFAULT_HISTORY,
            auth: None,
            acls: AclPolicy::AnyoneAll,
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

    /// Authenticates the session with ZooKeeper's `digest` scheme (`user:password`). The
    /// password is kept out of `Debug` output.
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

    /// The connect string (servers and chroot).
    pub fn connect_string(&self) -> &str {
        &self.connect
    }

    pub(crate) fn create_options(&self) -> CreateOptions<'_> {
        let acls = match &self.acls {
            AclPolicy::AnyoneAll => Acls::anyone_all(),
            AclPolicy::CreatorAll => Acls::creator_all(),
            AclPolicy::Custom(acls) => Acls::new(acls),
        };
        CreateMode::Persistent.with_acls(acls)
    }

    /// Splits the connect string into servers and chroot, and checks the root.
    pub(crate) fn validate(&self) -> Result<(String, Option<String>)> {
        let (hosts, chroot) = match self.connect.find('/') {
            Some(i) => (&self.connect[..i], Some(&self.connect[i..])),
            None => (&self.connect[..], None),
        };
        if hosts.trim().is_empty() {
            return Err(Error::Config(format!(
                "zookeeper: connect string {:?} names no server",
                self.connect
            )));
        }
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
        Ok((hosts.to_owned(), chroot))
    }
}

fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && path[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.chars().any(char::is_control))
}

impl fmt::Debug for ZooKeeperConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZooKeeperConfig")
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
