//! Applying committed slots to one replica's store: they arrive over a lock-free queue
//! (crossbeam), every run of consecutive slots waiting there becomes one RocksDB `WriteBatch`
//! through `KvStoreExecutor::apply_many`, and the outcomes the replica's own clients wait for
//! go back to the replica in ONE message per run (not one per client; the replica completes its
//! clients' oneshots on its own thread). The queue is consumed by a task on the replica's own
//! executor (`apply_local`, the default: no thread to wake and none to wake back per batch) or
//! by an apply thread of its own (`run_apply`, `storage.apply_on_executor = false`).
//!
//! RocksDB writes no WAL of its own (the Paxos WAL is the log): now and then the applier starts
//! a memtable flush, and once it finishes publishes the slot through which the state machine is
//! durable; the replica may then drop its Paxos WAL segments below that slot. A storage error
//! is fatal for this replica: the applier reports it and stops applying; the replica stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;
use futures_channel::mpsc;

use super::envelope;
use super::shared::ReplicaShared;
use crate::error::Error;
use crate::paxos::{Slot, Value};
use crate::service::{ErrorCode, ServiceError};
use crate::storage::{KvStoreExecutor, SnapshotChunk};
use crate::txn::{Command, Outcome};
use crate::types::Sequence;

/// How often a paused applier (test hook) looks whether it may go on.
pub(super) const APPLY_PAUSE_POLL: Duration = Duration::from_millis(5);

pub type Waiter = crate::util::reply::Reply<Result<Outcome, ServiceError>>;

/// One committed slot to apply.
pub struct ApplyJob {
    pub slot: Slot,
    /// The slot's chosen value: envelopes in slot order (none for a no-op), shared with the
    /// core's log (no copy per command).
    pub value: Value,
    /// Indexes into `commands` of the commands a client of this replica waits for.
    pub waiting: Vec<usize>,
}

/// The outcome of one waited-for command: (slot, index in the slot, outcome).
pub type SlotOutcome = (Slot, usize, Result<Outcome, ServiceError>);

/// What the replica hands its applier, in order.
pub enum ApplyWork {
    Slot(ApplyJob),
    /// One chunk of a snapshot from a peer (see `storage::install`).
    Install(InstallStep),
}

pub struct InstallStep {
    pub session: u64,
    /// The first chunk of a session: the store is emptied before it is written.
    pub first: bool,
    pub chunk: SnapshotChunk,
}

/// What the applier tells the replica.
pub enum Applied {
    Upto(Slot),
    /// A snapshot chunk of `session` is written; `installed` is the slot the store now stands
    /// at once the last chunk is in (flushed, durable).
    Install {
        session: u64,
        installed: Option<u64>,
    },
    /// The outcomes of waited-for commands in a run of slots just applied.
    Outcomes(Vec<SlotOutcome>),
    Failed(Error),
}

/// Slots applied in one RocksDB write at most, and commands in one write at most (a run stops
/// at whichever comes first): bounds the latency one write adds to the first slot in it.
const APPLY_SLOTS_MAX: usize = 64;
const APPLY_COMMANDS_MAX: usize = 8192;
/// How long an idle applier waits before it looks at flush progress again.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How long an idle applier with nothing to flush sleeps (it wakes at once for a slot).
const IDLE_PARK: Duration = Duration::from_secs(5);

/// How much one call of `Applier::slots` applies at most.
#[derive(Clone, Copy)]
pub struct RunLimit {
    /// Commands in one run (one RocksDB write); a run also stops at `APPLY_SLOTS_MAX` slots.
    pub commands: usize,
    /// Runs before the call returns (what is left stays queued).
    pub runs: usize,
}

/// The apply thread takes everything waiting.
const THREAD_LIMIT: RunLimit = RunLimit {
    commands: APPLY_COMMANDS_MAX,
    runs: usize::MAX,
};

