//! State-machine snapshots between replicas: reading a consistent copy of a store in bounded
//! chunks (`SnapshotSource`) and writing one into a store (`KvStoreExecutor::install_*`).
//!
//! A snapshot is every data key of the store as of one RocksDB snapshot, in key order, plus the
//! applied slot and last version read from that same RocksDB snapshot. Metadata keys are not
//! sent; the receiver writes its own at the end. Chunks are cut by bytes and resumed by key (the
//! receiver asks for "everything after this key"), so a chunk lost or refused is simply asked
//! for again, and the source keeps nothing per receiver but its RocksDB snapshot.
//!
//! Installing is crash-safe without RocksDB's WAL: the first write removes every key and sets
//! `META_INSTALLING` in one batch, the last one writes the new metadata and clears the marker
//! in one batch and is flushed before the install counts as done. RocksDB's flushed state is
//! always a prefix of the writes, so a store that restarts with the marker is a partial
//! install, and `KvStoreExecutor::open` empties it (the replica then fetches a snapshot again).
//!
//! Must not: know about Paxos or sockets (the cluster layer carries chunks and decides when).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use rocksdb::{WriteBatch, WriteOptions, DB};

use super::executor::KvStoreExecutor;
use super::keys;
use super::StorageError;
use crate::types::{Sequence, Version};
use crate::util::codec::{put_bytes, put_u32, put_u64, put_u8, DecodeError, Reader};

/// One piece of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Slot (applied sequence) the snapshot stands at.
    pub slot: u64,
    pub last_version: u64,
    /// The last key in this chunk: ask for what follows it next (empty when `pairs` is).
    pub cursor: Bytes,
    /// Number of pairs in `pairs`.
    pub count: u32,
    /// `(u32 key length, key, u32 value length, value)` repeated, in key order.
    pub pairs: Bytes,
    /// No keys follow this chunk.
    pub done: bool,
}

impl SnapshotChunk {
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u64(buf, self.slot);
        put_u64(buf, self.last_version);
        put_bytes(buf, &self.cursor);
        put_u32(buf, self.count);
        put_u8(buf, u8::from(self.done));
        put_u32(buf, crc32c::crc32c(&self.pairs));
        put_bytes(buf, &self.pairs);
    }

    /// Decodes a chunk and checks its checksum.
    pub fn decode(r: &mut Reader<'_>) -> Result<SnapshotChunk, DecodeError> {
        let slot = r.u64()?;
        let last_version = r.u64()?;
        let cursor = r.bytes()?;
        let count = r.u32()?;
        let done = r.bool()?;
        let crc = r.u32()?;
        let pairs = r.bytes()?;
        r.finish()?;
        if crc32c::crc32c(&pairs) != crc {
            return Err(DecodeError::Checksum("snapshot chunk"));
        }
        Ok(SnapshotChunk {
            slot,
            last_version,
            cursor,
            count,
            pairs,
            done,
        })
    }

    /// The (key, value) pairs of the chunk; an error if they do not parse as `count` pairs.
    pub fn for_each_pair(&self, mut f: impl FnMut(&[u8], &[u8])) -> Result<(), StorageError> {
        let mut r = Reader::new(&self.pairs);
        for _ in 0..self.count {
            let k = r.bytes().map_err(corrupt)?;
            let v = r.bytes().map_err(corrupt)?;
            f(&k, &v);
        }
        r.finish().map_err(corrupt)
    }
}

fn corrupt(e: DecodeError) -> StorageError {
    StorageError::Corrupt(format!("snapshot chunk: {e}"))
}

/// Reads one store's snapshot in chunks. Holds a RocksDB snapshot for as long as it lives
/// (old files stay on disk meanwhile), so callers drop it once the receiver is done or idle.
pub struct SnapshotSource {
    db: Arc<DB>,
}

impl SnapshotSource {
    pub fn new(db: Arc<DB>) -> Self {
        SnapshotSource { db }
    }

