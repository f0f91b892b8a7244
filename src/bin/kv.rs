//! `paxoskv kv`: a command-line client on the client library (get, put, del, range, txn,
//! version), with text or JSON output and exit codes a script can test.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use paxoskv::client::{Client, Config, Error};

/// Exit codes (also in `paxoskv kv --help` and README).
pub const EXIT_NOT_FOUND: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_CONFLICT: i32 = 3;
pub const EXIT_OUTCOME_UNKNOWN: i32 = 4;
pub const EXIT_UNREACHABLE: i32 = 5;
pub const EXIT_ERROR: i32 = 6;

const EXIT_HELP: &str = "Exit codes: 0 ok; 1 get found no key; 2 usage or script error; \
3 conflict (txn retries exhausted); 4 outcome unknown (a write may or may not have applied); \
5 no endpoint reachable; 6 any other error.\n\
Keys and values: text with \\xNN and \\\\ escapes, or hex with --hex; output escapes the same way.";

#[derive(Args)]
#[command(after_help = EXIT_HELP)]
pub struct KvArgs {
    /// Thrift endpoints, comma-separated: the `serve` port, or any nodes of a `node` cluster.
    #[arg(
        long,
        env = "PAXOSKV_ENDPOINTS",
        default_value = "127.0.0.1:9091",
        value_delimiter = ',',
        global = true
    )]
    endpoints: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    /// Keys and values, given and printed, are hex.
    #[arg(long, global = true)]
    hex: bool,
    /// Column family (default: the default one).
    #[arg(long, global = true)]
    cf: Option<String>,
    /// Use the unframed (buffered) transport instead of framed.
    #[arg(long, global = true)]
    unframed: bool,
    /// TLS to the front: the PEM file of the CA that signed its certificate.
    #[arg(long, global = true, env = "PAXOSKV_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// The name the front's certificate must carry (default: the endpoint's host).
    #[arg(long, global = true)]
    tls_server_name: Option<String>,
    /// Seconds a command may take, retries included.
    #[arg(long, default_value_t = 10.0, global = true)]
    timeout: f64,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum KvCommand {
    /// Print the value of KEY (exit 1 when absent).
    Get { key: String },
    /// Set KEY to VALUE.
    Put { key: String, value: String },
    /// Delete KEY.
    Del { key: String },
    /// List keys in [BEGIN, END) at one read version (END defaults to the end of the keys).
    Range {
        begin: String,
        end: Option<String>,
        /// BEGIN is a prefix: list every key that starts with it.
        #[arg(long)]
        prefix: bool,
        /// At most this many pairs (0: all).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
    },
    /// Run a transaction from FILE (or stdin): one step per line, `get K`, `put K V`, `del K`,
    /// `range B E [LIMIT]`; `#` starts a comment. Retried on conflict; prints the reads of the
    /// attempt that committed.
    Txn { file: Option<PathBuf> },
    /// Print the current read version and the committed version.
    Version,
}

/// Runs the command; returns the process exit code.
pub fn run(a: KvArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("paxoskv kv: cannot start a runtime: {e}");
            return EXIT_ERROR;
        }
    };
    match rt.block_on(execute(&a)) {
        Ok(code) => code,
        Err(Failure::Usage(m)) => {
            eprintln!("paxoskv kv: {m}");
            EXIT_USAGE
        }
        Err(Failure::Client(e)) => {
            if a.output == Output::Json {
                println!("{}", json!({"error": e.to_string(), "code": e.code()}));
            }
            eprintln!("paxoskv kv: {e}");
            exit_code(&e)
        }
    }
}

fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Conflict(_) | Error::TooOld(_) => EXIT_CONFLICT,
        Error::GaveUp { last, .. } => exit_code(last),
        e if e.outcome_unknown() => EXIT_OUTCOME_UNKNOWN,
        Error::Unreachable(_) => EXIT_UNREACHABLE,
        _ => EXIT_ERROR,
    }
}

enum Failure {
    Usage(String),
    Client(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Client(e)
    }
}

