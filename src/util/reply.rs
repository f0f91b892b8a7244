//! Answers that cross executors without touching a waiting task's waker on the wrong thread.
//!
//! glommio's task wakers are not thread-safe: a waker of a short-lived task that is woken or
//! dropped on another thread races with the task's own thread finishing it, which shows as
//! glommio's "Waker invariant broken" panic (the front's executor thread died with it, leaving
//! its listener open and unserved) or as heap corruption. The front waits for a replica's answer
//! on a oneshot; when that replica runs on another executor (after a failover the primary may
//! sit on the followers' core) the answer must not complete the oneshot there.
//!
//! A `Reply` made for a waiter on another executor carries that executor's inbox: sending (or
//! dropping) it queues a closure there, and a task that lives as long as the executor runs it on
//! its own thread, so the oneshot is completed and the waiter woken where the waiter lives. Only
//! that long-lived task is ever woken from another thread (as every channel between the apply
//! threads and the executors already does). A `Reply` for a waiter on the same thread (the
//! common case: the front beside the primary) is a plain oneshot.

use std::cell::RefCell;

use futures_channel::{mpsc, oneshot};
use futures_lite::StreamExt;

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static INBOX: RefCell<Option<mpsc::UnboundedSender<Job>>> = const { RefCell::new(None) };
}

/// This executor's inbox, its task started on first use (must run on a glommio executor).
fn inbox() -> mpsc::UnboundedSender<Job> {
    INBOX.with(|slot| {
        slot.borrow_mut()
            .get_or_insert_with(|| {
                let (tx, mut rx) = mpsc::unbounded::<Job>();
                glommio::spawn_local(async move {
                    while let Some(job) = rx.next().await {
                        job();
                    }
                })
                .detach();
                tx
            })
            .clone()
    })
}

/// The sending half of a oneshot answer; completed or dropped on the waiter's thread.
pub struct Reply<T: Send + 'static> {
    tx: Option<oneshot::Sender<T>>,
    /// The waiter's executor inbox, when whoever answers runs on another thread.
    home: Option<mpsc::UnboundedSender<Job>>,
}

impl<T: Send + 'static> Reply<T> {
    /// A reply answered on the waiter's own thread, or by a thread that is no glommio executor
    /// (a blocking caller's waker is thread-safe).
    pub fn direct(tx: oneshot::Sender<T>) -> Self {
        Reply {
            tx: Some(tx),
            home: None,
        }
    }

    /// A reply for a waiter on this executor that the executor `answerer` answers: relayed
    /// through this executor's inbox unless `answerer` is this executor.
    pub fn to_here(tx: oneshot::Sender<T>, answerer: Option<usize>) -> Self {
        let here = glommio::executor().id();
        Reply {
            tx: Some(tx),
            home: (answerer != Some(here)).then(inbox),
        }
    }

    /// Answers (a waiter that is gone is ignored).
    pub fn send(mut self, value: T) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        match self.home.take() {
            None => {
                let _ = tx.send(value);
            }
            Some(home) => {
                let _ = home.unbounded_send(Box::new(move || {
                    let _ = tx.send(value);
                }));
            }
        }
    }
}

impl<T: Send + 'static> Drop for Reply<T> {
    /// An unanswered reply tells its waiter so (oneshot `Canceled`) on the waiter's thread.
    fn drop(&mut self) {
        if let (Some(tx), Some(home)) = (self.tx.take(), self.home.take()) {
            let _ = home.unbounded_send(Box::new(move || drop(tx)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::ThreadId;

    /// Wakes the task it wraps and notes the thread each wake came from.
    struct Recorder {
        threads: Arc<Mutex<Vec<ThreadId>>>,
        task: Waker,
    }

    impl Wake for Recorder {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            if let Ok(mut t) = self.threads.lock() {
                t.push(std::thread::current().id());
            }
            self.task.wake_by_ref();
        }
    }

    /// Waits on `rx` through recording wakers while `answer` runs on a plain thread; returns
    /// what arrived and the threads its wakes came from.
    async fn wait_answered_elsewhere(
        rx: oneshot::Receiver<u32>,
        answer: impl FnOnce() + Send + 'static,
    ) -> (Result<u32, oneshot::Canceled>, Vec<ThreadId>) {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let mut rx = rx;
        let mut answer = Some(answer);
        let got = futures_lite::future::poll_fn(|cx| {
            let recorder = Arc::new(Recorder {
                threads: threads.clone(),
                task: cx.waker().clone(),
            });
            let waker = Waker::from(recorder);
            let polled = Pin::new(&mut rx).poll(&mut Context::from_waker(&waker));
            if let Some(a) = answer.take() {
                // The waker is registered: answer from another thread, and wait for it there.
                let _ = std::thread::spawn(a).join();
            }
            match polled {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let seen = threads.lock().map(|t| t.clone()).unwrap_or_default();
        (got, seen)
    }

    #[test]
    fn an_answer_from_another_thread_wakes_its_waiter_on_the_waiter_thread_only() {
        let run = glommio::LocalExecutorBuilder::default().spawn(|| async {
            let me = std::thread::current().id();
            // Answered.
            let (tx, rx) = oneshot::channel::<u32>();
            let reply = Reply::to_here(tx, None);
            let (got, threads) = wait_answered_elsewhere(rx, move || reply.send(7)).await;
            assert_eq!(got, Ok(7));
            assert!(
                !threads.is_empty() && threads.iter().all(|t| *t == me),
                "{threads:?}"
            );
            // Dropped unanswered (a replica that stops).
            let (tx, rx) = oneshot::channel::<u32>();
            let reply = Reply::to_here(tx, None);
            let (got, threads) = wait_answered_elsewhere(rx, move || drop(reply)).await;
            assert!(got.is_err());
            assert!(
                !threads.is_empty() && threads.iter().all(|t| *t == me),
                "{threads:?}"
            );
        });
        run.expect("executor").join().expect("test body");
    }
}
