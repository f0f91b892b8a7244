//! One replica's shell: a glommio executor that turns real events into inputs for the Paxos
//! core and carries out its outputs. It makes no protocol decisions.
//!
//! Events (peer frames, client requests from the front, ticks, WAL durability, apply progress)
//! arrive on one local inbox. Each turn handles everything ready, then the outputs go out:
//! records to the WAL task (group commit: one fdatasync for everything that arrived while the
//! previous one ran, then `Durable` comes back as an event and the core releases the replies
//! that waited for it), messages to the transport, committed slots to the apply thread with
//! the waiting clients attached, reads to their callers once applied.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::mpsc;
use futures_lite::future::poll_once;
use futures_lite::StreamExt;
use glommio::channels::local_channel::{self, LocalSender};
use rand::{Rng, SeedableRng};

mod housekeeping;
mod reads;
mod snapshot;
mod waiters;
mod wal_host;

pub use snapshot::SnapshotParams;

use super::apply::{Applied, ApplyJob, ApplyWork, Waiter};
use super::envelope;
use super::read_forward::{ReadIndexRequest, ReadIndexResponse};
use super::shared::ReplicaShared;
use crate::paxos::{
    self, DurableState, Event, Input, Outputs, ReadId, Record, Rejection, ReplicaId, Slot,
};
use crate::service::{ErrorCode, ServiceError};
use crate::transport::{self, FrameKind, Inbound, Outbound, TransportConfig};
use crate::util::reply::Reply;
use crate::wal::Wal;
use crate::wal::{run_wal, WalCmd};

/// How long a stopping primary lets the transport deliver its leadership hand-off.
const HANDOFF_GRACE: Duration = Duration::from_millis(100);

/// What the front (or a library user) asks of a replica.
pub enum ClientMsg {
    /// Replicate an encoded `txn::Command`; the outcome goes to `reply` once applied here, or
    /// `TIMEOUT` after `timeout` (`consensus.commit_timeout` when `None`).
    Propose {
        command: Bytes,
        reply: Waiter,
        timeout: Option<Duration>,
    },
    /// Resolves once a linearizable read may be served from this replica's store.
    Read {
        reply: Reply<Result<(), ServiceError>>,
    },
    /// Hand leadership away and stop.
    Shutdown,
}

pub(super) enum Ev {
    Peer(Inbound),
    Client(ClientMsg),
    Tick,
    Durable(paxos::Lsn),
    Applied(Applied),
    /// A chunk (or refusal) this replica's snapshot thread produced for a peer.
    SnapshotOut((u32, Bytes)),
    Fatal(String),
}

/// A read waiting for its ReadIndex round and then for the store to catch up.
enum ReadWaiter {
    Local(Reply<Result<(), ServiceError>>),
    Remote { from: u32, id: u64 },
}

/// The finest clock granularity of the core. The tick is the heartbeat interval (100 ms by
/// default; heartbeats go out on every tick, election timeouts are several ticks long), but no
/// finer than this: every wake-up of an idle executor costs a context switch and a
/// process-wide memory barrier, so fewer ticks keep an idle cluster near zero CPU.
const TICK_MIN: Duration = Duration::from_millis(10);
const DRAIN_EVENTS_MAX: usize = 4096;
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(100);
/// How often the log and the WAL are cut (cheap: the core walks only what goes).
const COMPACT_EVERY: Duration = Duration::from_millis(100);

pub struct ReplicaParams {
    pub id: u32,
    pub paxos: paxos::PaxosConfig,
    pub transport: TransportConfig,
    pub listener: std::net::TcpListener,
    pub wal_dir: std::path::PathBuf,
    pub wal_segment_bytes: u64,
    pub wal_dsync: bool,
    pub commit_timeout: Duration,
    pub max_apply_lag_slots: u64,
    pub applied_slot: u64,
    pub jobs: crossbeam::channel::Sender<ApplyWork>,
    pub snapshot: SnapshotParams,
    pub applied_rx: mpsc::UnboundedReceiver<Applied>,
    pub client_rx: mpsc::UnboundedReceiver<ClientMsg>,
    pub shared: Arc<ReplicaShared>,
}