/// The apply thread: takes work off the queue until the replica drops its end, or until a
/// graceful stop begins (what is left stays in the WAL for the next start).
pub fn run_apply(mut a: Applier, jobs: Receiver<ApplyWork>) {
    loop {
        while a.paused() {
            std::thread::sleep(APPLY_PAUSE_POLL);
        }
        if a.stopping() {
            break;
        }
        let work = match a.lookahead.take() {
            Some(w) => w,
            None => match jobs.recv_timeout(a.idle_wait()) {
                Ok(j) => j,
                Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                    // Idle: make what was applied durable, so WAL segments can be released.
                    if let Err(e) = a.idle() {
                        a.fail(e);
                        return;
                    }
                    continue;
                }
                Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
            },
        };
        if a.paused() || a.stopping() {
            // Set while this thread waited for the work: it waits too.
            a.lookahead = Some(work);
            continue;
        }
        let r = match work {
            ApplyWork::Install(step) => a.install(step),
            ApplyWork::Slot(j) => a.slots(j, &jobs, THREAD_LIMIT).and_then(|()| a.idle()),
        };
        if let Err(e) = r {
            a.fail(e);
            return;
        }
    }
    a.finish();
}

/// The apply side of one replica between items: its store, the flush schedule, and what it
/// tells the replica. Driven by its own thread (`run_apply`) or by a task on the replica's
/// executor (`apply_local`).
pub struct Applier {
    exec: KvStoreExecutor,
    flusher: Flusher,
    cmds: Vec<Vec<Command>>,
    notify: mpsc::UnboundedSender<Applied>,
    shared: Arc<ReplicaShared>,
    /// A snapshot install is under way: the store is incomplete.
    installing: bool,
    /// Slots that arrived during an install, applied (or skipped) once it finishes.
    held: Vec<ApplyJob>,
    /// An item taken while gathering a run that does not belong to it.
    pub(super) lookahead: Option<ApplyWork>,
}

impl Applier {
    pub fn new(
        exec: KvStoreExecutor,
        notify: mpsc::UnboundedSender<Applied>,
        shared: Arc<ReplicaShared>,
        flush_every: Duration,
    ) -> Self {
        Applier {
            exec,
            flusher: Flusher {
                last: Instant::now(),
                every: flush_every,
            },
            cmds: Vec::new(),
            notify,
            shared,
            installing: false,
            held: Vec::new(),
            lookahead: None,
        }
    }

    /// A write now may wait for RocksDB's flushes or compactions.
    pub fn write_stalled(&self) -> bool {
        self.exec.write_stalled()
    }

    /// Applying is paused (test hook).
    pub fn paused(&self) -> bool {
        self.shared.pause_apply.load(Ordering::Relaxed) && !self.stopping()
    }

