//! FoundationDB-style transactions on the client: reads at one read version that see the
//! transaction's own writes and record read conflicts (keys and ranges); writes buffered and
//! sent as one `atomicCommit`; `Client::transact` runs a closure until it commits.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::range::{snapshot_page_request, RangePage};
use super::{lock, pool, Client, Error, KeyValue, Kind, Result};
use crate::front::generated::{AtomicCommitRequest, KeyRange, Operation, SnapshotGetRequest};

/// Bytes of a versionstamp: 8 of commit version and 2 of the operation's index, big-endian.
pub const VERSIONSTAMP_LEN: usize = 10;

/// A transaction: cheap to clone (clones share it), so the closure of `transact` can own one.
/// Its reads happen at one read version (fetched on first use); nothing is sent for a write
/// until `commit`.
#[derive(Clone)]
pub struct Transaction {
    client: Client,
    state: Arc<Mutex<TxState>>,
}

#[derive(Default)]
struct TxState {
    read_version: Option<i64>,
    ops: Vec<Operation>,
    /// What the transaction's own reads see instead of the store: (column family, key).
    writes: BTreeMap<(Option<String>, Vec<u8>), Pending>,
    conflict_keys: Vec<Vec<u8>>,
    conflict_ranges: Vec<KeyRange>,
    committed: Option<Committed>,
}

#[derive(Clone)]
enum Pending {
    Set(Vec<u8>),
    Delete,
    /// A versionstamped value: known only once committed.
    Unreadable,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The commit's version; `None` for a transaction that wrote nothing (nothing was sent).
    pub version: Option<i64>,
}

impl Committed {
    /// The versionstamp the server put into the operation with index `op` (as returned by
    /// `Transaction::set_versionstamped_key`/`_value`).
    pub fn versionstamp(&self, op: u16) -> Option<[u8; VERSIONSTAMP_LEN]> {
        let v = self.version?;
        let mut s = [0u8; VERSIONSTAMP_LEN];
        s[..8].copy_from_slice(&(v as u64).to_be_bytes());
        s[8..].copy_from_slice(&op.to_be_bytes());
        Some(s)
    }
}

/// The smallest key after `key`.
fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

impl Transaction {
    pub(crate) fn new(client: Client) -> Transaction {
        Transaction {
            client,
            state: Arc::new(Mutex::new(TxState::default())),
        }
    }

    /// The same transaction acting on column family `cf`.
    pub fn in_cf(&self, cf: &str) -> Transaction {
        Transaction {
            client: self.client.in_cf(cf),
            state: self.state.clone(),
        }
    }

    fn cf(&self) -> Option<String> {
        self.client.cf()
    }

    /// The transaction's read version (fetched from the server on first use).
    pub async fn read_version(&self) -> Result<i64> {
        if let Some(v) = lock(&self.state).read_version {
            return Ok(v);
        }
        let v = self.client.read_version().await?;
        Ok(*lock(&self.state).read_version.get_or_insert(v))
    }

