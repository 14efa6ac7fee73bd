//! Runnable examples for durable: see `examples/README.md`.
