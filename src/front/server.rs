//! The Thrift listener and the per-connection loop, on a glommio executor (io_uring TCP).
//!
//! A connection reads bytes, cuts complete messages (`codec`), decodes them (`wire`) and starts
//! each call at once (`cmd::handle`), so several requests are in flight per connection.
//! A writer task awaits the replies in request order and writes every reply that is ready in one
//! `write_all`. Malformed input closes that connection only (with a log line); the limits
//! (connections, message size, requests in flight) come from `[thrift]` in the config.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::future::poll_once;
use futures_lite::AsyncReadExt;
use glommio::net::TcpListener;
use glommio::task::JoinHandle;
use thrift::ApplicationError;

use super::cmd::handle;
use super::codec::{self, FrameError, Scan, Transport};
use super::ctx::FrontCtx;
use super::send_batch::ReplySink;
use super::spread::{ReadMostly, Spreader};
use super::wire::{self, Response};
use crate::service::{ErrorCode, KvService, ServiceError};
use crate::txn::interactive::Session;
use crate::types::Version;
use crate::util::read_buf::ReadBuf;

/// Pause after a failed accept before trying again.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(10);
/// How often, at most, the idle sweep runs (it runs four times per `idle_timeout`).
const IDLE_SWEEP_MIN: std::time::Duration = std::time::Duration::from_millis(50);

const READ_CHUNK_BYTES: usize = 64 << 10;

enum Reply {
    Pending(glommio::Task<Response>),
    /// Answered without running (refused at once).
    Ready(Response),
    Exception(ApplicationError),
}

struct Outgoing {
    name: String,
    sequence: i32,
    framed: bool,
    reply: Reply,
    /// Request bytes this call holds until its reply is written.
    bytes: u64,
    /// Room held for a range reply in the connection's bound until the reply is written.
    room: u64,
}

/// Request bytes in flight on one connection and over the whole front, released as replies
/// go out; the reader waits on `progress` while the connection is over its bound.
struct InFlight<S> {
    ctx: Rc<FrontCtx<S>>,
    conn: Cell<u64>,
    /// Room held for range replies not yet written (this connection's bound only: other
    /// clients are never refused for what a range call might return).
    room: Cell<u64>,
    progress: glommio::channels::local_channel::LocalSender<()>,
}

impl<S> InFlight<S> {
    fn take(&self, n: u64, room: u64) {
        self.conn.set(self.conn.get() + n);
        self.room.set(self.room.get() + room);
        self.ctx
            .shared
            .in_flight_bytes
            .fetch_add(n, Ordering::Relaxed);
    }
    fn release(&self, n: u64, room: u64) {
        self.conn.set(self.conn.get().saturating_sub(n));
        self.room.set(self.room.get().saturating_sub(room));
        self.ctx
            .shared
            .in_flight_bytes
            .fetch_sub(n, Ordering::Relaxed);
        let _ = self.progress.try_send(());
    }
    /// What counts against the connection's bound.
    fn held(&self) -> u64 {
        self.conn.get() + self.room.get()
    }
}

/// One connection's side of the idle sweep: when it last read, and the signal that closes it.
struct IdleWatch {
    last_active: Rc<Cell<std::time::Instant>>,
    closer: futures_channel::oneshot::Receiver<()>,
}

type IdleRegistry = Rc<
    RefCell<
        std::collections::HashMap<
            u64,
            (
                Rc<Cell<std::time::Instant>>,
                futures_channel::oneshot::Sender<()>,
            ),
        >,
    >,
>;

/// Closes connections that read nothing for `idle_timeout`, checking a few times per period.
async fn sweep_idle(registry: IdleRegistry, idle_timeout: std::time::Duration) {
    let every = (idle_timeout / 4).max(IDLE_SWEEP_MIN);
    loop {
        glommio::timer::sleep(every).await;
        let now = std::time::Instant::now();
        let idle: Vec<u64> = registry
            .borrow()
            .iter()
            .filter(|(_, (last, _))| now.duration_since(last.get()) >= idle_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            if let Some((_, close)) = registry.borrow_mut().remove(&id) {
                let _ = close.send(());
            }
        }
    }
}

/// The connections one executor serves: their idle sweep and ids.
pub(super) struct Conns {
    registry: IdleRegistry,
    next_id: Cell<u64>,
}

impl Conns {
    /// Starts the idle sweep of this executor's connections (it runs while the executor does).
    pub(super) fn start<S>(ctx: &FrontCtx<S>) -> Rc<Conns> {
        let registry: IdleRegistry = Rc::default();
        glommio::spawn_local(sweep_idle(registry.clone(), ctx.limits.idle_timeout)).detach();
        Rc::new(Conns {
            registry,
            next_id: Cell::new(0),
        })
    }

