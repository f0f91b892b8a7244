//! What a replica publishes to other threads (the front, status, tests): role, view, progress,
//! liveness. Plain atomics, written by the replica's executor and its applier (a task of the executor or a thread of its own).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::transport::TransportFaults;

#[derive(Debug)]
pub struct ReplicaShared {
    pub id: u32,
    pub endpoint: String,
    /// Known primary, or -1.
    pub primary: AtomicI64,
    pub is_primary: AtomicBool,
    pub view: AtomicU64,
    pub commit_slot: AtomicU64,
    pub applied_slot: AtomicU64,
    /// Applied slots through here are durable in RocksDB.
    pub durable_slot: AtomicU64,
    /// The replica has reads waiting for the store: the applier must wake it after each
    /// batch. Otherwise the replica picks progress up from `applied_slot` on its next tick.
    pub notify_applied: AtomicBool,
    /// Test hook: the next WAL group commit fails as a failed fdatasync would.
    #[doc(hidden)]
    pub inject_wal_failure: AtomicBool,
    /// Test hook: the next WAL append fails as a full disk (ENOSPC) would.
    #[doc(hidden)]
    pub inject_wal_append_failure: AtomicBool,
    /// Test hook: the next RocksDB write of the applier fails as an I/O error would.
    #[doc(hidden)]
    pub inject_store_failure: AtomicBool,
    /// Test hook: the applier applies nothing while this is set.
    #[doc(hidden)]
    pub pause_apply: AtomicBool,
    /// A graceful stop began: the applier applies nothing more. Committed slots it has not
    /// applied stay in the Paxos WAL and are applied at the next start, so a stop does not
    /// wait for an apply backlog (up to `consensus.max_apply_lag_slots` slots).
    pub stopping: AtomicBool,
    /// The replica's loop runs (false after a fatal error or shutdown).
    pub running: AtomicBool,
    /// While the primary holds a read lease: when it ends, in ns since `started` (0: no
    /// lease), and the read index a read under it must see applied (`Replica::lease_read`).
    /// Published by the replica after every step, before it carries the step out.
    pub lease_until_ns: AtomicU64,
    pub lease_read_index: AtomicU64,
    /// Reads served under the lease without a step of the replica.
    pub lease_reads: AtomicU64,
    /// Why the replica stopped on a fatal error, once it did.
    pub failure: std::sync::Mutex<Option<String>>,
    /// Unix ms when each peer was last heard from.
    pub last_heard_unix_ms: Vec<AtomicI64>,
    pub started: Instant,
    pub faults: Arc<TransportFaults>,
    pub proposals: AtomicU64,
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    /// Every WAL sync and the time they took, the promise re-written into each new segment
    /// included (the WAL's own counts); `wal_sync` holds the group commits alone.
    pub wal_syncs: AtomicU64,
    pub wal_sync_us_total: AtomicU64,
    pub wal_bytes: AtomicU64,
    /// Shell turns that handed the core a batch of proposals.
    pub proposal_batches: AtomicU64,
    /// Slots proposed by this replica (as primary) and not yet chosen.
    pub slots_inflight: AtomicU64,
    /// Command bytes in the core's in-memory log, and its first slot.
    pub log_bytes: AtomicU64,
    pub log_start: AtomicU64,
    pub snapshots_installed: AtomicU64,
    /// The replica lost its durable state and does not vote until rebuilt.
    pub amnesiac: AtomicBool,
    /// The replica has recovered its WAL (until then `amnesiac` is not known yet).
    pub recovered: AtomicBool,
    pub snapshots_served: AtomicU64,
    /// Times this process's replica ended amnesia (rebuilt from its peers, votes again).
    pub rebuilds: AtomicU64,
    /// The glommio executor the replica runs on, plus one (0 until it starts).
    pub executor: AtomicU64,
    /// Committed slots by commands per slot: bucket `i` counts slots with at most
    /// `SLOT_COMMANDS_BUCKETS[i]` commands (not cumulative; the renderer sums them).
    pub slot_commands: [AtomicU64; SLOT_COMMANDS_BUCKETS.len()],
    /// WAL group commits by duration.
    pub wal_sync: Durations,
    /// Heartbeat ticks by how late their timer fired: time the replica's executor could not
    /// run, on a busy or starved core.
    pub timer_lag: Durations,
    /// Slots this replica proposed, by how long until they were chosen.
    pub slot_commit: Durations,
    /// Accepts this replica answered, by how long from the Accept arriving to the Accepted
    /// leaving.
    pub accept: Durations,
}