    /// Reads at the transaction's version and its own writes; the key becomes a read conflict.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.read(key.as_ref(), true).await
    }

    /// Like `get` without the read conflict (FoundationDB's snapshot read): a later write to
    /// the key by someone else does not fail this transaction.
    pub async fn snapshot_get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.read(key.as_ref(), false).await
    }

    /// Own writes first (no conflict needed: the store was not read), then the store.
    async fn read(&self, key: &[u8], conflict: bool) -> Result<Option<Vec<u8>>> {
        if let Some(p) = lock(&self.state).writes.get(&(self.cf(), key.to_vec())) {
            return match p {
                Pending::Set(v) => Ok(Some(v.clone())),
                Pending::Delete => Ok(None),
                Pending::Unreadable => Err(unreadable(key)),
            };
        }
        if conflict {
            self.add_read_conflict_key(key);
        }
        let req = SnapshotGetRequest {
            key: key.to_vec(),
            read_version: self.read_version().await?,
            column_family: self.cf(),
        };
        let r = self.client.call(&req, Kind::Read).await?;
        Ok(r.found.then_some(r.value))
    }

    /// Keys in `[begin, end)` at the transaction's version, merged with its own writes, at most
    /// `limit` (0: the server's own bound). The range read (up to where the page ends) becomes
    /// a read conflict.
    pub async fn get_range(
        &self,
        begin: impl AsRef<[u8]>,
        end: impl AsRef<[u8]>,
        limit: usize,
    ) -> Result<RangePage> {
        let (begin, end) = (begin.as_ref(), end.as_ref());
        let version = self.read_version().await?;
        let wire_limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let req = snapshot_page_request(self.cf(), begin, true, end, version, wire_limit);
        let r = self.client.call(&req, Kind::Read).await?;
        // What the store said covers [begin, covered_end); own writes past it stay for later.
        let covered_end = match (r.has_more, r.key_values.last()) {
            (true, Some(kv)) => key_after(&kv.key),
            _ => end.to_vec(),
        };
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = r
            .key_values
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        {
            let mut s = lock(&self.state);
            let cf = self.cf();
            let from = (cf.clone(), begin.to_vec());
            let to = (cf.clone(), covered_end.clone());
            if from < to {
                for ((_, k), p) in s.writes.range(from..to) {
                    match p {
                        Pending::Set(v) => {
                            merged.insert(k.clone(), v.clone());
                        }
                        Pending::Delete => {
                            merged.remove(k);
                        }
                        Pending::Unreadable => return Err(unreadable(k)),
                    }
                }
            }
            s.conflict_ranges.push(KeyRange {
                begin_key: begin.to_vec(),
                end_key: covered_end,
                column_family: cf,
            });
        }
        let mut pairs: Vec<KeyValue> = merged.into_iter().collect();
        let mut has_more = r.has_more;
        if limit > 0 && pairs.len() > limit {
            pairs.truncate(limit);
            has_more = true;
        }
        Ok(RangePage { pairs, has_more })
    }

    fn write(
        &self,
        op: &str,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        pending: Option<Pending>,
    ) -> usize {
        let cf = self.cf();
        let mut s = lock(&self.state);
        if let Some(p) = pending {
            s.writes.insert((cf.clone(), key.clone()), p);
        }
        s.ops.push(Operation {
            type_: op.to_string(),
            key,
            value,
            column_family: cf,
        });
        s.ops.len() - 1
    }

    /// Sets `key` to `value` when the transaction commits.
    pub fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (k, v) = (key.as_ref().to_vec(), value.as_ref().to_vec());
        self.write("set", k, Some(v.clone()), Some(Pending::Set(v)));
    }

    /// Deletes `key` when the transaction commits.
    pub fn delete(&self, key: impl AsRef<[u8]>) {
        self.write("delete", key.as_ref().to_vec(), None, Some(Pending::Delete));
    }

    /// Writes `value` under `key_prefix` with its last 10 bytes replaced by the versionstamp;
    /// returns the operation's index (see `Committed::versionstamp`). The key is not visible
    /// to this transaction's reads.
    pub fn set_versionstamped_key(
        &self,
        key_prefix: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> u16 {
        let op = self.write(
            "SET_VERSIONSTAMPED_KEY",
            key_prefix.as_ref().to_vec(),
            Some(value.as_ref().to_vec()),
            None,
        );
        op as u16
    }

    /// Writes `value_prefix` with its last 10 bytes replaced by the versionstamp under `key`;
    /// returns the operation's index. Reading `key` in this transaction afterwards is an error.
    pub fn set_versionstamped_value(
        &self,
        key: impl AsRef<[u8]>,
        value_prefix: impl AsRef<[u8]>,
    ) -> u16 {
        let op = self.write(
            "SET_VERSIONSTAMPED_VALUE",
            key.as_ref().to_vec(),
            Some(value_prefix.as_ref().to_vec()),
            Some(Pending::Unreadable),
        );
        op as u16
    }

    /// Makes the commit fail with `CONFLICT` if `key` was written after the read version.
    pub fn add_read_conflict_key(&self, key: impl AsRef<[u8]>) {
        let key = key.as_ref();
        let cf = self.cf();
        let mut s = lock(&self.state);
        match cf {
            None => s.conflict_keys.push(key.to_vec()),
            Some(cf) => s.conflict_ranges.push(KeyRange {
                begin_key: key.to_vec(),
                end_key: key_after(key),
                column_family: Some(cf),
            }),
        }
    }

    /// Makes the commit fail with `CONFLICT` if a key in `[begin, end)` was written after the
    /// read version.
    pub fn add_read_conflict_range(&self, begin: impl AsRef<[u8]>, end: impl AsRef<[u8]>) {
        let range = KeyRange {
            begin_key: begin.as_ref().to_vec(),
            end_key: end.as_ref().to_vec(),
            column_family: self.cf(),
        };
        lock(&self.state).conflict_ranges.push(range);
    }

    /// Sends the writes and read conflicts as one `atomicCommit`. A transaction without writes
    /// sends nothing. A transaction commits once: a later `commit` returns the first result
    /// (and writes made after it are not sent).
    pub async fn commit(&self) -> Result<Committed> {
        let has_conflicts = {
            let s = lock(&self.state);
            if let Some(c) = s.committed {
                return Ok(c);
            }
            if s.ops.is_empty() {
                return Ok(Committed { version: None });
            }
            !s.conflict_keys.is_empty() || !s.conflict_ranges.is_empty()
        };
        // Conflicts are checked after the read version; name one if the reads did not.
        let read_version = if has_conflicts {
            self.read_version().await?
        } else {
            lock(&self.state).read_version.unwrap_or(0)
        };
        let req = {
            let s = lock(&self.state);
            AtomicCommitRequest {
                read_version,
                operations: s.ops.clone(),
                read_conflict_keys: s.conflict_keys.clone(),
                timeout_seconds: self
                    .client
                    .config()
                    .commit_timeout
                    .map(|t| t.as_secs().max(1) as i64),
                read_conflict_ranges: (!s.conflict_ranges.is_empty())
                    .then(|| s.conflict_ranges.clone()),
            }
        };
        let r = self.client.call(&req, Kind::Write).await?;
        let c = Committed {
            version: r.committed_version,
        };
        lock(&self.state).committed = Some(c);
        Ok(c)
    }
}

