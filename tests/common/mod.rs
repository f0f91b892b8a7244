//! Test harness: runs the real `paxoskv` binary on free ports with temporary directories, and
//! Thrift clients over the unframed and framed transports. Everything a test starts is stopped
//! and removed when its handle drops.
#![allow(dead_code)]

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
    pub dir: tempfile::TempDir,
    pub args: Vec<String>,
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
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--wal-dir".into(),
            dir.path().join("wal").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let (child, addr) = spawn(&args);
        Server {
            child,
            addr,
            dir,
            args,
        }
    }

    /// Stops the process (SIGKILL) and starts it again on the same directories.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addr) = spawn(&self.args);
        self.child = child;
        self.addr = addr;
    }

    pub fn client(&self) -> Client {
        client(self.addr, false)
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

fn spawn(args: &[String]) -> (Child, SocketAddr) {
    let (child, rx) = spawn_child(args);
    wait_addr(child, rx)
}

/// Starts the binary; the receiver yields its Thrift address once it reports one.
pub fn spawn_child(args: &[String]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paxoskv"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start paxoskv");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(a) = line.strip_prefix("paxoskv listening on ") {
                    let _ = tx.send(a.trim().to_string());
                    sent = true;
                }
            }
        }
    });
    (child, rx)
}

/// Waits for the address a child reports; kills it if none comes.
pub fn wait_addr(mut child: Child, rx: std::sync::mpsc::Receiver<String>) -> (Child, SocketAddr) {
    let deadline = Duration::from_secs(60);
    let addr = match rx.recv_timeout(deadline) {
        Ok(a) => a.parse().unwrap(),
        Err(_) => {
            let _ = child.kill();
            panic!("paxoskv did not report its address within {deadline:?}");
        }
    };
    (child, addr)
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
