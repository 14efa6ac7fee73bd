//! How a dictionary handle syncs, times out, and recovers.

use std::path::PathBuf;
use std::time::Duration;

/// When the local snapshot is brought up to date.
///
/// [`Dict::sync`](crate::Dict::sync) works in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Only when the program calls [`Dict::sync`](crate::Dict::sync) (for example once per web
    /// request). [`Dict::read`](crate::Dict::read) returns the local snapshot.
    Manual,
    /// [`Dict::read`](crate::Dict::read) checks the version first, unless the snapshot was
    /// confirmed less than `max_staleness` ago (zero: always check). A read then sees every write
    /// acknowledged anywhere before it began.
    Autosync {
        /// How old a confirmed snapshot may be and still be read without a check.
        max_staleness: Duration,
    },
    /// A background task checks every `interval` (with ±10% jitter so a fleet does not
    /// synchronise), earlier when a push hint arrives, and backs off exponentially up to
    /// `max_backoff` while the store fails. [`Dict::read`](crate::Dict::read) returns the local
    /// snapshot.
    Background {
        /// Time between checks.
        interval: Duration,
        /// The longest wait between checks while the store keeps failing.
        max_backoff: Duration,
    },
}

impl Mode {
    /// [`Mode::Autosync`] that checks before every read.
    pub const fn autosync() -> Self {
        Mode::Autosync {
            max_staleness: Duration::ZERO,
        }
    }

    /// [`Mode::Background`] with the given interval and a back-off of up to 30 s (or the
    /// interval, if longer).
    pub fn background(interval: Duration) -> Self {
        Mode::Background {
            interval,
            max_backoff: interval.max(Duration::from_secs(30)),
        }
    }
}

/// What a sync does with a stored value that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DecodeErrors {
    /// The default: a bad value costs its key only. The sync succeeds, the key keeps its last
    /// good value (absent if it never had one), and [`Health::bad_keys`](crate::Health::bad_keys),
    /// [`Stats::bad_keys`](crate::Stats::bad_keys) and a warning name the key and the cause
    /// until the key is written or deleted again.
    #[default]
    Isolate,
    /// The sync fails with [`Error::Decode`](crate::Error::Decode) naming the key; the previous
    /// snapshot stays, and a handle cannot open over a bad value.
    Fail,
}

/// Options of a dictionary handle. Every field has a documented default.
///
/// ```
/// use std::time::Duration;
/// use durable_core::{Mode, Options};
///
/// let options = Options::new()
///     .with_mode(Mode::background(Duration::from_secs(5)))
///     .with_timeout(Duration::from_secs(2))
///     .with_backup_file("/var/lib/myapp/flags.durable-backup");
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) mode: Mode,
    pub(crate) timeout: Duration,
    pub(crate) open_timeout: Duration,
    pub(crate) load_timeout: Duration,
    pub(crate) max_value_size: Option<usize>,
    pub(crate) max_entries: Option<usize>,
    pub(crate) max_total_bytes: Option<usize>,
    pub(crate) backup_file: Option<PathBuf>,
    pub(crate) max_backup_size: u64,
    pub(crate) backup_interval: Duration,
    pub(crate) decode_errors: DecodeErrors,
    pub(crate) trust_hints_for: Option<Duration>,
    pub(crate) max_update_attempts: u32,
    pub(crate) listener_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Manual,
            timeout: Duration::from_secs(5),
            open_timeout: Duration::from_secs(10),
            load_timeout: Duration::from_secs(60),
            max_value_size: None,
            max_entries: None,
            max_total_bytes: None,
            backup_file: None,
            max_backup_size: 1 << 30,
            backup_interval: Duration::from_secs(1),
            decode_errors: DecodeErrors::Isolate,
            trust_hints_for: None,
            max_update_attempts: 64,
            listener_capacity: 1024,
        }
    }
}

