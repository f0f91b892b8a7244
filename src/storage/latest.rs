//! The latest applied version of recently read or written keys, in memory, so a point read of
//! such a key needs no RocksDB iterator (a seek through every memtable and SST level).
//!
//! While the cache is on, the apply path records every write it applies, before it publishes
//! the new last version: a reader that has checked its read version against the published last
//! version finds here the newest write at or below that version, or nothing (entries only move
//! forward; eviction only removes). A reader takes an entry only if its version is at or below
//! the read version; otherwise it reads RocksDB. A read at the latest version that missed fills
//! in what it found, with a `Ticket` taken before it read that version; the fill is dropped if
//! an apply run started or the key's shard changed (a write recorded, an eviction, a clear)
//! since, or the cache went off. An install empties it.
//!
//! On and off: a lookup turns it on. The apply path decides at the start of each run, after
//! marking the run in progress, whether it records: once no lookup came for `IDLE_OFF` it turns
//! the cache off and empties it before the run's writes, so a store whose reads all go elsewhere
//! (a follower) pays nothing, and no entry can miss a write applied while it was off.
//!
//! Entries hold at most 4 KiB. Bounded by `storage.latest_cache_bytes`, split over shards; a
//! shard over its share drops a quarter of its entries (arbitrary ones: the hash map's order),
//! so an eviction costs one pass over a small shard, never over the whole cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

const SHARDS: usize = 64;
/// The largest entry kept (key, value and overhead): a large value gains little (its copy
/// costs more than the seek it saves) and would make every recorded write a large copy.
const ENTRY_MAX: usize = 4096;
/// How long without a lookup before the apply path stops recording.
const IDLE_OFF: Duration = Duration::from_secs(5);
/// What an entry costs beyond its key and value bytes (map slot, allocations), for the bound.
const ENTRY_OVERHEAD: usize = 64;

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    version: u64,
    /// `None`: the key's latest write deleted it.
    value: Option<Bytes>,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Entry>,
    bytes: usize,
    /// Bumped by every record, eviction and clear: a fill whose ticket saw another value is
    /// dropped.
    changes: u64,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Latest {
    /// The newest write of the key at or below the read version: its value, or `None` if it
    /// deleted the key.
    Visible(Option<Bytes>),
    /// Not known here (never cached, evicted, or written after the read version).
    Unknown,
}

/// A reader's claim, taken before it reads the latest version, to fill in what it finds.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    changes: u64,
    publishing: u64,
}

/// One write of an applied run, to record once the run is written.
pub struct LatestWrite {
    /// The key's data-key prefix (`keys::data_key_prefix`).
    pub prefix: Vec<u8>,
    pub version: u64,
    pub value: Option<Bytes>,
}

#[derive(Debug)]
pub struct LatestCache {
    shards: Vec<Mutex<Shard>>,
    shard_budget: usize,
    /// A lookup came since the apply path last looked.
    wanted: AtomicBool,
    /// Turned on by lookups, off by the apply path (which then empties the cache).
    on: AtomicBool,
    /// Set by the apply path while its store is where reads go (a primary's, a single
    /// store's): the cache stays on without lookups, so what is written before the reads
    /// begin is in it.
    pinned: AtomicBool,
    /// When the apply path last sampled `wanted` (ms since `born`).
    sampled_ms: AtomicU64,
    /// Odd from the start of an apply run until it has published its last version: no ticket
    /// is handed out meanwhile, and a fill whose ticket saw another value is dropped.
    publishing: AtomicU64,
    born: Instant,
    idle_off: Duration,
    /// Lookups answered from the cache.
    hits: AtomicU64,
}

impl Default for LatestCache {
    fn default() -> Self {
        LatestCache::new(0)
    }
}

fn entry_cost(key: &[u8], value: &Option<Bytes>) -> usize {
    key.len() + value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD
}

