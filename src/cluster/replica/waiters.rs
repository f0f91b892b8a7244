//! Everyone the shell owes an answer, in one place: client writes waiting to commit (each with
//! its deadline), committed writes waiting for the store's outcome, reads waiting for their
//! read index (from this replica's core, or the primary's when this one does not lead), and
//! reads waiting for the store to apply their index. Ids come from the replica's incarnation
//! (`incarnation.rs`), so an id of an earlier run never matches (ids travel to the primary and
//! back in node mode).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Instant;

use crate::util::reply::Reply;

use crate::cluster::apply::Waiter;
use crate::paxos::Slot;
use crate::service::{ErrorCode, ServiceError};

/// A linearizable read's client: told when it may read this replica's store.
pub(super) type ReadWaiter = Reply<Result<(), ServiceError>>;

pub(super) struct Waiters {
    next_request: u64,
    /// Writes proposed and not yet committed: request id → waiter.
    pending: HashMap<u64, Waiter>,
    /// (deadline, request id), earliest first.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Committed writes waiting for the applier's outcome: (slot, index in slot) → waiter.
    applying: HashMap<(Slot, usize), Waiter>,
    next_read: u64,
    /// Reads waiting for their read index: id → (deadline, waiter).
    reads: HashMap<u64, (Instant, ReadWaiter)>,
    /// Reads whose index is known, waiting for the store: slot → (deadline, waiter).
    pub(super) waiting_reads: BTreeMap<Slot, Vec<(Instant, ReadWaiter)>>,
}

impl Waiters {
    pub(super) fn new(first_id: u64) -> Waiters {
        Waiters {
            next_request: first_id,
            pending: HashMap::new(),
            deadlines: BinaryHeap::new(),
            applying: HashMap::new(),
            next_read: first_id,
            reads: HashMap::new(),
            waiting_reads: BTreeMap::new(),
        }
    }

    /// Registers a write's client; returns the request id its command carries.
    pub(super) fn add_write(&mut self, reply: Waiter, deadline: Instant) -> u64 {
        let req = self.next_request;
        self.next_request += 1;
        self.pending.insert(req, reply);
        self.deadlines.push(Reverse((deadline, req)));
        req
    }

    pub(super) fn has_writes(&self) -> bool {
        !self.pending.is_empty()
    }

    pub(super) fn take_write(&mut self, req: u64) -> Option<Waiter> {
        self.pending.remove(&req)
    }

    /// The write `req` committed as command `index` of `slot`: its client now waits for the
    /// store. False when nobody waits for it (timed out, or another replica's).
    pub(super) fn committed(&mut self, req: u64, slot: Slot, index: usize) -> bool {
        match self.pending.remove(&req) {
            Some(w) => {
                self.applying.insert((slot, index), w);
                true
            }
            None => false,
        }
    }

    pub(super) fn take_applied(&mut self, slot: Slot, index: usize) -> Option<Waiter> {
        self.applying.remove(&(slot, index))
    }

    /// Writes past their deadline and still uncommitted.
    pub(super) fn expired_writes(&mut self, now: Instant) -> Vec<Waiter> {
        let mut out = Vec::new();
        while let Some(&Reverse((deadline, req))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            out.extend(self.pending.remove(&req));
        }
        out
    }

    /// Every uncommitted write (the primary changed under them).
    pub(super) fn drain_writes(&mut self) -> Vec<Waiter> {
        self.pending.drain().map(|(_, w)| w).collect()
    }

    pub(super) fn add_read(&mut self, w: ReadWaiter, deadline: Instant) -> u64 {
        let id = self.next_read;
        self.next_read += 1;
        self.reads.insert(id, (deadline, w));
        id
    }

    /// The read `id` with its deadline, if it still waits for its index.
    pub(super) fn take_read(&mut self, id: u64) -> Option<(Instant, ReadWaiter)> {
        self.reads.remove(&id)
    }

    /// Reads past their deadline that still wait for their index.
    pub(super) fn expired_reads(&mut self, now: Instant) -> Vec<ReadWaiter> {
        (self.reads.extract_if(|_, (d, _)| *d <= now))
            .map(|(_, (_, w))| w)
            .collect()
    }

    /// The replica stops: every client gets an answer (a write's outcome is unknown).
    pub(super) fn fail_all(&mut self) {
        for (_, w) in self.applying.drain() {
            w.send(Err(ServiceError::outcome_unknown(
                "the replica stopped before applying the write",
            )));
        }
        for (_, w) in self.pending.drain() {
            w.send(Err(ServiceError::outcome_unknown("the replica stopped")));
        }
        let stopped = || ServiceError::new(ErrorCode::Unavailable, "replica stopped");
        for (_, (_, w)) in self.reads.drain() {
            w.send(Err(stopped()));
        }
        for (_, w) in std::mem::take(&mut self.waiting_reads)
            .into_values()
            .flatten()
        {
            w.send(Err(stopped()));
        }
    }
}
