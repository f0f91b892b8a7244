//! Phase 2 and steady-state leadership: batching proposals, pipelining Accepts, counting
//! Accepted votes, advancing and spreading the commit index, heartbeats and check-quorum.
//!
//! Owns: the `impl Replica` handlers for Propose/Accept/Accepted/Commit/Heartbeat (the state
//! they change, `PrimaryState`, is in `state.rs`). Must not: run Phase 1 (see `election.rs`). Invariants: at most `pipeline_depth`
//! client slots in flight (recovered slots after a view change may exceed it once); a slot is
//! chosen only with `quorum` Accepted votes in the primary's own ballot, the primary's own vote
//! counting only once its Accept record is durable; a follower treats a slot as committed only
//! when the entry it holds was accepted in the ballot of the primary announcing the commit.

use super::io::{Outputs, Rejection};
use super::message::Message;
use super::record::Record;
use super::replica::Replica;
use super::state::{Inflight, PrimaryState, Role};
use super::types::{Ballot, Batch, ReplicaId, Slot, Value};
use bytes::Bytes;

impl Replica {
    pub(crate) fn primary_mut(&mut self) -> Option<&mut PrimaryState> {
        match &mut self.role {
            Role::Primary(p) => Some(p),
            _ => None,
        }
    }

    /// Queues commands whose clients wait at `origin` (refusing what does not fit), then cuts
    /// slots. The caller checked that this replica leads.
    pub(crate) fn enqueue(
        &mut self,
        origin: ReplicaId,
        mut commands: Vec<Bytes>,
        out: &mut Outputs,
    ) {
        let queue_max = self.cfg.proposal_queue_max;
        let Some(p) = self.primary_mut() else {
            return;
        };
        let room = queue_max.saturating_sub(p.queue.len());
        let overflow = if commands.len() > room {
            commands.split_off(room)
        } else {
            Vec::new()
        };
        p.queue.extend(commands.into_iter().map(|c| (origin, c)));
        if !overflow.is_empty() {
            self.refuse(origin, overflow, Rejection::Overloaded, out);
        }
        self.pump_proposals(out);
    }

    /// Adaptive batching: whenever the pipeline has room, everything waiting (up to the batch
    /// limits) goes into the next slot at once; no timer ever delays a proposal. While the
    /// pipeline is full, commands wait in the queue and the next slot is cut when one completes
    /// (batch-while-waiting), so slots grow with load and an idle pipe adds no latency.
    pub(crate) fn pump_proposals(&mut self, out: &mut Outputs) {
        let depth = self.cfg.pipeline_depth;
        let ops_max = self.cfg.batch_ops_max;
        let bytes_max = self.cfg.batch_bytes_max;
        loop {
            let Some(p) = self.primary_mut() else {
                return;
            };
            if p.inflight.len() >= depth || p.queue.is_empty() || p.transfer.is_some() {
                return;
            }
            let mut batch = Vec::with_capacity(p.queue.len().min(ops_max));
            let mut bytes = 0usize;
            while let Some((_, cmd)) = p.queue.front() {
                let fits = batch.is_empty() || bytes + cmd.len() <= bytes_max;
                if batch.len() >= ops_max || !fits {
                    break;
                }
                bytes += cmd.len();
                if let Some((_, cmd)) = p.queue.pop_front() {
                    batch.push(cmd);
                }
            }
            self.propose_next(Value::Batch(Batch::new(batch)), out);
        }
    }

    /// Proposes `value` in the primary's next free slot.
    pub(crate) fn propose_next(&mut self, value: Value, out: &mut Outputs) {
        let Some(p) = self.primary_mut() else {
            return;
        };
        let slot = p.next_slot;
        p.next_slot = slot.next();
        self.propose_at(slot, value, out);
    }

    /// Phase 2a for one slot: Accept to every peer, and in parallel our own acceptance
    /// (persisted; counted once durable).
    pub(crate) fn propose_at(&mut self, slot: Slot, value: Value, out: &mut Outputs) {
        let commit_upto = self.log.commit_upto();
        let now = self.now_ms;
        let Some(p) = self.primary_mut() else {
            return;
        };
        let ballot = p.ballot;
        p.inflight.insert(
            slot,
            Inflight {
                value: value.clone(),
                votes: 0,
                sent_ms: now,
            },
        );
        let accept = Message::Accept {
            ballot,
            slot,
            value,
            commit_upto,
        };
        self.broadcast(&accept, out);
        let me = self.me;
        self.send(me, accept, out);
    }

    pub(crate) fn on_accept(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        slot: Slot,
        value: Value,
        commit_upto: Slot,
        out: &mut Outputs,
    ) {
        if self.nack_if_stale(from, ballot, out) {
            return;
        }
        self.follow(from, ballot, out);
        if self.amnesiac && from != self.me {
            // It may have voted differently before it lost its state: no vote until rebuilt.
            // The slot still reaches it, once chosen, by catch-up.
            self.learn_commit(from, ballot, commit_upto, out);
            return;
        }
        if slot < self.log.log_start() {
            // Already chosen and applied here; nothing to persist.
            self.send(from, Message::Accepted { ballot, slot }, out);
        } else {
            self.log.accept(slot, ballot, value.clone());
            self.persist(
                Record::Accept {
                    slot,
                    ballot,
                    value,
                },
                out,
            );
            self.send_durable(from, Message::Accepted { ballot, slot }, out);
        }
        if from != self.me {
            self.learn_commit(from, ballot, commit_upto, out);
        }
    }

