//! `KvStoreExecutor`: applies ordered batches of committed commands to RocksDB.
//!
//! Owns the write side of one replica's RocksDB. Each batch becomes ONE `WriteBatch` holding the
//! data, the new applied sequence and last version, and any garbage collection that the batch
//! makes due, so a crash either keeps the whole batch or none of it, and `next_expected_sequence`
//! tells the caller where to resume. Conflict detection runs here, on every replica, from the same
//! inputs: the decision is identical everywhere.
//!
//! Must not: block on anything but RocksDB; run on an io_uring executor thread (it is driven by a
//! dedicated apply thread).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use rocksdb::{Options, WriteBatch, WriteOptions, DB};

use super::keys::{self, TAG_PUT, TAG_TOMBSTONE};
use super::reader::{KvReader, Shared};
use super::StorageError;
use crate::txn::{Command, KeyRange, Outcome, WriteOp};
use crate::types::{Sequence, Version};

/// Tuning of one store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How many versions back snapshot reads are served; older reads fail with `TOO_OLD`.
    pub mvcc_window_versions: u64,
    /// fsync RocksDB's WAL on every batch. Needed when RocksDB is the only durable copy (a
    /// single local log); a replica whose Paxos WAL is durable can leave it off.
    pub sync_writes: bool,
    /// Garbage-collection entries processed per applied batch at most.
    pub gc_entries_per_batch_max: usize,
    /// RocksDB block cache size.
    pub block_cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            mvcc_window_versions: 1_000_000,
            sync_writes: true,
            gc_entries_per_batch_max: 256,
            block_cache_bytes: 64 << 20,
        }
    }
}

pub struct KvStoreExecutor {
    db: Arc<DB>,
    options: StoreOptions,
    next_sequence: Sequence,
    last_version: Version,
    shared: Arc<Shared>,
    /// Where the garbage-collection queue scan resumes (memory only; a restart rescans).
    gc_cursor: Option<Vec<u8>>,
}

/// The newest write of a key inside the batch being applied (not yet visible in RocksDB).
type Overlay = BTreeMap<(String, Bytes), Version>;

