//! The `paxoskv` binary: `serve`, `config print`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use glommio::Placement;

use paxoskv::config::ReplicatedConfig;
use paxoskv::local::LocalService;
use paxoskv::storage::StoreOptions;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "paxoskv", version, about = "A Paxos-replicated transactional key-value server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server with the built-in defaults, a config file, environment and flags.
    Serve(ServeArgs),
    /// Config tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
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
        Command::Config { command: ConfigCommand::Print(a) } => {
            print!("{}", effective_config(&a)?.to_toml());
            Ok(())
        }
        Command::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let config = effective_config(&a.common)?;
    let store = StoreOptions {
        mvcc_window_versions: config.storage.mvcc_window_versions,
        sync_writes: true,
        block_cache_bytes: config.storage.block_cache_bytes as usize,
        ..StoreOptions::default()
    };
    let _ = a.single;
    let dir = config.replica_data_dir(0);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let service = LocalService::open(&dir, store, config.consensus.max_batch_ops as usize)
        .with_context(|| format!("cannot open store {}", dir.display()))?;
    let front = paxoskv::front::start_front(config.thrift.clone(), Placement::Unbound, move || service)?;
    tracing::info!(addr = %front.addr, "thrift listening");
    println!("paxoskv listening on {}", front.addr);
    let _ = front.thread.join();
    Ok(())
}
