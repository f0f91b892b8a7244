//! The `paxoskv` binary: `serve`, `node`, `config print`, `inspect`, `status`, `certs`, and the
//! command-line client `kv`.

mod kv;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use glommio::Placement;

use std::time::Duration;

use paxoskv::cluster::ReplicatedKvStore;
use paxoskv::config::ReplicatedConfig;
use paxoskv::local::LocalService;
use paxoskv::storage::{Durability, StoreOptions};

/// How long `serve` waits for a primary before saying it is still waiting.
const PRIMARY_LOG_EVERY: Duration = Duration::from_secs(5);
/// How often the process checks whether every replica stopped on a fatal error.
const FAILED_CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long a graceful stop waits for the requests in flight.
const DRAIN_FOR: Duration = Duration::from_secs(5);
/// How often an idle main thread wakes (it waits for the stop signal).
const IDLE_WAKE: Duration = Duration::from_secs(3600);

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "paxoskv",
    version,
    about = "A Paxos-replicated transactional key-value server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a cluster in this process (every replica on its own core) with the Thrift front.
    Serve(ServeArgs),
    /// Run ONE replica of a multi-process (multi-host) cluster, with its own Thrift front.
    Node(NodeArgs),
    /// Print each replica's store state from its data directory (server stopped).
    Inspect(InspectArgs),
    /// Print a summary of a running cluster through its Thrift port.
    Status(StatusArgs),
    /// Config tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Make a dev CA and TLS certificates: one per replica (named replica-<id>.paxoskv, for
    /// [network] tls_*) and one for the Thrift front (for [thrift] tls_*).
    Certs(CertsArgs),
    /// Command-line client: get, put, del, range, txn, version against running endpoints.
    Kv(kv::KvArgs),
}

#[derive(Args)]
struct CertsArgs {
    /// Directory to write ca.pem, ca.key, replica-<i>.pem/.key and front.pem/.key into.
    #[arg(long)]
    dir: PathBuf,
    /// Number of replicas.
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// Extra names (DNS names or IP addresses) every certificate carries, e.g. the hosts.
    #[arg(long = "host")]
    hosts: Vec<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective config (defaults, file, environment, flags) as TOML.
    Print(CommonArgs),
}

#[derive(Args, Clone, Default)]
struct CommonArgs {
    /// TOML config file (sections [replicated] [consensus] [network] [thrift] [storage] [metrics]).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Thrift port (overrides THRIFT_PORT and [thrift] port).
    #[arg(long)]
    thrift_port: Option<u16>,
    /// Thrift bind address (overrides THRIFT_BIND_ADDRESS).
    #[arg(long)]
    thrift_bind: Option<String>,
    /// Base directory of the replicas' RocksDB data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Base directory of the replicas' WALs.
    #[arg(long)]
    wal_dir: Option<PathBuf>,
    /// Number of replicas.
    #[arg(long)]
    replica_count: Option<u32>,
    /// First replica port (replica i listens on base + i).
    #[arg(long)]
    base_port: Option<u16>,
    /// Serve diagnostic methods only with this token.
    #[arg(long)]
    admin_token: Option<String>,
    /// Allow setFaultInjection (testing only).
    #[arg(long)]
    enable_fault_injection: bool,
    /// Prometheus endpoint port (0: any free port).
    #[arg(long)]
    metrics_port: Option<u16>,
}

#[derive(Args)]
struct NodeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// This replica's id (0-based).
    #[arg(long)]
    id: u32,
    /// Every replica's transport address, in id order: host:port,host:port,...
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Move this replica's WAL and data aside (renamed `*.moved-<unix time>`) and rebuild it
    /// from its peers: for a replica that refuses to start on a damaged WAL or store. It
    /// starts without a vote until rebuilt, so the other replicas must be up.
    #[arg(long)]
    rebuild: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// Base data directory (holds replica_<i>/).
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Also print this key's value (default column family) in every replica.
    #[arg(long)]
    key: Option<String>,
}

#[derive(Args)]
struct StatusArgs {
    /// Thrift address of any node.
    #[arg(long, default_value = "127.0.0.1:9091")]
    addr: String,
    /// Admin token, if the cluster requires one.
    #[arg(long)]
    auth_token: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Run one store over a local log, without replication.
    #[arg(long)]
    single: bool,
}

