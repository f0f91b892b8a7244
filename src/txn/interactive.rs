//! Server-side interactive transactions (`beginTransaction` / `commitTransaction` /
//! `abortTransaction`) and the per-connection session that the older stateful methods
//! (`setReadVersion`, `addReadConflict`, `addReadConflictRange`, `getCommittedVersion`) act on.
//!
//! A transaction here is only its read version and deadline: reads go straight to the snapshot
//! and the writes arrive with the commit, so an open transaction costs a few bytes. The table is
//! bounded (`max_open`); a transaction past its deadline is refused with `TIMEOUT` and forgotten.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::txn::KeyRange;
use crate::types::Version;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("unknown transaction id {0:?} (never begun, already finished, or expired long ago)")]
    Unknown(String),
    #[error("transaction {0:?} timed out")]
    TimedOut(String),
    #[error("too many open transactions (limit {0})")]
    TooMany(usize),
}

struct Open {
    read_version: Version,
    deadline: Instant,
}

pub struct TxnTable {
    open: HashMap<String, Open>,
    next_id: u64,
    id_salt: u64,
    max_open: usize,
}

impl TxnTable {
    /// `id_salt` keeps ids from different server runs apart (ids are not secrets).
    pub fn new(max_open: usize, id_salt: u64) -> Self {
        TxnTable {
            open: HashMap::new(),
            next_id: 1,
            id_salt,
            max_open,
        }
    }

    pub fn begin(
        &mut self,
        read_version: Version,
        timeout: Duration,
        now: Instant,
    ) -> Result<String, TxnError> {
        if self.open.len() >= self.max_open {
            self.expire(now);
            if self.open.len() >= self.max_open {
                return Err(TxnError::TooMany(self.max_open));
            }
        }
        let id = format!(
            "{:012x}-{:08x}",
            self.id_salt & 0xffff_ffff_ffff,
            self.next_id
        );
        self.next_id += 1;
        self.open.insert(
            id.clone(),
            Open {
                read_version,
                deadline: now + timeout,
            },
        );
        Ok(id)
    }

    /// Ends the transaction and returns its read version, if it is still alive.
    pub fn finish(&mut self, id: &str, now: Instant) -> Result<Version, TxnError> {
        match self.open.remove(id) {
            None => Err(TxnError::Unknown(id.to_string())),
            Some(t) if t.deadline <= now => Err(TxnError::TimedOut(id.to_string())),
            Some(t) => Ok(t.read_version),
        }
    }

    pub fn abort(&mut self, id: &str) -> bool {
        self.open.remove(id).is_some()
    }

    /// Forgets every transaction past its deadline; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.open.len();
        self.open.retain(|_, t| t.deadline > now);
        before - self.open.len()
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }
}

/// The state the older stateful methods keep per connection: a read version set with
/// `setReadVersion`, conflicts registered with `addReadConflict[Range]` (consumed by the next
/// `atomicCommit` on the connection), and the version of the connection's last commit.
/// `last_write` orders pipelined requests: a read waits for every write sent before it on the
/// same connection, so a connection always reads its own writes.
#[derive(Default)]
pub struct Session {
    pub read_version: Option<Version>,
    pub read_conflicts: Vec<KeyRange>,
    /// Key bytes held in `read_conflicts` (bounded by the front).
    pub read_conflict_bytes: u64,
    pub committed_version: Option<Version>,
    pub last_write: Option<Rc<Fence>>,
}

/// Set once a write and every write before it on the connection have been answered.
#[derive(Default)]
pub struct Fence {
    done: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Fence {
    pub fn set(&self) {
        self.done.set(true);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn is_set(&self) -> bool {
        self.done.get()
    }

    /// Resolves once `set` was called.
    pub fn wait(self: Rc<Self>) -> impl std::future::Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            if self.done.get() {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_finish_timeout_and_limit() {
        let t0 = Instant::now();
        let mut t = TxnTable::new(2, 7);
        let a = t.begin(Version(5), Duration::from_secs(10), t0).unwrap();
        let b = t.begin(Version(6), Duration::from_millis(1), t0).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            t.begin(Version(7), Duration::from_secs(1), t0),
            Err(TxnError::TooMany(2))
        );
        assert_eq!(t.finish(&a, t0), Ok(Version(5)));
        assert_eq!(t.finish(&a, t0), Err(TxnError::Unknown(a.clone())));
        let later = t0 + Duration::from_millis(5);
        assert_eq!(t.finish(&b, later), Err(TxnError::TimedOut(b.clone())));
        let c = t.begin(Version(8), Duration::from_millis(1), t0).unwrap();
        assert!(t.abort(&c));
        assert!(!t.abort(&c));
        t.begin(Version(9), Duration::from_millis(1), t0).unwrap();
        assert_eq!(t.expire(later), 1);
        assert_eq!(t.open_count(), 0);
    }
}
