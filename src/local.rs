//! `LocalService`: one store fed by a single local log, without replication.
//!
//! Used by `paxoskv serve --single` and by tests of the front and the state machine. Commands
//! cross a channel to one apply thread, which takes everything waiting (up to `max_batch_ops`)
//! as one batch, applies it as one RocksDB `WriteBatch` with a synced WAL (group commit), and
//! answers each waiting client. Durability here is RocksDB's own WAL.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{Receiver, Sender};
use futures_channel::oneshot;

use crate::service::{ErrorCode, KvService, ReadOp, ReadResult, ReplicaStatus, ServiceError};
use crate::storage::{KvReader, KvStoreExecutor, StorageError, StoreOptions};
use crate::txn::{Command, Outcome};
use crate::types::Version;
use crate::util::reply::Reply;

type Job = (Command, Reply<Result<Outcome, ServiceError>>);

#[derive(Clone)]
pub struct LocalService {
    tx: Sender<Job>,
    reader: KvReader,
    _thread: Arc<ApplyThread>,
}

struct ApplyThread {
    handle: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ApplyThread {
    fn drop(&mut self) {
        if let Ok(mut h) = self.handle.lock() {
            if let Some(h) = h.take() {
                let _ = h.join();
            }
        }
    }
}

impl LocalService {
    pub fn open(
        path: &Path,
        options: StoreOptions,
        max_batch_ops: usize,
    ) -> Result<Self, StorageError> {
        let exec = KvStoreExecutor::open(path, options)?;
        // Every read of a single store goes to it.
        exec.keep_latest(true);
        let reader = exec.reader();
        let (tx, rx) = crossbeam::channel::bounded::<Job>(65_536);
        let handle = std::thread::Builder::new()
            .name("paxoskv-apply".into())
            .spawn(move || run_apply(exec, rx, max_batch_ops.max(1)))
            .map_err(|e| StorageError::Corrupt(format!("cannot start apply thread: {e}")))?;
        Ok(LocalService {
            tx,
            reader,
            _thread: Arc::new(ApplyThread {
                handle: std::sync::Mutex::new(Some(handle)),
            }),
        })
    }

    pub fn reader(&self) -> &KvReader {
        &self.reader
    }
}

fn run_apply(mut exec: KvStoreExecutor, rx: Receiver<Job>, max_batch_ops: usize) {
    let mut cmds = Vec::with_capacity(max_batch_ops);
    let mut waiters = Vec::with_capacity(max_batch_ops);
    while let Ok(first) = rx.recv() {
        cmds.push(first.0);
        waiters.push(first.1);
        while cmds.len() < max_batch_ops {
            match rx.try_recv() {
                Ok((c, w)) => {
                    cmds.push(c);
                    waiters.push(w);
                }
                Err(_) => break,
            }
        }
        let seq = exec.next_expected_sequence();
        match exec.apply(seq, &cmds) {
            Ok(Some(outcomes)) => {
                for (w, o) in waiters.drain(..).zip(outcomes) {
                    w.send(Ok(o));
                }
            }
            Ok(None) => unreachable_batch(&mut waiters),
            Err(e) => {
                // A failed write is fatal for this store: answer everyone and stop applying.
                tracing::error!(error = %e, "apply failed; the store stops accepting writes");
                for w in waiters.drain(..) {
                    w.send(Err(ServiceError::new(ErrorCode::Internal, e.to_string())));
                }
                return;
            }
        }
        cmds.clear();
    }
}

fn unreachable_batch(waiters: &mut Vec<Reply<Result<Outcome, ServiceError>>>) {
    for w in waiters.drain(..) {
        w.send(Err(ServiceError::new(
            ErrorCode::Internal,
            "batch sequence already applied",
        )));
    }
}

impl KvService for LocalService {
    async fn commit(
        &self,
        cmd: Command,
        _timeout: Option<std::time::Duration>,
    ) -> Result<Outcome, ServiceError> {
        let (tx, rx) = oneshot::channel();
        // Answered on the apply thread: relayed back to this executor's thread.
        let reply = Reply::to_here(tx, None);
        self.tx.try_send((cmd, reply)).map_err(|e| match e {
            crossbeam::channel::TrySendError::Full(_) => {
                ServiceError::new(ErrorCode::Unavailable, "too many writes waiting; retry")
            }
            crossbeam::channel::TrySendError::Disconnected(_) => {
                ServiceError::new(ErrorCode::Unavailable, "the store has stopped")
            }
        })?;
        rx.await
            .map_err(|_| ServiceError::outcome_unknown("the store stopped"))?
    }

    async fn read_version(&self) -> Result<Version, ServiceError> {
        Ok(self.reader.last_version())
    }

    async fn read(&self, at: Option<Version>, op: ReadOp) -> Result<ReadResult, ServiceError> {
        let at = at.unwrap_or_else(|| self.reader.last_version());
        Ok(match op {
            ReadOp::Get { cf, key } => ReadResult::Value(self.reader.get(&cf, &key, at)?),
            ReadOp::Range(q) => ReadResult::Range(
                crate::service::range_off_executor(self.reader.clone(), q, at).await?,
            ),
        })
    }

    fn applied_version(&self) -> Version {
        self.reader.last_version()
    }

    fn oldest_version(&self) -> Version {
        self.reader.oldest_version()
    }

    fn replicas(&self) -> Vec<ReplicaStatus> {
        vec![ReplicaStatus {
            id: 0,
            endpoint: "local".into(),
            status: "healthy",
            is_primary: true,
            last_seen_unix_ms: crate::util::time::unix_ms(),
            view: 0,
            uptime_seconds: 0,
        }]
    }

    fn storage_stats(&self) -> (u64, u64, u64) {
        self.reader.approximate_stats()
    }
}