/// FNV-1a: a cheap hash to pick the shard.
fn shard_of(key: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

impl LatestCache {
    /// A cache of at most `budget_bytes` (0: disabled, every lookup is `Unknown`).
    pub fn new(budget_bytes: u64) -> Self {
        Self::with_idle_off(budget_bytes, IDLE_OFF)
    }

    fn with_idle_off(budget_bytes: u64, idle_off: Duration) -> Self {
        let shard_budget = usize::try_from(budget_bytes).unwrap_or(usize::MAX) / SHARDS;
        let shards = if shard_budget == 0 {
            Vec::new()
        } else {
            (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect()
        };
        LatestCache {
            shards,
            shard_budget,
            wanted: AtomicBool::new(false),
            on: AtomicBool::new(false),
            pinned: AtomicBool::new(false),
            sampled_ms: AtomicU64::new(0),
            publishing: AtomicU64::new(0),
            born: Instant::now(),
            idle_off,
            hits: AtomicU64::new(0),
        }
    }

    /// Called by the apply path (its only caller) at the start of each run: marks the run in
    /// progress and says whether to record its writes (`published` ends the run). Turns the
    /// cache off, emptying it, when no lookup came for `idle_off`.
    pub fn run_begins(&self) -> bool {
        if !self.enabled() {
            return false;
        }
        if self.publishing.load(Ordering::SeqCst).is_multiple_of(2) {
            self.publishing.fetch_add(1, Ordering::SeqCst);
        }
        let pinned = self.pinned.load(Ordering::Relaxed);
        if pinned {
            self.on.store(true, Ordering::SeqCst);
        }
        // After the mark: a fill that got past it saw `on` before this load.
        if !self.on.load(Ordering::SeqCst) {
            return false;
        }
        let now = self.now_ms();
        let idle_off = u64::try_from(self.idle_off.as_millis()).unwrap_or(u64::MAX);
        if !pinned && now.saturating_sub(self.sampled_ms.load(Ordering::Relaxed)) >= idle_off {
            self.sampled_ms.store(now, Ordering::Relaxed);
            if !self.wanted.swap(false, Ordering::Relaxed) {
                self.on.store(false, Ordering::SeqCst);
                self.clear();
                return false;
            }
        }
        true
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the store is where reads go (then the cache stays on); set by the apply path.
    pub fn pin(&self, pinned: bool) {
        self.pinned.store(pinned, Ordering::Relaxed);
    }

    /// The run begun last has published its last version.
    pub fn published(&self) {
        if self.publishing.load(Ordering::SeqCst) % 2 == 1 {
            self.publishing.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn enabled(&self) -> bool {
        !self.shards.is_empty()
    }

    fn shard(&self, key: &[u8]) -> Option<std::sync::MutexGuard<'_, Shard>> {
        let s = self.shards.get(shard_of(key))?;
        Some(s.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The newest write of the data-key prefix `key` at or below version `at`, if known.
    pub fn get(&self, key: &[u8], at: u64) -> Latest {
        let Some(shard) = self.shard(key) else {
            return Latest::Unknown;
        };
        if !self.wanted.load(Ordering::Relaxed) {
            self.wanted.store(true, Ordering::Relaxed);
        }
        if !self.on.load(Ordering::Relaxed) {
            self.sampled_ms.store(self.now_ms(), Ordering::Relaxed);
            self.on.store(true, Ordering::SeqCst);
        }
        match shard.map.get(key) {
            Some(e) if e.version <= at => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Latest::Visible(e.value.clone())
            }
            _ => Latest::Unknown,
        }
    }

    /// Taken by a reader before it reads the latest version, for a later `fill`; `None` while
    /// the apply path does not record (a fill could then miss a later write).
    pub fn ticket(&self, key: &[u8]) -> Option<Ticket> {
        if !self.on.load(Ordering::SeqCst) {
            return None;
        }
        let changes = self.shard(key)?.changes;
        let publishing = self.publishing.load(Ordering::SeqCst);
        if publishing % 2 == 1 {
            return None;
        }
        Some(Ticket {
            changes,
            publishing,
        })
    }

    /// What a reader found for the data-key prefix `key` at the latest version, read after it
    /// took `ticket`: `version` is the key's newest write (a `value` of `None`: a deletion).
    pub fn fill(&self, ticket: Ticket, key: &[u8], version: u64, value: Option<Bytes>) {
        self.put(
            LatestWrite {
                prefix: key.to_vec(),
                version,
                value,
            },
            Some(ticket),
        );
    }

    /// Records an apply run's writes (in version order; a newer entry is never replaced by an
    /// older), between `run_begins` and `published`.
    pub fn record(&self, writes: Vec<LatestWrite>) {
        for w in writes {
            self.put(w, None);
        }
    }

    fn put(&self, w: LatestWrite, ticket: Option<Ticket>) {
        let Some(mut guard) = self.shard(&w.prefix) else {
            return;
        };
        let shard = &mut *guard;
        match ticket {
            Some(t) => {
                let stale = t.changes != shard.changes
                    || t.publishing != self.publishing.load(Ordering::SeqCst)
                    || !self.on.load(Ordering::SeqCst);
                if stale {
                    return;
                }
            }
            None => shard.changes += 1,
        }
        let cost = entry_cost(&w.prefix, &w.value);
        if cost > self.shard_budget.min(ENTRY_MAX) {
            if let Some(old) = shard.map.remove(w.prefix.as_slice()) {
                shard.bytes -= entry_cost(&w.prefix, &old.value);
            }
            return;
        }
        let entry = Entry {
            version: w.version,
            value: w.value,
        };
        match shard.map.get_mut(w.prefix.as_slice()) {
            Some(old) if old.version >= entry.version => {}
            Some(old) => {
                let before = entry_cost(&w.prefix, &old.value);
                shard.bytes = shard.bytes - before + cost;
                *old = entry;
            }
            None => {
                shard.bytes += cost;
                shard.map.insert(w.prefix.into_boxed_slice(), entry);
            }
        }
        if shard.bytes > self.shard_budget {
            evict(shard, self.shard_budget);
        }
    }

    /// Forgets everything (the store's contents are being replaced, or writes will no longer
    /// be recorded).
    pub fn clear(&self) {
        for s in &self.shards {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            s.map = HashMap::new();
            s.bytes = 0;
            s.changes += 1;
        }
    }

    /// Lookups answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Key and value bytes held (with the per-entry overhead), for tests and metrics.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes)
            .sum()
    }
}

/// Drops entries until the shard holds at most three quarters of its budget.
fn evict(shard: &mut Shard, budget: usize) {
    shard.changes += 1;
    let target = budget / 4 * 3;
    let mut bytes = shard.bytes;
    shard.map.retain(|k, e| {
        if bytes <= target {
            return true;
        }
        bytes -= entry_cost(k, &e.value);
        false
    });
    shard.bytes = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: &str, version: u64, value: Option<&str>) -> LatestWrite {
        LatestWrite {
            prefix: key.as_bytes().to_vec(),
            version,
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        }
    }

    fn visible(v: &str) -> Latest {
        Latest::Visible(Some(Bytes::copy_from_slice(v.as_bytes())))
    }

    #[test]
    fn a_lookup_sees_the_newest_write_at_or_below_the_read_version_only() {
        let c = LatestCache::new(1 << 20);
        c.record(vec![w("a", 5, Some("five")), w("a", 7, Some("seven"))]);
        c.record(vec![w("b", 6, None)]);
        assert_eq!(c.get(b"a", 7), visible("seven"));
        assert_eq!(c.get(b"a", 9), visible("seven"));
        // Written after the read version: the caller must read the store.
        assert_eq!(c.get(b"a", 6), Latest::Unknown);
        assert_eq!(c.get(b"b", 6), Latest::Visible(None));
        assert_eq!(c.get(b"c", 9), Latest::Unknown);
        assert_eq!(c.hits(), 3);
        // An older write never replaces a newer one.
        c.record(vec![w("a", 4, Some("four"))]);
        assert_eq!(c.get(b"a", 9), visible("seven"));
        c.clear();
        assert_eq!(c.get(b"a", 9), Latest::Unknown);
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn the_cache_stays_within_its_budget_and_a_disabled_one_knows_nothing() {
        let budget = 64 * 1024;
        let c = LatestCache::new(budget);
        for i in 0..10_000u64 {
            c.record(vec![w(&format!("key-{i}"), i + 1, Some("0123456789"))]);
        }
        assert!(c.bytes() <= budget as usize, "{} bytes", c.bytes());
        assert!(c.bytes() > budget as usize / 2, "{} bytes", c.bytes());
        // The newest keys are still found or absent, never wrong.
        for i in 9_990..10_000u64 {
            match c.get(format!("key-{i}").as_bytes(), u64::MAX) {
                Latest::Visible(v) => assert_eq!(v, Some(Bytes::from_static(b"0123456789"))),
                Latest::Unknown => {}
            }
        }
        // A value over the entry cap is not kept either.
        let big = LatestCache::new(1 << 30);
        big.record(vec![w("v", 1, Some(&"x".repeat(ENTRY_MAX)))]);
        assert_eq!(big.get(b"v", 9), Latest::Unknown);
        big.record(vec![w("v", 2, Some("small"))]);
        assert_eq!(big.get(b"v", 9), visible("small"));
        // A value larger than a shard's share is not kept, and drops an older entry of the key.
        c.record(vec![w("big", 1, Some("x"))]);
        let huge = "x".repeat(budget as usize);
        c.record(vec![w("big", 2, Some(&huge))]);
        assert_eq!(c.get(b"big", 9), Latest::Unknown);
        let off = LatestCache::new(0);
        off.record(vec![w("a", 1, Some("one"))]);
        assert!(!off.enabled());
        assert!(!off.run_begins());
        assert_eq!(off.get(b"a", 9), Latest::Unknown);
    }

    #[test]
    fn the_cache_turns_on_at_a_lookup_and_off_emptying_itself_when_lookups_stop() {
        let c = LatestCache::with_idle_off(1 << 20, Duration::from_millis(50));
        // Nobody reads: nothing to record.
        assert!(!c.run_begins());
        c.published();
        assert_eq!(c.get(b"a", 9), Latest::Unknown);
        assert!(c.run_begins());
        c.record(vec![w("a", 1, Some("one"))]);
        c.published();
        // Lookups keep it on across idle periods.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(c.get(b"a", 9), visible("one"));
            assert!(c.run_begins());
            c.published();
        }
        // Without lookups it stops within two periods, and empties the cache (so the writes
        // it no longer records cannot leave a stale entry).
        let since = Instant::now();
        while c.run_begins() {
            c.published();
            assert!(since.elapsed() < Duration::from_secs(5), "never stopped");
            std::thread::sleep(Duration::from_millis(10));
        }
        c.published();
        assert!(since.elapsed() >= Duration::from_millis(40));
        assert_eq!(c.bytes(), 0);
        assert_eq!(c.get(b"a", 9), Latest::Unknown);
        assert!(c.run_begins());
        c.published();
        // Pinned (the store reads go to), it records without lookups and stays on.
        let p = LatestCache::with_idle_off(1 << 20, Duration::from_millis(1));
        p.pin(true);
        for _ in 0..3 {
            assert!(p.run_begins());
            p.record(vec![w("a", 1, Some("one"))]);
            p.published();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(p.get(b"a", 9), visible("one"));
        p.pin(false);
        std::thread::sleep(Duration::from_millis(5));
        while p.run_begins() {
            p.published();
            std::thread::sleep(Duration::from_millis(2));
        }
        p.published();
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn a_fill_counts_only_if_no_run_and_no_change_of_its_shard_came_after_its_ticket() {
        let c = LatestCache::new(1 << 20);
        assert!(c.ticket(b"k").is_none(), "off: no ticket");
        assert_eq!(c.get(b"k", 9), Latest::Unknown);
        let t = c.ticket(b"k").expect("on after a lookup");
        c.fill(t, b"k", 3, Some(Bytes::from_static(b"three")));
        assert_eq!(c.get(b"k", 9), visible("three"));
        // An apply run began after the ticket: dropped.
        let t = c.ticket(b"j").expect("ticket");
        assert!(c.run_begins());
        assert!(
            c.ticket(b"j").is_none(),
            "no ticket while a run is in progress"
        );
        c.published();
        c.fill(t, b"j", 1, Some(Bytes::from_static(b"one")));
        assert_eq!(c.get(b"j", 9), Latest::Unknown);
        // An older fill never replaces a newer entry.
        let t = c.ticket(b"k").expect("ticket");
        c.fill(t, b"k", 2, Some(Bytes::from_static(b"two")));
        assert_eq!(c.get(b"k", 9), visible("three"));
        // Cleared after the ticket: dropped.
        let t = c.ticket(b"m").expect("ticket");
        c.clear();
        c.fill(t, b"m", 1, Some(Bytes::from_static(b"one")));
        assert_eq!(c.get(b"m", 9), Latest::Unknown);
        // A write recorded in the shard after the ticket: dropped.
        let t = c.ticket(b"n").expect("ticket");
        c.record(vec![w("n", 5, Some("five"))]);
        c.fill(t, b"n", 4, None);
        assert_eq!(c.get(b"n", 9), visible("five"));
        let t = c.ticket(b"n").expect("ticket");
        c.record(vec![w("n", 6, None)]);
        c.fill(t, b"n", 5, Some(Bytes::from_static(b"five")));
        assert_eq!(c.get(b"n", 9), Latest::Visible(None));
    }
}
