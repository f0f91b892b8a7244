//! View changes: election timers, PreVote, Phase 1 (Prepare/Promise), recovery of accepted
//! values, stepping down, and leadership transfer.
//!
//! Owns: the `impl Replica` handlers for those messages. Must not: choose values (Phase 2 is
//! in `replication.rs`). Invariants: a Promise leaves only after the promise is durable; a new
//! primary re-proposes, in its own ballot, every slot above its commit index that any promiser
//! reported (the highest-ballot value, a known-chosen value first), filling gaps with `Noop`;
//! a slot some promiser truncated is never filled with `Noop` (we ask for a snapshot instead).

use super::io::{Event, Outputs, Rejection};
use super::message::{Message, PromiseEntry};
use super::record::Record;
use super::replica::Replica;
use super::state::{PrimaryState, Promised, Role};
use super::types::{Ballot, ReplicaId, Slot, Value};
use std::collections::BTreeMap;

impl Replica {
    pub(crate) fn tick_election(&mut self, out: &mut Outputs) {
        let now = self.now_ms;
        if let Role::Candidate {
            ballot,
            promises,
            partial,
            started_ms,
            last_send_ms,
            released,
        } = &mut self.role
        {
            let ballot = *ballot;
            let released = *released;
            if now.saturating_sub(*started_ms) >= self.election_timeout_ms {
                self.become_follower(out);
                self.draw_election_timeout();
                return;
            }
            if now.saturating_sub(*last_send_ms) >= self.cfg.heartbeat_interval_ms {
                *last_send_ms = now;
                let start = self.log.commit_upto().next();
                // A promiser that answered in part is asked again from after its last entry.
                let missing: Vec<(ReplicaId, Slot)> = (0..self.cfg.replica_count)
                    .filter(|i| promises[*i as usize].is_none())
                    .map(|i| {
                        let from = partial[i as usize]
                            .as_ref()
                            .and_then(|p| p.entries.last())
                            .map_or(start, |e| e.slot.next());
                        (ReplicaId(i), from)
                    })
                    .collect();
                for (to, from_slot) in missing {
                    let prepare = Message::Prepare {
                        ballot,
                        from_slot,
                        released,
                    };
                    self.send(to, prepare, out);
                }
            }
            return;
        }
        if now.saturating_sub(self.election_timer_start_ms) >= self.election_timeout_ms {
            self.election_timer_start_ms = now;
            self.draw_election_timeout();
            if self.cfg.faults.skip_prevote {
                self.start_prepare(None, out);
            } else {
                self.start_prevote(out);
            }
        }
    }

    fn next_ballot(&self) -> Ballot {
        self.promised
            .max(self.ballot_seen_max)
            .next_owned_by(self.me, self.cfg.replica_count)
    }

    fn start_prevote(&mut self, out: &mut Outputs) {
        let ballot = self.next_ballot();
        self.role = Role::PreCandidate { ballot, grants: 0 };
        self.broadcast(&Message::PreVote { ballot }, out);
        // Our own grant follows the same rule as everyone else's.
        let granted = self.would_grant_prevote(ballot);
        let me = self.me;
        self.on_prevote_reply(me, ballot, granted, out);
    }

    /// Lease mode: this replica heard from a primary (or a candidate it promised) within the
    /// minimum election timeout, and `released` does not name the ballot it follows (or a later
    /// one) as given up. Such a replica makes no new promise: the primary's lease, counted from
    /// a heartbeat it sent before we heard it, may still run.
    fn holds_for_lease(&self, released: Option<Ballot>) -> bool {
        let released = released.is_some_and(|b| b >= self.promised);
        self.cfg.lease_enabled && self.heard_lately() && !released
    }

    /// A primary (or a candidate we promised) was heard from within the minimum timeout.
    fn heard_lately(&self) -> bool {
        self.now_ms.saturating_sub(self.last_heard_ms) < self.cfg.election_timeout_min_ms
    }

    /// PreVote is granted only to a ballot this replica could promise, by a replica that
    /// neither leads, nor heard from a primary (or a candidate it promised) lately, nor runs a
    /// Phase 1 of its own that made progress lately. The last rule keeps a long Phase 1 (a
    /// promise that comes in many parts) from being overrun by each peer that times out
    /// meanwhile: without it two candidates that both need the same long promise can depose
    /// each other forever.
    fn would_grant_prevote(&self, ballot: Ballot) -> bool {
        ballot > self.promised
            && !self.is_primary()
            && !self.heard_lately()
            && !self.phase1_progressing()
    }

    /// A candidate whose Phase 1 started or received a promise part within the minimum
    /// election timeout.
    fn phase1_progressing(&self) -> bool {
        match &self.role {
            Role::Candidate { started_ms, .. } => {
                self.now_ms.saturating_sub(*started_ms) < self.cfg.election_timeout_min_ms
            }
            _ => false,
        }
    }

