//! `ReplicatedKvStore` as a library: new → start → wait for a primary → execute operations →
//! health → shutdown, then a restart on the same directories that still has the data.

use std::time::Duration;

use bytes::Bytes;
use paxoskv::cluster::ReplicatedKvStore;
use paxoskv::config::ReplicatedConfig;
use paxoskv::txn::{Command, Outcome, WriteOp};
use paxoskv::types::Version;

fn config(dir: &std::path::Path) -> ReplicatedConfig {
    let mut c = ReplicatedConfig::default();
    c.network.base_tcp_port = 0;
    c.metrics.enabled = false;
    c.storage.db_base_path = dir.join("data");
    c.storage.wal_path = dir.join("wal");
    c
}

fn set(k: &str, v: &str) -> Command {
    Command::blind(vec![WriteOp::Set {
        cf: String::new(),
        key: Bytes::copy_from_slice(k.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
    }])
}

#[test]
fn library_lifecycle_and_restart() {
    lifecycle_and_restart(true, false);
}

/// The same with an apply thread per replica first, then applying on the executors.
#[test]
fn library_lifecycle_and_restart_with_apply_threads() {
    lifecycle_and_restart(false, true);
}

/// `storage.apply_on_executor` before and after the restart.
fn lifecycle_and_restart(before: bool, after: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.storage.apply_on_executor = before;
    let mut store = ReplicatedKvStore::new(cfg).unwrap();
    store.start().unwrap();
    let primary = store
        .wait_for_primary(Duration::from_secs(30))
        .expect("a primary is elected");
    assert!(primary < 3);
    assert_eq!(store.primary_replica(), Some(primary));
    let mut last = Version(0);
    for i in 0..20 {
        match store
            .execute_operation(set(&format!("lib{i}"), &format!("v{i}")))
            .unwrap()
        {
            Outcome::Committed { version, .. } => {
                assert!(version > last, "versions strictly increase");
                last = version;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(store.is_healthy());
    // Every local replica's store converges on the same applied version.
    let replicas = store.local_replicas();
    assert_eq!(replicas.len(), 3);
    let started = std::time::Instant::now();
    while replicas.iter().any(|r| r.reader.last_version() < last) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replicas never converged"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for r in &replicas {
        assert_eq!(
            r.reader.get_latest("", b"lib19").unwrap(),
            Some(Bytes::from_static(b"v19"))
        );
    }
    drop(replicas);
    store.shutdown();

    let mut cfg = config(dir.path());
    cfg.storage.apply_on_executor = after;
    let mut store = ReplicatedKvStore::new(cfg).unwrap();
    store.start().unwrap();
    store
        .wait_for_primary(Duration::from_secs(30))
        .expect("a primary after restart");
    let Outcome::Committed { version, .. } =
        store.execute_operation(set("after", "restart")).unwrap()
    else {
        panic!("write after restart failed");
    };
    assert!(version > last, "versions keep increasing across a restart");
    let r = &store.local_replicas()[0];
    assert_eq!(
        r.reader.get_latest("", b"lib0").unwrap(),
        Some(Bytes::from_static(b"v0"))
    );
    store.shutdown();
}

/// Disk faults, one at a time: the replica that hits one stops cleanly, the two others carry
/// on, and after a restart on the same directories the stopped replica recovers everything.
#[test]
fn a_disk_fault_stops_that_replica_the_others_carry_on_and_it_recovers_after_restart() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    type Hook = fn(&paxoskv::cluster::shared::ReplicaShared) -> &AtomicBool;
    let faults: [(&str, Hook); 3] = [
        ("failed WAL fdatasync (EIO)", |s| &s.inject_wal_failure),
        ("WAL append on a full disk (ENOSPC)", |s| {
            &s.inject_wal_append_failure
        }),
        ("RocksDB write error in apply", |s| &s.inject_store_failure),
    ];
    for (what, hook) in faults {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ReplicatedKvStore::new(config(dir.path())).unwrap();
        store.start().unwrap();
        let primary = store.wait_for_primary(Duration::from_secs(30)).unwrap();
        store.execute_operation(set("before", "1")).unwrap();
        let victim = (primary + 1) % 3;
        let replicas = store.local_replicas();
        hook(&replicas[victim as usize].shared).store(true, SeqCst);
        // The next writes reach the victim's WAL and store; it stops on the fault.
        for i in 0..20 {
            let o = store
                .execute_operation(set(&format!("during{i}"), "x"))
                .unwrap();
            assert!(matches!(o, Outcome::Committed { .. }), "{what}: {o:?}");
        }
        let started = std::time::Instant::now();
        while replicas[victim as usize].shared.is_running() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what}: the replica kept running"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!store.is_healthy(), "{what}: a stopped replica is reported");
        // The two others still form a majority and keep committing.
        let o = store.execute_operation(set("after", "2")).unwrap();
        assert!(matches!(o, Outcome::Committed { .. }), "{what}: {o:?}");
        drop(replicas);
        store.shutdown();

        // Restarted on the same directories, the victim has everything acknowledged.
        let mut store = ReplicatedKvStore::new(config(dir.path())).unwrap();
        store.start().unwrap();
        store.wait_for_primary(Duration::from_secs(30)).unwrap();
        store.execute_operation(set("restarted", "3")).unwrap();
        let replicas = store.local_replicas();
        let r = &replicas[victim as usize];
        let started = std::time::Instant::now();
        while r
            .reader
            .get_latest("", b"restarted")
            .ok()
            .flatten()
            .is_none()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what}: the victim did not catch up after a restart"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for k in ["before", "after", "during0", "during19"] {
            assert!(
                r.reader.get_latest("", k.as_bytes()).unwrap().is_some(),
                "{what}: the victim lost {k}"
            );
        }
        drop(replicas);
        store.shutdown();
    }
}

