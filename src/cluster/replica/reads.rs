//! The shell's linearizable reads: a read waits for its ReadIndex round (here or, forwarded,
//! at the primary), then for this replica's store to apply through the read index.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{err, ReadWaiter, Shell};
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
                let id = self.next_read;
                self.next_read += 1;
                self.forwarded_reads.insert(id, reply);
                self.outbound.send(
                    p.0,
                    FrameKind::ReadIndexRequest,
                    Bytes::copy_from_slice(&id.to_le_bytes()),
                );
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
                let _ = reply.send(Err(e));
            }
            (ReadWaiter::Remote { from, id }, _) => {
                let mut p = id.to_le_bytes().to_vec();
                p.push(0);
                p.extend_from_slice(&0u64.to_le_bytes());
                self.outbound
                    .send(from, FrameKind::ReadIndexResponse, Bytes::from(p));
            }
        }
    }

    /// Serves `w` once this replica has applied through `slot`.
    pub(super) fn read_at(&mut self, slot: u64, w: ReadWaiter) {
        if self.applied < slot {
            self.waiting_reads.entry(slot).or_default().push(w);
            // Ask the apply thread for wake-ups, then look again: it may have passed `slot`
            // before it saw the request.
            self.shared.notify_applied.store(true, Ordering::SeqCst);
            self.poll_applied();
        } else if let ReadWaiter::Local(r) = w {
            let _ = r.send(Ok(()));
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
        while let Some(entry) = self.waiting_reads.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            for w in entry.remove() {
                if let ReadWaiter::Local(r) = w {
                    let _ = r.send(Ok(()));
                }
            }
        }
        if self.waiting_reads.is_empty() {
            self.shared.notify_applied.store(false, Ordering::SeqCst);
        }
    }
}
