//! `thrift.spread_after_reads`: a connection that mostly reads (writes at most
//! `thrift.spread_max_write_percent` of its calls) moves from the primary's executor to another
//! one, and keeps getting the same answers there, its session's committed version with it;
//! whatever it does afterwards (a write, a transaction begun on another connection) still works.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{http_get, raw, Client, Server};
use paxoskv::front::generated::*;
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol, TSerializable};
use thrift::transport::{TIoChannel, TTcpChannel};

/// One executor per replica whatever the core count, so there is always somewhere to move to.
const CONFIG: &str = "[replicated]\nexecutor_per_core = false\n[thrift]\nspread_after_reads = 4\n";

fn metric(server: &Server, name: &str) -> u64 {
    let (_, body) = http_get(server.metrics_addr.expect("metrics address"), "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// Writes every request in two parts 5 ms apart, so the server often holds half a message when
/// it hands the connection over (the half must travel with it).
struct Halves<W: Write> {
    inner: W,
    second: bool,
}

impl<W: Write> Write for Halves<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.second && buf.len() > 1 {
            self.second = true;
            let n = self.inner.write(&buf[..buf.len() / 2])?;
            self.inner.flush()?;
            return Ok(n);
        }
        self.second = false;
        std::thread::sleep(Duration::from_millis(5));
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn halves_client(addr: SocketAddr, framed: bool) -> Client {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (r, w) = TTcpChannel::with_stream(stream).split().unwrap();
    let w = Halves {
        inner: w,
        second: false,
    };
    common::client_over(r, w, framed)
}

fn set(c: &mut Client, k: &str, v: &str) {
    let r = c
        .set_key(SetKeyRequest::new(k.into(), v.into(), None::<String>))
        .unwrap();
    assert!(r.success, "{r:?}");
}

fn get(c: &mut Client, k: &str) -> Option<String> {
    let r = c.get(GetRequest::new(k.into(), None::<String>)).unwrap();
    assert!(r.error.is_none(), "{r:?}");
    r.found.then(|| String::from_utf8(r.value).unwrap())
}

/// `n` gets of "k", each answering "v".
fn read_v(c: &mut Client, n: usize) {
    for _ in 0..n {
        assert_eq!(get(c, "k").as_deref(), Some("v"));
    }
}

#[test]
fn read_only_connections_move_to_other_executors_and_keep_every_answer() {
    let server = Server::start_with_config(CONFIG, &[]);
    let mut w = server.client();
    for i in 0..20 {
        set(&mut w, &format!("k{i}"), &format!("v{i}"));
    }
    // Six readers over both transports, half of them writing each message in two parts.
    let mut readers: Vec<Client> = (0..6)
        .map(|i| {
            let framed = i % 2 == 1;
            if i < 3 {
                common::client(server.addr, framed)
            } else {
                halves_client(server.addr, framed)
            }
        })
        .collect();
    for round in 0..12 {
        for (i, c) in readers.iter_mut().enumerate() {
            let k = (round + i) % 20;
            assert_eq!(
                get(c, &format!("k{k}")).as_deref(),
                Some(format!("v{k}").as_str()),
                "reader {i}, round {round}"
            );
        }
    }
    // Round robin over the accepting executor and two others: 4 of 6 move once each reader
    // qualified (a reader whose replies were not yet released when it sent again qualifies
    // at a later request).
    let moved = metric(&server, "paxoskv_connections_handed_over_total");
    assert!((2..=4).contains(&moved), "moved {moved}");
    assert_eq!(metric(&server, "paxoskv_connections_open"), 7);

    // Reads on the moved connections see writes made on the primary's executor, and writes
    // from them are seen there.
    for (i, c) in readers.iter_mut().enumerate() {
        set(&mut w, "shared", &format!("w{i}"));
        assert_eq!(get(c, "shared").as_deref(), Some(format!("w{i}").as_str()));
        set(c, &format!("from{i}"), &format!("r{i}"));
        assert_eq!(
            get(&mut w, &format!("from{i}")).as_deref(),
            Some(format!("r{i}").as_str())
        );
    }

    // A transaction begun on one connection is committed on another, whichever executor
    // serves each (every front shares the open transactions).
    for c in readers.iter_mut() {
        let b = c
            .begin_transaction(BeginTransactionRequest::new(None::<i64>, None::<i64>))
            .unwrap();
        assert!(b.success, "{b:?}");
        let op = Operation::new("set".into(), b"txn".to_vec(), b"t".to_vec(), None::<String>);
        let r = w
            .commit_transaction(CommitTransactionRequest::new(
                b.transaction_id,
                vec![op],
                None::<Vec<Vec<u8>>>,
                None::<Vec<KeyRange>>,
            ))
            .unwrap();
        assert!(r.success, "{r:?}");
    }
    assert_eq!(get(&mut w, "txn").as_deref(), Some("t"));

    // Closed connections are counted wherever they closed.
    drop(readers);
    let started = Instant::now();
    while metric(&server, "paxoskv_connections_open") != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "connections not released"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server holding k = v, whose first qualifying connection has taken its turn (it keeps its
/// place): every connection qualifying after it moves. A connection is judged when it sends
/// again with its replies written: 8 reads leave room for a reply not yet released.
fn server_past_the_first_turn(args: &[&str]) -> (Server, Client) {
    let server = Server::start_with_config(CONFIG, args);
    let mut w = server.client();
    set(&mut w, "k", "v");
    let mut first = server.client();
    read_v(&mut first, 8);
    (server, w)
}

#[test]
fn connections_that_write_more_than_the_share_or_stay_below_the_threshold_are_not_moved() {
    let (server, _w) = server_past_the_first_turn(&[]);
    // Four writes, then reads: 4 of 8 calls (50%) when it reaches the reads, over the 20%
    // share (it would take 16 reads to come down to it); judged then and settled where it
    // is, however many reads follow.
    let mut writer = server.client();
    for _ in 0..4 {
        set(&mut writer, "k", "v");
    }
    read_v(&mut writer, 20);
    // Three reads: below spread_after_reads (4).
    let mut few: Vec<Client> = (0..4).map(|_| server.client()).collect();
    for c in few.iter_mut() {
        read_v(c, 3);
    }
    assert_eq!(metric(&server, "paxoskv_connections_handed_over_total"), 0);
}

fn committed_version(c: &mut Client) -> i64 {
    let r = c
        .get_committed_version(GetCommittedVersionRequest::new())
        .unwrap();
    assert!(r.success, "{r:?}");
    r.version
}

#[test]
fn a_connection_that_mostly_reads_moves_with_its_committed_version_and_its_writes_still_work() {
    let (server, mut w) = server_past_the_first_turn(&[]);
    // One atomic commit, then reads: at most 1 of 5 calls (20%, the default share) when it is
    // judged: it moves, on the second turn.
    let mut c = server.client();
    let commit = |c: &mut Client, value: &str| {
        let r = c
            .atomic_commit(AtomicCommitRequest::new(
                0,
                vec![Operation::new(
                    "set".into(),
                    b"mine".to_vec(),
                    value.as_bytes().to_vec(),
                    None::<String>,
                )],
                Vec::new(),
                None::<i64>,
                None::<Vec<KeyRange>>,
            ))
            .unwrap();
        assert!(r.success, "{r:?}");
        r.committed_version.expect("a committed version")
    };
    let v1 = commit(&mut c, "one");
    read_v(&mut c, 8);
    assert_eq!(metric(&server, "paxoskv_connections_handed_over_total"), 1);
    // Answered on the executor it moved to: the session came with it (a session without one
    // answers the newest applied version, past v1 after this write).
    set(&mut w, "other", "x");
    assert_eq!(committed_version(&mut c), v1);
    // Its writes cross to the primary and it reads them back; others see them too.
    let v2 = commit(&mut c, "two");
    assert!(v2 > v1);
    assert_eq!(committed_version(&mut c), v2);
    assert_eq!(get(&mut c, "mine").as_deref(), Some("two"));
    set(&mut c, "k", "v2");
    assert_eq!(get(&mut c, "k").as_deref(), Some("v2"));
    assert_eq!(get(&mut w, "mine").as_deref(), Some("two"));
    assert_eq!(metric(&server, "paxoskv_connections_handed_over_total"), 1);
}

#[test]
fn spreading_off_keeps_every_connection_where_it_was_accepted() {
    let config = "[replicated]\nexecutor_per_core = false\n[thrift]\nspread_after_reads = 0\n";
    let server = Server::start_with_config(config, &[]);
    let mut w = server.client();
    set(&mut w, "k", "v");
    let mut readers: Vec<Client> = (0..4).map(|_| server.client()).collect();
    for c in readers.iter_mut() {
        read_v(c, 10);
    }
    assert_eq!(metric(&server, "paxoskv_connections_handed_over_total"), 0);
}

#[test]
fn a_graceful_stop_answers_a_read_in_flight_on_a_moved_connection() {
    let mut server = Server::start_with_config(CONFIG, &["--enable-fault-injection"]);
    let mut w = server.client();
    set(&mut w, "k", "v");
    // Two readers qualify, one after the other: the first keeps its place (its turn), the
    // second moves. Each runs in a thread of its own (a client is not Send) and makes one more
    // get when told to.
    let addr = server.addr;
    let mut gets = Vec::new();
    let mut go = Vec::new();
    for _ in 0..2 {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        gets.push(std::thread::spawn(move || {
            let mut c = common::client(addr, false);
            read_v(&mut c, 10);
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            c.get(GetRequest::new(b"k".to_vec(), None::<String>))
        }));
        ready_rx.recv().unwrap();
        go.push(go_tx);
    }
    assert_eq!(metric(&server, "paxoskv_connections_handed_over_total"), 1);
    // Every get now waits 800 ms (faults are shared by every executor's front): both readers'
    // gets are in flight when SIGTERM arrives, one of them on the other executor.
    common::delay_every(&mut w, "get", 800);
    for g in &go {
        g.send(()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    for g in gets {
        let r = g.join().unwrap().expect("the read in flight is answered");
        assert!(r.found && r.value == b"v", "{r:?}");
    }
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_moved_connection_reads_its_own_pipelined_write() {
    let (server, mut w) = server_past_the_first_turn(&["--enable-fault-injection"]);
    // A connection that only read moves (second turn); the stream is kept to write raw bursts.
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut stream_w = stream.try_clone().unwrap();
    let (r, wr) = TTcpChannel::with_stream(stream).split().unwrap();
    let mut c = common::client_over(r, wr, false);
    read_v(&mut c, 8);
    assert_eq!(metric(&server, "paxoskv_connections_handed_over_total"), 1);
    // Every setKey is held 300 ms before it runs: a read that did not wait for the write sent
    // before it on its connection would overtake it.
    common::delay_every(&mut w, "setKey", 300);
    let set_req = SetKeyRequest::new(b"ryw".to_vec(), b"mine".to_vec(), None::<String>);
    let get_req = GetRequest::new(b"ryw".to_vec(), None::<String>);
    let mut out = Vec::new();
    let mut enc = TBinaryOutputProtocol::new(&mut out, true);
    raw::call(&mut enc, "setKey", 101, &|p| {
        set_req.write_to_out_protocol(p).unwrap()
    });
    raw::call(&mut enc, "get", 102, &|p| {
        get_req.write_to_out_protocol(p).unwrap()
    });
    stream_w.write_all(&out).unwrap();
    let mut p = TBinaryInputProtocol::new(stream_w.try_clone().unwrap(), true);
    raw::reply_start(&mut p, 101);
    assert!(
        SetKeyResponse::read_from_in_protocol(&mut p)
            .unwrap()
            .success
    );
    raw::reply_end(&mut p);
    raw::reply_start(&mut p, 102);
    let g = GetResponse::read_from_in_protocol(&mut p).unwrap();
    raw::reply_end(&mut p);
    assert!(g.found, "the read overtook the write before it: {g:?}");
    assert_eq!(g.value, b"mine");
}
