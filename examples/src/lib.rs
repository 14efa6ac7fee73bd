//! Runnable examples for durable: see `examples/README.md` for the list and the commands.
//!
//! The library part of this crate holds the pieces the examples share:
//!
//! - [`file_backend`]: a complete custom [`Backend`](durable::Backend) over a directory of
//!   files, written only against the public trait, as a user outside the workspace would, and
//!   tested with the public conformance suite;
//! - [`store`]: opening any store by URL, including `files:DIR` for that backend;
//! - [`outage`]: a wrapper backend that simulates a store outage.

pub mod file_backend;
pub mod outage;
pub mod store;

pub use store::ExampleStore;

/// Sends the engine's logs (reloads, errors, the backup) to stderr, filtered by `RUST_LOG` or
/// else by `default` (e.g. `"warn"`), in colour only on a terminal.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
