//! getRange and snapshotGetRange: a range selector, bounded by keys and reply bytes, read
//! linearizably or at a version (on the executor's blocking pool, see `service`).

use std::rc::Rc;

use super::super::ctx::{bump, version_of, FrontCtx};
use super::super::generated::{GetRangeRequest, KeyValue, SnapshotGetRangeRequest};
use super::super::reply::RangePage;
use super::Handled;
use crate::service::{ErrorCode, KvService, ReadOp, ReadResult, ServiceError};
use crate::storage::RangeQuery;
use crate::types::Version;

/// The range query of either request (they share the selector fields).
macro_rules! query_of {
    ($ctx:expr, $r:expr) => {
        $ctx.range_query(
            $r.column_family,
            $r.begin_key,
            $r.end_key,
            (
                $r.begin_offset,
                $r.begin_or_equal,
                $r.end_offset,
                $r.end_or_equal,
            ),
            $r.limit,
        )
    };
}

pub(super) fn get_range<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: GetRangeRequest,
) -> impl Handled<RangePage> {
    let q = query_of!(ctx, r);
    let c = ctx.clone();
    async move { range_read(&c, None, q).await }
}

pub(super) fn snapshot_get_range<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: SnapshotGetRangeRequest,
) -> impl Handled<RangePage> {
    let at = version_of(r.read_version, "read_version");
    let q = query_of!(ctx, r);
    let c = ctx.clone();
    async move { range_read(&c, Some(at?), q).await }
}

async fn range_read<S: KvService>(
    c: &Rc<FrontCtx<S>>,
    at: Option<Version>,
    q: Result<RangeQuery, ServiceError>,
) -> Result<RangePage, ServiceError> {
    bump(&c.shared.stats.reads);
    match c.service.read(at, ReadOp::Range(q?)).await? {
        ReadResult::Range(r) => Ok(RangePage {
            key_values: r
                .key_values
                .into_iter()
                .map(|(k, v)| KeyValue::new(k.to_vec(), v.to_vec()))
                .collect(),
            has_more: r.has_more,
        }),
        ReadResult::Value(_) => Err(ServiceError::new(
            ErrorCode::Internal,
            "point result for a range read",
        )),
    }
}
