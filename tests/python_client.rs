//! The Apache Thrift Python client (PyPI `thrift`), with code generated from `thrift/` at test
//! time, against the real binary over the unframed transport.

mod common;

use std::process::Command;

/// `thrift --gen py` output in a fresh directory.
fn generate_python() -> tempfile::TempDir {
    let gen = tempfile::tempdir().unwrap();
    // The runtime value (cargo sets it for tests) follows the checkout the tests run from.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let idl = format!("{manifest}/thrift/paxoskv.thrift");
    let st = Command::new("thrift")
        .args(["--gen", "py", "-out"])
        .arg(gen.path())
        .arg(idl)
        .status()
        .expect("the thrift compiler (Debian thrift-compiler) must be installed");
    assert!(st.success(), "thrift --gen py failed");
    gen
}

/// Runs the Python client script; `ca`: over TLS, verifying the server against it.
fn run_python_client(host: &str, port: u16, ca: Option<&std::path::Path>) {
    let gen = generate_python();
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let script = format!("{manifest}/tests/python/client_test.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(host)
        .arg(port.to_string())
        .arg(gen.path());
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let out = cmd.output().expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn python_thrift_client_over_unframed_transport() {
    let server = common::Server::start(&[]);
    run_python_client("127.0.0.1", server.addr.port(), None);
}

/// The front with `[thrift] tls_*` and the replicas with mutual TLS on their links: Apache
/// Thrift's `TSSLSocket` (certificate checked against the CA, name against the host) passes
/// every check; a plain-TCP client gets no service (the connection is closed, not hung).
#[test]
fn python_thrift_client_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    common::make_certs(certs.path());
    let c = |f: &str| certs.path().join(f).display().to_string();
    let toml = format!(
        "[network]\ntls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n\
         [thrift]\ntls_cert = {:?}\ntls_key = {:?}\nread_timeout = \"2s\"\n",
        c("ca.pem"),
        c("replica-{id}.pem"),
        c("replica-{id}.key"),
        c("front.pem"),
        c("front.key"),
    );
    let server = common::Server::start_with_config(&toml, &[]);
    run_python_client(
        "localhost",
        server.addr.port(),
        Some(&certs.path().join("ca.pem")),
    );

    // A client that skips TLS: its bytes are no ClientHello, the server closes the connection.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut plain = common::client(server.addr, false);
    use paxoskv::front::generated::TTransactionalKVSyncClient;
    assert!(plain
        .ping(paxoskv::front::generated::PingRequest::new(None, None))
        .is_err());
    let _ = s.write_all(&[0x80, 0x01, 0x00, 0x01, 0, 0, 0, 4]);
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "expected a close or a TLS alert, got {:?}",
        &buf[..n]
    );
}
