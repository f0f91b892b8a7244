//! Messages between replicas (their binary encoding is in `message_codec.rs`).
//!
//! Owns: `Message`, its limits and sanity check. Must not: decide anything (handlers live in the replica
//! files). Invariants: every message that names a ballot is judged against the receiver's
//! promised ballot; `Promise` and `Accepted` are only ever sent after the state they vouch
//! for is durable (enforced by the replica's hold queue, not here).

use super::types::{Ballot, ReadId, Slot, Value};
use bytes::Bytes;

/// One accepted entry reported in a `Promise`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromiseEntry {
    pub slot: Slot,
    pub ballot: Ballot,
    pub value: Value,
    /// The promiser knows this slot is chosen (so its value wins over any ballot).
    pub committed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Would you accept a Prepare for `ballot`? Changes no state at the receiver.
    PreVote {
        ballot: Ballot,
    },
    PreVoteReply {
        ballot: Ballot,
        granted: bool,
    },
    /// Phase 1a for every slot from `from_slot` on. `released`: the ballot of the primary that
    /// handed its role to this candidate (`TimeoutNow`) and gave up its read lease for good; a
    /// follower of that primary promises at once instead of waiting out its silence (lease mode).
    Prepare {
        ballot: Ballot,
        from_slot: Slot,
        released: Option<Ballot>,
    },
    /// Phase 1b: everything the sender accepted from the Prepare's `from_slot` on.
    Promise {
        ballot: Ballot,
        log_start: Slot,
        commit_upto: Slot,
        entries: Vec<PromiseEntry>,
        /// The promiser lost its durable state (started on an empty WAL) and has not rebuilt
        /// it yet: it may have forgotten votes, so its promise only counts in a quorum of such
        /// promises (a cluster's first start).
        amnesiac: bool,
        /// The entries were cut by bytes: more follow from after the last one (the candidate
        /// asks with another Prepare of the same ballot from that slot).
        more: bool,
    },
    /// Phase 2a, with the primary's commit index piggybacked.
    Accept {
        ballot: Ballot,
        slot: Slot,
        value: Value,
        commit_upto: Slot,
    },
    /// Phase 2b.
    Accepted {
        ballot: Ballot,
        slot: Slot,
    },
    /// "I promised a higher ballot": the sender's promised ballot.
    Nack {
        promised: Ballot,
    },
    /// Explicit commit index when the primary is idle.
    Commit {
        ballot: Ballot,
        commit_upto: Slot,
    },
    Heartbeat {
        ballot: Ballot,
        commit_upto: Slot,
        read_seq: u64,
        compact_upto: Slot,
        /// The highest slot this primary has proposed or recovered (its log end).
        log_end: Slot,
        /// This primary was elected by a quorum of amnesiac promises (a cluster's first start).
        bootstrap: bool,
    },
    HeartbeatAck {
        ballot: Ballot,
        read_seq: u64,
        commit_upto: Slot,
        applied_upto: Slot,
    },
    /// Send me the committed slots from `from_slot` on.
    CatchupRequest {
        from_slot: Slot,
    },
    Catchup {
        entries: Vec<(Slot, Value)>,
        commit_upto: Slot,
    },
    /// The slots asked for were truncated; take a snapshot instead.
    CatchupTruncated {
        log_start: Slot,
    },
    /// Leadership transfer: start a view change now, skipping PreVote.
    TimeoutNow {
        ballot: Ballot,
    },
    /// Client commands taken by a replica that does not lead, passed to the primary it knows
    /// (`forward.rs`). The origin's clients are answered when the commands apply there. The
    /// one message that must arrive at most once (a copy would be proposed again): the
    /// transport never delivers a frame twice.
    Forward {
        commands: Vec<Bytes>,
    },
    /// The receiver could not queue these forwarded commands: it does not lead (or hands its
    /// role away), or its queue is full (`overloaded`). The origin refuses them to its clients.
    ForwardRefused {
        commands: Vec<Bytes>,
        overloaded: bool,
    },
    /// A linearizable read taken by a replica that does not lead: asks the primary for a read
    /// index (`id` is the asker's read id, echoed back).
    ReadIndexRequest {
        id: ReadId,
    },
    /// `Some(slot)`: serve read `id` once applied through `slot`. `None`: refused (the receiver
    /// does not lead, or too many reads wait).
    ReadIndexReply {
        id: ReadId,
        read_index: Option<Slot>,
    },
    /// A replica rebuilding from amnesia asks the primary of `ballot` for a no-op slot: it
    /// waits for a slot proposed after it came back (`amnesia.rs`), and the primary's log was
    /// idle at its last heartbeat, so nothing under way would bring one.
    RebuildBarrier {
        ballot: Ballot,
    },
}

