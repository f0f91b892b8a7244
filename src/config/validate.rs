//! `ReplicatedConfig::validate`: every field checked before anything is bound or written; an
//! error names the field and the bad value.

use std::net::IpAddr;

use super::{ConfigError, ReplicatedConfig, SPIN_BEFORE_PARK_MAX};

impl ReplicatedConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(field: &'static str, value: impl std::fmt::Display, message: &str) -> ConfigError {
            ConfigError::Invalid {
                field,
                value: value.to_string(),
                message: message.to_string(),
            }
        }
        let r = &self.replicated;
        if r.replica_count == 0 || r.replica_count > 9 || r.replica_count.is_multiple_of(2) {
            return Err(bad(
                "replicated.replica_count",
                r.replica_count,
                "must be odd and between 1 and 9",
            ));
        }
        if r.cluster_id.is_empty() || r.cluster_id.len() > 64 {
            return Err(bad(
                "replicated.cluster_id",
                &r.cluster_id,
                "must be 1-64 bytes",
            ));
        }
        if r.spin_before_park > SPIN_BEFORE_PARK_MAX {
            return Err(bad(
                "replicated.spin_before_park",
                format!("{:?}", r.spin_before_park),
                "must be at most 10ms (a spinning executor takes its core from everything else)",
            ));
        }
        let n = &self.network;
        let tls = [&n.tls_ca, &n.tls_cert, &n.tls_key];
        if tls.iter().any(|f| f.is_some()) && tls.iter().any(|f| f.is_none()) {
            return Err(bad(
                "network.tls_ca/tls_cert/tls_key",
                "partly set",
                "set all three (the cluster CA, this node's certificate and its key) or none",
            ));
        }
        if self.thrift.tls_cert.is_some() != self.thrift.tls_key.is_some() {
            return Err(bad(
                "thrift.tls_cert/tls_key",
                "partly set",
                "set both (the front's certificate and its key) or neither",
            ));
        }
        let c = &self.consensus;
        if c.heartbeat_interval.is_zero() {
            return Err(bad("consensus.heartbeat_interval", "0", "must be positive"));
        }
        if c.election_timeout_min <= c.heartbeat_interval * 2 {
            return Err(bad(
                "consensus.election_timeout_min",
                format!("{:?}", c.election_timeout_min),
                "must be more than twice consensus.heartbeat_interval",
            ));
        }
        if c.read_lease && c.clock_drift_bound >= c.election_timeout_min {
            return Err(bad(
                "consensus.clock_drift_bound",
                format!("{:?}", c.clock_drift_bound),
                "must be below consensus.election_timeout_min",
            ));
        }
        if c.commit_timeout.is_zero() {
            return Err(bad("consensus.commit_timeout", "0", "must be positive"));
        }
        for (field, v) in [
            ("consensus.max_batch_ops", c.max_batch_ops as u64),
            ("consensus.max_batch_bytes", c.max_batch_bytes),
            ("consensus.pipeline_depth", c.pipeline_depth as u64),
            ("consensus.max_pending_ops", c.max_pending_ops as u64),
            ("consensus.max_apply_lag_slots", c.max_apply_lag_slots),
            (
                "consensus.snapshot_chunk_bytes",
                c.snapshot_chunk_bytes as u64,
            ),
            ("thrift.max_connections", self.thrift.max_connections as u64),
            (
                "thrift.max_message_bytes",
                self.thrift.max_message_bytes as u64,
            ),
            ("thrift.max_key_bytes", self.thrift.max_key_bytes as u64),
            ("thrift.max_value_bytes", self.thrift.max_value_bytes as u64),
            (
                "thrift.max_in_flight_per_connection",
                self.thrift.max_in_flight_per_connection as u64,
            ),
            (
                "thrift.max_open_transactions",
                self.thrift.max_open_transactions as u64,
            ),
            ("thrift.max_range_keys", self.thrift.max_range_keys as u64),
            (
                "thrift.max_range_reply_bytes",
                self.thrift.max_range_reply_bytes,
            ),
            (
                "thrift.max_in_flight_bytes_per_connection",
                self.thrift.max_in_flight_bytes_per_connection,
            ),
            (
                "thrift.max_in_flight_bytes_total",
                self.thrift.max_in_flight_bytes_total,
            ),
            (
                "thrift.max_session_conflict_bytes",
                self.thrift.max_session_conflict_bytes,
            ),
            (
                "thrift.read_timeout",
                self.thrift.read_timeout.as_millis() as u64,
            ),
            (
                "thrift.idle_timeout",
                self.thrift.idle_timeout.as_millis() as u64,
            ),
            (
                "storage.mvcc_window_versions",
                self.storage.mvcc_window_versions,
            ),
            (
                "network.max_frame_bytes",
                self.network.max_frame_bytes as u64,
            ),
            ("network.peer_queue_bytes", self.network.peer_queue_bytes),
        ] {
            if v == 0 {
                return Err(bad(field, v, "must be positive"));
            }
        }
        if self.thrift.max_range_reply_bytes > self.thrift.max_in_flight_bytes_per_connection {
            return Err(bad(
                "thrift.max_range_reply_bytes",
                self.thrift.max_range_reply_bytes,
                "must not exceed thrift.max_in_flight_bytes_per_connection (a range call holds \
                 room for its largest reply there)",
            ));
        }
        if self.thrift.spread_max_write_percent > 100 {
            return Err(bad(
                "thrift.spread_max_write_percent",
                self.thrift.spread_max_write_percent,
                "must be at most 100",
            ));
        }
        if !(2..=64).contains(&self.storage.level0_compaction_trigger) {
            return Err(bad(
                "storage.level0_compaction_trigger",
                self.storage.level0_compaction_trigger,
                "must be between 2 and 64",
            ));
        }
        if !(1 << 20..=1 << 30).contains(&self.storage.memtable_bytes) {
            return Err(bad(
                "storage.memtable_bytes",
                self.storage.memtable_bytes,
                "must be between 1 MiB and 1 GiB",
            ));
        }
        if c.pipeline_depth > 4096 {
            return Err(bad(
                "consensus.pipeline_depth",
                c.pipeline_depth,
                "must be at most 4096",
            ));
        }
        if (self.thrift.max_message_bytes as u64) > (1 << 30) {
            return Err(bad(
                "thrift.max_message_bytes",
                self.thrift.max_message_bytes,
                "must be at most 1 GiB",
            ));
        }
        if self.thrift.max_key_bytes >= self.thrift.max_message_bytes {
            return Err(bad(
                "thrift.max_key_bytes",
                self.thrift.max_key_bytes,
                "must be below thrift.max_message_bytes",
            ));
        }
        if (self.network.max_frame_bytes as u64) < c.max_batch_bytes + (1 << 20) {
            return Err(bad(
                "network.max_frame_bytes",
                self.network.max_frame_bytes,
                "must exceed consensus.max_batch_bytes by at least 1 MiB",
            ));
        }
        if (self.network.max_frame_bytes as u64) < c.snapshot_chunk_bytes as u64 + (1 << 20) {
            return Err(bad(
                "consensus.snapshot_chunk_bytes",
                c.snapshot_chunk_bytes,
                "must be at least 1 MiB below network.max_frame_bytes",
            ));
        }
        if c.snapshot_timeout.is_zero() {
            return Err(bad("consensus.snapshot_timeout", "0", "must be positive"));
        }
        if self.storage.wal_segment_bytes < c.max_batch_bytes * 2 {
            return Err(bad(
                "storage.wal_segment_bytes",
                self.storage.wal_segment_bytes,
                "must be at least twice consensus.max_batch_bytes",
            ));
        }
        // One client command (at most one Thrift message) always gets a slot of its own, so
        // it must fit a WAL segment and a replica frame, or it would stop every replica.
        let message = self.thrift.max_message_bytes as u64;
        if self.storage.wal_segment_bytes < message * 2 {
            return Err(bad(
                "storage.wal_segment_bytes",
                self.storage.wal_segment_bytes,
                "must be at least twice thrift.max_message_bytes (one command fills a slot)",
            ));
        }
        if (self.network.max_frame_bytes as u64) < message + (1 << 20) {
            return Err(bad(
                "network.max_frame_bytes",
                self.network.max_frame_bytes,
                "must exceed thrift.max_message_bytes by at least 1 MiB",
            ));
        }
        if self.storage.memtable_flush_interval.is_zero() {
            return Err(bad(
                "storage.memtable_flush_interval",
                "0",
                "must be positive",
            ));
        }
        let n = &self.network;
        if n.base_tcp_port as u32 + r.replica_count > 65536 {
            return Err(bad(
                "network.base_tcp_port",
                n.base_tcp_port,
                "replica ports would pass 65535",
            ));
        }
        if !n.peers.is_empty() && n.peers.len() != r.replica_count as usize {
            return Err(bad(
                "network.peers",
                n.peers.join(","),
                "must list exactly replicated.replica_count addresses",
            ));
        }
        for p in &n.peers {
            if p.rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_none()
            {
                return Err(bad("network.peers", p, "each peer must be host:port"));
            }
        }
        for (field, v) in [
            ("network.network_timeout", n.network_timeout),
            ("network.connection_timeout", n.connection_timeout),
            ("network.reconnect_backoff_max", n.reconnect_backoff_max),
            (
                "thrift.default_transaction_timeout",
                self.thrift.default_transaction_timeout,
            ),
        ] {
            if v.is_zero() {
                return Err(bad(field, "0", "must be positive"));
            }
        }
        for (field, v) in [
            ("network.bind_address", &n.bind_address),
            ("thrift.bind_address", &self.thrift.bind_address),
            ("metrics.bind_address", &self.metrics.bind_address),
        ] {
            if v.parse::<IpAddr>().is_err() {
                return Err(bad(
                    field,
                    v,
                    "must be an IP address such as 127.0.0.1 or 0.0.0.0",
                ));
            }
        }
        if self.storage.db_base_path.as_os_str().is_empty() {
            return Err(bad("storage.db_base_path", "\"\"", "must not be empty"));
        }
        if self.storage.wal_path.as_os_str().is_empty() {
            return Err(bad("storage.wal_path", "\"\"", "must not be empty"));
        }
        Ok(())
    }
}
