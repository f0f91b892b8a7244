//! What every connection of one front shares (`FrontCtx`: the service, limits, counters,
//! interactive transactions, injected faults) and the validation every command uses: sizes,
//! column families, versions, operations, range selectors, conflict ranges. A check that fails
//! returns the `ServiceError` the client gets.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::generated::KeyRange as ThriftKeyRange;
use super::generated::Operation;
use crate::config::ThriftSection;
use crate::service::{ErrorCode, KvService, ServiceError};
use crate::storage::RangeQuery;
use crate::txn::command::single_key_range;
use crate::txn::interactive::{Session, TxnTable};
use crate::txn::{Command, KeyRange, Outcome, WriteOp, DEFAULT_CF};
use crate::types::Version;
use crate::util::time::unix_us;

const CF_NAME_BYTES_MAX: usize = 256;
const DEFAULT_RANGE_LIMIT: i32 = 1000;
/// How long the front waits for a commit's outcome when the client names no timeout (the
/// replica's `consensus.commit_timeout` answers first unless it is longer).
pub(super) const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Counters for getDatabaseStats and metrics, over every executor that serves connections.
#[derive(Default)]
pub struct FrontStats {
    pub writes: AtomicU64,
    pub reads: AtomicU64,
    /// Requests started and not yet answered (what a graceful stop waits for).
    pub in_flight: AtomicU64,
    pub committed_txns: AtomicU64,
    pub aborted_txns: AtomicU64,
}

/// Adds one to a counter (statistics only: no ordering with anything else).
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A fault injected with setFaultInjection (only when enabled in the config).
#[derive(Debug, Clone)]
pub(super) struct Fault {
    pub(super) kind: FaultKind,
    pub(super) probability: f64,
    pub(super) target: Option<String>,
    pub(super) until: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum FaultKind {
    Delay(Duration),
    Error,
}

/// What every connection of the server shares, whichever executor serves it: the bounds that
/// count over all connections, the interactive transactions (an id begun on one connection may
/// be finished on another), the counters and the injected faults.
pub struct FrontShared {
    pub metrics: Arc<crate::metrics::Metrics>,
    txns: Mutex<TxnTable>,
    pub stats: FrontStats,
    faults: Mutex<Vec<Fault>>,
    /// How many faults `faults` holds (every request looks; almost always 0, without a lock).
    fault_count: AtomicUsize,
    /// Request bytes read and not yet answered, over every connection.
    pub in_flight_bytes: AtomicU64,
    /// Open client connections (bounded by `thrift.max_connections`).
    pub open_connections: AtomicU32,
}

impl FrontShared {
    pub fn new(limits: &ThriftSection, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let salt = unix_us() as u64;
        FrontShared {
            metrics,
            txns: Mutex::new(TxnTable::new(limits.max_open_transactions as usize, salt)),
            stats: FrontStats::default(),
            faults: Mutex::new(Vec::new()),
            fault_count: AtomicUsize::new(0),
            in_flight_bytes: AtomicU64::new(0),
            open_connections: AtomicU32::new(0),
        }
    }

    /// The interactive transactions (a poisoned lock is taken as is: the table stays valid
    /// between its calls, none of which can leave it half-changed).
    pub(super) fn txns(&self) -> MutexGuard<'_, TxnTable> {
        self.txns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the injected faults.
    pub(super) fn with_faults<T>(&self, f: impl FnOnce(&mut Vec<Fault>) -> T) -> T {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut faults);
        self.fault_count.store(faults.len(), Ordering::Relaxed);
        out
    }
}

/// What the connections served by one executor share: the service (bound to that executor),
/// the limits, and the server-wide `shared` state.
pub struct FrontCtx<S> {
    pub service: S,
    pub limits: ThriftSection,
    pub shared: Arc<FrontShared>,
    rng: Cell<u64>,
}

/// `TOO_LARGE` when `bytes` exceed the `thrift.<setting>` bound `limit`.
fn within_limit(what: &str, bytes: &[u8], setting: &str, limit: u32) -> Result<(), ServiceError> {
    if bytes.len() > limit as usize {
        return Err(too_large(format!(
            "{what} of {} bytes exceeds thrift.{setting} ({limit})",
            bytes.len()
        )));
    }
    Ok(())
}

impl<S: KvService> FrontCtx<S> {
    pub fn new(service: S, limits: ThriftSection, shared: Arc<FrontShared>) -> Self {
        FrontCtx {
            service,
            limits,
            shared,
            rng: Cell::new(unix_us() as u64 | 1),
        }
    }