/// Ballots at or above this are refused: far beyond any real run (a ballot per election, a
/// billion elections a second for 290 years), and `next_owned_by` cannot wrap below it.
pub const BALLOT_LIMIT: u64 = 1 << 63;
/// Slots at or above this are refused: 2^48 slots is 89 years at 100k slots a second, and a
/// corrupt slot near `u64::MAX` would make a new primary fill the gap with no-ops forever.
pub const SLOT_LIMIT: u64 = 1 << 48;

impl Message {
    /// The ballot this message speaks for, if any.
    pub fn ballot(&self) -> Option<Ballot> {
        match self {
            Message::PreVote { ballot }
            | Message::PreVoteReply { ballot, .. }
            | Message::Prepare { ballot, .. }
            | Message::Promise { ballot, .. }
            | Message::Accept { ballot, .. }
            | Message::Accepted { ballot, .. }
            | Message::Commit { ballot, .. }
            | Message::Heartbeat { ballot, .. }
            | Message::HeartbeatAck { ballot, .. }
            | Message::TimeoutNow { ballot }
            | Message::RebuildBarrier { ballot } => Some(*ballot),
            Message::Nack { promised } => Some(*promised),
            Message::CatchupRequest { .. }
            | Message::Catchup { .. }
            | Message::CatchupTruncated { .. }
            | Message::Forward { .. }
            | Message::ForwardRefused { .. }
            | Message::ReadIndexRequest { .. }
            | Message::ReadIndexReply { .. } => None,
        }
    }

    /// Every ballot and slot the message names is below `BALLOT_LIMIT` / `SLOT_LIMIT`.
    pub fn is_sane(&self) -> bool {
        let b = |b: &Ballot| b.0 < BALLOT_LIMIT;
        let s = |s: &Slot| s.0 < SLOT_LIMIT;
        if !self.ballot().as_ref().is_none_or(b) {
            return false;
        }
        match self {
            Message::PreVote { .. }
            | Message::PreVoteReply { .. }
            | Message::Nack { .. }
            | Message::TimeoutNow { .. }
            | Message::RebuildBarrier { .. }
            | Message::Forward { .. }
            | Message::ForwardRefused { .. }
            | Message::ReadIndexRequest { .. } => true,
            Message::ReadIndexReply { read_index, .. } => read_index.as_ref().is_none_or(s),
            Message::Prepare {
                from_slot,
                released,
                ..
            } => s(from_slot) && released.as_ref().is_none_or(b),
            Message::Promise {
                log_start,
                commit_upto,
                entries,
                ..
            } => {
                s(log_start) && s(commit_upto) && entries.iter().all(|e| s(&e.slot) && b(&e.ballot))
            }
            Message::Accept {
                slot, commit_upto, ..
            } => s(slot) && s(commit_upto),
            Message::Accepted { slot, .. } => s(slot),
            Message::Commit { commit_upto, .. } => s(commit_upto),
            Message::Heartbeat {
                commit_upto,
                compact_upto,
                log_end,
                ..
            } => s(commit_upto) && s(compact_upto) && s(log_end),
            Message::HeartbeatAck {
                commit_upto,
                applied_upto,
                ..
            } => s(commit_upto) && s(applied_upto),
            Message::CatchupRequest { from_slot } => s(from_slot),
            Message::Catchup {
                entries,
                commit_upto,
            } => s(commit_upto) && entries.iter().all(|(slot, _)| s(slot)),
            Message::CatchupTruncated { log_start } => s(log_start),
        }
    }
}
