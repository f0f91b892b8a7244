//! A replica's WAL task (group commit): appends what the Paxos core asked to persist, makes
//! each group durable with one write (O_DSYNC) or write + fdatasync, reports `WalEvent::Durable`
//! to its host (the replica shell), and drops segments below the slot the host says may go. A
//! failed write or sync is fatal: it reports `WalEvent::Fatal` and stops, never retrying.
//!
//! Owns: which records a segment cut may drop (a segment is kept while it may hold an accept
//! above the retained slot, and the promise is re-written into each new segment). Must not:
//! interpret records beyond their ballot and slot.

use std::collections::VecDeque;
use std::future::Future;

use futures_lite::future::poll_once;
use glommio::channels::local_channel::LocalReceiver;

use super::{Lsn as WalLsn, Wal, WalStats};
use crate::paxos::{self, Record, Slot};

/// What the host asks of the task.
pub enum WalCmd {
    /// Persist this record (LSNs as the core numbered them).
    Append(paxos::Lsn, Record),
    /// Segments holding only slots at or below this one may be deleted.
    Retain(Slot),
}

/// What the task tells its host.
#[derive(Debug)]
pub enum WalEvent {
    /// Everything through this LSN is durable.
    Durable(paxos::Lsn),
    /// A write or sync failed; the task has stopped.
    Fatal(String),
}

/// The task's host: where its events go, its counters, and the test hooks that fail it.
pub trait WalHost {
    /// The replica id, for logs.
    fn id(&self) -> u32;
    /// Delivers an event; false when the host is gone (the task then stops).
    fn report(&self, e: WalEvent) -> impl Future<Output = bool>;
    /// After each group sync: the WAL's counters and the bytes this group wrote.
    fn synced(&self, stats: &WalStats, bytes: u64);
    /// Injected failures (tests): fail the next append / the next sync.
    fn take_append_fault(&self) -> bool {
        false
    }
    fn take_sync_fault(&self) -> bool {
        false
    }
}