    fn watch(&self) -> (u64, IdleWatch) {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        let last_active = Rc::new(Cell::new(std::time::Instant::now()));
        let (close, closer) = futures_channel::oneshot::channel();
        self.registry
            .borrow_mut()
            .insert(id, (last_active.clone(), close));
        (
            id,
            IdleWatch {
                last_active,
                closer,
            },
        )
    }
}

/// How a connection starts: with bytes already read past the last complete message and the
/// transport already seen (a connection handed over from another executor), or fresh.
#[derive(Default)]
pub(super) struct Start {
    pub(super) pending: Vec<u8>,
    pub(super) transport: Option<Transport>,
    /// The session's committed version, carried from the executor it was handed over by.
    pub(super) committed_version: Option<Version>,
}

/// How a connection's service ended without an error.
enum Served {
    /// The peer closed it.
    Closed,
    /// It moved to another executor (`spread`) and stays open there.
    HandedOver,
}

/// Accepts connections until the listener fails; each connection is served by its own task.
/// Returns when `stop` fires (or its sender is dropped): the listener closes, so no new
/// connection is accepted; connections already open keep being served until the process ends.
/// With a `spread`, connections that mostly read may move to other executors (`spread.rs`).
pub async fn run_thrift_listener<S: KvService>(
    listener: TcpListener,
    ctx: Rc<FrontCtx<S>>,
    tls: Option<futures_rustls::TlsAcceptor>,
    stop: futures_channel::oneshot::Receiver<()>,
    spread: Option<Rc<Spreader>>,
) {
    let conns = Conns::start(&ctx);
    let mut stop = stop;
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = (&mut stop).await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            return;
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let open = &ctx.shared.open_connections;
        if open.fetch_add(1, Ordering::SeqCst) >= ctx.limits.max_connections {
            open.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(
                limit = ctx.limits.max_connections,
                "connection refused: thrift.max_connections reached"
            );
            drop(stream);
            continue;
        }
        ctx.shared.metrics.connection_opened();
        glommio::spawn_local(run_connection(
            ctx.clone(),
            conns.clone(),
            stream,
            tls.clone(),
            Start::default(),
            spread.clone(),
        ))
        .detach();
    }
}

/// Serves one connection (counted in `shared.open_connections` by whoever accepted it) until
/// it closes or moves to another executor.
pub(super) async fn run_connection<S: KvService>(
    ctx: Rc<FrontCtx<S>>,
    conns: Rc<Conns>,
    stream: glommio::net::TcpStream,
    tls: Option<futures_rustls::TlsAcceptor>,
    start: Start,
    spread: Option<Rc<Spreader>>,
) {
    let (conn_id, idle) = conns.watch();
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let metrics = ctx.shared.metrics.clone();
    let shared = ctx.shared.clone();
    let _ = stream.set_nodelay(true);
    let res = match tls {
        None => {
            let movable = spread.map(|s| ReadMostly::new(s, stream.as_raw_fd()));
            let batched = ctx.limits.batch_reply_sends.then(|| stream.as_raw_fd());
            serve_connection(stream, ctx, idle, start, movable, batched).await
        }
        Some(acceptor) => {
            // The handshake is bounded like any started message (thrift.read_timeout).
            let timeout = ctx.limits.read_timeout;
            match crate::util::time::within(timeout, acceptor.accept(stream)).await {
                Some(Ok(tls_stream)) => {
                    serve_connection(tls_stream, ctx, idle, start, None, None).await
                }
                Some(Err(e)) => Err(Closed::Tls(e)),
                None => Err(Closed::TlsTimeout(timeout)),
            }
        }
    };
    conns.registry.borrow_mut().remove(&conn_id);
    if let Ok(Served::HandedOver) = res {
        metrics.connection_handed_over();
        return;
    }
    if let Err(reason) = &res {
        tracing::info!(%peer, %reason, "closed thrift connection");
    }
    metrics.connection_closed(res.is_err());
    shared.open_connections.fetch_sub(1, Ordering::SeqCst);
}

/// Why the front closed a client's connection (logged with the peer's address).
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("undecodable message header: {0}")]
    Header(String),
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("TLS handshake not completed within thrift.read_timeout ({0:?})")]
    TlsTimeout(Duration),
    #[error("message not completed within thrift.read_timeout ({0:?}); closed")]
    ReadTimeout(Duration),
    #[error("idle for thrift.idle_timeout ({0:?}); closed")]
    Idle(Duration),
    #[error("connection closed inside a message ({0} bytes pending)")]
    Truncated(usize),
    #[error("writer stopped")]
    WriterStopped,
    #[error("the executor it was handed to has stopped")]
    HandOff,
}