    pub(crate) fn on_prevote(&mut self, from: ReplicaId, ballot: Ballot, out: &mut Outputs) {
        let granted = self.would_grant_prevote(ballot);
        self.send(from, Message::PreVoteReply { ballot, granted }, out);
    }

    pub(crate) fn on_prevote_reply(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        granted: bool,
        out: &mut Outputs,
    ) {
        let quorum = self.cfg.quorum();
        if let Role::PreCandidate { ballot: b, grants } = &mut self.role {
            if *b == ballot && granted {
                *grants |= 1u64 << from.0;
                if grants.count_ones() >= quorum {
                    self.start_prepare(None, out);
                }
            }
        }
    }

    /// Phase 1: promise ourselves and ask everyone for promises on every open slot.
    /// `released`: the ballot of the primary that handed its role to us, if it did.
    pub(crate) fn start_prepare(&mut self, released: Option<Ballot>, out: &mut Outputs) {
        let ballot = self.next_ballot();
        self.role = Role::Candidate {
            ballot,
            promises: (0..self.cfg.replica_count).map(|_| None).collect(),
            partial: (0..self.cfg.replica_count).map(|_| None).collect(),
            started_ms: self.now_ms,
            last_send_ms: self.now_ms,
            released,
        };
        self.set_known_primary(None, out);
        let from_slot = self.log.commit_upto().next();
        let prepare = Message::Prepare {
            ballot,
            from_slot,
            released,
        };
        self.broadcast(&prepare, out);
        let me = self.me;
        self.send(me, prepare, out);
    }

    pub(crate) fn on_prepare(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        from_slot: Slot,
        released: Option<Ballot>,
        out: &mut Outputs,
    ) {
        if self.nack_if_stale(from, ballot, out) {
            return;
        }
        if ballot > self.promised && from != self.me && self.holds_for_lease(released) {
            // A primary we heard from lately may hold a read lease: no new promise until it
            // has been silent for a timeout (it steps down or is deposed by then).
            return;
        }
        if ballot > self.promised {
            self.promised = ballot;
            self.persist(Record::Promise { ballot }, out);
            if from != self.me {
                if !matches!(self.role, Role::Follower) {
                    self.become_follower(out);
                }
                self.set_known_primary(None, out);
            }
        }
        if from != self.me {
            // Give the candidate a full timeout to finish before we run for it ourselves.
            self.last_heard_ms = self.now_ms;
            self.election_timer_start_ms = self.now_ms;
        }
        let (entries, more) = self
            .log
            .promise_entries(from_slot, self.cfg.promise_bytes_max);
        if self.amnesiac {
            self.amnesiac_promise = Some(ballot);
        }
        let promise = Message::Promise {
            ballot,
            log_start: self.log.log_start(),
            commit_upto: self.log.commit_upto(),
            entries,
            amnesiac: self.amnesiac,
            more,
        };
        self.send_durable(from, promise, out);
    }

    pub(crate) fn on_promise(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        mut promise: Promised,
        more: bool,
        out: &mut Outputs,
    ) {
        let quorum = self.cfg.quorum() as usize;
        let now = self.now_ms;
        let Role::Candidate {
            ballot: b,
            promises,
            partial,
            started_ms,
            released,
            ..
        } = &mut self.role
        else {
            return;
        };
        let released = *released;
        if *b != ballot || promises[from.0 as usize].is_some() {
            return;
        }
        // Parts of one promise: gather the entries (by slot; a duplicated part changes
        // nothing) and ask for the rest. The promiser may have cut its log between parts:
        // then the merged promise is what it would say now (its log starts at the later
        // log start, entries below it are not reported), so no slot falls in a gap unnoticed.
        let earlier = partial[from.0 as usize].take();
        let known_upto = earlier
            .as_ref()
            .and_then(|p| p.entries.last())
            .map(|e| e.slot);
        if let Some(mut p) = earlier {
            let log_start = p.log_start.max(promise.log_start);
            let mut by_slot: BTreeMap<Slot, PromiseEntry> =
                p.entries.drain(..).map(|e| (e.slot, e)).collect();
            by_slot.extend(promise.entries.drain(..).map(|e| (e.slot, e)));
            p.entries = by_slot
                .into_values()
                .filter(|e| e.slot >= log_start)
                .collect();
            p.log_start = log_start;
            p.amnesiac = promise.amnesiac;
            promise = p;
        }
        if more {
            // A long log takes many parts: Phase 1 that makes progress does not time out. Only
            // a part that reaches past what this promiser already reported is progress and
            // asks for the next one: a duplicated or late part asks nothing (a lost request is
            // asked again at the next tick), so copies do not multiply into request storms.
            let last = promise.entries.last().map(|e| e.slot);
            let progress = last > known_upto;
            partial[from.0 as usize] = Some(promise);
            if let (true, Some(last)) = (progress, last) {
                *started_ms = now;
                let from_slot = last.next();
                let prepare = Message::Prepare {
                    ballot,
                    from_slot,
                    released,
                };
                self.send(from, prepare, out);
            }
            return;
        }
        promises[from.0 as usize] = Some(promise);
        // An amnesiac promise may hide a forgotten vote: it counts only in a quorum made of
        // such promises alone (every promiser started empty: a cluster's first start).
        let amnesiac = promises.iter().flatten().filter(|p| p.amnesiac).count();
        let solid = promises.iter().flatten().count() - amnesiac;
        if solid >= quorum || amnesiac >= quorum {
            let bootstrap = solid < quorum;
            let promises: Vec<(ReplicaId, Promised)> = std::mem::take(promises)
                .into_iter()
                .enumerate()
                .filter_map(|(i, p)| p.map(|p| (ReplicaId(i as u32), p)))
                .collect();
            self.finish_phase1(ballot, promises, bootstrap, out);
        }
    }

