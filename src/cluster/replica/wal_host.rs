//! The WAL task's host in a replica: its events go into the shell's event channel, its
//! counters into the replica's shared state (for /metrics), its test faults come from there.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use glommio::channels::local_channel::LocalSender;

use super::Ev;
use crate::cluster::shared::ReplicaShared;
use crate::wal::{WalEvent, WalHost, WalStats};

pub(super) struct ShellWal {
    pub(super) ev: Rc<LocalSender<Ev>>,
    pub(super) shared: Arc<ReplicaShared>,
}

impl WalHost for ShellWal {
    fn id(&self) -> u32 {
        self.shared.id
    }

    async fn report(&self, e: WalEvent) -> bool {
        let ev = match e {
            WalEvent::Durable(l) => Ev::Durable(l),
            WalEvent::Fatal(m) => Ev::Fatal(crate::error::Error::WalStopped(m)),
        };
        self.ev.send(ev).await.is_ok()
    }

    fn synced(&self, stats: &WalStats, bytes: u64) {
        let s = &self.shared;
        s.wal_syncs.store(stats.syncs, Ordering::Relaxed);
        s.wal_sync_us_total
            .store(stats.sync_us_total, Ordering::Relaxed);
        s.wal_sync.record(stats.last_sync_us);
        s.wal_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn take_append_fault(&self) -> bool {
        ReplicaShared::take_fault(&self.shared.inject_wal_append_failure)
    }

    fn take_sync_fault(&self) -> bool {
        ReplicaShared::take_fault(&self.shared.inject_wal_failure)
    }
}
