//! Deterministic simulation of a paxoskv cluster: N cores, a lossy network, asynchronous
//! disks, crashes, clock jumps and a KV client workload, all driven by one seeded RNG.
//!
//! Owns: `run(seed, options)`. Must not: use real time, threads or unseeded randomness (a
//! seed must replay exactly). Invariants checked: agreement (a slot is never committed with
//! two values, across crashes), prefix consistency (each state machine applies slots in order
//! without gaps), durability (every committed slot is durably held by a quorum), then after
//! healing: liveness within a bounded simulated time, no view change in a healthy network
//! while a follower is isolated and rejoins, and linearizability of the client history.

mod chaos;
mod clients;
mod phases;
pub mod workload;

use paxoskv::linearizability::{History, KvOp, KvResult, OpId};
use paxoskv::paxos::{
    DurableState, Event, Faults, Input, Lsn, Message, Outputs, PaxosConfig, ReadId, Record,
    Rejection, Replica, ReplicaId, Slot, Value,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use workload::{Command, StateMachine, KEY_COUNT};

pub const TICK_MS: u64 = 5;
pub const HEARTBEAT_MS: u64 = 20;
pub const ELECTION_MIN_MS: u64 = 100;
pub const DRIFT_MS: u64 = 20;
const CLIENT_TIMEOUT_MS: u64 = 600;

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub replicas: u32,
    /// Events processed under chaos before healing.
    pub steps: usize,
    pub faults: Faults,
    pub lease: bool,
    pub aggressive_compaction: bool,
    pub check_durability: bool,
    pub clients: usize,
    /// Lease mode normally keeps clock jumps within the configured drift bound; this breaks
    /// that assumption (to prove stale lease reads are caught).
    pub clock_jumps_beyond_drift: bool,
    /// Fraction of reads served by ReadIndex/lease rather than through the log.
    pub read_index_fraction: f64,
    /// The log's byte budget for lagging replicas (`u64::MAX`: keep all they need).
    pub log_retain_bytes: u64,
    /// Chaos may wipe a replica's disk (WAL and state machine), one at a time: it restarts
    /// amnesiac and must rebuild from its peers without ever voting against what it forgot.
    pub disk_wipes: bool,
    /// Slots in flight at most: 1 (the server's default) or several (pipelined slots).
    pub pipeline_depth: usize,
}

