//! The write-ahead log of one replica: `<wal_path>/replica_<id>/`, a sequence of preallocated,
//! zero-filled segments written with DMA (O_DIRECT) through io_uring.
//!
//! Owns: record framing (length, CRC32C, log sequence number), group commit (everything
//! appended since the last `sync` is written and made durable with ONE fdatasync), recovery with
//! torn-tail detection, and deleting old segments. It stores opaque payloads: what a record
//! means is the Paxos core's business.
//!
//! Invariants: LSNs are consecutive from the first retained record; a record is never split
//! across segments; after recovery everything past the last valid record is zero, so a later
//! recovery can never read stale bytes as records. A failed write or fdatasync is fatal: the
//! caller must stop the replica (retrying an fsync after failure is unsafe on Linux).

mod segment;
mod task;

pub use segment::{recover_segment, Wal, WalStats};
pub use task::{run_wal, WalCmd, WalEvent, WalHost};

/// Position of a record in the log; consecutive, starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal io on {path}: {message}")]
    Io { path: String, message: String },
    #[error("wal corrupt: {0}")]
    Corrupt(String),
    #[error("record of {size} bytes does not fit a segment of {segment} bytes")]
    TooLarge { size: usize, segment: u64 },
    #[error("the wal failed earlier and refuses further writes")]
    Failed,
}

/// Bytes before each record's payload: length u32, crc32c u32, lsn u64 (little-endian).
pub const RECORD_HEADER_BYTES: usize = 16;
