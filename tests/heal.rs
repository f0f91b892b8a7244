//! A cluster that heals itself and stays bounded, through the real binary in node mode (three
//! `paxoskv node` processes): a replica down while the others take a GiB of writes, rebuilt by
//! snapshot; and the survivors' WAL and memory stay within the configured bounds meanwhile.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client;
use common::nodes::{eventually, get, set, Cluster, LIVENESS};
use paxoskv::front::generated::*;

const MIB: u64 = 1 << 20;

/// Bytes of the files under `dir` (0 if it does not exist).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn set_bytes(c: &mut common::Client, k: &str, v: Vec<u8>) -> Result<(), String> {
    match c.set_key(SetKeyRequest::new(k.as_bytes().to_vec(), v, None::<String>)) {
        Ok(r) if r.success => Ok(()),
        Ok(r) => Err(r.error.unwrap_or_default()),
        Err(e) => Err(e.to_string()),
    }
}

/// A value that does not compress away (RocksDB compresses with LZ4): printable noise
/// seeded by who wrote it when.
fn value_of(writer: usize, round: usize, len: usize) -> Vec<u8> {
    let mut v = format!("w{writer}-r{round}-").into_bytes();
    let mut x = (writer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (round as u64 + 1);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'!' + (x % 90) as u8);
    }
    v
}

const LOG_RETAIN: u64 = 32 * MIB;
const WAL_SEGMENT: u64 = 16 * MIB;

