//! The apply thread of one replica: committed slots arrive over a lock-free queue (crossbeam),
//! each becomes one RocksDB `WriteBatch` through `KvStoreExecutor::apply`, and the outcomes go
//! straight to the waiting clients' oneshot channels (no hop back through the replica's core).
//!
//! It also makes RocksDB's own WAL durable now and then (`flush_wal(true)`) and publishes the
//! slot through which the state machine is durable: the replica may then drop its Paxos WAL
//! segments below that slot. A storage error is fatal for this replica: the thread reports it
//! and stops applying; the replica stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam::channel::Receiver;
use futures_channel::{mpsc, oneshot};

use super::envelope;
use super::shared::ReplicaShared;
use crate::service::{ErrorCode, ServiceError};
use crate::storage::KvStoreExecutor;
use crate::txn::{Command, Outcome};
use crate::types::Sequence;

pub type Waiter = oneshot::Sender<Result<Outcome, ServiceError>>;

/// One committed slot to apply.
pub struct ApplyJob {
    pub slot: u64,
    /// Envelopes, in slot order (empty for a no-op slot).
    pub commands: Vec<Bytes>,
    /// (index into `commands`, the client waiting for it).
    pub waiters: Vec<(usize, Waiter)>,
}

/// What the apply thread tells the replica.
pub enum Applied {
    Upto(u64),
    Failed(String),
}

const DURABLE_EVERY: Duration = Duration::from_millis(100);

pub fn run_apply(
    mut exec: KvStoreExecutor,
    jobs: Receiver<ApplyJob>,
    notify: mpsc::UnboundedSender<Applied>,
    shared: Arc<ReplicaShared>,
) {
    let mut last_durable = Instant::now();
    // The last slot processed (applied now, or skipped as applied before a restart).
    let mut applied = 0;
    let mut cmds: Vec<Command> = Vec::new();
    let mut bad: Vec<usize> = Vec::new();
    loop {
        let first = match jobs.recv_timeout(DURABLE_EVERY) {
            Ok(j) => j,
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                // Idle: make what was applied durable, so WAL segments can be released.
                if shared.durable_slot.load(Ordering::SeqCst) < exec.next_expected_sequence().0 - 1
                {
                    make_durable(&exec, &shared);
                    last_durable = Instant::now();
                }
                continue;
            }
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
        };
        let mut next = Some(first);
        while let Some(job) = next.take() {
            let slot = job.slot;
            if let Err(e) = apply_one(&mut exec, job, &mut cmds, &mut bad) {
                tracing::error!(replica = shared.id, error = %e, "apply failed; this replica stops");
                let _ = notify.unbounded_send(Applied::Failed(e));
                return;
            }
            applied = slot;
            next = jobs.try_recv().ok();
        }
        shared.applied_slot.store(applied, Ordering::SeqCst);
        // A cross-thread wake costs more than the apply itself: only when a read waits.
        if shared.notify_applied.load(Ordering::SeqCst) {
            let _ = notify.unbounded_send(Applied::Upto(applied));
        }
        if last_durable.elapsed() >= DURABLE_EVERY {
            make_durable(&exec, &shared);
            last_durable = Instant::now();
        }
    }
    make_durable(&exec, &shared);
}

fn make_durable(exec: &KvStoreExecutor, shared: &ReplicaShared) {
    let applied = exec.next_expected_sequence().0 - 1;
    match exec.db().flush_wal(true) {
        Ok(()) => shared.durable_slot.store(applied, Ordering::SeqCst),
        Err(e) => tracing::warn!(replica = shared.id, error = %e, "rocksdb wal sync failed"),
    }
}

fn apply_one(
    exec: &mut KvStoreExecutor,
    job: ApplyJob,
    cmds: &mut Vec<Command>,
    bad: &mut Vec<usize>,
) -> Result<(), String> {
    cmds.clear();
    bad.clear();
    for (i, e) in job.commands.iter().enumerate() {
        let decoded = envelope::decode(e).and_then(|(_, _, c)| Command::decode(&c));
        match decoded {
            Ok(c) => cmds.push(c),
            Err(_) => {
                // Every replica fails the same bytes the same way: apply nothing for it.
                bad.push(i);
                cmds.push(Command::default());
            }
        }
    }
    let outcomes = match exec.apply(Sequence(job.slot), cmds) {
        Ok(Some(o)) => o,
        Ok(None) => {
            // Applied before a restart and re-emitted by the core: nothing to do, and no client
            // of this incarnation can be waiting for it.
            for (_, w) in job.waiters {
                let _ = w.send(Err(ServiceError::new(
                    ErrorCode::Internal,
                    "slot was applied before",
                )));
            }
            return Ok(());
        }
        Err(e) => {
            for (_, w) in job.waiters {
                let _ = w.send(Err(ServiceError::new(ErrorCode::Internal, e.to_string())));
            }
            return Err(e.to_string());
        }
    };
    for (i, w) in job.waiters {
        let o = if bad.contains(&i) {
            Outcome::Invalid("undecodable command".into())
        } else {
            outcomes
                .get(i)
                .cloned()
                .unwrap_or(Outcome::Invalid("missing outcome".into()))
        };
        let _ = w.send(Ok(o));
    }
    Ok(())
}