async fn execute(a: &KvArgs) -> Result<i32, Failure> {
    if !(a.timeout > 0.0 && a.timeout < 1e6) {
        return Err(Failure::Usage(format!(
            "--timeout {} is not a number of seconds",
            a.timeout
        )));
    }
    let budget = Duration::from_secs_f64(a.timeout);
    let mut config = Config::new(a.endpoints.iter().map(|e| e.trim().to_string()));
    config.framed = !a.unframed;
    config.retry_deadline = budget;
    config.txn_deadline = budget;
    config.request_timeout = budget;
    config.connections_per_endpoint = 1;
    config.tls = a.tls_ca.clone().map(|ca_file| paxoskv::client::TlsConfig {
        ca_file,
        server_name: a.tls_server_name.clone(),
    });
    let mut client = Client::connect(config).await?;
    if let Some(cf) = &a.cf {
        client = client.in_cf(cf);
    }
    let c = Codec { hex: a.hex };
    let json = a.output == Output::Json;
    match &a.command {
        KvCommand::Get { key } => {
            let key = c.parse(key)?;
            let value = client.get(&key).await?;
            if json {
                let v = value.as_ref().map(|v| c.show(v));
                println!(
                    "{}",
                    json!({"key": c.show(&key), "found": value.is_some(), "value": v})
                );
            } else if let Some(v) = &value {
                println!("{}", c.show(v));
            }
            Ok(if value.is_some() { 0 } else { EXIT_NOT_FOUND })
        }
        KvCommand::Put { key, value } => {
            client.set(c.parse(key)?, c.parse(value)?).await?;
            print_ok(json);
            Ok(0)
        }
        KvCommand::Del { key } => {
            client.delete(c.parse(key)?).await?;
            print_ok(json);
            Ok(0)
        }
        KvCommand::Range {
            begin,
            end,
            prefix,
            limit,
            keys_only,
        } => {
            let b = c.parse(begin)?;
            let scan = match (prefix, end) {
                (true, Some(_)) => {
                    return Err(Failure::Usage("--prefix takes no END".into()));
                }
                (true, None) => client.scan_prefix(&b),
                (false, Some(e)) => client.scan(&b, c.parse(e)?),
                (false, None) => client.scan(&b, [0xFF]),
            };
            // One more than asked, to tell whether more follow.
            let scan = if *limit > 0 {
                scan.limit(limit + 1)
            } else {
                scan
            };
            let mut pairs = scan.collect().await?;
            let more = *limit > 0 && pairs.len() > *limit;
            pairs.truncate(if *limit > 0 { *limit } else { pairs.len() });
            if json {
                let list: Vec<Value> = pairs
                    .iter()
                    .map(|(k, v)| c.pair(k, v, *keys_only))
                    .collect();
                println!(
                    "{}",
                    json!({"pairs": list, "count": pairs.len(), "more": more})
                );
            } else {
                for (k, v) in &pairs {
                    if *keys_only {
                        println!("{}", c.show(k));
                    } else {
                        println!("{}\t{}", c.show(k), c.show(v));
                    }
                }
                if more {
                    eprintln!("(more keys follow; raise --limit)");
                }
            }
            Ok(0)
        }
        KvCommand::Txn { file } => {
            let text = match file {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))?,
                None => std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Failure::Usage(format!("stdin: {e}")))?,
            };
            let steps = Arc::new(parse_script(&text, &c)?);
            let (results, version) = run_script(&client, steps.clone()).await?;
            if json {
                let r: Vec<Value> = results.iter().map(|r| r.to_json(&c)).collect();
                println!("{}", json!({"results": r, "committed_version": version}));
            } else {
                for r in &results {
                    r.print(&c);
                }
                match version {
                    Some(v) => println!("committed at version {v}"),
                    None => println!("read-only: nothing to commit"),
                }
            }
            Ok(0)
        }
        KvCommand::Version => {
            let rv = client.read_version().await?;
            let cv = client.committed_version().await?;
            if json {
                println!("{}", json!({"read_version": rv, "committed_version": cv}));
            } else {
                println!("read_version {rv}\ncommitted_version {cv}");
            }
            Ok(0)
        }
    }
}

fn print_ok(json: bool) {
    if json {
        println!("{}", json!({"ok": true}));
    } else {
        println!("OK");
    }
}

/// How keys and values are read from arguments and printed.
#[derive(Clone, Copy)]
struct Codec {
    hex: bool,
}

impl Codec {
    fn parse(&self, s: &str) -> Result<Vec<u8>, Failure> {
        if self.hex { parse_hex(s) } else { unescape(s) }
            .map_err(|e| Failure::Usage(format!("{s:?}: {e}")))
    }

    fn show(&self, b: &[u8]) -> String {
        if self.hex {
            b.iter().map(|x| format!("{x:02x}")).collect()
        } else {
            escape(b)
        }
    }

