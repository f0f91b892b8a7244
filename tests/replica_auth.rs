//! Replica links authenticate: with a shared secret the cluster works, a node holding another
//! secret never becomes part of it, and a node whose peers lie beyond this machine refuses to
//! start without a secret.

mod common;

use std::time::Duration;

use common::nodes::{eventually, get, set, Cluster};

#[test]
fn only_nodes_that_prove_the_shared_secret_join_the_cluster() {
    let mut cluster = Cluster::start("[network]\nshared_secret = \"right-secret\"\n");
    eventually(&cluster, "a write", |c| set(c, "k", "v"));
    // Node 2 comes back holding another secret: its peers refuse it (and it refuses them),
    // so it never learns a primary and never opens its Thrift port.
    let p = cluster.primary();
    let odd = (p + 1) % 3;
    cluster.kill(odd);
    let cfg = cluster.dir.path().join("wrong.toml");
    std::fs::write(&cfg, "[network]\nshared_secret = \"wrong-secret\"\n").unwrap();
    let mut args = cluster.nodes[odd].args.clone();
    let at = args.iter().position(|a| a == "--config").unwrap();
    args[at + 1] = cfg.display().to_string();
    let (child, rx) = common::spawn_child(&args);
    let mut child = scopeguard(child);
    assert!(
        rx.recv_timeout(Duration::from_secs(8)).is_err(),
        "a node with the wrong secret joined the cluster"
    );
    assert!(child.0.try_wait().unwrap().is_none(), "it keeps trying");
    // The two others still serve.
    eventually(&cluster, "a write without the odd node", |c| {
        set(c, "k2", "v2")
    });
    let v = eventually(&cluster, "a read", |c| get(c, "k2"));
    assert_eq!(v.as_deref(), Some("v2"));
    drop(child);
    // With the right secret it rejoins.
    cluster.restart(odd);
    let mut c = cluster.client(odd);
    let v = eventually(&cluster, "a read on the rejoined node", |_| {
        get(&mut c, "k2")
    });
    assert_eq!(v.as_deref(), Some("v2"));
}

struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c)
}

#[test]
fn a_node_with_peers_beyond_this_machine_refuses_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paxoskv"))
        .args([
            "node",
            "--id",
            "0",
            "--peers",
            "10.9.8.7:7001,10.9.8.8:7001,10.9.8.9:7001",
            "--thrift-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--wal-dir")
        .arg(dir.path().join("wal"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shared_secret"), "{err}");
    assert!(
        !dir.path().join("wal").exists(),
        "nothing is written before refusing"
    );
}
