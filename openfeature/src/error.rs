//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong while writing, importing or exporting flags.
///
/// Evaluation never returns this type: a flag that cannot be evaluated gets an OpenFeature
/// error code (`FLAG_NOT_FOUND`, `PARSE_ERROR`, `TYPE_MISMATCH`, ...) in its resolution instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag definition or flag file does not follow flagd's flag definition format. Nothing
    /// was written.
    #[error("invalid flag definition at {path}: {reason}")]
    Invalid {
        /// Where the problem is, as a JSON Pointer into the flag file (RFC 6901), e.g.
        /// `/flags/new-checkout/defaultVariant`. A flag written on its own is addressed as if it
        /// were in a file: `/flags/KEY/...`.
        path: String,
        /// What is wrong there.
        reason: String,
    },
    /// The text is not JSON. Nothing was written.
    #[error("flag file is not valid JSON (line {line}, column {column}): {source}")]
    Json {
        /// The line of the syntax error (1-based).
        line: usize,
        /// The column of the syntax error (1-based).
        column: usize,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A flag file could not be read or written.
    #[error("flag file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store refused or failed the write (see [`durable_core::Error`] for the categories).
    #[error(transparent)]
    Store(#[from] durable_core::Error),
}

impl Error {
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn json(source: serde_json::Error) -> Self {
        Error::Json {
            line: source.line(),
            column: source.column(),
            source,
        }
    }

    /// The JSON Pointer of the problem, for [`Error::Invalid`].
    pub fn path(&self) -> Option<&str> {
        match self {
            Error::Invalid { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
