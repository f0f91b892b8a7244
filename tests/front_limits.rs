//! Limits of the Thrift front that a hostile or careless client must not get past: slow and
//! silent connections are closed, a session's registered conflicts are bounded, key-selector
//! offsets are bounded, range replies are bounded by bytes, and the open-file limit fits
//! `max_connections` plus the stores.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;
use paxoskv::front::generated::*;

/// Waits for the server to close `s`; returns how long that took.
fn closed_after(mut s: TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("the connection was still open after {limit:?}: {e}"),
        }
    }
}

#[test]
fn slow_and_silent_connections_are_closed_and_others_keep_being_served() {
    let server = Server::start_with_config(
        "[thrift]\nread_timeout = \"1s\"\nidle_timeout = \"2s\"\n",
        &[],
    );
    // A client that keeps talking throughout is not affected.
    let addr = server.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let talking = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = common::client(addr, false);
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = c
                    .set_key(SetKeyRequest::new(
                        format!("k{n}").into_bytes(),
                        b"v".to_vec(),
                        None::<String>,
                    ))
                    .map(|r| r.success);
                assert!(
                    matches!(r, Ok(true)),
                    "the talking client was cut off: {r:?}"
                );
                n += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            n
        })
    };
    // Slow-loris: three bytes of a frame header, then nothing.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(&[0, 0, 0]).unwrap();
    let t = closed_after(slow, Duration::from_secs(8));
    assert!(t < Duration::from_secs(4), "closed only after {t:?}");
    // A connection that never sends anything goes after the idle timeout.
    let silent = TcpStream::connect(server.addr).unwrap();
    let t = closed_after(silent, Duration::from_secs(8));
    assert!(t >= Duration::from_millis(1500), "closed too early: {t:?}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let n = talking.join().expect("the talking client");
    assert!(n >= 5, "{n} writes");
}

#[test]
fn a_session_cannot_register_unbounded_read_conflicts() {
    let server = Server::start_with_config("[thrift]\nmax_session_conflict_bytes = 4096\n", &[]);
    let mut c = server.client();
    let key = vec![b'k'; 500];
    let mut refused = None;
    for i in 0..20 {
        let r = c
            .add_read_conflict(AddReadConflictRequest::new(key.clone(), None::<String>))
            .unwrap();
        if !r.success {
            refused = Some((i, r.error.unwrap_or_default()));
            break;
        }
    }
    let (i, e) = refused.expect("20 x 1 KiB of conflicts all accepted with a 4 KiB bound");
    assert!(i >= 3 && e.contains("TOO_LARGE"), "refused at {i}: {e}");
    // A commit consumes the registered conflicts; the session can register again.
    let rv = c
        .get_read_version(GetReadVersionRequest::new())
        .unwrap()
        .read_version;
    let commit = c
        .atomic_commit(AtomicCommitRequest::new(
            rv,
            vec![Operation::new(
                "set".to_string(),
                b"x".to_vec(),
                b"1".to_vec(),
                None::<String>,
            )],
            Vec::new(),
            None::<i64>,
            None::<Vec<paxoskv::front::generated::KeyRange>>,
        ))
        .unwrap();
    assert!(commit.success, "{commit:?}");
    let r = c
        .add_read_conflict(AddReadConflictRequest::new(key, None::<String>))
        .unwrap();
    assert!(r.success, "{r:?}");
}

#[test]
fn key_selector_offsets_beyond_the_range_cap_are_refused() {
    let server = Server::start_with_config("[thrift]\nmax_range_keys = 1000\n", &[]);
    let mut c = server.client();
    let r = c
        .get_range(GetRangeRequest::new(
            b"a".to_vec(),
            b"z".to_vec(),
            i32::MAX,
            true,
            0,
            false,
            10,
            None::<String>,
        ))
        .unwrap();
    assert!(!r.success);
    assert!(r.error.unwrap_or_default().contains("begin_offset"));
    let r = c
        .get_range(GetRangeRequest::new(
            b"a".to_vec(),
            b"z".to_vec(),
            5,
            true,
            -5,
            false,
            10,
            None::<String>,
        ))
        .unwrap();
    assert!(r.success, "{r:?}");
}

