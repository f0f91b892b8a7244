//! The command line: a bad config stops start-up with an error naming the field and value,
//! before any file is written or port bound; `config print` shows the effective config.

use std::process::Command;

fn paxoskv(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_paxoskv"));
    c.current_dir(dir).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn bad_config_exits_non_zero_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["serve", "--replica-count", "4"],
            vec![],
            "replicated.replica_count = 4",
        ),
        (
            vec!["serve"],
            vec![("THRIFT_PORT", "ninety")],
            "THRIFT_PORT",
        ),
        (
            vec!["serve"],
            vec![("REPLICATED_NETWORK_TIMEOUT", "soon")],
            "REPLICATED_NETWORK_TIMEOUT",
        ),
        (
            vec!["serve", "--thrift-bind", "localhost-ish"],
            vec![],
            "thrift.bind_address = localhost-ish",
        ),
    ];
    for (args, env, needle) in cases {
        let out = paxoskv(dir.path(), &args, &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} started");
        assert!(
            err.contains(needle),
            "{args:?}: error does not name {needle:?}: {err}"
        );
    }
    std::fs::write(
        dir.path().join("bad.toml"),
        "[consensus]\nheartbeat_interval = \"1 fortnight\"\n",
    )
    .unwrap();
    let out = paxoskv(dir.path(), &["serve", "--config", "bad.toml"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("bad.toml")],
        "a refused start wrote files"
    );
}

#[test]
fn config_print_shows_file_env_and_flags_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[thrift]\nport = 7000\nmax_connections = 12\n",
    )
    .unwrap();
    let out = paxoskv(
        dir.path(),
        &[
            "config",
            "print",
            "--config",
            "c.toml",
            "--thrift-port",
            "7002",
        ],
        &[("THRIFT_PORT", "7001"), ("REPLICATED_WAL_PATH", "/tmp/w")],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("port = 7002"), "the flag wins: {text}");
    assert!(
        text.contains("max_connections = 12"),
        "the file applies: {text}"
    );
    assert!(
        text.contains("wal_path = \"/tmp/w\""),
        "the environment applies: {text}"
    );
}