/// Serves one connection until the peer closes it, sends something unusable, or (with
/// `movable`) it moves to another executor.
async fn serve_connection<S, IO>(
    stream: IO,
    ctx: Rc<FrontCtx<S>>,
    mut idle: IdleWatch,
    start: Start,
    mut movable: Option<ReadMostly>,
    batched: Option<RawFd>,
) -> Result<Served, Closed>
where
    S: KvService,
    IO: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let (mut rd, wr) = futures_lite::io::split(stream);
    let (tx, rx) = glommio::channels::local_channel::new_bounded::<Outgoing>(
        ctx.limits.max_in_flight_per_connection as usize,
    );
    let (progress, progress_rx) = glommio::channels::local_channel::new_bounded::<()>(1);
    let inflight = Rc::new(InFlight {
        ctx: ctx.clone(),
        conn: Cell::new(0),
        room: Cell::new(0),
        progress,
    });
    let writer: JoinHandle<Result<(), Closed>> =
        glommio::spawn_local(run_writer(rx, ReplySink { wr, batched }, inflight.clone())).detach();
    let session = Rc::new(RefCell::new(Session {
        committed_version: start.committed_version,
        ..Session::default()
    }));
    let max = ctx.limits.max_message_bytes as usize;
    let mut buf = ReadBuf::new(READ_CHUNK_BYTES);
    let n = start.pending.len();
    buf.spare(n)[..n].copy_from_slice(&start.pending);
    buf.filled(n);
    let mut transport = start.transport;
    let mut handing = None;
    // The walk through a partly read message, resumed as bytes arrive (linear, not quadratic).
    let mut scan_state = codec::ScanState::default();
    let result = 'conn: loop {
        // Cut and start every complete message in the buffer.
        loop {
            let pending = buf.pending();
            let t = match transport {
                Some(t) => t,
                None => match codec::detect(pending) {
                    Ok(Some(t)) => {
                        transport = Some(t);
                        t
                    }
                    Ok(None) => break,
                    Err(e) => break 'conn Err(e.into()),
                },
            };
            let (header, body) = match codec::scan_resume(pending, t, max, &mut scan_state) {
                Ok(Scan::Complete { header, body }) => {
                    scan_state = codec::ScanState::default();
                    (header, body)
                }
                Ok(Scan::Incomplete) => break,
                Err(e) => break 'conn Err(e.into()),
            };
            let msg = &pending[header..header + body];
            let incoming = match wire::decode(msg) {
                Ok(i) => i,
                Err(e) => break 'conn Err(Closed::Header(e.to_string())),
            };
            buf.consume(header + body);
            if let (Some(r), Ok(call)) = (movable.as_mut(), &incoming.call) {
                r.note(call);
            }
            // A range call holds room for its largest reply until that reply is written: the
            // replies a connection has not read stay within its in-flight bound, not
            // max_in_flight_per_connection times the largest range.
            let room = match &incoming.call {
                Ok(c) if c.returns_range() => ctx.limits.max_range_reply_bytes,
                _ => 0,
            };
            let bytes = (header + body) as u64;
            let overloaded = ctx.shared.in_flight_bytes.load(Ordering::Relaxed) + bytes
                > ctx.limits.max_in_flight_bytes_total;
            let reply = match incoming.call {
                // Refused in the method's own response (UNAVAILABLE: not run, safe to retry).
                Ok(call) if overloaded => {
                    let e = ServiceError::new(
                        ErrorCode::Unavailable,
                        "too many request bytes in flight on this server \
                         (thrift.max_in_flight_bytes_total); retry",
                    );
                    Reply::Ready(call.refused(&e))
                }
                Ok(call) => Reply::Pending(glommio::spawn_local(handle(&ctx, &session, call))),
                Err(e) => Reply::Exception(e),
            };
            inflight.take(bytes, room);
            let out = Outgoing {
                name: incoming.name,
                sequence: incoming.sequence,
                framed: t == Transport::Framed,
                reply,
                bytes,
                room,
            };
            if tx.send(out).await.is_err() {
                break 'conn Err(Closed::WriterStopped);
            }
            // A client that does not read its replies stops being read.
            while inflight.held() > ctx.limits.max_in_flight_bytes_per_connection {
                if progress_rx.recv().await.is_none() {
                    break 'conn Err(Closed::WriterStopped);
                }
            }
        }
        let pending = buf.pending().len();
        let room = READ_CHUNK_BYTES.min(max + 8 - pending.min(max));
        // A started message must complete within the read timeout (a timer, armed only then:
        // slow senders hold no connection for long); a silent connection is closed by the
        // listener's idle sweep (no timer per read on the hot path).
        let read =
            futures_lite::future::or(async { Some(rd.read(buf.spare(room)).await) }, async {
                if pending > 0 {
                    futures_lite::future::or(
                        async {
                            glommio::timer::sleep(ctx.limits.read_timeout).await;
                        },
                        async {
                            let _ = (&mut idle.closer).await;
                        },
                    )
                    .await;
                } else {
                    let _ = (&mut idle.closer).await;
                }
                None
            })
            .await;
        let Some(read) = read else {
            break Err(if pending > 0 {
                Closed::ReadTimeout(ctx.limits.read_timeout)
            } else {
                Closed::Idle(ctx.limits.idle_timeout)
            });
        };
        idle.last_active.set(std::time::Instant::now());
        match read {
            Ok(0) => {
                if !buf.pending().is_empty() {
                    break Err(Closed::Truncated(buf.pending().len()));
                }
                break Ok(Served::Closed);
            }
            Ok(n) => buf.filled(n),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ok(Served::Closed),
            Err(e) => break Err(Closed::Read(e)),
        }
        // Every reply written (the client sent again): the moment a connection that mostly
        // reads may move, with what it just read.
        if let Some(r) = movable.as_mut() {
            if let Some(home) = r.hand_to(inflight.held() == 0, &session.borrow()) {
                match r.package(buf.pending(), transport, &session.borrow()) {
                    Ok(h) => {
                        handing = Some((home, h));
                        break Ok(Served::HandedOver);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot hand a connection over; it stays"),
                }
            }
        }
    };
    drop(tx);
    let written = writer.await.unwrap_or(Ok(()));
    // Whatever was never answered no longer counts against the front.
    inflight.release(inflight.conn.get(), inflight.room.get());
    let result = result.and_then(|served| written.map(|()| served))?;
    // Sent only now: its replies are written, so the helper is the only one to touch it.
    if let Some((home, h)) = handing {
        home.unbounded_send(h).map_err(|_| Closed::HandOff)?;
    }
    Ok(result)
}

