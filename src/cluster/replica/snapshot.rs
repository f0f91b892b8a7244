//! Snapshot transfer between replicas, both ends.
//!
//! A replica whose log is behind every peer's log start (down for long, or started on an empty
//! disk) is told so by the core (`Event::NeedSnapshot`). It then pulls a snapshot of the peer's
//! store chunk by chunk: `SnapshotRequest { session, chunk_no, cursor }` → `SnapshotChunk`.
//! One chunk is in flight at a time, each at most `consensus.snapshot_chunk_bytes`, so neither
//! side holds more than a chunk in memory and the transport queue never fills with it. Every
//! chunk goes to the applier (the store's only writer), which writes it and says when; the
//! next request goes out then. The last chunk is flushed before the install counts, then the
//! core learns `SnapshotInstalled` and catches up from the peer's log as usual.
//!
//! The serving side reads from one RocksDB snapshot on a thread of its own (one per peer at
//! most; a new session from the same peer replaces the old one), which exits when the
//! receiver finished or went quiet for `snapshot_timeout`. A receiver that hears nothing for
//! that long drops the session; the core asks again and a new session starts from scratch (the
//! store stays fenced off meanwhile: `storage::install`).

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::mpsc;
use rand::Rng;

use super::Shell;
use crate::cluster::apply::{ApplyWork, InstallStep};
use crate::paxos::{Input, ReplicaId, Slot};
use crate::storage::{SnapshotChunk, SnapshotSource};
use crate::transport::{FrameKind, Inbound};
use crate::util::codec::{put_bytes, put_u64, put_u8, Reader};

/// Limits and handles of the snapshot transfer of one replica.
pub struct SnapshotParams {
    /// This replica's store, read when a peer asks for a snapshot.
    pub db: Arc<rocksdb::DB>,
    pub chunk_bytes: usize,
    pub timeout: Duration,
}

/// A snapshot this replica is receiving.
pub(super) struct Receiving {
    from: u32,
    session: u64,
    next_chunk: u64,
    cursor: Bytes,
    slot: u64,
    started: Instant,
    last_progress: Instant,
    bytes: u64,
    keys: u64,
}

/// A snapshot this replica serves to one peer: the session and its thread's request queue.
pub(super) struct Serving {
    session: u64,
    requests: crossbeam::channel::Sender<(u64, Bytes)>,
}

const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;

fn request_payload(session: u64, chunk_no: u64, cursor: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(20 + cursor.len());
    put_u64(&mut buf, session);
    put_u64(&mut buf, chunk_no);
    put_bytes(&mut buf, cursor);
    Bytes::from(buf)
}

fn refusal_payload(session: u64, chunk_no: u64, why: &str) -> Bytes {
    let mut buf = Vec::new();
    put_u64(&mut buf, session);
    put_u64(&mut buf, chunk_no);
    put_u8(&mut buf, STATUS_REFUSED);
    put_bytes(&mut buf, why.as_bytes());
    Bytes::from(buf)
}

/// Reads `SnapshotSource` chunks on a thread of its own and hands the encoded frames to the
/// replica's executor through `out`.
fn spawn_server(
    db: Arc<rocksdb::DB>,
    peer: u32,
    session: u64,
    chunk_bytes: usize,
    idle: Duration,
    out: mpsc::UnboundedSender<(u32, Bytes)>,
) -> std::io::Result<crossbeam::channel::Sender<(u64, Bytes)>> {
    let (tx, rx) = crossbeam::channel::bounded::<(u64, Bytes)>(4);
    std::thread::Builder::new()
        .name(format!("paxoskv-snapshot-{peer}"))
        .spawn(move || {
            let source = SnapshotSource::new(db);
            let chunk_no = Cell::new(0u64);
            let finished = Cell::new(false);
            source.serve(
                chunk_bytes,
                || {
                    if finished.get() {
                        return None;
                    }
                    let (no, cursor) = rx.recv_timeout(idle).ok()?;
                    chunk_no.set(no);
                    Some(cursor)
                },
                |chunk| {
                    let payload = match chunk {
                        Ok(c) => {
                            finished.set(c.done);
                            let mut buf = Vec::with_capacity(c.pairs.len() + 64);
                            put_u64(&mut buf, session);
                            put_u64(&mut buf, chunk_no.get());
                            put_u8(&mut buf, STATUS_OK);
                            c.encode(&mut buf);
                            Bytes::from(buf)
                        }
                        Err(e) => {
                            finished.set(true);
                            refusal_payload(session, chunk_no.get(), &e.to_string())
                        }
                    };
                    let _ = out.unbounded_send((peer, payload));
                },
            );
        })?;
    Ok(tx)
}

