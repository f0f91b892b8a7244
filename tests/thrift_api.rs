//! Every method of `TransactionalKV` through the real binary and the Rust `thrift` client, over
//! both the unframed and the framed transport.

mod common;

use common::{Client, Server};
use paxoskv::front::generated::*;

fn set(c: &mut Client, k: &[u8], v: &[u8]) {
    let r = c
        .set_key(SetKeyRequest::new(k.to_vec(), v.to_vec(), None::<String>))
        .unwrap();
    assert!(r.success, "{r:?}");
}

fn get(c: &mut Client, k: &[u8]) -> Option<Vec<u8>> {
    let r = c.get(GetRequest::new(k.to_vec(), None::<String>)).unwrap();
    assert!(r.error.is_none(), "{r:?}");
    r.found.then_some(r.value)
}

fn op(t: &str, k: &[u8], v: Option<&[u8]>) -> Operation {
    Operation::new(
        t.to_string(),
        k.to_vec(),
        v.map(|v| v.to_vec()),
        None::<String>,
    )
}

/// Runs `check` against one fresh server, over the unframed and then the framed transport
/// (keys prefixed by the transport, so the two runs do not meet).
/// Makes a key of this run from a name.
type Key<'a> = &'a dyn Fn(&str) -> Vec<u8>;

fn on_both_transports(check: fn(&mut Client, Key)) {
    let server = Server::start(&[]);
    for (mut c, tag) in [
        (server.client(), "unframed"),
        (server.framed_client(), "framed"),
    ] {
        let k = |s: &str| format!("{tag}/{s}").into_bytes();
        check(&mut c, &k);
    }
}

/// ping echoes `message` and `timestamp` and adds the server clock.
#[test]
fn ping_echoes_the_message_and_timestamp() {
    on_both_transports(check_ping_echoes_the_message_and_timestamp);
}

/// setKey, get and deleteKey; a column family is its own key space; deleting an absent key succeeds.
#[test]
fn set_get_delete_in_column_families() {
    on_both_transports(check_set_get_delete_in_column_families);
}

/// snapshotRead and snapshotGet read the state at a read version, not the latest.
#[test]
fn snapshot_reads_see_the_state_at_their_version() {
    on_both_transports(check_snapshot_reads_see_the_state_at_their_version);
}

/// atomicCommit commits, a second commit on the same read version conflicts, an unknown operation applies nothing, and getCommittedVersion is the connection's last commit.
#[test]
fn atomic_commit_detects_conflicts_and_applies_all_or_nothing() {
    on_both_transports(check_atomic_commit_detects_conflicts_and_applies_all_or_nothing);
}

/// setReadVersion, addReadConflict and addReadConflictRange feed the next atomicCommit, which consumes them.
#[test]
fn session_conflicts_and_pinned_version_feed_the_next_commit() {
    on_both_transports(check_session_conflicts_and_pinned_version_feed_the_next_commit);
}

/// getRange and snapshotGetRange: bounds, offsets, limits and has_more.
#[test]
fn range_reads_follow_the_selector_rules() {
    on_both_transports(check_range_reads_follow_the_selector_rules);
}

/// versionstamped keys and values carry the commit version and the operation's order.
#[test]
fn versionstamps_carry_the_commit_version_and_order() {
    on_both_transports(check_versionstamps_carry_the_commit_version_and_order);
}

/// beginTransaction, commitTransaction (with conflicts) and abortTransaction.
#[test]
fn interactive_transactions_begin_commit_and_abort() {
    on_both_transports(check_interactive_transactions_begin_commit_and_abort);
}

/// getClusterHealth, getDatabaseStats and getNodeInfo answer when no admin token is set.
#[test]
fn diagnostics_answer_without_a_token_by_default() {
    on_both_transports(check_diagnostics_answer_without_a_token_by_default);
}

/// setFaultInjection is refused unless enabled.
#[test]
fn fault_injection_is_refused_unless_enabled() {
    on_both_transports(check_fault_injection_is_refused_unless_enabled);
}

fn check_ping_echoes_the_message_and_timestamp(c: &mut Client, _k: Key) {
    let p = c.ping(PingRequest::new(b"hi".to_vec(), 42)).unwrap();
    assert_eq!(p.message, b"hi");
    assert_eq!(p.timestamp, 42);
    assert!(p.server_timestamp > 0);
}

