//! The shell's linearizable reads: a read waits for its read index (from this replica's core,
//! which asks the primary when it does not lead), then for this replica's store to apply
//! through it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::waiters::ReadWaiter;
use super::{err, Shell};
use crate::paxos::{Input, ReadId, Slot};
use crate::service::ErrorCode;

/// A read on a replica this many slots behind the read index is refused at once.
const READ_LAG_MAX_SLOTS: u64 = 100_000;

impl Shell {
    pub(super) fn start_read(&mut self, reply: ReadWaiter) {
        let deadline = Instant::now() + self.commit_timeout;
        let id = self.waiters.add_read(reply, deadline);
        self.step(Input::ReadIndex { id: ReadId(id) });
    }

    /// Serves `w` once this replica has applied through `slot`; a replica far behind (or
    /// installing a snapshot) refuses at once with a retryable error instead of letting the
    /// client wait for it to catch up.
    pub(super) fn read_at(&mut self, slot: Slot, deadline: Instant, w: ReadWaiter) {
        let behind = slot.0.saturating_sub(self.applied.0);
        if behind > READ_LAG_MAX_SLOTS || (behind > 0 && self.receiving.is_some()) {
            w.send(Err(err(
                ErrorCode::Unavailable,
                format!(
                    "replica {} is {behind} slots behind the primary (catching up); retry, \
                     or read through the primary",
                    self.id
                ),
            )));
            return;
        }
        if self.applied < slot {
            self.waiters
                .waiting_reads
                .entry(slot)
                .or_default()
                .push((deadline, w));
            // Ask the applier for wake-ups, then look again: it may have passed `slot`
            // before it saw the request.
            self.shared.notify_applied.store(true, Ordering::SeqCst);
            self.poll_applied();
        } else {
            w.send(Ok(()));
        }
    }

    /// Takes up apply progress published by the applier.
    pub(super) fn poll_applied(&mut self) {
        let a = Slot(self.shared.applied_slot.load(Ordering::SeqCst));
        if a > self.applied {
            self.applied = a;
            self.step(Input::Applied { upto: a });
            self.release_reads();
        }
    }

    pub(super) fn release_reads(&mut self) {
        while let Some(entry) = self.waiters.waiting_reads.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            for (_, w) in entry.remove() {
                w.send(Ok(()));
            }
        }
        if self.waiters.waiting_reads.is_empty() {
            self.shared.notify_applied.store(false, Ordering::SeqCst);
        }
    }

    /// Reads that waited past `consensus.commit_timeout` (for their index, here or from the
    /// primary, or for this replica's store) get `TIMEOUT` instead of waiting forever.
    pub(super) fn expire_reads(&mut self, now: Instant) {
        for w in self.waiters.expired_reads(now) {
            w.send(Err(err(
                ErrorCode::Timeout,
                "the primary did not confirm the read in time; retry",
            )));
        }
        for waiters in self.waiters.waiting_reads.values_mut() {
            for (_, w) in waiters.extract_if(.., |(d, _)| *d <= now) {
                w.send(Err(err(
                    ErrorCode::Timeout,
                    "this replica did not catch up with the read index in time; retry",
                )));
            }
        }
        self.waiters.waiting_reads.retain(|_, v| !v.is_empty());
    }
}
