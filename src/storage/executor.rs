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
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use rocksdb::{Options, WriteBatch, WriteOptions, DB};

use super::keys::{self, TAG_PUT, TAG_TOMBSTONE};
use super::latest::{LatestCache, LatestWrite};
use super::reader::{KvReader, Shared};
use super::recent::RecentWrites;
use super::StorageError;
use crate::txn::{Command, KeyRange, Outcome, WriteOp};
use crate::types::{Sequence, Version};

/// Tuning of one store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How many versions back snapshot reads are served; older reads fail with `TOO_OLD`.
    pub mvcc_window_versions: u64,
    /// How applied batches become durable.
    pub durability: Durability,
    /// RocksDB block cache size.
    pub block_cache_bytes: usize,
    /// Bound of the latest-version cache of point reads (`latest.rs`); 0 turns it off.
    pub latest_cache_bytes: u64,
    /// Bound of the index of recently written keys that answers one-key conflict checks
    /// (`recent.rs`); 0 turns it off.
    pub conflict_index_bytes: u64,
    /// Level-0 files RocksDB gathers before compacting them into level 1.
    pub level0_compaction_trigger: u32,
    /// Size of one RocksDB memtable; the store holds at most two.
    pub memtable_bytes: usize,
    /// Run RocksDB's flush and compaction threads at the lowest CPU priority (nice 19). The
    /// threads are the process's (RocksDB's default environment): once lowered they stay so.
    pub background_low_priority: bool,
}

impl StoreOptions {
    /// The options the `[storage]` section of a config gives a store that becomes durable
    /// through `durability`.
    pub fn from_config(storage: &crate::config::StorageSection, durability: Durability) -> Self {
        StoreOptions {
            mvcc_window_versions: storage.mvcc_window_versions,
            durability,
            block_cache_bytes: storage.block_cache_bytes as usize,
            latest_cache_bytes: storage.latest_cache_bytes,
            conflict_index_bytes: storage.conflict_index_bytes,
            level0_compaction_trigger: storage.level0_compaction_trigger,
            memtable_bytes: storage.memtable_bytes as usize,
            background_low_priority: storage.background_low_priority,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            mvcc_window_versions: 1_000_000,
            durability: Durability::SyncedWal,
            block_cache_bytes: 64 << 20,
            latest_cache_bytes: 32 << 20,
            conflict_index_bytes: 16 << 20,
            level0_compaction_trigger: 4,
            memtable_bytes: 64 << 20,
            background_low_priority: false,
        }
    }
}

/// How applied batches become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// RocksDB's WAL, fsynced on every batch: RocksDB is the only durable copy (a single local
    /// store with no replicated log).
    SyncedWal,
    /// No RocksDB WAL at all: a replica's Paxos WAL is the log. A batch is durable once RocksDB
    /// has flushed the memtable holding it (`start_flush`, `durable_sequence`); until then the
    /// caller must keep the log records it came from, and after a crash it replays them from
    /// `next_expected_sequence`.
    ExternalLog,
}

pub struct KvStoreExecutor {
    db: Arc<DB>,
    options: StoreOptions,
    next_sequence: Sequence,
    last_version: Version,
    shared: Arc<Shared>,
    /// The applied sequence a requested flush covers, while that flush is in progress.
    flushing: Option<Sequence>,
    /// Applied sequences through here are durable in RocksDB.
    durable: Sequence,
    /// The newest version of recently written keys, for conflict checks.
    recent: RecentWrites,
}

/// The newest write of a key inside the batch being applied (not yet visible in RocksDB).
/// Keyed by data-key prefix (`keys::data_key_prefix`), which sorts as (column family, key).
type Overlay = BTreeMap<Vec<u8>, Version>;

