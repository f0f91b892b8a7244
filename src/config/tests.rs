//! Tests of the configuration: defaults, file and environment layering, validation.

use super::*;

#[test]
fn defaults_are_valid_and_round_trip_through_toml() {
    let c = ReplicatedConfig::default();
    c.validate().unwrap();
    let back = ReplicatedConfig::from_toml(&c.to_toml()).unwrap();
    assert_eq!(back, c);
    assert_eq!(c.thrift.port, 9091);
    assert_eq!(c.replica_address(2), "127.0.0.1:6003");
}

#[test]
fn file_then_env() {
    let mut c = ReplicatedConfig::from_toml(
        "[thrift]\nport = 7000\n[consensus]\nheartbeat_interval = \"20ms\"\n",
    )
    .unwrap();
    assert_eq!(c.thrift.port, 7000);
    assert_eq!(c.consensus.heartbeat_interval, Duration::from_millis(20));
    c.apply_env(|k| match k {
        "THRIFT_PORT" => Some("7001".into()),
        "REPLICATED_NETWORK_TIMEOUT" => Some("3s".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(c.thrift.port, 7001);
    assert_eq!(c.network.network_timeout, Duration::from_secs(3));
    let err = c
        .apply_env(|k| (k == "THRIFT_PORT").then(|| "seventy".to_string()))
        .unwrap_err();
    assert!(err.to_string().contains("THRIFT_PORT"), "{err}");
}

#[test]
fn one_command_must_fit_a_wal_segment_and_a_replica_frame() {
    let mut c = ReplicatedConfig::default();
    c.storage.wal_segment_bytes = 16 << 20;
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("storage.wal_segment_bytes") && e.contains("max_message_bytes"),
        "{e}"
    );
    c.thrift.max_message_bytes = 8 << 20;
    c.validate().unwrap();
    c.network.max_frame_bytes = 8 << 20;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("network.max_frame_bytes"), "{e}");
}

#[test]
fn validation_names_the_field_and_value() {
    let mut c = ReplicatedConfig::default();
    c.replicated.replica_count = 4;
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("replicated.replica_count") && e.contains('4'),
        "{e}"
    );
    let mut c = ReplicatedConfig::default();
    c.thrift.bind_address = "not-an-ip".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("thrift.bind_address") && e.contains("not-an-ip"),
        "{e}"
    );
    let mut c = ReplicatedConfig::default();
    c.consensus.election_timeout_min = Duration::from_millis(60);
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("election_timeout_min"));
    let mut c = ReplicatedConfig::default();
    c.thrift.spread_max_write_percent = 101;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("thrift.spread_max_write_percent"), "{e}");
    for files in [1, 65] {
        let mut c = ReplicatedConfig::default();
        c.storage.level0_compaction_trigger = files;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("storage.level0_compaction_trigger"), "{e}");
    }
    for bytes in [(1 << 20) - 1, (1 << 30) + 1] {
        let mut c = ReplicatedConfig::default();
        c.storage.memtable_bytes = bytes;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("storage.memtable_bytes"), "{e}");
    }
    assert!(ReplicatedConfig::from_toml("[thrift]\nbogus = 1\n")
        .unwrap_err()
        .to_string()
        .contains("bogus"));
}