impl Shell {
    /// A peer truncated slots this replica's log lacks. After a restart the log starts below
    /// what the store applied (to serve lagging peers), so the store itself is often the
    /// snapshot: skip the core ahead to what RocksDB already holds. Only when the peer
    /// truncated past that does a snapshot come over the wire (`snapshot.rs`).
    pub(super) fn on_need_snapshot(&mut self, from: ReplicaId) {
        let store = (self.store_applied).max(Slot(self.shared.applied_slot.load(Ordering::SeqCst)));
        if store > self.core.commit_upto() {
            tracing::info!(
                replica = self.id,
                from = from.0,
                upto = store.0,
                "peer truncated its log; the local store covers it"
            );
            self.applied = self.applied.max(store);
            self.step(Input::SnapshotInstalled { upto: store });
        } else {
            self.start_snapshot_install(from);
        }
    }

    /// The core says this replica needs a snapshot from `from`.
    pub(super) fn start_snapshot_install(&mut self, from: ReplicaId) {
        if let Some(r) = &self.receiving {
            if r.last_progress.elapsed() < self.snapshot.timeout {
                return;
            }
            tracing::warn!(
                replica = self.id,
                from = r.from,
                "snapshot transfer stalled; starting over"
            );
        }
        let session = self.rng.gen::<u64>() | 1;
        let now = Instant::now();
        tracing::info!(
            replica = self.id,
            from = from.0,
            commit = self.core.commit_upto().0,
            "this replica lags behind every peer's log: fetching a snapshot"
        );
        self.receiving = Some(Receiving {
            from: from.0,
            session,
            next_chunk: 0,
            cursor: Bytes::new(),
            slot: 0,
            started: now,
            last_progress: now,
            bytes: 0,
            keys: 0,
        });
        self.outbound.send(
            from.0,
            FrameKind::SnapshotRequest,
            request_payload(session, 0, &[]),
        );
    }

    /// A peer asks this replica for (the next chunk of) a snapshot.
    pub(super) fn on_snapshot_request(&mut self, m: &Inbound) {
        let mut r = Reader::new(&m.payload);
        let (Ok(session), Ok(chunk_no), Ok(cursor)) = (r.u64(), r.u64(), r.bytes()) else {
            tracing::warn!(
                replica = self.id,
                from = m.from,
                "undecodable snapshot request"
            );
            return;
        };
        let refuse = |s: &mut Shell, why: &str| {
            let p = refusal_payload(session, chunk_no, why);
            s.outbound.send(m.from, FrameKind::SnapshotChunk, p);
        };
        if self.receiving.is_some() {
            return refuse(self, "this replica is installing a snapshot itself");
        }
        if chunk_no == 0 {
            // A new session replaces any earlier one of this peer (its thread then exits).
            self.serving.remove(&m.from);
            match spawn_server(
                self.snapshot.db.clone(),
                m.from,
                session,
                self.snapshot.chunk_bytes,
                self.snapshot.timeout,
                self.snapshot_out.clone(),
            ) {
                Ok(requests) => {
                    tracing::info!(replica = self.id, to = m.from, "serving a snapshot");
                    self.shared.snapshots_served.fetch_add(1, Ordering::Relaxed);
                    self.serving.insert(m.from, Serving { session, requests });
                }
                Err(e) => return refuse(self, &format!("cannot start a snapshot thread: {e}")),
            }
        }
        match self.serving.get(&m.from) {
            Some(s) if s.session == session => {
                if s.requests.try_send((chunk_no, cursor)).is_err() {
                    self.serving.remove(&m.from);
                    refuse(self, "snapshot session ended; start again");
                }
            }
            _ => refuse(self, "unknown snapshot session; start again"),
        }
    }