fn effective_config(a: &CommonArgs) -> anyhow::Result<ReplicatedConfig> {
    let mut c = ReplicatedConfig::from_file(a.config.as_deref())?;
    c.apply_env(|k| std::env::var(k).ok())?;
    if let Some(p) = a.thrift_port {
        c.thrift.port = p;
    }
    if let Some(b) = &a.thrift_bind {
        c.thrift.bind_address = b.clone();
    }
    if let Some(d) = &a.data_dir {
        c.storage.db_base_path = d.clone();
    }
    if let Some(d) = &a.wal_dir {
        c.storage.wal_path = d.clone();
    }
    if let Some(n) = a.replica_count {
        c.replicated.replica_count = n;
    }
    if let Some(p) = a.base_port {
        c.network.base_tcp_port = p;
    }
    if let Some(t) = &a.admin_token {
        c.thrift.admin_token = Some(t.clone());
    }
    if a.enable_fault_injection {
        c.thrift.enable_fault_injection = true;
    }
    if let Some(p) = a.metrics_port {
        c.metrics.port = p;
    }
    c.validate()?;
    Ok(c)
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("paxoskv: error: {e:#}");
        std::process::exit(2);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config {
            command: ConfigCommand::Print(a),
        } => {
            print!("{}", effective_config(&a)?.to_toml());
            Ok(())
        }
        Command::Certs(a) => {
            for f in paxoskv::tls::make_dev_certs(&a.dir, a.replicas, &a.hosts)? {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
        Command::Serve(a) => serve(a),
        Command::Node(a) => node(a),
        Command::Inspect(a) => inspect(a),
        Command::Status(a) => status(a),
        Command::Kv(a) => std::process::exit(kv::run(a)),
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut config = effective_config(&a.common)?;
    fit_open_file_limit(&mut config);
    settle_huge_pages(&config);
    let stop = signals::block_termination()?;
    if a.single {
        return serve_single(config, stop);
    }
    let store = ReplicatedKvStore::new(config.clone())?;
    run_cluster(store, config, stop)
}

fn node(a: NodeArgs) -> anyhow::Result<()> {
    let mut config = effective_config(&a.common)?;
    if !a.peers.is_empty() {
        config.network.peers = a.peers.clone();
        config.replicated.replica_count = a.peers.len() as u32;
    }
    config.validate()?;
    refuse_open_network_without_secret(&config)?;
    fit_open_file_limit(&mut config);
    settle_huge_pages(&config);
    if a.rebuild {
        move_aside(&config.replica_wal_dir(a.id))?;
        move_aside(&config.replica_data_dir(a.id))?;
    }
    let stop = signals::block_termination()?;
    let store = ReplicatedKvStore::new_node(config.clone(), a.id)?;
    run_cluster(store, config, stop)
}

/// Replicas reachable beyond this machine must authenticate each other: with neither TLS nor
/// a shared secret, anyone who reaches a replica port could speak as a replica.
fn refuse_open_network_without_secret(config: &ReplicatedConfig) -> anyhow::Result<()> {
    if config.network.tls_files(0).is_some()
        || config
            .network
            .shared_secret
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    {
        return Ok(());
    }
    let n = config.replicated.replica_count;
    for id in 0..n {
        let addr = config.replica_address(id);
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            anyhow::bail!(
                "replica {id} is at {addr}, beyond this machine, and replica links have neither \
                 TLS nor a shared secret: anyone who reaches a replica port could act as a \
                 replica. Set [network] tls_ca, tls_cert and tls_key (`paxoskv certs` makes a \
                 set) or [network] shared_secret (the same on every node) in the config file"
            );
        }
    }
    Ok(())
}

/// File descriptors the stores, WALs and peer links need beside client connections.
const FDS_FOR_STORES: u64 = 1024;

/// Turns transparent huge pages off for this process unless `replicated.transparent_huge_pages`
/// asks for them. The flag is checked at every page fault, so memory mapped before this call
/// is covered too; pages already huge stay so. A kernel that refuses only costs the latency.
fn settle_huge_pages(config: &ReplicatedConfig) {
    if config.replicated.transparent_huge_pages {
        return;
    }
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot turn transparent huge pages off for this process"
        );
    }
}

/// Raises the open-file limit to what `thrift.max_connections` plus the stores need; where
/// the hard limit does not allow it, lowers `max_connections` instead (with a log line), so a
/// flood of connections can never leave a WAL rotation without a file descriptor.
fn fit_open_file_limit(config: &mut ReplicatedConfig) {
    let need = u64::from(config.thrift.max_connections) + FDS_FOR_STORES;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur >= need {
        return;
    }
    let target = need.min(lim.rlim_max);
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    let have = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        target
    } else {
        lim.rlim_cur
    };
    if have < need {
        let fit = have.saturating_sub(FDS_FOR_STORES).max(64) as u32;
        tracing::warn!(
            open_files = have,
            max_connections = fit,
            "the open-file limit cannot hold thrift.max_connections plus the stores; \
             max_connections lowered"
        );
        config.thrift.max_connections = fit.min(config.thrift.max_connections);
    } else {
        tracing::info!(open_files = have, "open-file limit raised");
    }
}

