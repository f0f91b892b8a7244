//! Endpoints: a few pipelined connections each, a health record with exponential backoff, and a
//! probe task that pings a failed endpoint until it answers again. Calls skip an endpoint that
//! is backing off; when every endpoint is, they try the one that comes back soonest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::conn::{Conn, ConnOptions, ConnectError};
use super::lock;
use crate::front::generated::PingRequest;

pub(crate) struct Endpoint {
    pub(crate) addr: String,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    failures: u32,
    down_until: Option<Instant>,
    probing: bool,
}

/// Backoff after `failures` consecutive failures: doubling from `min`, capped at `max`, with up
/// to 25% jitter so that many clients do not retry in step.
pub(crate) fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let base = min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(max);
    let jitter = base.as_nanos() as u64 / 4;
    let r = if jitter == 0 { 0 } else { rand_u64() % jitter };
    base + Duration::from_nanos(r)
}

/// A cheap random number (no RNG crate on the client side).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

impl Endpoint {
    pub(crate) fn new(addr: String, connections: usize) -> Endpoint {
        Endpoint {
            addr,
            slots: (0..connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            health: Mutex::new(Health::default()),
        }
    }

    /// A live connection, round-robin over the endpoint's slots (connecting the slot if its
    /// connection is missing or dead).
    pub(crate) async fn conn(&self, o: &ConnOptions) -> Result<Arc<Conn>, ConnectError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_dead()) {
            return Ok(c.clone());
        }
        *slot = None;
        let c = Arc::new(Conn::connect(&self.addr, o).await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// When the endpoint may be tried again (`None`: now).
    pub(crate) fn down_until(&self, now: Instant) -> Option<Instant> {
        lock(&self.health).down_until.filter(|t| *t > now)
    }

    /// (consecutive failures, backing off until) as the client sees the endpoint now.
    pub(crate) fn health(&self) -> (u32, Option<Instant>) {
        let h = lock(&self.health);
        (h.failures, h.down_until.filter(|t| *t > Instant::now()))
    }

    pub(crate) fn mark_up(&self) {
        let mut h = lock(&self.health);
        h.failures = 0;
        h.down_until = None;
    }

    /// Records a failure; returns true when the caller should start a probe task.
    pub(crate) fn mark_down(&self, min: Duration, max: Duration) -> bool {
        let mut h = lock(&self.health);
        h.failures = h.failures.saturating_add(1);
        h.down_until = Some(Instant::now() + backoff(h.failures, min, max));
        !std::mem::replace(&mut h.probing, true)
    }
}

/// What a probe needs from the client, without keeping it alive.
pub(crate) struct ProbeSettings {
    pub conn: ConnOptions,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// Pings `ep` after each backoff until it answers (then marks it up) or the client is gone.
pub(crate) fn spawn_probe<T: Send + Sync + 'static>(
    owner: Weak<T>,
    ep: impl Fn(&T) -> &Endpoint + Send + 'static,
    settings: ProbeSettings,
) {
    tokio::spawn(async move {
        loop {
            let wait = {
                let Some(o) = owner.upgrade() else { return };
                let (_, until) = ep(&o).health();
                until.map_or(Duration::ZERO, |t| {
                    t.saturating_duration_since(Instant::now())
                })
            };
            tokio::time::sleep(wait).await;
            let Some(o) = owner.upgrade() else { return };
            let e = ep(&o);
            let ok = match Conn::connect(&e.addr, &settings.conn).await {
                Ok(c) => {
                    let ping = PingRequest {
                        message: None,
                        timestamp: None,
                    };
                    c.call(&ping, settings.conn.connect_timeout).await.is_ok()
                }
                Err(_) => false,
            };
            if ok {
                tracing::debug!(endpoint = %e.addr, "endpoint answers again");
                e.mark_up();
                lock(&e.health).probing = false;
                return;
            }
            // Backs off further; the probe is already running, so this starts none.
            e.mark_down(settings.backoff_min, settings.backoff_max);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(100);
        let b1 = backoff(1, min, max);
        let b3 = backoff(3, min, max);
        let b9 = backoff(9, min, max);
        assert!(b1 >= min && b1 <= min * 5 / 4, "{b1:?}");
        assert!(b3 >= min * 4 && b3 <= min * 5, "{b3:?}");
        assert!(b9 >= max && b9 <= max * 5 / 4, "{b9:?}");
    }
}
