//! Reads at a version: snapshotGet, snapshotRead (the same read under two names), and the
//! versions themselves: getReadVersion, getCommittedVersion.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;

use super::super::ctx::{cf_of, version_of, FrontCtx};
use super::super::generated::{SnapshotGetRequest, SnapshotReadRequest};
use super::kv::point_read;
use super::Handled;
use crate::service::{KvService, ReadOp};
use crate::txn::interactive::Session;
use crate::types::Version;

/// A point read of `key` in `cf` at `read_version`.
fn read_at<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    key: Vec<u8>,
    read_version: i64,
    cf: Option<String>,
) -> impl Handled<Option<Bytes>> {
    let c = ctx.clone();
    let at = version_of(read_version, "read_version");
    let op = cf_of(cf).map(|cf| ReadOp::Get {
        cf,
        key: Bytes::from(key),
    });
    async move { point_read(&c, Some(at?), op).await }
}

pub(super) fn snapshot_get<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: SnapshotGetRequest,
) -> impl Handled<Option<Bytes>> {
    read_at(ctx, r.key, r.read_version, r.column_family)
}

pub(super) fn snapshot_read<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: SnapshotReadRequest,
) -> impl Handled<Option<Bytes>> {
    read_at(ctx, r.key, r.read_version, r.column_family)
}

pub(super) fn get_read_version<S: KvService>(ctx: &Rc<FrontCtx<S>>) -> impl Handled<Version> {
    let c = ctx.clone();
    async move { c.service.read_version().await }
}

/// The version of the connection's last successful commit, or the newest applied one.
pub(super) fn get_committed_version<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    session: &Rc<RefCell<Session>>,
) -> impl Handled<Version> {
    let v = session
        .borrow()
        .committed_version
        .unwrap_or_else(|| ctx.service.applied_version());
    std::future::ready(Ok(v))
}
