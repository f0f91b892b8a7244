//! The replica's state by role, in one place: `Role` (follower, pre-candidate, candidate,
//! primary), what a primary keeps (`PrimaryState`: slots in flight, the proposal queue, peers,
//! a leadership transfer) and its ReadIndex rounds (`ReadState`). The handlers that change them
//! live in `election.rs`, `replication.rs` and `read_index.rs`; this module imports none of
//! them, so `paxos/` has no import circle.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::io::{Outputs, Rejection};
use super::message::{Message, PromiseEntry};
use super::types::{Ballot, ReadId, ReplicaId, Slot, Value};

#[derive(Debug)]
pub(crate) enum Role {
    Follower,
    /// Asking peers whether they would accept a Prepare for `ballot`.
    PreCandidate {
        ballot: Ballot,
        grants: u64,
    },
    /// Phase 1 in flight for `ballot`.
    Candidate {
        ballot: Ballot,
        promises: Vec<Option<Promised>>,
        /// Promises that arrived in byte-bounded parts, still incomplete.
        partial: Vec<Option<Promised>>,
        started_ms: u64,
        last_send_ms: u64,
        /// The primary that handed its role over (see `Message::Prepare`), if any.
        released: Option<Ballot>,
    },
    Primary(Box<PrimaryState>),
}

#[derive(Debug)]
pub(crate) struct Promised {
    pub log_start: Slot,
    pub entries: Vec<PromiseEntry>,
    pub amnesiac: bool,
}

#[derive(Debug)]
pub(crate) struct Inflight {
    pub value: Value,
    pub votes: u64,
    pub sent_ms: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PeerState {
    pub last_ack_ms: u64,
    pub applied_upto: Slot,
}

#[derive(Debug)]
pub(crate) struct PrimaryState {
    pub ballot: Ballot,
    pub next_slot: Slot,
    /// Highest slot Phase 1 recovered; reads must wait for it to commit.
    pub recovered_upto: Slot,
    pub inflight: BTreeMap<Slot, Inflight>,
    /// Commands waiting for a slot, each with the replica its client waits at.
    pub queue: VecDeque<(ReplicaId, Bytes)>,
    pub peers: Vec<PeerState>,
    pub reads: ReadState,
    pub transfer: Option<(ReplicaId, u64)>,
    /// A transfer began: this primary never holds a read lease again in its ballot (the
    /// target's Prepare may pass followers that still hear from it), even if the transfer fails.
    pub lease_forfeited: bool,
    pub last_heartbeat_ms: u64,
    pub became_ms: u64,
    /// Elected by a quorum of amnesiac promises (a cluster's first start).
    pub bootstrap: bool,
}

impl PrimaryState {
    pub fn new(
        ballot: Ballot,
        replica_count: u32,
        next_slot: Slot,
        recovered_upto: Slot,
        now_ms: u64,
    ) -> Self {
        PrimaryState {
            ballot,
            next_slot,
            recovered_upto,
            inflight: BTreeMap::new(),
            queue: VecDeque::new(),
            peers: vec![PeerState::default(); replica_count as usize],
            reads: ReadState::default(),
            transfer: None,
            lease_forfeited: false,
            last_heartbeat_ms: now_ms,
            became_ms: now_ms,
            bootstrap: false,
        }
    }

    pub fn note_ack(&mut self, from: ReplicaId, now_ms: u64) {
        if let Some(p) = self.peers.get_mut(from.0 as usize) {
            p.last_ack_ms = now_ms;
        }
    }

    /// The lowest applied slot over the cluster: `own_applied` for the primary itself (its
    /// own peer entry is never updated, so it must not count), reports for the others.
    pub fn cluster_applied(&self, me: ReplicaId, own_applied: Slot) -> Slot {
        self.peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != me.0 as usize)
            .map(|(_, p)| p.applied_upto)
            .fold(own_applied, Slot::min)
    }

    /// Starts handing the role to `to`; returns the queued commands (refused by the caller).
    pub fn begin_transfer(
        &mut self,
        to: ReplicaId,
        deadline_ms: u64,
    ) -> VecDeque<(ReplicaId, Bytes)> {
        self.transfer = Some((to, deadline_ms));
        self.lease_forfeited = true;
        self.reads.lease_expiry_ms = 0;
        std::mem::take(&mut self.queue)
    }
}

/// Who waits for a read index: this replica's shell, or a peer that forwarded the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reader {
    Local(ReadId),
    Peer(ReplicaId, ReadId),
}

impl Reader {
    /// Tells the reader its read index, or why it was refused.
    pub(crate) fn answer(self, index: Result<Slot, Rejection>, out: &mut Outputs) {
        match (self, index) {
            (Reader::Local(id), Ok(slot)) => out.read_ready.push((id, slot)),
            (Reader::Local(id), Err(why)) => out.read_rejected.push((id, why)),
            (Reader::Peer(to, id), index) => {
                let read_index = index.ok();
                out.sends
                    .push((to, Message::ReadIndexReply { id, read_index }));
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Round {
    pub(crate) seq: u64,
    pub(crate) sent_ms: u64,
    pub(crate) reads: Vec<(Reader, Slot)>,
    pub(crate) acks: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ReadState {
    pub(crate) next_seq: u64,
    pub(crate) rounds: VecDeque<Round>,
    pub(crate) waiting: Vec<(Reader, Slot)>,
    pub lease_expiry_ms: u64,
}

impl ReadState {
    pub fn on_ack(&mut self, from: ReplicaId, seq: u64) {
        for r in self.rounds.iter_mut().filter(|r| r.seq <= seq) {
            r.acks |= 1u64 << from.0;
        }
    }

    pub fn pending(&self) -> usize {
        self.waiting.len() + self.rounds.iter().map(|r| r.reads.len()).sum::<usize>()
    }

    pub fn reject_all(self, why: &Rejection, out: &mut Outputs) {
        let rounds = self.rounds.into_iter().flat_map(|r| r.reads);
        for (reader, _) in rounds.chain(self.waiting) {
            reader.answer(Err(why.clone()), out);
        }
    }
}