/// Writes replies in request order, coalescing those already done into one write.
async fn run_writer<W: futures_lite::AsyncWrite + Unpin, S>(
    rx: glommio::channels::local_channel::LocalReceiver<Outgoing>,
    mut wr: ReplySink<W>,
    inflight: Rc<InFlight<S>>,
) -> Result<(), Closed> {
    // Request bytes and range-reply room of the replies encoded in `out` but not written yet.
    let mut encoded = (0u64, 0u64);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut next = rx.recv().await;
    while let Some(mut item) = next.take() {
        loop {
            let (name, seq, framed) = (&item.name, item.sequence, item.framed);
            match &mut item.reply {
                Reply::Pending(task) => {
                    let r = match poll_once(&mut *task).await {
                        Some(r) => r,
                        None => {
                            // Not ready: send what is ready before waiting on it.
                            flush(&mut wr, &mut out, &inflight, &mut encoded).await?;
                            task.await
                        }
                    };
                    wire::encode_reply(&mut out, name, seq, &r, framed)
                }
                Reply::Ready(r) => wire::encode_reply(&mut out, name, seq, r, framed),
                Reply::Exception(e) => wire::encode_exception(&mut out, name, seq, e, framed),
            }
            encoded.0 += item.bytes;
            encoded.1 += item.room;
            match poll_once(rx.recv()).await {
                Some(Some(i)) => item = i,
                Some(None) => {
                    flush(&mut wr, &mut out, &inflight, &mut encoded).await?;
                    return Ok(());
                }
                None => break,
            }
        }
        flush(&mut wr, &mut out, &inflight, &mut encoded).await?;
        next = rx.recv().await;
    }
    flush(&mut wr, &mut out, &inflight, &mut encoded).await?;
    Ok(())
}

/// Writes the encoded replies, then releases what their requests held (`held`: request
/// bytes and range-reply room).
async fn flush<W: futures_lite::AsyncWrite + Unpin, S>(
    wr: &mut ReplySink<W>,
    out: &mut Vec<u8>,
    inflight: &InFlight<S>,
    held: &mut (u64, u64),
) -> Result<(), Closed> {
    if !out.is_empty() {
        let r = wr.write_all(out).await;
        out.clear();
        r.map_err(Closed::Write)?;
    }
    let (n, room) = std::mem::take(held);
    inflight.release(n, room);
    Ok(())
}
