//! WAL group commit through `paxoskv::wal::Wal` on a glommio executor: append a batch of records
//! and make it durable with one `sync` (one O_DSYNC write), at batch sizes 1, 16 and 256. Small
//! records (100 B) give records/s; 4 KiB records give MB/s.
//!
//! The log lives in a temporary directory on the same disk as /tmp. Old segments are removed as
//! the bench goes so the disk does not fill.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam::channel;
use glommio::{LocalExecutorBuilder, Placement};
use paxoskv::wal::Wal;

const SEGMENT_BYTES: u64 = 64 << 20;

/// One request to the executor thread: run `iters` group commits of `batch` records of
/// `record_bytes` each, and answer with the time they took.
struct Job {
    iters: u64,
    batch: usize,
    record_bytes: usize,
    done: channel::Sender<Duration>,
}

fn start_wal_thread() -> (channel::Sender<Job>, glommio::ExecutorJoinHandle<()>) {
    let (tx, rx) = channel::unbounded::<Job>();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bench-wal")
        .spawn(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            // The replicas' default: O_DSYNC writes, durable when the write completes.
            let (mut wal, _) = Wal::open(&dir.path().join("wal"), SEGMENT_BYTES, true)
                .await
                .expect("open wal");
            // The only task on this executor: blocking on the job queue stalls nothing else.
            while let Ok(job) = rx.recv() {
                let payload = vec![0x5au8; job.record_bytes];
                let started = Instant::now();
                for _ in 0..job.iters {
                    for _ in 0..job.batch {
                        wal.append(&payload).expect("append");
                    }
                    wal.sync().await.expect("sync");
                }
                let elapsed = started.elapsed();
                let durable = wal.durable_lsn();
                wal.remove_before(durable).expect("remove old segments");
                let _ = job.done.send(elapsed);
            }
            let _ = wal.close().await;
        })
        .expect("start the glommio executor");
    (tx, handle)
}

fn wal(c: &mut Criterion) {
    let (jobs, handle) = start_wal_thread();
    for (group, record_bytes) in [
        ("wal_group_commit_records", 100usize),
        ("wal_group_commit_bytes", 4096),
    ] {
        let mut g = c.benchmark_group(group);
        for batch in [1usize, 16, 256] {
            if record_bytes == 100 {
                g.throughput(Throughput::Elements(batch as u64));
            } else {
                g.throughput(Throughput::Bytes((batch * record_bytes) as u64));
            }
            g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
                b.iter_custom(|iters| {
                    let (done, wait) = channel::bounded(1);
                    jobs.send(Job {
                        iters,
                        batch,
                        record_bytes,
                        done,
                    })
                    .expect("wal thread alive");
                    wait.recv().expect("wal thread answers")
                })
            });
        }
        g.finish();
    }
    drop(jobs);
    let _ = handle.join();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = wal
}
criterion_main!(benches);
