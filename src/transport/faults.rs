//! Fault injection for the transport: drop frames to or from chosen peers (partitions,
//! symmetric or not), drop a fraction of all frames, or delay them. Shared across threads so a
//! test (or an admin call) can change it while the replica runs.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct TransportFaults {
    /// Bit j set: frames to peer j are dropped.
    blocked_to: AtomicU32,
    /// Bit j set: frames from peer j are dropped.
    blocked_from: AtomicU32,
    /// Frames dropped per million at random.
    drop_per_million: AtomicU32,
    /// Delay added before each outbound batch.
    delay_us: AtomicU64,
    rng: AtomicU64,
}

impl TransportFaults {
    pub fn block_to(&self, peer: u32, blocked: bool) {
        set_bit(&self.blocked_to, peer, blocked);
    }
    /// Cuts this replica off from every peer in both directions (or heals it).
    pub fn isolate(&self, isolated: bool) {
        let v = if isolated { u32::MAX } else { 0 };
        self.blocked_to.store(v, Ordering::SeqCst);
        self.blocked_from.store(v, Ordering::SeqCst);
    }
    pub fn set_drop_per_million(&self, n: u32) {
        self.drop_per_million
            .store(n.min(1_000_000), Ordering::SeqCst);
    }
    pub fn set_delay_us(&self, us: u64) {
        self.delay_us.store(us, Ordering::SeqCst);
    }
    pub fn delay_us(&self) -> u64 {
        self.delay_us.load(Ordering::Relaxed)
    }
    pub fn clear(&self) {
        self.isolate(false);
        self.set_drop_per_million(0);
        self.set_delay_us(0);
    }

    /// Whether a frame to `peer` should be dropped now.
    pub fn drop_to(&self, peer: u32) -> bool {
        bit(&self.blocked_to, peer) || self.random_drop()
    }
    /// Whether a frame from `peer` should be dropped now.
    pub fn drop_from(&self, peer: u32) -> bool {
        bit(&self.blocked_from, peer)
    }

    fn random_drop(&self) -> bool {
        let p = self.drop_per_million.load(Ordering::Relaxed);
        if p == 0 {
            return false;
        }
        let mut x = self.rng.load(Ordering::Relaxed) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x % 1_000_000) < p as u64
    }
}

fn set_bit(a: &AtomicU32, peer: u32, on: bool) {
    let m = 1u32 << (peer % 32);
    if on {
        a.fetch_or(m, Ordering::SeqCst);
    } else {
        a.fetch_and(!m, Ordering::SeqCst);
    }
}

fn bit(a: &AtomicU32, peer: u32) -> bool {
    a.load(Ordering::Relaxed) & (1u32 << (peer % 32)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_and_drops() {
        let f = TransportFaults::default();
        assert!(!f.drop_to(1));
        f.block_to(1, true);
        assert!(f.drop_to(1) && !f.drop_to(2) && !f.drop_from(1));
        f.isolate(true);
        assert!(f.drop_to(2) && f.drop_from(0));
        f.clear();
        assert!(!f.drop_to(1) && !f.drop_from(0));
        f.set_drop_per_million(1_000_000);
        assert!(f.drop_to(0));
        f.set_drop_per_million(500_000);
        let dropped = (0..10_000).filter(|_| f.drop_to(0)).count();
        assert!((3_000..7_000).contains(&dropped), "{dropped}");
    }
}
