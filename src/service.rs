//! The interface between the Thrift front and whatever executes requests: a single local log
//! (`local::LocalService`) or the replicated cluster (`cluster::ClusterService`).
//!
//! Must not: know about Thrift. Errors here carry the stable client-facing codes.

use std::future::Future;

use bytes::Bytes;

use crate::storage::{RangeQuery, RangeResult, StorageError};
use crate::txn::{Command, Outcome};
use crate::types::Version;

pub use crate::error_code::ErrorCode;

/// An error a client can act on: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
}

impl ServiceError {
    /// A write handed to the replicas whose answer was lost (the replica stopped): it may or may
    /// not apply, so it is a `TIMEOUT` (outcome unknown), never `UNAVAILABLE` (not applied).
    pub fn outcome_unknown(why: &str) -> Self {
        ServiceError::new(
            ErrorCode::Timeout,
            format!("{why}; the write may or may not apply"),
        )
    }

    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError {
            code,
            message: message.into(),
        }
    }
}

impl From<StorageError> for ServiceError {
    fn from(e: StorageError) -> Self {
        let code = match &e {
            StorageError::TooOld { .. } => ErrorCode::TooOld,
            StorageError::FutureVersion { .. } => ErrorCode::InvalidArgument,
            StorageError::Installing => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        };
        ServiceError::new(code, e.to_string())
    }
}

/// Runs a range read on the current glommio executor's blocking pool: a long scan never holds
/// up the executor's other tasks (every connection of the front, and in `serve` the replica
/// that shares its thread). Point reads stay inline: one seek, bounded.
pub async fn range_off_executor(
    reader: crate::storage::KvReader,
    q: RangeQuery,
    at: Version,
) -> Result<RangeResult, StorageError> {
    glommio::executor()
        .spawn_blocking(move || reader.range(&q, at))
        .await
}

/// A read: one key or a key-selector range.
#[derive(Debug, Clone)]
pub enum ReadOp {
    Get { cf: String, key: Bytes },
    Range(RangeQuery),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    Value(Option<Bytes>),
    Range(RangeResult),
}

/// One replica as the cluster sees it, for health and status calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub id: u32,
    pub endpoint: String,
    /// healthy | degraded | unreachable | unknown
    pub status: &'static str,
    pub is_primary: bool,
    pub last_seen_unix_ms: i64,
    pub view: u64,
    pub uptime_seconds: i64,
}

/// What the front needs from the store. Futures are `!Send`: they run on the front's executor.
pub trait KvService: Clone + 'static {
    /// Agrees on `cmd` and applies it; the outcome once it is durable on a majority, or
    /// `TIMEOUT` after `timeout` (the service's default when `None`).
    fn commit(
        &self,
        cmd: Command,
        timeout: Option<std::time::Duration>,
    ) -> impl Future<Output = Result<Outcome, ServiceError>>;
    /// A version at least as new as every commit acknowledged before the call.
    fn read_version(&self) -> impl Future<Output = Result<Version, ServiceError>>;
    /// Reads at `at`, or linearizably at the latest version when `at` is `None`.
    fn read(
        &self,
        at: Option<Version>,
        op: ReadOp,
    ) -> impl Future<Output = Result<ReadResult, ServiceError>>;
    /// The newest version applied where this front reads (no consensus round).
    fn applied_version(&self) -> Version;
    /// The oldest version snapshot reads may still ask for.
    fn oldest_version(&self) -> Version;
    fn replicas(&self) -> Vec<ReplicaStatus>;
    /// (keys, bytes, pending compaction bytes) of the store this front reads.
    fn storage_stats(&self) -> (u64, u64, u64);
    /// Appends per-replica and storage metrics in the Prometheus text format.
    fn render_metrics(&self, out: &mut String) {
        render_store_gauges(self, out);
    }
    /// Cuts replica `replica` off from its peers (or heals it): fault injection for tests.
    fn set_isolated(&self, replica: u32, isolated: bool) -> Result<(), ServiceError> {
        let _ = (replica, isolated);
        Err(ServiceError::new(
            ErrorCode::InvalidArgument,
            "this server has no replicas to partition",
        ))
    }
}

/// The store gauges every service reports (from `storage_stats` and `applied_version`).
pub fn render_store_gauges<S: KvService>(s: &S, out: &mut String) {
    use crate::metrics::gauge;
    let (keys, bytes, pending) = s.storage_stats();
    gauge(
        out,
        "paxoskv_store_keys_estimate",
        "RocksDB estimate of live keys.",
        keys,
    );
    gauge(
        out,
        "paxoskv_store_bytes",
        "RocksDB SST and memtable bytes.",
        bytes,
    );
    gauge(
        out,
        "paxoskv_store_pending_compaction_bytes",
        "RocksDB bytes waiting for compaction.",
        pending,
    );
    gauge(
        out,
        "paxoskv_applied_version",
        "Newest applied commit version.",
        s.applied_version().0,
    );
}
