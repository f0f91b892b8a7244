//! The newest version of every recently written key, on the apply path, so that a transaction's
//! conflict check on one key (`written_after`) needs no RocksDB iterator: a seek through the
//! memtables and every level-0 file, on every replica, was a fifth of a transaction's CPU.
//!
//! Exact or silent, never wrong: every write applied after `complete_after` is recorded, in
//! version order, and an entry always holds its key's newest write. So a key found here was last
//! written at its entry's version; a key not found was last written at or before
//! `complete_after`. A check below that watermark for a key not found is unknown, and the caller
//! reads RocksDB. Every replica therefore decides exactly as RocksDB alone would, whatever each
//! one's index holds.
//!
//! Bounded by `storage.conflict_index_bytes`: past the bound the oldest writes go first (they
//! are recorded in version order, so that is a queue), and the watermark rises to the newest
//! version dropped. The index records only while conflict checks come: it turns on at an apply
//! run whose commands check read conflicts, and off, empty, after `IDLE_OFF` without one, so a
//! store that takes only blind writes pays nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long without a conflict check before the index stops recording.
const IDLE_OFF: Duration = Duration::from_secs(10);
/// What a recorded write costs beyond its key bytes (its queue slot, its share of the map and
/// of the shared key allocation).
const ENTRY_OVERHEAD: usize = 80;

#[derive(Debug)]
pub struct RecentWrites {
    budget: usize,
    on: bool,
    /// Data-key prefix (`keys::data_key_prefix`) -> version of the key's newest write.
    newest: HashMap<Arc<[u8]>, u64>,
    /// Every recorded write in version order (a key written twice is here twice).
    order: VecDeque<(u64, Arc<[u8]>)>,
    bytes: usize,
    /// Every write applied after this version is recorded.
    complete_after: u64,
    last_check: Option<Instant>,
}

impl RecentWrites {
    /// An index of at most `budget_bytes` (0: off for good, every check unknown).
    pub fn new(budget_bytes: u64) -> Self {
        RecentWrites {
            budget: usize::try_from(budget_bytes).unwrap_or(usize::MAX),
            on: false,
            newest: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            complete_after: 0,
            last_check: None,
        }
    }

    /// Called by the apply path at the start of each run, with whether the run checks read
    /// conflicts and the last version applied before it: returns whether to record the run's
    /// writes (`record`, after they are written).
    pub fn run_begins(&mut self, checks: bool, last_version: u64) -> bool {
        if self.budget == 0 {
            return false;
        }
        if checks {
            self.last_check = Some(Instant::now());
            if !self.on {
                self.on = true;
                self.complete_after = last_version;
            }
        } else if self.on && self.last_check.is_none_or(|t| t.elapsed() >= IDLE_OFF) {
            self.clear();
        }
        self.on
    }

    /// Whether the key with data-key prefix `prefix` was written after version `at`: `None`
    /// when the index cannot tell (the caller reads the store).
    pub fn written_after(&self, prefix: &[u8], at: u64) -> Option<bool> {
        if !self.on {
            return None;
        }
        match self.newest.get(prefix) {
            Some(&v) => Some(v > at),
            None if at >= self.complete_after => Some(false),
            None => None,
        }
    }

    /// Records a run's writes (data-key prefix, version), in version order, once they are in
    /// the store.
    pub fn record(&mut self, writes: Vec<(Vec<u8>, u64)>) {
        if !self.on {
            return;
        }
        for (prefix, version) in writes {
            let key: Arc<[u8]> = match self.newest.get_key_value(prefix.as_slice()) {
                Some((k, _)) => k.clone(),
                None => Arc::from(prefix),
            };
            self.bytes += key.len() + ENTRY_OVERHEAD;
            self.newest.insert(key.clone(), version);
            self.order.push_back((version, key));
        }
        while self.bytes > self.budget {
            let Some((version, key)) = self.order.pop_front() else {
                break;
            };
            self.bytes -= key.len() + ENTRY_OVERHEAD;
            if self.newest.get(&key) == Some(&version) {
                self.newest.remove(&key);
            }
            self.complete_after = self.complete_after.max(version);
        }
    }

    /// Forgets everything and stops recording (idle, or the store's contents were replaced).
    pub fn clear(&mut self) {
        self.on = false;
        self.newest = HashMap::new();
        self.order = VecDeque::new();
        self.bytes = 0;
    }

    /// Bytes accounted against the bound (keys and per-entry overhead).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: &str, version: u64) -> (Vec<u8>, u64) {
        (key.as_bytes().to_vec(), version)
    }

    #[test]
    fn answers_exactly_or_not_at_all() {
        let mut r = RecentWrites::new(1 << 20);
        // Off until a run checks conflicts: nothing is known.
        assert!(!r.run_begins(false, 10));
        assert_eq!(r.written_after(b"a", 10), None);
        assert!(r.run_begins(true, 10));
        r.record(vec![w("a", 11), w("b", 12), w("a", 13)]);
        assert_eq!(r.written_after(b"a", 12), Some(true));
        assert_eq!(r.written_after(b"a", 13), Some(false));
        assert_eq!(r.written_after(b"b", 11), Some(true));
        assert_eq!(r.written_after(b"b", 12), Some(false));
        // Not written since the index began (version 10): known unwritten at 10 or later,
        // unknown before.
        assert_eq!(r.written_after(b"c", 10), Some(false));
        assert_eq!(r.written_after(b"c", 9), None);
    }

    #[test]
    fn stays_within_its_bound_and_raises_its_watermark() {
        let key_cost = 5 + ENTRY_OVERHEAD;
        let mut r = RecentWrites::new(10 * key_cost as u64);
        assert!(r.run_begins(true, 0));
        r.record((1..=30).map(|v| w(&format!("k{:04}", v), v)).collect());
        assert!(r.bytes() <= 10 * key_cost, "{} bytes", r.bytes());
        // The oldest twenty went: those keys are unknown below the watermark (20) and known
        // unwritten at or after it.
        assert_eq!(r.written_after(b"k0005", 4), None);
        assert_eq!(r.written_after(b"k0005", 20), Some(false));
        assert_eq!(r.written_after(b"k0025", 24), Some(true));
        assert_eq!(r.written_after(b"k0025", 25), Some(false));
        // A key written again keeps its newest version when its older write leaves the queue.
        r.record(vec![w("k0021", 31)]);
        r.record((32..=40).map(|v| w(&format!("x{:04}", v), v)).collect());
        assert_eq!(r.written_after(b"k0021", 30), Some(true));
    }

    #[test]
    fn idles_off_empty_and_a_zero_bound_is_off_for_good() {
        let mut r = RecentWrites::new(1 << 20);
        assert!(r.run_begins(true, 5));
        r.record(vec![w("a", 6)]);
        r.last_check = Instant::now().checked_sub(IDLE_OFF + Duration::from_secs(1));
        assert!(!r.run_begins(false, 6));
        assert_eq!(r.bytes(), 0);
        assert_eq!(r.written_after(b"a", 5), None);
        // On again: the watermark starts at the last version applied.
        assert!(r.run_begins(true, 6));
        assert_eq!(r.written_after(b"a", 5), None);
        assert_eq!(r.written_after(b"a", 6), Some(false));
        let mut off = RecentWrites::new(0);
        assert!(!off.run_begins(true, 1));
        off.record(vec![w("a", 2)]);
        assert_eq!(off.written_after(b"a", 1), None);
    }
}
