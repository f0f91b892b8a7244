//! `ReplicatedConfig`: every setting of a paxoskv process, with built-in defaults that serve a
//! laptop, a TOML file on top, then environment variables, then command-line flags.
//!
//! Invariant: a config that leaves `validate()` is safe to start from; validation errors name
//! the field and the bad value, and nothing is bound or written before it passes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::util::duration::{parse_duration, serde_str};

/// The longest spin before an executor parks that validation accepts.
pub const SPIN_BEFORE_PARK_MAX: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?}: {message}")]
    Env {
        name: &'static str,
        value: String,
        message: String,
    },
    #[error("invalid config: {field} = {value}: {message}")]
    Invalid {
        field: &'static str,
        value: String,
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicatedConfig {
    pub replicated: ReplicatedSection,
    pub consensus: ConsensusSection,
    pub network: NetworkSection,
    pub thrift: ThriftSection,
    pub storage: StorageSection,
    pub metrics: MetricsSection,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicatedSection {
    /// Number of replicas in the cluster (odd; 3 by default).
    pub replica_count: u32,
    /// Names the cluster in the replica handshake, so two clusters never talk to each other.
    pub cluster_id: String,
    /// How long an executor (replica or front) keeps polling for work before it parks. 0 (the
    /// default) never spins. The build's glommio posts a completion only when its executor
    /// enters the kernel (`IORING_SETUP_COOP_TASKRUN`, `patches/`), and a spin does not, so a
    /// spin finds only work queued from the executor's own thread or by other threads: at 50
    /// µs a lone client's write in `serve` was no faster (p50 325/318 µs without, 327/372 µs
    /// with). With more executors than cores a spin also takes the core from threads that
    /// have work.
    #[serde(with = "serde_str")]
    pub spin_before_park: Duration,
    /// Replicas of this process pinned to the same core (more replicas than cores) run on one
    /// executor, one thread per core: a frame sent to both wakes one thread, not two.
    pub executor_per_core: bool,
    /// Let the kernel back this process's memory with transparent huge pages. Off by default
    /// (`serve` and `node` turn THP off for the process): the allocator asks for huge pages on
    /// its arenas, and a fault on one zeroes 2 MiB in the faulting thread. On the test machine
    /// that held a replica's executor for 6-25 ms at a time, three times in five seconds of
    /// 64-client writes: every client's request waited behind it (perf/README.md).
    pub transparent_huge_pages: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusSection {
    #[serde(with = "serde_str")]
    pub heartbeat_interval: Duration,
    /// Election timeouts are drawn uniformly from `[min, 2 * min)`.
    #[serde(with = "serde_str")]
    pub election_timeout_min: Duration,
    /// How long a proposed command may wait to commit before its client gets `TIMEOUT`
    /// (outcome unknown: it may still commit later).
    #[serde(with = "serde_str")]
    pub commit_timeout: Duration,
    /// Serve linearizable reads under a primary lease instead of a heartbeat round per batch.
    pub read_lease: bool,
    /// Largest clock difference between two replicas over one lease period (lease mode only).
    #[serde(with = "serde_str")]
    pub clock_drift_bound: Duration,
    /// Client operations in one Paxos proposal at most.
    pub max_batch_ops: u32,
    /// Bytes of client operations in one Paxos proposal at most.
    pub max_batch_bytes: u64,
    /// Slots in flight (proposed, not yet committed) at most. Commands that arrive while the
    /// pipeline is full wait and go out together in the next slot, so a short pipeline means
    /// bigger batches (fewer WAL writes and messages per command) at no cost to an idle pipe.
    /// The default is 1: each replica's WAL writes one group at a time, so a second slot in
    /// flight mostly waits for the first one's write, and it splits the batch in two. Measured
    /// against 4 (perf/README.md), 1 gave more writes at 16, 64 and 256 clients and more mixed
    /// 90:10, with a lone client's latency unchanged. A link with a long round trip (another
    /// site) wants more: one slot carries at most `max_batch_ops` per round trip.
    pub pipeline_depth: u32,
    /// Client operations waiting for a slot at most; beyond it clients get `UNAVAILABLE`.
    pub max_pending_ops: u32,
    /// How long a request waits for a primary before `NOT_PRIMARY`.
    #[serde(with = "serde_str")]
    pub primary_wait: Duration,
    /// Command bytes a replica's log keeps for a peer that lags behind (down, slow, or
    /// partitioned) beyond what the store made durable. Past it the log (and the WAL) is cut
    /// anyway and the laggard is brought back by a snapshot of a peer's store. Bounds memory
    /// and WAL disk while a replica is down.
    pub log_retain_bytes: u64,
    /// Bytes of keys and values per snapshot chunk (one chunk in flight at a time).
    pub snapshot_chunk_bytes: u32,
    /// A snapshot transfer that makes no progress for this long is abandoned (and retried);
    /// a serving side idle this long releases its RocksDB snapshot.
    #[serde(with = "serde_str")]
    pub snapshot_timeout: Duration,
    /// Committed slots a replica may hold that its store has not applied yet; past it the
    /// replica refuses new client writes with `UNAVAILABLE` until apply catches up (the apply
    /// queue stays bounded instead of growing while RocksDB falls behind).
    pub max_apply_lag_slots: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// Replica i (0-based) listens on `base_tcp_port + i` in a single-process cluster
    /// (0: ports chosen by the OS, for tests).
    pub base_tcp_port: u16,
    pub bind_address: String,
    /// `host:port` of every replica, in replica-id order, for one-replica-per-process clusters.
    /// Empty: all replicas on `bind_address` at `base_tcp_port + i`.
    pub peers: Vec<String>,
    #[serde(with = "serde_str")]
    pub network_timeout: Duration,
    #[serde(with = "serde_str")]
    pub connection_timeout: Duration,
    #[serde(with = "serde_str")]
    pub reconnect_backoff_max: Duration,
    /// When set, replicas must present it in the handshake.
    pub shared_secret: Option<String>,
    /// Largest replica-protocol frame accepted.
    pub max_frame_bytes: u32,
    /// Bytes queued for one peer at most (a peer that is down or slow); frames beyond it are
    /// dropped and the protocol resends what the peer still needs.
    pub peer_queue_bytes: u64,
    /// Mutual TLS 1.3 on replica links: the cluster CA (PEM) every node's certificate is
    /// checked against, and this node's certificate and key. All three or none. A replica's
    /// certificate must name `replica-<id>.paxoskv` (`paxoskv certs` makes such a set);
    /// `{id}` in `tls_cert`/`tls_key` stands for the replica's id (so `serve`, which runs every
    /// replica, can give each its own).
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl NetworkSection {
    /// Replica `id`'s link TLS files, when configured.
    pub fn tls_files(&self, id: u32) -> Option<crate::tls::TlsFiles> {
        let for_id =
            |p: &PathBuf| PathBuf::from(p.to_string_lossy().replace("{id}", &id.to_string()));
        Some(crate::tls::TlsFiles {
            ca: self.tls_ca.clone()?,
            cert: for_id(self.tls_cert.as_ref()?),
            key: for_id(self.tls_key.as_ref()?),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ThriftSection {
    pub port: u16,
    pub bind_address: String,
    /// TLS on the Thrift port: this server's certificate chain and key (PEM). Both or none;
    /// with them every client connection must start with a TLS handshake.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_connections: u32,
    /// Largest Thrift message (framed or unframed) accepted; larger ones close the connection.
    pub max_message_bytes: u32,
    pub max_key_bytes: u32,
    pub max_value_bytes: u32,
    /// Requests one connection may have in flight at once.
    pub max_in_flight_per_connection: u32,
    /// Request bytes one connection may have in flight (read, not yet answered); past it the
    /// connection is not read until replies go out (a client that never reads its replies
    /// holds at most this much).
    pub max_in_flight_bytes_per_connection: u64,
    /// Request bytes in flight over all connections; past it new requests are answered with
    /// an `UNAVAILABLE` exception at once.
    pub max_in_flight_bytes_total: u64,
    pub max_open_transactions: u32,
    #[serde(with = "serde_str")]
    pub default_transaction_timeout: Duration,
    /// Serve getClusterHealth / getDatabaseStats / getNodeInfo.
    pub enable_diagnostics: bool,
    /// Serve setFaultInjection (testing only).
    pub enable_fault_injection: bool,
    /// When set, diagnostic methods require it in `auth_token`.
    pub admin_token: Option<String>,
    /// getRange results are capped at this many keys even when the client asks for no limit;
    /// key-selector offsets beyond it are refused.
    pub max_range_keys: u32,
    /// Key and value bytes one range reply holds at most; a longer range is cut there with
    /// `has_more` set (at least one pair is always returned).
    pub max_range_reply_bytes: u64,
    /// A connection that started a message must finish it within this (slow senders are
    /// closed).
    #[serde(with = "serde_str")]
    pub read_timeout: Duration,
    /// A connection that sends nothing for this long is closed.
    #[serde(with = "serde_str")]
    pub idle_timeout: Duration,
    /// Key bytes of the read conflicts one connection may register (`addReadConflict*`)
    /// before its next commit; more are refused with `TOO_LARGE`.
    pub max_session_conflict_bytes: u64,
    /// On a server whose replicas share one process over several executors: a plain-TCP
    /// connection that has made this many reads, with writes at most
    /// `spread_max_write_percent` of its calls, moves from the executor that accepted it (the
    /// primary's) to another one, every other such connection, so reads use every core while
    /// writes stay beside the primary. 0 keeps every connection where it was accepted.
    pub spread_after_reads: u32,
    /// The largest share of writes (percent of reads and writes) a connection may have made
    /// and still move (`spread_after_reads`); its later writes cross to the primary's executor.
    /// 0 moves only connections that never wrote.
    pub spread_max_write_percent: u32,
    /// While an executor's turns hold 4 or more replies on average, the plain-TCP replies of
    /// one turn go to the kernel in one `io_uring_enter` (`front/send_batch.rs`) instead of a
    /// `send` each: each `send` may wake the client and hand it the executor's core. False: a
    /// `send` per reply always.
    pub batch_reply_sends: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Replica i keeps RocksDB under `<db_base_path>/replica_<i>/`.
    pub db_base_path: PathBuf,
    /// Replica i keeps its WAL under `<wal_path>/replica_<i>/`.
    pub wal_path: PathBuf,
    pub mvcc_window_versions: u64,
    pub block_cache_bytes: u64,
    /// Per replica: the latest applied version of recently read or written keys, kept in
    /// memory so a point read of such a key needs no RocksDB iterator. Filled by the writes a
    /// store applies while reads go to it (a primary's) and by reads at the latest version;
    /// 0 turns it off.
    pub latest_cache_bytes: u64,
    /// Per replica: the newest version of recently written keys, kept on the apply path while
    /// transactions check read conflicts, so a check on one key needs no RocksDB iterator. The
    /// oldest writes leave first past the bound (a check on a key written before them reads
    /// RocksDB); 0 turns it off.
    pub conflict_index_bytes: u64,
    /// Per replica: how many level-0 files (one per memtable flush) RocksDB lets gather before
    /// it compacts them into level 1. More files mean less compaction CPU per write, and more
    /// files for a read that misses the caches and for every range scan to merge: at 16
    /// against the default 4, writes at 256 clients gained 13-18% and range scans under 16
    /// writing clients lost 28-47% (perf/README.md). Writes slow down at 16 files more and
    /// stop at 32 more (RocksDB's defaults for 4: 20 and 36). 2 to 64.
    pub level0_compaction_trigger: u32,
    /// Per replica: the size of a RocksDB memtable. A store holds at most two (one being
    /// written, one being flushed; writes wait while both are full), so its memtables take at
    /// most twice this much memory.
    pub memtable_bytes: u64,
    /// RocksDB's flush and compaction threads at the lowest CPU priority (nice 19): on a busy
    /// host they take the CPU the executors leave instead of preempting them (a preempted
    /// executor is a latency spike for every request it holds). They still get the CPU when
    /// the executors wait, and a write stall slows the writes down to what they can flush.
    pub background_low_priority: bool,
    pub wal_segment_bytes: u64,
    /// Write WAL segments with O_DSYNC (a write is durable when it completes: one io_uring
    /// operation per group commit). False: a write then an fdatasync.
    pub wal_dsync: bool,
    /// How often a replica starts a RocksDB memtable flush. RocksDB keeps no WAL of its own
    /// (the Paxos WAL is the log), so WAL segments are kept until a flush covers them: this
    /// bounds the WAL kept for RocksDB's sake and what a restart replays. Shorter intervals keep
    /// the memtables smaller (cheaper inserts) at the price of more compaction, and of more
    /// level-0 files for snapshot reads to seek through. The default is 1 s: against 2 s,
    /// with one slot in flight, writes gained a median 5-6% at 64 and 256 clients and
    /// transactions and mixed work did not change beyond the noise (perf/README.md).
    #[serde(with = "serde_str")]
    pub memtable_flush_interval: Duration,
    /// Apply committed slots to RocksDB on the replica's own executor (a task fed by the
    /// lock-free apply queue): no thread to wake per batch and none waking the replica back.
    /// False: a dedicated apply thread per replica consumes the queue.
    pub apply_on_executor: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    pub enabled: bool,
    pub port: u16,
    pub bind_address: String,
}

impl Default for ReplicatedSection {
    fn default() -> Self {
        ReplicatedSection {
            replica_count: 3,
            cluster_id: "paxoskv".to_string(),
            spin_before_park: Duration::ZERO,
            executor_per_core: true,
            transparent_huge_pages: false,
        }
    }
}

impl Default for ConsensusSection {
    fn default() -> Self {
        ConsensusSection {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            commit_timeout: Duration::from_secs(10),
            read_lease: true,
            clock_drift_bound: Duration::from_millis(50),
            max_batch_ops: 1024,
            max_batch_bytes: 4 << 20,
            pipeline_depth: 1,
            max_pending_ops: 65_536,
            primary_wait: Duration::from_secs(2),
            log_retain_bytes: 256 << 20,
            snapshot_chunk_bytes: 4 << 20,
            snapshot_timeout: Duration::from_secs(10),
            max_apply_lag_slots: 16_384,
        }
    }
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            base_tcp_port: 6001,
            bind_address: "127.0.0.1".to_string(),
            peers: Vec::new(),
            network_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(5),
            reconnect_backoff_max: Duration::from_secs(1),
            shared_secret: None,
            max_frame_bytes: 64 << 20,
            peer_queue_bytes: 64 << 20,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for ThriftSection {
    fn default() -> Self {
        ThriftSection {
            port: 9091,
            bind_address: "127.0.0.1".to_string(),
            tls_cert: None,
            tls_key: None,
            max_connections: 4096,
            max_message_bytes: 16 << 20,
            max_key_bytes: 16 << 10,
            max_value_bytes: 4 << 20,
            max_in_flight_per_connection: 256,
            max_in_flight_bytes_per_connection: 32 << 20,
            max_in_flight_bytes_total: 512 << 20,
            max_open_transactions: 100_000,
            default_transaction_timeout: Duration::from_secs(60),
            enable_diagnostics: true,
            enable_fault_injection: false,
            admin_token: None,
            max_range_keys: 100_000,
            max_range_reply_bytes: 4 << 20,
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_session_conflict_bytes: 16 << 20,
            spread_after_reads: 16,
            spread_max_write_percent: 20,
            batch_reply_sends: true,
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            db_base_path: PathBuf::from("./data"),
            wal_path: PathBuf::from("./wal"),
            mvcc_window_versions: 1_000_000,
            block_cache_bytes: 64 << 20,
            latest_cache_bytes: 32 << 20,
            conflict_index_bytes: 16 << 20,
            level0_compaction_trigger: 4,
            memtable_bytes: 64 << 20,
            background_low_priority: true,
            wal_segment_bytes: 64 << 20,
            wal_dsync: true,
            memtable_flush_interval: Duration::from_secs(1),
            apply_on_executor: true,
        }
    }
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            port: 9100,
            bind_address: "127.0.0.1".to_string(),
        }
    }
}

/// The environment variables that override the file, in the order they are applied.
pub const ENV_VARS: &[&str] = &[
    "REPLICATED_REPLICA_COUNT",
    "REPLICATED_BASE_TCP_PORT",
    "REPLICATED_DB_BASE_PATH",
    "REPLICATED_WAL_PATH",
    "REPLICATED_NETWORK_TIMEOUT",
    "REPLICATED_CONNECTION_TIMEOUT",
    "THRIFT_PORT",
    "THRIFT_BIND_ADDRESS",
];

impl ReplicatedConfig {
    /// Defaults, then the TOML file if given.
    pub fn from_file(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Applies overrides from a variable lookup (`std::env::var` in production).
    pub fn apply_env<F: Fn(&str) -> Option<String>>(
        &mut self,
        lookup: F,
    ) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Env {
                name,
                value: v.to_string(),
                message: "not a valid number".to_string(),
            })
        }
        fn dur(name: &'static str, v: &str) -> Result<Duration, ConfigError> {
            parse_duration(v).map_err(|e| ConfigError::Env {
                name,
                value: v.to_string(),
                message: e.to_string(),
            })
        }
        for &name in ENV_VARS {
            let Some(v) = lookup(name) else { continue };
            match name {
                "REPLICATED_REPLICA_COUNT" => self.replicated.replica_count = num(name, &v)?,
                "REPLICATED_BASE_TCP_PORT" => self.network.base_tcp_port = num(name, &v)?,
                "REPLICATED_DB_BASE_PATH" => self.storage.db_base_path = PathBuf::from(v),
                "REPLICATED_WAL_PATH" => self.storage.wal_path = PathBuf::from(v),
                "REPLICATED_NETWORK_TIMEOUT" => self.network.network_timeout = dur(name, &v)?,
                "REPLICATED_CONNECTION_TIMEOUT" => self.network.connection_timeout = dur(name, &v)?,
                "THRIFT_PORT" => self.thrift.port = num(name, &v)?,
                "THRIFT_BIND_ADDRESS" => self.thrift.bind_address = v,
                _ => {}
            }
        }
        Ok(())
    }

    pub fn replica_data_dir(&self, id: u32) -> PathBuf {
        self.storage.db_base_path.join(format!("replica_{id}"))
    }

    pub fn replica_wal_dir(&self, id: u32) -> PathBuf {
        self.storage.wal_path.join(format!("replica_{id}"))
    }

    /// The address replica `id` listens on for its peers.
    pub fn replica_address(&self, id: u32) -> String {
        match self.network.peers.get(id as usize) {
            Some(p) => p.clone(),
            None => format!(
                "{}:{}",
                self.network.bind_address,
                self.network.base_tcp_port as u32 + id
            ),
        }
    }
}

mod validate;

#[cfg(test)]
mod tests;
