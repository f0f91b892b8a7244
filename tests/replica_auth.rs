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
    let mut child = common::KillOnDrop(child);
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

#[test]
fn a_recorded_handshake_cannot_be_replayed_on_a_replica_port() {
    use paxoskv::transport::frame::{self, Role, ACK_BYTES, NONCE_BYTES, PROOF_BYTES};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let secret = b"right-secret";
    let cluster = Cluster::start("[network]\nshared_secret = \"right-secret\"\n");
    let args = &cluster.nodes[1].args;
    let peers = &args[args.iter().position(|a| a == "--peers").unwrap() + 1];
    let addr = peers.split(',').nth(1).unwrap().to_string();
    // Speak as replica 2 (holding the secret): hello with our nonce, read the listener's
    // nonce and proof, answer with our proof.
    let nonce = frame::nonce();
    let handshake = |answer: Option<[u8; PROOF_BYTES]>| {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&frame::encode_hello(2, "paxoskv", &nonce))
            .unwrap();
        let mut reply = [0u8; ACK_BYTES + NONCE_BYTES + PROOF_BYTES];
        s.read_exact(&mut reply).unwrap();
        let mut theirs = [0u8; NONCE_BYTES];
        theirs.copy_from_slice(&reply[ACK_BYTES..ACK_BYTES + NONCE_BYTES]);
        let listener_proof = frame::proof(secret, Role::Listener, "paxoskv", 2, 1, &nonce, &theirs);
        assert_eq!(
            &reply[ACK_BYTES + NONCE_BYTES..],
            &listener_proof[..],
            "listener proof"
        );
        let ours = answer.unwrap_or_else(|| {
            frame::proof(secret, Role::Dialer, "paxoskv", 2, 1, &nonce, &theirs)
        });
        s.write_all(&ours).unwrap();
        // Accepted: the link stays open. Refused: the listener closes it.
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 1];
        let open = match s.read(&mut b) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        (ours, open)
    };
    let (recorded, open) = handshake(None);
    assert!(open, "a correct proof was refused");
    // The same hello and the recorded proof, against a fresh listener nonce: refused.
    let (_, open) = handshake(Some(recorded));
    assert!(!open, "a replayed handshake was accepted");
}
