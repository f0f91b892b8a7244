//! `paxoskv serve`: three replicas in one process. Writes reach every replica's store (checked
//! offline with `paxoskv inspect` after a graceful SIGTERM), and a partitioned primary is
//! replaced while the front keeps serving.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{http_get, Server};
use paxoskv::front::generated::*;

/// Writes k0..kn = v0..vn, each acknowledged.
fn set_keys(c: &mut common::Client, n: usize) {
    for i in 0..n {
        let r = c
            .set_key(SetKeyRequest::new(
                format!("k{i}").into_bytes(),
                format!("v{i}").into_bytes(),
                None::<String>,
            ))
            .unwrap();
        assert!(r.success, "{r:?}");
    }
}

#[test]
fn writes_reach_all_three_replicas_and_sigterm_exits_cleanly() {
    let mut server = Server::start(&[]);
    let mut c = server.client();
    set_keys(&mut c, 50);
    // Healthy once every replica votes (one that missed the first election rebuilds first).
    let started = Instant::now();
    loop {
        let h = c
            .get_cluster_health(GetClusterHealthRequest::new(None::<String>))
            .unwrap()
            .cluster_health
            .unwrap();
        assert_eq!(h.total_nodes_count, 3);
        if h.cluster_status == "healthy" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{h:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Followers learn the commit index from the next heartbeat: wait until every replica has
    // applied as far as the furthest one (no fixed sleep).
    let addr = server.metrics_addr.expect("metrics address");
    let started = Instant::now();
    loop {
        let (_, body) = http_get(addr, "/metrics");
        let applied: Vec<u64> = (0..3)
            .filter_map(|i| {
                let key = format!("paxoskv_replica_applied_index{{replica=\"{i}\"}} ");
                body.lines()
                    .find_map(|l| l.strip_prefix(key.as_str()))
                    .and_then(|v| v.trim().parse().ok())
            })
            .collect();
        if applied.len() == 3 && applied.iter().all(|&a| a > 0 && a == applied[0]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replicas did not converge: {applied:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_paxoskv"))
        .args(["inspect", "--data-dir"])
        .arg(server.dir.path().join("data"))
        .args(["--key", "k49"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for l in lines {
        assert!(l.contains("k49=v49"), "a replica misses the write: {l}");
    }
}

#[test]
fn partitioned_primary_is_replaced_while_the_front_keeps_serving() {
    let server = Server::start(&["--enable-fault-injection"]);
    let mut c = server.client();
    assert!(
        c.set_key(SetKeyRequest::new(
            b"a".to_vec(),
            b"1".to_vec(),
            None::<String>
        ))
        .unwrap()
        .success
    );
    let leader = c
        .get_cluster_health(GetClusterHealthRequest::new(None::<String>))
        .unwrap()
        .cluster_health
        .unwrap()
        .leader
        .unwrap();
    let r = c
        .set_fault_injection(FaultInjectionRequest::new(
            "partition".to_string(),
            None,
            None::<i32>,
            format!("replica:{}", leader.node_id),
            None::<String>,
        ))
        .unwrap();
    assert!(r.success, "{r:?}");
    let started = Instant::now();
    loop {
        let r = c
            .set_key(SetKeyRequest::new(
                b"b".to_vec(),
                b"2".to_vec(),
                None::<String>,
            ))
            .unwrap();
        if r.success {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no new primary: {r:?}"
        );
    }
    eprintln!(
        "failover after partitioning the primary: {:?}",
        started.elapsed()
    );
    let h = c
        .get_cluster_health(GetClusterHealthRequest::new(None::<String>))
        .unwrap()
        .cluster_health
        .unwrap();
    assert_ne!(h.leader.map(|l| l.node_id), Some(leader.node_id));
    let r = c
        .get(GetRequest::new(b"a".to_vec(), None::<String>))
        .unwrap();
    assert_eq!(r.value, b"1");
    assert!(
        c.set_fault_injection(FaultInjectionRequest::new(
            "heal".to_string(),
            None,
            None::<i32>,
            format!("replica:{}", leader.node_id),
            None::<String>
        ))
        .unwrap()
        .success
    );
    assert!(
        c.set_key(SetKeyRequest::new(
            b"c".to_vec(),
            b"3".to_vec(),
            None::<String>
        ))
        .unwrap()
        .success
    );
}

#[test]
fn metrics_endpoint_reports_requests_and_replicas() {
    let server = Server::start(&[]);
    let mut c = server.client();
    for i in 0..20 {
        assert!(
            c.set_key(SetKeyRequest::new(
                format!("m{i}").into_bytes(),
                b"v".to_vec(),
                None::<String>
            ))
            .unwrap()
            .success
        );
    }
    let r = c
        .get(GetRequest::new(b"m1".to_vec(), None::<String>))
        .unwrap();
    assert!(r.found);
    let addr = server
        .metrics_addr
        .expect("the server reports its metrics address");
    let (status, body) = http_get(addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains("paxoskv_requests_total{method=\"setKey\",result=\"OK\"} 20"),
        "{body}"
    );
    assert!(
        body.contains("paxoskv_request_latency_seconds_count{method=\"get\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("paxoskv_replica_is_primary{replica="),
        "{body}"
    );
    let primaries = body
        .lines()
        .filter(|l| l.starts_with("paxoskv_replica_is_primary{") && l.ends_with(" 1"))
        .count();
    assert_eq!(primaries, 1, "{body}");
    // Every WAL group commit lands in one bucket of the duration histogram.
    assert!(
        body.contains("paxoskv_replica_wal_sync_seconds_bucket{replica=\"0\",le=\"0.0001\"}"),
        "{body}"
    );
    let (syncs, in_inf) = histogram_totals(&body, "paxoskv_replica_wal_sync_seconds");
    assert!(syncs > 0 && syncs == in_inf, "{syncs} {in_inf}: {body}");
    // The writes were timed: proposed to chosen on the primary, Accept to Accepted on the
    // acceptors.
    let (chosen, chosen_inf) = histogram_totals(&body, "paxoskv_replica_slot_commit_seconds");
    assert!(
        chosen > 0 && chosen == chosen_inf,
        "{chosen} {chosen_inf}: {body}"
    );
    let (answered, answered_inf) = histogram_totals(&body, "paxoskv_replica_accept_seconds");
    assert!(
        answered > 0 && answered == answered_inf,
        "{answered} {answered_inf}: {body}"
    );
    // Once the primary holds a lease (a heartbeat round after its election), gets are served
    // under it without a step of its core, and still see the writes.
    let lease_reads = |body: &str| sum_of_lines(body, "paxoskv_replica_lease_reads_total");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = c
            .get(GetRequest::new(b"m19".to_vec(), None::<String>))
            .unwrap();
        assert!(r.found);
        let (_, body) = http_get(addr, "/metrics");
        if lease_reads(&body) > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no read served under the lease: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The primary's store keeps the latest version of what it applied: those gets were
    // answered without a RocksDB iterator.
    let (_, body) = http_get(addr, "/metrics");
    assert!(
        sum_of_lines(&body, "paxoskv_store_latest_cache_hits_total") > 0,
        "{body}"
    );
    assert!(
        sum_of_lines(&body, "paxoskv_store_latest_cache_bytes") > 0,
        "{body}"
    );
    // Every heartbeat tick (100 ms) records how late its timer fired.
    let (ticks, ticks_in_inf) = histogram_totals(&body, "paxoskv_replica_timer_lag_seconds");
    assert!(
        ticks > 0 && ticks == ticks_in_inf,
        "{ticks} {ticks_in_inf}: {body}"
    );
    let (status, body) = http_get(addr, "/health");
    assert!(
        status.contains("200") && body.contains("ok"),
        "{status} {body}"
    );
    let (status, _) = http_get(addr, "/nope");
    assert!(status.contains("404"), "{status}");
}

#[test]
fn wal_segments_are_released_once_every_replica_applied() {
    // 1 MiB segments and ~6 MiB of writes: without retention each replica keeps 6+ segments.
    let server = Server::start_with_config(
        "[consensus]\nmax_batch_bytes = 131072\n[storage]\nwal_segment_bytes = 1048576\n\
         [thrift]\nmax_message_bytes = 262144\nmax_value_bytes = 131072\n",
        &[],
    );
    let mut c = server.client();
    let value = vec![7u8; 32 << 10];
    for i in 0..200 {
        let r = c
            .set_key(SetKeyRequest::new(
                format!("big{i}").into_bytes(),
                value.clone(),
                None::<String>,
            ))
            .unwrap();
        assert!(r.success, "{r:?}");
    }
    let count = |id: u32| {
        std::fs::read_dir(server.dir.path().join(format!("wal/replica_{id}")))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".wal")
            })
            .count()
    };
    let created: usize = (0..3).map(count).max().unwrap();
    let started = Instant::now();
    loop {
        let counts: Vec<usize> = (0..3).map(count).collect();
        if counts.iter().all(|&n| n <= 2) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "segments never released: {counts:?} (max seen {created})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Everything is still readable, through the consensus path.
    let r = c
        .get(GetRequest::new(b"big0".to_vec(), None::<String>))
        .unwrap();
    assert_eq!(r.value.len(), 32 << 10);
}

#[test]
fn sigterm_drains_requests_in_flight_before_exiting() {
    let mut server = Server::start(&["--enable-fault-injection"]);
    let mut c = server.client();
    // Every setKey waits 800 ms before it is served: it is in flight when SIGTERM arrives.
    common::delay_every(&mut c, "setKey", 800);
    let addr = server.addr;
    let writer = std::thread::spawn(move || {
        let mut slow = common::client(addr, false);
        slow.set_key(SetKeyRequest::new(
            b"late".to_vec(),
            b"v".to_vec(),
            None::<String>,
        ))
    });
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let reply = writer
        .join()
        .unwrap()
        .expect("the request in flight is answered");
    assert!(reply.success, "{reply:?}");
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}");
    // The listener closed first: no new connection is accepted.
    assert!(std::net::TcpStream::connect(server.addr).is_err());
}

/// RocksDB keeps no WAL (the Paxos WAL is the log): a SIGKILL loses every memtable, and the
/// replicas must rebuild what they acknowledged from their Paxos WALs. The flush interval is an
/// hour, so nothing acknowledged here ever reached RocksDB's files before the kill (checked
/// with `inspect`, so the test cannot pass by RocksDB keeping the data itself).
#[test]
fn sigkill_before_any_memtable_flush_loses_no_acknowledged_write() {
    let mut server =
        Server::start_with_config("[storage]\nmemtable_flush_interval = \"1h\"\n", &[]);
    let keys = 200;
    set_keys(&mut server.client(), keys);
    let _ = server.child.kill();
    let _ = server.child.wait();
    let out = Command::new(env!("CARGO_BIN_EXE_paxoskv"))
        .args(["inspect", "--data-dir"])
        .arg(server.dir.path().join("data"))
        .args(["--key", "k0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    for l in text.lines() {
        assert!(
            l.contains("k0=<absent>"),
            "the store kept a write without a flush, so this test proves nothing: {l}"
        );
    }
    server.restart();
    // Request ids of the new run carry a new incarnation, so the replayed slots' requests
    // (ids of the first run) can never be taken for the new run's.
    for r in 0..3 {
        let f = server
            .dir
            .path()
            .join(format!("wal/replica_{r}/incarnation"));
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(text.trim(), "2", "{}", f.display());
    }
    let mut c = server.client();
    for i in 0..keys {
        let deadline = Instant::now() + Duration::from_secs(20);
        let r = loop {
            let r = c
                .get(GetRequest::new(
                    format!("k{i}").into_bytes(),
                    None::<String>,
                ))
                .unwrap();
            // Right after the restart a read may find no primary yet: retry until the deadline.
            if r.error.is_none() || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            r.found && r.value == format!("v{i}").into_bytes(),
            "acknowledged write k{i} lost in a crash with unflushed memtables: {r:?}"
        );
    }
}

/// The sum of every sample of `metric` (all label sets).
fn sum_of_lines(body: &str, metric: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A histogram's count and its +Inf bucket, summed over every replica.
fn histogram_totals(body: &str, name: &str) -> (u64, u64) {
    let inf = body
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")) && l.contains("le=\"+Inf\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    (sum_of_lines(body, &format!("{name}_count")), inf)
}

/// The nice value of each of `pid`'s threads whose name starts with `prefix`.
fn thread_nices(pid: u32, prefix: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, nice field 19.
        let after = stat.rsplit_once(") ").map(|(_, a)| a).unwrap_or("");
        if let Some(n) = after.split(' ').nth(16).and_then(|n| n.parse().ok()) {
            out.push(n);
        }
    }
    out
}

#[test]
fn rocksdb_flush_threads_run_at_the_lowest_priority_unless_turned_off() {
    let flush = "[storage]\nmemtable_flush_interval = \"100ms\"\n";
    for (extra, want) in [("", 19), ("background_low_priority = false\n", 0)] {
        let server = Server::start_with_config(&format!("{flush}{extra}"), &[]);
        let mut c = server.client();
        set_keys(&mut c, 20);
        // RocksDB sets a pool thread's priority when the thread runs its next job: the periodic
        // memtable flush (every 100 ms here) runs on the flush thread.
        let started = Instant::now();
        loop {
            let nices = thread_nices(server.child.id(), "rocksdb:high");
            let settled = started.elapsed() > Duration::from_millis(500);
            if settled && !nices.is_empty() && nices.iter().all(|&n| n == want) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "flush threads' nice values {nices:?}, want {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
