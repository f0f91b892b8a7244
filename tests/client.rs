//! The client library against a real `paxoskv serve` and a 3-process `node` cluster: every
//! call, transactions (own writes, conflicts on keys and ranges, `transact` under contention),
//! pipelining, the retry policy, and failover while a workload runs.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nodes::Cluster;
use common::Server;
use paxoskv::client::{prefix_end, Client, Config, Error};
use paxoskv::front::generated::{FaultInjectionRequest, TTransactionalKVSyncClient};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn config(addrs: &[std::net::SocketAddr]) -> Config {
    Config::new(addrs.iter().map(|a| a.to_string()))
}

/// Every plain call, against whatever `c` reaches.
async fn exercise_every_call(c: &Client) {
    // set / get / delete
    assert_eq!(c.get(b"absent").await.unwrap(), None);
    c.set(b"k", b"v1").await.unwrap();
    assert_eq!(c.get(b"k").await.unwrap(), Some(b"v1".to_vec()));
    let before = c.read_version().await.unwrap();
    assert!(before > 0);
    c.set(b"k", b"v2").await.unwrap();
    assert!(c.committed_version().await.unwrap() > before);
    // A snapshot read at the older version sees the older value.
    assert_eq!(
        c.snapshot_get(b"k", before).await.unwrap(),
        Some(b"v1".to_vec())
    );
    c.delete(b"k").await.unwrap();
    assert_eq!(c.get(b"k").await.unwrap(), None);
    c.delete(b"k").await.unwrap(); // deleting an absent key succeeds

    // Column families are separate key spaces.
    let other = c.in_cf("other");
    other.set(b"shared", b"in-other").await.unwrap();
    assert_eq!(c.get(b"shared").await.unwrap(), None);
    assert_eq!(
        other.get(b"shared").await.unwrap(),
        Some(b"in-other".to_vec())
    );

    // Ranges: one page with has_more, and scans that page and follow has_more.
    for i in 0..10u8 {
        c.set([b'r', b'/', b'0' + i], [i]).await.unwrap();
    }
    let page = c.get_range(b"r/", prefix_end(b"r/"), 4).await.unwrap();
    assert_eq!(page.pairs.len(), 4);
    assert!(page.has_more);
    assert_eq!(page.pairs[0], (b"r/0".to_vec(), vec![0]));
    let all = c.scan_prefix(b"r/").collect().await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "scan out of order");
    let rv = c.read_version().await.unwrap();
    c.set(b"r/5", b"changed").await.unwrap();
    let at_rv = c
        .scan_prefix(b"r/")
        .at_version(rv)
        .limit(7)
        .collect()
        .await
        .unwrap();
    assert_eq!(at_rv.len(), 7);
    assert_eq!(
        at_rv[5],
        (b"r/5".to_vec(), vec![5]),
        "the scan saw a later write"
    );
    let snap = c.snapshot_get_range(b"r/", b"r/3", rv, 0).await.unwrap();
    assert_eq!(snap.pairs.len(), 3);
    assert!(!snap.has_more);
    use futures_lite::StreamExt;
    let streamed: Vec<_> = c.scan_prefix(b"r/").into_stream().collect().await;
    assert_eq!(streamed.len(), 10);
    assert!(streamed.iter().all(|r| r.is_ok()));

    // Versionstamps: the last 10 bytes become version (8) + order (2).
    let key = c
        .set_versionstamped_key(b"vs/..........", b"x")
        .await
        .unwrap();
    assert_eq!(key.len(), 13);
    assert!(key.starts_with(b"vs/"));
    let stamp = i64::from_be_bytes(key[3..11].try_into().unwrap());
    assert!(stamp > rv);
    assert_eq!(c.get(&key).await.unwrap(), Some(b"x".to_vec()));
    let value = c
        .set_versionstamped_value(b"vsv", b"p:..........")
        .await
        .unwrap();
    assert_eq!(c.get(b"vsv").await.unwrap(), Some(value.clone()));
    assert!(value.starts_with(b"p:"));
    // A short buffer is the server's INVALID_ARGUMENT, typed.
    let short = c.set_versionstamped_key(b"short", b"x").await;
    assert!(matches!(short, Err(Error::InvalidArgument(_))), "{short:?}");

    assert!(c.ping().await.unwrap() > 0);

    // Diagnostics (on by default, no token configured).
    let health = c.cluster_health(None).await.unwrap();
    assert!(health.leader.is_some() && health.total_nodes_count == 3);
    assert!(c.database_stats(None).await.unwrap().write_operations_count > 0);
    assert!(c.node_info(None, None).await.unwrap().is_leader);
}

