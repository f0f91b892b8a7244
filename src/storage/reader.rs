//! MVCC read paths: point reads and key-selector range reads at a version.
//!
//! `KvReader` is cheap to clone and safe to use from any thread while the apply thread writes.
//! Every read checks that its version is applied, then fixes its view (a snapshot; for a point
//! read, its one iterator's own view, or a lookup in the latest-version cache, `latest.rs`), and
//! only then checks the bottom of the version window: the executor publishes a version after
//! the write that holds it, and a new oldest version before the write that garbage-collects
//! below it, so a read that passes both checks finds every version it needs in its view.
//!
//! Range rules (the `getRange` selectors): the range starts at the first visible key `>= begin`
//! (`> begin` when `begin_or_equal` is false), moved by `begin_offset` keys (negative moves
//! backwards); it ends at the first visible key `>= end` (`> end` when `end_or_equal` is true),
//! moved by `end_offset` keys. The result holds the keys from the start (inclusive) to the end
//! (exclusive) in key order, at most `limit` of them (`0` = no limit); `has_more` is true only if
//! the limit cut off at least one more key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rocksdb::{DBRawIteratorWithThreadMode, ReadOptions, SnapshotWithThreadMode, DB};

use super::keys::{self, TAG_PUT};
use super::StorageError;
use crate::types::{Sequence, Version};

/// Versions published by the executor for readers on other threads.
#[derive(Debug, Default)]
pub struct Shared {
    pub last_version: AtomicU64,
    /// Shared with the GC compaction filter, which reads it when a compaction starts.
    pub oldest_version: Arc<AtomicU64>,
    pub applied_sequence: AtomicU64,
    /// Odd while a snapshot from a peer is being installed (the store is incomplete), bumped
    /// again when it is done: a read whose RocksDB snapshot may have seen a partial install
    /// fails instead of answering from it.
    pub install_epoch: AtomicU64,
    /// The latest applied version of recently read or written keys (`latest.rs`).
    pub latest: super::latest::LatestCache,
}

#[derive(Clone)]
pub struct KvReader {
    db: Arc<DB>,
    shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
pub struct RangeQuery {
    pub cf: String,
    pub begin: Bytes,
    pub begin_or_equal: bool,
    pub begin_offset: i32,
    pub end: Bytes,
    pub end_or_equal: bool,
    pub end_offset: i32,
    /// 0 = no limit.
    pub limit: u32,
    /// Key and value bytes a result holds at most (0 = no limit); past it the range is cut
    /// with `has_more` (it always holds at least one pair, so paging makes progress).
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeResult {
    pub key_values: Vec<(Bytes, Bytes)>,
    pub has_more: bool,
}

impl KvReader {
    pub(super) fn new(db: Arc<DB>, shared: Arc<Shared>) -> Self {
        KvReader { db, shared }
    }

    pub fn last_version(&self) -> Version {
        Version(self.shared.last_version.load(Ordering::SeqCst))
    }

    pub fn oldest_version(&self) -> Version {
        Version(self.shared.oldest_version.load(Ordering::SeqCst))
    }

    pub fn applied_sequence(&self) -> Sequence {
        Sequence(self.shared.applied_sequence.load(Ordering::SeqCst))
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// Point reads answered from the latest-version cache.
    pub fn latest_cache_hits(&self) -> u64 {
        self.shared.latest.hits()
    }

    /// Bytes the latest-version cache holds.
    pub fn latest_cache_bytes(&self) -> u64 {
        u64::try_from(self.shared.latest.bytes()).unwrap_or(u64::MAX)
    }

    /// `at` is applied: every write at or below it is in RocksDB (and in the latest-version
    /// cache), so a view fixed after this check holds them all.
    fn check_applied(&self, at: Version) -> Result<(), StorageError> {
        let latest = self.last_version();
        if at > latest {
            return Err(StorageError::FutureVersion {
                read_version: at,
                latest,
            });
        }
        Ok(())
    }

    /// `at` is inside the version window: a view fixed before this check still holds every
    /// version a read at `at` needs (GC publishes the oldest version before it deletes).
    fn check_kept(&self, at: Version) -> Result<(), StorageError> {
        let oldest = self.oldest_version();
        if at < oldest {
            return Err(StorageError::TooOld {
                read_version: at,
                oldest,
            });
        }
        Ok(())
    }

    /// A view of the store (`fix` takes it: a snapshot, an iterator's own view, or a lookup in
    /// the latest-version cache) that no install overlaps, with `at` applied before the view was
    /// fixed and inside the version window as seen after it.
    fn fixed_view<T>(&self, at: Version, fix: impl FnOnce() -> T) -> Result<T, StorageError> {
        let epoch = self.shared.install_epoch.load(Ordering::SeqCst);
        if epoch % 2 == 1 {
            return Err(StorageError::Installing);
        }
        self.check_applied(at)?;
        let view = fix();
        self.check_kept(at)?;
        if self.shared.install_epoch.load(Ordering::SeqCst) != epoch {
            return Err(StorageError::Installing);
        }
        Ok(view)
    }

    fn snapshot_at(&self, at: Version) -> Result<SnapshotWithThreadMode<'_, DB>, StorageError> {
        self.fixed_view(at, || self.db.snapshot())
    }

