//! The replicated store: replicas (each a glommio executor pinned to a core, with its WAL,
//! transport and applier) and the front's `ClusterService` over them.
//!
//! `ReplicatedKvStore` is the library API: `new` (validate, bind replica ports, open stores),
//! `start` (run the replicas), `execute_operation`, `primary_replica`, `wait_for_primary`,
//! `is_healthy`, `shutdown`. `paxoskv serve` runs every replica in one process; `paxoskv node`
//! runs one, with its peers in other processes or on other hosts.

pub mod apply;
mod apply_local;
pub mod envelope;
pub mod incarnation;
pub mod rebuild;
pub mod replica;
pub mod service;
pub mod shared;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_lite::StreamExt;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

pub use replica::ClientMsg;
pub use service::{ClusterService, LocalReplica};
pub use shared::ReplicaShared;

use crate::config::ReplicatedConfig;
use crate::paxos::{PaxosConfig, ReplicaId};
use crate::service::{ErrorCode, ServiceError};
use crate::storage::{Durability, KvStoreExecutor, StoreOptions};
use crate::transport::TransportConfig;
use crate::txn::{Command, Outcome};
use crate::util::guest::{Guest, GuestSpawner};

/// How often a blocking caller looks again for a primary.
const PRIMARY_POLL: Duration = Duration::from_millis(5);
/// How long, and how often, a replica port bind is retried while the old socket is released.
const BIND_RETRY_FOR: Duration = Duration::from_secs(5);
const BIND_RETRY_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("replica {id}: cannot bind {addr}: {message}")]
    Bind {
        id: u32,
        addr: String,
        message: String,
    },
    #[error("replica {id}: cannot open store {path}: {message}")]
    Store {
        id: u32,
        path: String,
        message: String,
    },
    #[error("replica {id}: {message}")]
    Start { id: u32, message: String },
    #[error("replica links: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

struct Pending {
    id: u32,
    listener: std::net::TcpListener,
    exec: KvStoreExecutor,
}

struct Running {
    local: LocalReplica,
    apply: Option<JoinHandle<()>>,
}

/// One executor thread and the replicas it runs (one per core: replicas pinned to the same
/// core share it).
struct Executor {
    replicas: Vec<u32>,
    /// Tasks to start on this executor (the front, in `serve`).
    guests: mpsc::UnboundedSender<Guest>,
    /// Ends the executor. Until then it keeps running its guests even after its replicas
    /// stopped (a fatal WAL or apply error must not take the front down with it).
    stop: Option<oneshot::Sender<()>>,
    handle: Option<ExecutorJoinHandle<Result<(), crate::error::Error>>>,
}

impl Executor {
    /// Hands tasks to this executor; fails once it has stopped.
    fn spawner(&self) -> GuestSpawner {
        let tx = self.guests.clone();
        let id = self.replicas.first().copied().unwrap_or_default();
        Box::new(move |guest: Guest| {
            tx.unbounded_send(guest)
                .map_err(|_| crate::util::guest::ExecutorStopped(id))
        })
    }
}

pub struct ReplicatedKvStore {
    config: ReplicatedConfig,
    /// Each local replica's link TLS (`[network] tls_*`), by id; `None`: plain TCP.
    tls: Vec<Option<crate::tls::ReplicaTls>>,
    endpoints: Vec<String>,
    pending: Vec<Pending>,
    running: Vec<Running>,
    executors: Vec<Executor>,
}

impl ReplicatedKvStore {
    /// Hands tasks to the executor of the lowest-numbered running local replica (replica 0,
    /// the first primary, in `serve`): the front runs there, so a request reaches the replica
    /// it is handed to without crossing threads. `None` before `start`.
    pub fn front_spawner(&self) -> Option<GuestSpawner> {
        let id = self.running.iter().map(|r| r.local.id).min()?;
        let e = self.executors.iter().find(|e| e.replicas.contains(&id))?;
        Some(e.spawner())
    }

    /// Hands tasks to each executor other than the front's (`front_spawner`): where the
    /// front may move connections that mostly read (`thrift.spread_after_reads`). Empty before
    /// `start` and when this process runs one executor.
    pub fn helper_spawners(&self) -> Vec<GuestSpawner> {
        let Some(front) = self.running.iter().map(|r| r.local.id).min() else {
            return Vec::new();
        };
        self.executors
            .iter()
            .filter(|e| !e.replicas.contains(&front))
            .map(Executor::spawner)
            .collect()
    }

