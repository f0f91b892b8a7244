//! Applying on the replica's own executor (`storage.apply_on_executor`, the default): the
//! replica hands committed slots over the same lock-free queue as to an apply thread, and a
//! task of its executor takes them off in runs. No thread is woken to apply a batch and none
//! wakes the replica back, so a write crosses two fewer threads. With RocksDB's WAL off a run
//! is a memtable insert; runs are kept short (`RUN_LIMIT`) and the executor serves its other
//! tasks between them. What may wait for the disk or for RocksDB (snapshot install steps,
//! starting a memtable flush, the final flush, a run while RocksDB stalls writes) runs on the
//! executor's blocking pool.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};

use crossbeam::channel::{Receiver, Sender, TryRecvError};

use super::apply::{Applier, ApplyWork, RunLimit, APPLY_PAUSE_POLL};

/// Commands in one run on the executor at most, and one run per turn: a run blocks the
/// executor (about 3 µs per command), so the replica's own events wait at most a few ms.
const RUN_LIMIT: RunLimit = RunLimit {
    commands: 1024,
    runs: 1,
};

/// Wakes the apply task: set by the replica after it queued work, taken by the task.
#[derive(Default)]
pub struct Kick {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Kick {
    fn kick(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Whether a kick came within `d`.
    async fn within(&self, d: std::time::Duration) -> bool {
        crate::util::time::within(d, self.wait()).await.is_some()
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// The replica's end of its apply queue.
pub struct ApplyQueue {
    tx: Sender<ApplyWork>,
    /// Set when a task of this executor applies (none: an apply thread blocks on the queue).
    kick: Option<Rc<Kick>>,
}

impl ApplyQueue {
    pub fn new(tx: Sender<ApplyWork>, kick: Option<Rc<Kick>>) -> Self {
        ApplyQueue { tx, kick }
    }

    /// Queues work; false when the applier is gone (it stopped on a fatal error).
    pub fn send(&self, work: ApplyWork) -> bool {
        let sent = self.tx.send(work).is_ok();
        if let Some(k) = &self.kick {
            k.kick();
        }
        sent
    }
}

impl Drop for ApplyQueue {
    /// The task runs after the sender is gone: it drains what is left, flushes and ends.
    fn drop(&mut self) {
        if let Some(k) = &self.kick {
            k.kick();
        }
    }
}

/// The apply task: takes work off the queue until the replica drops its end, or until a
/// graceful stop begins (what is left stays in the WAL for the next start).
pub async fn run(mut a: Applier, jobs: Receiver<ApplyWork>, kick: Rc<Kick>) {
    loop {
        while a.paused() {
            glommio::timer::sleep(APPLY_PAUSE_POLL).await;
        }
        if a.stopping() {
            break;
        }
        let work = match a.lookahead.take() {
            Some(w) => w,
            None => match jobs.try_recv() {
                Ok(w) => w,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    // Idle: make what was applied durable, so WAL segments can be released.
                    if !kick.within(a.idle_wait()).await {
                        let r;
                        (a, r) = flush_progress(a).await;
                        if let Err(e) = r {
                            a.fail(e);
                            return;
                        }
                    }
                    continue;
                }
            },
        };
        if a.paused() || a.stopping() {
            // Set while this task waited for the work: it waits too.
            a.lookahead = Some(work);
            continue;
        }
        let r = match work {
            ApplyWork::Install(step) => {
                let r;
                (a, r) = elsewhere(a, move |a| a.install(step)).await;
                r
            }
            // A write RocksDB would delay must not hold up the executor: it waits elsewhere.
            ApplyWork::Slot(j) if a.write_stalled() => {
                let rx = jobs.clone();
                let r;
                (a, r) = elsewhere(a, move |a| a.slots(j, &rx, RUN_LIMIT)).await;
                r
            }
            ApplyWork::Slot(j) => a.slots(j, &jobs, RUN_LIMIT),
        };
        let r = match r {
            Ok(()) => {
                let r;
                (a, r) = flush_progress(a).await;
                r
            }
            e => e,
        };
        if let Err(e) = r {
            a.fail(e);
            return;
        }
        futures_lite::future::yield_now().await;
    }
    glommio::executor().spawn_blocking(move || a.finish()).await;
}

/// Runs `f` with the applier on the executor's blocking pool and hands the applier back.
async fn elsewhere<R: Send + 'static>(
    mut a: Applier,
    f: impl FnOnce(&mut Applier) -> R + Send + 'static,
) -> (Applier, R) {
    glommio::executor()
        .spawn_blocking(move || {
            let r = f(&mut a);
            (a, r)
        })
        .await
}

/// Flush progress: published at once, but starting a flush (which may wait until it would not
/// stall writes) happens on the blocking pool.
async fn flush_progress(mut a: Applier) -> (Applier, Result<(), crate::error::Error>) {
    if a.flush_due() {
        elsewhere(a, Applier::idle).await
    } else {
        let r = a.idle();
        (a, r)
    }
}
