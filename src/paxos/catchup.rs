//! Catch-up of lagging replicas: fetching committed slots from a peer's log, or asking the
//! shell for a state-machine snapshot when the peer has truncated them.
//!
//! Owns: the `impl Replica` handlers for CatchupRequest/Catchup/CatchupTruncated and
//! `SnapshotInstalled`. Must not: accept or vote (catch-up only moves already-chosen values).
//! Invariants: a replica serves only slots it knows committed; requests are rate-limited to
//! one per heartbeat interval per replica; `NeedSnapshot` likewise.

use super::io::{Event, Outputs};
use super::message::Message;
use super::replica::Replica;
use super::types::{Ballot, ReplicaId, Slot, Value};

impl Replica {
    pub(crate) fn request_catchup(&mut self, from: ReplicaId, out: &mut Outputs) {
        if from == self.me {
            return;
        }
        let now = self.now_ms;
        let recent = self
            .catchup_requested_ms
            .is_some_and(|t| now.saturating_sub(t) < self.cfg.heartbeat_interval_ms);
        if recent {
            return;
        }
        self.catchup_requested_ms = Some(now);
        let from_slot = self.log.commit_upto().next();
        self.send(from, Message::CatchupRequest { from_slot }, out);
    }

    pub(crate) fn request_snapshot(&mut self, from: ReplicaId, out: &mut Outputs) {
        let now = self.now_ms;
        let recent = self
            .snapshot_requested_ms
            .is_some_and(|t| now.saturating_sub(t) < self.cfg.election_timeout_min_ms);
        if !recent {
            self.snapshot_requested_ms = Some(now);
            out.events.push(Event::NeedSnapshot { from });
        }
    }

    pub(crate) fn on_catchup_request(
        &mut self,
        from: ReplicaId,
        from_slot: Slot,
        out: &mut Outputs,
    ) {
        if from_slot < self.log.log_start() {
            let log_start = self.log.log_start();
            self.send(from, Message::CatchupTruncated { log_start }, out);
            return;
        }
        let entries = self.log.committed_range(
            from_slot,
            self.cfg.catchup_slots_max,
            self.cfg.catchup_bytes_max,
        );
        if entries.is_empty() {
            return;
        }
        let commit_upto = self.log.commit_upto();
        self.send(
            from,
            Message::Catchup {
                entries,
                commit_upto,
            },
            out,
        );
    }

    pub(crate) fn on_catchup(
        &mut self,
        from: ReplicaId,
        entries: Vec<(Slot, Value)>,
        commit_upto: Slot,
        out: &mut Outputs,
    ) {
        let before = self.log.commit_upto();
        for (slot, value) in entries {
            if slot > before {
                self.log.mark_chosen(slot, Ballot(0), value);
            }
        }
        self.log.advance_commit(&mut out.committed);
        self.catchup_requested_ms = None;
        let after = self.log.commit_upto();
        if after > before && after < commit_upto {
            self.request_catchup(from, out);
        }
    }

    pub(crate) fn on_catchup_truncated(
        &mut self,
        from: ReplicaId,
        log_start: Slot,
        out: &mut Outputs,
    ) {
        if log_start > self.log.commit_upto().next() {
            self.request_snapshot(from, out);
        }
    }

    pub(crate) fn on_snapshot_installed(&mut self, upto: Slot, out: &mut Outputs) {
        self.log
            .install_snapshot(upto, &mut out.committed, &mut out.released);
        self.snapshot_requested_ms = None;
        self.catchup_requested_ms = None;
    }
}