/// Runs the replica until shutdown or a fatal error.
pub async fn run_replica(p: ReplicaParams) -> Result<(), String> {
    let executor = glommio::executor().id() as u64 + 1;
    p.shared.executor.store(executor, Ordering::SeqCst);
    // The WAL opens first: its segments are the first DMA files this executor touches.
    let (wal, records) = Wal::open(&p.wal_dir, p.wal_segment_bytes, p.wal_dsync)
        .await
        .map_err(|e| e.to_string())?;
    // The core's log restarts below everything the WAL still holds, not at the store's applied
    // slot: peers that lag behind this replica can then catch up from its log. Slots the store
    // already applied are re-emitted as committed and skipped by the executor (exactly once).
    let mut decoded = Vec::with_capacity(records.len());
    let mut first_wal_slot: Option<u64> = None;
    for (lsn, bytes) in &records {
        let rec = Record::decode(bytes).map_err(|e| format!("wal record {}: {e}", lsn.0))?;
        if let Record::Accept { slot, .. } = &rec {
            first_wal_slot = Some(first_wal_slot.map_or(slot.0, |f| f.min(slot.0)));
        }
        decoded.push(rec);
    }
    let base = first_wal_slot.map_or(p.applied_slot, |f| p.applied_slot.min(f.saturating_sub(1)));
    let amnesiac = super::rebuild::amnesiac_at_start(&p.wal_dir, records.is_empty())?;
    if amnesiac {
        tracing::info!(
            replica = p.id,
            "this replica starts without its durable Paxos state (a new cluster, or a lost \
             WAL): it does not vote until it has rebuilt from its peers"
        );
    }
    let mut durable = DurableState {
        snapshot_upto: Slot(base),
        amnesiac,
        ..DurableState::default()
    };
    for rec in &decoded {
        durable.apply(rec);
    }
    drop(decoded);
    let promised = durable.promised;
    // Segments recovered from disk may hold accepts up to here: no cut may drop them before
    // the store covers that slot.
    let recovered_max_slot = durable
        .accepted
        .keys()
        .next_back()
        .copied()
        .unwrap_or(Slot(0));
    let incarnation = super::incarnation::next_incarnation(&p.wal_dir)?;
    tracing::info!(
        replica = p.id,
        incarnation,
        "request ids of this run carry incarnation {incarnation}"
    );
    tracing::info!(
        replica = p.id,
        records = records.len(),
        applied = p.applied_slot,
        log_base = base,
        "replica recovered"
    );
    drop(records);
    let core = paxos::Replica::new(p.paxos.clone(), durable);

    let (ev_tx, ev_rx) = local_channel::new_unbounded::<Ev>();
    let ev_tx = Rc::new(ev_tx);
    let (wal_tx, wal_rx) = local_channel::new_unbounded::<WalCmd>();
    let host = wal_host::ShellWal {
        ev: ev_tx.clone(),
        shared: p.shared.clone(),
    };
    glommio::spawn_local(run_wal(wal, wal_rx, host, promised, recovered_max_slot)).detach();

    let tcfg = Rc::new(p.transport.clone());
    // SAFETY: the fd comes from a std listener this function owns and gives up here.
    let listener = unsafe {
        use std::os::fd::{FromRawFd, IntoRawFd};
        glommio::net::TcpListener::from_raw_fd(p.listener.into_raw_fd())
    };
    {
        let tx = ev_tx.clone();
        glommio::spawn_local(transport::run_listener(
            listener,
            tcfg.clone(),
            p.shared.faults.clone(),
            move |m| {
                let _ = tx.try_send(Ev::Peer(m));
            },
        ))
        .detach();
    }
    let outbound = Outbound::start(tcfg, p.shared.faults.clone());
    forward_stream(p.client_rx, ev_tx.clone(), Ev::Client);
    forward_stream(p.applied_rx, ev_tx.clone(), Ev::Applied);
    // Bounded by the transfer protocol: a serving side sends one chunk per request it gets.
    let (snapshot_out, snapshot_rx) = mpsc::unbounded();
    forward_stream(snapshot_rx, ev_tx.clone(), Ev::SnapshotOut);
    {
        let tx = ev_tx.clone();
        let tick = Duration::from_millis(p.paxos.heartbeat_interval_ms).max(TICK_MIN);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(tick).await;
                if tx.send(Ev::Tick).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }

    let mut sh = Shell {
        id: p.id,
        core,
        out: Outputs::default(),
        started: Instant::now(),
        rng: rand::rngs::SmallRng::seed_from_u64(
            u64::from(p.id) ^ crate::util::time::unix_ms() as u64,
        ),
        wal: wal_tx,
        outbound,
        jobs: p.jobs,
        wal_dir: p.wal_dir.clone(),
        snapshot: p.snapshot,
        snapshot_out,
        receiving: None,
        serving: HashMap::new(),
        shared: p.shared.clone(),
        // Forwarded reads and commands are answered by id: ids of an earlier run must not match.
        waiters: waiters::Waiters::new(super::incarnation::first_request_id(incarnation)),
        proposals: Vec::new(),
        applied: base,
        store_applied: p.applied_slot,
        commit_timeout: p.commit_timeout,
        max_apply_lag_slots: p.max_apply_lag_slots,
        last_housekeeping: Instant::now(),
        last_compact: Instant::now(),
        compacted: Slot(base),
        stopping: false,
    };
    sh.shared
        .amnesiac
        .store(sh.core.is_amnesiac(), Ordering::SeqCst);
    sh.shared.recovered.store(true, Ordering::SeqCst);
    sh.shared.running.store(true, Ordering::SeqCst);
    let result = loop {
        let Some(ev) = ev_rx.recv().await else {
            break Ok(());
        };
        if let Err(e) = sh.handle(ev) {
            break Err(e);
        }
        let mut n = 0;
        while n < DRAIN_EVENTS_MAX {
            match poll_once(ev_rx.recv()).await {
                Some(Some(ev)) => {
                    if let Err(e) = sh.handle(ev) {
                        sh.shared.running.store(false, Ordering::SeqCst);
                        return Err(e);
                    }
                    n += 1;
                }
                _ => break,
            }
        }
        sh.flush_proposals();
        if sh.stopping {
            break Ok(());
        }
    };
    sh.shared.running.store(false, Ordering::SeqCst);
    sh.shared.is_primary.store(false, Ordering::SeqCst);
    sh.waiters.fail_all();
    if sh.stopping {
        // Let the transport deliver the leadership hand-off before the executor stops.
        glommio::timer::sleep(HANDOFF_GRACE).await;
    }
    result
}

