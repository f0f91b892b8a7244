//! Pipelining on one connection: requests are read and started in order, and may finish in
//! any order, but a read that reads the latest state waits for the writes sent before it on the
//! same connection (`Order`, `WriteSignal`), and the front counts requests in flight for a
//! graceful stop (`InFlight`).

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::wire::Call;
use crate::txn::interactive::Fence;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// Reads the latest state: must see the connection's earlier writes.
    Read,
    Write,
    /// Snapshot reads at an explicit version, session and diagnostic calls.
    Free,
}

pub(super) fn order_of(call: &Call) -> Order {
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
pub(super) struct WriteSignal {
    pub(super) mine: Rc<Fence>,
    pub(super) prev: Option<Rc<Fence>>,
    pub(super) finished: bool,
}

impl WriteSignal {
    pub(super) fn finish(mut self) {
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

/// Counts a request as answered when its future completes or is dropped (the count was
/// raised when the request started).
pub(super) struct InFlight<'a>(pub(super) &'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
