//! One replica's shell: a glommio executor that turns real events into inputs for the Paxos
//! core and carries out its outputs. It makes no protocol decisions.
//!
//! Events (peer frames, client requests from the front, ticks, WAL durability, apply progress)
//! arrive on one local inbox. Each turn handles everything ready, then the outputs go out:
//! records to the WAL task (group commit: one fdatasync for everything that arrived while the
//! previous one ran, then `Durable` comes back as an event and the core releases the replies
//! that waited for it), messages to the transport, committed slots to the applier with
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

mod garbage;
mod housekeeping;
mod outputs;
mod reads;
mod recover;
mod snapshot;
mod timing;
mod waiters;
mod wal_host;

use recover::Recovered;
pub use snapshot::SnapshotParams;

use super::apply::{Applied, Applier, ApplyWork, Waiter};
use super::apply_local::{self, ApplyQueue, Kick};
use super::envelope;
use super::shared::ReplicaShared;
use crate::error::Error;
use crate::paxos::{self, Input, Outputs, Rejection, ReplicaId, Slot};
use crate::service::{ErrorCode, ServiceError};
use crate::transport::{self, FrameKind, Inbound, Outbound, TransportConfig};
use crate::util::reply::Reply;
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
    Fatal(Error),
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
    /// The applier, when this executor runs it (`storage.apply_on_executor`); else an apply
    /// thread consumes `jobs`.
    pub local_apply: Option<(Applier, crossbeam::channel::Receiver<ApplyWork>)>,
    pub snapshot: SnapshotParams,
    pub applied_rx: mpsc::UnboundedReceiver<Applied>,
    pub client_rx: mpsc::UnboundedReceiver<ClientMsg>,
    pub shared: Arc<ReplicaShared>,
}

