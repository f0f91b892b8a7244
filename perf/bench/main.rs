//! `paxoskv-bench`: a load generator for the `TransactionalKV` Thrift service (and, for
//! comparisons, etcd's v3 HTTP/JSON gateway).
//!
//! A few worker threads each drive many non-blocking connections (see `engine`), closed loop
//! (`--connections C --pipeline P`) or open loop at a target rate (`--rate R`, latency corrected
//! for coordinated omission). It prints a progress line each second on stderr and a final report
//! (throughput, p50/p90/p99/p99.9/max, errors by code) on stdout, optionally as JSON and as an
//! HDR interval log. Must not: decide anything about the server; every failure the server or the
//! network reports is counted, never unwrapped.

mod engine;
mod keys;
mod library;
mod poll;
mod report;
mod server_stats;
mod stats;
mod wire;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use engine::{ConnSpec, Control, Msg, Plan, Workload};
use keys::{KeyChooser, KeyDist};
use wire::Wire;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadArg {
    /// setKey of a random key.
    Write,
    /// get of a random key.
    Read,
    /// get or setKey, chosen by --read-ratio.
    Mixed,
    /// getReadVersion + snapshotRead(k) + atomicCommit(set k, read conflict on k).
    Txn,
    /// getRange from a random key, --range-limit keys.
    Range,
    /// ping.
    Ping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineArg {
    /// The tool's own epoll engine: one write per connection per turn, replies matched in order.
    Native,
    /// The paxoskv client library (tokio), to measure what it costs per call.
    Library,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolArg {
    /// The TransactionalKV Thrift service (binary protocol).
    Thrift,
    /// etcd's v3 HTTP/JSON gateway (/v3/kv/put, /v3/kv/range), for comparisons.
    EtcdHttp,
}

fn parse_duration(s: &str) -> Result<Duration, paxoskv::util::duration::BadDuration> {
    paxoskv::util::duration::parse_duration(s)
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "paxoskv-bench",
    about = "Load generator for paxoskv's Thrift service"
)]
pub struct Args {
    /// What to run.
    #[arg(value_enum)]
    pub workload: WorkloadArg,
    /// Server address(es), comma-separated; connections are spread over them round-robin.
    #[arg(long, default_value = "127.0.0.1:9091")]
    pub addr: String,
    #[arg(long, value_enum, default_value = "thrift")]
    pub protocol: ProtocolArg,
    /// Thrift framed transport (default: unframed, what production clients use).
    #[arg(long)]
    pub framed: bool,
    /// Connections in total.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,
    /// Logical operations in flight per connection (a cap on the backlog in open loop).
    #[arg(long, short = 'p', default_value_t = 1)]
    pub pipeline: usize,
    /// Worker threads (0: one per core, at most one per connection).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Open loop at this many operations per second in total (0: closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Fraction of reads in the mixed workload.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    #[arg(long, value_enum, default_value = "uniform")]
    pub key_dist: KeyDist,
    /// Skew of the zipfian distribution.
    #[arg(long, default_value_t = 0.99)]
    pub zipf_theta: f64,
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Keys per getRange.
    #[arg(long, default_value_t = 10)]
    pub range_limit: i32,
    /// Write every key once before the run.
    #[arg(long)]
    pub prepopulate: bool,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Write the final report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HDR histogram interval log (one histogram per second of measurement).
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// A label carried into the JSON report.
    #[arg(long)]
    pub label: Option<String>,
    /// Seed of the key and value generators.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress lines.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// paxoskv's metrics endpoint (HOST:PORT): scraped before and after the run to report the
    /// server's batching (commands per Paxos slot).
    #[arg(long)]
    pub metrics: Option<String>,
    /// Which client drives the load (closed loop; prepopulation always uses the native one).
    #[arg(long, value_enum, default_value = "native")]
    pub engine: EngineArg,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("paxoskv-bench: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn resolve(addrs: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for a in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let mut it = a
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve `{a}`"))?;
        out.push(
            it.next()
                .with_context(|| format!("`{a}` resolves to nothing"))?,
        );
    }
    if out.is_empty() {
        bail!("--addr names no address");
    }
    Ok(out)
}

fn validate(args: &Args) -> anyhow::Result<()> {
    if args.connections == 0 || args.pipeline == 0 {
        bail!("--connections and --pipeline must be at least 1");
    }
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    let min = keys::min_key_size_bytes(args.keys);
    if args.key_size < min {
        bail!(
            "--key-size {} cannot hold {} distinct keys (needs {min})",
            args.key_size,
            args.keys
        );
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be within 0..=1");
    }
    if args.key_dist == KeyDist::Zipfian && !(args.zipf_theta > 0.0 && args.zipf_theta < 1.0) {
        bail!("--zipf-theta must be within (0, 1)");
    }
    if args.rate < 0.0 || !args.rate.is_finite() {
        bail!("--rate must be a positive number (0: closed loop)");
    }
    if args.protocol == ProtocolArg::EtcdHttp
        && !matches!(
            args.workload,
            WorkloadArg::Write | WorkloadArg::Read | WorkloadArg::Mixed
        )
    {
        bail!("the etcd-http protocol runs write, read and mixed only");
    }
    if args.engine == EngineArg::Library
        && (args.protocol != ProtocolArg::Thrift || args.rate > 0.0)
    {
        bail!("--engine library runs the Thrift protocol in closed loop only");
    }
    Ok(())
}

fn run(args: &Args) -> anyhow::Result<()> {
    validate(args)?;
    let addrs = resolve(&args.addr)?;
    let wire = match args.protocol {
        ProtocolArg::Thrift => Wire::Thrift {
            framed: args.framed,
        },
        ProtocolArg::EtcdHttp => Wire::EtcdHttp {
            host: addrs[0].to_string(),
        },
    };
    let mut value = vec![0u8; args.value_size];
    SmallRng::seed_from_u64(args.seed).fill_bytes(&mut value);
    // Printable values keep the etcd gateway and debugging output simple; still incompressible
    // enough for a store that compresses (64 symbols).
    for b in &mut value {
        *b = b'A' + (*b % 58);
    }
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        args.threads
    }
    .min(args.connections)
    .max(1);
    let keys = KeyChooser::new(args.key_dist, args.keys, args.zipf_theta);
    if args.prepopulate {
        let plan = Plan {
            wire: wire.clone(),
            workload: Workload::Populate {
                keys_count: args.keys,
            },
            keys: KeyChooser::new(KeyDist::Uniform, args.keys, 0.5),
            key_size_bytes: args.key_size,
            value: value.clone(),
            pipeline: args.pipeline.max(16),
            op_interval: None,
            seed: args.seed,
        };
        populate(
            Arc::new(plan),
            &addrs,
            args.connections.min(64),
            threads,
            args.keys,
            args.quiet,
        )?;
    }
    let workload = match args.workload {
        WorkloadArg::Write => Workload::Write,
        WorkloadArg::Read => Workload::Read,
        WorkloadArg::Mixed => Workload::Mixed {
            read_ratio: args.read_ratio,
        },
        WorkloadArg::Txn => Workload::Txn,
        WorkloadArg::Range => Workload::Range {
            limit: args.range_limit,
        },
        WorkloadArg::Ping => Workload::Ping,
    };
    let op_interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate));
    let plan = Arc::new(Plan {
        wire,
        workload,
        keys,
        key_size_bytes: args.key_size,
        value,
        pipeline: args.pipeline,
        op_interval,
        seed: args.seed,
    });
    let before = args.metrics.as_deref().map(server_stats::scrape);
    let outcome = measure(plan, &addrs, args, threads)?;
    let after = args.metrics.as_deref().map(server_stats::scrape);
    let mut summary = report::Summary::new(args, threads, &outcome);
    match (before, after) {
        (Some(Ok(b)), Some(Ok(a))) => {
            summary.server = Some(server_stats::ServerStats::between(&b, &a))
        }
        (Some(Err(e)), _) | (_, Some(Err(e))) => {
            eprintln!("paxoskv-bench: metrics scrape failed: {e}")
        }
        _ => {}
    }
    print!("{}", summary.text());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary).context("encode the JSON report")?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    }
    if !outcome.fatal.is_empty() {
        bail!("{}", outcome.fatal.join("; "));
    }
    Ok(())
}