impl KvStoreExecutor {
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        let mut bopts = rocksdb::BlockBasedOptions::default();
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_bytes);
        bopts.set_block_cache(&cache);
        bopts.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&bopts);
        let db = DB::open(&opts, path)?;
        let next_sequence =
            Sequence(read_u64(&db, keys::META_APPLIED_SEQUENCE)?.map_or(1, |s| s + 1));
        let last_version = Version(read_u64(&db, keys::META_LAST_VERSION)?.unwrap_or(0));
        let shared = Arc::new(Shared::default());
        shared.last_version.store(last_version.0, Ordering::SeqCst);
        shared
            .oldest_version
            .store(oldest_for(last_version, &options).0, Ordering::SeqCst);
        shared
            .applied_sequence
            .store(next_sequence.0 - 1, Ordering::SeqCst);
        Ok(KvStoreExecutor {
            db: Arc::new(db),
            options,
            next_sequence,
            last_version,
            shared,
            gc_cursor: None,
        })
    }

    /// The sequence number the next `apply` must carry.
    pub fn next_expected_sequence(&self) -> Sequence {
        self.next_sequence
    }

    pub fn last_version(&self) -> Version {
        self.last_version
    }

    /// A thread-safe handle for the read paths.
    pub fn reader(&self) -> KvReader {
        KvReader::new(self.db.clone(), self.shared.clone())
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// Applies batch `sequence`. Returns `Ok(None)` if that batch was already applied (a replay
    /// after a restart), and an error if it skips ahead of `next_expected_sequence`.
    pub fn apply(
        &mut self,
        sequence: Sequence,
        batch: &[Command],
    ) -> Result<Option<Vec<Outcome>>, StorageError> {
        if sequence < self.next_sequence {
            return Ok(None);
        }
        if sequence > self.next_sequence {
            return Err(StorageError::OutOfOrder {
                expected: self.next_sequence,
                got: sequence,
            });
        }
        let mut wb = WriteBatch::default();
        let mut overlay = Overlay::new();
        let mut version = self.last_version;
        let mut outcomes = Vec::with_capacity(batch.len());
        // Looks up each written key's newest version (as of before this batch) for its
        // garbage-collection entry; one iterator serves the whole batch.
        let mut newest = self.db.raw_iterator();
        for cmd in batch {
            let outcome = self.decide(cmd, version, &overlay)?;
            if let Outcome::Committed { .. } = outcome {
                version = version.next();
                let generated = write_command(&mut wb, &mut overlay, &mut newest, cmd, version)?;
                outcomes.push(Outcome::Committed { version, generated });
            } else {
                outcomes.push(outcome);
            }
        }
        let oldest = oldest_for(version, &self.options);
        drop(newest);
        let gc_last = self.collect_garbage(&mut wb, oldest, &overlay)?;
        wb.put(keys::META_APPLIED_SEQUENCE, sequence.0.to_le_bytes());
        wb.put(keys::META_LAST_VERSION, version.0.to_le_bytes());
        // Readers check the window after taking their snapshot: publish the new oldest version
        // before the write that may delete what lies below it.
        self.shared.oldest_version.store(oldest.0, Ordering::SeqCst);
        let mut wo = WriteOptions::default();
        wo.set_sync(self.options.sync_writes);
        self.db.write_opt(wb, &wo)?;
        if gc_last.is_some() {
            self.gc_cursor = gc_last;
        }
        self.last_version = version;
        self.next_sequence = sequence.next();
        self.shared.last_version.store(version.0, Ordering::SeqCst);
        self.shared
            .applied_sequence
            .store(sequence.0, Ordering::SeqCst);
        Ok(Some(outcomes))
    }

    /// Decides whether `cmd` commits on top of `latest` (the version after the commands of this
    /// batch decided so far). Returns `Committed` with placeholder fields when it does.
    fn decide(
        &self,
        cmd: &Command,
        latest: Version,
        overlay: &Overlay,
    ) -> Result<Outcome, StorageError> {
        if let Err(e) = cmd.validate() {
            return Ok(Outcome::Invalid(e));
        }
        if let Some(rv) = cmd.read_version {
            if rv > latest {
                return Ok(Outcome::Invalid(format!(
                    "read version {rv} is newer than the latest committed version {latest}"
                )));
            }
            let oldest = oldest_for(latest, &self.options);
            if rv < oldest && !cmd.read_conflicts.is_empty() {
                return Ok(Outcome::TooOld {
                    read_version: rv,
                    oldest,
                });
            }
            for r in &cmd.read_conflicts {
                if let Some(key) = self.written_after(r, rv, overlay)? {
                    return Ok(Outcome::Conflict { key });
                }
            }
        }
        Ok(Outcome::Committed {
            version: Version(0),
            generated: Vec::new(),
        })
    }

    /// The first key in `r` with a version newer than `rv`, in this batch or in the store.
    fn written_after(
        &self,
        r: &KeyRange,
        rv: Version,
        overlay: &Overlay,
    ) -> Result<Option<Bytes>, StorageError> {
        if r.begin >= r.end {
            return Ok(None);
        }
        let lo = (r.cf.clone(), r.begin.clone());
        let hi = (r.cf.clone(), r.end.clone());
        if let Some(((_, k), _)) = overlay.range(lo..hi).find(|(_, v)| **v > rv) {
            return Ok(Some(k.clone()));
        }
        let start = keys::data_key_prefix(&r.cf, &r.begin);
        let end = keys::data_key_prefix(&r.cf, &r.end);
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(end);
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek(&start);
        let cf_prefix_len = keys::cf_prefix(&r.cf).len();
        while it.valid() {
            let Some(k) = it.key() else { break };
            let (user_key, v) = keys::split_data_key(&k[cf_prefix_len..])
                .ok_or_else(|| StorageError::Corrupt(format!("bad data key {k:02x?}")))?;
            if v > rv {
                return Ok(Some(Bytes::from(user_key)));
            }
            it.next();
        }
        it.status()?;
        Ok(None)
    }

    /// Removes versions that no read inside the window can see, up to the per-batch budget.
    /// Returns the last queue entry it processed (the next batch resumes after it).
    ///
    /// Each queue entry (v, key) names the version v superseded, so collection is a point
    /// delete of exactly that version: no scan over a key's versions (which would also walk
    /// every tombstone earlier collections left) and no range tombstones (which make every
    /// later iterator rebuild its tombstone list).
    fn collect_garbage(
        &self,
        wb: &mut WriteBatch,
        oldest: Version,
        overlay: &Overlay,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        if oldest.0 == 0 {
            return Ok(None);
        }
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(keys::gc_key(Version(oldest.0 + 1), "", b""));
        let mut it = self.db.raw_iterator_opt(ro);
        // Resume where the last batch stopped: the processed entries before it are deleted,
        // and seeking from the start would walk over all their tombstones every batch.
        // The entries found are the same either way, so every replica still decides alike.
        match &self.gc_cursor {
            Some(c) => it.seek(c),
            None => it.seek([keys::GC_PREFIX]),
        }
        let mut newest = self.db.raw_iterator();
        let mut last = None;
        let mut done = 0;
        while it.valid() && done < self.options.gc_entries_per_batch_max {
            let (Some(gk), Some(gv)) = (it.key(), it.value()) else {
                break;
            };
            let (v, cf, key) = keys::split_gc_key(gk)
                .ok_or_else(|| StorageError::Corrupt(format!("bad gc key {gk:02x?}")))?;
            if v > oldest {
                break;
            }
            let (is_delete, superseded) = keys::split_gc_value(gv)
                .ok_or_else(|| StorageError::Corrupt(format!("bad gc value {gv:02x?}")))?;
            if let Some(p) = superseded {
                wb.delete(keys::data_key(&cf, &key, p));
            }
            // A delete that nothing newer overrides leaves a tombstone no read in the window
            // needs: remove it too, unless this batch writes the key again.
            if is_delete && !overlay.contains_key(&(cf.clone(), Bytes::copy_from_slice(&key))) {
                if let Some((ver, _)) = newest_version(&mut newest, &cf, &key)? {
                    if ver == v {
                        wb.delete(keys::data_key(&cf, &key, v));
                    }
                }
            }
            wb.delete(gk);
            last = Some(gk.to_vec());
            done += 1;
            it.next();
        }
        it.status()?;
        Ok(last)
    }
}

