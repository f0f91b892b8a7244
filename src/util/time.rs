//! Time helpers: the wall clock (for reports and ids only; nothing orders events by it) and a
//! deadline on a future.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> i64 {
    unix_us() / 1000
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `f`'s output, or `None` if `d` passes first (on the current glommio executor's timer).
pub async fn within<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(d).await;
        None
    })
    .await
}
