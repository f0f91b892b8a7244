//! Amnesia: a replica that lost its durable state (a replaced disk, a deleted WAL) may have
//! promised ballots and accepted values it no longer remembers. Voting as if it had not
//! could let a value that was chosen with its forgotten vote be overwritten. So, until it has
//! rebuilt what it forgot, an amnesiac replica:
//! - still promises, but says it is amnesiac; a candidate counts such promises only in a
//!   quorum made entirely of them (a cluster's first start, where everyone starts empty);
//!   otherwise it needs a quorum of replicas that remember;
//! - does not vote in Phase 2 (no `Accepted`); it learns chosen values by catch-up and
//!   snapshot like any lagging replica.
//!
//! It is rebuilt when it becomes primary (its Phase 1 recovered everything chosen), when the
//! primary it follows was elected by amnesiac promises including its own (first start), or
//! once its commit index passes the slot after the primary's log end as first reported to it
//! in the primary's ballot: that slot was proposed after this replica came back and chosen without its
//! vote, which proves the primary's ballot is above every ballot the replica could have
//! promised, and everything chosen before lies at or below the reported log end. This is the
//! rule of "Paxos Made Live" (a rebuilding replica waits to observe a complete instance started
//! after it began rebuilding). It assumes at most one replica of a quorum lost its state.
//! Such a slot must come even if no client writes: a replica that missed a cluster's first
//! election would otherwise stay amnesiac, and should the primary then fail, the other two
//! could never elect one (a quorum needs a replica that remembers besides the amnesiac). So
//! while the primary's heartbeats show its log idle short of the target, the replica asks it
//! for a no-op slot (`RebuildBarrier`).
//!
//! Owns: the `impl Replica` helpers for it. The shell keeps the amnesiac flag durable until
//! `Event::Rebuilt`.

use super::io::{Event, Outputs};
use super::message::Message;
use super::replica::Replica;
use super::types::{Ballot, ReplicaId, Slot, Value};

impl Replica {
    /// True while this replica may have forgotten votes.
    pub fn is_amnesiac(&self) -> bool {
        self.amnesiac
    }

    /// A heartbeat from the primary of `ballot` reported its log end.
    pub(crate) fn note_primary_log_end(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        log_end: Slot,
        bootstrap: bool,
    ) {
        if !self.amnesiac
            || ballot < self.promised
            || ballot.primary(self.cfg.replica_count) != from
        {
            return;
        }
        // A first start: the primary's quorum was amnesiac promises, this one's among them.
        // A replica that lost its disk later never promised that ballot and rebuilds by the
        // general rule below.
        if bootstrap && self.amnesiac_promise == Some(ballot) {
            self.rebuild_target = Some((ballot, Slot(0)));
            return;
        }
        if self.rebuild_target.is_none_or(|(b, _)| b != ballot) {
            self.rebuild_target = Some((ballot, log_end.next()));
        }
    }

    /// After a heartbeat of the primary of `ballot`: when its log was idle (everything it
    /// proposed committed) short of this replica's rebuild target, no slot under way will reach
    /// the target, so ask for one. At most once per heartbeat, and only while rebuilding.
    pub(crate) fn ask_for_rebuild_barrier(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        primary_commit: Slot,
        log_end: Slot,
        out: &mut Outputs,
    ) {
        let Some((b, target)) = self.rebuild_target else {
            return;
        };
        let waiting = self.amnesiac && b == ballot && ballot == self.promised;
        if waiting && primary_commit >= log_end && target > primary_commit {
            self.send(from, Message::RebuildBarrier { ballot }, out);
        }
    }

    /// A rebuilding replica's request: the primary of `ballot` proposes a no-op slot unless a
    /// slot is already under way or queued (anything proposed after the asker's heartbeat
    /// reaches its target).
    pub(crate) fn on_rebuild_barrier(&mut self, ballot: Ballot, out: &mut Outputs) {
        let Some(p) = self.primary_mut() else {
            return;
        };
        let idle = p.inflight.is_empty() && p.queue.is_empty();
        if p.ballot == ballot && p.transfer.is_none() && idle {
            self.propose_next(Value::Noop, out);
        }
    }

    /// Ends amnesia once the rebuild target is reached (checked after every step).
    pub(crate) fn check_rebuilt(&mut self, out: &mut Outputs) {
        if let Some((ballot, target)) = self.rebuild_target {
            if self.amnesiac && ballot == self.promised && self.log.commit_upto() >= target {
                self.end_amnesia(out);
            }
        }
    }

    pub(crate) fn end_amnesia(&mut self, out: &mut Outputs) {
        self.rebuild_target = None;
        if self.amnesiac {
            self.amnesiac = false;
            out.events.push(Event::Rebuilt);
        }
    }
}
