//! The shell's linearizable reads: a read waits for its ReadIndex round (here or, forwarded,
//! at the primary), then for this replica's store to apply through the read index.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{err, ReadWaiter, Shell};
use crate::cluster::read_forward::{ReadIndexRequest, ReadIndexResponse};
use crate::paxos::{Input, Rejection, Slot};
use crate::service::ErrorCode;
use crate::transport::FrameKind;

impl Shell {
    pub(super) fn reject_read(&mut self, w: ReadWaiter, why: Rejection) {
        match (w, why) {
            (
                ReadWaiter::Local(reply),
                Rejection::NotPrimary {
                    primary_hint: Some(p),
                },
            ) if p.0 != self.id => {
                let deadline = Instant::now() + self.commit_timeout;
                let id = self.waiters.add_forwarded((deadline, reply));
                let q = ReadIndexRequest { id };
                self.outbound
                    .send(p.0, FrameKind::ReadIndexRequest, q.encode());
            }
            (ReadWaiter::Local(reply), why) => {
                let e = match why {
                    Rejection::Overloaded => {
                        err(ErrorCode::Unavailable, "too many reads waiting; retry")
                    }
                    Rejection::NotPrimary { .. } => {
                        err(ErrorCode::NotPrimary, "no primary right now; retry")
                    }
                };
                reply.send(Err(e));
            }
            (ReadWaiter::Remote { from, id }, _) => {
                let a = ReadIndexResponse {
                    id,
                    read_index: None,
                };
                self.outbound
                    .send(from, FrameKind::ReadIndexResponse, a.encode());
            }
        }
    }

    /// Serves `w` once this replica has applied through `slot`; a replica far behind (or
    /// installing a snapshot) refuses at once with a retryable error instead of letting the
    /// client wait for it to catch up.
    pub(super) fn read_at(&mut self, slot: u64, w: ReadWaiter) {
        let behind = slot.saturating_sub(self.applied);
        if behind > READ_LAG_MAX_SLOTS || (behind > 0 && self.receiving.is_some()) {
            if let ReadWaiter::Local(r) = w {
                r.send(Err(err(
                    ErrorCode::Unavailable,
                    format!(
                        "replica {} is {behind} slots behind the primary (catching up); retry, \
                         or read through the primary",
                        self.id
                    ),
                )));
            }
            return;
        }
        if self.applied < slot {
            let deadline = Instant::now() + self.commit_timeout;
            self.waiters
                .waiting_reads
                .entry(slot)
                .or_default()
                .push((deadline, w));
            // Ask the apply thread for wake-ups, then look again: it may have passed `slot`
            // before it saw the request.
            self.shared.notify_applied.store(true, Ordering::SeqCst);
            self.poll_applied();
        } else if let ReadWaiter::Local(r) = w {
            r.send(Ok(()));
        }
    }

    /// Takes up apply progress published by the apply thread.
    pub(super) fn poll_applied(&mut self) {
        let a = self.shared.applied_slot.load(Ordering::SeqCst);
        if a > self.applied {
            self.applied = a;
            self.step(Input::Applied { upto: Slot(a) });
            self.release_reads();
        }
    }

    pub(super) fn release_reads(&mut self) {
        while let Some(entry) = self.waiters.waiting_reads.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            for (_, w) in entry.remove() {
                if let ReadWaiter::Local(r) = w {
                    r.send(Ok(()));
                }
            }
        }
        if self.waiters.waiting_reads.is_empty() {
            self.shared.notify_applied.store(false, Ordering::SeqCst);
        }
    }

    /// Reads that waited past `consensus.commit_timeout` (for the primary's answer or for
    /// this replica's store) get `TIMEOUT` instead of waiting forever.
    pub(super) fn expire_reads(&mut self, now: Instant) {
        let expired = |d: &Instant| *d <= now;
        let lost: Vec<u64> = self
            .waiters
            .forwarded_reads
            .iter()
            .filter(|(_, (d, _))| expired(d))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some((_, r)) = self.waiters.take_forwarded(id) {
                r.send(Err(err(
                    ErrorCode::Timeout,
                    "the primary did not confirm the read in time; retry",
                )));
            }
        }
        for waiters in self.waiters.waiting_reads.values_mut() {
            for (_, w) in waiters.extract_if(.., |(d, _)| expired(d)) {
                if let ReadWaiter::Local(r) = w {
                    r.send(Err(err(
                        ErrorCode::Timeout,
                        "this replica did not catch up with the read index in time; retry",
                    )));
                }
            }
        }
        self.waiters.waiting_reads.retain(|_, v| !v.is_empty());
    }
}

/// A read on a replica this many slots behind the read index is refused at once.
const READ_LAG_MAX_SLOTS: u64 = 100_000;
