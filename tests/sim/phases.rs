//! The checks after the chaos: heal everything and demand liveness (every client gets
//! operations through, one primary settles), isolate a follower and let it rejoin without a
//! view change (PreVote), demand that every replica converges, then check the client history
//! for linearizability.

use super::*;

const LIVENESS_BOUND_MS: u64 = 15_000;
const STABLE_MS: u64 = 1_000;
const ISOLATION_MS: u64 = 8 * ELECTION_MIN_MS;
const OPS_AFTER_HEAL: u64 = 3;

impl Sim {
    fn run_until(&mut self, until_ms: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        while self.now_ms < until_ms {
            if self.violation.is_some() || done(self) {
                return true;
            }
            if !self.run_one() {
                return false;
            }
            if self.stats.events.is_multiple_of(256) {
                self.check_all_durable();
            }
        }
        done(self)
    }

    fn heal_all(&mut self) {
        self.chaos = false;
        self.heal_network();
        self.loss = 0.0;
        self.dup = 0.0;
        for i in 0..self.nodes.len() {
            if !self.up(i) {
                self.start_node(i);
            }
        }
        self.healed_at_ms = self.now_ms;
        for c in &mut self.clients {
            c.completed_after_heal = 0;
        }
    }

    pub(super) fn run(mut self) -> Result<Stats, String> {
        for _ in 0..self.opts.steps {
            if self.violation.is_some() || !self.run_one() {
                break;
            }
            if self.stats.events.is_multiple_of(256) {
                self.check_all_durable();
            }
        }
        self.check_all_durable();
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        // Phase A: heal everything; every client must get operations through, and the
        // cluster must settle on one primary.
        self.heal_all();
        let deadline = self.now_ms + LIVENESS_BOUND_MS;
        let settled = self.run_until(deadline, |s| {
            let last_change = s.view_changes.last().map_or(0, |v| v.0);
            s.clients
                .iter()
                .all(|c| c.completed_after_heal >= OPS_AFTER_HEAL)
                && s.primary().is_some()
                && s.now_ms.saturating_sub(last_change) >= STABLE_MS
        });
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        if !settled {
            let done: Vec<u64> = self
                .clients
                .iter()
                .map(|c| c.completed_after_heal)
                .collect();
            return Err(format!(
                "LIVENESS: {LIVENESS_BOUND_MS} ms after healing, ops completed per client {done:?}, primary {:?}, view changes since heal {}",
                self.primary(),
                self.view_changes.iter().filter(|v| v.0 >= self.healed_at_ms).count()
            ));
        }
        // Phase B/C: isolate one follower, then let it rejoin. A healthy majority must keep
        // its primary throughout (PreVote), so no view change may happen.
        let Some(primary) = self.primary() else {
            return Err("no primary after settling".into());
        };
        let views_before = self.view_changes.len();
        let n = self.nodes.len();
        let follower = (primary + 1 + self.rng.gen_range(0..n - 1)) % n;
        for j in 0..n {
            if j != follower {
                self.blocked[j][follower] = true;
                self.blocked[follower][j] = true;
            }
        }
        let until = self.now_ms + ISOLATION_MS;
        self.run_until(until, |_| false);
        self.heal_network();
        let until = self.now_ms + ISOLATION_MS;
        self.run_until(until, |_| false);
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        if self.view_changes.len() != views_before || self.primary() != Some(primary) {
            let changes = &self.view_changes[views_before..];
            return Err(format!(
                "VIEW-CHANGE STORM: replica {follower} rejoining a healthy cluster deposed primary {primary}: view changes {changes:?}"
            ));
        }
        // Every replica must converge on the same applied state.
        let until = self.now_ms + 2 * ISOLATION_MS;
        let commit = self.chosen.keys().next_back().copied().unwrap_or_default();
        self.run_until(until, |s| s.nodes.iter().all(|n| n.sm.applied >= commit));
        if let Some(lagging) = self.nodes.iter().position(|n| n.sm.applied < commit) {
            return Err(format!(
                "LIVENESS: replica {lagging} applied only {:?} of {commit:?}",
                self.nodes[lagging].sm.applied
            ));
        }
        if let Err(v) = self.history.check() {
            return Err(format!("LINEARIZABILITY: {v}"));
        }
        self.stats.sim_ms = self.now_ms;
        Ok(self.stats)
    }
}