fn forward_stream<T: 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
    tx: Rc<LocalSender<Ev>>,
    wrap: fn(T) -> Ev,
) {
    glommio::spawn_local(async move {
        while let Some(m) = rx.next().await {
            if tx.send(wrap(m)).await.is_err() {
                return;
            }
        }
    })
    .detach();
}

struct Shell {
    id: u32,
    core: paxos::Replica,
    out: Outputs,
    started: Instant,
    rng: rand::rngs::SmallRng,
    wal: LocalSender<WalCmd>,
    outbound: Outbound,
    jobs: crossbeam::channel::Sender<ApplyWork>,
    wal_dir: std::path::PathBuf,
    snapshot: SnapshotParams,
    snapshot_out: mpsc::UnboundedSender<(u32, Bytes)>,
    /// The snapshot this replica is installing from a peer, if any.
    receiving: Option<snapshot::Receiving>,
    /// Snapshots this replica serves, by peer.
    serving: HashMap<u32, snapshot::Serving>,
    shared: Arc<ReplicaShared>,
    /// Every client waiting for an answer from this replica.
    waiters: waiters::Waiters,
    /// Commands gathered this turn (own clients' and forwarded), proposed together at its end.
    proposals: Vec<Bytes>,
    applied: u64,
    /// What the store had applied when this replica started (it may be ahead of the core).
    store_applied: u64,
    commit_timeout: Duration,
    max_apply_lag_slots: u64,
    last_housekeeping: Instant,
    last_compact: Instant,
    compacted: Slot,
    stopping: bool,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ServiceError {
    ServiceError::new(code, msg)
}

impl Shell {
    fn handle(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Peer(m) => self.on_peer(m),
            Ev::Client(c) => self.on_client(c),
            Ev::Tick => {
                let now_ms = self.started.elapsed().as_millis() as u64;
                let random = self.rng.gen();
                self.step(Input::Tick { now_ms, random });
                self.poll_applied();
                self.housekeeping();
            }
            Ev::Durable(l) => self.step(Input::Durable { upto_lsn: l }),
            Ev::Applied(Applied::Upto(s)) => {
                self.applied = self.applied.max(s);
                self.step(Input::Applied {
                    upto: Slot(self.applied),
                });
                self.release_reads();
            }
            Ev::Applied(Applied::Outcomes(outcomes)) => {
                for (slot, i, o) in outcomes {
                    if let Some(w) = self.waiters.take_applied(slot, i) {
                        w.send(o);
                    }
                }
            }
            Ev::Applied(Applied::Install { session, installed }) => {
                self.on_install_progress(session, installed)
            }
            Ev::Applied(Applied::Failed(e)) => return Err(format!("apply failed: {e}")),
            Ev::SnapshotOut((peer, payload)) => {
                self.outbound.send(peer, FrameKind::SnapshotChunk, payload)
            }
            Ev::Fatal(e) => return Err(e),
        }
        Ok(())
    }

