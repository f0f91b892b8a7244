//! The Apache Thrift Python client (PyPI `thrift`), with code generated from `thrift/` at test
//! time, against the real binary over the unframed transport.

mod common;

use std::process::Command;

#[test]
fn python_thrift_client_over_unframed_transport() {
    let server = common::Server::start(&[]);
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
    let script = format!("{manifest}/tests/python/client_test.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("127.0.0.1")
        .arg(server.addr.port().to_string())
        .arg(gen.path())
        .output()
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