impl SimOptions {
    /// The per-seed mix: mostly 3 replicas, some 5; some lease and snapshot runs.
    pub fn for_seed(seed: u64, steps: usize) -> SimOptions {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5EED);
        SimOptions {
            replicas: if rng.gen_bool(0.25) { 5 } else { 3 },
            steps,
            faults: Faults::default(),
            lease: rng.gen_bool(0.3),
            aggressive_compaction: rng.gen_bool(0.3),
            check_durability: true,
            clients: rng.gen_range(2..=4),
            clock_jumps_beyond_drift: false,
            read_index_fraction: 0.3,
            // Some runs cut the log past a lagging replica by bytes (it then needs a snapshot).
            log_retain_bytes: if rng.gen_bool(0.3) {
                rng.gen_range(16..4096)
            } else {
                u64::MAX
            },
            disk_wipes: rng.gen_bool(0.3),
            pipeline_depth: if rng.gen_bool(0.5) { 1 } else { 4 },
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub events: usize,
    pub sim_ms: u64,
    pub committed_slots: u64,
    pub ops_completed: u64,
    pub view_changes: usize,
    pub crashes: usize,
    pub snapshots: usize,
    pub wipes: usize,
    /// Promises cut by bytes (more parts followed).
    pub promise_parts: usize,
    /// Node mode: client commands and reads a follower passed to the primary.
    pub forwards: usize,
    pub forwarded_reads: usize,
}

enum Ev {
    Tick(usize),
    Deliver {
        from: usize,
        to: usize,
        msg: Message,
    },
    Durable {
        node: usize,
        incarnation: u64,
        lsn: Lsn,
    },
    Client(usize),
    /// The node's shell turn ends: its gathered proposals go to the core as one batch.
    FlushProposals(usize),
    Chaos,
    Restart(usize),
}

struct Node {
    replica: Option<Replica>,
    incarnation: u64,
    disk: DurableState,
    disk_pending: Vec<(Lsn, Record)>,
    disk_busy_until_ms: u64,
    sm: StateMachine,
    clock_offset_ms: u64,
    reads_ready: Vec<(ReadId, Slot)>,
    /// Proposals gathered in the current shell turn (lost if the node crashes first).
    proposals: Vec<bytes::Bytes>,
    /// The shell's durable "rebuilding" marker: set when the node starts on an empty disk,
    /// cleared on `Event::Rebuilt`.
    rebuilding: bool,
}

struct Outstanding {
    op_id: u64,
    hist: OpId,
    node: usize,
    incarnation: u64,
    key: u8,
    started_ms: u64,
}

struct Client {
    target: usize,
    outstanding: Option<Outstanding>,
    completed_after_heal: u64,
}

struct Sim {
    rng: SmallRng,
    opts: SimOptions,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    nodes: Vec<Node>,
    blocked: Vec<Vec<bool>>,
    loss: f64,
    dup: f64,
    delay_max_ms: u64,
    disk_delay_max_ms: u64,
    chaos_gap_max_ms: u64,
    chaos: bool,
    chosen: BTreeMap<Slot, Value>,
    history: History,
    clients: Vec<Client>,
    next_op_id: u64,
    view_changes: Vec<(u64, usize, u64)>,
    violation: Option<String>,
    healed_at_ms: u64,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64, opts: SimOptions) -> Sim {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = opts.replicas as usize;
        let loss = rng.gen_range(0.0..0.3);
        let dup = rng.gen_range(0.0..0.05);
        let delay_max_ms = rng.gen_range(2..30);
        let disk_delay_max_ms = rng.gen_range(1..40);
        let chaos_gap_max_ms = rng.gen_range(30..300);
        let mut sim = Sim {
            rng,
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes: Vec::new(),
            blocked: vec![vec![false; n]; n],
            loss,
            dup,
            delay_max_ms,
            disk_delay_max_ms,
            chaos_gap_max_ms,
            chaos: true,
            chosen: BTreeMap::new(),
            history: History::new(),
            clients: Vec::new(),
            next_op_id: 1,
            view_changes: Vec::new(),
            violation: None,
            healed_at_ms: 0,
            stats: Stats::default(),
            opts,
        };
        for i in 0..n {
            sim.nodes.push(Node {
                replica: None,
                incarnation: 0,
                disk: DurableState::default(),
                disk_pending: Vec::new(),
                disk_busy_until_ms: 0,
                sm: StateMachine::default(),
                clock_offset_ms: 0,
                reads_ready: Vec::new(),
                proposals: Vec::new(),
                rebuilding: false,
            });
            sim.start_node(i);
            let first = sim.rng.gen_range(0..TICK_MS);
            sim.schedule(first, Ev::Tick(i));
        }
        for c in 0..sim.opts.clients {
            let target = sim.rng.gen_range(0..n);
            sim.clients.push(Client {
                target,
                outstanding: None,
                completed_after_heal: 0,
            });
            let at = sim.rng.gen_range(1..50);
            sim.schedule(at, Ev::Client(c));
        }
        let at = sim.rng.gen_range(50..200);
        sim.schedule(at, Ev::Chaos);
        sim
    }

    fn config(&self, i: usize) -> PaxosConfig {
        PaxosConfig {
            replica_id: ReplicaId(i as u32),
            replica_count: self.opts.replicas,
            heartbeat_interval_ms: HEARTBEAT_MS,
            election_timeout_min_ms: ELECTION_MIN_MS,
            pipeline_depth: self.opts.pipeline_depth,
            batch_ops_max: 8,
            batch_bytes_max: 4096,
            proposal_queue_max: 64,
            catchup_slots_max: 16,
            pending_reads_max: 64,
            read_rounds_max: 8,
            lease_enabled: self.opts.lease,
            clock_drift_bound_ms: DRIFT_MS,
            compact_wait_for_all_replicas: !self.opts.aggressive_compaction,
            log_retain_bytes: self.opts.log_retain_bytes,
            catchup_bytes_max: 2048,
            // Promises come in parts whenever a log holds more than a few slots.
            promise_bytes_max: 48,
            // Like `serve`: replica 0 stands first after every (re)start.
            lead_after_start: i == 0,
            faults: self.opts.faults.clone(),
        }
    }

    fn start_node(&mut self, i: usize) {
        let cfg = self.config(i);
        if let Err(e) = cfg.validate() {
            self.violation = Some(format!("invalid config: {e}"));
        }
        let node = &mut self.nodes[i];
        node.proposals.clear();
        let mut recovered = node.disk.clone();
        // Like the shell: a start on an empty WAL is amnesiac until the core says rebuilt.
        if recovered.promised.0 == 0 && recovered.accepted.is_empty() {
            node.rebuilding = true;
        }
        recovered.amnesiac = node.rebuilding;
        recovered.compact(node.sm.applied);
        node.replica = Some(Replica::new(cfg, recovered));
    }

