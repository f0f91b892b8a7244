//! The load engine: each worker thread drives its share of the connections with non-blocking
//! sockets under one epoll, keeping up to `pipeline` logical operations in flight per connection.
//!
//! Closed loop: a finished operation immediately starts the next one (latency from the send).
//! Open loop: each connection starts operations at fixed intended times (`op_interval`); when its
//! pipeline is full they wait in a backlog, and latency is measured from the intended time, so a
//! stalled server shows as latency rather than as fewer samples (no coordinated omission).
//!
//! All requests a turn produces on a connection leave in one `write`. Replies come back in order,
//! so each connection matches them against a FIFO of pending calls. Network errors are counted by
//! code and the connection is re-established; they never panic the tool.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::keys::{write_key, KeyChooser};
use crate::poll::{Poller, TIMER_TOKEN};
use crate::stats::{OpKind, Stats};
use crate::wire::{Method, Reply, Request, Wire};

pub const PHASE_WARMUP: u8 = 0;
pub const PHASE_MEASURE: u8 = 1;
pub const PHASE_STOP: u8 = 2;

/// Intended-but-unsent operations one connection may queue in open loop before it drops them.
const BACKLOG_OPS_MAX: usize = 1 << 20;
/// Read buffer size at start; it grows for larger replies.
const READ_BUF_BYTES: usize = 64 * 1024;
/// How long a worker sleeps at most before looking at the phase again.
const POLL_TIMEOUT_MAX: Duration = Duration::from_millis(50);
const RECONNECT_DELAY: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    Write,
    Read,
    Mixed {
        read_ratio: f64,
    },
    Txn,
    Range {
        limit: i32,
    },
    Ping,
    /// Writes every key once, in order (prepopulation), then stops.
    Populate {
        keys_count: u64,
    },
}

/// What every worker of a run shares, read-only.
pub struct Plan {
    pub wire: Wire,
    pub workload: Workload,
    pub keys: KeyChooser,
    pub key_size_bytes: usize,
    pub value: Vec<u8>,
    pub pipeline: usize,
    /// Open loop: time between intended operation starts on one connection.
    pub op_interval: Option<Duration>,
    pub seed: u64,
}

/// Run-wide control shared with the main thread.
#[derive(Default)]
pub struct Control {
    pub phase: AtomicU8,
    /// Next key index to prepopulate.
    pub populate_next: AtomicU64,
}

/// What a worker tells the main thread.
pub enum Msg {
    /// Measurements of the last interval, all taken in `phase`.
    Interval { phase: u8, stats: Stats },
    /// The worker stopped; `stats` holds what it measured since its last interval.
    Done { phase: u8, stats: Stats },
    /// A condition the run cannot continue with (every connection failed to start, ...).
    Fatal(String),
}

/// One connection's assignment: where to connect and when its first open-loop operation is due.
pub struct ConnSpec {
    pub addr: SocketAddr,
    pub first_due: Instant,
}

struct Pending {
    method: Method,
    sequence: i32,
    op: OpKind,
    started: Instant,
    slot: u32,
}

#[derive(Clone, Copy)]
struct TxnSlot {
    key_index: u64,
    started: Instant,
    read_version: i64,
}

struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    inflight: VecDeque<Pending>,
    sequence: i32,
    /// Logical operations started and not finished.
    active: usize,
    backlog: VecDeque<Instant>,
    next_due: Instant,
    txns: Vec<TxnSlot>,
    free_slots: Vec<u32>,
    reconnect_at: Option<Instant>,
}

struct Worker {
    plan: Arc<Plan>,
    control: Arc<Control>,
    rng: SmallRng,
    key_buf: Vec<u8>,
    stats: Stats,
    phase: u8,
    poller: Poller,
    errors_printed: u32,
}

