//! One function per Thrift method: turn a request into service calls and a response.
//!
//! All client-visible error mapping lives here (`fail_*` helpers): a `ServiceError` becomes
//! `success = false`, `error` = "CODE: message" and `error_code` = CODE where the response has
//! one. Work that touches the connection's session runs synchronously before the returned future
//! is first polled, so pipelined calls on one connection see the session in request order.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::generated::KeyRange as ThriftKeyRange;
use super::generated::*;
use super::wire::{Call, Response};
use crate::config::ThriftSection;
use crate::service::{ErrorCode, KvService, ReadOp, ReadResult, ServiceError};
use crate::storage::RangeQuery;
use crate::txn::command::single_key_range;
use crate::txn::interactive::{Fence, Session, TxnError, TxnTable};
use crate::txn::{Command, KeyRange, Outcome, WriteOp, DEFAULT_CF};
use crate::types::Version;

mod admin;
mod dispatch;

use dispatch::dispatch;

pub type BoxFuture = Pin<Box<dyn Future<Output = Response>>>;

const CF_NAME_BYTES_MAX: usize = 256;
const DEFAULT_RANGE_LIMIT: i32 = 1000;
const DEFAULT_COMMIT_TIMEOUT_S: i64 = 60;

use crate::util::time::unix_us;

/// Counters for getDatabaseStats and metrics.
#[derive(Default)]
pub struct FrontStats {
    pub writes: Cell<u64>,
    pub reads: Cell<u64>,
    /// Requests started and not yet answered (what a graceful stop waits for).
    pub in_flight: Cell<u64>,
    pub committed_txns: Cell<u64>,
    pub aborted_txns: Cell<u64>,
}

/// A fault injected with setFaultInjection (only when enabled in the config).
#[derive(Debug, Clone)]
struct Fault {
    kind: FaultKind,
    probability: f64,
    target: Option<String>,
    until: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FaultKind {
    Delay(Duration),
    Error,
}

/// State shared by every connection of one front.
pub struct FrontCtx<S> {
    pub service: S,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub limits: ThriftSection,
    pub txns: RefCell<TxnTable>,
    pub stats: FrontStats,
    faults: RefCell<Vec<Fault>>,
    rng: Cell<u64>,
    /// Request bytes read and not yet answered, over every connection of this front.
    pub in_flight_bytes: Cell<u64>,
}

impl<S: KvService> FrontCtx<S> {
    pub fn new(
        service: S,
        limits: ThriftSection,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Self {
        let salt = unix_us() as u64;
        FrontCtx {
            service,
            metrics,
            txns: RefCell::new(TxnTable::new(limits.max_open_transactions as usize, salt)),
            limits,
            stats: FrontStats::default(),
            faults: RefCell::new(Vec::new()),
            rng: Cell::new(salt | 1),
            in_flight_bytes: Cell::new(0),
        }
    }

    fn chance(&self, p: f64) -> bool {
        // xorshift64: fault injection needs no quality randomness.
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn fault_for(&self, method: &str) -> Option<FaultKind> {
        let now = Instant::now();
        let mut faults = self.faults.borrow_mut();
        faults.retain(|f| f.until.is_none_or(|u| u > now));
        let f = faults
            .iter()
            .find(|f| f.target.as_deref().is_none_or(|t| t == method))?
            .clone();
        drop(faults);
        self.chance(f.probability).then_some(f.kind)
    }
}

fn err_text(e: &ServiceError) -> String {
    e.to_string()
}

fn unauthorized(msg: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::Unauthorized, msg)
}

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::InvalidArgument, msg)
}

