//! Replica links authenticate: with a shared secret the cluster works, a node holding another
//! secret never becomes part of it, and a node whose peers lie beyond this machine refuses to
//! start without a secret or TLS. With TLS, a node's identity is its certificate: one from
//! another CA, or one naming another replica, never joins.

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
    assert_never_joins(
        &cluster,
        odd,
        "[network]\nshared_secret = \"wrong-secret\"\n",
        "wrong secret",
    );
    // The two others still serve.
    eventually(&cluster, "a write without the odd node", |c| {
        set(c, "k2", "v2")
    });
    let v = eventually(&cluster, "a read", |c| get(c, "k2"));
    assert_eq!(v.as_deref(), Some("v2"));
    // With the right secret it rejoins.
    cluster.restart(odd);
    let mut c = cluster.client(odd);
    let v = eventually(&cluster, "a read on the rejoined node", |_| {
        get(&mut c, "k2")
    });
    assert_eq!(v.as_deref(), Some("v2"));
}

fn tls_toml(dir: &std::path::Path, cert: &str) -> String {
    let p = |f: &str| dir.join(f).display().to_string();
    format!(
        "[network]\ntls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
        p("ca.pem"),
        p(&format!("{cert}.pem")),
        p(&format!("{cert}.key"))
    )
}

/// Restarts node `id` with another config; asserts it never gets to serve (it never learns a
/// primary, so it never opens its Thrift port) while it keeps running.
fn assert_never_joins(cluster: &Cluster, id: usize, toml: &str, what: &str) {
    let cfg = cluster.dir.path().join(format!("odd-{id}.toml"));
    std::fs::write(&cfg, toml).unwrap();
    let mut args = cluster.nodes[id].args.clone();
    let at = args.iter().position(|a| a == "--config").unwrap();
    args[at + 1] = cfg.display().to_string();
    let (child, rx) = common::spawn_child(&args);
    let mut child = common::KillOnDrop(child);
    assert!(
        rx.recv_timeout(Duration::from_secs(8)).is_err(),
        "{what}: the node joined the cluster"
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "{what}: it keeps trying"
    );
}

#[test]
fn a_tls_cluster_admits_only_nodes_whose_certificate_names_them() {
    let certs = tempfile::tempdir().unwrap();
    common::make_certs(certs.path());
    let foreign = tempfile::tempdir().unwrap();
    common::make_certs(foreign.path());
    let mut cluster = Cluster::start(&tls_toml(certs.path(), "replica-{id}"));
    eventually(&cluster, "a write over TLS links", |c| set(c, "k", "v"));
    let p = cluster.primary();
    let odd = (p + 1) % 3;
    let other = (p + 2) % 3;
    cluster.kill(odd);
    // A certificate of another cluster's CA.
    assert_never_joins(
        &cluster,
        odd,
        &tls_toml(foreign.path(), &format!("replica-{odd}")),
        "foreign CA",
    );
    // The cluster's own CA, but the certificate of another replica: it claims id `odd` in
    // its hello while its certificate names `other` (and as a listener it is not `odd`).
    assert_never_joins(
        &cluster,
        odd,
        &tls_toml(certs.path(), &format!("replica-{other}")),
        "another replica's certificate",
    );
    // Plain TCP against TLS peers.
    assert_never_joins(&cluster, odd, "", "no TLS");
    eventually(&cluster, "a write without the odd node", |c| {
        set(c, "k2", "v2")
    });
    // With its own certificate it rejoins and has what was written meanwhile.
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
    assert!(
        err.contains("shared_secret") && err.contains("tls_cert"),
        "{err}"
    );
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

/// Under TLS the id a dialer claims in its hello is checked against its certificate: a valid
/// certificate of replica 2 that claims to be replica 0 is refused at the handshake (with no
/// check it could speak as replica 0), claiming its own id it is accepted.
#[test]
fn a_tls_dialer_cannot_claim_an_id_its_certificate_does_not_name() {
    use paxoskv::transport::frame::{self, ACK_BYTES};
    use std::io::{Read, Write};
    let certs = tempfile::tempdir().unwrap();
    common::make_certs(certs.path());
    let cluster = Cluster::start(&tls_toml(certs.path(), "replica-{id}"));
    let args = &cluster.nodes[1].args;
    let peers = &args[args.iter().position(|a| a == "--peers").unwrap() + 1];
    let addr = peers.split(',').nth(1).unwrap().to_string();
    let tls = paxoskv::tls::TlsFiles {
        ca: certs.path().join("ca.pem"),
        cert: certs.path().join("replica-2.pem"),
        key: certs.path().join("replica-2.key"),
    };
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in paxoskv::tls::load_certs(&tls.ca).unwrap() {
            r.add(c).unwrap();
        }
        r
    };
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            paxoskv::tls::load_certs(&tls.cert).unwrap(),
            paxoskv::tls::load_key(&tls.key).unwrap(),
        )
        .unwrap(),
    );
    let ack_for = |claimed: u16| -> u16 {
        let name = paxoskv::tls::ReplicaTls::server_name(1).unwrap();
        let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
        let tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(&frame::encode_hello(claimed, "paxoskv", &frame::nonce()))
            .unwrap();
        s.flush().unwrap();
        let mut ack = [0u8; ACK_BYTES];
        s.read_exact(&mut ack).unwrap();
        match frame::parse_ack(&ack) {
            Ok(()) => 0,
            Err(frame::HandshakeError::Refused(status)) => status,
            Err(e) => panic!("unexpected ack: {e}"),
        }
    };
    assert_eq!(ack_for(2), 0, "its own id was refused");
    assert_ne!(
        ack_for(0),
        0,
        "a certificate of replica 2 was accepted as replica 0"
    );
}
