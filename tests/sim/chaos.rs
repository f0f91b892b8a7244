//! Fault injection for the simulator: partitions (symmetric and asymmetric), crashes that
//! lose every unpersisted record, restarts, clock jumps, leadership transfers, loss changes.
//!
//! Owns: the chaos actions on `Sim`. Must not: break the fault model's own promises (at most a
//! minority down at once; in lease mode clock offsets stay within the drift bound unless the
//! options say otherwise).

use super::{Ev, Sim, DRIFT_MS};
use paxoskv::paxos::{Input, ReplicaId};
use rand::Rng;

impl Sim {
    pub(super) fn down_count(&self) -> usize {
        (0..self.nodes.len()).filter(|i| !self.up(*i)).count()
    }

    pub(super) fn chaos_act(&mut self) {
        let n = self.nodes.len();
        match self.rng.gen_range(0..100) {
            0..=14 => {
                // Symmetric partition into two sides.
                let side: Vec<bool> = (0..n).map(|_| self.rng.gen_bool(0.5)).collect();
                for a in 0..n {
                    for b in 0..n {
                        self.blocked[a][b] = side[a] != side[b];
                    }
                }
            }
            15..=24 => {
                // Asymmetric: cut a few directed links.
                for _ in 0..self.rng.gen_range(1..=n) {
                    let a = self.rng.gen_range(0..n);
                    let b = self.rng.gen_range(0..n);
                    if a != b {
                        self.blocked[a][b] = true;
                    }
                }
            }
            25..=44 => self.heal_network(),
            45..=59 => {
                if self.down_count() < n - self.quorum() {
                    let i = self.rng.gen_range(0..n);
                    if self.up(i) {
                        self.crash(i);
                        let back = self.rng.gen_range(5..400);
                        self.schedule(back, Ev::Restart(i));
                    }
                }
            }
            60..=69 => {
                // Crash whoever leads right now.
                let p = (0..n).find(|i| {
                    self.nodes[*i]
                        .replica
                        .as_ref()
                        .is_some_and(|r| r.is_primary())
                });
                if let (Some(p), true) = (p, self.down_count() < n - self.quorum()) {
                    self.crash(p);
                    let back = self.rng.gen_range(5..400);
                    self.schedule(back, Ev::Restart(p));
                }
            }
            70..=79 => {
                let i = self.rng.gen_range(0..n);
                let bounded = self.opts.lease && !self.opts.clock_jumps_beyond_drift;
                let jump = if bounded {
                    self.rng.gen_range(0..=DRIFT_MS)
                } else {
                    self.rng.gen_range(0..=1_000)
                };
                if self.opts.clock_jumps_beyond_drift {
                    // Every follower's clock leaps at once: their view of "the primary has
                    // been silent for a timeout" no longer bounds the primary's lease.
                    let p = self.primary();
                    for (j, node) in self.nodes.iter_mut().enumerate() {
                        if Some(j) != p {
                            node.clock_offset_ms += jump;
                        }
                    }
                    return;
                }
                let node = &mut self.nodes[i];
                node.clock_offset_ms += jump;
                if bounded {
                    node.clock_offset_ms = node.clock_offset_ms.min(DRIFT_MS);
                }
            }
            85..=87 if self.opts.disk_wipes => {
                // A replaced disk: at most one replica without its state at a time, and within
                // the crash budget.
                let lost = self
                    .nodes
                    .iter()
                    .filter(|n| match &n.replica {
                        Some(r) => r.is_amnesiac(),
                        None => n.rebuilding,
                    })
                    .count();
                if lost == 0 && self.down_count() < n - self.quorum() {
                    let i = self.rng.gen_range(0..n);
                    if self.up(i) {
                        self.wipe(i);
                        let back = self.rng.gen_range(5..400);
                        self.schedule(back, Ev::Restart(i));
                    }
                }
            }
            80..=84 => {
                let p = (0..n).find(|i| {
                    self.nodes[*i]
                        .replica
                        .as_ref()
                        .is_some_and(|r| r.is_primary())
                });
                if let Some(p) = p {
                    let to = ReplicaId(self.rng.gen_range(0..n) as u32);
                    self.step_node(p, Input::TransferLeadership { to });
                }
            }
            _ => {
                self.loss = self.rng.gen_range(0.0..0.3);
            }
        }
    }

    pub(super) fn heal_network(&mut self) {
        for row in &mut self.blocked {
            row.iter_mut().for_each(|b| *b = false);
        }
    }

    /// Crashes node `i` and loses its disk: WAL and state machine.
    pub(super) fn wipe(&mut self, i: usize) {
        self.crash(i);
        self.stats.wipes += 1;
        // Slots committed with this node's vote are now on fewer disks, by the fault itself.
        self.opts.check_durability = false;
        let node = &mut self.nodes[i];
        node.disk = Default::default();
        node.sm = Default::default();
    }

    pub(super) fn crash(&mut self, i: usize) {
        self.stats.crashes += 1;
        let node = &mut self.nodes[i];
        node.replica = None;
        node.incarnation += 1;
        node.disk_pending.clear();
        node.disk_busy_until_ms = 0;
        node.reads_ready.clear();
        // In-flight client requests to this replica lose their connection: outcome unknown.
        for c in &mut self.clients {
            if c.outstanding.as_ref().is_some_and(|o| o.node == i) {
                c.outstanding = None;
            }
        }
        self.check_all_durable();
    }
}
