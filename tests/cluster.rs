//! The replicated store through the real binary: three `paxoskv node` processes on loopback
//! (one replica each), SIGKILL of the primary, restarts, a partition of the primary through the
//! transport's fault hooks, and a concurrent client history checked for linearizability.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client;
use common::nodes::{eventually, get, set, Cluster, LIVENESS};
use paxoskv::front::generated::*;
use paxoskv::linearizability::{History, KvOp, KvResult};

#[test]
fn primary_kill_restart_and_full_restart_lose_nothing() {
    let mut cluster = Cluster::start("");
    let mut acked = Vec::new();
    {
        let mut c = cluster.client(0);
        for i in 0..100 {
            let k = format!("k{i}");
            set(&mut c, &k, &format!("v{i}")).unwrap();
            acked.push(k);
        }
    }
    let p = cluster.primary();
    cluster.kill(p);
    let killed_at = Instant::now();
    eventually(&cluster, "a write after the primary died", |c| {
        set(c, "after-kill", "yes")
    });
    eprintln!(
        "failover: first write acknowledged {:?} after SIGKILL of the primary",
        killed_at.elapsed()
    );
    acked.push("after-kill".into());
    let new_primary = cluster.primary();
    assert_ne!(new_primary, p);
    for k in &acked {
        let v = eventually(&cluster, "read", |c| get(c, k));
        assert!(v.is_some(), "acknowledged key {k} lost after failover");
    }
    // The killed replica restarts and catches up: a linearizable read served from its own
    // store must see everything.
    cluster.restart(p);
    {
        let mut c = cluster.client(p);
        for k in &acked {
            let v = eventually(&cluster, "read on restarted node", |_| get(&mut c, k));
            assert!(v.is_some(), "restarted replica misses {k}");
        }
    }
    // Full-cluster crash and restart.
    cluster.restart_all(&[0, 1, 2]);
    for k in &acked {
        let v = eventually(&cluster, "read after full restart", |c| get(c, k));
        assert!(v.is_some(), "acknowledged key {k} lost in a full restart");
    }
}

