//! `ClusterService`: the front's view of the replicas that live in this process.
//!
//! Writes go to the local primary when there is one (no forwarding hop); in a one-replica
//! process they go to the local replica, which forwards them to the primary. Linearizable reads
//! first confirm a read index through the same replica, then read its store. With no primary,
//! requests wait up to `consensus.primary_wait` and then fail with the retryable `NOT_PRIMARY`.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};

use crate::util::reply::Reply;

use super::replica::ClientMsg;
use super::shared::ReplicaShared;
use crate::service::{ErrorCode, KvService, ReadOp, ReadResult, ReplicaStatus, ServiceError};
use crate::storage::KvReader;
use crate::txn::{Command, Outcome};
use crate::types::Version;

/// How often a snapshot read looks for a local replica that has applied its version.
const SNAPSHOT_WAIT_POLL: Duration = Duration::from_millis(1);

const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// The thread-safe parts of one local replica, handed to the front.
#[derive(Clone)]
pub struct LocalReplica {
    pub id: u32,
    pub tx: mpsc::UnboundedSender<ClientMsg>,
    pub reader: KvReader,
    pub shared: Arc<ReplicaShared>,
}

#[derive(Clone)]
pub struct ClusterService {
    inner: Rc<Inner>,
}

struct Inner {
    local: Vec<LocalReplica>,
    replica_count: u32,
    endpoints: Vec<String>,
    primary_wait: Duration,
    election_timeout: Duration,
}

impl ClusterService {
    pub fn new(
        local: Vec<LocalReplica>,
        replica_count: u32,
        endpoints: Vec<String>,
        primary_wait: Duration,
        election_timeout: Duration,
    ) -> Self {
        ClusterService {
            inner: Rc::new(Inner {
                local,
                replica_count,
                endpoints,
                primary_wait,
                election_timeout,
            }),
        }
    }

    /// The local replica to send requests to now.
    fn pick(&self) -> Option<&LocalReplica> {
        pick_target(&self.inner.local)
    }

    /// The replica whose store this front reads for non-consensus answers.
    fn home(&self) -> Option<&LocalReplica> {
        self.pick()
            .or_else(|| self.inner.local.iter().find(|r| r.shared.is_running()))
            .or(self.inner.local.first())
    }

    /// Runs `f` against the current primary's replica, retrying while there is none.
    async fn with_primary<T, F, Fut>(&self, f: F) -> Result<T, ServiceError>
    where
        F: Fn(LocalReplica) -> Fut,
        Fut: std::future::Future<Output = Result<T, ServiceError>>,
    {
        let deadline = Instant::now() + self.inner.primary_wait;
        loop {
            let res = match self.pick().cloned() {
                Some(r) => f(r).await,
                None => Err(ServiceError::new(
                    ErrorCode::NotPrimary,
                    "no primary right now; retry",
                )),
            };
            match res {
                Err(e) if e.code == ErrorCode::NotPrimary && Instant::now() < deadline => {
                    glommio::timer::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    async fn confirm_read(&self) -> Result<LocalReplica, ServiceError> {
        // Under the primary's lease, with its store caught up, no step is needed.
        if let Some(r) = self.pick() {
            if r.shared.lease_read_ready() {
                r.shared
                    .lease_reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(r.clone());
            }
        }
        self.with_primary(|r| async move {
            let (tx, rx) = oneshot::channel();
            let reply = Reply::to_here(tx, r.shared.executor_id());
            r.tx.unbounded_send(ClientMsg::Read { reply })
                .map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())??;
            Ok(r)
        })
        .await
    }
}

/// The local replica to send a request to now: the running primary with the newest view (an
/// isolated old primary may still believe it leads), or, in a one-replica process, the local
/// replica once it knows some primary (it forwards to it).
pub fn pick_target(local: &[LocalReplica]) -> Option<&LocalReplica> {
    use std::sync::atomic::Ordering::SeqCst;
    if let Some(p) = local
        .iter()
        .filter(|r| r.shared.is_running() && r.shared.is_primary.load(SeqCst))
        .max_by_key(|r| r.shared.view.load(SeqCst))
    {
        return Some(p);
    }
    match local {
        [only] if only.shared.is_running() && only.shared.primary().is_some() => Some(only),
        _ => None,
    }
}

fn stopped() -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, "replica stopped; retry")
}

impl KvService for ClusterService {
    async fn commit(
        &self,
        cmd: Command,
        timeout: Option<Duration>,
    ) -> Result<Outcome, ServiceError> {
        let bytes = cmd.encode_to_bytes();
        self.with_primary(|r| {
            let bytes = bytes.clone();
            async move {
                let (tx, rx) = oneshot::channel();
                r.tx.unbounded_send(ClientMsg::Propose {
                    command: bytes,
                    reply: Reply::to_here(tx, r.shared.executor_id()),
                    timeout,
                })
                .map_err(|_| stopped())?;
                rx.await
                    .map_err(|_| ServiceError::outcome_unknown("the replica stopped"))?
            }
        })
        .await
    }

