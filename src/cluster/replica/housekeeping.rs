//! The shell's periodic work and its endings: commit timeouts, log and WAL compaction, expiring
//! reads and snapshot sessions, and answering every waiting client when the primary changes
//! or the replica stops.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{err, Shell, WalCmd, COMPACT_EVERY, HOUSEKEEPING_EVERY};
use crate::paxos::{Input, Slot};
use crate::service::ErrorCode;

impl Shell {
    pub(super) fn housekeeping(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_housekeeping) < HOUSEKEEPING_EVERY {
            return;
        }
        self.last_housekeeping = now;
        for w in self.waiters.expired_writes(now) {
            w.send(Err(err(
                ErrorCode::Timeout,
                "not committed within its timeout (the call's timeout_seconds, else \
                 consensus.commit_timeout); the write may or may not apply",
            )));
        }
        self.expire_snapshot_sessions();
        self.expire_reads(now);
        self.shared
            .log_bytes
            .store(self.core.log_bytes(), Ordering::Relaxed);
        self.shared
            .log_start
            .store(self.core.log_start().0, Ordering::Relaxed);
        if now.duration_since(self.last_compact) >= COMPACT_EVERY {
            self.last_compact = now;
            // The store is durable through `durable`; the core cuts its log there or lower
            // (what lagging peers still need, within `consensus.log_retain_bytes`), and the
            // WAL keeps what the core kept.
            let durable = Slot(self.shared.durable_slot.load(Ordering::SeqCst));
            if durable > self.compacted {
                self.step(Input::Compact { upto: durable });
                let target = self.core.log_start().prev().min(durable);
                tracing::debug!(
                    replica = self.id,
                    durable = durable.0,
                    safe = self.core.safe_compact_upto().0,
                    target = target.0,
                    "compaction check"
                );
                if target > self.compacted {
                    self.compacted = target;
                    let _ = self.wal.try_send(WalCmd::Retain(target));
                }
            }
        }
    }

    /// The primary changed: commands sent to the old one may or may not commit, and nobody
    /// will tell this replica which. Their clients get an immediate, honest "unknown" instead
    /// of waiting for `commit_timeout`; if such a command does commit, it applies as usual.
    pub(super) fn abandon_pending(&mut self) {
        for w in self.waiters.drain_writes() {
            w.send(Err(err(
                ErrorCode::Timeout,
                "the primary changed before this write committed; it may or may not apply",
            )));
        }
    }
}
