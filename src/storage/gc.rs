//! MVCC garbage collection as a RocksDB compaction filter: versions that no read inside the
//! MVCC window can see are dropped while RocksDB compacts, so the apply path does no GC work at
//! all (no read-before-write, no queue entries, no point deletes).
//!
//! Owns: `VersionGcFactory`, `VersionGc`. Must not: decide anything a read inside the window
//! can observe. Invariants: for every user key, the newest version at or below `oldest` (the one
//! a read at `oldest` sees) and every newer version are kept; only versions strictly older than
//! a kept version at or below `oldest` are dropped. A tombstone that is that visible version is
//! dropped (with everything older) only in a compaction that covers every file, where no older
//! version can hide in a level the compaction did not read.
//!
//! Why this is safe for reads: a reader takes its RocksDB snapshot, then checks its read version
//! against `oldest` (which only grows). A dropped version is superseded by a version at or below
//! the `oldest` this filter started with, which is at or below any read version that passes the
//! check, so the dropped version was invisible to that read. Replicas compact at different
//! times, so their raw bytes differ below the window, but every read the window allows returns
//! the same answer everywhere; conflict detection only looks at versions above a read version
//! that is inside the window, and those are never dropped.

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::compaction_filter::{CompactionFilter, Decision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

use super::keys::{DATA_PREFIX, GC_PREFIX, TAG_TOMBSTONE};

/// Bytes of the inverted big-endian version at the end of every data key.
const VERSION_BYTES: usize = 8;

/// Creates one filter per compaction, reading the MVCC window's lower edge at that moment.
pub struct VersionGcFactory {
    oldest: Arc<AtomicU64>,
    name: CString,
}

impl VersionGcFactory {
    /// `oldest` is the store's published oldest readable version (it only grows).
    pub fn new(oldest: Arc<AtomicU64>) -> Self {
        VersionGcFactory {
            oldest,
            name: CString::new("paxoskv.version_gc.factory").unwrap_or_default(),
        }
    }
}

impl CompactionFilterFactory for VersionGcFactory {
    type Filter = VersionGc;

    fn create(&mut self, context: CompactionFilterContext) -> VersionGc {
        VersionGc::new(
            self.oldest.load(Ordering::SeqCst),
            context.is_full_compaction,
        )
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

/// The filter of one compaction run. RocksDB hands it keys in order, so every version of a
/// user key arrives together, newest first (versions are stored inverted).
pub struct VersionGc {
    oldest: u64,
    full: bool,
    /// The data key prefix (without version) of the user key being walked.
    current: Vec<u8>,
    /// A version at or below `oldest` of `current` has been kept (or, for a tombstone in a full
    /// compaction, is being dropped with everything older): older versions go.
    covered: bool,
    name: CString,
}

impl VersionGc {
    pub fn new(oldest: u64, full_compaction: bool) -> Self {
        VersionGc {
            oldest,
            full: full_compaction,
            current: Vec::new(),
            covered: false,
            name: CString::new("paxoskv.version_gc").unwrap_or_default(),
        }
    }

    /// The decision for one key, as a plain bool (true: drop it).
    pub fn drop_key(&mut self, key: &[u8], value: &[u8]) -> bool {
        match key.first() {
            // Garbage-collection queue entries of stores written before this filter existed.
            Some(&GC_PREFIX) => return true,
            Some(&DATA_PREFIX) if key.len() > VERSION_BYTES => {}
            _ => return false,
        }
        let (prefix, inverted) = key.split_at(key.len() - VERSION_BYTES);
        let mut a = [0u8; VERSION_BYTES];
        a.copy_from_slice(inverted);
        let version = !u64::from_be_bytes(a);
        if prefix != self.current.as_slice() {
            self.current.clear();
            self.current.extend_from_slice(prefix);
            self.covered = false;
        }
        if self.covered {
            return true;
        }
        if version <= self.oldest {
            // The version a read at `oldest` sees: keep it, drop everything older. A tombstone
            // that nothing in the window needs goes too, but only when no unread level can hold
            // an older version it hides.
            self.covered = true;
            return self.full && value.first() == Some(&TAG_TOMBSTONE);
        }
        false
    }
}

impl CompactionFilter for VersionGc {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> Decision {
        if self.drop_key(key, value) {
            Decision::Remove
        } else {
            Decision::Keep
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::keys::{data_key, TAG_PUT};
    use crate::types::Version;

    fn walk(gc: &mut VersionGc, entries: &[(&[u8], u64, u8)]) -> Vec<bool> {
        let mut sorted: Vec<(Vec<u8>, u8)> = entries
            .iter()
            .map(|(k, v, tag)| (data_key("", k, Version(*v)), *tag))
            .collect();
        sorted.sort();
        sorted.iter().map(|(k, t)| gc.drop_key(k, &[*t])).collect()
    }

    #[test]
    fn keeps_the_version_visible_at_oldest_and_everything_newer() {
        let mut gc = VersionGc::new(10, false);
        // Key "a": versions 15, 12 (above the window edge), 9 (visible at 10), 5, 2 (garbage).
        let dropped = walk(
            &mut gc,
            &[
                (b"a", 15, TAG_PUT),
                (b"a", 12, TAG_PUT),
                (b"a", 9, TAG_PUT),
                (b"a", 5, TAG_PUT),
                (b"a", 2, TAG_PUT),
                (b"b", 3, TAG_PUT),
            ],
        );
        // Sorted order: a@15, a@12, a@9, a@5, a@2, b@3.
        assert_eq!(dropped, vec![false, false, false, true, true, false]);
    }

    #[test]
    fn a_version_exactly_at_oldest_is_the_visible_one() {
        let mut gc = VersionGc::new(10, false);
        let dropped = walk(&mut gc, &[(b"k", 10, TAG_PUT), (b"k", 9, TAG_PUT)]);
        assert_eq!(dropped, vec![false, true]);
    }

    #[test]
    fn tombstones_go_only_in_full_compactions() {
        let entries: &[(&[u8], u64, u8)] = &[(b"d", 8, TAG_TOMBSTONE), (b"d", 4, TAG_PUT)];
        assert_eq!(
            walk(&mut VersionGc::new(10, false), entries),
            vec![false, true]
        );
        assert_eq!(
            walk(&mut VersionGc::new(10, true), entries),
            vec![true, true]
        );
        // A tombstone still inside the window stays even in a full compaction.
        assert_eq!(
            walk(&mut VersionGc::new(5, true), entries),
            vec![false, false]
        );
    }

    #[test]
    fn metadata_stays_and_old_queue_entries_go() {
        let mut gc = VersionGc::new(u64::MAX, true);
        assert!(!gc.drop_key(b"\x00applied_sequence", &[1, 0, 0, 0, 0, 0, 0, 0]));
        assert!(gc.drop_key(&[GC_PREFIX, 0, 0, 0, 0, 0, 0, 0, 1], &[0]));
    }
}
