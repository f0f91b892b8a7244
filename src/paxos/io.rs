//! The core's inputs and outputs: the whole contract between the Paxos core and its shell.
//!
//! Owns: `Input`, `Outputs`, `Event`, `Rejection`. Must not: contain protocol logic.
//! Invariants: `committed` is in slot order with no gaps and no repeats across the life of a
//! replica incarnation (and it restarts right after the recovered `snapshot_upto`); `persist`
//! LSNs strictly increase; a held message never appears in `sends` before its LSN is durable.

use super::message::Message;
use super::record::Record;
use super::types::{Lsn, ReadId, ReplicaId, Slot, Value, View};
use bytes::Bytes;

#[derive(Clone, Debug)]
pub enum Input {
    /// Time passes. `now_ms` is a monotonic clock (non-monotonic values are clamped);
    /// `random` seeds the next election-timeout draw.
    Tick { now_ms: u64, random: u64 },
    /// A message from a peer.
    Message { from: ReplicaId, message: Message },
    /// A client command to replicate.
    Propose(Bytes),
    /// Client commands that arrived together (one shell turn): queued first, then cut into as
    /// few slots as the pipeline allows, so a burst becomes one batch rather than one slot each.
    ProposeBatch(Vec<Bytes>),
    /// Every record with LSN <= `upto_lsn` is durable.
    Durable { upto_lsn: Lsn },
    /// The state machine applied every slot <= `upto`.
    Applied { upto: Slot },
    /// A linearizable read; answered by `read_ready` or `read_rejected`.
    ReadIndex { id: ReadId },
    /// Hand the primary role to `to` (graceful shutdown).
    TransferLeadership { to: ReplicaId },
    /// The shell installed a state-machine snapshot covering every slot <= `upto`.
    SnapshotInstalled { upto: Slot },
    /// Truncate the in-memory log through `upto` (clamped, see `PaxosConfig`).
    Compact { upto: Slot },
}

/// Why a proposal or read was refused; `primary_hint` is where the shell should route it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    NotPrimary { primary_hint: Option<ReplicaId> },
    Overloaded,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This replica now leads `view` (Phase 1 completed).
    BecamePrimary { view: View },
    /// The replica's belief about who leads changed.
    PrimaryChanged { primary: Option<ReplicaId> },
    /// Committed slots this replica needs were truncated at `from`; install a snapshot from it
    /// and report `Input::SnapshotInstalled`.
    NeedSnapshot { from: ReplicaId },
    /// An amnesiac replica has rebuilt what it forgot and votes again: the shell may drop its
    /// durable "rebuilding" marker.
    Rebuilt,
}

/// Everything one `step` asks the shell to do. Reuse one value and `clear()` it per turn.
#[derive(Debug, Default)]
pub struct Outputs {
    pub sends: Vec<(ReplicaId, Message)>,
    pub persist: Vec<(Lsn, Record)>,
    pub committed: Vec<(Slot, Value)>,
    /// Serve the read once the state machine has applied through the slot.
    pub read_ready: Vec<(ReadId, Slot)>,
    pub read_rejected: Vec<(ReadId, Rejection)>,
    pub proposals_rejected: Vec<(Bytes, Rejection)>,
    pub events: Vec<Event>,
    /// Values the log let go of (compaction, a snapshot install). Freeing a second's worth of
    /// commands at once holds a thread for milliseconds, so the core hands them over and the
    /// shell frees them a few at a time.
    pub released: Vec<Value>,
}

impl Outputs {
    pub fn clear(&mut self) {
        self.sends.clear();
        self.persist.clear();
        self.committed.clear();
        self.read_ready.clear();
        self.read_rejected.clear();
        self.proposals_rejected.clear();
        self.events.clear();
        self.released.clear();
    }
}