    /// A graceful stop began: apply nothing more (see `ReplicaShared::stopping`).
    pub fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
    }

    /// How long to wait for work before looking at flush progress again. Idle wake-ups only
    /// while there is flush work to watch: an idle server stays asleep.
    pub fn idle_wait(&self) -> Duration {
        if self.exec.flush_in_progress() {
            IDLE_POLL
        } else if self.exec.has_unflushed() {
            self.flusher
                .every
                .saturating_sub(self.flusher.last.elapsed())
                .max(IDLE_POLL)
        } else {
            IDLE_PARK
        }
    }

    /// Flush progress: publishes what is durable, and starts a flush when one is due (which
    /// may wait for RocksDB: a flush that would stall writes waits for compaction to catch up).
    pub fn idle(&mut self) -> Result<(), Error> {
        self.flusher.advance(&mut self.exec, &self.shared)
    }

    /// `idle` would start a flush now.
    pub fn flush_due(&self) -> bool {
        self.flusher.due()
    }

    /// A fatal error: the replica learns it and stops; nothing more is applied.
    pub fn fail(&self, e: Error) {
        let _ = self.notify.unbounded_send(Applied::Failed(e));
    }

    /// The queue is closed: make everything applied durable.
    pub fn finish(mut self) {
        match self.exec.flush() {
            Ok(s) => self.shared.durable_slot.store(s.0, Ordering::SeqCst),
            Err(e) => {
                tracing::warn!(replica = self.shared.id, error = %e, "final rocksdb flush failed")
            }
        }
    }

    /// `first` and every slot waiting behind it, in runs of consecutive slots (one RocksDB
    /// write per run, a run stops at `commands_max` commands); then publishes the applied slot.
    pub fn slots(
        &mut self,
        first: ApplyJob,
        jobs: &Receiver<ApplyWork>,
        limit: RunLimit,
    ) -> Result<(), Error> {
        // The store is incomplete until the install finishes: slots wait for it.
        if self.installing {
            self.held.push(first);
            return Ok(());
        }
        let mut group_commands = first.value.commands().len();
        let mut group = vec![first];
        let mut runs = 0;
        loop {
            let next = match jobs.try_recv() {
                Ok(ApplyWork::Slot(j)) => Some(j),
                Ok(other) => {
                    self.lookahead = Some(other);
                    None
                }
                Err(_) => None,
            };
            let full = group.len() >= APPLY_SLOTS_MAX || group_commands >= limit.commands;
            let follows = match (&next, group.last()) {
                (Some(n), Some(last)) => n.slot == last.slot.next(),
                _ => false,
            };
            if next.is_none() || full || !follows {
                self.apply_run(std::mem::take(&mut group))?;
                runs += 1;
                if runs >= limit.runs || self.stopping() {
                    // The caller takes the rest later (the executor serves others first), or
                    // a stop leaves it to the WAL.
                    if let Some(j) = next {
                        self.lookahead = Some(ApplyWork::Slot(j));
                    }
                    break;
                }
            }
            match next {
                Some(j) => {
                    if group.is_empty() {
                        group_commands = 0;
                    }
                    group_commands += j.value.commands().len();
                    group.push(j);
                }
                None => break,
            }
        }
        self.published();
        Ok(())
    }

    /// Applies one run of consecutive slots and hands the waited-for outcomes back.
    fn apply_run(&mut self, group: Vec<ApplyJob>) -> Result<(), Error> {
        if !group.is_empty() && ReplicaShared::take_fault(&self.shared.inject_store_failure) {
            let e = Error::Injected("rocksdb: IO error: injected write failure");
            tracing::error!(replica = self.shared.id, error = %e, "apply failed; this replica stops");
            return Err(e);
        }
        let mut outcomes = Vec::new();
        self.exec
            .keep_latest(self.shared.is_primary.load(Ordering::Relaxed));
        let r = apply_group(&mut self.exec, group, &mut self.cmds, &mut outcomes);
        if !outcomes.is_empty() {
            let _ = self.notify.unbounded_send(Applied::Outcomes(outcomes));
        }
        r.inspect_err(|e| {
            tracing::error!(replica = self.shared.id, error = %e, "apply failed; this replica stops");
        })
    }

    /// Publishes the applied slot (and wakes the replica only when a read waits for it).
    fn published(&self) {
        let applied = self.exec.next_expected_sequence().0 - 1;
        self.shared.applied_slot.store(applied, Ordering::SeqCst);
        // A cross-thread wake costs more than the apply itself: only when a read waits.
        if self.shared.notify_applied.load(Ordering::SeqCst) {
            let _ = self.notify.unbounded_send(Applied::Upto(Slot(applied)));
        }
    }

    /// One step of a snapshot install; after the last, the slots held meanwhile apply on top.
    pub fn install(&mut self, step: InstallStep) -> Result<(), Error> {
        self.install_step(step).inspect_err(|e| {
            tracing::error!(replica = self.shared.id, error = %e, "snapshot install failed; this replica stops");
        })
    }

    fn install_step(&mut self, step: InstallStep) -> Result<(), Error> {
        let e = |source| Error::Store {
            what: "snapshot install",
            source,
        };
        if step.first {
            self.exec.install_begin().map_err(e)?;
            self.installing = true;
            self.shared.applied_slot.store(0, Ordering::SeqCst);
            self.shared.durable_slot.store(0, Ordering::SeqCst);
        }
        if !self.installing {
            // A stale step of an install that was restarted: ignore it.
            return Ok(());
        }
        self.exec.install_chunk(&step.chunk).map_err(e)?;
        let mut installed = None;
        if step.chunk.done {
            self.exec
                .install_finish(step.chunk.slot, step.chunk.last_version)
                .map_err(e)?;
            self.installing = false;
            self.shared
                .durable_slot
                .store(step.chunk.slot, Ordering::SeqCst);
            installed = Some(step.chunk.slot);
            let mut held = std::mem::take(&mut self.held);
            held.sort_by_key(|j| j.slot);
            let mut run: Vec<ApplyJob> = Vec::new();
            for j in held {
                if run.last().is_some_and(|l| l.slot.next() != j.slot) {
                    self.apply_run(std::mem::take(&mut run))?;
                }
                run.push(j);
            }
            self.apply_run(run)?;
            self.published();
        }
        let _ = self.notify.unbounded_send(Applied::Install {
            session: step.session,
            installed,
        });
        Ok(())
    }
}