/// A histogram of durations (`DURATION_US_BUCKETS`; counts per bucket, not cumulative) and
/// their sum.
#[derive(Debug, Default)]
pub struct Durations {
    pub buckets: [AtomicU64; DURATION_US_BUCKETS.len()],
    pub total_us: AtomicU64,
}

impl Durations {
    /// Counts one duration of `us` µs.
    pub fn record(&self, us: u64) {
        self.buckets[bucket_of(&DURATION_US_BUCKETS, us)].fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// Upper bounds of the commands-per-slot histogram (the last bucket takes everything above).
pub const SLOT_COMMANDS_BUCKETS: [u64; 12] =
    [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, u64::MAX];

/// Upper bounds (µs) of the duration histograms (WAL group commits, timer lag).
pub const DURATION_US_BUCKETS: [u64; 11] = [
    100,
    250,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    u64::MAX,
];

/// The bucket of `v` in a histogram with upper bounds `bounds` (the last takes the rest).
fn bucket_of(bounds: &[u64], v: u64) -> usize {
    bounds
        .iter()
        .position(|&b| v <= b)
        .unwrap_or(bounds.len() - 1)
}

impl ReplicaShared {
    /// The glommio executor this replica runs on, once it started.
    pub fn executor_id(&self) -> Option<usize> {
        match self.executor.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            n => Some(n as usize - 1),
        }
    }

    pub fn new(id: u32, endpoint: String, replica_count: u32) -> Self {
        ReplicaShared {
            id,
            endpoint,
            primary: AtomicI64::new(-1),
            is_primary: AtomicBool::new(false),
            view: AtomicU64::new(0),
            commit_slot: AtomicU64::new(0),
            applied_slot: AtomicU64::new(0),
            durable_slot: AtomicU64::new(0),
            notify_applied: AtomicBool::new(false),
            inject_wal_failure: AtomicBool::new(false),
            inject_wal_append_failure: AtomicBool::new(false),
            inject_store_failure: AtomicBool::new(false),
            pause_apply: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            running: AtomicBool::new(false),
            lease_until_ns: AtomicU64::new(0),
            lease_read_index: AtomicU64::new(0),
            lease_reads: AtomicU64::new(0),
            failure: std::sync::Mutex::new(None),
            last_heard_unix_ms: (0..replica_count).map(|_| AtomicI64::new(0)).collect(),
            started: Instant::now(),
            faults: Arc::new(TransportFaults::default()),
            proposals: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            wal_syncs: AtomicU64::new(0),
            wal_sync_us_total: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            proposal_batches: AtomicU64::new(0),
            slots_inflight: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            log_start: AtomicU64::new(0),
            snapshots_installed: AtomicU64::new(0),
            amnesiac: AtomicBool::new(false),
            recovered: AtomicBool::new(false),
            snapshots_served: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
            executor: AtomicU64::new(0),
            slot_commands: Default::default(),
            wal_sync: Durations::default(),
            timer_lag: Durations::default(),
            slot_commit: Durations::default(),
            accept: Durations::default(),
        }
    }

    /// A linearizable read may be served from this replica's store now, without asking its
    /// core: it leads under a lease that still runs, and its store has applied the lease's
    /// read index. The lease end is loaded before the index (the replica stores them the
    /// other way round), so the index is at least the one that came with that lease.
    pub fn lease_read_ready(&self) -> bool {
        let until = self.lease_until_ns.load(Ordering::SeqCst);
        if until == 0 || !self.is_running() {
            return false;
        }
        let index = self.lease_read_index.load(Ordering::SeqCst);
        (self.started.elapsed().as_nanos() as u64) < until
            && self.applied_slot.load(Ordering::SeqCst) >= index
    }

    pub fn primary(&self) -> Option<u32> {
        let p = self.primary.load(Ordering::SeqCst);
        (p >= 0).then_some(p as u32)
    }

    /// Counts one committed slot of `commands` commands in the histogram.
    pub fn record_slot(&self, commands: usize) {
        let i = bucket_of(&SLOT_COMMANDS_BUCKETS, commands as u64);
        self.slot_commands[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Consumes a one-shot test hook: true once after it was armed. A plain load first, so
    /// the hot paths that ask (every WAL record, every apply run) pay no atomic write.
    pub fn take_fault(hook: &AtomicBool) -> bool {
        hook.load(Ordering::Relaxed) && hook.swap(false, Ordering::SeqCst)
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// This replica's status for `getClusterHealth`: `unreachable` once stopped, `degraded`
    /// while it knows no primary or is rebuilding from amnesia (it does not vote yet, so the
    /// cluster would not survive the loss of another replica), else `healthy`.
    pub fn status(&self) -> &'static str {
        let rebuilding =
            self.recovered.load(Ordering::SeqCst) && self.amnesiac.load(Ordering::SeqCst);
        if !self.is_running() {
            "unreachable"
        } else if self.primary().is_none() || rebuilding {
            "degraded"
        } else {
            "healthy"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_healthy_only_running_with_a_primary_known_and_not_rebuilding() {
        let s = ReplicaShared::new(2, "127.0.0.1:1".into(), 3);
        assert_eq!(s.status(), "unreachable");
        s.running.store(true, Ordering::SeqCst);
        assert_eq!(s.status(), "degraded", "no primary known");
        s.primary.store(0, Ordering::SeqCst);
        assert_eq!(s.status(), "healthy");
        s.amnesiac.store(true, Ordering::SeqCst);
        s.recovered.store(true, Ordering::SeqCst);
        assert_eq!(s.status(), "degraded", "rebuilding from amnesia");
        s.amnesiac.store(false, Ordering::SeqCst);
        assert_eq!(s.status(), "healthy");
        s.running.store(false, Ordering::SeqCst);
        assert_eq!(s.status(), "unreachable");
    }

    #[test]
    fn a_lease_read_needs_a_running_replica_a_lease_that_runs_and_its_index_applied() {
        let s = ReplicaShared::new(0, "127.0.0.1:1".into(), 3);
        let now = || s.started.elapsed().as_nanos() as u64;
        let future = now() + 60_000_000_000;
        s.running.store(true, Ordering::SeqCst);
        s.lease_read_index.store(7, Ordering::SeqCst);
        s.applied_slot.store(7, Ordering::SeqCst);
        assert!(!s.lease_read_ready(), "no lease published");
        s.lease_until_ns.store(future, Ordering::SeqCst);
        assert!(s.lease_read_ready());
        s.applied_slot.store(6, Ordering::SeqCst);
        assert!(
            !s.lease_read_ready(),
            "the store has not applied the read index"
        );
        s.applied_slot.store(9, Ordering::SeqCst);
        assert!(s.lease_read_ready());
        s.lease_until_ns.store(now().max(1), Ordering::SeqCst);
        assert!(!s.lease_read_ready(), "the lease ran out");
        s.lease_until_ns.store(future, Ordering::SeqCst);
        s.running.store(false, Ordering::SeqCst);
        assert!(!s.lease_read_ready(), "the replica stopped");
    }
}
