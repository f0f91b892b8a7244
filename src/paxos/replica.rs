//! The replica state machine: state, the single `step` entry point, and the plumbing every
//! handler shares (sending, persisting, holding replies until durable, role changes).
//!
//! Owns: `Replica` (its role types are in `state.rs`). Must not: touch clocks, randomness,
//! sockets or files — time and randomness arrive in `Input::Tick`, durability in
//! `Input::Durable`. Invariants: a message passed to `send_durable` leaves only after every
//! record persisted so far is durable; at most one role at a time; a replica only proposes in
//! ballots it owns (`ballot mod n == id`).
//! The handlers live in `election.rs`, `replication.rs`, `catchup.rs` and `read_index.rs`.

use super::config::PaxosConfig;
use super::io::{Event, Input, Outputs, Rejection};
use super::log::Log;
use super::message::Message;
use super::record::{DurableState, Record};
use super::state::{PrimaryState, Promised, Role};
use super::types::{Ballot, Lsn, ReplicaId, Slot};
use std::collections::VecDeque;

/// One Paxos replica. Drive it with `step`; see the module docs of `paxos` for the contract.
#[derive(Debug)]
pub struct Replica {
    pub(crate) cfg: PaxosConfig,
    pub(crate) me: ReplicaId,
    pub(crate) now_ms: u64,
    pub(crate) booted: bool,
    pub(crate) random: u64,
    /// Highest ballot promised (durable once the latest record is durable).
    pub(crate) promised: Ballot,
    /// Highest ballot seen anywhere (used to pick the next ballot).
    pub(crate) ballot_seen_max: Ballot,
    pub(crate) log: Log,
    pub(crate) role: Role,
    pub(crate) known_primary: Option<ReplicaId>,
    /// Last time the current primary (or a candidate we promised) was heard from.
    pub(crate) last_heard_ms: u64,
    pub(crate) election_timer_start_ms: u64,
    pub(crate) election_timeout_ms: u64,
    pub(crate) last_lsn: Lsn,
    pub(crate) durable_lsn: Lsn,
    pub(crate) held: VecDeque<(Lsn, ReplicaId, Message)>,
    pub(crate) self_inbox: VecDeque<Message>,
    pub(crate) catchup_requested_ms: Option<u64>,
    pub(crate) snapshot_requested_ms: Option<u64>,
    /// Slot every replica has applied, as last reported by the primary.
    pub(crate) cluster_applied: Slot,
    /// This replica lost its durable state and has not rebuilt it (see `amnesia.rs`).
    pub(crate) amnesiac: bool,
    /// While amnesiac: the ballot of the primary it follows and the slot its commit index
    /// must reach before it votes again.
    pub(crate) rebuild_target: Option<(Ballot, Slot)>,
    /// The ballot this replica promised in Phase 1 while amnesiac: a primary that ballot's
    /// amnesiac quorum elected (a first start) counted this very promise.
    pub(crate) amnesiac_promise: Option<Ballot>,
}

/// Heartbeats by which a replica that does not lead after a start defers its first election.
const BOOT_DEFERRAL_HEARTBEATS: u64 = 3;

impl Replica {
    /// Builds a replica from what its WAL recovered. `config` should be `validate()`d.
    pub fn new(config: PaxosConfig, recovered: DurableState) -> Replica {
        let me = config.replica_id;
        let election_timeout_ms = config.election_timeout_min_ms;
        Replica {
            me,
            now_ms: 0,
            booted: false,
            random: 0,
            promised: recovered.promised,
            ballot_seen_max: recovered.promised,
            log: Log::recover(&recovered, config.faults == Default::default()),
            role: Role::Follower,
            known_primary: None,
            last_heard_ms: 0,
            election_timer_start_ms: 0,
            election_timeout_ms,
            last_lsn: Lsn(0),
            durable_lsn: Lsn(0),
            held: VecDeque::new(),
            self_inbox: VecDeque::new(),
            catchup_requested_ms: None,
            snapshot_requested_ms: None,
            cluster_applied: recovered.snapshot_upto,
            amnesiac: recovered.amnesiac && !config.faults.ignore_amnesia,
            rebuild_target: None,
            amnesiac_promise: None,
            cfg: config,
        }
    }