    fn step(&mut self, input: Input) {
        self.core
            .observe_clock(self.started.elapsed().as_millis() as u64);
        self.core.step(input, &mut self.out);
        self.carry_out();
    }

    fn on_peer(&mut self, m: Inbound) {
        if let Some(t) = self.shared.last_heard_unix_ms.get(m.from as usize) {
            t.store(crate::util::time::unix_ms(), Ordering::Relaxed);
        }
        match m.kind {
            FrameKind::Paxos => match paxos::Message::decode(&m.payload) {
                Ok(message) => self.step(Input::Message {
                    from: ReplicaId(m.from),
                    message,
                }),
                Err(e) => {
                    tracing::warn!(replica = self.id, from = m.from, error = %e, "undecodable paxos message")
                }
            },
            FrameKind::Forward => {
                self.shared.proposals.fetch_add(1, Ordering::Relaxed);
                self.proposals.push(m.payload);
            }
            FrameKind::ReadIndexRequest => {
                if let Ok(q) = ReadIndexRequest::decode(&m.payload) {
                    let id = self.waiters.add_read(ReadWaiter::Remote {
                        from: m.from,
                        id: q.id,
                    });
                    self.step(Input::ReadIndex { id: ReadId(id) });
                }
            }
            FrameKind::SnapshotRequest => self.on_snapshot_request(&m),
            FrameKind::SnapshotChunk => self.on_snapshot_chunk(&m),
            FrameKind::ReadIndexResponse => {
                let Ok(a) = ReadIndexResponse::decode(&m.payload) else {
                    return;
                };
                if let Some((_, w)) = self.waiters.take_forwarded(a.id) {
                    match a.read_index {
                        Some(slot) => self.read_at(slot, ReadWaiter::Local(w)),
                        None => {
                            w.send(Err(err(
                                ErrorCode::NotPrimary,
                                "no primary to confirm the read",
                            )));
                        }
                    }
                }
            }
        }
    }

    fn on_client(&mut self, c: ClientMsg) {
        match c {
            ClientMsg::Propose {
                command,
                reply,
                timeout,
            } => {
                let commit = self.shared.commit_slot.load(Ordering::Relaxed);
                let applied = self.shared.applied_slot.load(Ordering::Relaxed);
                let lag = commit.saturating_sub(applied);
                if lag > self.max_apply_lag_slots && self.receiving.is_none() {
                    reply.send(Err(err(
                        ErrorCode::Unavailable,
                        format!(
                            "the store is {lag} slots behind the log \
                             (consensus.max_apply_lag_slots); retry"
                        ),
                    )));
                    return;
                }
                let within = timeout.unwrap_or(self.commit_timeout);
                let req = self.waiters.add_write(reply, Instant::now() + within);
                self.shared.proposals.fetch_add(1, Ordering::Relaxed);
                self.proposals
                    .push(envelope::encode(self.id, req, &command));
            }
            ClientMsg::Read { reply } => {
                let id = self.waiters.add_read(ReadWaiter::Local(reply));
                self.step(Input::ReadIndex { id: ReadId(id) });
            }
            ClientMsg::Shutdown => {
                self.flush_proposals();
                if self.core.is_primary() {
                    let to = ReplicaId((self.id + 1) % self.core_count());
                    self.step(Input::TransferLeadership { to });
                }
                self.stopping = true;
            }
        }
    }

