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