    /// The value of `key` as of version `at`. A point read takes no explicit snapshot (taking
    /// and releasing one costs the DB mutex): its one iterator's own view is enough.
    pub fn get(&self, cf: &str, key: &[u8], at: Version) -> Result<Option<Bytes>, StorageError> {
        let prefix = keys::data_key_prefix(cf, key);
        if let Some(found) = self.cached(&prefix, at)? {
            return Ok(found);
        }
        // A read at the latest version may fill the cache (`latest.rs`). The ticket comes
        // first, the version check after it: an apply run published between the two makes the
        // check fail, one begun after the ticket makes the fill drop.
        let ticket = self
            .shared
            .latest
            .ticket(&prefix)
            .filter(|_| self.last_version() == at);
        let cf_prefix = keys::cf_prefix(cf);
        // The iterator is bounded to this key's versions.
        let ro = Cursor::read_options(&prefix);
        let it = self.fixed_view(at, || self.db.raw_iterator_opt(ro))?;
        let mut c = Cursor {
            it,
            cf_prefix,
            cf,
            at,
        };
        let Some(ticket) = ticket else {
            return c.visible_value(key);
        };
        let (version, value) = c.visible_entry(key)?.unwrap_or((Version(0), None));
        self.shared
            .latest
            .fill(ticket, &prefix, version.0, value.clone());
        Ok(value)
    }

    /// The value of the key with data-key prefix `prefix` at `at` from the latest-version cache
    /// (`Some`), or `None` when the cache does not know it. The read version is checked against
    /// the published last version first: every write at or below it is in the cache by then.
    fn cached(&self, prefix: &[u8], at: Version) -> Result<Option<Option<Bytes>>, StorageError> {
        if !self.shared.latest.enabled() {
            return Ok(None);
        }
        let found = self.fixed_view(at, || self.shared.latest.get(prefix, at.0))?;
        Ok(match found {
            super::latest::Latest::Visible(v) => Some(v),
            super::latest::Latest::Unknown => None,
        })
    }

    /// The value of `key` at the latest applied version.
    pub fn get_latest(&self, cf: &str, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        self.get(cf, key, self.last_version())
    }

    /// A key-selector range read at version `at` (see the module doc for the rules).
    pub fn range(&self, q: &RangeQuery, at: Version) -> Result<RangeResult, StorageError> {
        let snap = self.snapshot_at(at)?;
        let mut c = Cursor::new(&snap, &q.cf, at);
        let start = c.select(&q.begin, !q.begin_or_equal, q.begin_offset)?;
        let end = c.select(&q.end, q.end_or_equal, q.end_offset)?;
        let mut out = RangeResult::default();
        let mut bytes = 0u64;
        let Some(mut key) = start else {
            return Ok(out);
        };
        loop {
            if let Some(e) = &end {
                if key.as_slice() >= e.as_slice() {
                    break;
                }
            }
            if q.limit != 0 && out.key_values.len() == q.limit as usize {
                out.has_more = true;
                break;
            }
            let value = c.visible_value(&key)?.unwrap_or_default();
            let size = (key.len() + value.len()) as u64;
            if q.max_bytes != 0 && !out.key_values.is_empty() && bytes + size > q.max_bytes {
                out.has_more = true;
                break;
            }
            bytes += size;
            out.key_values.push((Bytes::from(key.clone()), value));
            match c.next_visible(&key, true)? {
                Some(k) => key = k,
                None => break,
            }
        }
        Ok(out)
    }

    /// Approximate live statistics from RocksDB properties.
    pub fn approximate_stats(&self) -> (u64, u64, u64) {
        let p = |n: &str| self.db.property_int_value(n).ok().flatten().unwrap_or(0);
        (
            p("rocksdb.estimate-num-keys"),
            p("rocksdb.total-sst-files-size") + p("rocksdb.cur-size-all-mem-tables"),
            p("rocksdb.estimate-pending-compaction-bytes"),
        )
    }
}

/// Walks visible user keys of one column family at one version.
struct Cursor<'a> {
    it: DBRawIteratorWithThreadMode<'a, DB>,
    cf_prefix: Vec<u8>,
    cf: &'a str,
    at: Version,
}

impl<'a> Cursor<'a> {
    fn new(snap: &'a SnapshotWithThreadMode<'a, DB>, cf: &'a str, at: Version) -> Self {
        let cf_prefix = keys::cf_prefix(cf);
        Cursor {
            it: snap.raw_iterator_opt(Self::read_options(&cf_prefix)),
            cf_prefix,
            cf,
            at,
        }
    }