    /// Every replica of the cluster in this process.
    pub fn new(config: ReplicatedConfig) -> Result<Self, ClusterError> {
        let ids: Vec<u32> = (0..config.replicated.replica_count).collect();
        Self::build(config, &ids)
    }

    /// One replica (`id`) in this process; its peers run elsewhere (`network.peers`).
    pub fn new_node(config: ReplicatedConfig, id: u32) -> Result<Self, ClusterError> {
        if id >= config.replicated.replica_count {
            return Err(ClusterError::Start {
                id,
                message: format!("--id {id} is not below replicated.replica_count"),
            });
        }
        Self::build(config, &[id])
    }

    fn build(config: ReplicatedConfig, ids: &[u32]) -> Result<Self, ClusterError> {
        config.validate()?;
        let n = config.replicated.replica_count;
        let mut tls = vec![None; n as usize];
        for &id in ids {
            if let Some(files) = config.network.tls_files(id) {
                tls[id as usize] = Some(crate::tls::ReplicaTls::load(&files)?);
            }
        }
        let mut endpoints: Vec<String> = (0..n).map(|i| config.replica_address(i)).collect();
        let mut pending = Vec::new();
        for &id in ids {
            let bind = if config.network.peers.is_empty() {
                format!(
                    "{}:{}",
                    config.network.bind_address,
                    if config.network.base_tcp_port == 0 {
                        0
                    } else {
                        config.network.base_tcp_port as u32 + id
                    }
                )
            } else {
                let port = endpoints[id as usize]
                    .rsplit_once(':')
                    .map(|(_, p)| p.to_string())
                    .unwrap_or_default();
                format!("{}:{}", config.network.bind_address, port)
            };
            let listener = bind_with_retry(&bind).map_err(|e| ClusterError::Bind {
                id,
                addr: bind.clone(),
                message: e.to_string(),
            })?;
            let local = listener.local_addr().map_err(|e| ClusterError::Bind {
                id,
                addr: bind.clone(),
                message: e.to_string(),
            })?;
            if config.network.peers.is_empty() {
                endpoints[id as usize] = local.to_string();
            }
            let path = config.replica_data_dir(id);
            let store_err = |message: String| ClusterError::Store {
                id,
                path: path.display().to_string(),
                message,
            };
            std::fs::create_dir_all(&path).map_err(|e| store_err(e.to_string()))?;
            // The Paxos WAL is the log: RocksDB writes no WAL of its own, and the replica
            // keeps its WAL segments until RocksDB has flushed the slots they hold.
            let opts = StoreOptions::from_config(&config.storage, Durability::ExternalLog);
            let exec = KvStoreExecutor::open(&path, opts).map_err(|e| store_err(e.to_string()))?;
            pending.push(Pending { id, listener, exec });
        }
        Ok(ReplicatedKvStore {
            config,
            tls,
            endpoints,
            pending,
            running: Vec::new(),
            executors: Vec::new(),
        })
    }