    pub(super) fn chance(&self, p: f64) -> bool {
        // xorshift64: fault injection needs no quality randomness.
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub(super) fn fault_for(&self, method: &str) -> Option<FaultKind> {
        // Every request asks: with no fault set (always, unless a test set one) that is all.
        if self.shared.fault_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = Instant::now();
        let f = self.shared.with_faults(|faults| {
            faults.retain(|f| f.until.is_none_or(|u| u > now));
            faults
                .iter()
                .find(|f| f.target.as_deref().is_none_or(|t| t == method))
                .cloned()
        })?;
        self.chance(f.probability).then_some(f.kind)
    }
}

pub(super) fn unauthorized(msg: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::Unauthorized, msg)
}

pub(super) fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::InvalidArgument, msg)
}

/// Compares a presented token with the configured one in time that does not depend on where
/// they differ (a timing side channel would reveal the token byte by byte).
pub(super) fn token_matches(given: Option<&str>, want: &str) -> bool {
    let given = given.unwrap_or("").as_bytes();
    let want = want.as_bytes();
    let mut diff = u8::from(given.len() != want.len());
    for (i, w) in want.iter().enumerate() {
        diff |= w ^ given.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

pub(super) fn too_large(msg: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::TooLarge, msg)
}

pub(super) fn cf_of(cf: Option<String>) -> Result<String, ServiceError> {
    let cf = cf.unwrap_or_else(|| DEFAULT_CF.to_string());
    if cf.len() > CF_NAME_BYTES_MAX {
        return Err(invalid(format!(
            "column family name of {} bytes exceeds {CF_NAME_BYTES_MAX}",
            cf.len()
        )));
    }
    Ok(cf)
}

pub(super) fn version_of(v: i64, what: &str) -> Result<Version, ServiceError> {
    if v < 0 {
        return Err(invalid(format!("{what} {v} is negative")));
    }
    Ok(Version(v as u64))
}

impl<S: KvService> FrontCtx<S> {
    pub(super) fn check_key(&self, key: &[u8]) -> Result<(), ServiceError> {
        within_limit("key", key, "max_key_bytes", self.limits.max_key_bytes)
    }

    pub(super) fn check_value(&self, value: &[u8]) -> Result<(), ServiceError> {
        within_limit(
            "value",
            value,
            "max_value_bytes",
            self.limits.max_value_bytes,
        )
    }

    pub(super) fn write_op(&self, op: Operation) -> Result<WriteOp, ServiceError> {
        let cf = cf_of(op.column_family)?;
        self.check_key(&op.key)?;
        if let Some(v) = &op.value {
            self.check_value(v)?;
        }
        let key = Bytes::from(op.key);
        let value = op.value.map(Bytes::from);
        Ok(match op.type_.as_str() {
            "set" => WriteOp::Set {
                cf,
                key,
                value: value.ok_or_else(|| invalid("a set operation needs a value"))?,
            },
            "delete" => WriteOp::Delete { cf, key },
            "SET_VERSIONSTAMPED_KEY" => WriteOp::SetVersionstampedKey {
                cf,
                key_prefix: key,
                value: value.unwrap_or_default(),
            },
            "SET_VERSIONSTAMPED_VALUE" => WriteOp::SetVersionstampedValue {
                cf,
                key,
                value_prefix: value
                    .ok_or_else(|| invalid("SET_VERSIONSTAMPED_VALUE needs a value prefix"))?,
            },
            other => {
                return Err(invalid(format!(
                    "unknown operation type {other:?} (use set, delete, SET_VERSIONSTAMPED_KEY, SET_VERSIONSTAMPED_VALUE)"
                )))
            }
        })
    }

    /// A blind command with one versionstamped write, after the size and stamp checks.
    pub(super) fn versionstamp_command(
        &self,
        key: &[u8],
        value: &[u8],
        op: impl FnOnce(Bytes, Bytes) -> WriteOp,
    ) -> Result<Command, ServiceError> {
        self.check_key(key)?;
        self.check_value(value)?;
        let cmd = Command::blind(vec![op(
            Bytes::copy_from_slice(key),
            Bytes::copy_from_slice(value),
        )]);
        cmd.validate()?;
        Ok(cmd)
    }

    pub(super) fn conflict_keys(&self, keys: Vec<Vec<u8>>) -> Result<Vec<KeyRange>, ServiceError> {
        keys.into_iter()
            .map(|k| {
                self.check_key(&k)?;
                Ok(single_key_range(DEFAULT_CF, &Bytes::from(k)))
            })
            .collect()
    }

    /// Conflict ranges a commit names (atomicCommit's field 5, commitTransaction's field 4).
    pub(super) fn conflict_ranges(
        &self,
        ranges: Option<Vec<ThriftKeyRange>>,
    ) -> Result<Vec<KeyRange>, ServiceError> {
        ranges
            .unwrap_or_default()
            .into_iter()
            .map(|kr| {
                self.check_key(&kr.begin_key)?;
                self.check_key(&kr.end_key)?;
                if kr.begin_key > kr.end_key {
                    return Err(invalid("a read conflict range begins after its end"));
                }
                Ok(KeyRange {
                    cf: cf_of(kr.column_family)?,
                    begin: Bytes::from(kr.begin_key),
                    end: Bytes::from(kr.end_key),
                })
            })
            .collect()
    }

    pub(super) fn build_command(
        &self,
        read_version: Option<Version>,
        ops: Vec<Operation>,
        mut read_conflicts: Vec<KeyRange>,
    ) -> Result<Command, ServiceError> {
        let writes = ops
            .into_iter()
            .map(|o| self.write_op(o))
            .collect::<Result<Vec<_>, _>>()?;
        let cmd = Command {
            read_version,
            writes,
            read_conflicts: std::mem::take(&mut read_conflicts),
        };
        cmd.validate()?;
        let size = cmd.payload_bytes();
        if size > self.limits.max_message_bytes as usize {
            return Err(too_large(format!(
                "commit of {size} bytes exceeds thrift.max_message_bytes ({})",
                self.limits.max_message_bytes
            )));
        }
        Ok(cmd)
    }

    pub(super) fn range_query(
        &self,
        cf: Option<String>,
        begin: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
        sel: (Option<i32>, Option<bool>, Option<i32>, Option<bool>),
        limit: Option<i32>,
    ) -> Result<RangeQuery, ServiceError> {
        let limit = limit.unwrap_or(DEFAULT_RANGE_LIMIT);
        if limit < 0 {
            return Err(invalid(format!("limit {limit} is negative")));
        }
        let cap = self.limits.max_range_keys;
        let limit = if limit == 0 {
            cap
        } else {
            (limit as u32).min(cap)
        };
        for (name, offset) in [("begin_offset", sel.0), ("end_offset", sel.2)] {
            if offset.is_some_and(|o| o.unsigned_abs() > cap) {
                return Err(invalid(format!(
                    "{name} {} is beyond thrift.max_range_keys ({cap})",
                    offset.unwrap_or(0)
                )));
            }
        }
        Ok(RangeQuery {
            cf: cf_of(cf)?,
            begin: Bytes::from(begin.unwrap_or_default()),
            begin_offset: sel.0.unwrap_or(0),
            begin_or_equal: sel.1.unwrap_or(true),
            end: Bytes::from(end.unwrap_or_else(|| vec![0xFF])),
            end_offset: sel.2.unwrap_or(0),
            end_or_equal: sel.3.unwrap_or(false),
            limit,
            max_bytes: self.limits.max_range_reply_bytes,
        })
    }

    /// Registers a read conflict on the connection's session, within
    /// `thrift.max_session_conflict_bytes` of keys.
    pub(super) fn register_conflict(
        &self,
        session: &RefCell<Session>,
        range: KeyRange,
    ) -> Result<(), ServiceError> {
        let mut s = session.borrow_mut();
        let size = (range.begin.len() + range.end.len()) as u64;
        let held = s.read_conflict_bytes;
        let max = self.limits.max_session_conflict_bytes;
        if held + size > max {
            return Err(too_large(format!(
                "this connection already holds {held} bytes of read conflicts \
                 (thrift.max_session_conflict_bytes = {max}); commit or start over"
            )));
        }
        s.read_conflicts.push(range);
        s.read_conflict_bytes = held + size;
        Ok(())
    }

    /// Diagnostics are on and `token` is the admin token (when one is set).
    pub(super) fn check_admin(&self, token: &Option<String>) -> Result<(), ServiceError> {
        if !self.limits.enable_diagnostics {
            return Err(unauthorized(
                "diagnostics are disabled (thrift.enable_diagnostics = false)",
            ));
        }
        self.check_token(token)
    }

    /// `token` is the admin token, when one is configured (constant-time compare).
    pub(super) fn check_token(&self, token: &Option<String>) -> Result<(), ServiceError> {
        match &self.limits.admin_token {
            Some(t) if !token_matches(token.as_deref(), t) => {
                Err(unauthorized("a valid auth_token is required"))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn note_outcome(&self, r: &Result<Outcome, ServiceError>) {
        match r {
            Ok(Outcome::Committed { .. }) => bump(&self.shared.stats.committed_txns),
            _ => bump(&self.shared.stats.aborted_txns),
        }
    }
}

#[cfg(test)]
mod token_tests {
    use super::token_matches;

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches(Some("s3cret"), "s3cret"));
        for wrong in [
            None,
            Some(""),
            Some("s3cre"),
            Some("s3cret!"),
            Some("S3cret"),
        ] {
            assert!(!token_matches(wrong, "s3cret"), "{wrong:?}");
        }
    }
}
