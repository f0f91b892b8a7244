//! Transactions: atomicCommit (client-side transactions: read version, operations, conflicts in
//! one call) and the server-side interactive ones: beginTransaction, commitTransaction,
//! abortTransaction.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::super::ctx::{bump, invalid, version_of, FrontCtx, DEFAULT_COMMIT_TIMEOUT};
use super::super::generated::{
    AbortTransactionRequest, AtomicCommitRequest, BeginTransactionRequest, CommitTransactionRequest,
};
use super::{commit_write, Handled};
use crate::service::{ErrorCode, KvService, ServiceError};
use crate::txn::interactive::{Session, TxnError};
use crate::txn::{Command, Outcome as Applied};
use crate::types::Version;

/// Longest `timeout_seconds` a commit may ask for, and a transaction's longest lifetime.
const COMMIT_TIMEOUT_MAX_S: i64 = 3600;
const TRANSACTION_TIMEOUT_MAX_S: i64 = 86_400;

pub(super) fn atomic_commit<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    session: &Rc<RefCell<Session>>,
    r: AtomicCommitRequest,
) -> impl Handled<Version> {
    // The connection's registered conflicts and pinned read version go with this commit.
    let (pinned, registered) = {
        let mut s = session.borrow_mut();
        s.read_conflict_bytes = 0;
        (s.read_version.take(), std::mem::take(&mut s.read_conflicts))
    };
    // A timeout the client sets is the replica's too; without one the replica's
    // consensus.commit_timeout applies (and the front's default as a backstop).
    let asked = r
        .timeout_seconds
        .map(|t| Duration::from_secs(t.clamp(1, COMMIT_TIMEOUT_MAX_S) as u64));
    let timeout = asked.unwrap_or(DEFAULT_COMMIT_TIMEOUT);
    let prepared = (|| {
        let rv = if r.read_version <= 0 {
            pinned.unwrap_or(Version(0))
        } else {
            version_of(r.read_version, "read_version")?
        };
        let mut conflicts = ctx.conflict_keys(r.read_conflict_keys)?;
        conflicts.extend(ctx.conflict_ranges(r.read_conflict_ranges)?);
        conflicts.extend(registered);
        ctx.build_command(Some(rv), r.operations, conflicts)
    })();
    let (c, session) = (ctx.clone(), session.clone());
    async move {
        let v = commit_counted(&c, prepared, timeout, asked).await?;
        session.borrow_mut().committed_version = Some(v);
        Ok(v)
    }
}

/// Commits a transaction's command (if it could be built), counts it as committed or aborted,
/// and gives its outcome as the client sees it.
async fn commit_counted<S: KvService>(
    c: &FrontCtx<S>,
    prepared: Result<Command, ServiceError>,
    timeout: Duration,
    asked: Option<Duration>,
) -> Result<Version, ServiceError> {
    let res = match prepared {
        Ok(cmd) => commit_write(c, cmd, timeout, asked).await,
        Err(e) => Err(e),
    };
    c.note_outcome(&res);
    committed(res)
}

/// A commit's outcome as the client sees it.
fn committed(r: Result<Applied, ServiceError>) -> Result<Version, ServiceError> {
    match r? {
        Applied::Committed { version, .. } => Ok(version),
        Applied::Conflict { key } => Err(ServiceError::new(
            ErrorCode::Conflict,
            format!(
                "key {:?} was written after the read version",
                String::from_utf8_lossy(&key)
            ),
        )),
        // A read version that left the window can never commit: retry with a new one, exactly
        // as after a conflict, so it carries CONFLICT's code.
        Applied::TooOld {
            read_version,
            oldest,
        } => Err(ServiceError::new(
            ErrorCode::Conflict,
            format!(
                "read version {read_version} is older than the oldest version kept ({oldest}) (TOO_OLD)"
            ),
        )),
        Applied::Invalid(m) => Err(invalid(m)),
    }
}

pub(super) fn begin<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: BeginTransactionRequest,
) -> impl Handled<(String, Version)> {
    let timeout = r
        .timeout_seconds
        .map(|s| Duration::from_secs(s.clamp(1, TRANSACTION_TIMEOUT_MAX_S) as u64))
        .unwrap_or(ctx.limits.default_transaction_timeout);
    let asked = r.read_version.map(|v| version_of(v, "read_version"));
    let c = ctx.clone();
    async move {
        let v = match asked {
            Some(Ok(v)) if v < c.service.oldest_version() => {
                return Err(ServiceError::new(
                    ErrorCode::TooOld,
                    format!("read version {v} left the MVCC window"),
                ))
            }
            Some(Ok(v)) if v > c.service.applied_version() => {
                return Err(invalid(format!(
                    "read version {v} is newer than the latest committed version"
                )))
            }
            Some(v) => v?,
            None => c.service.read_version().await?,
        };
        let id = c
            .shared
            .txns()
            .begin(v, timeout, Instant::now())
            .map_err(|e| ServiceError::new(ErrorCode::Unavailable, e.to_string()))?;
        Ok((id, v))
    }
}

pub(super) fn commit<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: CommitTransactionRequest,
) -> impl Handled<Version> {
    let prepared = (|| {
        let rv = ctx
            .shared
            .txns()
            .finish(&r.transaction_id, Instant::now())
            .map_err(|e| match e {
                TxnError::TimedOut(_) => ServiceError::new(ErrorCode::Timeout, e.to_string()),
                _ => invalid(e.to_string()),
            })?;
        let mut conflicts = ctx.conflict_keys(r.read_conflict_keys.unwrap_or_default())?;
        conflicts.extend(ctx.conflict_ranges(r.read_conflict_ranges)?);
        ctx.build_command(Some(rv), r.operations, conflicts)
    })();
    let c = ctx.clone();
    async move { commit_counted(&c, prepared, DEFAULT_COMMIT_TIMEOUT, None).await }
}

pub(super) fn abort<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: AbortTransactionRequest,
) -> impl Handled<()> {
    let found = ctx.shared.txns().abort(&r.transaction_id);
    let res = if found {
        bump(&ctx.shared.stats.aborted_txns);
        Ok(())
    } else {
        Err(invalid(format!(
            "unknown transaction id {:?}",
            r.transaction_id
        )))
    };
    std::future::ready(res)
}