    /// Starts every local replica, pinned to a core (see `replica_cpu`). Replicas pinned to the
    /// same core run on one executor (`replicated.executor_per_core`): one thread per core, so
    /// a frame broadcast to two followers wakes one thread, and one park covers both.
    pub fn start(&mut self) -> Result<(), ClusterError> {
        let cpus = allowed_cpus();
        let n = self.config.replicated.replica_count;
        let share = self.config.replicated.executor_per_core;
        // (cpu, replicas' params) per executor, in order of first replica id.
        let mut groups: Vec<(Option<usize>, Vec<replica::ReplicaParams>)> = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let (params, local, apply) = self.prepare(p)?;
            let cpu = replica_cpu(local.id, n, &cpus);
            match groups
                .iter_mut()
                .find(|(c, _)| share && c.is_some() && *c == cpu)
            {
                Some((_, members)) => members.push(params),
                None => groups.push((cpu, vec![params])),
            }
            self.running.push(Running { local, apply });
        }
        for (cpu, members) in groups {
            let e = self.spawn_executor(cpu, members)?;
            self.executors.push(e);
        }
        Ok(())
    }

    /// Everything one replica needs before its executor starts: its applier (a thread, or a
    /// task its executor will run), its handles.
    fn prepare(
        &self,
        p: Pending,
    ) -> Result<(replica::ReplicaParams, LocalReplica, Option<JoinHandle<()>>), ClusterError> {
        let id = p.id;
        let n = self.config.replicated.replica_count;
        let endpoint = self.endpoints[id as usize].clone();
        let shared = Arc::new(ReplicaShared::new(id, endpoint, n));
        let reader = p.exec.reader();
        let snapshot = replica::SnapshotParams {
            db: p.exec.db().clone(),
            chunk_bytes: self.config.consensus.snapshot_chunk_bytes as usize,
            timeout: self.config.consensus.snapshot_timeout,
        };
        let applied_slot = p.exec.next_expected_sequence().0 - 1;
        shared
            .applied_slot
            .store(applied_slot, std::sync::atomic::Ordering::SeqCst);
        shared
            .durable_slot
            .store(applied_slot, std::sync::atomic::Ordering::SeqCst);
        // Channels without a capacity of their own, each bounded by what feeds it: `jobs`
        // holds committed slots not yet applied (past consensus.max_apply_lag_slots the replica
        // refuses new writes); `applied` gets at most one message per run of jobs taken;
        // `client` carries requests the front admitted (thrift.max_in_flight_bytes_total and
        // max_connections bound them, consensus.max_pending_ops bounds the proposals waiting).
        let (jobs_tx, jobs_rx) = crossbeam::channel::unbounded();
        let (applied_tx, applied_rx) = mpsc::unbounded();
        let (client_tx, client_rx) = mpsc::unbounded();
        let applier = apply::Applier::new(
            p.exec,
            applied_tx,
            shared.clone(),
            self.config.storage.memtable_flush_interval,
        );
        let (apply, local_apply) = if self.config.storage.apply_on_executor {
            (None, Some((applier, jobs_rx)))
        } else {
            let thread = std::thread::Builder::new()
                .name(format!("paxoskv-apply-{id}"))
                .spawn(move || apply::run_apply(applier, jobs_rx))
                .map_err(|e| ClusterError::Start {
                    id,
                    message: e.to_string(),
                })?;
            (Some(thread), None)
        };
        let params = replica::ReplicaParams {
            id,
            paxos: self.paxos_config(id),
            transport: self.transport_config(id),
            listener: p.listener,
            wal_dir: self.config.replica_wal_dir(id),
            wal_segment_bytes: self.config.storage.wal_segment_bytes,
            wal_dsync: self.config.storage.wal_dsync,
            commit_timeout: self.config.consensus.commit_timeout,
            max_apply_lag_slots: self.config.consensus.max_apply_lag_slots,
            applied_slot,
            jobs: jobs_tx,
            local_apply,
            snapshot,
            applied_rx,
            client_rx,
            shared: shared.clone(),
        };
        let local = LocalReplica {
            id,
            tx: client_tx,
            reader,
            shared,
        };
        Ok((params, local, apply))
    }

    /// One executor on `cpu` running `members` (one replica each, as local tasks) and any
    /// guests sent to it, until it is told to stop.
    fn spawn_executor(
        &self,
        cpu: Option<usize>,
        members: Vec<replica::ReplicaParams>,
    ) -> Result<Executor, ClusterError> {
        let replicas: Vec<u32> = members.iter().map(|m| m.id).collect();
        let first = replicas.first().copied().unwrap_or(0);
        let name = replicas
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join("+");
        let placement = match cpu {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        // Its blocking pool (range scans) is not pinned: two threads the scheduler may run on
        // any core, so scans neither queue behind one thread nor take only this core.
        let mut builder = LocalExecutorBuilder::new(placement)
            .name(&format!("paxoskv-replica-{name}"))
            .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(2));
        let spin = self.config.replicated.spin_before_park;
        if !spin.is_zero() {
            builder = builder.spin_before_park(spin);
        }
        let (guests, mut guest_rx) = mpsc::unbounded::<Guest>();
        let (stop_executor, stopped) = oneshot::channel::<()>();
        let executor = builder
            .spawn(move || async move {
                glommio::spawn_local(async move {
                    while let Some(guest) = guest_rx.next().await {
                        glommio::spawn_local(guest()).detach();
                    }
                })
                .detach();
                let tasks: Vec<_> = members
                    .into_iter()
                    .map(|params| {
                        glommio::spawn_local(async move {
                            let id = params.id;
                            let shared = params.shared.clone();
                            let r = replica::run_replica(params).await;
                            if let Err(e) = &r {
                                tracing::error!(replica = id, error = %e, "replica stopped");
                                *shared.failure.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some(e.to_string());
                            }
                            r
                        })
                    })
                    .collect();
                let mut result = Ok(());
                for t in tasks {
                    let r = t.await;
                    if result.is_ok() {
                        result = r;
                    }
                }
                // The front may live on this executor: serve it until the store stops.
                let _ = stopped.await;
                result
            })
            .map_err(|e| ClusterError::Start {
                id: first,
                message: e.to_string(),
            })?;
        Ok(Executor {
            replicas,
            guests,
            stop: Some(stop_executor),
            handle: Some(executor),
        })
    }

    fn paxos_config(&self, id: u32) -> PaxosConfig {
        let c = &self.config.consensus;
        PaxosConfig {
            replica_id: ReplicaId(id),
            replica_count: self.config.replicated.replica_count,
            heartbeat_interval_ms: c.heartbeat_interval.as_millis() as u64,
            election_timeout_min_ms: c.election_timeout_min.as_millis() as u64,
            pipeline_depth: c.pipeline_depth as usize,
            batch_ops_max: c.max_batch_ops as usize,
            batch_bytes_max: c.max_batch_bytes as usize,
            proposal_queue_max: c.max_pending_ops as usize,
            lease_enabled: c.read_lease,
            clock_drift_bound_ms: c.clock_drift_bound.as_millis() as u64,
            log_retain_bytes: c.log_retain_bytes,
            // A catch-up reply stays well inside the frame limit.
            catchup_bytes_max: (self.config.network.max_frame_bytes / 4) as usize,
            promise_bytes_max: (self.config.network.max_frame_bytes / 4) as usize,
            // Replica 0 has a core to itself and hosts the front in `serve`.
            lead_after_start: id == 0,
            ..PaxosConfig::default()
        }
    }

    fn transport_config(&self, id: u32) -> TransportConfig {
        let n = &self.config.network;
        TransportConfig {
            me: id,
            replica_count: self.config.replicated.replica_count,
            cluster_id: self.config.replicated.cluster_id.clone(),
            secret: n.shared_secret.clone().unwrap_or_default().into_bytes(),
            peers: self.endpoints.clone(),
            max_frame_bytes: n.max_frame_bytes,
            connect_timeout: n.connection_timeout,
            backoff_max: n.reconnect_backoff_max,
            queue_frames_max: 65_536,
            queue_bytes_max: n.peer_queue_bytes as usize,
            tls: self.tls.get(id as usize).cloned().flatten(),
        }
    }

    pub fn config(&self) -> &ReplicatedConfig {
        &self.config
    }

    /// `host:port` of every replica's transport, by id.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The thread-safe handles of the local replicas (for the front or tests).
    pub fn local_replicas(&self) -> Vec<LocalReplica> {
        self.running.iter().map(|r| r.local.clone()).collect()
    }

    /// Builds the front's service; call the returned closure on the front's executor.
    pub fn service_factory(&self) -> impl FnOnce() -> ClusterService + Send + 'static {
        let local = self.local_replicas();
        let n = self.config.replicated.replica_count;
        let endpoints = self.endpoints.clone();
        let wait = self.config.consensus.primary_wait;
        let election = self.config.consensus.election_timeout_min;
        move || ClusterService::new(local, n, endpoints, wait, election)
    }

    /// The primary as known by the local replicas.
    pub fn primary_replica(&self) -> Option<u32> {
        self.running
            .iter()
            .filter(|r| r.local.shared.is_running())
            .find_map(|r| r.local.shared.primary())
    }

    /// Waits until a request could be sent: a local primary, or (one replica per process) a
    /// local replica that knows a primary.
    /// The error of the first replica, when every local replica stopped on a fatal error.
    pub fn all_failed(&self) -> Option<String> {
        let mut first = None;
        for r in &self.running {
            let f = r
                .local
                .shared
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match f {
                Some(e) => {
                    first.get_or_insert(format!("replica {}: {e}", r.local.id));
                }
                None => return None,
            }
        }
        first
    }

    pub fn wait_for_primary(&self, timeout: Duration) -> Option<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let known = service::pick_target(&self.local_replicas()).map(|r| {
                if self.running.len() == 1 {
                    r.shared.primary().unwrap_or(r.id)
                } else {
                    r.id
                }
            });
            if known.is_some() || Instant::now() >= deadline {
                return known;
            }
            std::thread::sleep(PRIMARY_POLL);
        }
    }

    /// A primary is known and every local replica runs.
    pub fn is_healthy(&self) -> bool {
        !self.running.is_empty()
            && self.running.iter().all(|r| r.local.shared.is_running())
            && self.primary_replica().is_some()
    }

    /// Replicates one command and waits for its outcome (blocking; for library users and tests).
    pub fn execute_operation(&self, cmd: Command) -> Result<Outcome, ServiceError> {
        let bytes = cmd.encode_to_bytes();
        let deadline = Instant::now() + self.config.consensus.primary_wait;
        let stopped = || ServiceError::new(ErrorCode::Unavailable, "replica stopped");
        loop {
            let res = match service::pick_target(&self.local_replicas()) {
                Some(r) => {
                    let (tx, rx) = oneshot::channel();
                    r.tx.unbounded_send(ClientMsg::Propose {
                        command: bytes.clone(),
                        reply: crate::util::reply::Reply::direct(tx),
                        timeout: None,
                    })
                    .map_err(|_| stopped())?;
                    futures_lite::future::block_on(rx)
                        .map_err(|_| ServiceError::outcome_unknown("the replica stopped"))?
                }
                None => Err(ServiceError::new(
                    ErrorCode::NotPrimary,
                    "no primary right now",
                )),
            };
            match res {
                Err(e) if e.code == ErrorCode::NotPrimary && Instant::now() < deadline => {
                    std::thread::sleep(PRIMARY_POLL)
                }
                other => return other,
            }
        }
    }

    /// Stops every local replica: the primary hands leadership off, WAL and stores are synced.
    pub fn shutdown(mut self) {
        for r in &self.running {
            // The appliers stop at once: a backlog is applied from the WAL at the next start.
            r.local
                .shared
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = r.local.tx.unbounded_send(ClientMsg::Shutdown);
        }
        for e in &mut self.executors {
            if let Some(s) = e.stop.take() {
                let _ = s.send(());
            }
        }
        for e in &mut self.executors {
            if let Some(h) = e.handle.take() {
                let _ = h.join();
            }
        }
        // The replicas dropped their job queues: the appliers drain, sync and exit.
        for r in &mut self.running {
            if let Some(a) = r.apply.take() {
                let _ = a.join();
            }
        }
    }
}