/// Starts `threads` workers over `connections` connections. Returns their handles and the
/// channel they report on.
fn spawn_workers(
    plan: &Arc<Plan>,
    control: &Arc<Control>,
    addrs: &[SocketAddr],
    connections: usize,
    threads: usize,
) -> anyhow::Result<(Vec<std::thread::JoinHandle<()>>, mpsc::Receiver<Msg>)> {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let mut specs: Vec<Vec<ConnSpec>> = (0..threads).map(|_| Vec::new()).collect();
    for k in 0..connections {
        // Open loop: stagger the connections' first intended sends across one interval.
        let offset = plan
            .op_interval
            .map_or(Duration::ZERO, |i| i.mul_f64(k as f64 / connections as f64));
        specs[k % threads].push(ConnSpec {
            addr: addrs[k % addrs.len()],
            first_due: start + offset,
        });
    }
    let mut handles = Vec::new();
    for (id, conns) in specs.into_iter().enumerate() {
        let (plan, control, tx) = (Arc::clone(plan), Arc::clone(control), tx.clone());
        let h = std::thread::Builder::new()
            .name(format!("bench-worker-{id}"))
            .spawn(move || engine::run_worker(id, plan, control, conns, tx))
            .context("spawn a worker thread")?;
        handles.push(h);
    }
    Ok((handles, rx))
}