    /// The time now, on the clock `Input::Tick` uses (earlier values are ignored). A shell calls
    /// it before every step, so what the core decides by time (whether a read lease still runs,
    /// whether a peer was heard from lately) judges by the present, not by the last tick.
    pub fn observe_clock(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// The single entry point: feed one input, collect outputs into `out` (appended).
    pub fn step(&mut self, input: Input, out: &mut Outputs) {
        match input {
            Input::Tick { now_ms, random } => self.on_tick(now_ms, random, out),
            Input::Message { from, message } => {
                // A message naming an absurd ballot or slot is dropped (a corrupt or buggy
                // peer must not wrap ballots or make a primary fill 2^62 slots with no-ops).
                if from.0 < self.cfg.replica_count && from != self.me && message.is_sane() {
                    self.on_message(from, message, out);
                }
            }
            Input::Propose(command) => self.on_client_commands(vec![command], out),
            Input::ProposeBatch(commands) => self.on_client_commands(commands, out),
            Input::Durable { upto_lsn } => self.on_durable(upto_lsn, out),
            Input::Applied { upto } => self.log.set_applied(upto),
            Input::ReadIndex { id } => self.on_read_index(id, out),
            Input::TransferLeadership { to } => self.on_transfer_leadership(to, out),
            Input::SnapshotInstalled { upto } => self.on_snapshot_installed(upto, out),
            Input::Compact { upto } => self.on_compact(upto, out),
        }
        self.drain_self_inbox(out);
        self.check_rebuilt(out);
    }

    pub fn id(&self) -> ReplicaId {
        self.me
    }
    pub fn is_primary(&self) -> bool {
        matches!(self.role, Role::Primary(_))
    }
    /// Slots this primary proposed that are not chosen yet (0 when not primary).
    pub fn slots_inflight(&self) -> usize {
        match &self.role {
            Role::Primary(p) => p.inflight.len(),
            _ => 0,
        }
    }
    pub fn known_primary(&self) -> Option<ReplicaId> {
        self.known_primary
    }
    pub fn promised(&self) -> Ballot {
        self.promised
    }
    pub fn commit_upto(&self) -> Slot {
        self.log.commit_upto()
    }
    pub fn applied_upto(&self) -> Slot {
        self.log.applied_upto()
    }
    pub fn log_start(&self) -> Slot {
        self.log.log_start()
    }
    /// Highest slot every replica is known to have applied: the safe `Compact` point.
    pub fn safe_compact_upto(&self) -> Slot {
        match &self.role {
            Role::Primary(p) => p.cluster_applied(self.id(), self.log.applied_upto()),
            _ => self.cluster_applied.min(self.log.applied_upto()),
        }
    }

    fn on_message(&mut self, from: ReplicaId, message: Message, out: &mut Outputs) {
        if let Some(b) = message.ballot() {
            self.ballot_seen_max = self.ballot_seen_max.max(b);
        }
        match message {
            Message::PreVote { ballot } => self.on_prevote(from, ballot, out),
            Message::PreVoteReply { ballot, granted } => {
                self.on_prevote_reply(from, ballot, granted, out)
            }
            Message::Prepare {
                ballot,
                from_slot,
                released,
            } => self.on_prepare(from, ballot, from_slot, released, out),
            Message::Promise {
                ballot,
                log_start,
                // The promiser's commit index is already in its entries' `committed` flags.
                commit_upto: _,
                entries,
                amnesiac,
                more,
            } => {
                let p = Promised {
                    log_start,
                    entries,
                    amnesiac,
                };
                self.on_promise(from, ballot, p, more, out)
            }
            Message::Accept {
                ballot,
                slot,
                value,
                commit_upto,
            } => self.on_accept(from, ballot, slot, value, commit_upto, out),
            Message::Accepted { ballot, slot } => self.on_accepted(from, ballot, slot, out),
            Message::Nack { promised } => self.on_nack(promised, out),
            Message::Commit {
                ballot,
                commit_upto,
            } => self.on_commit(from, ballot, commit_upto, out),
            Message::Heartbeat {
                ballot,
                commit_upto,
                read_seq,
                compact_upto,
                log_end,
                bootstrap,
            } => {
                self.note_primary_log_end(from, ballot, log_end, bootstrap);
                self.on_heartbeat(from, ballot, commit_upto, read_seq, compact_upto, out);
                self.ask_for_rebuild_barrier(from, ballot, commit_upto, log_end, out);
            }
            Message::HeartbeatAck {
                ballot,
                read_seq,
                commit_upto: _,
                applied_upto,
            } => self.on_heartbeat_ack(from, ballot, read_seq, applied_upto, out),
            Message::CatchupRequest { from_slot } => self.on_catchup_request(from, from_slot, out),
            Message::Catchup {
                entries,
                commit_upto,
            } => self.on_catchup(from, entries, commit_upto, out),
            Message::CatchupTruncated { log_start } => {
                self.on_catchup_truncated(from, log_start, out)
            }
            Message::TimeoutNow { ballot } => self.on_timeout_now(from, ballot, out),
            Message::Forward { commands } => self.on_forward(from, commands, out),
            Message::ForwardRefused {
                commands,
                overloaded,
            } => self.on_forward_refused(commands, overloaded, out),
            Message::ReadIndexRequest { id } => self.on_read_index_request(from, id, out),
            Message::ReadIndexReply { id, read_index } => {
                self.on_read_index_reply(id, read_index, out)
            }
            Message::RebuildBarrier { ballot } => self.on_rebuild_barrier(ballot, out),
        }
    }

    fn drain_self_inbox(&mut self, out: &mut Outputs) {
        while let Some(m) = self.self_inbox.pop_front() {
            let me = self.me;
            self.on_message_from_self(me, m, out);
        }
    }

    /// Messages a replica sends itself take the same path as a peer's (its own Promise and
    /// Accepted are counted only once durable, like everyone else's).
    fn on_message_from_self(&mut self, me: ReplicaId, message: Message, out: &mut Outputs) {
        self.on_message(me, message, out);
    }

    /// Refuses a message from a ballot below our promise with a `Nack`; true if refused.
    pub(crate) fn nack_if_stale(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        out: &mut Outputs,
    ) -> bool {
        if ballot < self.promised {
            let promised = self.promised;
            self.send(from, Message::Nack { promised }, out);
            return true;
        }
        false
    }

    pub(crate) fn send(&mut self, to: ReplicaId, message: Message, out: &mut Outputs) {
        if to == self.me {
            self.self_inbox.push_back(message);
        } else {
            out.sends.push((to, message));
        }
    }

    /// Sends `message` to every replica except this one.
    pub(crate) fn broadcast(&mut self, message: &Message, out: &mut Outputs) {
        for i in 0..self.cfg.replica_count {
            if i != self.me.0 {
                out.sends.push((ReplicaId(i), message.clone()));
            }
        }
    }

    /// Sends `message` once everything persisted so far is durable.
    pub(crate) fn send_durable(&mut self, to: ReplicaId, message: Message, out: &mut Outputs) {
        if self.cfg.faults.reply_before_persist || self.last_lsn <= self.durable_lsn {
            self.send(to, message, out);
        } else {
            self.held.push_back((self.last_lsn, to, message));
        }
    }

    pub(crate) fn persist(&mut self, record: Record, out: &mut Outputs) -> Lsn {
        self.last_lsn = Lsn(self.last_lsn.0 + 1);
        debug_assert!(
            out.persist.last().is_none_or(|(l, _)| *l < self.last_lsn),
            "LSNs must increase"
        );
        out.persist.push((self.last_lsn, record));
        self.last_lsn
    }

    fn on_durable(&mut self, upto: Lsn, out: &mut Outputs) {
        debug_assert!(
            upto <= self.last_lsn,
            "durable through {upto:?}, but the last LSN handed out is {:?}",
            self.last_lsn
        );
        self.durable_lsn = self.durable_lsn.max(upto.min(self.last_lsn));
        while self
            .held
            .front()
            .is_some_and(|(lsn, _, _)| *lsn <= self.durable_lsn)
        {
            if let Some((_, to, m)) = self.held.pop_front() {
                self.send(to, m, out);
            }
        }
    }

    pub(crate) fn set_known_primary(&mut self, primary: Option<ReplicaId>, out: &mut Outputs) {
        if self.known_primary != primary {
            self.known_primary = primary;
            out.events.push(Event::PrimaryChanged { primary });
        }
    }

    /// Leaves any leading role; everything waiting at the primary is refused with a hint.
    pub(crate) fn become_follower(&mut self, out: &mut Outputs) {
        let old = std::mem::replace(&mut self.role, Role::Follower);
        if let Role::Primary(p) = old {
            let hint = Rejection::NotPrimary { primary_hint: None };
            let PrimaryState { queue, reads, .. } = *p;
            self.refuse_queued(queue, hint.clone(), out);
            reads.reject_all(&hint, out);
            if self.known_primary == Some(self.me) {
                self.set_known_primary(None, out);
            }
        }
        self.election_timer_start_ms = self.now_ms;
    }

    /// A message from the primary of `ballot` (>= promised) arrived: follow it.
    pub(crate) fn follow(&mut self, from: ReplicaId, ballot: Ballot, out: &mut Outputs) {
        if ballot > self.promised {
            self.promised = ballot;
        }
        let leading_same = matches!(&self.role, Role::Primary(p) if p.ballot == ballot);
        if !leading_same && from != self.me && !matches!(self.role, Role::Follower) {
            self.become_follower(out);
        }
        if from != self.me {
            self.set_known_primary(Some(from), out);
            self.last_heard_ms = self.now_ms;
            self.election_timer_start_ms = self.now_ms;
        }
    }

    /// Draws the next election timeout from the tick's randomness (splitmix64 step).
    pub(crate) fn draw_election_timeout(&mut self) {
        self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let min = self.cfg.election_timeout_min_ms;
        self.election_timeout_ms = min + z % min.max(1);
    }

    fn on_tick(&mut self, now_ms: u64, random: u64, out: &mut Outputs) {
        self.observe_clock(now_ms);
        self.random ^= random;
        if !self.booted {
            // A restarted replica treats boot as "just heard from the primary": it will not
            // help depose anyone (or break a lease) until a full timeout has passed.
            self.booted = true;
            self.last_heard_ms = self.now_ms;
            self.election_timer_start_ms = self.now_ms;
            self.draw_election_timeout();
            // Peers grant a PreVote only once they have heard nothing for the minimum timeout
            // since their own boot. The replica that leads after a start stands one heartbeat
            // after that minimum (peers that booted up to a heartbeat later grant by then);
            // every other replica's first timeout is three heartbeats later than its draw, so
            // the leader stands first whichever of them booted first.
            let hb = self.cfg.heartbeat_interval_ms;
            if self.cfg.lead_after_start {
                self.election_timeout_ms = self.cfg.election_timeout_min_ms + hb;
            } else {
                self.election_timeout_ms += BOOT_DEFERRAL_HEARTBEATS * hb;
            }
            let mut committed = Vec::new();
            self.log.advance_commit(&mut committed);
            out.committed.extend(committed);
        }
        if matches!(self.role, Role::Primary(_)) {
            self.tick_primary(out);
        } else {
            self.tick_election(out);
        }
    }

    pub(crate) fn on_compact(&mut self, upto: Slot, out: &mut Outputs) {
        let mut upto = upto.min(self.log.applied_upto());
        if self.cfg.compact_wait_for_all_replicas {
            // Keep what a lagging replica still needs, but never more than the byte budget:
            // past it the laggard is served a snapshot instead of an ever-growing log.
            let for_peers = self
                .safe_compact_upto()
                .max(self.log.cut_to_fit(self.cfg.log_retain_bytes));
            upto = upto.min(for_peers);
        }
        self.log.compact(upto, &mut out.released);
    }

    /// Command bytes the in-memory log holds.
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }
}