/// Compares a presented token with the configured one in time that does not depend on where
/// they differ (a timing side channel would reveal the token byte by byte).
fn token_matches(given: Option<&str>, want: &str) -> bool {
    let given = given.unwrap_or("").as_bytes();
    let want = want.as_bytes();
    let mut diff = u8::from(given.len() != want.len());
    for (i, w) in want.iter().enumerate() {
        diff |= w ^ given.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

fn too_large(msg: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::TooLarge, msg)
}

fn cf_of(cf: Option<String>) -> Result<String, ServiceError> {
    let cf = cf.unwrap_or_else(|| DEFAULT_CF.to_string());
    if cf.len() > CF_NAME_BYTES_MAX {
        return Err(invalid(format!(
            "column family name of {} bytes exceeds {CF_NAME_BYTES_MAX}",
            cf.len()
        )));
    }
    Ok(cf)
}

fn version_of(v: i64, what: &str) -> Result<Version, ServiceError> {
    if v < 0 {
        return Err(invalid(format!("{what} {v} is negative")));
    }
    Ok(Version(v as u64))
}

impl<S: KvService> FrontCtx<S> {
    fn check_key(&self, key: &[u8]) -> Result<(), ServiceError> {
        if key.len() > self.limits.max_key_bytes as usize {
            return Err(too_large(format!(
                "key of {} bytes exceeds thrift.max_key_bytes ({})",
                key.len(),
                self.limits.max_key_bytes
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), ServiceError> {
        if value.len() > self.limits.max_value_bytes as usize {
            return Err(too_large(format!(
                "value of {} bytes exceeds thrift.max_value_bytes ({})",
                value.len(),
                self.limits.max_value_bytes
            )));
        }
        Ok(())
    }

    fn write_op(&self, op: Operation) -> Result<WriteOp, ServiceError> {
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
    fn versionstamp_command(
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
        cmd.validate().map_err(invalid)?;
        Ok(cmd)
    }

    fn conflict_keys(&self, keys: Vec<Vec<u8>>) -> Result<Vec<KeyRange>, ServiceError> {
        keys.into_iter()
            .map(|k| {
                self.check_key(&k)?;
                Ok(single_key_range(DEFAULT_CF, &Bytes::from(k)))
            })
            .collect()
    }

    /// Conflict ranges a commit names (atomicCommit's field 5, commitTransaction's field 4).
    fn conflict_ranges(
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

    fn build_command(
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
        cmd.validate().map_err(invalid)?;
        let size = cmd.payload_bytes();
        if size > self.limits.max_message_bytes as usize {
            return Err(too_large(format!(
                "commit of {size} bytes exceeds thrift.max_message_bytes ({})",
                self.limits.max_message_bytes
            )));
        }
        Ok(cmd)
    }

    fn range_query(
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
    fn register_conflict(
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

    /// Diagnostics are on and `token` is the admin token (when one is set); the error text
    /// ("UNAUTHORIZED: ...") otherwise.
    fn check_admin(&self, token: &Option<String>) -> Result<(), String> {
        if !self.limits.enable_diagnostics {
            return Err(err_text(&unauthorized(
                "diagnostics are disabled (thrift.enable_diagnostics = false)",
            )));
        }
        self.check_token(token)
    }

    /// `token` is the admin token, when one is configured (constant-time compare).
    fn check_token(&self, token: &Option<String>) -> Result<(), String> {
        match &self.limits.admin_token {
            Some(t) if !token_matches(token.as_deref(), t) => {
                Err(err_text(&unauthorized("a valid auth_token is required")))
            }
            _ => Ok(()),
        }
    }

    fn note_outcome(&self, r: &Result<Outcome, ServiceError>) {
        match r {
            Ok(Outcome::Committed { .. }) => self
                .stats
                .committed_txns
                .set(self.stats.committed_txns.get() + 1),
            _ => self
                .stats
                .aborted_txns
                .set(self.stats.aborted_txns.get() + 1),
        }
    }
}

/// Maps a commit outcome onto the atomicCommit response.
fn commit_response(r: Result<Outcome, ServiceError>) -> AtomicCommitResponse {
    let fail = |code: ErrorCode, msg: String| AtomicCommitResponse {
        success: false,
        error: Some(format!("{}: {msg}", code.as_str())),
        error_code: Some(code.as_str().to_string()),
        committed_version: None,
    };
    match r {
        Ok(Outcome::Committed { version, .. }) => AtomicCommitResponse {
            success: true,
            error: None,
            error_code: None,
            committed_version: Some(version.0 as i64),
        },
        Ok(Outcome::Conflict { key }) => fail(
            ErrorCode::Conflict,
            format!("key {:?} was written after the read version", String::from_utf8_lossy(&key)),
        ),
        // A read version that left the window can never commit: retry with a new one, exactly
        // as after a conflict, so it carries CONFLICT's code.
        Ok(Outcome::TooOld { read_version, oldest }) => fail(
            ErrorCode::Conflict,
            format!("TOO_OLD: read version {read_version} is older than the oldest version kept ({oldest})"),
        ),
        Ok(Outcome::Invalid(m)) => fail(ErrorCode::InvalidArgument, m),
        Err(e) => fail(e.code, e.message),
    }
}

async fn with_timeout<T>(
    d: Duration,
    f: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    crate::util::time::within(d, f).await.unwrap_or_else(|| {
        Err(ServiceError::new(
            ErrorCode::Timeout,
            format!(
                "no outcome within {}s; the operation may or may not have been applied",
                d.as_secs()
            ),
        ))
    })
}

/// Starts serving one call. Session work happens now; the rest in the returned future.
pub fn handle<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    session: &Rc<RefCell<Session>>,
    call: Call,
) -> BoxFuture {
    let method = call.method();
    let fault = ctx.fault_for(method);
    let started = Instant::now();
    let order = order_of(&call);
    // Pipelined requests: a read waits for the writes sent before it on this connection; a
    // write takes its place at the end of that chain.
    let wait_for = match order {
        Order::Read => session.borrow().last_write.clone().filter(|f| !f.is_set()),
        _ => None,
    };
    let written = match order {
        Order::Write => {
            let mine = Rc::new(Fence::default());
            let prev = session.borrow_mut().last_write.replace(mine.clone());
            Some(WriteSignal {
                mine,
                prev,
                finished: false,
            })
        }
        _ => None,
    };
    let fut = dispatch(ctx, session, call);
    let ctx2 = ctx.clone();
    ctx.stats.in_flight.set(ctx.stats.in_flight.get() + 1);
    Box::pin(async move {
        let _done = InFlight(&ctx2.stats.in_flight);
        if let Some(w) = wait_for {
            w.wait().await;
        }
        match fault {
            Some(FaultKind::Delay(d)) => glommio::timer::sleep(d).await,
            Some(FaultKind::Error) => {
                // Answered as if the cluster were unavailable, without running the request:
                // UNAVAILABLE must not hide a write that happened.
                if let Some(r) = injected_failure(method) {
                    return r;
                }
            }
            None => {}
        }
        let r = fut.await;
        if let Some(w) = written {
            w.finish();
        }
        let us = started.elapsed().as_micros() as u64;
        ctx2.metrics
            .record(method, crate::metrics::result_of(r.error_text()), us);
        r
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Reads the latest state: must see the connection's earlier writes.
    Read,
    Write,
    /// Snapshot reads at an explicit version, session and diagnostic calls.
    Free,
}

fn order_of(call: &Call) -> Order {
    match call {
        Call::Get(_) | Call::GetRange(_) | Call::GetReadVersion(_) | Call::BeginTransaction(_) => {
            Order::Read
        }
        Call::SetKey(_)
        | Call::DeleteKey(_)
        | Call::AtomicCommit(_)
        | Call::CommitTransaction(_)
        | Call::SetVersionstampedKey(_)
        | Call::SetVersionstampedValue(_) => Order::Write,
        _ => Order::Free,
    }
}

/// Sets this write's fence once the write is answered and the writes before it on the
/// connection are too: writes can finish out of order (a refused one at once).
struct WriteSignal {
    mine: Rc<Fence>,
    prev: Option<Rc<Fence>>,
    finished: bool,
}

impl WriteSignal {
    fn finish(mut self) {
        self.finished = true;
        match self.prev.take().filter(|p| !p.is_set()) {
            None => self.mine.set(),
            Some(prev) => {
                let mine = self.mine.clone();
                glommio::spawn_local(async move {
                    prev.wait().await;
                    mine.set();
                })
                .detach();
            }
        }
    }
}

impl Drop for WriteSignal {
    /// An abandoned request (its connection closed) releases its followers at once.
    fn drop(&mut self) {
        if !self.finished {
            self.mine.set();
        }
    }
}

/// Counts a request as answered when its future completes or is dropped.
struct InFlight<'a>(&'a Cell<u64>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// The reply an injected `error` fault gives instead of running the request, for the methods
/// it covers (setKey, deleteKey, atomicCommit, get); other methods run normally.
fn injected_failure(method: &str) -> Option<Response> {
    let e = Some("UNAVAILABLE: injected fault".to_string());
    let code = Some("UNAVAILABLE".to_string());
    Some(match method {
        "setKey" => Response::SetKey(SetKeyResponse {
            success: false,
            error: e,
            error_code: code,
        }),
        "deleteKey" => Response::DeleteKey(DeleteKeyResponse {
            success: false,
            error: e,
            error_code: code,
        }),
        "atomicCommit" => Response::AtomicCommit(AtomicCommitResponse {
            success: false,
            error: e,
            error_code: code,
            committed_version: None,
        }),
        "get" => Response::Get(GetResponse {
            value: Vec::new(),
            found: false,
            error: e,
        }),
        _ => return None,
    })
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