#[test]
fn partitioned_primary_acknowledges_nothing_and_converges_after_healing() {
    let cluster = Cluster::start("commit_timeout = \"2s\"\n");
    let p = cluster.primary();
    let mut old = cluster.client(p);
    set(&mut old, "before", "1").unwrap();
    let r = old
        .set_fault_injection(FaultInjectionRequest::new(
            "partition".to_string(),
            None,
            None::<i32>,
            format!("replica:{p}"),
            None::<String>,
        ))
        .unwrap();
    assert!(r.success, "{r:?}");
    // The majority elects a new primary and serves writes.
    let others: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    let started = Instant::now();
    loop {
        let mut c = cluster.client(others[0]);
        if set(&mut c, "majority", "2").is_ok() {
            break;
        }
        if started.elapsed() >= LIVENESS {
            // What each node thinks: every metric but histogram buckets (role, view, commit and
            // applied index, apply lag, transport and WAL counters).
            for n in &cluster.nodes {
                let Some(m) = n.metrics else { continue };
                let (_, body) = common::http_get(m, "/metrics");
                for l in body
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
                {
                    eprintln!("node {}: {l}", n.addr);
                }
            }
            panic!("the majority never elected a new primary (or never applied its write)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The isolated old primary cannot acknowledge a write.
    let r = set(&mut old, "minority", "3");
    assert!(r.is_err(), "an isolated primary acknowledged a write");
    // Heal: everyone converges, the old primary sees the majority's write.
    let r = old
        .set_fault_injection(FaultInjectionRequest::new(
            "heal".to_string(),
            None,
            None::<i32>,
            format!("replica:{p}"),
            None::<String>,
        ))
        .unwrap();
    assert!(r.success);
    let started = Instant::now();
    loop {
        if let Ok(Some(v)) = get(&mut cluster.client(p), "majority") {
            assert_eq!(v, "2");
            break;
        }
        assert!(
            started.elapsed() < LIVENESS,
            "the healed replica never converged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        get(&mut cluster.client(others[1]), "before")
            .unwrap()
            .as_deref(),
        Some("1")
    );
}

#[test]
fn concurrent_history_across_primary_kill_is_linearizable() {
    let mut cluster = Cluster::start("");
    let history = Arc::new(Mutex::new(History::new()));
    let addrs: Vec<_> = cluster.nodes.iter().map(|n| n.addr).collect();
    let addrs = Arc::new(Mutex::new(addrs));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for client_id in 0..4u64 {
        let history = history.clone();
        let addrs = addrs.clone();
        let stop = stop.clone();
        workers.push(std::thread::spawn(move || {
            let mut rng = client_id * 7919 + 1;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < 400 {
                n += 1;
                let node = (next() % 3) as usize;
                let addr = addrs.lock().unwrap()[node];
                let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                else {
                    continue;
                };
                drop(s);
                let mut c = client(addr, false);
                let key = format!("h{}", next() % 3);
                match next() % 3 {
                    0 => {
                        let id = history.lock().unwrap().invoke(
                            client_id,
                            Bytes::from(key.clone()),
                            KvOp::Get,
                        );
                        match get(&mut c, &key) {
                            Ok(v) => history
                                .lock()
                                .unwrap()
                                .complete(id, KvResult::Value(v.map(Bytes::from))),
                            Err(_) => history.lock().unwrap().fail(id),
                        }
                    }
                    1 => {
                        let val = format!("c{client_id}-{n}");
                        let id = history.lock().unwrap().invoke(
                            client_id,
                            Bytes::from(key.clone()),
                            KvOp::Put(Bytes::from(val.clone())),
                        );
                        match c.set_key(SetKeyRequest::new(
                            key.clone().into_bytes(),
                            val.into_bytes(),
                            None::<String>,
                        )) {
                            Ok(r) if r.success => {
                                history.lock().unwrap().complete(id, KvResult::Done)
                            }
                            // Refused before it was proposed: known not to have happened.
                            Ok(r)
                                if r.error_code.as_deref() == Some("NOT_PRIMARY")
                                    || r.error_code.as_deref() == Some("INVALID_ARGUMENT") =>
                            {
                                history.lock().unwrap().fail(id)
                            }
                            // Anything else (timeout, unavailable, lost connection): unknown.
                            _ => {}
                        }
                    }
                    _ => {
                        // Read-then-conditional-write through atomicCommit: a compare-and-set.
                        let rv = match c.get_read_version(GetReadVersionRequest::new()) {
                            Ok(r) if r.success => r.read_version,
                            _ => continue,
                        };
                        let cur = match c.snapshot_get(SnapshotGetRequest::new(
                            key.clone().into_bytes(),
                            rv,
                            None::<String>,
                        )) {
                            Ok(r) if r.error.is_none() => r.found.then(|| Bytes::from(r.value)),
                            _ => continue,
                        };
                        let val = format!("t{client_id}-{n}");
                        let id = history.lock().unwrap().invoke(
                            client_id,
                            Bytes::from(key.clone()),
                            KvOp::CompareAndSet {
                                expected: cur,
                                new: Some(Bytes::from(val.clone())),
                            },
                        );
                        let op = Operation::new(
                            "set".to_string(),
                            key.clone().into_bytes(),
                            val.into_bytes(),
                            None::<String>,
                        );
                        match c.atomic_commit(AtomicCommitRequest::new(
                            rv,
                            vec![op],
                            vec![key.clone().into_bytes()],
                            None::<i64>,
                            None::<Vec<paxoskv::front::generated::KeyRange>>,
                        )) {
                            Ok(r) if r.success => {
                                history.lock().unwrap().complete(id, KvResult::Cas(true))
                            }
                            Ok(r)
                                if matches!(
                                    r.error_code.as_deref(),
                                    Some("CONFLICT" | "NOT_PRIMARY" | "INVALID_ARGUMENT")
                                ) =>
                            {
                                history.lock().unwrap().fail(id)
                            }
                            _ => {}
                        }
                    }
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let p = cluster.primary();
    cluster.kill(p);
    std::thread::sleep(Duration::from_millis(2000));
    cluster.restart(p);
    addrs.lock().unwrap()[p] = cluster.nodes[p].addr;
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let h = history.lock().unwrap();
    assert!(h.len() > 100, "only {} operations recorded", h.len());
    if let Err(v) = h.check() {
        panic!(
            "history of {} operations is not linearizable: {v:?}",
            h.len()
        );
    }
    eprintln!(
        "linearizable history of {} operations across a primary kill and restart",
        h.len()
    );
}