/// Starts a memtable flush every `every` (not more often, so a trickle of writes does not make
/// tiny files) and publishes flush progress as the replica's `durable_slot`.
struct Flusher {
    last: Instant,
    every: Duration,
}

impl Flusher {
    /// A flush is to be started.
    fn due(&self) -> bool {
        self.last.elapsed() >= self.every
    }

    /// A failed flush is fatal for the replica, like a failed fsync.
    fn advance(&mut self, exec: &mut KvStoreExecutor, shared: &ReplicaShared) -> Result<(), Error> {
        let flush = |source| Error::Store {
            what: "rocksdb flush",
            source,
        };
        let durable = exec.durable_sequence().map_err(flush)?;
        shared.durable_slot.store(durable.0, Ordering::SeqCst);
        if self.due() {
            self.last = Instant::now();
            exec.start_flush().map_err(flush)?;
        }
        Ok(())
    }
}

/// Applies a run of consecutive slots in one RocksDB write; pushes the outcomes of the
/// waited-for commands onto `outcomes`.
fn apply_group(
    exec: &mut KvStoreExecutor,
    group: Vec<ApplyJob>,
    cmds: &mut Vec<Vec<Command>>,
    outcomes: &mut Vec<SlotOutcome>,
) -> Result<(), Error> {
    let Some(first) = group.first().map(|j| j.slot) else {
        return Ok(());
    };
    cmds.resize_with(group.len(), Vec::new);
    // Per slot, the commands that did not decode: every replica fails the same bytes the same
    // way, so they apply nothing and their clients get INVALID.
    let mut bad: Vec<Vec<usize>> = Vec::with_capacity(group.len());
    for (job, out) in group.iter().zip(cmds.iter_mut()) {
        out.clear();
        let mut b = Vec::new();
        for (i, e) in job.value.commands().iter().enumerate() {
            match envelope::decode(e).and_then(|(_, _, c)| Command::decode(&c)) {
                Ok(c) => out.push(c),
                Err(_) => {
                    b.push(i);
                    out.push(Command::default());
                }
            }
        }
        bad.push(b);
    }
    let batches: Vec<&[Command]> = cmds[..group.len()].iter().map(Vec::as_slice).collect();
    let results = match exec.apply_many(Sequence(first.0), &batches) {
        Ok(r) => r,
        Err(e) => {
            for job in group {
                for i in job.waiting {
                    let err = ServiceError::new(ErrorCode::Internal, e.to_string());
                    outcomes.push((job.slot, i, Err(err)));
                }
            }
            return Err(e.into());
        }
    };
    for ((job, result), bad) in group.into_iter().zip(results).zip(bad) {
        for i in job.waiting {
            let o = match &result {
                // Applied before a restart and re-emitted by the core: no client of this
                // incarnation can be waiting for it.
                None => Err(ServiceError::new(
                    ErrorCode::Internal,
                    "slot was applied before",
                )),
                Some(_) if bad.contains(&i) => Ok(Outcome::Invalid("undecodable command".into())),
                Some(all) => Ok(all
                    .get(i)
                    .cloned()
                    .unwrap_or(Outcome::Invalid("missing outcome".into()))),
            };
            outcomes.push((job.slot, i, o));
        }
    }
    Ok(())
}
