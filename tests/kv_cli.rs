//! `paxoskv kv` end to end against a running `paxoskv serve`: every subcommand, text and JSON
//! output, binary keys (escaped and hex), and the exit codes scripts rely on.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Server;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn kv(server: &Server, args: &[&str], stdin: Option<&str>) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_paxoskv"));
    c.arg("kv")
        .arg("--endpoints")
        .arg(server.addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(r: Run) -> String {
    assert_eq!(r.code, 0, "stdout: {} stderr: {}", r.stdout, r.stderr);
    r.stdout
}

#[test]
fn kv_subcommands_outputs_and_exit_codes() {
    let s = Server::start(&[]);
    assert_eq!(ok(kv(&s, &["put", "greeting", "hello"], None)), "OK\n");
    assert_eq!(ok(kv(&s, &["get", "greeting"], None)), "hello\n");

    // An absent key: nothing printed, exit 1; JSON says found=false.
    let missing = kv(&s, &["get", "nope"], None);
    assert_eq!((missing.code, missing.stdout.as_str()), (1, ""));
    let j: serde_json::Value =
        serde_json::from_str(&kv(&s, &["-o", "json", "get", "nope"], None).stdout).unwrap();
    assert_eq!(j["found"], false);

    // Binary: escaped in, escaped out; the same bytes in hex.
    ok(kv(&s, &["put", "bin\\x00key", "v\\xff\\\\"], None));
    assert_eq!(ok(kv(&s, &["get", "bin\\x00key"], None)), "v\\xff\\\\\n");
    assert_eq!(
        ok(kv(&s, &["--hex", "get", "62696e006b6579"], None)),
        "76ff5c\n"
    );

    // Ranges: prefix, explicit end, limit with JSON "more", keys only.
    for k in ["r/a", "r/b", "r/c"] {
        ok(kv(&s, &["put", k, &k.to_uppercase()], None));
    }
    assert_eq!(
        ok(kv(&s, &["range", "r/", "--prefix"], None)),
        "r/a\tR/A\nr/b\tR/B\nr/c\tR/C\n"
    );
    assert_eq!(
        ok(kv(&s, &["range", "r/b", "r/c", "--keys-only"], None)),
        "r/b\n"
    );
    let j: serde_json::Value = serde_json::from_str(&ok(kv(
        &s,
        &["-o", "json", "range", "r/", "--prefix", "--limit", "2"],
        None,
    )))
    .unwrap();
    assert_eq!(j["count"], 2);
    assert_eq!(j["more"], true);
    assert_eq!(j["pairs"][1]["value"], "R/B");

    // A transaction from stdin: reads see its own writes; everything commits at one version.
    let out = ok(kv(
        &s,
        &["txn"],
        Some("# move a value\nget greeting\nput moved hello\ndel greeting\nget greeting\nrange r/ r/b\n"),
    ));
    assert!(
        out.starts_with("greeting\thello\ngreeting\t(not found)\nr/a\tR/A\ncommitted at version "),
        "{out}"
    );
    assert_eq!(ok(kv(&s, &["get", "moved"], None)), "hello\n");
    assert_eq!(kv(&s, &["get", "greeting"], None).code, 1);
    let j: serde_json::Value =
        serde_json::from_str(&ok(kv(&s, &["-o", "json", "txn"], Some("get moved\n")))).unwrap();
    assert_eq!(j["results"][0]["value"], "hello");
    assert!(
        j["committed_version"].is_null(),
        "a read-only txn commits nothing"
    );

    // del, version, column families.
    assert_eq!(ok(kv(&s, &["del", "moved"], None)), "OK\n");
    assert_eq!(kv(&s, &["get", "moved"], None).code, 1);
    let v = ok(kv(&s, &["version"], None));
    assert!(
        v.starts_with("read_version ") && v.contains("\ncommitted_version "),
        "{v}"
    );
    ok(kv(&s, &["--cf", "other", "put", "r/a", "x"], None));
    assert_eq!(ok(kv(&s, &["--cf", "other", "get", "r/a"], None)), "x\n");
    assert_eq!(ok(kv(&s, &["get", "r/a"], None)), "R/A\n");

    // Usage errors exit 2; a bad script changes nothing.
    let bad = kv(&s, &["txn"], Some("put only-key\n"));
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert_eq!(kv(&s, &["get", "bad\\q"], None).code, 2);
    let e = kv(&s, &["--hex", "get", "zz"], None);
    assert_eq!(e.code, 2);
    // A server refusal is exit 6 with the code in JSON.
    let long_key = "k".repeat(20 << 10);
    let refused = kv(&s, &["-o", "json", "put", &long_key, "v"], None);
    assert_eq!(refused.code, 6, "{}", refused.stderr);
    let j: serde_json::Value = serde_json::from_str(&refused.stdout).unwrap();
    assert_eq!(j["code"], "TOO_LARGE");
}

#[test]
fn kv_with_no_reachable_endpoint_exits_5() {
    let port = common::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_paxoskv"))
        .args([
            "kv",
            "--endpoints",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "0.5",
        ])
        .args(["get", "k"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
