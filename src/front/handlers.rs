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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::generated::*;
use super::wire::{Call, Response};
use crate::config::ThriftSection;
use crate::service::{ErrorCode, KvService, ReadOp, ReadResult, ServiceError};
use crate::storage::RangeQuery;
use crate::txn::command::single_key_range;
use crate::txn::interactive::{Fence, Session, TxnError, TxnTable};
use crate::txn::{Command, KeyRange, Outcome, WriteOp, DEFAULT_CF};
use crate::types::Version;

pub type BoxFuture = Pin<Box<dyn Future<Output = Response>>>;

const CF_NAME_BYTES_MAX: usize = 256;
const DEFAULT_RANGE_LIMIT: i32 = 1000;
const DEFAULT_COMMIT_TIMEOUT_S: i64 = 60;

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

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

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::InvalidArgument, msg)
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
        Ok(RangeQuery {
            cf: cf_of(cf)?,
            begin: Bytes::from(begin.unwrap_or_default()),
            begin_offset: sel.0.unwrap_or(0),
            begin_or_equal: sel.1.unwrap_or(true),
            end: Bytes::from(end.unwrap_or_else(|| vec![0xFF])),
            end_offset: sel.2.unwrap_or(0),
            end_or_equal: sel.3.unwrap_or(false),
            limit,
        })
    }

    fn check_admin(&self, token: &Option<String>) -> Result<(), String> {
        if !self.limits.enable_diagnostics {
            return Err("diagnostics are disabled (thrift.enable_diagnostics = false)".into());
        }
        match &self.limits.admin_token {
            Some(t) if token.as_deref() != Some(t.as_str()) => {
                Err("UNAUTHORIZED: a valid auth_token is required".into())
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
    futures_lite::future::or(f, async move {
        glommio::timer::sleep(d).await;
        Err(ServiceError::new(
            ErrorCode::Timeout,
            format!(
                "no outcome within {}s; the operation may or may not have been applied",
                d.as_secs()
            ),
        ))
    })
    .await
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

fn dispatch<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    session: &Rc<RefCell<Session>>,
    call: Call,
) -> BoxFuture {
    let c = ctx.clone();
    match call {
        Call::Ping(r) => {
            let resp = PingResponse::new(
                r.message.unwrap_or_default(),
                r.timestamp.unwrap_or(0),
                unix_us(),
            );
            ready(Response::Ping(resp))
        }
        Call::GetReadVersion(_) => Box::pin(async move {
            Response::GetReadVersion(match c.service.read_version().await {
                Ok(v) => GetReadVersionResponse::new(v.0 as i64, true, None::<String>),
                Err(e) => GetReadVersionResponse::new(0, false, err_text(&e)),
            })
        }),
        Call::GetCommittedVersion(_) => {
            let v = session
                .borrow()
                .committed_version
                .unwrap_or_else(|| ctx.service.applied_version());
            ready(Response::GetCommittedVersion(
                GetCommittedVersionResponse::new(v.0 as i64, true, None::<String>),
            ))
        }
        Call::SetReadVersion(r) => {
            let resp = match version_of(r.version, "version").and_then(|v| {
                let oldest = ctx.service.oldest_version();
                let latest = ctx.service.applied_version();
                if v < oldest {
                    Err(ServiceError::new(
                        ErrorCode::TooOld,
                        format!("version {v} is older than the oldest version kept ({oldest})"),
                    ))
                } else if v > latest {
                    Err(invalid(format!(
                        "version {v} is newer than the latest committed version {latest}"
                    )))
                } else {
                    Ok(v)
                }
            }) {
                Ok(v) => {
                    session.borrow_mut().read_version = Some(v);
                    SetReadVersionResponse::new(true, None::<String>)
                }
                Err(e) => SetReadVersionResponse::new(false, err_text(&e)),
            };
            ready(Response::SetReadVersion(resp))
        }
        Call::AddReadConflict(r) => {
            let resp = match cf_of(r.column_family).and_then(|cf| {
                ctx.check_key(&r.key)?;
                Ok(single_key_range(&cf, &Bytes::from(r.key)))
            }) {
                Ok(range) => {
                    session.borrow_mut().read_conflicts.push(range);
                    AddReadConflictResponse::new(true, None::<String>)
                }
                Err(e) => AddReadConflictResponse::new(false, err_text(&e)),
            };
            ready(Response::AddReadConflict(resp))
        }
        Call::AddReadConflictRange(r) => {
            let resp = match cf_of(r.column_family).and_then(|cf| {
                ctx.check_key(&r.start_key)?;
                ctx.check_key(&r.end_key)?;
                if r.start_key > r.end_key {
                    return Err(invalid("start_key is after end_key"));
                }
                Ok(KeyRange {
                    cf,
                    begin: Bytes::from(r.start_key),
                    end: Bytes::from(r.end_key),
                })
            }) {
                Ok(range) => {
                    session.borrow_mut().read_conflicts.push(range);
                    AddReadConflictRangeResponse::new(true, None::<String>)
                }
                Err(e) => AddReadConflictRangeResponse::new(false, err_text(&e)),
            };
            ready(Response::AddReadConflictRange(resp))
        }
        Call::AtomicCommit(r) => {
            // The connection's registered conflicts and pinned read version go with this commit.
            let (pinned, registered) = {
                let mut s = session.borrow_mut();
                (s.read_version.take(), std::mem::take(&mut s.read_conflicts))
            };
            let timeout = r
                .timeout_seconds
                .unwrap_or(DEFAULT_COMMIT_TIMEOUT_S)
                .clamp(1, 3600) as u64;
            let prepared = (|| {
                let rv = if r.read_version <= 0 {
                    pinned.unwrap_or(Version(0))
                } else {
                    version_of(r.read_version, "read_version")?
                };
                let mut conflicts = ctx.conflict_keys(r.read_conflict_keys)?;
                conflicts.extend(registered);
                ctx.build_command(Some(rv), r.operations, conflicts)
            })();
            let session = session.clone();
            Box::pin(async move {
                let res = match prepared {
                    Ok(cmd) => {
                        c.stats.writes.set(c.stats.writes.get() + 1);
                        with_timeout(Duration::from_secs(timeout), c.service.commit(cmd)).await
                    }
                    Err(e) => Err(e),
                };
                c.note_outcome(&res);
                if let Ok(Outcome::Committed { version, .. }) = &res {
                    session.borrow_mut().committed_version = Some(*version);
                }
                Response::AtomicCommit(commit_response(res))
            })
        }
        Call::SetKey(r) => {
            let cmd = (|| {
                let cf = cf_of(r.column_family)?;
                ctx.check_key(&r.key)?;
                ctx.check_value(&r.value)?;
                Ok(Command::blind(vec![WriteOp::Set {
                    cf,
                    key: Bytes::from(r.key),
                    value: Bytes::from(r.value),
                }]))
            })();
            Box::pin(async move {
                let res = blind_write(&c, cmd).await;
                Response::SetKey(match res {
                    Ok(_) => SetKeyResponse::new(true, None::<String>, None::<String>),
                    Err(e) => SetKeyResponse::new(false, err_text(&e), e.code.as_str().to_string()),
                })
            })
        }
        Call::DeleteKey(r) => {
            let cmd = (|| {
                let cf = cf_of(r.column_family)?;
                ctx.check_key(&r.key)?;
                Ok(Command::blind(vec![WriteOp::Delete {
                    cf,
                    key: Bytes::from(r.key),
                }]))
            })();
            Box::pin(async move {
                let res = blind_write(&c, cmd).await;
                Response::DeleteKey(match res {
                    Ok(_) => DeleteKeyResponse::new(true, None::<String>, None::<String>),
                    Err(e) => {
                        DeleteKeyResponse::new(false, err_text(&e), e.code.as_str().to_string())
                    }
                })
            })
        }
        Call::SetVersionstampedKey(r) => {
            let cmd = cf_of(r.column_family).and_then(|cf| {
                ctx.versionstamp_command(&r.key_prefix, &r.value, |k, v| {
                    WriteOp::SetVersionstampedKey {
                        cf,
                        key_prefix: k,
                        value: v,
                    }
                })
            });
            Box::pin(async move {
                let (generated, ok, error) = generated_of(blind_write(&c, cmd).await);
                Response::SetVersionstampedKey(SetVersionstampedKeyResponse::new(
                    generated, ok, error,
                ))
            })
        }
        Call::SetVersionstampedValue(r) => {
            let cmd = cf_of(r.column_family).and_then(|cf| {
                ctx.versionstamp_command(&r.key, &r.value_prefix, |k, v| {
                    WriteOp::SetVersionstampedValue {
                        cf,
                        key: k,
                        value_prefix: v,
                    }
                })
            });
            Box::pin(async move {
                let (generated, ok, error) = generated_of(blind_write(&c, cmd).await);
                Response::SetVersionstampedValue(SetVersionstampedValueResponse::new(
                    generated, ok, error,
                ))
            })
        }
        Call::Get(r) => {
            let op = cf_of(r.column_family).map(|cf| ReadOp::Get {
                cf,
                key: Bytes::from(r.key),
            });
            Box::pin(async move { Response::Get(point_read(&c, None, op).await.into()) })
        }
        Call::SnapshotGet(r) => {
            let at = version_of(r.read_version, "read_version");
            let op = cf_of(r.column_family).map(|cf| ReadOp::Get {
                cf,
                key: Bytes::from(r.key),
            });
            Box::pin(async move {
                let res = match at {
                    Ok(v) => point_read(&c, Some(v), op).await,
                    Err(e) => Err(e),
                };
                let g: GetResponse = res.into();
                Response::SnapshotGet(SnapshotGetResponse::new(g.value, g.found, g.error))
            })
        }
        Call::SnapshotRead(r) => {
            let at = version_of(r.read_version, "read_version");
            let op = cf_of(r.column_family).map(|cf| ReadOp::Get {
                cf,
                key: Bytes::from(r.key),
            });
            Box::pin(async move {
                let res = match at {
                    Ok(v) => point_read(&c, Some(v), op).await,
                    Err(e) => Err(e),
                };
                let g: GetResponse = res.into();
                Response::SnapshotRead(SnapshotReadResponse::new(g.value, g.found, g.error))
            })
        }
        Call::GetRange(r) => {
            let q = ctx.range_query(
                r.column_family,
                r.begin_key,
                r.end_key,
                (
                    r.begin_offset,
                    r.begin_or_equal,
                    r.end_offset,
                    r.end_or_equal,
                ),
                r.limit,
            );
            Box::pin(async move {
                let (kvs, more, err) = range_read(&c, None, q).await;
                Response::GetRange(GetRangeResponse::new(kvs, err.is_none(), err, more))
            })
        }
        Call::SnapshotGetRange(r) => {
            let at = version_of(r.read_version, "read_version");
            let q = ctx.range_query(
                r.column_family,
                r.begin_key,
                r.end_key,
                (
                    r.begin_offset,
                    r.begin_or_equal,
                    r.end_offset,
                    r.end_or_equal,
                ),
                r.limit,
            );
            Box::pin(async move {
                let (kvs, more, err) = match at {
                    Ok(v) => range_read(&c, Some(v), q).await,
                    Err(e) => (Vec::new(), false, Some(err_text(&e))),
                };
                Response::SnapshotGetRange(SnapshotGetRangeResponse::new(
                    kvs,
                    err.is_none(),
                    err,
                    more,
                ))
            })
        }
        Call::SetFaultInjection(r) => ready(Response::SetFaultInjection(set_fault(ctx, r))),
        Call::GetClusterHealth(r) => ready(Response::GetClusterHealth(
            match ctx.check_admin(&r.auth_token) {
                Ok(()) => GetClusterHealthResponse::new(
                    true,
                    cluster_health(&ctx.service),
                    None::<String>,
                ),
                Err(e) => GetClusterHealthResponse::new(false, None::<ClusterHealth>, e),
            },
        )),
        Call::GetDatabaseStats(r) => ready(Response::GetDatabaseStats(
            match ctx.check_admin(&r.auth_token) {
                Ok(()) => GetDatabaseStatsResponse::new(true, database_stats(ctx), None::<String>),
                Err(e) => GetDatabaseStatsResponse::new(false, None::<DatabaseStats>, e),
            },
        )),
        Call::GetNodeInfo(r) => ready(Response::GetNodeInfo(
            match ctx.check_admin(&r.auth_token) {
                Ok(()) => {
                    let nodes = ctx.service.replicas();
                    let pick = match r.node_id {
                        Some(id) => nodes.iter().find(|n| n.id as i32 == id),
                        None => nodes.iter().find(|n| n.is_primary).or(nodes.first()),
                    };
                    match pick {
                        Some(n) => GetNodeInfoResponse::new(true, node_status(n), None::<String>),
                        None => GetNodeInfoResponse::new(
                            false,
                            None::<NodeStatus>,
                            format!("INVALID_ARGUMENT: no node {:?}", r.node_id),
                        ),
                    }
                }
                Err(e) => GetNodeInfoResponse::new(false, None::<NodeStatus>, e),
            },
        )),
        Call::BeginTransaction(r) => {
            let timeout = r
                .timeout_seconds
                .map(|s| Duration::from_secs(s.clamp(1, 86_400) as u64))
                .unwrap_or(ctx.limits.default_transaction_timeout);
            let asked = r.read_version.map(|v| version_of(v, "read_version"));
            Box::pin(async move {
                let rv = match asked {
                    Some(Ok(v)) if v < c.service.oldest_version() => Err(ServiceError::new(
                        ErrorCode::TooOld,
                        format!("read version {v} left the MVCC window"),
                    )),
                    Some(Ok(v)) if v > c.service.applied_version() => Err(invalid(format!(
                        "read version {v} is newer than the latest committed version"
                    ))),
                    Some(v) => v,
                    None => c.service.read_version().await,
                };
                let res = rv.and_then(|v| {
                    let id = c
                        .txns
                        .borrow_mut()
                        .begin(v, timeout, Instant::now())
                        .map_err(|e| ServiceError::new(ErrorCode::Unavailable, e.to_string()))?;
                    Ok((id, v))
                });
                Response::BeginTransaction(match res {
                    Ok((id, v)) => {
                        BeginTransactionResponse::new(id, v.0 as i64, true, None::<String>)
                    }
                    Err(e) => BeginTransactionResponse::new(String::new(), 0, false, err_text(&e)),
                })
            })
        }
        Call::CommitTransaction(r) => {
            let prepared = (|| {
                let rv = ctx
                    .txns
                    .borrow_mut()
                    .finish(&r.transaction_id, Instant::now())
                    .map_err(|e| match e {
                        TxnError::TimedOut(_) => {
                            ServiceError::new(ErrorCode::Timeout, e.to_string())
                        }
                        _ => invalid(e.to_string()),
                    })?;
                let mut conflicts = ctx.conflict_keys(r.read_conflict_keys.unwrap_or_default())?;
                for kr in r.read_conflict_ranges.unwrap_or_default() {
                    ctx.check_key(&kr.begin_key)?;
                    ctx.check_key(&kr.end_key)?;
                    conflicts.push(KeyRange {
                        cf: cf_of(kr.column_family)?,
                        begin: Bytes::from(kr.begin_key),
                        end: Bytes::from(kr.end_key),
                    });
                }
                ctx.build_command(Some(rv), r.operations, conflicts)
            })();
            Box::pin(async move {
                let res = match prepared {
                    Ok(cmd) => {
                        c.stats.writes.set(c.stats.writes.get() + 1);
                        with_timeout(
                            Duration::from_secs(DEFAULT_COMMIT_TIMEOUT_S as u64),
                            c.service.commit(cmd),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                c.note_outcome(&res);
                Response::CommitTransaction(commit_response(res))
            })
        }
        Call::AbortTransaction(r) => {
            let found = ctx.txns.borrow_mut().abort(&r.transaction_id);
            if found {
                ctx.stats.aborted_txns.set(ctx.stats.aborted_txns.get() + 1);
            }
            ready(Response::AbortTransaction(if found {
                AbortTransactionResponse::new(true, None::<String>)
            } else {
                AbortTransactionResponse::new(
                    false,
                    format!(
                        "INVALID_ARGUMENT: unknown transaction id {:?}",
                        r.transaction_id
                    ),
                )
            }))
        }
    }
}

/// (generated bytes, success, error) of a versionstamped write.
fn generated_of(r: Result<Vec<Bytes>, ServiceError>) -> (Vec<u8>, bool, Option<String>) {
    match r {
        Ok(mut g) => (g.pop().map(|b| b.to_vec()).unwrap_or_default(), true, None),
        Err(e) => (Vec::new(), false, Some(err_text(&e))),
    }
}

fn ready(r: Response) -> BoxFuture {
    Box::pin(std::future::ready(r))
}

/// A write outside any transaction; returns the generated versionstamped bytes.
async fn blind_write<S: KvService>(
    c: &Rc<FrontCtx<S>>,
    cmd: Result<Command, ServiceError>,
) -> Result<Vec<Bytes>, ServiceError> {
    let cmd = cmd?;
    c.stats.writes.set(c.stats.writes.get() + 1);
    match with_timeout(
        Duration::from_secs(DEFAULT_COMMIT_TIMEOUT_S as u64),
        c.service.commit(cmd),
    )
    .await?
    {
        Outcome::Committed { generated, .. } => Ok(generated),
        Outcome::Invalid(m) => Err(invalid(m)),
        Outcome::Conflict { .. } | Outcome::TooOld { .. } => Err(ServiceError::new(
            ErrorCode::Internal,
            "a blind write reported a conflict",
        )),
    }
}

async fn point_read<S: KvService>(
    c: &Rc<FrontCtx<S>>,
    at: Option<Version>,
    op: Result<ReadOp, ServiceError>,
) -> Result<Option<Bytes>, ServiceError> {
    c.stats.reads.set(c.stats.reads.get() + 1);
    match c.service.read(at, op?).await? {
        ReadResult::Value(v) => Ok(v),
        ReadResult::Range(_) => Err(ServiceError::new(
            ErrorCode::Internal,
            "range result for a point read",
        )),
    }
}

async fn range_read<S: KvService>(
    c: &Rc<FrontCtx<S>>,
    at: Option<Version>,
    q: Result<RangeQuery, ServiceError>,
) -> (Vec<KeyValue>, bool, Option<String>) {
    c.stats.reads.set(c.stats.reads.get() + 1);
    let res = match q {
        Ok(q) => c.service.read(at, ReadOp::Range(q)).await,
        Err(e) => Err(e),
    };
    match res {
        Ok(ReadResult::Range(r)) => (
            r.key_values
                .into_iter()
                .map(|(k, v)| KeyValue::new(k.to_vec(), v.to_vec()))
                .collect(),
            r.has_more,
            None,
        ),
        Ok(ReadResult::Value(_)) => (
            Vec::new(),
            false,
            Some("INTERNAL: point result for a range read".into()),
        ),
        Err(e) => (Vec::new(), false, Some(err_text(&e))),
    }
}

impl From<Result<Option<Bytes>, ServiceError>> for GetResponse {
    fn from(r: Result<Option<Bytes>, ServiceError>) -> Self {
        match r {
            Ok(Some(v)) => GetResponse::new(v.to_vec(), true, None::<String>),
            Ok(None) => GetResponse::new(Vec::new(), false, None::<String>),
            Err(e) => GetResponse::new(Vec::new(), false, err_text(&e)),
        }
    }
}

fn set_fault<S: KvService>(ctx: &FrontCtx<S>, r: FaultInjectionRequest) -> FaultInjectionResponse {
    if !ctx.limits.enable_fault_injection {
        return FaultInjectionResponse::new(
            false,
            "fault injection is disabled (thrift.enable_fault_injection = false)".to_string(),
        );
    }
    let p = r.probability.map(|p| p.0).unwrap_or(0.0);
    if !(0.0..=1.0).contains(&p) {
        return FaultInjectionResponse::new(
            false,
            format!("INVALID_ARGUMENT: probability {p} is outside 0..1"),
        );
    }
    let ms = r.duration_ms.unwrap_or(0).max(0) as u64;
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
    ctx.faults.borrow_mut().push(Fault {
        kind,
        probability: p,
        target,
        until,
    });
    FaultInjectionResponse::new(true, None::<String>)
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

fn cluster_health<S: KvService>(service: &S) -> ClusterHealth {
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

fn database_stats<S: KvService>(ctx: &FrontCtx<S>) -> DatabaseStats {
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
