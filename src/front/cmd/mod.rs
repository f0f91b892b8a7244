//! The front's commands: `handle` starts one call (the connection's ordering, injected faults,
//! metrics), `dispatch` routes it to its command family, one small module each:
//!
//! | module | methods |
//! |---|---|
//! | `kv` | get, setKey, deleteKey, setVersionstampedKey, setVersionstampedValue |
//! | `range` | getRange, snapshotGetRange |
//! | `snapshot` | snapshotGet, snapshotRead, getReadVersion, getCommittedVersion |
//! | `txn` | atomicCommit, beginTransaction, commitTransaction, abortTransaction |
//! | `session` | setReadVersion, addReadConflict, addReadConflictRange |
//! | `admin` | ping, getClusterHealth, getDatabaseStats, getNodeInfo, setFaultInjection |
//!
//! A command is `fn(ctx, [session,] request) -> impl Handled<T>`: work on the connection's
//! session happens in the call itself (so pipelined calls see it in request order), the rest in
//! the future it returns, which yields `Result<T, ServiceError>`. `reply::to_reply` makes the
//! response; nothing here writes error text.

mod admin;
mod kv;
mod range;
mod session;
mod snapshot;
mod txn;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::ctx::{bump, FaultKind, FrontCtx};
use super::pipeline::{order_of, InFlight, Order, WriteSignal};
use super::reply::{to_reply, Reply};
use super::wire::{Call, Response};
use crate::service::{ErrorCode, KvService, ServiceError};
use crate::txn::interactive::{Fence, Session};

/// What a command's future yields.
pub(super) trait Handled<T>: Future<Output = Result<T, ServiceError>> + 'static {}

impl<T, F: Future<Output = Result<T, ServiceError>> + 'static> Handled<T> for F {}

/// A started call: its response, when ready.
pub type BoxFuture = Pin<Box<dyn Future<Output = Response>>>;

/// A response and, for a failure, its code (what the metrics count).
type Answer = (Response, Option<ErrorCode>);
type AnswerFuture = Pin<Box<dyn Future<Output = Answer>>>;

fn answer<R: Reply + 'static>(
    fut: impl Future<Output = Result<R::Ok, ServiceError>> + 'static,
    wrap: fn(R) -> Response,
) -> AnswerFuture {
    Box::pin(async move {
        let r = fut.await;
        let code = r.as_ref().err().map(|e| e.code);
        (wrap(to_reply(r)), code)
    })
}

/// Routes a call to its command.
fn dispatch<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    session: &Rc<RefCell<Session>>,
    call: Call,
) -> AnswerFuture {
    use Response as R;
    match call {
        Call::Get(r) => answer(kv::get(ctx, r), R::Get),
        Call::SetKey(r) => answer(kv::set_key(ctx, r), R::SetKey),
        Call::DeleteKey(r) => answer(kv::delete_key(ctx, r), R::DeleteKey),
        Call::SetVersionstampedKey(r) => {
            answer(kv::set_versionstamped_key(ctx, r), R::SetVersionstampedKey)
        }
        Call::SetVersionstampedValue(r) => answer(
            kv::set_versionstamped_value(ctx, r),
            R::SetVersionstampedValue,
        ),
        Call::GetRange(r) => answer(range::get_range(ctx, r), R::GetRange),
        Call::SnapshotGetRange(r) => answer(range::snapshot_get_range(ctx, r), R::SnapshotGetRange),
        Call::SnapshotGet(r) => answer(snapshot::snapshot_get(ctx, r), R::SnapshotGet),
        Call::SnapshotRead(r) => answer(snapshot::snapshot_read(ctx, r), R::SnapshotRead),
        Call::GetReadVersion(_) => answer(snapshot::get_read_version(ctx), R::GetReadVersion),
        Call::GetCommittedVersion(_) => answer(
            snapshot::get_committed_version(ctx, session),
            R::GetCommittedVersion,
        ),
        Call::AtomicCommit(r) => answer(txn::atomic_commit(ctx, session, r), R::AtomicCommit),
        Call::BeginTransaction(r) => answer(txn::begin(ctx, r), R::BeginTransaction),
        Call::CommitTransaction(r) => answer(txn::commit(ctx, r), R::CommitTransaction),
        Call::AbortTransaction(r) => answer(txn::abort(ctx, r), R::AbortTransaction),
        Call::SetReadVersion(r) => answer(
            session::set_read_version(ctx, session, r),
            R::SetReadVersion,
        ),
        Call::AddReadConflict(r) => answer(
            session::add_read_conflict(ctx, session, r),
            R::AddReadConflict,
        ),
        Call::AddReadConflictRange(r) => answer(
            session::add_read_conflict_range(ctx, session, r),
            R::AddReadConflictRange,
        ),
        Call::Ping(r) => answer(admin::ping(r), R::Ping),
        Call::GetClusterHealth(r) => answer(admin::cluster_health(ctx, r), R::GetClusterHealth),
        Call::GetDatabaseStats(r) => answer(admin::database_stats(ctx, r), R::GetDatabaseStats),
        Call::GetNodeInfo(r) => answer(admin::node_info(ctx, r), R::GetNodeInfo),
        Call::SetFaultInjection(r) => {
            answer(admin::set_fault_injection(ctx, r), R::SetFaultInjection)
        }
    }
}

/// `f`, or `TIMEOUT` (outcome unknown) after `d`.
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

/// Replicates one write command, counted in the front's write statistics; `TIMEOUT` after
/// `timeout`. `asked` is the client's own timeout, handed to the replica too.
async fn commit_write<S: KvService>(
    c: &FrontCtx<S>,
    cmd: crate::txn::Command,
    timeout: Duration,
    asked: Option<Duration>,
) -> Result<crate::txn::Outcome, ServiceError> {
    bump(&c.shared.stats.writes);
    with_timeout(timeout, c.service.commit(cmd, asked)).await
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
    // An injected `error` fault answers as if the cluster were unavailable, without running
    // the request (UNAVAILABLE must not hide a write that happened); the call is still
    // dispatched, so its session work happens as it would have.
    let injected = (fault == Some(FaultKind::Error) && INJECTABLE.contains(&method)).then(|| {
        let e = ServiceError::new(ErrorCode::Unavailable, "injected fault");
        (call.refused(&e), Some(e.code))
    });
    let fut = dispatch(ctx, session, call);
    let ctx2 = ctx.clone();
    ctx.shared.stats.in_flight.fetch_add(1, Ordering::SeqCst);
    Box::pin(async move {
        let _done = InFlight(&ctx2.shared.stats.in_flight);
        if let Some(w) = wait_for {
            w.wait().await;
        }
        if let Some(FaultKind::Delay(d)) = fault {
            glommio::timer::sleep(d).await;
        }
        let (resp, code) = match injected {
            Some(a) => a,
            None => fut.await,
        };
        if let Some(w) = written {
            w.finish();
        }
        let us = started.elapsed().as_micros() as u64;
        ctx2.shared.metrics.record(method, code, us);
        resp
    })
}

/// The methods an injected `error` fault answers for; other methods run normally.
const INJECTABLE: &[&str] = &["setKey", "deleteKey", "atomicCommit", "get"];