/// Renames `dir` to `<dir>.moved-<unix seconds>` (nothing to do if it does not exist).
fn move_aside(dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut to = dir.as_os_str().to_owned();
    to.push(format!(".moved-{secs}"));
    std::fs::rename(dir, &to).with_context(|| format!("cannot move {} aside", dir.display()))?;
    eprintln!(
        "paxoskv: moved {} to {}; this replica rebuilds from its peers",
        dir.display(),
        std::path::Path::new(&to).display()
    );
    Ok(())
}

/// The start-up sequence: stores and ports (done by `new`), replicas, a primary, then the
/// Thrift port; on SIGINT/SIGTERM, hand leadership off, sync and exit 0.
fn run_cluster(
    mut store: ReplicatedKvStore,
    config: ReplicatedConfig,
    stop: signals::Termination,
) -> anyhow::Result<()> {
    store.start()?;
    tracing::info!(replicas = ?store.endpoints(), "replicas started; waiting for a primary");
    loop {
        if let Some(p) = store.wait_for_primary(PRIMARY_LOG_EVERY) {
            tracing::info!(primary = p, "primary elected");
            break;
        }
        if stop.requested() {
            store.shutdown();
            return Ok(());
        }
        if let Some(e) = store.all_failed() {
            anyhow::bail!("every replica of this process stopped: {e}");
        }
        tracing::warn!("no primary yet (a majority of replicas must be up)");
    }
    let front = paxoskv::front::start_front(
        config.thrift.clone(),
        config.metrics.clone(),
        match store.front_spawner() {
            Some(spawn) => paxoskv::front::FrontHost::Guest(spawn),
            None => paxoskv::front::FrontHost::Executor {
                placement: Placement::Unbound,
                spin_before_park: config.replicated.spin_before_park,
            },
        },
        store.service_factory(),
        paxoskv::front::FrontHelper::on_each(store.helper_spawners(), || store.service_factory()),
    )?;
    tracing::info!(addr = %front.addr, metrics = ?front.metrics_addr, "thrift listening; cluster healthy");
    println!("paxoskv listening on {}", front.addr);
    if let Some(m) = front.metrics_addr {
        println!("paxoskv metrics on http://{m}/metrics");
    }
    // A process whose replicas all stopped on a fatal error (a failed fsync, a damaged WAL)
    // exits non-zero instead of serving errors forever; a supervisor sees it.
    while !stop.wait_for(FAILED_CHECK_EVERY) {
        if let Some(e) = store.all_failed() {
            tracing::error!(error = %e, "every replica of this process stopped; exiting");
            eprintln!("paxoskv: every replica of this process stopped: {e}");
            std::process::exit(1);
        }
    }
    tracing::info!("shutting down: closing the Thrift port and draining requests in flight");
    let mut front = front;
    if !front.stop_and_drain(DRAIN_FOR) {
        tracing::warn!("requests still in flight after {DRAIN_FOR:?}; stopping anyway");
    }
    tracing::info!("handing leadership off and syncing");
    store.shutdown();
    tracing::info!("stopped");
    std::process::exit(0);
}

fn serve_single(config: ReplicatedConfig, stop: signals::Termination) -> anyhow::Result<()> {
    let store = StoreOptions::from_config(&config.storage, Durability::SyncedWal);
    let dir = config.replica_data_dir(0);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let service = LocalService::open(&dir, store, config.consensus.max_batch_ops as usize)
        .with_context(|| format!("cannot open store {}", dir.display()))?;
    let front = paxoskv::front::start_front(
        config.thrift.clone(),
        config.metrics.clone(),
        paxoskv::front::FrontHost::Executor {
            placement: Placement::Unbound,
            spin_before_park: config.replicated.spin_before_park,
        },
        move || service,
        Vec::new(),
    )?;
    println!("paxoskv listening on {}", front.addr);
    if let Some(m) = front.metrics_addr {
        println!("paxoskv metrics on http://{m}/metrics");
    }
    while !stop.wait_for(IDLE_WAKE) {}
    std::process::exit(0);
}

fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let mut dirs: Vec<_> = std::fs::read_dir(&a.data_dir)
        .with_context(|| format!("cannot read {}", a.data_dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("replica_"))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for d in dirs {
        let r = paxoskv::storage::inspect(&d, a.key.as_deref().map(str::as_bytes))
            .with_context(|| format!("cannot inspect {}", d.display()))?;
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        print!(
            "{name}: applied_sequence={} last_version={} keys~{}",
            r.applied_sequence, r.last_version, r.approximate_keys
        );
        if let Some(k) = &a.key {
            match &r.value {
                Some(v) => print!(" {k}={}", String::from_utf8_lossy(v)),
                None => print!(" {k}=<absent>"),
            }
        }
        println!();
    }
    Ok(())
}

fn status(a: StatusArgs) -> anyhow::Result<()> {
    use paxoskv::front::generated::*;
    use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
    use thrift::transport::{
        TBufferedReadTransport, TBufferedWriteTransport, TIoChannel, TTcpChannel,
    };
    let stream = std::net::TcpStream::connect(&a.addr)
        .with_context(|| format!("cannot connect to {}", a.addr))?;
    stream.set_nodelay(true)?;
    let (r, w) = TTcpChannel::with_stream(stream).split()?;
    let mut c = TransactionalKVSyncClient::new(
        TBinaryInputProtocol::new(TBufferedReadTransport::new(r), true),
        TBinaryOutputProtocol::new(TBufferedWriteTransport::new(w), true),
    );
    let h = c.get_cluster_health(GetClusterHealthRequest::new(a.auth_token.clone()))?;
    let Some(health) = h.cluster_health else {
        anyhow::bail!("getClusterHealth failed: {}", h.error.unwrap_or_default());
    };
    println!(
        "cluster: {} ({}/{} healthy), view {}",
        health.cluster_status,
        health.healthy_nodes_count,
        health.total_nodes_count,
        health.current_term
    );
    for n in &health.nodes {
        println!(
            "  replica {} {:<22} {:<11} {}{}",
            n.node_id,
            n.endpoint,
            n.status,
            if n.is_leader { "PRIMARY " } else { "" },
            n.uptime_seconds
                .map(|u| format!("up {u}s"))
                .unwrap_or_default()
        );
    }
    let s = c.get_database_stats(GetDatabaseStatsRequest::new(a.auth_token, false))?;
    if let Some(d) = s.database_stats {
        println!(
            "store: ~{} keys, {} bytes; {} writes, {} reads, avg {:.3} ms; txns: {} committed, {} aborted, {} open",
            d.total_keys, d.total_size_bytes, d.write_operations_count, d.read_operations_count, d.average_response_time_ms.0,
            d.committed_transactions, d.aborted_transactions, d.active_transactions
        );
    }
    Ok(())
}

/// SIGINT/SIGTERM handling without async-signal hazards: the signals are blocked in every
/// thread (the mask is inherited) and one thread waits for them with sigwait.
mod signals {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex};

    #[derive(Clone)]
    pub struct Termination {
        flag: Arc<(Mutex<bool>, Condvar)>,
        seen: Arc<AtomicBool>,
    }

    impl Termination {
        pub fn requested(&self) -> bool {
            self.seen.load(Ordering::SeqCst)
        }
        /// Waits for a termination signal for at most `d`; true once one arrived.
        pub fn wait_for(&self, d: std::time::Duration) -> bool {
            let (m, cv) = &*self.flag;
            let done = m.lock().unwrap_or_else(|e| e.into_inner());
            let (done, _) = cv
                .wait_timeout_while(done, d, |done| !*done)
                .unwrap_or_else(|e| e.into_inner());
            *done
        }
    }

    /// Must run before any other thread starts.
    pub fn block_termination() -> anyhow::Result<Termination> {
        // SAFETY: plain libc signal-mask calls on a zeroed sigset_t.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                anyhow::bail!("cannot block SIGINT/SIGTERM");
            }
            set
        };
        let t = Termination {
            flag: Arc::new((Mutex::new(false), Condvar::new())),
            seen: Arc::new(AtomicBool::new(false)),
        };
        let t2 = t.clone();
        std::thread::Builder::new()
            .name("paxoskv-signals".into())
            .spawn(move || {
                let mut sig: libc::c_int = 0;
                // SAFETY: sigwait on the set blocked above.
                unsafe { libc::sigwait(&set, &mut sig) };
                t2.seen.store(true, Ordering::SeqCst);
                let (m, cv) = &*t2.flag;
                *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
                cv.notify_all();
            })?;
        Ok(t)
    }
}
