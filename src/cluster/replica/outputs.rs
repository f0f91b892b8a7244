//! Carrying out what one step of the core asked for: records to the WAL task, messages to the
//! transport, committed slots to the applier (with this replica's waiting clients
//! attached), read indexes and refusals to their clients, role changes to the shared state.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{refusal, Shell};
use crate::cluster::apply::{ApplyJob, ApplyWork};
use crate::cluster::envelope;
use crate::paxos::{self, Event, Rejection};
use crate::transport::FrameKind;
use crate::wal::WalCmd;

impl Shell {
    /// Carries out everything the core asked for in the last step.
    pub(super) fn carry_out(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        self.garbage.take(&mut out.released);
        for (lsn, rec) in out.persist.drain(..) {
            let _ = self.wal.try_send(WalCmd::Append(lsn, rec));
        }
        // A broadcast is one message for several peers in a row: it is encoded once and its
        // bytes shared (comparing a batch is a pointer compare: the clones share it).
        let mut last: Option<(paxos::Message, Bytes)> = None;
        // Read once, and only by a step that proposed, accepted or chose a slot.
        let mut clock = None;
        let mut now = || *clock.get_or_insert_with(std::time::Instant::now);
        for (to, msg) in out.sends.drain(..) {
            match &msg {
                paxos::Message::Accept { slot, .. } => self.timing.proposed(*slot, now()),
                paxos::Message::Accepted { slot, .. } => {
                    if let Some(d) = self.timing.accepted_sent(*slot, now()) {
                        self.shared.accept.record(d.as_micros() as u64);
                    }
                }
                _ => {}
            }
            let bytes = match &last {
                Some((m, b)) if *m == msg => b.clone(),
                _ => {
                    let mut buf = Vec::new();
                    msg.encode(&mut buf);
                    let b = Bytes::from(buf);
                    last = Some((msg, b.clone()));
                    b
                }
            };
            self.outbound.send(to.0, FrameKind::Paxos, bytes);
        }
        for (slot, value) in out.committed.drain(..) {
            if let Some(d) = self.timing.chosen(slot, now()) {
                self.shared.slot_commit.record(d.as_micros() as u64);
            }
            let commands = value.commands();
            let mut waiting = Vec::new();
            // Only a replica with clients waiting needs to look for its own commands.
            let mine = if !self.waiters.has_writes() {
                &[][..]
            } else {
                commands
            };
            for (i, c) in mine.iter().enumerate() {
                if let Ok((origin, req, _)) = envelope::decode(c) {
                    if origin == self.id && self.waiters.committed(req, slot, i) {
                        waiting.push(i);
                    }
                }
            }
            self.shared.batches.fetch_add(1, Ordering::Relaxed);
            let n = commands.len();
            self.shared.record_slot(n);
            self.shared.commands.fetch_add(n as u64, Ordering::Relaxed);
            self.shared.commit_slot.store(slot.0, Ordering::Relaxed);
            if !self.jobs.send(ApplyWork::Slot(ApplyJob {
                slot,
                value,
                waiting,
            })) {
                tracing::error!(replica = self.id, "the applier is gone");
            }
        }
        for (id, slot) in out.read_ready.drain(..) {
            if let Some((deadline, w)) = self.waiters.take_read(id.0) {
                self.read_at(slot, deadline, w);
            }
        }
        for (id, why) in out.read_rejected.drain(..) {
            if let Some((_, w)) = self.waiters.take_read(id.0) {
                w.send(Err(refusal(why, "reads")));
            }
        }
        for (command, why) in out.proposals_rejected.drain(..) {
            self.reject_proposal(command, why);
        }
        let mut need_snapshot = Vec::new();
        for e in out.events.drain(..) {
            match e {
                Event::BecamePrimary { view } => {
                    tracing::info!(replica = self.id, view = view.0, "became primary");
                    self.shared.view.store(view.0, Ordering::SeqCst);
                    self.shared
                        .primary
                        .store(i64::from(self.id), Ordering::SeqCst);
                    self.shared.is_primary.store(true, Ordering::SeqCst);
                }
                Event::PrimaryChanged { primary } => {
                    let p = primary.map(|r| i64::from(r.0)).unwrap_or(-1);
                    if p != self.shared.primary.load(Ordering::SeqCst) {
                        self.abandon_pending();
                    }
                    self.shared.primary.store(p, Ordering::SeqCst);
                    self.shared
                        .is_primary
                        .store(self.core.is_primary(), Ordering::SeqCst);
                    self.shared
                        .view
                        .store(self.core.promised().0, Ordering::SeqCst);
                }
                Event::NeedSnapshot { from } => need_snapshot.push(from),
                Event::Rebuilt => {
                    tracing::info!(replica = self.id, "rebuilt: this replica votes again");
                    self.shared.amnesiac.store(false, Ordering::SeqCst);
                    self.shared.rebuilds.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = crate::cluster::rebuild::mark_rebuilt(&self.wal_dir) {
                        // Harmless: the replica only stays amnesiac after its next restart.
                        tracing::warn!(replica = self.id, error = %e, "cannot drop the rebuilding marker");
                    }
                }
            }
        }
        self.shared
            .is_primary
            .store(self.core.is_primary(), Ordering::Relaxed);
        self.shared
            .slots_inflight
            .store(self.core.slots_inflight() as u64, Ordering::Relaxed);
        out.clear();
        self.out = out;
        for from in need_snapshot {
            self.on_need_snapshot(from);
        }
    }

    /// A command the core could not replicate: its client, if it waits here, is told why
    /// (the command was not applied, so the client may retry). The core already returned
    /// another replica's commands to their origin.
    fn reject_proposal(&mut self, command: Bytes, why: Rejection) {
        let Ok((origin, req, _)) = envelope::decode(&command) else {
            return;
        };
        if origin != self.id {
            return;
        }
        if let Some(w) = self.waiters.take_write(req) {
            w.send(Err(refusal(why, "proposals")));
        }
    }
}
