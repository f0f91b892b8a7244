//! Linearizable reads without a log write: ReadIndex (one heartbeat round confirms the primary
//! still leads, batched over every read waiting for it) and an optional leader lease.
//!
//! Owns: the `impl Replica` read handlers and heartbeat rounds (every heartbeat is a numbered
//! round; their `ReadState` is in `state.rs`). Must not: serve reads itself — it only tells the shell
//! "serve read R once applied >= slot S". Invariants: a read joins only a round started after
//! it arrived; its read index is at least every slot that could have been chosen before it
//! arrived (the commit index, and every slot Phase 1 recovered); a lease lasts
//! `election_timeout_min_ms - clock_drift_bound_ms` from the *send* time of a round a quorum
//! acknowledged, and ends for good when leadership transfer begins. The lease holds because no
//! quorum promises a new ballot while it runs: a replica promises (and grants a PreVote) only
//! once it has heard nothing from a primary for `election_timeout_min_ms` on its own clock,
//! unless the Prepare says the primary it follows released it (`election.rs`), and the shell
//! gives the core the current time before every step (a clock read at ticks only would lag).

use super::io::{Outputs, Rejection};
use super::message::Message;
use super::replica::Replica;
use super::state::{Reader, Role, Round};
use super::types::Slot;

impl Replica {
    /// A read at the primary, its own client's or a peer's: answered at once under the lease,
    /// else it joins the next heartbeat round.
    pub(crate) fn read_for(&mut self, reader: Reader, out: &mut Outputs) {
        let now = self.now_ms;
        let reads_max = self.cfg.pending_reads_max;
        let lease = self.lease_read();
        let Some(read_index) = self.read_index() else {
            return;
        };
        let Some(p) = self.primary_mut() else {
            return;
        };
        if let Some((to, _)) = p.transfer {
            let why = Rejection::NotPrimary {
                primary_hint: Some(to),
            };
            reader.answer(Err(why), out);
            return;
        }
        if lease.is_some_and(|(_, until_ms)| now < until_ms) {
            reader.answer(Ok(read_index), out);
            return;
        }
        if p.reads.pending() >= reads_max {
            reader.answer(Err(Rejection::Overloaded), out);
            return;
        }
        p.reads.waiting.push((reader, read_index));
        if p.reads.rounds.is_empty() {
            self.start_heartbeat_round(out);
        }
    }

    /// What a read may rely on without a step, for as long as the lease runs: (read index,
    /// lease end in this core's clock). `None` unless this replica leads, leases are on, it
    /// holds a lease, and it is not handing leadership over. Exactly the condition under which
    /// `read_for` answers at once, so a read the shell serves from it is as linearizable: the
    /// shell must publish it after every step, before it carries out what the step sent (a
    /// commit is acknowledged only after it is published; a transfer, which ends the lease,
    /// reaches no peer before the lease is withdrawn).
    pub fn lease_read(&self) -> Option<(Slot, u64)> {
        let Role::Primary(p) = &self.role else {
            return None;
        };
        // A forfeited lease has its expiry reset to 0 (`PrimaryState::begin_transfer`).
        if !self.cfg.lease_enabled || p.transfer.is_some() || p.reads.lease_expiry_ms == 0 {
            return None;
        }
        Some((self.read_index()?, p.reads.lease_expiry_ms))
    }

    /// The index a read at this primary must see applied: everything committed, and
    /// everything its Phase 1 recovered. `None` unless it leads.
    fn read_index(&self) -> Option<Slot> {
        let Role::Primary(p) = &self.role else {
            return None;
        };
        Some(self.log.commit_upto().max(p.recovered_upto))
    }

    /// Broadcasts a heartbeat that is also a ReadIndex round for every waiting read.
    pub(crate) fn start_heartbeat_round(&mut self, out: &mut Outputs) {
        let now = self.now_ms;
        let me = self.me;
        let rounds_max = self.cfg.read_rounds_max;
        let commit_upto = self.log.commit_upto();
        let own_applied = self.log.applied_upto();
        let Some(p) = self.primary_mut() else {
            return;
        };
        p.last_heartbeat_ms = now;
        p.reads.next_seq += 1;
        let seq = p.reads.next_seq;
        let reads = std::mem::take(&mut p.reads.waiting);
        p.reads.rounds.push_back(Round {
            seq,
            sent_ms: now,
            reads,
            acks: 1u64 << me.0,
        });
        if p.reads.rounds.len() > rounds_max {
            // Too many unanswered rounds: fold the oldest reads into the next round (it started
            // later, so it is still a valid confirmation for them).
            if let Some(old) = p.reads.rounds.pop_front() {
                if let Some(next) = p.reads.rounds.front_mut() {
                    next.reads.extend(old.reads);
                }
            }
        }
        let heartbeat = Message::Heartbeat {
            ballot: p.ballot,
            commit_upto,
            read_seq: seq,
            compact_upto: p.cluster_applied(me, own_applied),
            log_end: p.next_slot.prev(),
            bootstrap: p.bootstrap,
        };
        self.broadcast(&heartbeat, out);
        self.release_reads(out);
    }

    /// Releases every read whose round (or a later one) a quorum acknowledged.
    pub(crate) fn release_reads(&mut self, out: &mut Outputs) {
        let quorum = self.cfg.quorum();
        let lease_ms = self
            .cfg
            .election_timeout_min_ms
            .saturating_sub(self.cfg.clock_drift_bound_ms);
        let lease = self.cfg.lease_enabled;
        let Role::Primary(p) = &mut self.role else {
            return;
        };
        let confirmed = p
            .reads
            .rounds
            .iter()
            .rposition(|r| r.acks.count_ones() >= quorum);
        let Some(last) = confirmed else {
            return;
        };
        let mut latest_sent_ms = 0;
        for r in p.reads.rounds.drain(..=last) {
            latest_sent_ms = r.sent_ms;
            for (reader, slot) in r.reads {
                reader.answer(Ok(slot), out);
            }
        }
        if lease && !p.lease_forfeited {
            p.reads.lease_expiry_ms = p.reads.lease_expiry_ms.max(latest_sent_ms + lease_ms);
        }
        if !p.reads.waiting.is_empty() && p.reads.rounds.is_empty() {
            self.start_heartbeat_round(out);
        }
    }
}
