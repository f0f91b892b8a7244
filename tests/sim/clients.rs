//! The simulated clients: each issues one operation at a time to a node, records it in the
//! linearizability history, and completes it when that node applies (or reads) it.

use super::*;

impl Sim {
    pub(super) fn client_of(&self, op_id: u64) -> Option<usize> {
        self.clients
            .iter()
            .position(|c| c.outstanding.as_ref().is_some_and(|o| o.op_id == op_id))
    }

    pub(super) fn client_completed(
        &mut self,
        op_id: u64,
        node: usize,
        incarnation: u64,
        r: KvResult,
    ) {
        let Some(c) = self.client_of(op_id) else {
            return;
        };
        let client = &mut self.clients[c];
        let Some(o) = client.outstanding.as_ref() else {
            return;
        };
        if o.node != node || o.incarnation != incarnation {
            return;
        }
        let hist = o.hist;
        if o.started_ms >= self.healed_at_ms && !self.chaos {
            client.completed_after_heal += 1;
        }
        client.outstanding = None;
        self.history.complete(hist, r);
        self.stats.ops_completed += 1;
    }

    pub(super) fn client_failed(&mut self, op_id: u64) {
        if let Some(c) = self.client_of(op_id) {
            if let Some(o) = self.clients[c].outstanding.take() {
                self.history.fail(o.hist);
            }
        }
    }

    pub(super) fn client_act(&mut self, c: usize) {
        let n = self.nodes.len();
        if let Some(o) = &self.clients[c].outstanding {
            if self.now_ms - o.started_ms < CLIENT_TIMEOUT_MS {
                return;
            }
            // Give up: the outcome stays unknown in the history.
            self.clients[c].outstanding = None;
            self.clients[c].target = self.rng.gen_range(0..n);
        }
        let mut target = self.clients[c].target;
        if !self.up(target) {
            target = self.rng.gen_range(0..n);
            self.clients[c].target = target;
            return;
        }
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        let key = self.rng.gen_range(0..KEY_COUNT);
        let fresh = bytes::Bytes::from(op_id.to_le_bytes().to_vec());
        let read_index = self.rng.gen_bool(self.opts.read_index_fraction);
        let op = match self.rng.gen_range(0..10) {
            0..=3 => KvOp::Get,
            4..=6 => KvOp::Put(fresh),
            7 => KvOp::Delete,
            _ => {
                let expected = self.nodes[target].sm.kv.get(&key).cloned();
                let new = self.rng.gen_bool(0.8).then_some(fresh);
                KvOp::CompareAndSet { expected, new }
            }
        };
        let is_get = op == KvOp::Get;
        let hist = self.history.invoke(c as u64, vec![key], op.clone());
        self.clients[c].outstanding = Some(Outstanding {
            op_id,
            hist,
            node: target,
            incarnation: self.nodes[target].incarnation,
            key,
            started_ms: self.now_ms,
        });
        if is_get && read_index {
            self.step_node(target, Input::ReadIndex { id: ReadId(op_id) });
        } else {
            let cmd = Command { op_id, key, op }.encode();
            if self.rng.gen_bool(0.5) {
                self.step_node(target, Input::Propose(cmd));
            } else {
                // Like the shell: commands that arrive in one turn reach the core together.
                if self.nodes[target].proposals.is_empty() {
                    let turn_ms = self.rng.gen_range(0..3);
                    self.schedule(turn_ms, Ev::FlushProposals(target));
                }
                self.nodes[target].proposals.push(cmd);
            }
        }
    }

    pub(super) fn primary(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|i| {
            self.nodes[*i]
                .replica
                .as_ref()
                .is_some_and(|r| r.is_primary())
        })
    }
}