fn populate(
    plan: Arc<Plan>,
    addrs: &[SocketAddr],
    connections: usize,
    threads: usize,
    keys_count: u64,
    quiet: bool,
) -> anyhow::Result<()> {
    let control = Arc::new(Control::default());
    control
        .phase
        .store(engine::PHASE_MEASURE, Ordering::Release);
    let t0 = Instant::now();
    let (handles, rx) = spawn_workers(&plan, &control, addrs, connections, threads)?;
    let mut done = 0;
    let mut total = stats::Stats::default();
    let mut fatal = Vec::new();
    let mut next_print = t0 + Duration::from_secs(1);
    while done < handles.len() {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Msg::Interval { stats, .. }) => total.merge(&stats),
            Ok(Msg::Done { stats, .. }) => {
                total.merge(&stats);
                done += 1;
            }
            Ok(Msg::Fatal(e)) => {
                fatal.push(e);
                done += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !quiet && Instant::now() >= next_print {
            let n = control
                .populate_next
                .load(Ordering::Relaxed)
                .min(keys_count);
            eprintln!("prepopulate: {n}/{keys_count} keys sent");
            next_print += Duration::from_secs(1);
        }
    }
    control.phase.store(engine::PHASE_STOP, Ordering::Release);
    for h in handles {
        let _ = h.join();
    }
    if !fatal.is_empty() {
        bail!("prepopulate: {}", fatal.join("; "));
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "prepopulated {} keys in {:.1}s ({:.0} writes/s, {} errors)",
        total.ok_count,
        secs,
        total.ok_count as f64 / secs,
        total.error_count()
    );
    if total.error_count() > 0 {
        eprintln!("prepopulate errors: {:?}", total.errors);
    }
    Ok(())
}

/// What a measured run produced.
pub struct Outcome {
    pub stats: stats::Stats,
    pub measured: Duration,
    pub fatal: Vec<String>,
}