/// The newest stored version of (cf, key) and whether it is a put.
fn newest_version(
    it: &mut rocksdb::DBRawIteratorWithThreadMode<'_, DB>,
    cf: &str,
    key: &[u8],
) -> Result<Option<(Version, bool)>, StorageError> {
    let prefix = keys::data_key_prefix(cf, key);
    it.seek(&prefix);
    match (it.key(), it.value()) {
        (Some(k), Some(val)) if k.starts_with(&prefix) => {
            let ver = keys::split_data_key(&k[keys::cf_prefix(cf).len()..])
                .map(|(_, v)| v)
                .ok_or_else(|| StorageError::Corrupt(format!("bad data key {k:02x?}")))?;
            Ok(Some((ver, val.first() == Some(&TAG_PUT))))
        }
        _ => {
            it.status()?;
            Ok(None)
        }
    }
}

/// Writes `cmd`'s operations at `version`; returns the generated versionstamped keys/values.
fn write_command(
    wb: &mut WriteBatch,
    overlay: &mut Overlay,
    newest: &mut rocksdb::DBRawIteratorWithThreadMode<'_, DB>,
    cmd: &Command,
    version: Version,
) -> Result<Vec<Bytes>, StorageError> {
    let mut generated = Vec::new();
    for (i, w) in cmd.writes.iter().enumerate() {
        let stamp = versionstamp(version, i as u16);
        let (cf, key, value): (&str, Bytes, Option<Bytes>) = match w {
            WriteOp::Set { cf, key, value } => (cf, key.clone(), Some(value.clone())),
            WriteOp::Delete { cf, key } => (cf, key.clone(), None),
            WriteOp::SetVersionstampedKey {
                cf,
                key_prefix,
                value,
            } => {
                let k = stamped(key_prefix, &stamp);
                generated.push(k.clone());
                (cf, k, Some(value.clone()))
            }
            WriteOp::SetVersionstampedValue {
                cf,
                key,
                value_prefix,
            } => {
                let v = stamped(value_prefix, &stamp);
                generated.push(v.clone());
                (cf, key.clone(), Some(v))
            }
        };
        let dk = keys::data_key(cf, &key, version);
        let value_is_none = value.is_none();
        match value {
            Some(v) => {
                let mut buf = Vec::with_capacity(v.len() + 1);
                buf.push(TAG_PUT);
                buf.extend_from_slice(&v);
                wb.put(dk, buf);
            }
            None => wb.put(dk, [TAG_TOMBSTONE]),
        }
        // The queue entry names the version this write supersedes (from this batch, or the
        // store). A second write of the key in the same commit keeps the first one's entry.
        let ok = (cf.to_string(), key);
        let superseded = match overlay.get(&ok) {
            Some(&v) => Some(v),
            None => newest_version(newest, cf, &ok.1)?.map(|(v, _)| v),
        };
        if superseded != Some(version) {
            wb.put(
                keys::gc_key(version, cf, &ok.1),
                keys::gc_value(value_is_none, superseded),
            );
        }
        overlay.insert(ok, version);
    }
    Ok(generated)
}

/// 8 bytes of commit version and 2 bytes of order within the commit, big-endian.
pub fn versionstamp(version: Version, order: u16) -> [u8; 10] {
    let mut s = [0u8; 10];
    s[..8].copy_from_slice(&version.0.to_be_bytes());
    s[8..].copy_from_slice(&order.to_be_bytes());
    s
}

fn stamped(prefix: &Bytes, stamp: &[u8; 10]) -> Bytes {
    let mut v = prefix.to_vec();
    let at = v.len().saturating_sub(10);
    let n = v.len() - at;
    v[at..].copy_from_slice(&stamp[..n]);
    Bytes::from(v)
}

fn oldest_for(latest: Version, options: &StoreOptions) -> Version {
    Version(latest.0.saturating_sub(options.mvcc_window_versions))
}

fn read_u64(db: &DB, key: &[u8]) -> Result<Option<u64>, StorageError> {
    match db.get_pinned(key)? {
        None => Ok(None),
        Some(v) if v.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&v);
            Ok(Some(u64::from_le_bytes(a)))
        }
        Some(v) => Err(StorageError::Corrupt(format!(
            "metadata {:?} has {} bytes, expected 8",
            String::from_utf8_lossy(key),
            v.len()
        ))),
    }
}
