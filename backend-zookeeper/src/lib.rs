//! ZooKeeper backend for durable (skeleton): filled in by its own issue.