    /// Hands the core every command this turn gathered, as one batch.
    fn flush_proposals(&mut self) {
        if !self.proposals.is_empty() {
            let batch = std::mem::take(&mut self.proposals);
            self.shared.proposal_batches.fetch_add(1, Ordering::Relaxed);
            self.step(Input::ProposeBatch(batch));
        }
    }

    fn core_count(&self) -> u32 {
        self.shared.last_heard_unix_ms.len().max(1) as u32
    }

    /// Carries out everything the core asked for in the last step.
    fn carry_out(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        for (lsn, rec) in out.persist.drain(..) {
            let _ = self.wal.try_send(WalCmd::Append(lsn, rec));
        }
        if !out.sends.is_empty() {
            let mut buf = Vec::new();
            for (to, msg) in out.sends.drain(..) {
                buf.clear();
                msg.encode(&mut buf);
                self.outbound
                    .send(to.0, FrameKind::Paxos, Bytes::copy_from_slice(&buf));
            }
        }
        for (slot, value) in out.committed.drain(..) {
            let commands: Vec<Bytes> = value.commands().to_vec();
            let mut waiting = Vec::new();
            // Only a replica with clients waiting needs to look for its own commands.
            let mine = if !self.waiters.has_writes() {
                &[][..]
            } else {
                &commands[..]
            };
            for (i, c) in mine.iter().enumerate() {
                if let Ok((origin, req, _)) = envelope::decode(c) {
                    if origin == self.id && self.waiters.committed(req, slot.0, i) {
                        waiting.push(i);
                    }
                }
            }
            self.shared.batches.fetch_add(1, Ordering::Relaxed);
            self.shared.record_slot(commands.len());
            self.shared
                .commands
                .fetch_add(commands.len() as u64, Ordering::Relaxed);
            self.shared.commit_slot.store(slot.0, Ordering::Relaxed);
            if self
                .jobs
                .send(ApplyWork::Slot(ApplyJob {
                    slot: slot.0,
                    commands,
                    waiting,
                }))
                .is_err()
            {
                tracing::error!(replica = self.id, "apply thread is gone");
            }
        }
        for (id, slot) in out.read_ready.drain(..) {
            if let Some(w) = self.waiters.take_read(id.0) {
                match w {
                    ReadWaiter::Remote { from, id } => {
                        let a = ReadIndexResponse {
                            id,
                            read_index: Some(slot.0),
                        };
                        self.outbound
                            .send(from, FrameKind::ReadIndexResponse, a.encode());
                    }
                    local => self.read_at(slot.0, local),
                }
            }
        }
        for (id, why) in out.read_rejected.drain(..) {
            if let Some(w) = self.waiters.take_read(id.0) {
                self.reject_read(w, why);
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
                    self.shared.rebuilds.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = super::rebuild::mark_rebuilt(&self.wal_dir) {
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

    fn reject_proposal(&mut self, command: Bytes, why: Rejection) {
        let Ok((origin, req, _)) = envelope::decode(&command) else {
            return;
        };
        match why {
            Rejection::NotPrimary {
                primary_hint: Some(p),
            } if p.0 != self.id => {
                // Forward to the primary; the origin still answers when the command applies.
                self.outbound.send(p.0, FrameKind::Forward, command);
            }
            why => {
                if origin == self.id {
                    if let Some(w) = self.waiters.take_write(req) {
                        let e = match why {
                            Rejection::Overloaded => {
                                err(ErrorCode::Unavailable, "too many proposals waiting; retry")
                            }
                            Rejection::NotPrimary { .. } => {
                                err(ErrorCode::NotPrimary, "no primary right now; retry")
                            }
                        };
                        w.send(Err(e));
                    }
                }
            }
        }
    }
}
