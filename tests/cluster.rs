//! The replicated store through the real binary: three `paxoskv node` processes on loopback
//! (one replica each), SIGKILL of the primary, restarts, a partition of the primary through the
//! transport's fault hooks, and a concurrent client history checked for linearizability.

mod common;

use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client, free_fixed_port, spawn_child, wait_addr, Client};
use paxoskv::front::generated::*;
use paxoskv::linearizability::{History, KvOp, KvResult};

/// Upper bound for a liveness wait; failing it means "never happened", not "too slow".
const LIVENESS: Duration = Duration::from_secs(30);

struct Node {
    child: Option<Child>,
    addr: std::net::SocketAddr,
    args: Vec<String>,
}

struct Cluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(extra_toml: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let peers: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_fixed_port()))
            .collect();
        let cfg = dir.path().join("node.toml");
        std::fs::write(
            &cfg,
            format!("[consensus]\nprimary_wait = \"3s\"\n{extra_toml}"),
        )
        .unwrap();
        let mut pending = Vec::new();
        for id in 0..3 {
            let args: Vec<String> = vec![
                "node".into(),
                "--id".into(),
                id.to_string(),
                "--peers".into(),
                peers.join(","),
                "--config".into(),
                cfg.display().to_string(),
                "--thrift-port".into(),
                "0".into(),
                "--data-dir".into(),
                dir.path().join(format!("n{id}/data")).display().to_string(),
                "--wal-dir".into(),
                dir.path().join(format!("n{id}/wal")).display().to_string(),
                "--enable-fault-injection".into(),
                "--metrics-port".into(),
                "0".into(),
            ];
            let (child, rx) = spawn_child(&args);
            pending.push((child, rx, args));
        }
        let nodes = pending
            .into_iter()
            .map(|(child, rx, args)| {
                let (child, addr) = wait_addr(child, rx);
                Node {
                    child: Some(child),
                    addr,
                    args,
                }
            })
            .collect();
        Cluster { nodes, _dir: dir }
    }

    fn kill(&mut self, id: usize) {
        if let Some(mut c) = self.nodes[id].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self, id: usize) {
        self.kill(id);
        let (child, rx) = spawn_child(&self.nodes[id].args);
        let (child, addr) = wait_addr(child, rx);
        self.nodes[id].child = Some(child);
        self.nodes[id].addr = addr;
    }

    /// Restarts several nodes at once (one alone cannot elect a primary, so none would report).
    fn restart_all(&mut self, ids: &[usize]) {
        let mut pending = Vec::new();
        for &id in ids {
            self.kill(id);
            pending.push((id, spawn_child(&self.nodes[id].args)));
        }
        for (id, (child, rx)) in pending {
            let (child, addr) = wait_addr(child, rx);
            self.nodes[id].child = Some(child);
            self.nodes[id].addr = addr;
        }
    }

    fn client(&self, id: usize) -> Client {
        client(self.nodes[id].addr, false)
    }

    fn primary(&self) -> usize {
        let started = Instant::now();
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if n.child.is_none() {
                    continue;
                }
                let mut c = client(n.addr, false);
                if let Ok(h) = c.get_cluster_health(GetClusterHealthRequest::new(None::<String>)) {
                    if let Some(l) = h.cluster_health.and_then(|h| h.leader) {
                        if self
                            .nodes
                            .get(l.node_id as usize)
                            .is_some_and(|n| n.child.is_some())
                        {
                            let _ = i;
                            return l.node_id as usize;
                        }
                    }
                }
            }
            assert!(started.elapsed() < LIVENESS, "no primary");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

fn set(c: &mut Client, k: &str, v: &str) -> Result<(), String> {
    match c.set_key(SetKeyRequest::new(
        k.as_bytes().to_vec(),
        v.as_bytes().to_vec(),
        None::<String>,
    )) {
        Ok(r) if r.success => Ok(()),
        Ok(r) => Err(r.error.unwrap_or_default()),
        Err(e) => Err(e.to_string()),
    }
}

fn get(c: &mut Client, k: &str) -> Result<Option<String>, String> {
    match c.get(GetRequest::new(k.as_bytes().to_vec(), None::<String>)) {
        Ok(r) if r.error.is_none() => Ok(r
            .found
            .then(|| String::from_utf8_lossy(&r.value).into_owned())),
        Ok(r) => Err(r.error.unwrap_or_default()),
        Err(e) => Err(e.to_string()),
    }
}

/// Retries `f` against the live nodes until it succeeds.
fn eventually<T>(
    cluster: &Cluster,
    what: &str,
    mut f: impl FnMut(&mut Client) -> Result<T, String>,
) -> T {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < LIVENESS {
        for n in cluster.nodes.iter().filter(|n| n.child.is_some()) {
            if let Ok(s) = std::net::TcpStream::connect_timeout(&n.addr, Duration::from_millis(200))
            {
                drop(s);
                match f(&mut client(n.addr, false)) {
                    Ok(v) => return v,
                    Err(e) => last = e,
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} never succeeded; last error: {last}");
}

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
        assert!(
            started.elapsed() < LIVENESS,
            "the majority never elected a new primary"
        );
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