fn check_set_get_delete_in_column_families(c: &mut Client, k: Key) {
    set(c, &k("a"), b"1");
    assert_eq!(get(c, &k("a")), Some(b"1".to_vec()));
    let r = c
        .set_key(SetKeyRequest::new(
            k("a"),
            b"cf-value".to_vec(),
            "other".to_string(),
        ))
        .unwrap();
    assert!(r.success);
    let r = c.get(GetRequest::new(k("a"), "other".to_string())).unwrap();
    assert_eq!((r.found, r.value), (true, b"cf-value".to_vec()));
    assert_eq!(get(c, &k("a")), Some(b"1".to_vec()));
    assert!(
        c.delete_key(DeleteKeyRequest::new(k("absent"), None::<String>))
            .unwrap()
            .success
    );
    set(c, &k("gone"), b"x");
    assert!(
        c.delete_key(DeleteKeyRequest::new(k("gone"), None::<String>))
            .unwrap()
            .success
    );
    assert_eq!(get(c, &k("gone")), None);
}

fn check_snapshot_reads_see_the_state_at_their_version(c: &mut Client, k: Key) {
    set(c, &k("a"), b"1");
    let v1 = c.get_read_version(GetReadVersionRequest::new()).unwrap();
    assert!(v1.success && v1.read_version > 0);
    set(c, &k("a"), b"2");
    let r = c
        .snapshot_read(SnapshotReadRequest::new(
            k("a"),
            v1.read_version,
            None::<String>,
        ))
        .unwrap();
    assert_eq!((r.found, r.value.as_slice()), (true, &b"1"[..]));
    let r = c
        .snapshot_get(SnapshotGetRequest::new(
            k("a"),
            v1.read_version,
            None::<String>,
        ))
        .unwrap();
    assert_eq!(r.value, b"1");
    assert_eq!(get(c, &k("a")), Some(b"2".to_vec()));
}

fn check_atomic_commit_detects_conflicts_and_applies_all_or_nothing(c: &mut Client, k: Key) {
    let rv = c
        .get_read_version(GetReadVersionRequest::new())
        .unwrap()
        .read_version;
    let commit = |c: &mut Client, v: &[u8]| {
        c.atomic_commit(AtomicCommitRequest::new(
            rv,
            vec![op("set", &k("t"), Some(v))],
            vec![k("t")],
            None::<i64>,
            None::<Vec<paxoskv::front::generated::KeyRange>>,
        ))
        .unwrap()
    };
    let first = commit(c, b"first");
    assert!(first.success, "{first:?}");
    assert!(first.committed_version.unwrap() > rv);
    let second = commit(c, b"second");
    assert!(!second.success);
    assert_eq!(second.error_code.as_deref(), Some("CONFLICT"));
    assert_eq!(get(c, &k("t")), Some(b"first".to_vec()));
    // An unknown operation type applies nothing.
    let rv = c
        .get_read_version(GetReadVersionRequest::new())
        .unwrap()
        .read_version;
    let bad = c
        .atomic_commit(AtomicCommitRequest::new(
            rv,
            vec![
                op("set", &k("half"), Some(b"x")),
                op("increment", &k("t"), Some(b"1")),
            ],
            vec![],
            None::<i64>,
            None::<Vec<paxoskv::front::generated::KeyRange>>,
        ))
        .unwrap();
    assert_eq!(bad.error_code.as_deref(), Some("INVALID_ARGUMENT"));
    assert_eq!(get(c, &k("half")), None);

    // getCommittedVersion: the version of this connection's last commit
    let cv = c
        .get_committed_version(GetCommittedVersionRequest::new())
        .unwrap();
    assert!(cv.success);
    assert_eq!(Some(cv.version), first.committed_version);
}

fn check_session_conflicts_and_pinned_version_feed_the_next_commit(c: &mut Client, k: Key) {
    let rv = c
        .get_read_version(GetReadVersionRequest::new())
        .unwrap()
        .read_version;
    set(c, &k("r1"), b"changed-after-rv");
    assert!(
        c.set_read_version(SetReadVersionRequest::new(rv))
            .unwrap()
            .success
    );
    assert!(
        c.add_read_conflict_range(AddReadConflictRangeRequest::new(
            k("r0"),
            k("r2"),
            None::<String>
        ))
        .unwrap()
        .success
    );
    let r = c
        .atomic_commit(AtomicCommitRequest::new(
            0,
            vec![op("set", &k("r3"), Some(b"x"))],
            vec![],
            None::<i64>,
            None::<Vec<paxoskv::front::generated::KeyRange>>,
        ))
        .unwrap();
    assert_eq!(r.error_code.as_deref(), Some("CONFLICT"), "{r:?}");
    assert!(
        c.add_read_conflict(AddReadConflictRequest::new(k("r1"), None::<String>))
            .unwrap()
            .success
    );
    let r = c
        .atomic_commit(AtomicCommitRequest::new(
            rv,
            vec![op("set", &k("r3"), Some(b"x"))],
            vec![],
            None::<i64>,
            None::<Vec<paxoskv::front::generated::KeyRange>>,
        ))
        .unwrap();
    assert_eq!(r.error_code.as_deref(), Some("CONFLICT"), "{r:?}");
    let r = c
        .atomic_commit(AtomicCommitRequest::new(
            rv,
            vec![op("set", &k("r3"), Some(b"x"))],
            vec![],
            None::<i64>,
            None::<Vec<paxoskv::front::generated::KeyRange>>,
        ))
        .unwrap();
    assert!(
        r.success,
        "registered conflicts are consumed by one commit: {r:?}"
    );
    let r = c
        .set_read_version(SetReadVersionRequest::new(i64::MAX))
        .unwrap();
    assert!(!r.success);
}