/// Owns the WAL: appends what the core asked to persist, syncs once per group, reports back.
pub async fn run_wal<H: WalHost>(
    mut wal: Wal,
    rx: LocalReceiver<WalCmd>,
    host: H,
    mut promised: paxos::Ballot,
    recovered_max_slot: Slot,
) {
    let mut buf = Vec::with_capacity(64 << 10);
    // (last wal lsn of a sync group, highest slot accepted in or before it)
    let mut groups: VecDeque<(WalLsn, Slot)> = VecDeque::new();
    // Starts at the highest slot accepted in the recovered segments: a group written after a
    // restart (say, a lone Promise) must not let a cut drop older segments holding accepts.
    let mut max_slot = recovered_max_slot;
    // The wal lsn of the latest re-written promise that is durable; segments before it may go.
    let mut promise_safe = wal.next_lsn();
    let mut segments = wal.segment_count();
    while let Some(first) = rx.recv().await {
        let mut upto: Option<paxos::Lsn> = None;
        let mut retain: Option<Slot> = None;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                WalCmd::Append(lsn, rec) => {
                    match &rec {
                        Record::Promise { ballot } => promised = promised.max(*ballot),
                        Record::Accept { slot, ballot, .. } => {
                            promised = promised.max(*ballot);
                            max_slot = max_slot.max(*slot);
                        }
                    }
                    buf.clear();
                    rec.encode(&mut buf);
                    if host.take_append_fault() {
                        let e = "No space left on device (os error 28, injected)";
                        host.report(WalEvent::Fatal(format!("wal append: {e}")))
                            .await;
                        return;
                    }
                    if let Err(e) = wal.append(&buf) {
                        host.report(WalEvent::Fatal(format!("wal append: {e}")))
                            .await;
                        return;
                    }
                    upto = Some(lsn);
                }
                WalCmd::Retain(s) => retain = Some(s),
            }
            next = match poll_once(rx.recv()).await {
                Some(Some(c)) => Some(c),
                Some(None) => None,
                None => None,
            };
        }
        if wal.has_pending() {
            let written_before = wal.stats.bytes_written;
            if host.take_sync_fault() {
                // A failed fsync is never retried: the replica stops, its data untouched.
                host.report(WalEvent::Fatal("wal sync: injected failure".into()))
                    .await;
                return;
            }
            match wal.sync().await {
                Ok(l) => groups.push_back((l, max_slot)),
                Err(e) => {
                    host.report(WalEvent::Fatal(format!("wal sync: {e}"))).await;
                    return;
                }
            }
            host.synced(&wal.stats, wal.stats.bytes_written - written_before);
            if wal.segment_count() != segments {
                // A new segment: re-write the promise into it so older segments can be deleted.
                segments = wal.segment_count();
                buf.clear();
                Record::Promise { ballot: promised }.encode(&mut buf);
                let rewritten = wal.append(&buf);
                match (rewritten, wal.sync().await) {
                    (Ok(l), Ok(_)) => promise_safe = l,
                    (Err(e), _) => {
                        host.report(WalEvent::Fatal(format!("wal append: {e}")))
                            .await;
                        return;
                    }
                    (_, Err(e)) => {
                        host.report(WalEvent::Fatal(format!("wal sync: {e}"))).await;
                        return;
                    }
                }
            }
        }
        if let Some(u) = upto {
            if !host.report(WalEvent::Durable(u)).await {
                return;
            }
        }
        if let Some(target) = retain {
            // Keep every group that may hold an accept above the retained slot.
            let mut cut: Option<WalLsn> = None;
            while let Some(&(l, s)) = groups.front() {
                if s > target || l >= promise_safe {
                    break;
                }
                cut = Some(WalLsn(l.0 + 1));
                groups.pop_front();
            }
            if let Some(c) = cut {
                match wal.remove_before(c) {
                    Ok(n) if n > 0 => {
                        tracing::debug!(replica = host.id(), removed = n, "wal segments removed")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(replica = host.id(), error = %e, "wal segment removal failed")
                    }
                }
            }
        }
    }
    let _ = wal.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::{Ballot, Batch, Value};
    use glommio::channels::local_channel::{self, LocalSender};

    /// Events into a channel; no counters, no faults.
    struct TestHost(LocalSender<WalEvent>);

    impl WalHost for TestHost {
        fn id(&self) -> u32 {
            0
        }
        async fn report(&self, e: WalEvent) -> bool {
            self.0.send(e).await.is_ok()
        }
        fn synced(&self, _: &WalStats, _: u64) {}
    }

    const SEGMENT: u64 = 8 << 10;

    fn accept(slot: u64) -> Vec<u8> {
        let value = Value::Batch(Batch::new(vec![bytes::Bytes::from(vec![b'v'; 100])]));
        let mut buf = Vec::new();
        Record::Accept {
            slot: Slot(slot),
            ballot: Ballot(1),
            value,
        }
        .encode(&mut buf);
        buf
    }

    /// The slots of the Accept records a WAL in `dir` holds.
    async fn accepted_slots(dir: &std::path::Path) -> Vec<u64> {
        let (wal, records) = Wal::open(dir, SEGMENT, false).await.unwrap();
        let _ = wal.close().await;
        records
            .iter()
            .filter_map(|(_, b)| match Record::decode(b) {
                Ok(Record::Accept { slot, .. }) => Some(slot.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_first_group_after_a_restart_cannot_cut_segments_holding_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                // Before the restart: accepts for slots 1..=200 over several segments.
                let (mut wal, _) = Wal::open(&d, SEGMENT, false).await.unwrap();
                for s in 1..=200 {
                    wal.append(&accept(s)).unwrap();
                }
                wal.sync().await.unwrap();
                wal.close().await.unwrap();
                let before = accepted_slots(&d).await;
                assert_eq!(before.len(), 200);

                // After it: the store covers only slot 5; the task sees a Promise-only group,
                // then enough records to rotate (which rewrites the promise), then a cut.
                let (wal, _) = Wal::open(&d, SEGMENT, false).await.unwrap();
                let first = wal.next_lsn().0;
                let (tx, rx) = local_channel::new_unbounded::<WalCmd>();
                let (ev_tx, ev_rx) = local_channel::new_unbounded::<WalEvent>();
                let task =
                    glommio::spawn_local(run_wal(wal, rx, TestHost(ev_tx), Ballot(1), Slot(200)));
                let mut lsn = first;
                let mut send = |rec: Record| {
                    let cmd = WalCmd::Append(paxos::Lsn(lsn), rec);
                    lsn += 1;
                    cmd
                };
                let _ = tx.try_send(send(Record::Promise { ballot: Ballot(2) }));
                let _ = ev_rx.recv().await;
                for _ in 0..400 {
                    let _ = tx.try_send(send(Record::Promise { ballot: Ballot(2) }));
                }
                let _ = ev_rx.recv().await;
                let _ = tx.try_send(WalCmd::Retain(Slot(5)));
                let _ = tx.try_send(send(Record::Promise { ballot: Ballot(2) }));
                let _ = ev_rx.recv().await;
                drop(tx);
                task.await;
                let after = accepted_slots(&d).await;
                assert!(
                    (6..=200).all(|s| after.contains(&s)),
                    "accepts above the cut were dropped: {} of 195 kept",
                    after.iter().filter(|s| **s > 5).count()
                );
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