/// Runs the replica until shutdown or a fatal error.
pub async fn run_replica(mut p: ReplicaParams) -> Result<(), Error> {
    let executor = glommio::executor().id() as u64 + 1;
    p.shared.executor.store(executor, Ordering::SeqCst);
    let Recovered {
        wal,
        core,
        base,
        promised,
        recovered_max_slot,
        incarnation,
    } = recover::recover(&p).await?;

    // Started after recovery: slots the WAL replays above the store's are queued by the core.
    let (jobs, apply_task) = match p.local_apply.take() {
        Some((applier, rx)) => {
            let kick = Rc::new(Kick::default());
            let task = glommio::spawn_local(apply_local::run(applier, rx, kick.clone()));
            (ApplyQueue::new(p.jobs, Some(kick)), Some(task))
        }
        None => (ApplyQueue::new(p.jobs, None), None),
    };
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
        let shared = p.shared.clone();
        let tick = Duration::from_millis(p.paxos.heartbeat_interval_ms).max(TICK_MIN);
        glommio::spawn_local(async move {
            loop {
                let asleep = Instant::now();
                glommio::timer::sleep(tick).await;
                let late = asleep.elapsed().saturating_sub(tick);
                shared.timer_lag.record(late.as_micros() as u64);
                if tx.send(Ev::Tick).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }

    let started = Instant::now();
    let mut sh = Shell {
        id: p.id,
        core,
        out: Outputs::default(),
        started,
        lease_clock: started.saturating_duration_since(p.shared.started),
        published_lease: None,
        rng: rand::rngs::SmallRng::seed_from_u64(
            u64::from(p.id) ^ crate::util::time::unix_ms() as u64,
        ),
        wal: wal_tx,
        outbound,
        jobs,
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
        store_applied: Slot(p.applied_slot),
        commit_timeout: p.commit_timeout,
        max_apply_lag_slots: p.max_apply_lag_slots,
        last_housekeeping: Instant::now(),
        last_compact: Instant::now(),
        compacted: base,
        stopping: false,
        timing: timing::SlotTiming::default(),
        garbage: garbage::Garbage::default(),
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
        let mut failed = None;
        while n < DRAIN_EVENTS_MAX {
            match poll_once(ev_rx.recv()).await {
                Some(Some(ev)) => {
                    if let Err(e) = sh.handle(ev) {
                        failed = Some(e);
                        break;
                    }
                    n += 1;
                }
                _ => break,
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
        sh.flush_proposals();
        sh.garbage.turn();
        if sh.stopping {
            break Ok(());
        }
    };
    sh.shared.running.store(false, Ordering::SeqCst);
    sh.shared.lease_until_ns.store(0, Ordering::SeqCst);
    sh.shared.is_primary.store(false, Ordering::SeqCst);
    sh.waiters.fail_all();
    if sh.stopping {
        // Let the transport deliver the leadership hand-off before the executor stops.
        glommio::timer::sleep(HANDOFF_GRACE).await;
    }
    // Closing the apply queue lets the apply task drain it, flush and end.
    drop(sh);
    if let Some(t) = apply_task {
        t.await;
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
    jobs: ApplyQueue,
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
    applied: Slot,
    /// What the store had applied when this replica started (it may be ahead of the core).
    store_applied: Slot,
    commit_timeout: Duration,
    max_apply_lag_slots: u64,
    last_housekeeping: Instant,
    last_compact: Instant,
    compacted: Slot,
    stopping: bool,
    /// `started` as time since `shared.started`: the core's clock in the front's.
    lease_clock: Duration,
    /// The lease last published to `shared`.
    published_lease: Option<(Slot, u64)>,
    /// Open slots' start times (`paxoskv_replica_slot_commit_seconds`, `..._accept_seconds`).
    timing: timing::SlotTiming,
    /// Log values the core released, freed a few at a time (`garbage.rs`).
    garbage: garbage::Garbage,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ServiceError {
    ServiceError::new(code, msg)
}

/// What a client whose proposal or read (`what`) the core refused is told: it was not carried
/// out, so it may retry.
fn refusal(why: Rejection, what: &str) -> ServiceError {
    match why {
        Rejection::Overloaded => err(
            ErrorCode::Unavailable,
            format!("too many {what} waiting; retry"),
        ),
        Rejection::NotPrimary { .. } => err(ErrorCode::NotPrimary, "no primary right now; retry"),
    }
}

impl Shell {
    fn handle(&mut self, ev: Ev) -> Result<(), Error> {
        match ev {
            Ev::Peer(m) => self.on_peer(m),
            Ev::Client(c) => self.on_client(c),
            Ev::Tick => {
                let now_ms = self.started.elapsed().as_millis() as u64;
                let random = self.rng.gen();
                self.step(Input::Tick { now_ms, random });
                self.poll_applied();
                self.housekeeping();
                self.garbage.tick();
            }
            Ev::Durable(l) => self.step(Input::Durable { upto_lsn: l }),
            Ev::Applied(Applied::Upto(s)) => {
                self.applied = self.applied.max(s);
                self.step(Input::Applied { upto: self.applied });
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
            Ev::Applied(Applied::Failed(e)) => return Err(Error::Apply(Box::new(e))),
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
        self.publish_lease();
        self.carry_out();
    }

    /// What a read may rely on without a step (`Replica::lease_read`), for the front: after
    /// the step, before anything it produced (a commit's replies, a transfer's messages)
    /// leaves. The index goes first, so whoever sees the lease end sees an index as new.
    fn publish_lease(&mut self) {
        let lease = self.core.lease_read();
        if lease == self.published_lease {
            return;
        }
        self.published_lease = lease;
        match lease {
            Some((index, until_ms)) => {
                let until = self.lease_clock + Duration::from_millis(until_ms);
                self.shared
                    .lease_read_index
                    .store(index.0, Ordering::SeqCst);
                self.shared
                    .lease_until_ns
                    .store(until.as_nanos() as u64, Ordering::SeqCst);
            }
            None => self.shared.lease_until_ns.store(0, Ordering::SeqCst),
        }
    }

    fn on_peer(&mut self, m: Inbound) {
        if let Some(t) = self.shared.last_heard_unix_ms.get(m.from as usize) {
            t.store(crate::util::time::unix_ms(), Ordering::Relaxed);
        }
        match m.kind {
            FrameKind::Paxos => match paxos::Message::decode(&m.payload) {
                Ok(message) => {
                    if let paxos::Message::Accept { slot, .. } = &message {
                        self.timing.accept_arrived(*slot, Instant::now());
                    }
                    self.step(Input::Message {
                        from: ReplicaId(m.from),
                        message,
                    })
                }
                Err(e) => {
                    tracing::warn!(replica = self.id, from = m.from, error = %e, "undecodable paxos message")
                }
            },
            FrameKind::SnapshotRequest => self.on_snapshot_request(&m),
            FrameKind::SnapshotChunk => self.on_snapshot_chunk(&m),
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
            ClientMsg::Read { reply } => self.start_read(reply),
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
}