    fn pair(&self, k: &[u8], v: &[u8], keys_only: bool) -> Value {
        if keys_only {
            json!({"key": self.show(k)})
        } else {
            json!({"key": self.show(k), "value": self.show(v)})
        }
    }
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("not hex at {i}"))
        })
        .collect()
}

/// `\xNN` and `\\` escapes; everything else as it is.
fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let d = s.get(i + 2..i + 4).ok_or("\\x needs two hex digits")?;
                out.push(u8::from_str_radix(d, 16).map_err(|_| format!("bad escape \\x{d}"))?);
                i += 4;
            }
            _ => return Err("a backslash must start \\\\ or \\xNN".into()),
        }
    }
    Ok(out)
}

/// Printable ASCII as it is, `\` as `\\`, every other byte as `\xNN` (the inverse of
/// `unescape`).
fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &x in b {
        match x {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(x as char),
            _ => s.push_str(&format!("\\x{x:02x}")),
        }
    }
    s
}

#[derive(Clone)]
enum Step {
    Get(Vec<u8>),
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
    Range(Vec<u8>, Vec<u8>, usize),
}

fn parse_script(text: &str, c: &Codec) -> Result<Vec<Step>, Failure> {
    let mut steps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let bad = || Failure::Usage(format!("line {}: cannot read {line:?}", n + 1));
        let step = match w.as_slice() {
            ["get", k] => Step::Get(c.parse(k)?),
            ["put", k, v] | ["set", k, v] => Step::Put(c.parse(k)?, c.parse(v)?),
            ["del", k] | ["delete", k] => Step::Del(c.parse(k)?),
            ["range", b, e] => Step::Range(c.parse(b)?, c.parse(e)?, 1000),
            ["range", b, e, l] => {
                Step::Range(c.parse(b)?, c.parse(e)?, l.parse().map_err(|_| bad())?)
            }
            _ => return Err(bad()),
        };
        steps.push(step);
    }
    if steps.is_empty() {
        return Err(Failure::Usage("the transaction script has no steps".into()));
    }
    Ok(steps)
}

enum StepResult {
    Get(Vec<u8>, Option<Vec<u8>>),
    Range(Vec<(Vec<u8>, Vec<u8>)>, bool),
}

impl StepResult {
    fn to_json(&self, c: &Codec) -> Value {
        match self {
            StepResult::Get(k, v) => {
                json!({"get": c.show(k), "found": v.is_some(), "value": v.as_ref().map(|v| c.show(v))})
            }
            StepResult::Range(pairs, more) => {
                let list: Vec<Value> = pairs.iter().map(|(k, v)| c.pair(k, v, false)).collect();
                json!({"range": list, "more": more})
            }
        }
    }

    fn print(&self, c: &Codec) {
        match self {
            StepResult::Get(k, Some(v)) => println!("{}\t{}", c.show(k), c.show(v)),
            StepResult::Get(k, None) => println!("{}\t(not found)", c.show(k)),
            StepResult::Range(pairs, more) => {
                for (k, v) in pairs {
                    println!("{}\t{}", c.show(k), c.show(v));
                }
                if *more {
                    println!("(more)");
                }
            }
        }
    }
}

async fn run_script(
    client: &Client,
    steps: Arc<Vec<Step>>,
) -> Result<(Vec<StepResult>, Option<i64>), Error> {
    let mut committed = None;
    let results = client
        .transact(|tx| {
            let steps = steps.clone();
            async move {
                let mut out = Vec::new();
                for s in steps.iter() {
                    match s {
                        Step::Get(k) => out.push(StepResult::Get(k.clone(), tx.get(k).await?)),
                        Step::Put(k, v) => tx.set(k, v),
                        Step::Del(k) => tx.delete(k),
                        Step::Range(b, e, l) => {
                            let page = tx.get_range(b, e, *l).await?;
                            out.push(StepResult::Range(page.pairs, page.has_more));
                        }
                    }
                }
                Ok((out, tx.commit().await?))
            }
        })
        .await
        .map(|(out, c)| {
            committed = c.version;
            out
        })?;
    Ok((results, committed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(&escape(&all)).ok(), Some(all));
        assert_eq!(unescape("a\\x00b\\\\").ok(), Some(b"a\0b\\".to_vec()));
        assert!(unescape("bad\\q").is_err());
        assert_eq!(parse_hex("00ff").ok(), Some(vec![0, 255]));
        assert!(parse_hex("0").is_err());
    }
}
