//! Lints: the Paxos core stays pure (no file under `src/paxos/` names an IO runtime, storage
//! engine, clock, thread RNG, socket or file API outside comments), and the layers below the
//! Thrift front never reach up into it (`cluster`, `local`, `metrics`, `storage`, `paxos`,
//! `wal`, `txn`, `transport`, `util` name no `front` item), and only `front/reply.rs` writes an
//! error's wire text.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "glommio",
    "rocksdb",
    "Instant::now",
    "SystemTime",
    "thread_rng",
    "std::net",
    "std::fs",
    "std::thread",
    "rand::",
];

/// Drops `//` comments (doc comments included) and `/* */` blocks; string contents are kept,
/// so a forbidden name hidden in a string literal still counts.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn violations_in(dir: &Path, found: &mut Vec<String>) {
    words_in(dir, FORBIDDEN, found)
}

fn words_in(dir: &Path, forbidden: &[&str], found: &mut Vec<String>) {
    if dir.is_file() {
        return words_in_file(dir, forbidden, found);
    }
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {dir:?}: {e}"));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            words_in(&path, forbidden, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            words_in_file(&path, forbidden, found);
        }
    }
}

fn words_in_file(path: &Path, forbidden: &[&str], found: &mut Vec<String>) {
    let src = std::fs::read_to_string(path).expect("read source");
    let code = strip_comments(&src);
    for (no, line) in code.lines().enumerate() {
        for word in forbidden {
            if line.contains(word) {
                found.push(format!("{}:{}: {word}", path.display(), no + 1));
            }
        }
    }
}

#[test]
fn layers_below_the_front_do_not_import_it() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let src = Path::new(&manifest).join("src");
    let mut found = Vec::new();
    for layer in [
        "cluster",
        "local.rs",
        "metrics",
        "storage",
        "paxos",
        "wal",
        "txn",
        "transport",
        "util",
    ] {
        words_in(
            &src.join(layer),
            &["crate::front", "super::front"],
            &mut found,
        );
    }
    assert!(
        found.is_empty(),
        "a layer below the front imports it:\n{}",
        found.join("\n")
    );
}

/// The wire text of an error ("CODE: message") is written in one place, `front/reply.rs`:
/// no other front file spells a code followed by a colon in a string.
#[test]
fn only_the_reply_module_writes_error_text() {
    let codes = [
        "CONFLICT",
        "TIMEOUT",
        "NOT_PRIMARY",
        "TOO_LARGE",
        "INVALID_ARGUMENT",
        "UNAVAILABLE",
        "INTERNAL",
        "TOO_OLD",
        "UNAUTHORIZED",
    ];
    let patterns: Vec<String> = codes.iter().map(|c| format!("\"{c}:")).collect();
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/front");
    let mut found = Vec::new();
    for entry in walk(&root) {
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "reply.rs" || name == "generated.rs" {
            continue;
        }
        words_in_file(&entry, &patterns, &mut found);
    }
    assert!(
        found.is_empty(),
        "error text written outside front/reply.rs: {found:#?}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {dir:?}: {e}")) {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// `paxos/` imports in one direction: types and state ← replica ← the handler modules
/// (election, replication, read_index, catchup, amnesia), which extend `Replica`. Neither
/// `replica.rs` nor `state.rs` may import a handler module (no import circle).
#[test]
fn paxos_modules_import_without_a_circle() {
    let handlers = [
        "super::election",
        "super::replication",
        "super::read_index",
        "super::catchup",
        "super::amnesia",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/paxos");
    let mut found = Vec::new();
    for f in ["replica.rs", "state.rs", "log.rs", "types.rs", "io.rs"] {
        words_in_file(&root.join(f), &handlers, &mut found);
    }
    assert!(found.is_empty(), "paxos import circle: {found:#?}");
}

#[test]
fn paxos_core_does_no_io_and_reads_no_clock() {
    // The runtime value (cargo sets it for tests) follows the checkout the tests run from.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let root = Path::new(&manifest).join("src/paxos");
    let mut found = Vec::new();
    violations_in(&root, &mut found);
    assert!(
        found.is_empty(),
        "impure code in the Paxos core:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_lint_sees_code_but_not_comments() {
    let src = "// glommio in a comment\n/* rocksdb\n block */ let t = Instant::now();\n";
    let code = strip_comments(src);
    assert!(!code.contains("glommio") && !code.contains("rocksdb"));
    assert!(code.contains("Instant::now"));
    assert!(strip_comments("let s = \"// std::fs\";").contains("std::fs"));
}
