//! Test harness: runs the real `paxoskv` binary on free ports with temporary directories, and
//! Thrift clients over the unframed and framed transports. Everything a test starts is stopped
//! and removed when its handle drops.
#![allow(dead_code)]

pub mod nodes;
pub mod raw;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use paxoskv::front::generated::TransactionalKVSyncClient;
use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TInputProtocol, TOutputProtocol,
};
use thrift::transport::{
    TBufferedReadTransport, TBufferedWriteTransport, TFramedReadTransport, TFramedWriteTransport,
    TIoChannel, TTcpChannel,
};

pub type Client = TransactionalKVSyncClient<Box<dyn TInputProtocol>, Box<dyn TOutputProtocol>>;

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub args: Vec<String>,
}

/// Writes a dev CA and certificates for 3 replicas and the front into `dir` with
/// `paxoskv certs`.
pub fn make_certs(dir: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_paxoskv"))
        .args(["certs", "--replicas", "3", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Resident memory of process `pid` (0 if it cannot be read).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port below the kernel's ephemeral range, so that no outgoing connection can take it
/// while a test restarts the process that listens on it.
pub fn free_fixed_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    let span = low.saturating_sub(12000).max(1000);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut x = seed as u64 | 1;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 11000 + (x % span as u64) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {low}");
}

/// A plain HTTP GET; returns (status line, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

impl Server {
    /// Starts `paxoskv serve` with `extra` flags on a free Thrift port in a fresh directory.
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    /// Starts with a TOML config file (written into the server's own temporary directory).
    pub fn start_with_config(toml: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paxoskv.toml");
        std::fs::write(&path, toml).unwrap();
        let p = path.display().to_string();
        let mut args = vec!["--config", p.as_str()];
        args.extend_from_slice(extra);
        Self::start_in(dir, &args)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--thrift-port".into(),
            "0".into(),
            "--base-port".into(),
            "0".into(),
            "--metrics-port".into(),
            "0".into(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--wal-dir".into(),
            dir.path().join("wal").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let (child, rx) = spawn_child(&args);
        let (child, addr, metrics_addr) = wait_addrs(child, rx);
        Server {
            child,
            addr,
            metrics_addr,
            dir,
            args,
        }
    }

    /// Stops the process (SIGKILL) and starts it again on the same directories.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, rx) = spawn_child(&self.args);
        let (child, addr, metrics_addr) = wait_addrs(child, rx);
        self.child = child;
        self.addr = addr;
        self.metrics_addr = metrics_addr;
    }

    pub fn client(&self) -> Client {
        client(self.addr, false)
    }

    /// Sends SIGTERM and waits (at most 30 s) for the process to exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit()
    }

    /// Waits (at most 30 s) for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn framed_client(&self) -> Client {
        client(self.addr, true)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when the test ends, even by a panic.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary; the receiver yields its Thrift address once it reports one.
pub fn spawn_child(args: &[String]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paxoskv"))
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("PAXOSKV_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start paxoskv");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Forward the lines the server prints about itself; keep draining the pipe after.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("paxoskv ") {
                let _ = tx.send(line);
            }
        }
    });
    (child, rx)
}

/// Waits for the address a child reports; kills it if none comes.
pub fn wait_addr(child: Child, rx: std::sync::mpsc::Receiver<String>) -> (Child, SocketAddr) {
    let (child, addr, _) = wait_addrs(child, rx);
    (child, addr)
}

/// Waits for the Thrift address and, when metrics are on, the metrics address.
pub fn wait_addrs(
    mut child: Child,
    rx: std::sync::mpsc::Receiver<String>,
) -> (Child, SocketAddr, Option<SocketAddr>) {
    let deadline = Duration::from_secs(60);
    let addr = match rx.recv_timeout(deadline) {
        Ok(l) => match l.strip_prefix("paxoskv listening on ") {
            Some(a) => a.trim().parse().unwrap(),
            None => {
                let _ = child.kill();
                panic!("unexpected first line {l:?}");
            }
        },
        Err(_) => {
            let _ = child.kill();
            panic!("paxoskv did not report its address within {deadline:?}");
        }
    };
    let metrics = rx
        .recv_timeout(Duration::from_secs(2))
        .ok()
        .and_then(|l| {
            l.strip_prefix("paxoskv metrics on http://")
                .map(|a| a.trim_end_matches("/metrics").to_string())
        })
        .and_then(|a| a.parse().ok());
    (child, addr, metrics)
}

pub fn client(addr: SocketAddr, framed: bool) -> Client {
    let started = Instant::now();
    let stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (r, w) = TTcpChannel::with_stream(stream).split().unwrap();
    client_over(r, w, framed)
}

/// A client over a connection's read half and any writer (a test may shape what it sends).
/// Makes every `method` call wait `ms` before it is served (the server runs with
/// `--enable-fault-injection`; the fault is shared by every executor's front).
pub fn delay_every(c: &mut Client, method: &str, ms: i32) {
    use paxoskv::front::generated::TTransactionalKVSyncClient;
    let r = c
        .set_fault_injection(paxoskv::front::generated::FaultInjectionRequest::new(
            "delay".to_string(),
            thrift::OrderedFloat::from(1.0),
            ms,
            method.to_string(),
            None::<String>,
        ))
        .unwrap();
    assert!(r.success, "{r:?}");
}

pub fn client_over<R, W>(r: R, w: W, framed: bool) -> Client
where
    R: std::io::Read + Send + 'static,
    W: std::io::Write + Send + 'static,
{
    let (ip, op): (Box<dyn TInputProtocol>, Box<dyn TOutputProtocol>) = if framed {
        (
            Box::new(TBinaryInputProtocol::new(
                TFramedReadTransport::new(r),
                true,
            )),
            Box::new(TBinaryOutputProtocol::new(
                TFramedWriteTransport::new(w),
                true,
            )),
        )
    } else {
        (
            Box::new(TBinaryInputProtocol::new(
                TBufferedReadTransport::new(r),
                true,
            )),
            Box::new(TBinaryOutputProtocol::new(
                TBufferedWriteTransport::new(w),
                true,
            )),
        )
    };
    TransactionalKVSyncClient::new(ip, op)
}
