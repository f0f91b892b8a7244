//! Work handed to an executor that is already running: a closure sent across threads that,
//! on the executor, builds a (non-`Send`) future to run there as a task. This is how the
//! Thrift front lives on the executor of the replica it feeds instead of on its own thread.

use std::future::Future;
use std::pin::Pin;

/// A task to start on another executor: called there, its future is spawned as a local task.
pub type Guest = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Hands a `Guest` to a running executor; fails once that executor has stopped.
pub type GuestSpawner = Box<dyn FnOnce(Guest) -> Result<(), ExecutorStopped> + Send>;

/// The executor that was to host a guest has stopped (it hosts replica `0`'s shell).
#[derive(Debug, thiserror::Error)]
#[error("replica {0}'s executor has stopped")]
pub struct ExecutorStopped(pub u32);