fn check_range_reads_follow_the_selector_rules(c: &mut Client, k: Key) {
    for i in 0..5u8 {
        set(c, &k(&format!("range/{i}")), &[b'0' + i]);
    }
    let rv = c
        .get_read_version(GetReadVersionRequest::new())
        .unwrap()
        .read_version;
    set(c, &k("range/5"), b"5");
    let range = |begin: &str, end: &str, limit: Option<i32>| {
        GetRangeRequest::new(
            k(begin),
            k(end),
            None::<i32>,
            None::<bool>,
            None::<i32>,
            None::<bool>,
            limit,
            None::<String>,
        )
    };
    let r = c.get_range(range("range/", "range/~", None)).unwrap();
    assert!(r.success);
    assert_eq!(r.key_values.len(), 6);
    assert!(!r.has_more);
    let r = c.get_range(range("range/", "range/~", Some(6))).unwrap();
    assert_eq!(r.key_values.len(), 6);
    assert!(!r.has_more, "exactly limit keys exist");
    let r = c.get_range(range("range/", "range/~", Some(2))).unwrap();
    assert_eq!(r.key_values.len(), 2);
    assert!(r.has_more);
    assert_eq!(r.key_values[0].key, k("range/0"));
    let mut req = range("range/1", "range/3", None);
    req.end_or_equal = Some(true);
    req.begin_or_equal = Some(false);
    let keys: Vec<_> = c
        .get_range(req)
        .unwrap()
        .key_values
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, vec![k("range/2"), k("range/3")]);
    let r = c
        .snapshot_get_range(SnapshotGetRangeRequest::new(
            k("range/"),
            k("range/~"),
            None::<i32>,
            None::<bool>,
            None::<i32>,
            None::<bool>,
            rv,
            None::<i32>,
            None::<String>,
        ))
        .unwrap();
    assert!(r.success);
    assert_eq!(r.key_values.len(), 5, "the snapshot does not see range/5");
}

fn check_versionstamps_carry_the_commit_version_and_order(c: &mut Client, k: Key) {
    let r = c
        .set_versionstamped_key(SetVersionstampedKeyRequest::new(
            k("vs/0123456789"),
            b"v".to_vec(),
            None::<String>,
        ))
        .unwrap();
    assert!(r.success, "{r:?}");
    assert_eq!(r.generated_key.len(), k("vs/0123456789").len());
    assert_eq!(get(c, &r.generated_key), Some(b"v".to_vec()));
    let r = c
        .set_versionstamped_value(SetVersionstampedValueRequest::new(
            k("vsv"),
            b"pre:0123456789".to_vec(),
            None::<String>,
        ))
        .unwrap();
    assert!(r.success);
    assert_eq!(&r.generated_value[..4], b"pre:");
    assert_eq!(get(c, &k("vsv")), Some(r.generated_value.clone()));
    let r = c
        .set_versionstamped_key(SetVersionstampedKeyRequest::new(
            b"short".to_vec(),
            b"v".to_vec(),
            None::<String>,
        ))
        .unwrap();
    assert!(!r.success);
    assert!(r.error.unwrap().contains("INVALID_ARGUMENT"));
}

fn check_interactive_transactions_begin_commit_and_abort(c: &mut Client, k: Key) {
    let t = c
        .begin_transaction(BeginTransactionRequest::new(None::<i64>, None::<i64>))
        .unwrap();
    assert!(t.success);
    let t2 = c
        .begin_transaction(BeginTransactionRequest::new(t.read_version, None::<i64>))
        .unwrap();
    let r = c
        .commit_transaction(CommitTransactionRequest::new(
            t.transaction_id.clone(),
            vec![op("set", &k("itx"), Some(b"1"))],
            vec![k("itx")],
            None::<Vec<KeyRange>>,
        ))
        .unwrap();
    assert!(r.success, "{r:?}");
    let r = c
        .commit_transaction(CommitTransactionRequest::new(
            t2.transaction_id.clone(),
            vec![op("set", &k("other"), Some(b"2"))],
            None::<Vec<Vec<u8>>>,
            vec![KeyRange::new(k("itw"), k("ity"), None::<String>)],
        ))
        .unwrap();
    assert_eq!(r.error_code.as_deref(), Some("CONFLICT"), "{r:?}");
    let t3 = c
        .begin_transaction(BeginTransactionRequest::new(None::<i64>, None::<i64>))
        .unwrap();
    assert!(
        c.abort_transaction(AbortTransactionRequest::new(t3.transaction_id.clone()))
            .unwrap()
            .success
    );
    assert!(
        !c.abort_transaction(AbortTransactionRequest::new(t3.transaction_id))
            .unwrap()
            .success
    );
}