/// A range over large values stops at thrift.max_range_reply_bytes with has_more (a client
/// asking for "no limit" cannot make the server build a reply of every value), and paging from
/// the last key returned reads the rest.
#[test]
fn range_replies_are_bounded_by_bytes_and_paging_reads_the_rest() {
    let server = Server::start_with_config("[thrift]\nmax_range_reply_bytes = 3000000\n", &[]);
    let mut c = server.client();
    let value = vec![b'v'; 1 << 20];
    for i in 0..10u8 {
        let r = c
            .set_key(SetKeyRequest::new(
                vec![b'r', b'0' + i],
                value.clone(),
                None::<String>,
            ))
            .unwrap();
        assert!(r.success, "{r:?}");
    }
    let mut begin = b"r".to_vec();
    let mut or_equal = true;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = c
            .get_range(GetRangeRequest::new(
                begin.clone(),
                b"s".to_vec(),
                0,
                or_equal,
                0,
                false,
                0,
                None::<String>,
            ))
            .unwrap();
        assert!(r.success, "{:?}", r.error);
        pages += 1;
        let bytes: usize = r
            .key_values
            .iter()
            .map(|kv| kv.key.len() + kv.value.len())
            .sum();
        assert!(bytes <= 3_000_000, "a reply of {bytes} bytes");
        assert!(!r.key_values.is_empty());
        seen.extend(r.key_values.iter().map(|kv| kv.key.clone()));
        if !r.has_more {
            break;
        }
        begin = r.key_values.last().unwrap().key.clone();
        or_equal = false;
        assert!(pages < 20, "paging does not end");
    }
    let want: Vec<Vec<u8>> = (0..10u8).map(|i| vec![b'r', b'0' + i]).collect();
    assert_eq!(seen, want);
    assert_eq!(
        pages, 5,
        "two 1 MiB pairs fit 3,000,000 bytes, three do not"
    );
}

/// A client that pipelines range calls and never reads the replies: each range call holds room
/// for its largest reply in the connection's in-flight bound, so the server stops reading that
/// connection instead of building hundreds of unread multi-MiB replies; others are served.
#[test]
fn unread_range_replies_stay_within_the_connection_bound() {
    let server = Server::start_with_config(
        "[thrift]\nmax_range_reply_bytes = 2200000\nmax_in_flight_bytes_per_connection = 8388608\n",
        &[],
    );
    let mut c = server.client();
    for i in 0..2u8 {
        let r = c
            .set_key(SetKeyRequest::new(
                vec![b'g', i],
                vec![b'v'; 1 << 20],
                None::<String>,
            ))
            .unwrap();
        assert!(r.success, "{r:?}");
    }
    let pid = server.child.id();
    let before = common::rss_bytes(pid);
    let mut raw = TcpStream::connect(server.addr).unwrap();
    raw.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent = 0;
    for seq in 0..300 {
        // Each reply would be both 1 MiB pairs: 300 of them, about 600 MiB, unread.
        if raw.write_all(&get_range_message(seq, b"g", b"h")).is_err() {
            break;
        }
        sent += 1;
    }
    std::thread::sleep(Duration::from_secs(2));
    let grown = common::rss_bytes(pid).saturating_sub(before);
    assert!(
        grown < 200 << 20,
        "{sent} unread range calls grew the server by {} MiB",
        grown >> 20
    );
    // Other clients are served meanwhile.
    let r = server
        .client()
        .get(GetRequest::new(vec![b'g', 0], None::<String>))
        .unwrap();
    assert_eq!(r.value.len(), 1 << 20);
    drop(raw);
}

/// An unframed binary-protocol `getRange` call for keys in `[begin, end)`.
fn get_range_message(seq: i32, begin: &[u8], end: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x8001_0001u32.to_be_bytes());
    b.extend_from_slice(&8u32.to_be_bytes());
    b.extend_from_slice(b"getRange");
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&[12, 0, 1]);
    for (id, k) in [(1u8, begin), (2, end)] {
        b.extend_from_slice(&[11, 0, id]);
        b.extend_from_slice(&(k.len() as u32).to_be_bytes());
        b.extend_from_slice(k);
    }
    b.extend_from_slice(&[0, 0]);
    b
}

#[test]
fn the_open_file_limit_fits_max_connections_plus_the_stores() {
    let server = Server::start_with_config("[thrift]\nmax_connections = 3000\n", &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("Max open files");
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        soft >= (3000 + 1024).min(hard),
        "open-file limit {soft} (hard {hard}) is below 3000 connections + 1024"
    );
}

#[test]
fn a_message_whose_lengths_lie_is_refused_and_the_server_lives_on() {
    let server = Server::start(&[]);
    // Framed, honest frame length, but the method name claims -1 and then 2^31-1 bytes: the
    // Thrift crate's own reader would allocate (or overflow) on these.
    for claim in [-1i32, i32::MAX] {
        let mut msg = 0x8001_0001u32.to_be_bytes().to_vec();
        msg.extend_from_slice(&claim.to_be_bytes());
        msg.extend_from_slice(b"setKey");
        let mut framed = (msg.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&msg);
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(&framed).unwrap();
        let _ = closed_after(s, Duration::from_secs(10));
    }
    let mut c = server.client();
    let r = c
        .set_key(SetKeyRequest::new(
            b"alive".to_vec(),
            b"yes".to_vec(),
            None::<String>,
        ))
        .unwrap();
    assert!(r.success, "{r:?}");
}