    /// A chunk (or a refusal) of the snapshot this replica is receiving.
    pub(super) fn on_snapshot_chunk(&mut self, m: &Inbound) {
        let mut r = Reader::over(&m.payload);
        let (Ok(session), Ok(chunk_no), Ok(status)) = (r.u64(), r.u64(), r.u8()) else {
            tracing::warn!(
                replica = self.id,
                from = m.from,
                "undecodable snapshot chunk"
            );
            return;
        };
        let commit = self.core.commit_upto().0;
        let Some(rx) = self.receiving.as_mut() else {
            return;
        };
        if rx.session != session || rx.from != m.from || rx.next_chunk != chunk_no {
            return;
        }
        if status != STATUS_OK {
            let why = r.bytes().map(|b| String::from_utf8_lossy(&b).into_owned());
            tracing::warn!(replica = self.id, from = m.from, why = ?why, "peer refused the snapshot; will ask again");
            self.receiving = None;
            return;
        }
        let chunk = match SnapshotChunk::decode(&mut r) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(replica = self.id, from = m.from, error = %e, "bad snapshot chunk; will ask again");
                self.receiving = None;
                return;
            }
        };
        if chunk_no == 0 {
            if chunk.slot <= commit {
                // Nothing to gain (the log moved on meanwhile): keep the store as it is.
                tracing::info!(
                    replica = self.id,
                    slot = chunk.slot,
                    commit,
                    "snapshot is not ahead of this replica; dropped"
                );
                self.receiving = None;
                return;
            }
            rx.slot = chunk.slot;
        } else if chunk.slot != rx.slot {
            tracing::warn!(
                replica = self.id,
                "snapshot changed position mid-transfer; will ask again"
            );
            self.receiving = None;
            return;
        }
        rx.next_chunk += 1;
        rx.cursor = chunk.cursor.clone();
        rx.bytes += chunk.pairs.len() as u64;
        rx.keys += u64::from(chunk.count);
        rx.last_progress = Instant::now();
        let step = InstallStep {
            session,
            first: chunk_no == 0,
            chunk,
        };
        if !self.jobs.send(ApplyWork::Install(step)) {
            tracing::error!(replica = self.id, "the applier is gone");
        }
    }

    /// The applier wrote a chunk of `session`: ask for the next, or finish.
    pub(super) fn on_install_progress(&mut self, session: u64, installed: Option<u64>) {
        let Some(rx) = self.receiving.as_mut() else {
            return;
        };
        if rx.session != session {
            return;
        }
        rx.last_progress = Instant::now();
        let Some(slot) = installed else {
            let p = request_payload(session, rx.next_chunk, &rx.cursor);
            let from = rx.from;
            self.outbound.send(from, FrameKind::SnapshotRequest, p);
            return;
        };
        tracing::info!(
            replica = self.id,
            from = rx.from,
            slot,
            keys = rx.keys,
            bytes = rx.bytes,
            chunks = rx.next_chunk,
            seconds = rx.started.elapsed().as_secs_f64(),
            "snapshot installed"
        );
        self.receiving = None;
        self.shared
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        self.applied = self.applied.max(Slot(slot));
        self.store_applied = self.store_applied.max(Slot(slot));
        self.step(Input::SnapshotInstalled { upto: Slot(slot) });
        self.step(Input::Applied { upto: self.applied });
        self.release_reads();
    }

    /// Housekeeping: a transfer that made no progress for twice the timeout is dropped (the
    /// core asks again). Serving threads end by themselves; at most one per peer exists.
    pub(super) fn expire_snapshot_sessions(&mut self) {
        if self
            .receiving
            .as_ref()
            .is_some_and(|r| r.last_progress.elapsed() >= self.snapshot.timeout * 2)
        {
            tracing::warn!(
                replica = self.id,
                "snapshot transfer made no progress; dropped"
            );
            self.receiving = None;
        }
    }
}