fn check_diagnostics_answer_without_a_token_by_default(c: &mut Client, k: Key) {
    // Counted work to report.
    set(c, &k("d"), b"1");
    get(c, &k("d"));
    let h = c
        .get_cluster_health(GetClusterHealthRequest::new(None::<String>))
        .unwrap();
    assert!(h.success);
    let health = h.cluster_health.unwrap();
    assert!(health.total_nodes_count >= 1);
    assert!(health.leader.is_some());
    let s = c
        .get_database_stats(GetDatabaseStatsRequest::new(None::<String>, true))
        .unwrap();
    assert!(s.success);
    let stats = s.database_stats.unwrap();
    assert!(stats.write_operations_count > 0 && stats.read_operations_count > 0);
    let n = c
        .get_node_info(GetNodeInfoRequest::new(None::<String>, None::<i32>))
        .unwrap();
    assert!(n.success && n.node_info.unwrap().is_leader);
}

fn check_fault_injection_is_refused_unless_enabled(c: &mut Client, _k: Key) {
    let f = c
        .set_fault_injection(FaultInjectionRequest::new(
            "error".to_string(),
            thrift::OrderedFloat::from(1.0),
            None::<i32>,
            None::<String>,
            None::<String>,
        ))
        .unwrap();
    assert!(!f.success);
}

#[test]
fn limits_and_admin_token() {
    let server = Server::start(&["--admin-token", "sesame", "--enable-fault-injection"]);
    let mut c = server.client();
    let big_key = vec![b'k'; 20_000];
    let r = c
        .set_key(SetKeyRequest::new(big_key, b"v".to_vec(), None::<String>))
        .unwrap();
    assert!(!r.success);
    assert_eq!(r.error_code.as_deref(), Some("TOO_LARGE"));
    let h = c
        .get_cluster_health(GetClusterHealthRequest::new(None::<String>))
        .unwrap();
    assert!(!h.success);
    let h = c
        .get_cluster_health(GetClusterHealthRequest::new("sesame".to_string()))
        .unwrap();
    assert!(h.success);
    // Fault injection, when enabled, really fails the targeted method (with an admin token
    // configured it needs the token, like the diagnostics).
    let f = c
        .set_fault_injection(FaultInjectionRequest::new(
            "error".to_string(),
            thrift::OrderedFloat::from(1.0),
            None::<i32>,
            "setKey".to_string(),
            "sesame".to_string(),
        ))
        .unwrap();
    assert!(f.success, "{f:?}");
    let r = c
        .set_key(SetKeyRequest::new(
            b"f".to_vec(),
            b"v".to_vec(),
            None::<String>,
        ))
        .unwrap();
    assert_eq!(r.error_code.as_deref(), Some("UNAVAILABLE"));
    let g = c
        .get(GetRequest::new(b"f".to_vec(), None::<String>))
        .unwrap();
    assert!(
        !g.found,
        "a write refused by an injected fault was applied anyway"
    );
    assert!(
        c.set_fault_injection(FaultInjectionRequest::new(
            "clear".to_string(),
            None,
            None::<i32>,
            None::<String>,
            "sesame".to_string()
        ))
        .unwrap()
        .success
    );
    assert!(
        c.set_key(SetKeyRequest::new(
            b"f".to_vec(),
            b"v".to_vec(),
            None::<String>
        ))
        .unwrap()
        .success
    );
}

#[test]
fn acknowledged_writes_survive_kill_and_restart() {
    let mut server = Server::start(&[]);
    let mut c = server.client();
    for i in 0..200u32 {
        set(&mut c, format!("durable/{i}").as_bytes(), &i.to_le_bytes());
    }
    drop(c);
    server.restart();
    let mut c = server.client();
    for i in 0..200u32 {
        assert_eq!(
            get(&mut c, format!("durable/{i}").as_bytes()),
            Some(i.to_le_bytes().to_vec()),
            "key {i}"
        );
    }
}