    async fn read_version(&self) -> Result<Version, ServiceError> {
        let r = self.confirm_read().await?;
        Ok(r.reader.last_version())
    }

    async fn read(&self, at: Option<Version>, op: ReadOp) -> Result<ReadResult, ServiceError> {
        let (reader, at) = match at {
            None => {
                let r = self.confirm_read().await?;
                let v = r.reader.last_version();
                (r.reader, v)
            }
            Some(v) => {
                // Any replica that has applied `v` serves a snapshot read; wait briefly for one.
                let deadline = Instant::now() + self.inner.election_timeout;
                loop {
                    let ready = self
                        .inner
                        .local
                        .iter()
                        .filter(|r| r.shared.is_running())
                        .find(|r| r.reader.last_version() >= v);
                    if let Some(r) = ready {
                        break (r.reader.clone(), v);
                    }
                    if Instant::now() >= deadline {
                        let latest = self
                            .home()
                            .map(|r| r.reader.last_version())
                            .unwrap_or_default();
                        return Err(ServiceError::new(
                            ErrorCode::InvalidArgument,
                            format!("read version {v} is newer than the latest applied version {latest}"),
                        ));
                    }
                    glommio::timer::sleep(SNAPSHOT_WAIT_POLL).await;
                }
            }
        };
        Ok(match op {
            ReadOp::Get { cf, key } => ReadResult::Value(reader.get(&cf, &key, at)?),
            ReadOp::Range(q) => {
                ReadResult::Range(crate::service::range_off_executor(reader, q, at).await?)
            }
        })
    }

    fn applied_version(&self) -> Version {
        self.home()
            .map(|r| r.reader.last_version())
            .unwrap_or_default()
    }

    fn oldest_version(&self) -> Version {
        self.home()
            .map(|r| r.reader.oldest_version())
            .unwrap_or_default()
    }

    fn replicas(&self) -> Vec<ReplicaStatus> {
        replica_statuses(
            &self.inner.local,
            self.inner.replica_count,
            &self.inner.endpoints,
            self.inner.election_timeout,
        )
    }

    fn storage_stats(&self) -> (u64, u64, u64) {
        self.home()
            .map(|r| r.reader.approximate_stats())
            .unwrap_or_default()
    }

    fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        crate::service::render_store_gauges(self, out);
        let primary = self
            .inner
            .local
            .iter()
            .find_map(|r| r.shared.primary())
            .map_or(-1, i64::from);
        crate::metrics::gauge(
            out,
            "paxoskv_primary",
            "The replica known to lead (-1: none).",
            primary,
        );
        type Field = (
            &'static str,
            &'static str,
            &'static str,
            fn(&LocalReplica) -> u64,
        );
        let fields: [Field; 23] = [
            (
                "paxoskv_replica_up",
                "gauge",
                "1 while the replica's loop runs.",
                |r| r.shared.is_running() as u64,
            ),
            (
                "paxoskv_replica_is_primary",
                "gauge",
                "1 on the primary.",
                |r| r.shared.is_primary.load(Relaxed) as u64,
            ),
            (
                "paxoskv_replica_view",
                "gauge",
                "The Paxos view (ballot) the replica is in.",
                |r| r.shared.view.load(Relaxed),
            ),
            (
                "paxoskv_replica_commit_index",
                "gauge",
                "Highest slot handed to the applier.",
                |r| r.shared.commit_slot.load(Relaxed),
            ),
            (
                "paxoskv_replica_applied_index",
                "gauge",
                "Highest slot applied to RocksDB.",
                |r| r.shared.applied_slot.load(Relaxed),
            ),
            (
                "paxoskv_replica_apply_lag_slots",
                "gauge",
                "Committed slots not yet applied.",
                |r| {
                    r.shared
                        .commit_slot
                        .load(Relaxed)
                        .saturating_sub(r.shared.applied_slot.load(Relaxed))
                },
            ),
            (
                "paxoskv_replica_lease_reads_total",
                "counter",
                "Linearizable reads served under the primary's lease without a step of its core.",
                |r| r.shared.lease_reads.load(Relaxed),
            ),
            (
                "paxoskv_store_latest_cache_hits_total",
                "counter",
                "Point reads answered from the latest-version cache (no RocksDB iterator).",
                |r| r.reader.latest_cache_hits(),
            ),
            (
                "paxoskv_store_latest_cache_bytes",
                "gauge",
                "Bytes the latest-version cache holds (bounded by storage.latest_cache_bytes).",
                |r| r.reader.latest_cache_bytes(),
            ),
            (
                "paxoskv_replica_proposals_total",
                "counter",
                "Client commands proposed (or forwarded) here.",
                |r| r.shared.proposals.load(Relaxed),
            ),
            (
                "paxoskv_replica_committed_slots_total",
                "counter",
                "Slots committed here.",
                |r| r.shared.batches.load(Relaxed),
            ),
            (
                "paxoskv_replica_committed_commands_total",
                "counter",
                "Commands in committed slots (divide by slots for the batch size).",
                |r| r.shared.commands.load(Relaxed),
            ),
            (
                "paxoskv_replica_log_bytes",
                "gauge",
                "Command bytes the replica's in-memory log holds (bounded by consensus.log_retain_bytes beyond the durable store).",
                |r| r.shared.log_bytes.load(Relaxed),
            ),
            (
                "paxoskv_replica_log_start",
                "gauge",
                "First slot the replica's log still holds (a peer behind it needs a snapshot).",
                |r| r.shared.log_start.load(Relaxed),
            ),
            (
                "paxoskv_replica_snapshots_installed_total",
                "counter",
                "Snapshots of a peer's store installed here.",
                |r| r.shared.snapshots_installed.load(Relaxed),
            ),
            (
                "paxoskv_replica_amnesiac",
                "gauge",
                "1 while the replica lacks its durable Paxos state (started on an empty WAL) and does not vote.",
                |r| r.shared.amnesiac.load(Relaxed) as u64,
            ),
            (
                "paxoskv_replica_rebuilds_total",
                "counter",
                "Times the replica ended amnesia since this process started (it rebuilt and votes again).",
                |r| r.shared.rebuilds.load(Relaxed),
            ),
            (
                "paxoskv_replica_snapshots_served_total",
                "counter",
                "Snapshot transfers this replica started serving to a peer.",
                |r| r.shared.snapshots_served.load(Relaxed),
            ),
            (
                "paxoskv_replica_slots_inflight",
                "gauge",
                "Slots proposed by this primary and not yet chosen.",
                |r| r.shared.slots_inflight.load(Relaxed),
            ),
            (
                "paxoskv_replica_proposal_batches_total",
                "counter",
                "Turns of the replica loop that handed the core a batch of proposals.",
                |r| r.shared.proposal_batches.load(Relaxed),
            ),
            (
                "paxoskv_replica_wal_syncs_total",
                "counter",
                "WAL group commits (one durable write each).",
                |r| r.shared.wal_syncs.load(Relaxed),
            ),
            (
                "paxoskv_replica_wal_sync_seconds_total",
                "counter",
                "Time spent in WAL group commits.",
                |r| r.shared.wal_sync_us_total.load(Relaxed),
            ),
            (
                "paxoskv_replica_wal_bytes_total",
                "counter",
                "Bytes written to the WAL.",
                |r| r.shared.wal_bytes.load(Relaxed),
            ),
        ];
        for (name, kind, help, get) in fields {
            let _ = writeln!(
                out,
                "# HELP {name} {help}
# TYPE {name} {kind}"
            );
            for r in &self.inner.local {
                // Not known before the replica has read its WAL: no sample rather than a 0.
                if name == "paxoskv_replica_amnesiac" && !r.shared.recovered.load(Relaxed) {
                    continue;
                }
                let v = get(r);
                if name == "paxoskv_replica_wal_sync_seconds_total" {
                    let _ = writeln!(out, "{name}{{replica=\"{}\"}} {}", r.id, v as f64 / 1e6);
                } else {
                    let _ = writeln!(out, "{name}{{replica=\"{}\"}} {v}", r.id);
                }
            }
        }
        render_histograms(&self.inner.local, out);
    }

    fn set_isolated(&self, replica: u32, isolated: bool) -> Result<(), ServiceError> {
        match self.inner.local.iter().find(|r| r.id == replica) {
            Some(r) => {
                r.shared.faults.isolate(isolated);
                Ok(())
            }
            None => Err(ServiceError::new(
                ErrorCode::InvalidArgument,
                format!("replica {replica} does not run in this process"),
            )),
        }
    }
}

