//! Transactions: the deterministic commands that travel through the replicated log, their
//! outcomes, and the server-side state of interactive transactions and per-connection sessions.
//!
//! Must not: touch RocksDB or the network. Conflict decisions are made in `storage::executor`
//! while applying, so every replica decides the same.

pub mod command;
pub mod interactive;

pub use command::{Command, KeyRange, Outcome, WriteOp, DEFAULT_CF};
