//! Three `paxoskv node` processes on loopback (one replica each), for the cluster tests:
//! start, SIGKILL, restart, find the primary, and retry helpers.

use std::process::Child;
use std::time::{Duration, Instant};

use super::{client, free_fixed_port, spawn_child, wait_addrs, Client};
use paxoskv::front::generated::*;

/// Upper bound for a liveness wait; failing it means "never happened", not "too slow".
pub const LIVENESS: Duration = Duration::from_secs(30);

pub struct Node {
    pub child: Option<Child>,
    pub addr: std::net::SocketAddr,
    pub metrics: Option<std::net::SocketAddr>,
    pub args: Vec<String>,
}

struct KillPidsOnDrop(Vec<u32>);

impl Drop for KillPidsOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill(2) on a child process id this test started; no memory involved.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(extra_toml: &str) -> Cluster {
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
        // Should one node never report its address, the others must not outlive the test.
        let mut guard = KillPidsOnDrop(pending.iter().map(|p| p.0.id()).collect());
        let nodes = pending
            .into_iter()
            .map(|(child, rx, args)| {
                let (child, addr, metrics) = wait_addrs(child, rx);
                Node {
                    child: Some(child),
                    addr,
                    metrics,
                    args,
                }
            })
            .collect();
        guard.0.clear();
        let cluster = Cluster { nodes, dir };
        cluster.wait_all_vote();
        cluster
    }

    /// Waits until no replica is rebuilding. Every replica of a new cluster starts amnesiac (it
    /// cannot tell a first start from a lost disk); one that missed the first election votes
    /// only once a slot proposed after it came back commits, which it asks an idle primary for.
    /// Until then the cluster survives no failure of another replica, so a fault test starts
    /// from here. No write is made: the replicas must get there on their own.
    pub fn wait_all_vote(&self) {
        let started = Instant::now();
        loop {
            let amnesiac: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.metric(i, "paxoskv_replica_amnesiac") != Some(0.0))
                .collect();
            if amnesiac.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < LIVENESS,
                "replicas {amnesiac:?} never rebuilt after the cluster's first start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self, id: usize) {
        if let Some(mut c) = self.nodes[id].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, id: usize) {
        self.kill(id);
        let (child, rx) = spawn_child(&self.nodes[id].args);
        let (child, addr, metrics) = wait_addrs(child, rx);
        self.nodes[id].child = Some(child);
        self.nodes[id].addr = addr;
        self.nodes[id].metrics = metrics;
    }

    /// Restarts node `id` on the Thrift port it had, as a real node comes back where its
    /// clients expect it.
    pub fn restart_on_same_port(&mut self, id: usize) {
        let port = self.nodes[id].addr.port().to_string();
        let args = &mut self.nodes[id].args;
        if let Some(i) = args.iter().position(|a| a == "--thrift-port") {
            args[i + 1] = port;
        }
        self.restart(id);
    }

    /// Restarts several nodes at once (one alone cannot elect a primary, so none would report).
    pub fn restart_all(&mut self, ids: &[usize]) {
        let mut pending = Vec::new();
        for &id in ids {
            self.kill(id);
            pending.push((id, spawn_child(&self.nodes[id].args)));
        }
        for (id, (child, rx)) in pending {
            let (child, addr, metrics) = wait_addrs(child, rx);
            self.nodes[id].child = Some(child);
            self.nodes[id].addr = addr;
            self.nodes[id].metrics = metrics;
        }
    }

    /// Node `id`'s directory (its data and WAL dirs live below it).
    pub fn node_dir(&self, id: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    /// Kills node `id` and deletes its data and WAL, as a replaced disk would.
    pub fn wipe(&mut self, id: usize) {
        self.kill(id);
        let _ = std::fs::remove_dir_all(self.node_dir(id));
    }

    /// One sample of a metric of node `id` (summed over its series), if it reports it.
    pub fn metric(&self, id: usize, name: &str) -> Option<f64> {
        let addr = self.nodes[id].metrics?;
        self.nodes[id].child.as_ref()?;
        let (_, body) = super::http_get(addr, "/metrics");
        let mut found = None;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    pub fn client(&self, id: usize) -> Client {
        client(self.nodes[id].addr, false)
    }

    pub fn primary(&self) -> usize {
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

pub fn set(c: &mut Client, k: &str, v: &str) -> Result<(), String> {
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

pub fn get(c: &mut Client, k: &str) -> Result<Option<String>, String> {
    match c.get(GetRequest::new(k.as_bytes().to_vec(), None::<String>)) {
        Ok(r) if r.error.is_none() => Ok(r
            .found
            .then(|| String::from_utf8_lossy(&r.value).into_owned())),
        Ok(r) => Err(r.error.unwrap_or_default()),
        Err(e) => Err(e.to_string()),
    }
}

/// Retries `f` against the live nodes until it succeeds.
pub fn eventually<T>(
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