    /// Iteration bounded to the keys that start with `prefix` (a column family's, or one
    /// key's versions).
    fn read_options(prefix: &[u8]) -> ReadOptions {
        let mut ro = ReadOptions::default();
        if let Some(end) = keys::prefix_successor(prefix) {
            ro.set_iterate_upper_bound(end);
        }
        ro.set_iterate_lower_bound(prefix.to_vec());
        ro
    }

    /// Parses the iterator's current entry: (user key, version, value is a put).
    fn current(&self) -> Result<Option<(Vec<u8>, Version, bool)>, StorageError> {
        if !self.it.valid() {
            self.it.status()?;
            return Ok(None);
        }
        let (Some(k), Some(v)) = (self.it.key(), self.it.value()) else {
            return Ok(None);
        };
        let rest = k.strip_prefix(self.cf_prefix.as_slice()).ok_or_else(|| {
            StorageError::Corrupt(format!("key {k:02x?} outside its column family"))
        })?;
        let (key, ver) = keys::split_data_key(rest)
            .ok_or_else(|| StorageError::Corrupt(format!("bad data key {k:02x?}")))?;
        Ok(Some((key, ver, v.first() == Some(&TAG_PUT))))
    }

    fn visible_value(&mut self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        Ok(self.visible_entry(key)?.and_then(|(_, v)| v))
    }

    /// The newest version of `key` at or below the cursor's version and its value (`None`: a
    /// deletion), or `None` if the key has no such version.
    fn visible_entry(
        &mut self,
        key: &[u8],
    ) -> Result<Option<(Version, Option<Bytes>)>, StorageError> {
        self.it.seek(keys::data_key(self.cf, key, self.at));
        Ok(match self.current()? {
            Some((k, ver, true)) if k == key => {
                let v = self.it.value().unwrap_or_default();
                Some((
                    ver,
                    Some(Bytes::copy_from_slice(v.get(1..).unwrap_or_default())),
                ))
            }
            Some((k, ver, false)) if k == key => Some((ver, None)),
            _ => None,
        })
    }

    /// The first visible key `>= from` (`> from` when `exclusive`).
    fn next_visible(
        &mut self,
        from: &[u8],
        exclusive: bool,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let prefix = keys::data_key_prefix(self.cf, from);
        if exclusive {
            match keys::prefix_successor(&prefix) {
                Some(s) => self.it.seek(s),
                None => return Ok(None),
            }
        } else {
            self.it.seek(&prefix);
        }
        loop {
            let Some((key, ver, is_put)) = self.current()? else {
                return Ok(None);
            };
            if ver <= self.at {
                // The newest version at or below `at` decides visibility of this key.
                if is_put {
                    return Ok(Some(key));
                }
                match keys::prefix_successor(&keys::data_key_prefix(self.cf, &key)) {
                    Some(s) => self.it.seek(s),
                    None => return Ok(None),
                }
            } else {
                self.it.next();
            }
        }
    }

    /// The last visible key `< before` (None = before the end of the column family).
    fn prev_visible(&mut self, before: Option<&[u8]>) -> Result<Option<Vec<u8>>, StorageError> {
        let mut bound = match before {
            Some(k) => keys::data_key_prefix(self.cf, k),
            None => match keys::prefix_successor(&self.cf_prefix) {
                Some(s) => s,
                None => return Ok(None),
            },
        };
        loop {
            self.it.seek_for_prev(&bound);
            // seek_for_prev lands on the last entry <= bound; bound itself is never an entry.
            let Some((key, _, _)) = self.current()? else {
                return Ok(None);
            };
            let here = keys::data_key_prefix(self.cf, &key);
            if self.visible_value(&key)?.is_some() {
                return Ok(Some(key));
            }
            bound = here;
        }
    }

    /// Resolves a key selector: the first visible key `>= key` (`> key` when `after`), moved by
    /// `offset` visible keys. `None` means "past the last key".
    fn select(
        &mut self,
        key: &[u8],
        after: bool,
        offset: i32,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let mut pos = self.next_visible(key, after)?;
        if offset > 0 {
            for _ in 0..offset {
                match &pos {
                    Some(k) => pos = self.next_visible(&k.clone(), true)?,
                    None => break,
                }
            }
        } else if offset < 0 {
            for _ in 0..offset.unsigned_abs() {
                match self.prev_visible(pos.as_deref())? {
                    Some(k) => pos = Some(k),
                    // Before the first key: the selector stays at the first key.
                    None => break,
                }
            }
        }
        Ok(pos)
    }
}