/// The histograms of every local replica, in Prometheus form: commands per committed slot, WAL
/// group-commit durations, heartbeat timer lag, and where a slot's time goes (proposed to
/// chosen, Accept to Accepted).
fn render_histograms(local: &[LocalReplica], out: &mut String) {
    use super::shared::{DURATION_US_BUCKETS, SLOT_COMMANDS_BUCKETS};
    use std::sync::atomic::Ordering::Relaxed;
    render_histogram(
        out,
        local,
        (
            "paxoskv_replica_slot_commands",
            "Commands per committed slot (the batch size).",
        ),
        (&SLOT_COMMANDS_BUCKETS, 1.0),
        |r| &r.shared.slot_commands[..],
        |r| r.shared.commands.load(Relaxed) as f64,
    );
    type Of = fn(&LocalReplica) -> &super::shared::Durations;
    let durations: [(&str, &str, Of); 4] = [
        (
            "paxoskv_replica_wal_sync_seconds",
            "Duration of WAL group commits (a durable write each).",
            |r| &r.shared.wal_sync,
        ),
        (
            "paxoskv_replica_timer_lag_seconds",
            "How late the replica's heartbeat timer fired: time its executor could not run \
             (a busy or starved core).",
            |r| &r.shared.timer_lag,
        ),
        (
            "paxoskv_replica_slot_commit_seconds",
            "From this primary proposing a slot (its Accept leaving) to the slot being chosen.",
            |r| &r.shared.slot_commit,
        ),
        (
            "paxoskv_replica_accept_seconds",
            "From an Accept arriving at this replica to its Accepted leaving: the WAL write and \
             the executor's waits around it.",
            |r| &r.shared.accept,
        ),
    ];
    for (name, help, of) in durations {
        render_histogram(
            out,
            local,
            (name, help),
            (&DURATION_US_BUCKETS, 1e6),
            |r| &of(r).buckets[..],
            |r| of(r).total_us.load(Relaxed) as f64 / 1e6,
        );
    }
}

/// One histogram per local replica: `counts` per bucket (not cumulative) with upper
/// `bounds` (the last one +Inf), divided by `unit` for the `le` labels.
fn render_histogram(
    out: &mut String,
    local: &[LocalReplica],
    (name, help): (&str, &str),
    (bounds, unit): (&[u64], f64),
    counts: impl Fn(&LocalReplica) -> &[std::sync::atomic::AtomicU64],
    sum: impl Fn(&LocalReplica) -> f64,
) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for r in local {
        let mut cumulative = 0;
        for (bound, count) in bounds.iter().zip(counts(r)) {
            cumulative += count.load(Relaxed);
            let le = if *bound == u64::MAX {
                "+Inf".to_string()
            } else {
                (*bound as f64 / unit).to_string()
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{replica=\"{}\",le=\"{le}\"}} {cumulative}",
                r.id
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{replica=\"{}\"}} {}\n{name}_count{{replica=\"{}\"}} {cumulative}",
            r.id,
            sum(r),
            r.id
        );
    }
}

/// Status of every replica as seen from this process: local replicas first-hand, remote ones
/// by when a local replica last heard from them.
pub fn replica_statuses(
    local: &[LocalReplica],
    replica_count: u32,
    endpoints: &[String],
    election_timeout: Duration,
) -> Vec<ReplicaStatus> {
    use std::sync::atomic::Ordering::SeqCst;
    let now = crate::util::time::unix_ms();
    let fresh_ms = (election_timeout.as_millis() as i64) * 2;
    let primary = local
        .iter()
        .filter(|r| r.shared.is_running())
        .find_map(|r| r.shared.primary());
    (0..replica_count)
        .map(|id| {
            let endpoint = endpoints.get(id as usize).cloned().unwrap_or_default();
            if let Some(r) = local.iter().find(|r| r.id == id) {
                let s = &r.shared;
                let running = s.is_running();
                ReplicaStatus {
                    id,
                    endpoint,
                    status: s.status(),
                    is_primary: running && s.is_primary.load(SeqCst),
                    last_seen_unix_ms: if running { now } else { 0 },
                    view: s.view.load(SeqCst),
                    uptime_seconds: s.started.elapsed().as_secs() as i64,
                }
            } else {
                let heard = local
                    .iter()
                    .map(|r| {
                        r.shared
                            .last_heard_unix_ms
                            .get(id as usize)
                            .map(|a| a.load(SeqCst))
                            .unwrap_or(0)
                    })
                    .max()
                    .unwrap_or(0);
                let alive = heard > 0 && now - heard <= fresh_ms;
                ReplicaStatus {
                    id,
                    endpoint,
                    status: if heard == 0 {
                        "unknown"
                    } else if alive {
                        "healthy"
                    } else {
                        "unreachable"
                    },
                    is_primary: primary == Some(id),
                    last_seen_unix_ms: heard,
                    view: local
                        .first()
                        .map(|r| r.shared.view.load(SeqCst))
                        .unwrap_or(0),
                    uptime_seconds: 0,
                }
            }
        })
        .collect()
}
