//! get, setKey, deleteKey and the versionstamped sets: single-key reads and blind writes.

use std::rc::Rc;

use bytes::Bytes;

use super::super::ctx::{bump, cf_of, invalid, FrontCtx, DEFAULT_COMMIT_TIMEOUT};
use super::super::generated::{
    DeleteKeyRequest, GetRequest, SetKeyRequest, SetVersionstampedKeyRequest,
    SetVersionstampedValueRequest,
};
use super::{commit_write, Handled};
use crate::service::{ErrorCode, KvService, ReadOp, ReadResult, ServiceError};
use crate::txn::{Command, WriteOp};
use crate::types::Version;

pub(super) fn get<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: GetRequest,
) -> impl Handled<Option<Bytes>> {
    let c = ctx.clone();
    let op = cf_of(r.column_family).map(|cf| ReadOp::Get {
        cf,
        key: Bytes::from(r.key),
    });
    async move { point_read(&c, None, op).await }
}

pub(super) fn set_key<S: KvService>(ctx: &Rc<FrontCtx<S>>, r: SetKeyRequest) -> impl Handled<()> {
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
    let c = ctx.clone();
    async move { blind_write(&c, cmd).await.map(drop) }
}

pub(super) fn delete_key<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: DeleteKeyRequest,
) -> impl Handled<()> {
    let cmd = (|| {
        let cf = cf_of(r.column_family)?;
        ctx.check_key(&r.key)?;
        Ok(Command::blind(vec![WriteOp::Delete {
            cf,
            key: Bytes::from(r.key),
        }]))
    })();
    let c = ctx.clone();
    async move { blind_write(&c, cmd).await.map(drop) }
}

pub(super) fn set_versionstamped_key<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: SetVersionstampedKeyRequest,
) -> impl Handled<Vec<u8>> {
    let cmd = cf_of(r.column_family).and_then(|cf| {
        ctx.versionstamp_command(&r.key_prefix, &r.value, |k, v| {
            WriteOp::SetVersionstampedKey {
                cf,
                key_prefix: k,
                value: v,
            }
        })
    });
    let c = ctx.clone();
    async move { generated(blind_write(&c, cmd).await) }
}

pub(super) fn set_versionstamped_value<S: KvService>(
    ctx: &Rc<FrontCtx<S>>,
    r: SetVersionstampedValueRequest,
) -> impl Handled<Vec<u8>> {
    let cmd = cf_of(r.column_family).and_then(|cf| {
        ctx.versionstamp_command(&r.key, &r.value_prefix, |k, v| {
            WriteOp::SetVersionstampedValue {
                cf,
                key: k,
                value_prefix: v,
            }
        })
    });
    let c = ctx.clone();
    async move { generated(blind_write(&c, cmd).await) }
}

/// The one key or value a versionstamped write generated.
fn generated(r: Result<Vec<Bytes>, ServiceError>) -> Result<Vec<u8>, ServiceError> {
    Ok(r?.pop().map(|b| b.to_vec()).unwrap_or_default())
}

/// A write outside any transaction; returns the generated versionstamped bytes.
async fn blind_write<S: KvService>(
    c: &Rc<FrontCtx<S>>,
    cmd: Result<Command, ServiceError>,
) -> Result<Vec<Bytes>, ServiceError> {
    use crate::txn::Outcome as Applied;
    match commit_write(c, cmd?, DEFAULT_COMMIT_TIMEOUT, None).await? {
        Applied::Committed { generated, .. } => Ok(generated),
        Applied::Invalid(m) => Err(invalid(m)),
        Applied::Conflict { .. } | Applied::TooOld { .. } => Err(ServiceError::new(
            ErrorCode::Internal,
            "a blind write reported a conflict",
        )),
    }
}

/// A point read, linearizable (`at = None`) or at a version.
pub(super) async fn point_read<S: KvService>(
    c: &Rc<FrontCtx<S>>,
    at: Option<Version>,
    op: Result<ReadOp, ServiceError>,
) -> Result<Option<Bytes>, ServiceError> {
    bump(&c.shared.stats.reads);
    match c.service.read(at, op?).await? {
        ReadResult::Value(v) => Ok(v),
        ReadResult::Range(_) => Err(ServiceError::new(
            ErrorCode::Internal,
            "range result for a point read",
        )),
    }
}