fn measure(
    plan: Arc<Plan>,
    addrs: &[SocketAddr],
    args: &Args,
    threads: usize,
) -> anyhow::Result<Outcome> {
    let control = Arc::new(Control::default());
    let t0 = Instant::now();
    let measure_at = t0 + args.warmup;
    let stop_at = measure_at + args.duration;
    if args.warmup.is_zero() {
        control
            .phase
            .store(engine::PHASE_MEASURE, Ordering::Release);
    }
    let (handles, rx) = if args.engine == EngineArg::Library {
        let (tx, rx) = mpsc::channel();
        let (plan, control, addrs) = (plan.clone(), control.clone(), addrs.to_vec());
        let connections = args.connections;
        let h = std::thread::Builder::new()
            .name("bench-library".into())
            .spawn(move || library::run(plan, control, addrs, connections, threads, tx))
            .context("spawn the library engine")?;
        (vec![h], rx)
    } else {
        spawn_workers(&plan, &control, addrs, args.connections, threads)?
    };
    let mut hdr = match &args.hdr_log {
        Some(p) => Some(report::HdrLog::create(p)?),
        None => None,
    };
    let mut measure_start = args.warmup.is_zero().then_some(t0);
    let mut measure_end = None;
    let mut total = stats::Stats::default();
    let mut second = stats::Stats::default();
    let mut second_measured = stats::new_histogram();
    let mut fatal = Vec::new();
    let mut done = 0;
    let mut next_print = t0 + Duration::from_secs(1);
    let mut last_print = t0;
    while done < handles.len() {
        let now = Instant::now();
        let phase = control.phase.load(Ordering::Acquire);
        if phase == engine::PHASE_WARMUP && now >= measure_at {
            control
                .phase
                .store(engine::PHASE_MEASURE, Ordering::Release);
            measure_start = Some(now);
        } else if phase == engine::PHASE_MEASURE && now >= stop_at {
            control.phase.store(engine::PHASE_STOP, Ordering::Release);
            measure_end = Some(now);
        }
        let next_event = if phase == engine::PHASE_WARMUP {
            measure_at
        } else {
            stop_at
        };
        let wait = next_print.min(next_event).saturating_duration_since(now);
        match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(Msg::Interval { phase, stats }) | Ok(Msg::Done { phase, stats })
                if phase == engine::PHASE_MEASURE =>
            {
                total.merge(&stats);
                let _ = second_measured.add(&stats.total);
                second.merge(&stats);
            }
            Ok(Msg::Interval { stats, .. }) => second.merge(&stats),
            Ok(Msg::Done { stats, .. }) => second.merge(&stats),
            Ok(Msg::Fatal(e)) => {
                eprintln!("paxoskv-bench: {e}");
                fatal.push(e);
                done += 1;
                if done == handles.len() {
                    control.phase.store(engine::PHASE_STOP, Ordering::Release);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // A Done message ends a worker; count it apart so the match above stays flat.
        done = handles.iter().filter(|h| h.is_finished()).count().max(done);
        let now = Instant::now();
        if now >= next_print {
            let secs = now.duration_since(last_print).as_secs_f64();
            if !args.quiet {
                eprintln!(
                    "{}",
                    report::progress_line(
                        now.duration_since(t0),
                        control.phase.load(Ordering::Relaxed),
                        &second,
                        secs
                    )
                );
            }
            if let (Some(log), Some(ms)) = (hdr.as_mut(), measure_start) {
                if !second_measured.is_empty() {
                    log.write(
                        &second_measured,
                        last_print.saturating_duration_since(ms),
                        now.duration_since(last_print),
                    )?;
                }
            }
            second = stats::Stats::default();
            second_measured.reset();
            last_print = now;
            next_print += Duration::from_secs(1);
        }
    }
    control.phase.store(engine::PHASE_STOP, Ordering::Release);
    for h in handles {
        let _ = h.join();
    }
    // Anything still queued was sent before the workers ended.
    while let Ok(m) = rx.try_recv() {
        if let Msg::Interval { phase, stats } | Msg::Done { phase, stats } = m {
            if phase == engine::PHASE_MEASURE {
                total.merge(&stats);
                let _ = second_measured.add(&stats.total);
            }
        }
    }
    if let (Some(log), Some(ms)) = (hdr.as_mut(), measure_start) {
        if !second_measured.is_empty() {
            log.write(
                &second_measured,
                last_print.saturating_duration_since(ms),
                last_print.elapsed(),
            )?;
        }
        log.finish()?;
    }
    let measured = match (measure_start, measure_end) {
        (Some(s), Some(e)) => e.duration_since(s),
        (Some(s), None) => s.elapsed(),
        _ => Duration::ZERO,
    };
    Ok(Outcome {
        stats: total,
        measured,
        fatal,
    })
}