#[test]
fn a_replica_down_for_a_gib_of_writes_is_rebuilt_by_snapshot_and_the_survivors_stay_bounded() {
    let mut cluster = Cluster::start(&format!(
        "log_retain_bytes = {LOG_RETAIN}\nsnapshot_chunk_bytes = {}\n\
         [storage]\nwal_segment_bytes = {WAL_SEGMENT}\nmvcc_window_versions = 2000\n\
         memtable_flush_interval = \"500ms\"\n[thrift]\nmax_message_bytes = {}\n",
        MIB,
        WAL_SEGMENT / 2
    ));
    let primary = cluster.primary();
    let down = (primary + 1) % 3;
    let survivor = (primary + 2) % 3;
    cluster.kill(down);

    // 4 writers × 64 keys each, 64 KiB values, until 1 GiB went through.
    const WRITERS: usize = 4;
    const KEYS: usize = 64;
    const VALUE: usize = 64 << 10;
    const TOTAL: u64 = 1 << 30;
    let rounds = (TOTAL / (WRITERS * VALUE) as u64) as usize / KEYS + 1;
    let written = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let addr = cluster.nodes[primary].addr;
            let written = written.clone();
            std::thread::spawn(move || {
                let mut c = client(addr, false);
                for round in 0..rounds {
                    for k in 0..KEYS {
                        let key = format!("w{w}-k{k}");
                        set_bytes(&mut c, &key, value_of(w, round, VALUE))
                            .unwrap_or_else(|e| panic!("write {key} round {round}: {e}"));
                        written.fetch_add(VALUE as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Watch the survivors while the writes go on.
    let (mut wal_max, mut rss_max, mut data_max) = (0u64, 0u64, 0u64);
    let pids: Vec<(usize, u32)> = [primary, survivor]
        .iter()
        .map(|&i| (i, cluster.nodes[i].child.as_ref().map_or(0, |c| c.id())))
        .collect();
    let watcher = {
        let dirs: Vec<_> = pids.iter().map(|&(i, _)| cluster.node_dir(i)).collect();
        let pids: Vec<u32> = pids.iter().map(|&(_, p)| p).collect();
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut wal, mut rss, mut data) = (0u64, 0u64, 0u64);
            while !done.load(Ordering::Relaxed) {
                for (d, p) in dirs.iter().zip(&pids) {
                    wal = wal.max(dir_bytes(&d.join("wal")));
                    data = data.max(dir_bytes(&d.join("data")));
                    rss = rss.max(common::rss_bytes(*p));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (wal, rss, data)
        })
    };
    for w in writers {
        w.join().expect("writer");
    }
    done.store(true, Ordering::Relaxed);
    if let Ok((w, r, d)) = watcher.join() {
        (wal_max, rss_max, data_max) = (w, r, d);
    }
    let secs = started.elapsed().as_secs_f64();
    let total = written.load(Ordering::Relaxed);
    eprintln!(
        "wrote {} MiB in {secs:.1}s with replica {down} down; survivors' peaks: WAL {} MiB, \
         RSS {} MiB, RocksDB {} MiB",
        total / MIB,
        wal_max / MIB,
        rss_max / MIB,
        data_max / MIB
    );
    assert!(total >= TOTAL);
    // The log kept for the dead replica is capped by `log_retain_bytes`. Segments go once
    // both that and the store's flushes allow, so the WAL holds the larger of the retained log
    // and what the store has not flushed yet, plus segments being filled, prepared or cut
    // (three at most).
    // Unflushed: the writes of one flush interval and of the flush itself, 112-144 MiB
    // measured at the ~100 MiB/s this test writes on a quiet host. RocksDB stops writes when
    // both of its memtables (`storage.memtable_bytes`, 64 MiB) are full. Either way the WAL is
    // bounded, well below the GiB written.
    let unflushed = 2 * 64 * MIB;
    assert!(
        wal_max <= LOG_RETAIN.max(unflushed) + 3 * WAL_SEGMENT,
        "a survivor's WAL reached {} MiB with log_retain_bytes = {} MiB",
        wal_max / MIB,
        LOG_RETAIN / MIB
    );
    assert!(
        rss_max < 768 * MIB,
        "a survivor's RSS reached {} MiB",
        rss_max / MIB
    );
    let log_start = cluster
        .metric(primary, "paxoskv_replica_log_start")
        .expect("metrics");
    assert!(log_start > 1.0, "the primary never cut its log");

    // The dead replica comes back: its log is behind every peer's log start, so it must be
    // rebuilt from a snapshot, then serve linearizable reads from its own store.
    let rebuild = Instant::now();
    cluster.restart(down);
    let deadline = Instant::now() + LIVENESS * 4;
    loop {
        let n = cluster
            .metric(down, "paxoskv_replica_snapshots_installed_total")
            .unwrap_or(0.0);
        if n >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica {down} installed no snapshot"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "replica {down} rebuilt by snapshot in {:?}",
        rebuild.elapsed()
    );
    assert!(
        cluster
            .metric(primary, "paxoskv_replica_snapshots_served_total")
            .unwrap_or(0.0)
            + cluster
                .metric(survivor, "paxoskv_replica_snapshots_served_total")
                .unwrap_or(0.0)
            >= 1.0
    );
    let mut c = cluster.client(down);
    for w in 0..WRITERS {
        for k in 0..KEYS {
            let key = format!("w{w}-k{k}");
            let v = eventually(&cluster, "read on the rebuilt replica", |_| {
                get(&mut c, &key)
            })
            .unwrap_or_else(|| panic!("rebuilt replica misses {key}"));
            let want = value_of(w, rounds - 1, VALUE);
            assert_eq!(v.as_bytes(), &want[..], "{key} on the rebuilt replica");
        }
    }
    // It keeps up from the log afterwards.
    eventually(&cluster, "a write after the rebuild", |c| {
        set(c, "after", "1")
    });
    let v = eventually(&cluster, "read after the rebuild", |_| get(&mut c, "after"));
    assert_eq!(v.as_deref(), Some("1"));
}

/// Waits until `f` holds, or fails with `what`.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIVENESS;
    while !f() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rolling_disk_replacement_rebuilds_every_node_from_its_peers_and_loses_nothing() {
    let mut cluster = Cluster::start("");
    let mut acked: Vec<(String, String)> = Vec::new();
    let write = |cluster: &Cluster, acked: &mut Vec<(String, String)>, n: usize| {
        for _ in 0..n {
            let (k, v) = (
                format!("key{}", acked.len()),
                format!("value{}", acked.len()),
            );
            eventually(cluster, "a write", |c| set(c, &k, &v));
            acked.push((k, v));
        }
    };
    write(&cluster, &mut acked, 100);
    for i in 0..3 {
        // Node i's disk is replaced: data and WAL gone; traffic goes on meanwhile.
        cluster.wipe(i);
        write(&cluster, &mut acked, 100);
        cluster.restart(i);
        // The gauge appears once the replica has read its (empty) WAL.
        let mut amnesiac = None;
        wait_for("the restarted replica reporting its state", || {
            amnesiac = cluster.metric(i, "paxoskv_replica_amnesiac");
            amnesiac.is_some()
        });
        // Under load it may already have rebuilt by the first sample: then this process's
        // rebuild counter shows it started without a vote (a replica that never lost its vote
        // reports 0 and never rebuilds).
        let rebuilt = cluster.metric(i, "paxoskv_replica_rebuilds_total");
        assert!(
            amnesiac == Some(1.0) || rebuilt >= Some(1.0),
            "a replica on an empty disk must start without a vote: amnesiac {amnesiac:?}, rebuilt {rebuilt:?}"
        );
        // It rebuilds (a snapshot: its peers' logs start past its empty one) and votes again
        // once a slot proposed after its return commits without it; keep writing till then.
        wait_for("the rebuilt replica voting again", || {
            write(&cluster, &mut acked, 1);
            cluster.metric(i, "paxoskv_replica_amnesiac") == Some(0.0)
        });
        let mut c = cluster.client(i);
        for (k, v) in &acked {
            let got = eventually(&cluster, "read on the rebuilt node", |_| get(&mut c, k));
            assert_eq!(
                got.as_deref(),
                Some(v.as_str()),
                "node {i} after its rebuild"
            );
        }
    }
    for i in 0..3 {
        let mut c = cluster.client(i);
        for (k, v) in &acked {
            let got = eventually(&cluster, "final read", |_| get(&mut c, k));
            assert_eq!(got.as_deref(), Some(v.as_str()), "node {i} at the end");
        }
    }
}

#[test]
fn a_read_forwarded_to_a_primary_that_never_answers_times_out_instead_of_hanging() {
    let cluster = Cluster::start("commit_timeout = \"2s\"\nelection_timeout_min = \"5s\"\n");
    let p = cluster.primary();
    let f = (p + 1) % 3;
    let mut c = cluster.client(f);
    set(&mut c, "k", "v").unwrap();
    assert_eq!(get(&mut c, "k").unwrap().as_deref(), Some("v"));
    // Cut the follower off: it still believes in the primary (the election timeout is long),
    // forwards the read's ReadIndex, and no answer can come back.
    let r = c
        .set_fault_injection(FaultInjectionRequest::new(
            "partition".to_string(),
            None,
            None::<i32>,
            format!("replica:{f}"),
            None::<String>,
        ))
        .unwrap();
    assert!(r.success, "{r:?}");
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    drop(c);
    let addr = cluster.nodes[f].addr;
    std::thread::spawn(move || {
        let mut c = client(addr, false);
        let _ = tx.send(get(&mut c, "k"));
    });
    let answer = rx
        .recv_timeout(Duration::from_secs(8))
        .expect("the read hung: no answer within 8 s");
    assert!(
        answer.is_err(),
        "an isolated replica served a linearizable read: {answer:?}"
    );
    eprintln!("answer after {:?}: {answer:?}", started.elapsed());
}

#[test]
fn a_damaged_wal_stops_the_replica_loudly_and_rebuild_restores_it_from_its_peers() {
    let mut cluster = Cluster::start("");
    let mut acked = Vec::new();
    for i in 0..200 {
        let (k, v) = (format!("key{i}"), format!("value{i}"));
        eventually(&cluster, "a write", |c| set(c, &k, &v));
        acked.push((k, v));
    }
    let p = cluster.primary();
    let f = (p + 1) % 3;
    cluster.kill(f);
    // Flip one byte early in the replica's active WAL segment: acknowledged records follow.
    let wal_dir = cluster.node_dir(f).join(format!("wal/replica_{f}"));
    let mut segments: Vec<_> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    let active = segments.last().expect("a wal segment").clone();
    let mut bytes = std::fs::read(&active).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(&active, &bytes).unwrap();

    let (child, _rx) = common::spawn_child(&cluster.nodes[f].args);
    let mut child = common::KillOnDrop(child);
    let deadline = Instant::now() + LIVENESS;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "a replica with a damaged WAL kept running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "a damaged WAL must stop the replica");

    // Traffic goes on; then the operator restarts it with --rebuild.
    for i in 200..250 {
        let (k, v) = (format!("key{i}"), format!("value{i}"));
        eventually(&cluster, "a write", |c| set(c, &k, &v));
        acked.push((k, v));
    }
    cluster.nodes[f].args.push("--rebuild".into());
    cluster.restart(f);
    let moved = std::fs::read_dir(cluster.node_dir(f).join("wal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().contains(".moved-"))
        })
        .count();
    assert_eq!(moved, 1, "the damaged WAL is kept aside for inspection");
    let mut c = cluster.client(f);
    for (k, v) in &acked {
        let got = eventually(&cluster, "read on the rebuilt node", |_| get(&mut c, k));
        assert_eq!(got.as_deref(), Some(v.as_str()), "{k} on the rebuilt node");
    }
}
