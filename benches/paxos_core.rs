//! Throughput of the Paxos core alone: three in-memory replicas, instant delivery and
//! instant durability, commands of 116 bytes (16 B key + 100 B value), batch limits 1/16/256;
//! and commands that arrive in shell turns of 64 (`Input::ProposeBatch`), as the replica shell
//! hands them over under load, with the default batch limit and pipeline depth.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paxoskv::paxos::{DurableState, Input, Outputs, PaxosConfig, Replica, ReplicaId};
use std::collections::VecDeque;

const OPS_PER_ITER: usize = 4096;
const REPLICAS: u32 = 3;

struct Cluster {
    replicas: Vec<Replica>,
    queue: VecDeque<(usize, Input)>,
    out: Outputs,
    committed_cmds: usize,
    now_ms: u64,
}

impl Cluster {
    fn new(batch_ops_max: usize) -> Cluster {
        let replicas = (0..REPLICAS)
            .map(|i| {
                let cfg = PaxosConfig {
                    replica_id: ReplicaId(i),
                    batch_ops_max,
                    ..PaxosConfig::default()
                };
                Replica::new(cfg, DurableState::default())
            })
            .collect();
        let mut c = Cluster {
            replicas,
            queue: VecDeque::new(),
            out: Outputs::default(),
            committed_cmds: 0,
            now_ms: 0,
        };
        while c.primary().is_none() {
            c.now_ms += 10;
            for i in 0..REPLICAS as usize {
                let random = (i as u64 + 1) * 0x9E37_79B9 + c.now_ms;
                c.queue.push_back((
                    i,
                    Input::Tick {
                        now_ms: c.now_ms,
                        random,
                    },
                ));
            }
            c.pump();
        }
        c
    }

    fn primary(&self) -> Option<usize> {
        self.replicas.iter().position(|r| r.is_primary())
    }

    fn pump(&mut self) {
        while let Some((i, input)) = self.queue.pop_front() {
            self.out.clear();
            self.replicas[i].step(input, &mut self.out);
            let from = ReplicaId(i as u32);
            for (to, message) in self.out.sends.drain(..) {
                self.queue
                    .push_back((to.0 as usize, Input::Message { from, message }));
            }
            if let Some((lsn, _)) = self.out.persist.last() {
                self.queue.push_back((i, Input::Durable { upto_lsn: *lsn }));
            }
            if self.replicas[i].is_primary() {
                self.committed_cmds += self
                    .out
                    .committed
                    .iter()
                    .map(|(_, v)| v.commands().len())
                    .sum::<usize>();
            }
        }
    }

    /// Proposes OPS_PER_ITER commands, `per_turn` at a time (1: one `Propose` each).
    fn run_ops(&mut self, command: &Bytes, per_turn: usize) {
        let Some(p) = self.primary() else {
            return;
        };
        self.committed_cmds = 0;
        for _ in 0..OPS_PER_ITER / per_turn {
            let input = if per_turn == 1 {
                Input::Propose(command.clone())
            } else {
                Input::ProposeBatch(vec![command.clone(); per_turn])
            };
            self.queue.push_back((p, input));
        }
        self.pump();
        assert_eq!(self.committed_cmds, OPS_PER_ITER);
        for i in 0..REPLICAS as usize {
            let upto = self.replicas[i].commit_upto();
            self.queue.push_back((i, Input::Applied { upto }));
            self.queue.push_back((i, Input::Compact { upto }));
        }
        self.pump();
    }
}

fn bench_core(c: &mut Criterion) {
    let command = Bytes::from(vec![7u8; 116]);
    let mut group = c.benchmark_group("paxos_core");
    group.throughput(Throughput::Elements(OPS_PER_ITER as u64));
    for batch in [1usize, 16, 256] {
        let mut cluster = Cluster::new(batch);
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, _| {
            b.iter(|| cluster.run_ops(&command, 1))
        });
    }
    let turn = 64;
    let mut cluster = Cluster::new(PaxosConfig::default().batch_ops_max);
    group.bench_with_input(BenchmarkId::new("turns_of", turn), &turn, |b, _| {
        b.iter(|| cluster.run_ops(&command, turn))
    });
    group.finish();
}

criterion_group!(benches, bench_core);
criterion_main!(benches);
