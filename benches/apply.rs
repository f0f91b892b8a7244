//! Applying committed batches to RocksDB through `KvStoreExecutor`: batches of 1, 16 and 256
//! blind `set` commands (16-byte keys, 100-byte values, 100k distinct keys), with no RocksDB WAL
//! (a replica, whose Paxos WAL is the log) and with RocksDB's WAL synced (the single local
//! store). The MVCC window is 10k versions, so garbage collection (the compaction filter) is
//! active for all but the first moments of each run.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paxoskv::storage::{Durability, KvStoreExecutor, StoreOptions};
use paxoskv::txn::{Command, WriteOp, DEFAULT_CF};
use paxoskv::types::Sequence;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const KEYS_COUNT: u64 = 100_000;
/// Small enough that versions leave the window (and are collected) during every run.
const MVCC_WINDOW_VERSIONS: u64 = 10_000;

fn batch(rng: &mut SmallRng, size: usize, value: &Bytes) -> Vec<Command> {
    (0..size)
        .map(|_| {
            let key = format!("k{:015}", rng.gen_range(0..KEYS_COUNT));
            Command::blind(vec![WriteOp::Set {
                cf: DEFAULT_CF.to_string(),
                key: Bytes::from(key),
                value: value.clone(),
            }])
        })
        .collect()
}

fn apply(c: &mut Criterion) {
    let value = Bytes::from(vec![b'v'; 100]);
    let mut rng = SmallRng::seed_from_u64(1);
    for durability in [Durability::ExternalLog, Durability::SyncedWal] {
        let name = match durability {
            Durability::ExternalLog => "apply_replica",
            Durability::SyncedWal => "apply_synced",
        };
        let mut g = c.benchmark_group(name);
        let sizes: &[usize] = match durability {
            Durability::SyncedWal => &[1, 256],
            Durability::ExternalLog => &[1, 16, 256],
        };
        for &size in sizes {
            let dir = tempfile::tempdir().expect("tempdir");
            let options = StoreOptions {
                durability,
                mvcc_window_versions: MVCC_WINDOW_VERSIONS,
                ..StoreOptions::default()
            };
            let mut store = KvStoreExecutor::open(dir.path(), options).expect("open store");
            // Pre-built batches so the measurement is the apply, not the command construction.
            let batches: Vec<Vec<Command>> =
                (0..64).map(|_| batch(&mut rng, size, &value)).collect();
            let mut next = 0usize;
            g.throughput(Throughput::Elements(size as u64));
            g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
                b.iter(|| {
                    let seq: Sequence = store.next_expected_sequence();
                    let out = store
                        .apply(seq, &batches[next % batches.len()])
                        .expect("apply");
                    next += 1;
                    out
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = apply
}
criterion_main!(benches);
