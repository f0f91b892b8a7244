//! Diagnostics and test hooks: fault injection, cluster health, node status, database stats.

use super::*;

impl From<Result<Option<Bytes>, ServiceError>> for GetResponse {
    fn from(r: Result<Option<Bytes>, ServiceError>) -> Self {
        match r {
            Ok(Some(v)) => GetResponse::new(v.to_vec(), true, None::<String>),
            Ok(None) => GetResponse::new(Vec::new(), false, None::<String>),
            Err(e) => GetResponse::new(Vec::new(), false, err_text(&e)),
        }
    }
}

/// Faults active at once, at most, and the longest delay or error window one may ask for.
const FAULTS_MAX: usize = 64;
const FAULT_DURATION_MAX_MS: u64 = 60_000;

pub(super) fn set_fault<S: KvService>(
    ctx: &FrontCtx<S>,
    r: FaultInjectionRequest,
) -> FaultInjectionResponse {
    if !ctx.limits.enable_fault_injection {
        return FaultInjectionResponse::new(
            false,
            super::err_text(&super::unauthorized(
                "fault injection is disabled (thrift.enable_fault_injection = false)",
            )),
        );
    }
    if let Err(e) = ctx.check_token(&r.auth_token) {
        return FaultInjectionResponse::new(false, e);
    }
    let p = r.probability.map(|p| p.0).unwrap_or(0.0);
    if !(0.0..=1.0).contains(&p) {
        return FaultInjectionResponse::new(
            false,
            format!("INVALID_ARGUMENT: probability {p} is outside 0..1"),
        );
    }
    let ms = r.duration_ms.unwrap_or(0).max(0) as u64;
    if ms > FAULT_DURATION_MAX_MS {
        return FaultInjectionResponse::new(
            false,
            format!("INVALID_ARGUMENT: duration_ms {ms} is above {FAULT_DURATION_MAX_MS}"),
        );
    }
    let kind = match r.fault_type.as_str() {
        "none" | "clear" | "" => {
            ctx.faults.borrow_mut().clear();
            return FaultInjectionResponse::new(true, None::<String>);
        }
        // target_operation "replica:N": cut replica N off from its peers, or heal it.
        t @ ("partition" | "heal") => {
            let replica = r.target_operation.as_deref().and_then(|s| s.strip_prefix("replica:")).and_then(|n| n.parse::<u32>().ok());
            let Some(replica) = replica else {
                return FaultInjectionResponse::new(false, "INVALID_ARGUMENT: partition needs target_operation \"replica:N\"".to_string());
            };
            return match ctx.service.set_isolated(replica, t == "partition") {
                Ok(()) => FaultInjectionResponse::new(true, None::<String>),
                Err(e) => FaultInjectionResponse::new(false, format!("INVALID_ARGUMENT: {e}")),
            };
        }
        "delay" | "latency" => FaultKind::Delay(Duration::from_millis(ms)),
        "error" | "unavailable" => FaultKind::Error,
        other => return FaultInjectionResponse::new(false, format!("INVALID_ARGUMENT: unknown fault type {other:?} (use delay, error, partition, heal, clear)")),
    };
    // For a delay fault duration_ms is the delay; for an error fault it is how long it lasts.
    let until = match kind {
        FaultKind::Error if ms > 0 => Some(Instant::now() + Duration::from_millis(ms)),
        _ => None,
    };
    let target = r.target_operation.filter(|t| !t.is_empty() && t != "*");
    if ctx.faults.borrow().len() >= FAULTS_MAX {
        return FaultInjectionResponse::new(
            false,
            format!("TOO_LARGE: {FAULTS_MAX} faults are active; clear them first"),
        );
    }
    ctx.faults.borrow_mut().push(Fault {
        kind,
        probability: p,
        target,
        until,
    });
    FaultInjectionResponse::new(true, None::<String>)
}

pub(super) fn node_status(n: &crate::service::ReplicaStatus) -> NodeStatus {
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

pub(super) fn cluster_health<S: KvService>(service: &S) -> ClusterHealth {
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

pub(super) fn database_stats<S: KvService>(ctx: &FrontCtx<S>) -> DatabaseStats {
    let s = &ctx.stats;
    let (keys, bytes, pending) = ctx.service.storage_stats();
    DatabaseStats {
        total_keys: keys as i64,
        total_size_bytes: bytes as i64,
        write_operations_count: s.writes.get() as i64,
        read_operations_count: s.reads.get() as i64,
        average_response_time_ms: thrift::OrderedFloat::from(ctx.metrics.mean_latency_ms()),
        active_transactions: ctx.txns.borrow().open_count() as i64,
        committed_transactions: s.committed_txns.get() as i64,
        aborted_transactions: s.aborted_txns.get() as i64,
        cache_hit_rate_percent: None,
        compaction_pending_bytes: Some(pending as i64),
    }
}