/// Runs one worker until the phase becomes STOP (or, for prepopulation, until every key is
/// written). Sends its measurements through `tx`.
pub fn run_worker(
    id: usize,
    plan: Arc<Plan>,
    control: Arc<Control>,
    conns: Vec<ConnSpec>,
    tx: Sender<Msg>,
) {
    let poller = match Poller::new(conns.len() + 1) {
        Ok(p) => p,
        Err(e) => {
            let _ = tx.send(Msg::Fatal(format!("worker {id}: epoll: {e}")));
            return;
        }
    };
    let mut w = Worker {
        rng: SmallRng::seed_from_u64(plan.seed.wrapping_add(id as u64 * 0x9e37_79b9_7f4a_7c15)),
        key_buf: Vec::with_capacity(plan.key_size_bytes),
        stats: Stats::default(),
        phase: control.phase.load(Ordering::Acquire),
        poller,
        errors_printed: 0,
        plan,
        control,
    };
    let mut conns: Vec<Conn> = conns
        .into_iter()
        .map(|s| Conn {
            addr: s.addr,
            stream: None,
            rbuf: vec![0; READ_BUF_BYTES],
            rstart: 0,
            rend: 0,
            wbuf: Vec::with_capacity(4096),
            wpos: 0,
            inflight: VecDeque::new(),
            sequence: 0,
            active: 0,
            backlog: VecDeque::new(),
            next_due: s.first_due,
            txns: Vec::new(),
            free_slots: Vec::new(),
            reconnect_at: Some(Instant::now()),
        })
        .collect();
    let now = Instant::now();
    let mut connected = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        if w.connect(i, c, now) {
            connected += 1;
        }
    }
    if connected == 0 {
        let _ = tx.send(Msg::Fatal(format!(
            "worker {id}: no connection could be opened (first address {})",
            conns
                .first()
                .map_or_else(|| "none".to_string(), |c| c.addr.to_string())
        )));
        return;
    }
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    let mut ready: Vec<(u64, u32)> = Vec::with_capacity(conns.len() + 1);
    loop {
        let phase = w.control.phase.load(Ordering::Acquire);
        if phase != w.phase {
            let stats = std::mem::take(&mut w.stats);
            let _ = tx.send(Msg::Interval {
                phase: w.phase,
                stats,
            });
            w.phase = phase;
        }
        if w.phase == PHASE_STOP || w.populate_finished(&conns) {
            break;
        }
        let now = Instant::now();
        if now >= next_tick {
            let stats = std::mem::take(&mut w.stats);
            let _ = tx.send(Msg::Interval {
                phase: w.phase,
                stats,
            });
            next_tick += Duration::from_secs(1);
        }
        let mut timeout = POLL_TIMEOUT_MAX.min(next_tick.saturating_duration_since(now));
        if w.plan.op_interval.is_some() {
            if let Some(due) = conns
                .iter()
                .filter(|c| c.stream.is_some())
                .map(|c| c.next_due)
                .min()
            {
                let wait = due
                    .saturating_duration_since(now)
                    .max(Duration::from_nanos(1));
                if wait < timeout {
                    let _ = w.poller.arm_timer(wait);
                }
            }
        }
        for c in conns.iter().filter(|c| c.reconnect_at.is_some()) {
            if let Some(t) = c.reconnect_at {
                timeout = timeout.min(t.saturating_duration_since(now));
            }
        }
        ready.clear();
        if let Err(e) = w
            .poller
            .wait(timeout, |token, bits| ready.push((token, bits)))
        {
            let _ = tx.send(Msg::Fatal(format!("worker {id}: epoll_wait: {e}")));
            return;
        }
        for &(token, bits) in &ready {
            if token == TIMER_TOKEN {
                continue;
            }
            let Some(c) = conns.get_mut(token as usize) else {
                continue;
            };
            if c.stream.is_none() {
                continue;
            }
            let mut result = Ok(());
            let readable = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR;
            if bits & readable as u32 != 0 {
                result = w.on_readable(c);
            }
            if result.is_ok() {
                result = flush(c);
            }
            if let Err(e) = result {
                w.fail(c, &e);
            }
        }
        let now = Instant::now();
        if let Some(interval) = w.plan.op_interval {
            for c in conns.iter_mut() {
                if c.stream.is_none() {
                    continue;
                }
                let mut result = Ok(());
                while c.next_due <= now && result.is_ok() {
                    let due = c.next_due;
                    c.next_due += interval;
                    if c.active < w.plan.pipeline && c.backlog.is_empty() {
                        result = w.start(c, due).map(|_| ());
                    } else if c.backlog.len() < BACKLOG_OPS_MAX {
                        c.backlog.push_back(due);
                    } else {
                        w.stats.error("BACKLOG_FULL", 1);
                    }
                }
                if result.is_ok() {
                    result = flush(c);
                }
                if let Err(e) = result {
                    w.fail(c, &e);
                }
            }
        }
        for (i, c) in conns.iter_mut().enumerate() {
            if c.reconnect_at.is_some_and(|t| t <= now) {
                w.connect(i, c, now);
            }
        }
    }
    let stats = std::mem::take(&mut w.stats);
    let _ = tx.send(Msg::Done {
        phase: w.phase,
        stats,
    });
    for c in &conns {
        if let Some(s) = &c.stream {
            w.poller.remove(s.as_raw_fd());
        }
    }
}

impl Worker {
    fn populate_finished(&self, conns: &[Conn]) -> bool {
        match self.plan.workload {
            Workload::Populate { keys_count } => {
                self.control.populate_next.load(Ordering::Relaxed) >= keys_count
                    && conns.iter().all(|c| c.active == 0 || c.stream.is_none())
            }
            _ => false,
        }
    }