impl KvStoreExecutor {
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        // One memtable being written and one being flushed; writes wait while both are full.
        opts.set_write_buffer_size(options.memtable_bytes);
        opts.set_max_write_buffer_number(2);
        let l0 = i32::try_from(options.level0_compaction_trigger).unwrap_or(4);
        opts.set_level_zero_file_num_compaction_trigger(l0);
        opts.set_level_zero_slowdown_writes_trigger(l0 + 16);
        opts.set_level_zero_stop_writes_trigger(l0 + 32);
        if options.background_low_priority {
            let mut env = rocksdb::Env::new()?;
            env.lower_thread_pool_cpu_priority();
            env.lower_high_priority_thread_pool_cpu_priority();
            opts.set_env(&env);
        }
        let mut bopts = rocksdb::BlockBasedOptions::default();
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_bytes);
        bopts.set_block_cache(&cache);
        bopts.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&bopts);
        let oldest = Arc::new(std::sync::atomic::AtomicU64::new(0));
        opts.set_compaction_filter_factory(super::gc::VersionGcFactory::new(oldest.clone()));
        let db = DB::open(&opts, path)?;
        if Self::discard_partial_install(&db)? {
            tracing::warn!(
                path = %path.display(),
                "the store held a partial snapshot install (a crash interrupted it); it was \
                 emptied and will be rebuilt from a peer"
            );
        }
        let next_sequence =
            Sequence(read_u64(&db, keys::META_APPLIED_SEQUENCE)?.map_or(1, |s| s + 1));
        let last_version = Version(read_u64(&db, keys::META_LAST_VERSION)?.unwrap_or(0));
        let shared = Arc::new(Shared {
            oldest_version: oldest,
            latest: LatestCache::new(options.latest_cache_bytes),
            ..Shared::default()
        });
        shared.last_version.store(last_version.0, Ordering::SeqCst);
        shared
            .oldest_version
            .store(oldest_for(last_version, &options).0, Ordering::SeqCst);
        shared
            .applied_sequence
            .store(next_sequence.0 - 1, Ordering::SeqCst);
        Ok(KvStoreExecutor {
            db: Arc::new(db),
            next_sequence,
            last_version,
            shared,
            flushing: None,
            durable: Sequence(next_sequence.0 - 1),
            recent: RecentWrites::new(options.conflict_index_bytes),
            options,
        })
    }

    /// Whether reads go to this store (a primary's, a single store's): its latest-version cache
    /// then records every write, with or without lookups (`latest.rs`).
    pub fn keep_latest(&self, reads_come_here: bool) {
        self.shared.latest.pin(reads_come_here);
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

    #[cfg(test)]
    pub(super) fn conflict_index(&self) -> &RecentWrites {
        &self.recent
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Makes the executor stand at applied `sequence` and `version` (a snapshot install moved
    /// the store there) and publishes it to readers.
    pub(super) fn reset_position(&mut self, sequence: Sequence, version: Version) {
        self.next_sequence = sequence.next();
        self.last_version = version;
        self.durable = sequence;
        self.flushing = None;
        self.recent.clear();
        self.shared
            .oldest_version
            .store(oldest_for(version, &self.options).0, Ordering::SeqCst);
        self.shared.last_version.store(version.0, Ordering::SeqCst);
        self.shared
            .applied_sequence
            .store(sequence.0, Ordering::SeqCst);
    }

    /// Applies batch `sequence`. Returns `Ok(None)` if that batch was already applied (a replay
    /// after a restart), and an error if it skips ahead of `next_expected_sequence`.
    pub fn apply(
        &mut self,
        sequence: Sequence,
        batch: &[Command],
    ) -> Result<Option<Vec<Outcome>>, StorageError> {
        let mut out = self.apply_many(sequence, &[batch])?;
        Ok(out.pop().flatten())
    }

    /// Applies the consecutive batches `first`, `first + 1`, ... in ONE RocksDB `WriteBatch`
    /// (the applied sequence written once, for the last): the same outcomes and the same data
    /// as applying them one by one, for one write. Batches already applied give `None`.
    pub fn apply_many(
        &mut self,
        first: Sequence,
        batches: &[&[Command]],
    ) -> Result<Vec<Option<Vec<Outcome>>>, StorageError> {
        let mut results = Vec::with_capacity(batches.len());
        let mut wb = WriteBatch::default();
        let mut overlay = Overlay::new();
        // Only a command that checks read conflicts looks at the overlay: runs of blind writes
        // skip building it.
        let track = batches
            .iter()
            .any(|b| b.iter().any(|c| !c.read_conflicts.is_empty()));
        let mut version = self.last_version;
        let mut last_applied = None;
        let mut latest = self.shared.latest.run_begins().then(Vec::new);
        let mut recent = self
            .recent
            .run_begins(track, self.last_version.0)
            .then(Vec::new);
        for (i, batch) in batches.iter().enumerate() {
            let sequence = Sequence(first.0 + i as u64);
            if sequence < self.next_sequence {
                results.push(None);
                continue;
            }
            let expected = last_applied.map_or(self.next_sequence, |s: Sequence| s.next());
            if sequence != expected {
                return Err(StorageError::OutOfOrder {
                    expected,
                    got: sequence,
                });
            }
            let mut outcomes = Vec::with_capacity(batch.len());
            for cmd in batch.iter() {
                let outcome = self.decide(cmd, version, &overlay)?;
                if let Outcome::Committed { .. } = outcome {
                    version = version.next();
                    let generated = write_command(
                        &mut wb,
                        track.then_some(&mut overlay),
                        Applied {
                            latest: latest.as_mut(),
                            recent: recent.as_mut(),
                        },
                        cmd,
                        version,
                    );
                    outcomes.push(Outcome::Committed { version, generated });
                } else {
                    outcomes.push(outcome);
                }
            }
            results.push(Some(outcomes));
            last_applied = Some(sequence);
        }
        let Some(sequence) = last_applied else {
            self.shared.latest.published();
            return Ok(results);
        };
        // Old versions are collected by the compaction filter (`gc.rs`), not here.
        let oldest = oldest_for(version, &self.options);
        wb.put(keys::META_APPLIED_SEQUENCE, sequence.0.to_le_bytes());
        wb.put(keys::META_LAST_VERSION, version.0.to_le_bytes());
        // Readers check the window after taking their snapshot: publish the new oldest version
        // before the write that may delete what lies below it.
        self.shared.oldest_version.store(oldest.0, Ordering::SeqCst);
        let mut wo = WriteOptions::default();
        match self.options.durability {
            Durability::SyncedWal => wo.set_sync(true),
            Durability::ExternalLog => wo.disable_wal(true),
        }
        self.db.write_opt(wb, &wo)?;
        // Into the cache before the new last version is published (`latest.rs`).
        if let Some(latest) = latest {
            self.shared.latest.record(latest);
        }
        if let Some(recent) = recent {
            self.recent.record(recent);
        }
        if self.options.durability == Durability::SyncedWal {
            self.durable = sequence;
        }
        self.last_version = version;
        self.next_sequence = sequence.next();
        self.shared.last_version.store(version.0, Ordering::SeqCst);
        self.shared.latest.published();
        self.shared
            .applied_sequence
            .store(sequence.0, Ordering::SeqCst);
        Ok(results)
    }

    /// Applied sequences through the returned one are durable in RocksDB. With
    /// `Durability::ExternalLog` this advances when a flush started by `start_flush` finishes.
    pub fn durable_sequence(&mut self) -> Result<Sequence, StorageError> {
        if let Some(s) = self.flushing {
            // The flush switched the memtable holding everything through `s` to an immutable
            // one; once no immutable memtable waits, that data is in SST files.
            let waiting = self
                .db
                .property_int_value("rocksdb.num-immutable-mem-table")?
                .unwrap_or(0);
            if waiting == 0 {
                self.durable = self.durable.max(s);
                self.flushing = None;
            }
        }
        Ok(self.durable)
    }

    /// A flush started by `start_flush` has not been seen to finish yet.
    pub fn flush_in_progress(&self) -> bool {
        self.flushing.is_some()
    }

    /// RocksDB is delaying or stopping writes (too many memtables or level-0 files): a write
    /// now may wait for a flush or compaction. A property read that fails counts as no stall.
    pub fn write_stalled(&self) -> bool {
        let int = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        int("rocksdb.is-write-stopped") != 0 || int("rocksdb.actual-delayed-write-rate") != 0
    }

    /// Something applied is not yet known durable.
    pub fn has_unflushed(&self) -> bool {
        Sequence(self.next_sequence.0 - 1) > self.durable
    }

    /// Starts making everything applied so far durable without waiting: RocksDB switches the
    /// memtable and flushes it in the background. A flush already in progress is left alone.
    pub fn start_flush(&mut self) -> Result<(), StorageError> {
        let applied = Sequence(self.next_sequence.0 - 1);
        if self.flushing.is_some() || applied <= self.durable {
            return Ok(());
        }
        let mut fo = rocksdb::FlushOptions::default();
        fo.set_wait(false);
        self.db.flush_opt(&fo)?;
        self.flushing = Some(applied);
        Ok(())
    }

    /// Makes everything applied so far durable and waits for it (shutdown, tests).
    pub fn flush(&mut self) -> Result<Sequence, StorageError> {
        let applied = Sequence(self.next_sequence.0 - 1);
        self.db.flush()?;
        self.durable = self.durable.max(applied);
        self.flushing = None;
        Ok(self.durable)
    }

    /// Compacts the whole store now (old versions and expired tombstones go; tools and tests).
    pub fn compact_all(&self) {
        self.db.compact_range::<&[u8], &[u8]>(None, None);
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
            return Ok(Outcome::Invalid(e.message));
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

    /// The first key in `r` with a version newer than `rv`, in this batch or in the store. The
    /// first in key order wherever it is, so the answer does not depend on how slots were
    /// grouped into apply runs.
    fn written_after(
        &self,
        r: &KeyRange,
        rv: Version,
        overlay: &Overlay,
    ) -> Result<Option<Bytes>, StorageError> {
        if r.begin >= r.end {
            return Ok(None);
        }
        let start = keys::data_key_prefix(&r.cf, &r.begin);
        let single = r.is_single_key();
        if single {
            if overlay.get(&start).is_some_and(|v| *v > rv) {
                return Ok(Some(r.begin.clone()));
            }
            if let Some(written) = self.recent.written_after(&start, rv.0) {
                return Ok(written.then(|| r.begin.clone()));
            }
        }
        let end = keys::data_key_prefix(&r.cf, &r.end);
        let cf_prefix_len = keys::cf_prefix(&r.cf).len();
        // The store is searched below the batch's first hit only (a one-key range's overlay
        // entry was looked at above).
        let in_batch = if single {
            None
        } else {
            overlay
                .range::<[u8], _>((Bound::Included(&start[..]), Bound::Excluded(&end[..])))
                .find(|(_, v)| **v > rv)
                .map(|(k, _)| k.clone())
        };
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(in_batch.clone().unwrap_or(end));
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek(&start);
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
        match in_batch {
            Some(k) => {
                let (user_key, _) = keys::unescape(&k[cf_prefix_len..])
                    .ok_or_else(|| StorageError::Corrupt(format!("bad data key {k:02x?}")))?;
                Ok(Some(Bytes::from(user_key)))
            }
            None => Ok(None),
        }
    }
}

/// Where an apply run records the writes it applies, when they are wanted: the latest-version
/// cache's entries (`latest.rs`) and the conflict index's keys (`recent.rs`).
struct Applied<'a> {
    latest: Option<&'a mut Vec<LatestWrite>>,
    recent: Option<&'a mut Vec<(Vec<u8>, u64)>>,
}

/// Writes `cmd`'s operations at `version` (recording them in `overlay` and `applied` when
/// given); returns the generated versionstamped keys/values.
fn write_command(
    wb: &mut WriteBatch,
    mut overlay: Option<&mut Overlay>,
    mut applied: Applied<'_>,
    cmd: &Command,
    version: Version,
) -> Vec<Bytes> {
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
        match &value {
            Some(v) => {
                let mut buf = Vec::with_capacity(v.len() + 1);
                buf.push(TAG_PUT);
                buf.extend_from_slice(v);
                wb.put(&dk, buf);
            }
            None => wb.put(&dk, [TAG_TOMBSTONE]),
        }
        if overlay.is_some() || applied.latest.is_some() || applied.recent.is_some() {
            let mut prefix = dk;
            prefix.truncate(prefix.len() - keys::VERSION_BYTES);
            if let Some(o) = overlay.as_deref_mut() {
                o.insert(prefix.clone(), version);
            }
            if let Some(r) = applied.recent.as_deref_mut() {
                r.push((prefix.clone(), version.0));
            }
            if let Some(l) = applied.latest.as_deref_mut() {
                l.push(LatestWrite {
                    prefix,
                    version: version.0,
                    // A copy: the command's bytes may share a much larger network buffer.
                    value: value.map(|v| Bytes::copy_from_slice(&v)),
                });
            }
        }
    }
    generated
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