#[test]
fn every_call_against_serve() {
    let server = Server::start(&[]);
    runtime().block_on(async {
        let framed = Client::connect(config(&[server.addr])).await.unwrap();
        exercise_every_call(&framed).await;
        let mut cfg = config(&[server.addr]);
        cfg.framed = false;
        let unframed = Client::connect(cfg).await.unwrap();
        assert_eq!(unframed.get(b"r/0").await.unwrap(), Some(vec![0]));
    });
}

#[test]
fn transactions_read_their_writes_and_conflict_on_keys_and_ranges() {
    let server = Server::start(&[]);
    runtime().block_on(async {
        let c = Client::connect(config(&[server.addr])).await.unwrap();
        c.set(b"a", b"1").await.unwrap();
        c.set(b"p/1", b"one").await.unwrap();

        // Own writes are visible to the transaction's reads, and to its range reads.
        let tx = c.transaction();
        assert_eq!(tx.get(b"a").await.unwrap(), Some(b"1".to_vec()));
        tx.set(b"a", b"2");
        tx.delete(b"p/1");
        tx.set(b"p/2", b"two");
        assert_eq!(tx.get(b"a").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(tx.get(b"p/1").await.unwrap(), None);
        let page = tx.get_range(b"p/", b"p0", 0).await.unwrap();
        assert_eq!(page.pairs, vec![(b"p/2".to_vec(), b"two".to_vec())]);
        assert_eq!(
            c.get(b"a").await.unwrap(),
            Some(b"1".to_vec()),
            "visible before commit"
        );
        let done = tx.commit().await.unwrap();
        assert!(done.version.is_some());
        assert_eq!(c.get(b"a").await.unwrap(), Some(b"2".to_vec()));

        // A key read, then written by someone else: CONFLICT, nothing applied.
        let tx = c.transaction();
        tx.get(b"a").await.unwrap();
        c.set(b"a", b"other").await.unwrap();
        tx.set(b"b", b"from-tx");
        assert!(matches!(tx.commit().await, Err(Error::Conflict(_))));
        assert_eq!(c.get(b"b").await.unwrap(), None);

        // A range read, then a new key inside it: CONFLICT (atomicCommit's ranges).
        let tx = c.transaction();
        tx.get_range(b"q/", b"q0", 0).await.unwrap();
        c.set(b"q/new", b"x").await.unwrap();
        tx.set(b"b", b"from-tx");
        assert!(matches!(tx.commit().await, Err(Error::Conflict(_))));
        // ... and outside it: no conflict.
        let tx = c.transaction();
        tx.get_range(b"q/", b"q0", 0).await.unwrap();
        c.set(b"z", b"x").await.unwrap();
        tx.set(b"b", b"from-tx");
        tx.commit().await.unwrap();

        // A key read in another column family conflicts too.
        let tx = c.transaction().in_cf("cf2");
        tx.get(b"k").await.unwrap();
        c.in_cf("cf2").set(b"k", b"x").await.unwrap();
        tx.set(b"k2", b"y");
        assert!(matches!(tx.commit().await, Err(Error::Conflict(_))));

        // A snapshot read records no conflict.
        let tx = c.transaction();
        tx.snapshot_get(b"a").await.unwrap();
        c.set(b"a", b"again").await.unwrap();
        tx.set(b"c", b"ok");
        tx.commit().await.unwrap();

        // Versionstamps inside a transaction: the committed stamp names the key written.
        let tx = c.transaction();
        tx.set(b"plain", b"p");
        let op = tx.set_versionstamped_key(b"log/..........", b"entry");
        let value_op = tx.set_versionstamped_value(b"latest", b"..........");
        assert!(
            tx.get(b"latest").await.is_err(),
            "a versionstamped value is unreadable"
        );
        let done = tx.commit().await.unwrap();
        let mut key = b"log/".to_vec();
        key.extend_from_slice(&done.versionstamp(op).unwrap());
        assert_eq!(c.get(&key).await.unwrap(), Some(b"entry".to_vec()));
        let stamp = done.versionstamp(value_op).unwrap().to_vec();
        assert_eq!(c.get(b"latest").await.unwrap(), Some(stamp));

        // A read-only transaction sends no commit.
        let tx = c.transaction();
        tx.get(b"a").await.unwrap();
        assert_eq!(tx.commit().await.unwrap().version, None);
    });
}

#[test]
fn transact_counter_under_contention_loses_no_update() {
    const TASKS: u32 = 8;
    const EACH: u32 = 25;
    let server = Server::start(&[]);
    runtime().block_on(async {
        let c = Client::connect(config(&[server.addr])).await.unwrap();
        let runs = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let (c, runs) = (c.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..EACH {
                    c.transact(|tx| {
                        let runs = runs.clone();
                        async move {
                            runs.fetch_add(1, Ordering::Relaxed);
                            let n = tx
                                .get(b"counter")
                                .await?
                                .map_or(0, |v| u32::from_be_bytes(v.try_into().unwrap()));
                            tx.set(b"counter", (n + 1).to_be_bytes());
                            Ok(())
                        }
                    })
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let v = c.get(b"counter").await.unwrap().unwrap();
        assert_eq!(u32::from_be_bytes(v.try_into().unwrap()), TASKS * EACH);
        let runs = runs.load(Ordering::Relaxed);
        assert!(
            runs > TASKS * EACH,
            "no conflict was retried ({runs} runs for {} increments)",
            TASKS * EACH
        );
    });
}

#[test]
fn pipelined_calls_on_one_connection_each_get_their_own_reply() {
    let server = Server::start(&[]);
    runtime().block_on(async {
        let mut cfg = config(&[server.addr]);
        cfg.connections_per_endpoint = 1;
        cfg.max_in_flight_per_connection = 64;
        let c = Client::connect(cfg).await.unwrap();
        let mut writes = Vec::new();
        for i in 0..300u32 {
            let c = c.clone();
            writes.push(tokio::spawn(async move {
                c.set(format!("pipe/{i}"), i.to_string()).await
            }));
        }
        for w in writes {
            w.await.unwrap().unwrap();
        }
        let mut reads = Vec::new();
        for i in 0..300u32 {
            let c = c.clone();
            reads.push(tokio::spawn(async move {
                (i, c.get(format!("pipe/{i}")).await)
            }));
        }
        for r in reads {
            let (i, got) = r.await.unwrap();
            assert_eq!(
                got.unwrap(),
                Some(i.to_string().into_bytes()),
                "reply of another call"
            );
        }
    });
}

#[test]
fn retry_policy_retries_refusals_and_reports_unknown_outcomes() {
    let server = Server::start(&["--enable-fault-injection"]);
    let mut thrift = server.client();
    runtime().block_on(async {
        let mut cfg = config(&[server.addr]);
        cfg.request_timeout = Duration::from_millis(400);
        cfg.backoff_min = Duration::from_millis(20);
        let c = Client::connect(cfg).await.unwrap();
        c.set(b"w", b"0").await.unwrap();

        // Refused without running (UNAVAILABLE) for 300 ms: a write is retried through it.
        let fault = |kind: &str, ms: i32| {
            FaultInjectionRequest::new(
                kind.to_string(),
                thrift::OrderedFloat::from(1.0),
                ms,
                "setKey".to_string(),
                None::<String>,
            )
        };
        assert!(
            thrift
                .set_fault_injection(fault("error", 300))
                .unwrap()
                .success
        );
        let t = Instant::now();
        c.set(b"w", b"1").await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "no refusal was retried"
        );
        assert_eq!(c.get(b"w").await.unwrap(), Some(b"1".to_vec()));

        // Delayed past the client's request timeout: the write may still apply, so the
        // client says so instead of retrying it ...
        assert!(
            thrift
                .set_fault_injection(fault("clear", 0))
                .unwrap()
                .success
        );
        assert!(
            thrift
                .set_fault_injection(fault("delay", 1500))
                .unwrap()
                .success
        );
        let r = c.set(b"w", b"2").await;
        assert!(matches!(r, Err(Error::OutcomeUnknown(_))), "{r:?}");
        // ... and it does apply.
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.get(b"w").await.unwrap() != Some(b"2".to_vec()) {
            assert!(Instant::now() < deadline, "the delayed write never applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            thrift
                .set_fault_injection(fault("clear", 0))
                .unwrap()
                .success
        );
    });
}

#[test]
fn tls_to_the_front_verifies_the_certificate() {
    let certs = tempfile::tempdir().unwrap();
    common::make_certs(certs.path());
    let pem = |f: &str| certs.path().join(f);
    let server = Server::start_with_config(
        &format!(
            "[thrift]\ntls_cert = {:?}\ntls_key = {:?}\n",
            pem("front.pem"),
            pem("front.key")
        ),
        &[],
    );
    let tls = |name: Option<&str>| paxoskv::client::TlsConfig {
        ca_file: pem("ca.pem"),
        server_name: name.map(str::to_string),
    };
    runtime().block_on(async {
        let mut cfg = config(&[server.addr]);
        cfg.tls = Some(tls(None));
        let c = Client::connect(cfg).await.unwrap();
        c.set(b"over-tls", b"yes").await.unwrap();
        assert_eq!(c.get(b"over-tls").await.unwrap(), Some(b"yes".to_vec()));
        let mut unframed = config(&[server.addr]);
        unframed.framed = false;
        unframed.tls = Some(tls(Some("localhost")));
        let u = Client::connect(unframed).await.unwrap();
        assert_eq!(u.get(b"over-tls").await.unwrap(), Some(b"yes".to_vec()));

        // A certificate that does not carry the expected name, or plain TCP to a TLS port,
        // never gets an answer.
        let mut wrong = config(&[server.addr]);
        wrong.tls = Some(tls(Some("other.example")));
        wrong.retry_deadline = Duration::from_millis(300);
        let w = Client::connect(wrong).await.unwrap();
        assert!(matches!(
            w.get(b"over-tls").await,
            Err(Error::Unreachable(_))
        ));
        let mut plain = config(&[server.addr]);
        plain.retry_deadline = Duration::from_millis(300);
        plain.request_timeout = Duration::from_millis(300);
        let p = Client::connect(plain).await.unwrap();
        let e = p.get(b"over-tls").await.unwrap_err();
        assert!(e.to_string().contains("speaks TLS"), "{e}");
    });
}

#[test]
fn no_endpoint_reachable_is_unreachable_within_the_retry_deadline() {
    let port = common::free_port();
    runtime().block_on(async {
        let mut cfg = Config::new([format!("127.0.0.1:{port}")]);
        cfg.retry_deadline = Duration::from_millis(500);
        let c = Client::connect(cfg).await.unwrap();
        let t = Instant::now();
        let r = c.get(b"k").await;
        assert!(matches!(r, Err(Error::Unreachable(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn node_cluster_every_call_and_failover_while_writing() {
    let mut cluster = Cluster::start("");
    let addrs: Vec<_> = cluster.nodes.iter().map(|n| n.addr).collect();
    let rt = runtime();
    let c = rt.block_on(async {
        let mut cfg = config(&addrs);
        cfg.request_timeout = Duration::from_secs(5);
        Client::connect(cfg).await.unwrap()
    });
    rt.block_on(exercise_every_call(&c));

    // A writer that records what was acknowledged, while node 0 (the endpoint the client
    // uses first) is killed.
    let acked = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let unknown = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, acked, unknown, stop) = (c.clone(), acked.clone(), unknown.clone(), stop.clone());
        rt.spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let (k, v) = (format!("fo/{i:06}"), format!("v{i}"));
                match c.set(&k, &v).await {
                    Ok(()) => {
                        acked.lock().unwrap().insert(k, v);
                    }
                    Err(e) if e.outcome_unknown() => {
                        unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("write {k} failed: {e}"),
                }
                i += 1;
            }
        })
    };
    let wait_acked = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "the workload stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_acked(50);
    cluster.kill(0);
    let at_kill = acked.lock().unwrap().len();
    wait_acked(at_kill + 100);
    stop.store(true, Ordering::Relaxed);
    rt.block_on(writer).unwrap();
    assert!(
        !c.endpoints()[0].up,
        "the killed endpoint is still seen as up"
    );

    // The probe notices the node is back without any call having to fail on it first.
    cluster.restart_on_same_port(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.endpoints()[0].up {
        assert!(
            Instant::now() < deadline,
            "the restarted endpoint was never seen up again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every acknowledged write is there, read back through the surviving nodes.
    let acked = acked.lock().unwrap().clone();
    rt.block_on(async {
        let got: BTreeMap<String, String> = c
            .scan_prefix(b"fo/")
            .collect()
            .await
            .unwrap()
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        for (k, v) in &acked {
            assert_eq!(got.get(k), Some(v), "acknowledged write {k} lost");
        }
    });
    eprintln!(
        "failover: {} acknowledged ({} after the kill), {} outcome unknown",
        acked.len(),
        acked.len() - at_kill,
        unknown.load(Ordering::Relaxed)
    );
}