#[test]
fn fault_injection_validates_its_arguments_and_bounds_its_list() {
    let server = Server::start(&["--enable-fault-injection"]);
    let mut c = server.client();
    let r = c
        .set_fault_injection(FaultInjectionRequest::new(
            "delay".to_string(),
            None,
            3_600_000,
            "get".to_string(),
            None::<String>,
        ))
        .unwrap();
    assert!(!r.success && r.error.unwrap_or_default().contains("duration_ms"));
    let mut refused = None;
    for i in 0..100 {
        let r = c
            .set_fault_injection(FaultInjectionRequest::new(
                "delay".to_string(),
                None,
                0,
                format!("op{i}"),
                None::<String>,
            ))
            .unwrap();
        if !r.success {
            refused = Some((i, r.error.unwrap_or_default()));
            break;
        }
    }
    let (i, e) = refused.expect("100 faults accepted");
    assert!(i == 64 && e.contains("TOO_LARGE"), "refused at {i}: {e}");
    let r = c
        .set_fault_injection(FaultInjectionRequest::new(
            "clear".to_string(),
            None,
            None::<i32>,
            None::<String>,
            None::<String>,
        ))
        .unwrap();
    assert!(r.success);
}

/// With an admin token configured, fault injection requires it (like the diagnostic methods).
#[test]
fn fault_injection_requires_the_admin_token_when_one_is_set() {
    let server = Server::start(&["--enable-fault-injection", "--admin-token", "s3cret"]);
    let mut c = server.client();
    let fault = |token: Option<&str>| {
        FaultInjectionRequest::new(
            "delay".to_string(),
            None,
            10,
            "get".to_string(),
            token.map(str::to_string),
        )
    };
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret!")] {
        let r = c.set_fault_injection(fault(token)).unwrap();
        assert!(!r.success, "{token:?} was accepted");
        assert!(r.error.unwrap_or_default().starts_with("UNAUTHORIZED"));
    }
    let r = c.set_fault_injection(fault(Some("s3cret"))).unwrap();
    assert!(r.success, "{:?}", r.error);
}

/// An unframed binary-protocol `setKey` call with a value of `len` bytes.
fn set_key_message(seq: i32, len: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(len + 64);
    b.extend_from_slice(&0x8001_0001u32.to_be_bytes());
    b.extend_from_slice(&6u32.to_be_bytes());
    b.extend_from_slice(b"setKey");
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&[12, 0, 1, 11, 0, 1]);
    b.extend_from_slice(&3u32.to_be_bytes());
    b.extend_from_slice(b"big");
    b.extend_from_slice(&[11, 0, 2]);
    b.extend_from_slice(&(len as u32).to_be_bytes());
    b.resize(b.len() + len, b'v');
    b.extend_from_slice(&[0, 0]);
    b
}

#[test]
fn request_bytes_in_flight_over_the_whole_front_are_bounded() {
    let server = Server::start_with_config(
        "[thrift]\nmax_in_flight_bytes_total = 1048576\n\
         max_in_flight_bytes_per_connection = 67108864\n",
        &[],
    );
    // Twenty 512 KiB writes pipelined on one connection: once 1 MiB of requests is waiting
    // for its replies, the next ones are refused at once instead of queued.
    let mut s = TcpStream::connect(server.addr).unwrap();
    let mut all = Vec::new();
    for seq in 0..20 {
        all.extend_from_slice(&set_key_message(seq, 512 << 10));
    }
    s.write_all(&all).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut replies = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    // Each reply carries the method name; stop once all twenty arrived.
    while replies.windows(6).filter(|w| *w == b"setKey").count() < 20 {
        assert!(Instant::now() < deadline, "replies did not all arrive");
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => replies.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read failed: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&replies);
    let refused = text.matches("max_in_flight_bytes_total").count();
    assert!(
        refused >= 1,
        "twenty pipelined 512 KiB writes all queued past a 1 MiB bound"
    );
    assert!(refused < 20, "every write was refused");
    // Once answered, the bytes are released: a new client is served.
    let mut c = server.client();
    let r = c
        .set_key(SetKeyRequest::new(
            b"k".to_vec(),
            b"v".to_vec(),
            None::<String>,
        ))
        .unwrap();
    assert!(r.success, "{r:?}");
}
