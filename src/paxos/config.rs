//! Configuration of one replica's Paxos core, with named limits and validation.
//!
//! Owns: `PaxosConfig` (defaults that serve a 3-replica laptop cluster) and the test-only
//! `Faults` knobs. Must not: read files or the environment (the shell's config layer maps its
//! TOML/env/flags onto this). Invariants after `validate()`: `replica_id < replica_count`, every
//! limit is non-zero, `clock_drift_bound_ms < election_timeout_min_ms` when leases are on.

use super::types::ReplicaId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaxosConfig {
    pub replica_id: ReplicaId,
    pub replica_count: u32,
    /// Primary heartbeat period (also the Accept/Prepare retransmission period).
    pub heartbeat_interval_ms: u64,
    /// Election timeouts are drawn uniformly from `[min, 2 * min)` using the tick's randomness.
    pub election_timeout_min_ms: u64,
    /// Slots proposed but not yet chosen, at most.
    pub pipeline_depth: usize,
    /// Commands per slot, at most.
    pub batch_ops_max: usize,
    /// Command bytes per slot, at most (a single larger command still gets its own slot).
    pub batch_bytes_max: usize,
    /// Commands waiting for pipeline room at the primary; beyond this proposals are rejected.
    pub proposal_queue_max: usize,
    /// Committed slots per catch-up reply.
    pub catchup_slots_max: usize,
    /// Command bytes per catch-up reply, at most (one larger slot still goes alone).
    pub catchup_bytes_max: usize,
    /// Command bytes per Promise message, at most: a promiser with more accepted entries
    /// sends them in parts (one larger entry still goes alone).
    pub promise_bytes_max: usize,
    /// Reads waiting for a ReadIndex round; beyond this reads are rejected.
    pub pending_reads_max: usize,
    /// Heartbeat rounds remembered while waiting for their quorum.
    pub read_rounds_max: usize,
    /// Serve reads under a leader lease instead of a heartbeat round per batch.
    pub lease_enabled: bool,
    /// Largest difference between two replicas' clocks over one lease period.
    pub clock_drift_bound_ms: u64,
    /// `compact(upto)` never truncates past what every replica has reported applied.
    /// When false it only waits for the local state machine (laggards then need a snapshot).
    pub compact_wait_for_all_replicas: bool,
    /// With `compact_wait_for_all_replicas`, the log still keeps at most this many command
    /// bytes beyond the local compaction point for a lagging replica: past it the log is cut
    /// anyway and the laggard catches up by snapshot. Bounds memory and WAL disk while a
    /// replica is down.
    pub log_retain_bytes: u64,
    /// Stand for election first after a start: this replica's first election timeout is the
    /// minimum plus one heartbeat, and every other replica defers its first one by three
    /// heartbeats, so when the whole cluster starts together (boots within a heartbeat of each
    /// other) this replica becomes the primary (the shell puts the front beside it). Safety does not depend on it, and PreVote
    /// keeps it from disturbing a cluster that already has a primary.
    pub lead_after_start: bool,
    #[doc(hidden)]
    pub faults: Faults,
}

/// Test-only switches that deliberately break a rule so the simulator can prove it notices.
#[doc(hidden)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Send Promise/Accepted before the record they vouch for is durable.
    pub reply_before_persist: bool,
    /// Treat one vote (the primary's own) as a quorum.
    pub quorum_of_one: bool,
    /// Start a view change without a PreVote round.
    pub skip_prevote: bool,
    /// A replica that lost its state votes as if it had not (no amnesia rules).
    pub ignore_amnesia: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("consensus.replica_id {id} must be below replica_count {count}")]
    ReplicaId { id: u32, count: u32 },
    #[error("consensus.{0} must be greater than zero")]
    Zero(&'static str),
    #[error("consensus.election_timeout_min_ms must exceed 2 * heartbeat_interval_ms")]
    ElectionTimeout,
    #[error("consensus.clock_drift_bound_ms must be below election_timeout_min_ms")]
    ClockDrift,
    #[error("consensus.replica_count {0} is above the supported maximum of 64")]
    TooManyReplicas(u32),
}

/// Votes are tracked in a u64 bit set.
pub const REPLICA_COUNT_MAX: u32 = 64;

impl Default for PaxosConfig {
    fn default() -> Self {
        PaxosConfig {
            replica_id: ReplicaId(0),
            replica_count: 3,
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 300,
            pipeline_depth: 8,
            batch_ops_max: 256,
            batch_bytes_max: 1 << 20,
            proposal_queue_max: 16_384,
            catchup_slots_max: 256,
            catchup_bytes_max: 8 << 20,
            promise_bytes_max: 8 << 20,
            pending_reads_max: 16_384,
            read_rounds_max: 64,
            lease_enabled: false,
            clock_drift_bound_ms: 50,
            compact_wait_for_all_replicas: true,
            log_retain_bytes: 256 << 20,
            lead_after_start: false,
            faults: Faults::default(),
        }
    }
}

impl PaxosConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replica_count == 0 {
            return Err(ConfigError::Zero("replica_count"));
        }
        if self.replica_count > REPLICA_COUNT_MAX {
            return Err(ConfigError::TooManyReplicas(self.replica_count));
        }
        if self.replica_id.0 >= self.replica_count {
            return Err(ConfigError::ReplicaId {
                id: self.replica_id.0,
                count: self.replica_count,
            });
        }
        let limits = [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms as usize),
            ("pipeline_depth", self.pipeline_depth),
            ("batch_ops_max", self.batch_ops_max),
            ("batch_bytes_max", self.batch_bytes_max),
            ("proposal_queue_max", self.proposal_queue_max),
            ("catchup_slots_max", self.catchup_slots_max),
            ("catchup_bytes_max", self.catchup_bytes_max),
            ("promise_bytes_max", self.promise_bytes_max),
            ("pending_reads_max", self.pending_reads_max),
            ("read_rounds_max", self.read_rounds_max),
        ];
        if let Some((name, _)) = limits.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        if self.election_timeout_min_ms <= 2 * self.heartbeat_interval_ms {
            return Err(ConfigError::ElectionTimeout);
        }
        if self.lease_enabled && self.clock_drift_bound_ms >= self.election_timeout_min_ms {
            return Err(ConfigError::ClockDrift);
        }
        Ok(())
    }

    /// Votes needed to choose a value or win a view.
    pub fn quorum(&self) -> u32 {
        if self.faults.quorum_of_one {
            1
        } else {
            self.replica_count / 2 + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_errors_name_fields() {
        assert_eq!(PaxosConfig::default().validate(), Ok(()));
        let c = PaxosConfig {
            replica_id: ReplicaId(3),
            ..PaxosConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("replica_id"));
        let c = PaxosConfig {
            pipeline_depth: 0,
            ..PaxosConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("pipeline_depth"));
        let c = PaxosConfig {
            lease_enabled: true,
            clock_drift_bound_ms: 400,
            ..PaxosConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::ClockDrift));
        assert_eq!(PaxosConfig::default().quorum(), 2);
    }
}