    /// Serves chunk requests until `next` returns `None`: `next` yields the cursor to continue
    /// after (empty: from the start) and `emit` receives each chunk of at most `chunk_bytes`
    /// of pairs (one larger pair still goes alone). Every chunk comes from the same RocksDB
    /// snapshot, taken when this is called.
    pub fn serve(
        &self,
        chunk_bytes: usize,
        mut next: impl FnMut() -> Option<Bytes>,
        mut emit: impl FnMut(Result<SnapshotChunk, StorageError>),
    ) {
        let snap = self.db.snapshot();
        let meta = |key: &[u8]| -> Result<u64, StorageError> {
            match snap.get(key)? {
                Some(v) if v.len() == 8 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&v);
                    Ok(u64::from_le_bytes(a))
                }
                None => Ok(0),
                Some(_) => Err(StorageError::Corrupt("bad metadata length".into())),
            }
        };
        let head = (|| {
            if snap.get(keys::META_INSTALLING)?.is_some() {
                return Err(StorageError::Installing);
            }
            Ok((
                meta(keys::META_APPLIED_SEQUENCE)?,
                meta(keys::META_LAST_VERSION)?,
            ))
        })();
        let (slot, last_version) = match head {
            Ok(h) => h,
            Err(e) => {
                emit(Err(e));
                return;
            }
        };
        while let Some(cursor) = next() {
            let mut it = snap.raw_iterator();
            if cursor.is_empty() {
                it.seek([keys::DATA_PREFIX]);
            } else {
                it.seek(&cursor);
                if it.key() == Some(&cursor[..]) {
                    it.next();
                }
            }
            let mut pairs = Vec::with_capacity(chunk_bytes.min(8 << 20) + 64);
            let mut count = 0u32;
            let mut last: Option<Bytes> = None;
            let mut done = true;
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                if k >= keys::END_OF_KEYS {
                    break;
                }
                if count > 0 && pairs.len() + k.len() + v.len() + 8 > chunk_bytes {
                    done = false;
                    break;
                }
                put_bytes(&mut pairs, k);
                put_bytes(&mut pairs, v);
                count += 1;
                last = Some(Bytes::copy_from_slice(k));
                it.next();
            }
            let chunk = match it.status() {
                Err(e) => Err(StorageError::from(e)),
                Ok(()) => Ok(SnapshotChunk {
                    slot,
                    last_version,
                    cursor: last.unwrap_or_default(),
                    count,
                    pairs: Bytes::from(pairs),
                    done,
                }),
            };
            emit(chunk);
        }
    }
}

impl KvStoreExecutor {
    /// Starts installing a snapshot: readers are fenced off, every key goes and the store is
    /// marked incomplete, in one write.
    pub fn install_begin(&mut self) -> Result<(), StorageError> {
        let shared = self.shared().clone();
        if shared
            .install_epoch
            .load(Ordering::SeqCst)
            .is_multiple_of(2)
        {
            shared.install_epoch.fetch_add(1, Ordering::SeqCst);
        }
        shared.last_version.store(0, Ordering::SeqCst);
        shared.latest.clear();
        let mut wb = WriteBatch::default();
        wb.delete_range(&[keys::META_PREFIX][..], keys::END_OF_KEYS);
        wb.put(keys::META_INSTALLING, [1u8]);
        self.write_unlogged(wb)?;
        self.reset_position(Sequence(0), Version(0));
        Ok(())
    }

    /// Writes one chunk's pairs (after `install_begin`).
    pub fn install_chunk(&mut self, chunk: &SnapshotChunk) -> Result<(), StorageError> {
        let mut wb = WriteBatch::default();
        let mut bad = None;
        chunk.for_each_pair(|k, v| {
            if k.first() == Some(&keys::META_PREFIX) || k >= keys::END_OF_KEYS {
                bad = Some(k.to_vec());
            } else {
                wb.put(k, v);
            }
        })?;
        if let Some(k) = bad {
            return Err(StorageError::Corrupt(format!(
                "snapshot chunk carries a key outside the data spaces: {k:02x?}"
            )));
        }
        self.write_unlogged(wb)
    }

    /// Completes an install at `slot`: metadata written, marker cleared, everything flushed
    /// (durable) before readers are let back in.
    pub fn install_finish(&mut self, slot: u64, last_version: u64) -> Result<(), StorageError> {
        let mut wb = WriteBatch::default();
        wb.put(keys::META_APPLIED_SEQUENCE, slot.to_le_bytes());
        wb.put(keys::META_LAST_VERSION, last_version.to_le_bytes());
        wb.delete(keys::META_INSTALLING);
        self.write_unlogged(wb)?;
        self.reset_position(Sequence(slot), Version(last_version));
        self.flush()?;
        let shared = self.shared().clone();
        shared.latest.clear();
        if shared.install_epoch.load(Ordering::SeqCst) % 2 == 1 {
            shared.install_epoch.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// A store left with the install marker by a crash: empty it (a fresh install follows).
    pub(super) fn discard_partial_install(db: &DB) -> Result<bool, StorageError> {
        if db.get_pinned(keys::META_INSTALLING)?.is_none() {
            return Ok(false);
        }
        let mut wb = WriteBatch::default();
        wb.delete_range(&[keys::META_PREFIX][..], keys::END_OF_KEYS);
        db.write(wb)?;
        db.flush()?;
        Ok(true)
    }

    fn write_unlogged(&self, wb: WriteBatch) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db().write_opt(wb, &wo)?;
        Ok(())
    }
}
