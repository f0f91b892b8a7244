//! ping, diagnostics (getClusterHealth, getDatabaseStats, getNodeInfo; admin token when one is
//! configured) and fault injection (setFaultInjection; only when enabled).

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::super::ctx::{invalid, too_large, unauthorized, Fault, FaultKind, FrontCtx};
use super::super::generated::*;
use super::Handled;
use crate::service::{KvService, ServiceError};
use crate::util::time::unix_us;

/// Faults active at once, at most, and the longest delay or error window one may ask for.
const FAULTS_MAX: usize = 64;
const FAULT_DURATION_MAX_MS: u64 = 60_000;

pub(super) fn ping(r: PingRequest) -> impl Handled<PingResponse> {
    std::future::ready(Ok(PingResponse::new(
        r.message.unwrap_or_default(),
        r.timestamp.unwrap_or(0),
        unix_us(),
    )))
}

pub(super) fn cluster_health<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: GetClusterHealthRequest,
) -> impl Handled<ClusterHealth> {
    std::future::ready(
        ctx.check_admin(&r.auth_token)
            .map(|()| health_of(&ctx.service)),
    )
}

pub(super) fn database_stats<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: GetDatabaseStatsRequest,
) -> impl Handled<DatabaseStats> {
    std::future::ready(ctx.check_admin(&r.auth_token).map(|()| stats_of(ctx)))
}

pub(super) fn node_info<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: GetNodeInfoRequest,
) -> impl Handled<NodeStatus> {
    let res = ctx.check_admin(&r.auth_token).and_then(|()| {
        let nodes = ctx.service.replicas();
        let pick = match r.node_id {
            Some(id) => nodes.iter().find(|n| n.id as i32 == id),
            None => nodes.iter().find(|n| n.is_primary).or(nodes.first()),
        };
        pick.map(node_status)
            .ok_or_else(|| invalid(format!("no node {:?}", r.node_id)))
    });
    std::future::ready(res)
}

pub(super) fn set_fault_injection<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: FaultInjectionRequest,
) -> impl Handled<()> {
    std::future::ready(set_fault(ctx, r))
}

fn set_fault<S: KvService>(
    ctx: &FrontCtx<S>,
    r: FaultInjectionRequest,
) -> Result<(), ServiceError> {
    if !ctx.limits.enable_fault_injection {
        return Err(unauthorized(
            "fault injection is disabled (thrift.enable_fault_injection = false)",
        ));
    }
    ctx.check_token(&r.auth_token)?;
    let p = r.probability.map(|p| p.0).unwrap_or(0.0);
    if !(0.0..=1.0).contains(&p) {
        return Err(invalid(format!("probability {p} is outside 0..1")));
    }
    let ms = r.duration_ms.unwrap_or(0).max(0) as u64;
    if ms > FAULT_DURATION_MAX_MS {
        return Err(invalid(format!(
            "duration_ms {ms} is above {FAULT_DURATION_MAX_MS}"
        )));
    }
    let kind = match r.fault_type.as_str() {
        "none" | "clear" | "" => {
            ctx.shared.with_faults(|f| f.clear());
            return Ok(());
        }
        // target_operation "replica:N": cut replica N off from its peers, or heal it.
        t @ ("partition" | "heal") => {
            let replica = r
                .target_operation
                .as_deref()
                .and_then(|s| s.strip_prefix("replica:"))
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| invalid("partition needs target_operation \"replica:N\""))?;
            return ctx.service.set_isolated(replica, t == "partition");
        }
        "delay" | "latency" => FaultKind::Delay(Duration::from_millis(ms)),
        "error" | "unavailable" => FaultKind::Error,
        other => {
            return Err(invalid(format!(
                "unknown fault type {other:?} (use delay, error, partition, heal, clear)"
            )))
        }
    };
    // For a delay fault duration_ms is the delay; for an error fault it is how long it lasts.
    let until = match kind {
        FaultKind::Error if ms > 0 => Some(Instant::now() + Duration::from_millis(ms)),
        _ => None,
    };
    let target = r.target_operation.filter(|t| !t.is_empty() && t != "*");
    ctx.shared.with_faults(|faults| {
        if faults.len() >= FAULTS_MAX {
            return Err(too_large(format!(
                "{FAULTS_MAX} faults are active; clear them first"
            )));
        }
        faults.push(Fault {
            kind,
            probability: p,
            target,
            until,
        });
        Ok(())
    })
}

fn node_status(n: &crate::service::ReplicaStatus) -> NodeStatus {
    NodeStatus::new(
        n.id as i32,
        n.endpoint.clone(),
        n.status.to_string(),
        n.is_primary,
        n.last_seen_unix_ms,
        n.view as i64,
        n.uptime_seconds,
    )
}

fn health_of<S: KvService>(service: &S) -> ClusterHealth {
    let nodes = service.replicas();
    let healthy = nodes.iter().filter(|n| n.status == "healthy").count();
    let total = nodes.len();
    let leader = nodes.iter().find(|n| n.is_primary).map(node_status);
    let status = if healthy == total {
        "healthy"
    } else if healthy * 2 > total && leader.is_some() {
        "degraded"
    } else {
        "unhealthy"
    };
    let term = nodes.iter().map(|n| n.view).max().unwrap_or(0);
    ClusterHealth::new(
        nodes.iter().map(node_status).collect(),
        healthy as i32,
        total as i32,
        leader,
        status.to_string(),
        term as i64,
    )
}

fn stats_of<S: KvService>(ctx: &FrontCtx<S>) -> DatabaseStats {
    let s = &ctx.shared.stats;
    let (keys, bytes, pending) = ctx.service.storage_stats();
    DatabaseStats {
        total_keys: keys as i64,
        total_size_bytes: bytes as i64,
        write_operations_count: s.writes.load(Relaxed) as i64,
        read_operations_count: s.reads.load(Relaxed) as i64,
        average_response_time_ms: thrift::OrderedFloat::from(ctx.shared.metrics.mean_latency_ms()),
        active_transactions: ctx.shared.txns().open_count() as i64,
        committed_transactions: s.committed_txns.load(Relaxed) as i64,
        aborted_transactions: s.aborted_txns.load(Relaxed) as i64,
        cache_hit_rate_percent: None,
        compaction_pending_bytes: Some(pending as i64),
    }
}
