//! Storage: the deterministic state machine (`KvStoreExecutor`) every replica runs on the
//! committed log, and the MVCC read paths over its RocksDB.
//!
//! Must not: know about Paxos, sockets or Thrift. Invariants: applying the same log produces the
//! same bytes on every replica; the applied sequence number is written in the same `WriteBatch` as
//! the data, so a batch is applied exactly once across crashes.

pub mod executor;
pub mod gc;
pub mod install;
pub mod keys;
pub mod latest;
pub mod reader;
mod recent;

pub use executor::{Durability, KvStoreExecutor, StoreOptions};
pub use install::{SnapshotChunk, SnapshotSource};
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
    #[error(
        "read version {read_version} is older than the oldest version kept ({oldest}): TOO_OLD"
    )]
    TooOld {
        read_version: Version,
        oldest: Version,
    },
    #[error("read version {read_version} is newer than the latest applied version {latest}")]
    FutureVersion {
        read_version: Version,
        latest: Version,
    },
    #[error("this replica is installing a snapshot from a peer; retry")]
    Installing,
}

#[cfg(test)]
mod tests;

/// What `paxoskv inspect` prints about one replica's store.
#[derive(Debug)]
pub struct InspectReport {
    pub applied_sequence: u64,
    pub last_version: u64,
    pub approximate_keys: u64,
    pub value: Option<bytes::Bytes>,
}

/// Reads a store's state without opening it for writing (the server must be stopped or the
/// read may miss the newest writes).
pub fn inspect(path: &std::path::Path, key: Option<&[u8]>) -> Result<InspectReport, StorageError> {
    let db = rocksdb::DB::open_for_read_only(&rocksdb::Options::default(), path, false)?;
    let u64_of = |k: &[u8]| -> Result<u64, StorageError> {
        Ok(match db.get(k)? {
            Some(v) if v.len() == 8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&v);
                u64::from_le_bytes(a)
            }
            _ => 0,
        })
    };
    let applied_sequence = u64_of(keys::META_APPLIED_SEQUENCE)?;
    let last_version = u64_of(keys::META_LAST_VERSION)?;
    let approximate_keys = db
        .property_int_value("rocksdb.estimate-num-keys")?
        .unwrap_or(0);
    let value = match key {
        None => None,
        Some(k) => {
            let mut it = db.raw_iterator();
            it.seek(keys::data_key("", k, Version(last_version)));
            match (it.key(), it.value()) {
                (Some(dk), Some(v))
                    if dk.starts_with(&keys::data_key_prefix("", k))
                        && v.first() == Some(&keys::TAG_PUT) =>
                {
                    Some(bytes::Bytes::copy_from_slice(&v[1..]))
                }
                _ => None,
            }
        }
    };
    Ok(InspectReport {
        applied_sequence,
        last_version,
        approximate_keys,
        value,
    })
}