/// In `serve` the Thrift front runs on replica 0's executor. A fatal error of replica 0 stops
/// the replica, not the executor: the front keeps answering through the two others.
#[path = "common/mod.rs"]
mod common;

#[test]
fn the_front_outlives_the_replica_whose_executor_hosts_it() {
    use paxoskv::front::generated::{SetKeyRequest, TTransactionalKVSyncClient};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.thrift.port = 0;
    let mut store = ReplicatedKvStore::new(cfg.clone()).unwrap();
    store.start().unwrap();
    store.wait_for_primary(Duration::from_secs(30)).unwrap();
    let host = paxoskv::front::FrontHost::Guest(store.front_spawner().unwrap());
    let front = paxoskv::front::start_front(
        cfg.thrift.clone(),
        cfg.metrics.clone(),
        host,
        store.service_factory(),
        paxoskv::front::FrontHelper::on_each(store.helper_spawners(), || store.service_factory()),
    )
    .unwrap();
    let mut c = common::client(front.addr, false);
    let put = |c: &mut common::Client, k: &str| {
        let r = c
            .set_key(SetKeyRequest::new(
                k.as_bytes().to_vec(),
                b"v".to_vec(),
                None::<String>,
            ))
            .unwrap();
        (r.success, r.error)
    };
    assert_eq!(put(&mut c, "before"), (true, None));
    let replicas = store.local_replicas();
    replicas[0]
        .shared
        .inject_wal_failure
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let mut i = 0;
    while replicas[0].shared.is_running() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica 0 kept running after a failed sync"
        );
        let _ = put(&mut c, &format!("during{i}"));
        i += 1;
    }
    // Replica 0 is down; the front on its executor still serves, through the majority left.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match put(&mut c, "after") {
            (true, _) => break,
            (false, e) => assert!(
                std::time::Instant::now() < deadline,
                "the front stopped serving after replica 0 stopped: {e:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(replicas);
    store.shutdown();
}

#[test]
fn writes_are_refused_while_the_store_lags_the_log_beyond_its_bound() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.consensus.max_apply_lag_slots = 4;
    let mut store = ReplicatedKvStore::new(cfg).unwrap();
    store.start().unwrap();
    let primary = store.wait_for_primary(Duration::from_secs(30)).unwrap();
    store.execute_operation(set("before", "1")).unwrap();
    let replicas = store.local_replicas();
    let shared = replicas[primary as usize].shared.clone();
    shared.pause_apply.store(true, SeqCst);
    let store = std::sync::Arc::new(store);
    let mut writers = Vec::new();
    for i in 0..12 {
        let s = store.clone();
        writers.push(std::thread::spawn(move || {
            s.execute_operation(set(&format!("k{i}"), "v"))
        }));
        // Apart enough that each write gets a slot of its own.
        std::thread::sleep(Duration::from_millis(30));
    }
    shared.pause_apply.store(false, SeqCst);
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let refused = results
        .iter()
        .filter(|r| {
            r.as_ref().is_err_and(|e| {
                e.code == paxoskv::service::ErrorCode::Unavailable
                    && e.message.contains("max_apply_lag_slots")
            })
        })
        .count();
    let committed = results
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::Committed { .. })))
        .count();
    assert!(
        refused >= 1,
        "nothing refused while apply lagged: {results:?}"
    );
    assert!(
        committed >= 4,
        "writes within the bound wait and commit: {results:?}"
    );
    assert_eq!(refused + committed, results.len(), "{results:?}");
    drop(replicas);
    if let Ok(store) = std::sync::Arc::try_unwrap(store) {
        store.shutdown();
    }
}

