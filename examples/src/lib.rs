//! Runnable examples for durable: see `examples/README.md` for the list and the commands.
//!
//! The library part of this crate holds one reusable piece, [`file_backend`]: a complete custom
//! [`Backend`](durable::Backend) over a directory of files, written only against the public
//! trait, as a user outside the workspace would, and tested with the public conformance suite.

pub mod file_backend;
