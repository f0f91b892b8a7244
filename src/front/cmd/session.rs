//! The connection's session (the older stateful methods): setReadVersion pins a read version
//! for the next atomicCommit, addReadConflict[Range] register conflicts it consumes. They run
//! synchronously, so pipelined calls see the session in request order.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;

use super::super::ctx::{cf_of, invalid, version_of, FrontCtx};
use super::super::generated::{
    AddReadConflictRangeRequest, AddReadConflictRequest, SetReadVersionRequest,
};
use super::Handled;
use crate::service::{ErrorCode, KvService, ServiceError};
use crate::txn::command::single_key_range;
use crate::txn::interactive::Session;
use crate::txn::KeyRange;

pub(super) fn set_read_version<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    session: &Rc<RefCell<Session>>,
    r: SetReadVersionRequest,
) -> impl Handled<()> {
    let res = version_of(r.version, "version").and_then(|v| {
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
            session.borrow_mut().read_version = Some(v);
            Ok(())
        }
    });
    std::future::ready(res)
}

pub(super) fn add_read_conflict<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    session: &Rc<RefCell<Session>>,
    r: AddReadConflictRequest,
) -> impl Handled<()> {
    let res = cf_of(r.column_family).and_then(|cf| {
        ctx.check_key(&r.key)?;
        ctx.register_conflict(session, single_key_range(&cf, &Bytes::from(r.key)))
    });
    std::future::ready(res)
}

pub(super) fn add_read_conflict_range<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    session: &Rc<RefCell<Session>>,
    r: AddReadConflictRangeRequest,
) -> impl Handled<()> {
    let res = cf_of(r.column_family).and_then(|cf| {
        ctx.check_key(&r.start_key)?;
        ctx.check_key(&r.end_key)?;
        if r.start_key > r.end_key {
            return Err(invalid("start_key is after end_key"));
        }
        let range = KeyRange {
            cf,
            begin: Bytes::from(r.start_key),
            end: Bytes::from(r.end_key),
        };
        ctx.register_conflict(session, range)
    });
    std::future::ready(res)
}
