//! The method table's bodies: one arm per Thrift method, turning a call into service calls
//! and a response, and the helpers the arms share (blind writes, point and range reads).

use super::admin::{cluster_health, database_stats, node_status, set_fault};
use super::*;

pub(super) fn dispatch<S: KvService>(
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
                Ok(range) => match ctx.register_conflict(session, range) {
                    Ok(()) => AddReadConflictResponse::new(true, None::<String>),
                    Err(e) => AddReadConflictResponse::new(false, err_text(&e)),
                },
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
                Ok(range) => match ctx.register_conflict(session, range) {
                    Ok(()) => AddReadConflictRangeResponse::new(true, None::<String>),
                    Err(e) => AddReadConflictRangeResponse::new(false, err_text(&e)),
                },
                Err(e) => AddReadConflictRangeResponse::new(false, err_text(&e)),
            };
            ready(Response::AddReadConflictRange(resp))
        }
        Call::AtomicCommit(r) => {
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
                .map(|t| Duration::from_secs(t.clamp(1, 3600) as u64));
            let timeout = asked.unwrap_or(Duration::from_secs(DEFAULT_COMMIT_TIMEOUT_S as u64));
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
            let session = session.clone();
            Box::pin(async move {
                let res = match prepared {
                    Ok(cmd) => {
                        c.stats.writes.set(c.stats.writes.get() + 1);
                        with_timeout(timeout, c.service.commit(cmd, asked)).await
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
                conflicts.extend(ctx.conflict_ranges(r.read_conflict_ranges)?);
                ctx.build_command(Some(rv), r.operations, conflicts)
            })();
            Box::pin(async move {
                let res = match prepared {
                    Ok(cmd) => {
                        c.stats.writes.set(c.stats.writes.get() + 1);
                        with_timeout(
                            Duration::from_secs(DEFAULT_COMMIT_TIMEOUT_S as u64),
                            c.service.commit(cmd, None),
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
        c.service.commit(cmd, None),
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