impl Options {
    /// The defaults: manual mode, 5 s per operation, 10 s to open, 60 s per full load, no size
    /// limits, no backup file (written at most once a second when set), a bad stored value costs
    /// its key only, every `sync()` checks the version (push hints only wake background mode), 64
    /// update attempts, 1024 buffered change events per listener.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sync mode (default [`Mode::Manual`]).
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The time limit of each store operation (default 5 s) but full loads and clears (see
    /// [`with_load_timeout`](Self::with_load_timeout)); exceeding it gives
    /// [`Error::Timeout`](crate::Error::Timeout).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The time limit of the initial load in [`Dict::open`](crate::Dict::open) (default 10 s).
    pub fn with_open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// The time limit of one full load of the dictionary, at open and when a sync reloads, and
    /// of a [`clear`](crate::Dict::clear) (default 60 s), instead of the per-operation timeout:
    /// a million entries take seconds to load or delete. The open is still bounded by [`with_open_timeout`](Self::with_open_timeout): raise
    /// both for dictionaries whose load takes longer than 10 s.
    pub fn with_load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// The largest encoded value this handle writes or accepts (default: only the backend's own
    /// limit). A larger write fails with [`Error::ValueTooLarge`](crate::Error::ValueTooLarge)
    /// and writes nothing; a larger stored value costs its key only, like an undecodable one.
    pub fn with_max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = Some(bytes);
        self
    }

    /// The most entries the dictionary may hold (default: no limit). A write of a new key beyond
    /// it fails with [`Error::LimitExceeded`](crate::Error::LimitExceeded) and writes nothing; a
    /// sync that would bring more fails the same way and keeps the last good snapshot, so one
    /// writer cannot fill every reader's memory.
    pub fn with_max_entries(mut self, entries: usize) -> Self {
        self.max_entries = Some(entries);
        self
    }

    /// The most encoded bytes of values the dictionary may hold (default: no limit), enforced
    /// like [`with_max_entries`](Self::with_max_entries).
    pub fn with_max_total_bytes(mut self, bytes: usize) -> Self {
        self.max_total_bytes = Some(bytes);
        self
    }

    /// Keep a backup of the snapshot in this file (default: none). It is rewritten atomically
    /// after syncs and own writes that changed something (at most once per
    /// [`with_backup_interval`](Self::with_backup_interval)), and lets `open` start from it,
    /// marked stale, while the store is down.
    pub fn with_backup_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.backup_file = Some(path.into());
        self
    }

    /// The shortest time between two rewrites of the backup file (default 1 s): changes made
    /// meanwhile are written together once it has passed, so a busy dictionary costs one file
    /// write per interval, not one per change. A process that stops within the interval after a
    /// change may leave a backup without it.
    pub fn with_backup_interval(mut self, interval: Duration) -> Self {
        self.backup_interval = interval;
        self
    }

    /// The largest backup file `open` reads (default 1 GiB). A larger file is refused with
    /// [`Error::Backup`](crate::Error::Backup) before anything is read.
    pub fn with_max_backup_size(mut self, bytes: u64) -> Self {
        self.max_backup_size = bytes;
        self
    }

    /// What to do with undecodable stored values (default [`DecodeErrors::Isolate`]).
    pub fn with_decode_errors(mut self, policy: DecodeErrors) -> Self {
        self.decode_errors = policy;
        self
    }

    /// For backends with push hints: let [`Dict::sync`](crate::Dict::sync) skip the version check
    /// when no hint arrived since the last check, as long as that check is younger than `window`
    /// (default `None`: never skip).
    ///
    /// This makes a no-change `sync()` free (nanoseconds instead of a round trip), at a price:
    /// a write acknowledged to another process a moment ago is seen only once its hint has
    /// arrived (usually well under a millisecond on a LAN, but not bounded), and changes made
    /// behind the backends' backs (a `TRUNCATE` or `FLUSHALL` by hand) send no hint, so they can
    /// stay unseen for up to `window`. Turn it on where "eventually, within milliseconds" is
    /// enough (per-request sync of feature flags in a busy service); leave it off where every
    /// request must see every write acknowledged before it began. Autosync reads never skip.
    pub fn with_trust_hints_for(mut self, window: Option<Duration>) -> Self {
        self.trust_hints_for = window;
        self
    }

    /// How many compare-and-swap attempts `update` and `increment` make before giving up with
    /// [`Error::Contention`](crate::Error::Contention) (default 64).
    pub fn with_max_update_attempts(mut self, attempts: u32) -> Self {
        self.max_update_attempts = attempts.max(1);
        self
    }

    /// How many change events a slow listener may fall behind before it misses some (default
    /// 1024).
    pub fn with_listener_capacity(mut self, capacity: usize) -> Self {
        self.listener_capacity = capacity.max(1);
        self
    }
}
