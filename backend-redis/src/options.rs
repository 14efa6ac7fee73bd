//! [`RedisOptions`]: timeouts and layout settings of a [`RedisStore`](crate::RedisStore).

use std::time::Duration;

use durable_core::{Error, Result};

/// Connection and layout options of a [`RedisStore`](crate::RedisStore).
///
/// ```
/// use std::time::Duration;
/// use durable_redis::RedisOptions;
///
/// let options = RedisOptions::new()
///     .with_response_timeout(Duration::from_secs(2))
///     .with_tombstone_retention(Duration::from_secs(600));
/// assert_eq!(options.tombstone_retention(), Duration::from_secs(600));
/// ```
#[derive(Debug, Clone)]
pub struct RedisOptions {
    response_timeout: Duration,
    connection_timeout: Duration,
    tombstone_retention: Duration,
    load_chunk: usize,
    max_delta: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(2),
            tombstone_retention: Duration::from_secs(3600),
            load_chunk: 2000,
            max_delta: 100_000,
        }
    }
}

impl RedisOptions {
    /// The defaults: response timeout 5 s, connection timeout 2 s, tombstone retention 1 h,
    /// full loads in chunks of 2000 entries, deltas of at most 100 000 keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long one command or script may take before it fails with
    /// [`Error::Unavailable`] (default 5 s; the driver's own default of 500 ms is too short
    /// for chunked loads of large values).
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long connecting may take (default 2 s).
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long deleted keys are remembered for delta sync (default 1 h). A process whose
    /// token is older than the oldest remembered delete gets a full reload instead of a delta.
    pub fn with_tombstone_retention(mut self, retention: Duration) -> Self {
        self.tombstone_retention = retention;
        self
    }

    /// How many entries one chunk of a full load asks for (an `HSCAN COUNT` hint, default 2000).
    pub fn with_load_chunk(mut self, entries: usize) -> Self {
        self.load_chunk = entries.max(1);
        self
    }

    /// The largest delta served (default 100 000 changed keys); a larger one is answered with
    /// "too old" so the engine does a chunked full load instead of one huge reply.
    pub fn with_max_delta(mut self, keys: usize) -> Self {
        self.max_delta = keys.max(1);
        self
    }

    /// The response timeout.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The connection timeout.
    pub fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }

    /// The tombstone retention.
    pub fn tombstone_retention(&self) -> Duration {
        self.tombstone_retention
    }

    /// How many entries one chunk of a full load asks for.
    pub fn load_chunk(&self) -> usize {
        self.load_chunk
    }

    pub(crate) fn max_delta(&self) -> usize {
        self.max_delta
    }

    /// Refuses timeouts of zero (every command would fail at once).
    pub(crate) fn check(&self) -> Result<()> {
        for (name, value) in [
            ("response timeout", self.response_timeout),
            ("connection timeout", self.connection_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::Config(format!(
                    "the Redis {name} must be above zero"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeouts_are_refused() {
        let error = RedisOptions::new()
            .with_response_timeout(Duration::ZERO)
            .check()
            .unwrap_err();
        assert!(error.to_string().contains("response timeout"), "{error}");
        let error = RedisOptions::new()
            .with_connection_timeout(Duration::ZERO)
            .check()
            .unwrap_err();
        assert!(error.to_string().contains("connection timeout"), "{error}");
        assert!(RedisOptions::new().check().is_ok());
    }
}