/// A commit's own timeout is the replica's deadline for it: with consensus.commit_timeout at
/// 1 s and the primary cut off from its peers for 2.5 s (elections are slower than that here),
/// a write without a timeout gets TIMEOUT while one allowed 8 s commits once the links heal
/// (before, every write was cut at consensus.commit_timeout).
#[test]
fn a_commit_waits_for_its_own_timeout_not_the_default() {
    use futures_channel::oneshot;
    use paxoskv::cluster::ClientMsg;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.consensus.commit_timeout = Duration::from_secs(1);
    cfg.consensus.election_timeout_min = Duration::from_secs(5);
    let mut store = ReplicatedKvStore::new(cfg).unwrap();
    store.start().unwrap();
    let primary = store.wait_for_primary(Duration::from_secs(30)).unwrap();
    store.execute_operation(set("before", "1")).unwrap();
    let replicas = store.local_replicas();
    let r = &replicas[primary as usize];
    r.shared.faults.isolate(true);
    let propose = |k: &str, timeout: Option<Duration>| {
        let (tx, rx) = oneshot::channel();
        r.tx.unbounded_send(ClientMsg::Propose {
            command: set(k, "v").encode_to_bytes(),
            reply: paxoskv::util::reply::Reply::direct(tx),
            timeout,
        })
        .unwrap();
        rx
    };
    let default = propose("default", None);
    let patient = propose("patient", Some(Duration::from_secs(8)));
    std::thread::sleep(Duration::from_millis(2500));
    r.shared.faults.isolate(false);
    let d = futures_lite::future::block_on(default).unwrap();
    assert!(
        d.as_ref()
            .is_err_and(|e| e.code == paxoskv::service::ErrorCode::Timeout),
        "{d:?}"
    );
    let p = futures_lite::future::block_on(patient).unwrap();
    assert!(matches!(p, Ok(Outcome::Committed { .. })), "{p:?}");
    drop(replicas);
    store.shutdown();
}

/// A graceful stop does not wait for an apply backlog: committed slots not yet applied stay in
/// the Paxos WAL, and the next start applies them. Here apply is held back on every replica
/// while writes commit, so a stop that waited for the backlog would never return.
#[test]
fn a_stop_leaves_the_apply_backlog_to_the_wal_and_the_restart_applies_it() {
    use std::sync::atomic::Ordering::SeqCst;
    for on_executor in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.storage.apply_on_executor = on_executor;
        let mut store = ReplicatedKvStore::new(cfg).unwrap();
        store.start().unwrap();
        let primary = store.wait_for_primary(Duration::from_secs(30)).unwrap();
        store.execute_operation(set("before", "1")).unwrap();
        let replicas = store.local_replicas();
        for r in &replicas {
            r.shared.pause_apply.store(true, SeqCst);
        }
        let r = &replicas[primary as usize];
        let commands_before = r.shared.commands.load(SeqCst);
        // Proposed straight to the primary: their outcomes never come (apply is held back).
        let outcomes: Vec<_> = (0..8)
            .map(|i| {
                let (tx, rx) = futures_channel::oneshot::channel();
                r.tx.unbounded_send(paxoskv::cluster::ClientMsg::Propose {
                    command: set(&format!("lag{i}"), "v").encode_to_bytes(),
                    reply: paxoskv::util::reply::Reply::direct(tx),
                    timeout: Some(Duration::from_secs(60)),
                })
                .unwrap();
                rx
            })
            .collect();
        // Every write committed (the primary counted it chosen), none applied.
        let started = std::time::Instant::now();
        while r.shared.commands.load(SeqCst) < commands_before + 8 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the writes never committed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for r in &replicas {
            for i in 0..8 {
                let got = r
                    .reader
                    .get_latest("", format!("lag{i}").as_bytes())
                    .unwrap();
                assert_eq!(got, None, "replica {} applied lag{i} while paused", r.id);
            }
        }
        drop(replicas);
        // The stop returns although apply is still held back (a hang fails the test).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            store.shutdown();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the stop waited for the apply backlog");
        drop(outcomes);

        let mut store = ReplicatedKvStore::new(config(dir.path())).unwrap();
        store.start().unwrap();
        store.wait_for_primary(Duration::from_secs(30)).unwrap();
        for r in &store.local_replicas() {
            for i in 0..8 {
                let key = format!("lag{i}");
                let started = std::time::Instant::now();
                while r.reader.get_latest("", key.as_bytes()).unwrap() != Some(Bytes::from("v")) {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "replica {}: {key}, committed before the stop, is missing after it",
                        r.id
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        store.shutdown();
    }
}