fn unreadable(key: &[u8]) -> Error {
    Error::InvalidArgument(format!(
        "key {:?} has a versionstamped value written by this transaction; it is known only after commit",
        String::from_utf8_lossy(key)
    ))
}

impl Client {
    /// A new transaction (its read version is fetched on first read).
    pub fn transaction(&self) -> Transaction {
        Transaction::new(self.clone())
    }

    /// Runs `f` in a transaction and commits it; on `CONFLICT`, `TOO_OLD`, `NOT_PRIMARY` or
    /// `UNAVAILABLE` (from `f`'s reads or the commit) runs `f` again on a new transaction after
    /// a backoff, up to `Config::txn_max_attempts` times within `Config::txn_deadline`
    /// (`Error::GaveUp` after). Other errors, including an unknown commit outcome, are returned
    /// as they are: `f` may run more than once, so it should only act through `tx`.
    pub async fn transact<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cfg = self.config().clone();
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let tx = self.transaction();
            let res = match f(tx.clone()).await {
                Ok(v) => tx.commit().await.map(|_| v),
                Err(e) => Err(e),
            };
            match res {
                Ok(v) => return Ok(v),
                Err(e) if e.retry_transaction() => {
                    let pause = pool::backoff(attempt, cfg.txn_backoff_min, cfg.backoff_max);
                    if attempt >= cfg.txn_max_attempts
                        || started.elapsed() + pause > cfg.txn_deadline
                    {
                        return Err(Error::GaveUp {
                            attempts: attempt,
                            last: Box::new(e),
                        });
                    }
                    tracing::debug!(attempt, error = %e, "transaction retried");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
