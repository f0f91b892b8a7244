//! Everyone the shell owes an answer, in one place: client writes waiting to commit (each with
//! its deadline), committed writes waiting for the store's outcome, reads waiting for their
//! ReadIndex round, reads waiting for the store to apply their index, and reads forwarded to
//! the primary. Ids come from the replica's incarnation (`incarnation.rs`), so an id of an
//! earlier run never matches.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Instant;

use crate::util::reply::Reply;

use super::ReadWaiter;
use crate::cluster::apply::Waiter;
use crate::service::{ErrorCode, ServiceError};

/// A read forwarded to the primary: (deadline, the client's reply).
pub(super) type Forwarded = (Instant, Reply<Result<(), ServiceError>>);

pub(super) struct Waiters {
    next_request: u64,
    /// Writes proposed and not yet committed: request id → waiter.
    pending: HashMap<u64, Waiter>,
    /// (deadline, request id), earliest first.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Committed writes waiting for the apply thread's outcome: (slot, index in slot) → waiter.
    applying: HashMap<(u64, usize), Waiter>,
    next_read: u64,
    /// Reads waiting for their ReadIndex round.
    reads: HashMap<u64, ReadWaiter>,
    /// Reads whose index is known, waiting for the store: slot → (deadline, waiter).
    pub(super) waiting_reads: BTreeMap<u64, Vec<(Instant, ReadWaiter)>>,
    /// Reads this replica forwarded to the primary: id → (deadline, waiter).
    pub(super) forwarded_reads: HashMap<u64, Forwarded>,
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
            forwarded_reads: HashMap::new(),
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
    pub(super) fn committed(&mut self, req: u64, slot: u64, index: usize) -> bool {
        match self.pending.remove(&req) {
            Some(w) => {
                self.applying.insert((slot, index), w);
                true
            }
            None => false,
        }
    }

    pub(super) fn take_applied(&mut self, slot: u64, index: usize) -> Option<Waiter> {
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

    /// Reads and forwarded reads draw their ids from one counter.
    fn next_read_id(&mut self) -> u64 {
        let id = self.next_read;
        self.next_read += 1;
        id
    }

    pub(super) fn add_read(&mut self, w: ReadWaiter) -> u64 {
        let id = self.next_read_id();
        self.reads.insert(id, w);
        id
    }

    pub(super) fn take_read(&mut self, id: u64) -> Option<ReadWaiter> {
        self.reads.remove(&id)
    }

    pub(super) fn add_forwarded(&mut self, f: Forwarded) -> u64 {
        let id = self.next_read_id();
        self.forwarded_reads.insert(id, f);
        id
    }

    pub(super) fn take_forwarded(&mut self, id: u64) -> Option<Forwarded> {
        self.forwarded_reads.remove(&id)
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
        for (_, w) in self.reads.drain() {
            if let ReadWaiter::Local(r) = w {
                r.send(Err(stopped()));
            }
        }
        for (_, (_, w)) in self.forwarded_reads.drain() {
            w.send(Err(stopped()));
        }
    }
}