/// Binds, retrying for a few seconds while the address is still held (a restart right after a
/// crash can find the old socket not yet released).
fn bind_with_retry(addr: &str) -> std::io::Result<std::net::TcpListener> {
    let deadline = Instant::now() + BIND_RETRY_FOR;
    loop {
        match std::net::TcpListener::bind(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(BIND_RETRY_EVERY);
            }
            other => return other,
        }
    }
}

/// The core replica `id` of `n` is pinned to, out of the cores this process may use. With a
/// core per replica each gets its own. With fewer cores, replica 0 (the first primary, which
/// the front feeds) keeps the first core to itself and the followers share the rest: the
/// primary does the most work per write, and it never competes with a follower for its core.
pub(crate) fn replica_cpu(id: u32, n: u32, cpus: &[usize]) -> Option<usize> {
    let id = id as usize;
    if cpus.len() >= n as usize || cpus.len() < 2 {
        return cpus.get(id % cpus.len().max(1)).copied();
    }
    if id == 0 {
        return cpus.first().copied();
    }
    let rest = &cpus[1..];
    rest.get((id - 1) % rest.len()).copied()
}

/// The CPUs this process may run on (its affinity mask), in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills a zero-initialised cpu_set_t of the size we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

#[cfg(test)]
mod placement_tests {
    use super::replica_cpu;

    #[test]
    fn primary_has_a_core_of_its_own_when_cores_are_short() {
        let two = [0, 1];
        assert_eq!(replica_cpu(0, 3, &two), Some(0));
        assert_eq!(replica_cpu(1, 3, &two), Some(1));
        assert_eq!(replica_cpu(2, 3, &two), Some(1));
        let four = [0, 1, 2, 3];
        assert_eq!(replica_cpu(2, 3, &four), Some(2));
        assert_eq!(replica_cpu(1, 3, &[5]), Some(5));
        assert_eq!(replica_cpu(1, 3, &[]), None);
    }
}
