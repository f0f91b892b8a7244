//! Node mode: a replica that does not lead passes its clients' commands and linearizable reads
//! to the primary it knows, as protocol messages (`Forward`, `ReadIndexRequest`), so the
//! simulator drives forwarding like any other part of the protocol.
//!
//! Owns: the `impl Replica` handlers for client commands and forwarded work. Must not: answer
//! clients (the shell does, from `proposals_rejected`, `read_ready` and `read_rejected`) or
//! retry (a refused command goes back to its origin, whose clients may retry). Invariants:
//! every command this replica queued carries its origin, and a command the replica cannot
//! take is refused to that origin exactly once (`proposals_rejected` here, `ForwardRefused`
//! there); a forwarded command is never forwarded again (no routing loops); a peer's read
//! is answered at most once, with an index from a round that started after it arrived.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::io::{Outputs, Rejection};
use super::message::Message;
use super::replica::Replica;
use super::state::{Reader, Role};
use super::types::{ReadId, ReplicaId, Slot};

impl Replica {
    /// True when this replica leads and is not handing its role away: it takes new work.
    fn takes_work(&self) -> bool {
        matches!(&self.role, Role::Primary(p) if p.transfer.is_none())
    }

    /// Where this replica's refusals point its clients: a transfer's target, or the primary
    /// it knows.
    fn primary_hint(&self) -> Option<ReplicaId> {
        match &self.role {
            Role::Primary(p) => p.transfer.map(|(to, _)| to),
            _ => self.known_primary.filter(|p| *p != self.me),
        }
    }

    /// The primary a replica that does not lead passes its clients' work to, if it knows one.
    fn forward_target(&self) -> Option<ReplicaId> {
        self.primary_hint().filter(|_| !self.is_primary())
    }

    /// This replica's own clients' commands (`Input::Propose` / `ProposeBatch`).
    pub(crate) fn on_client_commands(&mut self, commands: Vec<Bytes>, out: &mut Outputs) {
        if commands.is_empty() {
            return;
        }
        let me = self.me;
        if self.takes_work() {
            self.enqueue(me, commands, out);
        } else if let Some(p) = self.forward_target() {
            self.send(p, Message::Forward { commands }, out);
        } else {
            let why = Rejection::NotPrimary {
                primary_hint: self.primary_hint(),
            };
            self.refuse(me, commands, why, out);
        }
    }

    pub(crate) fn on_forward(&mut self, from: ReplicaId, commands: Vec<Bytes>, out: &mut Outputs) {
        if self.takes_work() {
            self.enqueue(from, commands, out);
        } else {
            let why = Rejection::NotPrimary { primary_hint: None };
            self.refuse(from, commands, why, out);
        }
    }

    pub(crate) fn on_forward_refused(
        &mut self,
        commands: Vec<Bytes>,
        overloaded: bool,
        out: &mut Outputs,
    ) {
        let why = if overloaded {
            Rejection::Overloaded
        } else {
            Rejection::NotPrimary {
                primary_hint: self.primary_hint(),
            }
        };
        for c in commands {
            out.proposals_rejected.push((c, why.clone()));
        }
    }

    /// Refuses commands whose clients wait at `origin`: to the shell if that is this replica,
    /// else back to the origin in one message.
    pub(crate) fn refuse(
        &mut self,
        origin: ReplicaId,
        commands: Vec<Bytes>,
        why: Rejection,
        out: &mut Outputs,
    ) {
        if origin == self.me {
            out.proposals_rejected
                .extend(commands.into_iter().map(|c| (c, why.clone())));
        } else if !commands.is_empty() {
            let overloaded = why == Rejection::Overloaded;
            self.send(
                origin,
                Message::ForwardRefused {
                    commands,
                    overloaded,
                },
                out,
            );
        }
    }

    /// Refuses every command of a primary's queue (it stepped down or hands its role away).
    pub(crate) fn refuse_queued(
        &mut self,
        queue: VecDeque<(ReplicaId, Bytes)>,
        why: Rejection,
        out: &mut Outputs,
    ) {
        let mut by_origin: BTreeMap<ReplicaId, Vec<Bytes>> = BTreeMap::new();
        for (origin, c) in queue {
            by_origin.entry(origin).or_default().push(c);
        }
        for (origin, commands) in by_origin {
            self.refuse(origin, commands, why.clone(), out);
        }
    }

    /// A linearizable read of this replica's client (`Input::ReadIndex`).
    pub(crate) fn on_read_index(&mut self, id: ReadId, out: &mut Outputs) {
        if self.is_primary() {
            self.read_for(Reader::Local(id), out);
        } else if let Some(p) = self.forward_target() {
            self.send(p, Message::ReadIndexRequest { id }, out);
        } else {
            let why = Rejection::NotPrimary {
                primary_hint: self.primary_hint(),
            };
            out.read_rejected.push((id, why));
        }
    }

    pub(crate) fn on_read_index_request(&mut self, from: ReplicaId, id: ReadId, out: &mut Outputs) {
        let reader = Reader::Peer(from, id);
        if self.is_primary() {
            self.read_for(reader, out);
        } else {
            reader.answer(Err(Rejection::NotPrimary { primary_hint: None }), out);
        }
    }

    pub(crate) fn on_read_index_reply(
        &mut self,
        id: ReadId,
        read_index: Option<Slot>,
        out: &mut Outputs,
    ) {
        match read_index {
            Some(slot) => out.read_ready.push((id, slot)),
            None => {
                let why = Rejection::NotPrimary { primary_hint: None };
                out.read_rejected.push((id, why));
            }
        }
    }
}