    /// Merges a quorum of promises into the values this primary must re-propose.
    fn finish_phase1(
        &mut self,
        ballot: Ballot,
        promises: Vec<(ReplicaId, Promised)>,
        bootstrap: bool,
        out: &mut Outputs,
    ) {
        let start = self.log.commit_upto().next();
        // slot -> ((known chosen, ballot), value): the greatest key wins.
        let mut merged: BTreeMap<Slot, ((bool, Ballot), Value)> = BTreeMap::new();
        for (_, p) in &promises {
            for e in p.entries.iter().filter(|e| e.slot >= start) {
                // Only the entry's own flag says "chosen": a promise that came in parts
                // may pair an early part's entry with a later part's higher commit index,
                // learned after that entry was reported (its value may not be the chosen one).
                let rank = (e.committed, e.ballot);
                let better = merged.get(&e.slot).is_none_or(|(r, _)| rank > *r);
                if better {
                    merged.insert(e.slot, (rank, e.value.clone()));
                }
            }
        }
        // A promiser that truncated a slot had it chosen; only a chosen value may fill it.
        for (from, p) in &promises {
            let mut s = start;
            while s < p.log_start {
                let known = merged.get(&s).is_some_and(|((chosen, _), _)| *chosen);
                if !known {
                    self.become_follower(out);
                    self.request_snapshot(*from, out);
                    return;
                }
                s = s.next();
            }
        }
        let last = merged
            .keys()
            .next_back()
            .copied()
            .unwrap_or(start.prev())
            .max(start.prev());
        let n = self.cfg.replica_count;
        let mut primary = PrimaryState::new(ballot, n, last.next(), last, self.now_ms);
        primary.bootstrap = bootstrap;
        // Its log now holds everything chosen before this ballot: nothing forgotten matters.
        self.end_amnesia(out);
        // Peers that promised are alive right now.
        for (from, _) in &promises {
            primary.note_ack(*from, self.now_ms);
        }
        self.role = Role::Primary(Box::new(primary));
        let me = self.me;
        self.set_known_primary(Some(me), out);
        out.events.push(Event::BecamePrimary {
            view: ballot.view(),
        });
        let mut s = start;
        while s <= last {
            let value = merged.remove(&s).map_or(Value::Noop, |(_, v)| v);
            self.propose_at(s, value, out);
            s = s.next();
        }
        self.start_heartbeat_round(out);
        self.pump_proposals(out);
    }

    pub(crate) fn on_nack(&mut self, promised: Ballot, out: &mut Outputs) {
        let mine = match &self.role {
            Role::Primary(p) => Some(p.ballot),
            Role::Candidate { ballot, .. } => Some(*ballot),
            _ => None,
        };
        if mine.is_some_and(|b| b < promised) {
            self.become_follower(out);
        }
    }

    pub(crate) fn on_timeout_now(&mut self, from: ReplicaId, ballot: Ballot, out: &mut Outputs) {
        if ballot >= self.promised && ballot.primary(self.cfg.replica_count) == from {
            self.start_prepare(Some(ballot), out);
        }
    }

    pub(crate) fn on_transfer_leadership(&mut self, to: ReplicaId, out: &mut Outputs) {
        if to == self.me || to.0 >= self.cfg.replica_count {
            return;
        }
        let deadline = self.now_ms + self.cfg.election_timeout_min_ms;
        let Role::Primary(p) = &mut self.role else {
            return;
        };
        let ballot = p.ballot;
        let queued = p.begin_transfer(to, deadline);
        let why = Rejection::NotPrimary {
            primary_hint: Some(to),
        };
        self.refuse_queued(queued, why, out);
        self.send(to, Message::TimeoutNow { ballot }, out);
    }
}