    pub(crate) fn on_accepted(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        slot: Slot,
        out: &mut Outputs,
    ) {
        let quorum = self.cfg.quorum();
        let now = self.now_ms;
        let Some(p) = self.primary_mut() else {
            return;
        };
        if p.ballot != ballot {
            return;
        }
        p.note_ack(from, now);
        let Some(inf) = p.inflight.get_mut(&slot) else {
            return;
        };
        inf.votes |= 1u64 << from.0;
        if inf.votes.count_ones() < quorum {
            return;
        }
        let Some(inf) = p.inflight.remove(&slot) else {
            return;
        };
        let idle = p.inflight.is_empty() && p.queue.is_empty();
        self.log.mark_chosen(slot, ballot, inf.value);
        let before = self.log.commit_upto();
        self.log.advance_commit(&mut out.committed);
        self.pump_proposals(out);
        let after = self.log.commit_upto();
        if idle && after > before {
            // Nothing will carry the commit index soon: say it explicitly.
            let commit = Message::Commit {
                ballot,
                commit_upto: after,
            };
            self.broadcast(&commit, out);
        }
        self.release_reads(out);
    }

    /// Follower side of the piggybacked commit index.
    pub(crate) fn learn_commit(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        hint: Slot,
        out: &mut Outputs,
    ) {
        if self.is_primary() {
            return;
        }
        let caught_up = self.log.learn_commit(ballot, hint, &mut out.committed);
        if !caught_up {
            self.request_catchup(from, out);
        }
    }

    pub(crate) fn on_commit(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        commit_upto: Slot,
        out: &mut Outputs,
    ) {
        if ballot < self.promised || ballot.primary(self.cfg.replica_count) != from {
            return;
        }
        self.follow(from, ballot, out);
        self.learn_commit(from, ballot, commit_upto, out);
    }

    pub(crate) fn on_heartbeat(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        commit_upto: Slot,
        read_seq: u64,
        compact_upto: Slot,
        out: &mut Outputs,
    ) {
        if self.nack_if_stale(from, ballot, out) {
            return;
        }
        if ballot.primary(self.cfg.replica_count) != from {
            return;
        }
        self.follow(from, ballot, out);
        self.cluster_applied = self.cluster_applied.max(compact_upto);
        self.learn_commit(from, ballot, commit_upto, out);
        let ack = Message::HeartbeatAck {
            ballot,
            read_seq,
            commit_upto: self.log.commit_upto(),
            applied_upto: self.log.applied_upto(),
        };
        self.send(from, ack, out);
    }

    pub(crate) fn on_heartbeat_ack(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        read_seq: u64,
        applied_upto: Slot,
        out: &mut Outputs,
    ) {
        let now = self.now_ms;
        let Some(p) = self.primary_mut() else {
            return;
        };
        if p.ballot != ballot {
            return;
        }
        p.note_ack(from, now);
        if let Some(peer) = p.peers.get_mut(from.0 as usize) {
            peer.applied_upto = peer.applied_upto.max(applied_upto);
        }
        p.reads.on_ack(from, read_seq);
        self.release_reads(out);
    }

    pub(crate) fn tick_primary(&mut self, out: &mut Outputs) {
        let now = self.now_ms;
        let hb = self.cfg.heartbeat_interval_ms;
        let timeout = self.cfg.election_timeout_min_ms;
        let quorum = self.cfg.quorum();
        let me = self.me;
        let Some(p) = self.primary_mut() else {
            return;
        };
        // Check-quorum: a primary that has not heard from a quorum for a timeout steps down,
        // so a primary cut off by an asymmetric partition cannot keep followers from electing.
        let alive = p
            .peers
            .iter()
            .enumerate()
            .filter(|(i, peer)| *i as u32 == me.0 || now.saturating_sub(peer.last_ack_ms) < timeout)
            .count() as u32;
        if alive < quorum && now.saturating_sub(p.became_ms) >= timeout {
            self.become_follower(out);
            return;
        }
        if p.transfer.is_some_and(|(_, deadline)| now >= deadline) {
            p.transfer = None;
        }
        if now.saturating_sub(p.last_heartbeat_ms) < hb {
            return;
        }
        p.last_heartbeat_ms = now;
        let ballot = p.ballot;
        let commit_upto = self.log.commit_upto();
        let mut resend = Vec::new();
        if let Some(p) = self.primary_mut() {
            for (slot, inf) in p.inflight.iter_mut() {
                if now.saturating_sub(inf.sent_ms) >= hb {
                    inf.sent_ms = now;
                    resend.push((*slot, inf.value.clone(), inf.votes));
                }
            }
        }
        for (slot, value, votes) in resend {
            for i in 0..self.cfg.replica_count {
                if votes & (1u64 << i) == 0 && i != me.0 {
                    let accept = Message::Accept {
                        ballot,
                        slot,
                        value: value.clone(),
                        commit_upto,
                    };
                    out.sends.push((ReplicaId(i), accept));
                }
            }
        }
        self.start_heartbeat_round(out);
    }
}