    /// Opens the connection and fills its pipeline (closed loop). Returns whether it is up.
    fn connect(&mut self, index: usize, c: &mut Conn, now: Instant) -> bool {
        c.reconnect_at = None;
        let stream = match TcpStream::connect_timeout(&c.addr, CONNECT_TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                self.stats.error("CONNECT", 1);
                self.note_error(&format!("connect to {}: {e}", c.addr));
                c.reconnect_at = Some(now + RECONNECT_DELAY);
                return false;
            }
        };
        let setup = stream
            .set_nodelay(true)
            .and_then(|_| stream.set_nonblocking(true))
            .and_then(|_| self.poller.add(stream.as_raw_fd(), index as u64));
        if let Err(e) = setup {
            self.stats.error("CONNECT", 1);
            self.note_error(&format!("set up connection to {}: {e}", c.addr));
            c.reconnect_at = Some(now + RECONNECT_DELAY);
            return false;
        }
        c.stream = Some(stream);
        let mut result = Ok(());
        if self.plan.op_interval.is_none() {
            while c.active < self.plan.pipeline && result.is_ok() {
                match self.start(c, now) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => result = Err(e),
                }
            }
        } else if c.next_due < now {
            c.next_due = now;
        }
        if result.is_ok() {
            result = flush(c);
        }
        if let Err(e) = result {
            self.fail(c, &e);
            return false;
        }
        true
    }

    fn note_error(&mut self, text: &str) {
        if self.errors_printed < 5 {
            eprintln!("paxoskv-bench: {text}");
            self.errors_printed += 1;
        }
    }

    /// Drops a failed connection: its unfinished operations count as `IO` errors.
    fn fail(&mut self, c: &mut Conn, text: &str) {
        self.note_error(&format!("connection to {}: {text}", c.addr));
        if c.active > 0 {
            self.stats.error("IO", c.active as u64);
        }
        if let Some(s) = c.stream.take() {
            self.poller.remove(s.as_raw_fd());
        }
        c.active = 0;
        c.inflight.clear();
        c.txns.clear();
        c.free_slots.clear();
        c.rstart = 0;
        c.rend = 0;
        c.wbuf.clear();
        c.wpos = 0;
        if self.phase != PHASE_STOP {
            c.reconnect_at = Some(Instant::now() + RECONNECT_DELAY);
        }
    }

    /// Starts one logical operation intended at `started`. `Ok(false)`: nothing left to start.
    fn start(&mut self, c: &mut Conn, started: Instant) -> Result<bool, String> {
        let plan = Arc::clone(&self.plan);
        let key_size = plan.key_size_bytes;
        let (op, key_index) = match plan.workload {
            Workload::Populate { keys_count } => {
                let i = self.control.populate_next.fetch_add(1, Ordering::Relaxed);
                if i >= keys_count {
                    return Ok(false);
                }
                (OpKind::Set, i)
            }
            Workload::Write => (OpKind::Set, plan.keys.next(&mut self.rng)),
            Workload::Read => (OpKind::Get, plan.keys.next(&mut self.rng)),
            Workload::Mixed { read_ratio } => {
                let op = if self.rng.gen::<f64>() < read_ratio {
                    OpKind::Get
                } else {
                    OpKind::Set
                };
                (op, plan.keys.next(&mut self.rng))
            }
            Workload::Txn => (OpKind::Txn, plan.keys.next(&mut self.rng)),
            Workload::Range { .. } => (OpKind::Range, plan.keys.next(&mut self.rng)),
            Workload::Ping => (OpKind::Ping, 0),
        };
        write_key(&mut self.key_buf, key_index, key_size);
        let key = &self.key_buf[..];
        let mut slot = 0;
        let req = match op {
            OpKind::Set => Request::Set {
                key,
                value: &plan.value,
            },
            OpKind::Get => Request::Get { key },
            OpKind::Range => Request::Range {
                begin_key: key,
                limit: match plan.workload {
                    Workload::Range { limit } => limit,
                    _ => 1,
                },
            },
            OpKind::Ping => Request::Ping,
            OpKind::Txn => {
                let s = TxnSlot {
                    key_index,
                    started,
                    read_version: 0,
                };
                slot = match c.free_slots.pop() {
                    Some(i) => {
                        c.txns[i as usize] = s;
                        i
                    }
                    None => {
                        c.txns.push(s);
                        (c.txns.len() - 1) as u32
                    }
                };
                Request::ReadVersion
            }
        };
        issue(&plan.wire, c, &req, op, slot, started)?;
        c.active += 1;
        Ok(true)
    }

    /// Reads everything available and handles each complete reply.
    fn on_readable(&mut self, c: &mut Conn) -> Result<(), String> {
        loop {
            if c.rend == c.rbuf.len() {
                if c.rstart > 0 {
                    c.rbuf.copy_within(c.rstart..c.rend, 0);
                    c.rend -= c.rstart;
                    c.rstart = 0;
                } else {
                    let n = c.rbuf.len() * 2;
                    c.rbuf.resize(n, 0);
                }
            }
            let Some(stream) = c.stream.as_mut() else {
                return Ok(());
            };
            match stream.read(&mut c.rbuf[c.rend..]) {
                Ok(0) => return Err("closed by the server".into()),
                Ok(n) => c.rend += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
            self.parse_replies(c)?;
        }
        self.parse_replies(c)?;
        if c.rstart == c.rend {
            c.rstart = 0;
            c.rend = 0;
        }
        Ok(())
    }

    fn parse_replies(&mut self, c: &mut Conn) -> Result<(), String> {
        while c.rstart < c.rend {
            let Some(front) = c.inflight.front() else {
                return Err(format!(
                    "{} bytes arrived with no request pending",
                    c.rend - c.rstart
                ));
            };
            match self
                .plan
                .wire
                .parse(&c.rbuf[c.rstart..c.rend], front.method, front.sequence)?
            {
                None => break,
                Some((n, reply)) => {
                    c.rstart += n;
                    if let Some(p) = c.inflight.pop_front() {
                        self.on_reply(c, p, reply)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_reply(&mut self, c: &mut Conn, p: Pending, reply: Reply) -> Result<(), String> {
        let now = Instant::now();
        if p.op == OpKind::Txn {
            let plan = Arc::clone(&self.plan);
            let idx = p.slot as usize;
            let Some(slot) = c.txns.get(idx).copied() else {
                return Err(format!("reply for unknown transaction slot {}", p.slot));
            };
            write_key(&mut self.key_buf, slot.key_index, plan.key_size_bytes);
            let key = &self.key_buf[..];
            let next = match (p.method, &reply) {
                (Method::ReadVersion, Reply::ReadVersion(rv)) => {
                    c.txns[idx].read_version = *rv;
                    Some(Request::SnapshotRead {
                        key,
                        read_version: *rv,
                    })
                }
                (Method::SnapshotRead, Reply::Ok) => Some(Request::Commit {
                    key,
                    value: &plan.value,
                    read_version: slot.read_version,
                }),
                _ => None,
            };
            if let Some(req) = next {
                return issue(&plan.wire, c, &req, OpKind::Txn, p.slot, slot.started);
            }
            match reply {
                Reply::Ok if p.method == Method::Commit => {
                    self.stats
                        .record(OpKind::Txn, nanos(now, slot.started), false)
                }
                Reply::Conflict => self
                    .stats
                    .record(OpKind::Txn, nanos(now, slot.started), true),
                Reply::Failed(code) => self.stats.error(&code, 1),
                other => self
                    .stats
                    .error(&format!("UNEXPECTED_{other:?}").to_uppercase(), 1),
            }
            c.free_slots.push(p.slot);
        } else {
            match reply {
                Reply::Ok | Reply::ReadVersion(_) => {
                    self.stats.record(p.op, nanos(now, p.started), false)
                }
                Reply::Conflict => self.stats.record(p.op, nanos(now, p.started), true),
                Reply::Failed(code) => self.stats.error(&code, 1),
            }
        }
        c.active -= 1;
        self.refill(c, now)
    }

    /// Starts new operations after one finished: the next intended one in open loop, a fresh one
    /// in closed loop (unless the run is stopping).
    fn refill(&mut self, c: &mut Conn, now: Instant) -> Result<(), String> {
        if self.phase == PHASE_STOP {
            return Ok(());
        }
        if self.plan.op_interval.is_some() {
            while c.active < self.plan.pipeline {
                let Some(due) = c.backlog.pop_front() else {
                    break;
                };
                self.start(c, due)?;
            }
        } else {
            while c.active < self.plan.pipeline {
                if !self.start(c, now)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

fn nanos(now: Instant, started: Instant) -> u64 {
    now.saturating_duration_since(started).as_nanos() as u64
}

/// Encodes `req` into the connection's write buffer and remembers the reply it expects.
fn issue(
    wire: &Wire,
    c: &mut Conn,
    req: &Request,
    op: OpKind,
    slot: u32,
    started: Instant,
) -> Result<(), String> {
    c.sequence = c.sequence.wrapping_add(1);
    wire.encode(req, c.sequence, &mut c.wbuf)?;
    c.inflight.push_back(Pending {
        method: req.method(),
        sequence: c.sequence,
        op,
        started,
        slot,
    });
    Ok(())
}

/// Writes what is buffered; a partial write waits for the next EPOLLOUT edge.
fn flush(c: &mut Conn) -> Result<(), String> {
    let Some(stream) = c.stream.as_mut() else {
        return Ok(());
    };
    while c.wpos < c.wbuf.len() {
        match stream.write(&c.wbuf[c.wpos..]) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(n) => c.wpos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    c.wbuf.clear();
    c.wpos = 0;
    Ok(())
}