    fn schedule(&mut self, after_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((self.now_ms + after_ms, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn up(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some()
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(format!("t={}ms: {what}", self.now_ms));
        }
    }

    fn quorum(&self) -> usize {
        self.opts.replicas as usize / 2 + 1
    }

    // ---- driving ------------------------------------------------------------------------

    fn run_one(&mut self) -> bool {
        let Some(Reverse((at, seq))) = self.queue.pop() else {
            return false;
        };
        self.now_ms = at;
        let Some(ev) = self.events.remove(&seq) else {
            return true;
        };
        self.stats.events += 1;
        match ev {
            Ev::Tick(i) => {
                if self.up(i) {
                    let now_ms = self.now_ms + self.nodes[i].clock_offset_ms;
                    let random = self.rng.gen();
                    self.step_node(i, Input::Tick { now_ms, random });
                    let compact = self.nodes[i].sm.applied;
                    self.step_node(i, Input::Compact { upto: compact });
                }
                self.schedule(TICK_MS, Ev::Tick(i));
            }
            Ev::Deliver { from, to, msg } => {
                if self.up(to) {
                    let from = ReplicaId(from as u32);
                    self.step_node(to, Input::Message { from, message: msg });
                }
            }
            Ev::Durable {
                node,
                incarnation,
                lsn,
            } => self.on_durable(node, incarnation, lsn),
            Ev::Client(c) => {
                self.client_act(c);
                let next = self.rng.gen_range(1..25);
                self.schedule(next, Ev::Client(c));
            }
            Ev::FlushProposals(i) => {
                let batch = std::mem::take(&mut self.nodes[i].proposals);
                if self.up(i) && !batch.is_empty() {
                    self.step_node(i, Input::ProposeBatch(batch));
                }
            }
            Ev::Chaos => {
                if self.chaos {
                    self.chaos_act();
                    let next = self.rng.gen_range(5..self.chaos_gap_max_ms);
                    self.schedule(next, Ev::Chaos);
                }
            }
            Ev::Restart(i) => {
                if !self.up(i) {
                    self.start_node(i);
                }
            }
        }
        true
    }

    fn step_node(&mut self, i: usize, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let now_ms = self.now_ms + self.nodes[i].clock_offset_ms;
            let Some(replica) = self.nodes[i].replica.as_mut() else {
                return;
            };
            let mut out = Outputs::default();
            // As the shell does: the core reads the clock before every step, not only at ticks.
            replica.observe_clock(now_ms);
            replica.step(input, &mut out);
            self.handle_outputs(i, out, &mut inputs);
        }
    }

    fn handle_outputs(&mut self, i: usize, out: Outputs, inputs: &mut VecDeque<Input>) {
        for (to, msg) in out.sends {
            self.send(i, to.0 as usize, msg);
        }
        if let Some((lsn, _)) = out.persist.last() {
            let lsn = *lsn;
            let disk_ms = self.rng.gen_range(0..=self.disk_delay_max_ms);
            let node = &mut self.nodes[i];
            node.disk_pending.extend(out.persist);
            let done = node.disk_busy_until_ms.max(self.now_ms + disk_ms);
            node.disk_busy_until_ms = done;
            let incarnation = node.incarnation;
            let after = done - self.now_ms;
            self.schedule(
                after,
                Ev::Durable {
                    node: i,
                    incarnation,
                    lsn,
                },
            );
        }
        if !out.committed.is_empty() {
            for (slot, value) in out.committed {
                self.apply(i, slot, value);
            }
            inputs.push_back(Input::Applied {
                upto: self.nodes[i].sm.applied,
            });
        }
        self.nodes[i].reads_ready.extend(out.read_ready);
        self.serve_reads(i);
        for (id, _) in out.read_rejected {
            self.client_failed(id.0);
        }
        for (cmd, why) in out.proposals_rejected {
            if let Some(c) = Command::decode(&cmd) {
                let client = self.client_of(c.op_id);
                self.client_failed(c.op_id);
                if let (
                    Some(client),
                    Rejection::NotPrimary {
                        primary_hint: Some(p),
                    },
                ) = (client, why)
                {
                    self.clients[client].target = p.0 as usize;
                }
            }
        }
        for e in out.events {
            match e {
                Event::BecamePrimary { view } => {
                    self.view_changes.push((self.now_ms, i, view.0));
                    self.stats.view_changes += 1;
                }
                Event::PrimaryChanged { .. } => {}
                Event::NeedSnapshot { from } => self.install_snapshot(i, from.0 as usize, inputs),
                Event::Rebuilt => self.nodes[i].rebuilding = false,
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Message) {
        if matches!(msg, Message::Promise { more: true, .. }) {
            self.stats.promise_parts += 1;
        }
        match msg {
            Message::Forward { .. } => self.stats.forwards += 1,
            Message::ReadIndexRequest { .. } => self.stats.forwarded_reads += 1,
            _ => {}
        }
        if self.blocked[from][to] {
            return;
        }
        if self.rng.gen_bool(self.loss) {
            return;
        }
        // Paxos messages are safe to deliver twice; forwarded client commands are not (a copy
        // would be proposed again), and the transport never delivers a frame twice (TCP, no
        // resend after a failed write), so the simulated network does not duplicate them.
        let may_dup = !matches!(msg, Message::Forward { .. });
        let copies = if may_dup && self.rng.gen_bool(self.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.gen_range(1..=self.delay_max_ms);
            let msg = msg.clone();
            self.schedule(delay, Ev::Deliver { from, to, msg });
        }
    }

    fn on_durable(&mut self, i: usize, incarnation: u64, lsn: Lsn) {
        let node = &mut self.nodes[i];
        if node.incarnation != incarnation || node.replica.is_none() {
            return;
        }
        let split = node.disk_pending.partition_point(|(l, _)| *l <= lsn);
        for (_, rec) in node.disk_pending.drain(..split) {
            node.disk.apply(&rec);
        }
        self.step_node(i, Input::Durable { upto_lsn: lsn });
    }

    fn apply(&mut self, i: usize, slot: Slot, value: Value) {
        match self.chosen.get(&slot) {
            Some(v) if *v != value => {
                self.fail(format!(
                    "AGREEMENT: replica {i} committed {value:?} at {slot:?}, but {v:?} was committed before"
                ));
                return;
            }
            Some(_) => {}
            None => {
                self.chosen.insert(slot, value.clone());
                self.stats.committed_slots += 1;
                if self.opts.check_durability {
                    self.check_durable(slot);
                }
            }
        }
        let applied = self.nodes[i].sm.applied;
        if slot != applied.next() {
            self.fail(format!(
                "PREFIX: replica {i} applied {slot:?} right after {applied:?}"
            ));
            return;
        }
        let results = self.nodes[i].sm.apply(slot, &value);
        let incarnation = self.nodes[i].incarnation;
        for (op_id, result) in results {
            self.client_completed(op_id, i, incarnation, result);
        }
    }

    fn check_durable(&mut self, slot: Slot) {
        let Some(value) = self.chosen.get(&slot) else {
            return;
        };
        let holders = self
            .nodes
            .iter()
            .filter(|n| {
                n.sm.applied >= slot
                    || n.disk
                        .accepted
                        .get(&slot)
                        .is_some_and(|a| a.value == *value)
            })
            .count();
        if holders < self.quorum() {
            self.fail(format!(
                "DURABILITY: committed {slot:?} is durable on only {holders} replicas"
            ));
        }
    }

    fn check_all_durable(&mut self) {
        if !self.opts.check_durability {
            return;
        }
        let floor = self
            .nodes
            .iter()
            .map(|n| n.sm.applied)
            .min()
            .unwrap_or_default();
        let slots: Vec<Slot> = self.chosen.range(floor.next()..).map(|(s, _)| *s).collect();
        for s in slots {
            self.check_durable(s);
        }
    }

    fn install_snapshot(&mut self, i: usize, from: usize, inputs: &mut VecDeque<Input>) {
        if !self.up(from) || self.nodes[from].sm.applied <= self.nodes[i].sm.applied {
            return;
        }
        self.nodes[i].sm = self.nodes[from].sm.clone();
        self.stats.snapshots += 1;
        let upto = self.nodes[i].sm.applied;
        inputs.push_back(Input::SnapshotInstalled { upto });
        inputs.push_back(Input::Applied { upto });
        self.serve_reads(i);
    }

    fn serve_reads(&mut self, i: usize) {
        let applied = self.nodes[i].sm.applied;
        let ready = std::mem::take(&mut self.nodes[i].reads_ready);
        let (now, later): (Vec<_>, Vec<_>) = ready.into_iter().partition(|(_, s)| *s <= applied);
        self.nodes[i].reads_ready = later;
        let incarnation = self.nodes[i].incarnation;
        for (id, _) in now {
            let key = self
                .clients
                .iter()
                .filter_map(|c| c.outstanding.as_ref())
                .find(|o| o.op_id == id.0)
                .map(|o| o.key);
            if let Some(key) = key {
                let v = self.nodes[i].sm.kv.get(&key).cloned();
                self.client_completed(id.0, i, incarnation, KvResult::Value(v));
            }
        }
    }
}

/// Runs one seed; `Err` carries a description of the first violated invariant.
pub fn run(seed: u64, opts: SimOptions) -> Result<Stats, String> {
    Sim::new(seed, opts).run()
}
