//! Storage: the deterministic state machine (`KvStoreExecutor`) every replica runs on the
//! committed log, and the MVCC read paths over its RocksDB.
//!
//! Must not: know about Paxos, sockets or Thrift. Invariants: applying the same log produces the
//! same bytes on every replica; the applied sequence number is written in the same `WriteBatch` as
//! the data, so a batch is applied exactly once across crashes.

pub mod executor;
pub mod keys;
pub mod reader;

pub use executor::{KvStoreExecutor, StoreOptions};
pub use reader::{KvReader, RangeQuery, RangeResult};

use crate::types::{Sequence, Version};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("batch {got} applied out of order: the store expects {expected}")]
    OutOfOrder { expected: Sequence, got: Sequence },
    #[error("read version {read_version} is older than the oldest version kept ({oldest}): TOO_OLD")]
    TooOld { read_version: Version, oldest: Version },
    #[error("read version {read_version} is newer than the latest applied version {latest}")]
    FutureVersion { read_version: Version, latest: Version },
    #[error("invalid range: {0}")]
    InvalidRange(String),
}

#[cfg(test)]
mod tests;
