//! One pipelined connection: callers encode their request and write it themselves (whoever
//! holds the write half also writes what others queued meanwhile, in one write: no task hop
//! per call), a reader task cuts replies off the stream and hands each to the caller whose
//! sequence id it carries. Never more than `max_in_flight` requests are
//! outstanding; a reply bigger than `max_reply_bytes` closes the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};

use super::lock;
use crate::front::codec::binary_message_len;
use crate::front::wire::{self, Rpc};

/// Why a call on a connection got no reply.
#[derive(Debug, Clone)]
pub(crate) enum ConnError {
    /// The request never left this client: safe to send anywhere again.
    NotSent(String),
    /// The request may have reached the server; its reply did not come back.
    Lost(String),
    /// The reply came but cannot be read (or was an application exception).
    Protocol(String),
}

/// A connection could not be made (nothing was sent on it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConnectError(pub(crate) String);

type Waiter = oneshot::Sender<Result<Vec<u8>, ConnError>>;

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Shape of a connection.
#[derive(Clone)]
pub(crate) struct ConnOptions {
    pub framed: bool,
    pub max_in_flight: usize,
    pub max_reply_bytes: usize,
    pub connect_timeout: Duration,
    pub tls: Option<(super::tls::TlsConfig, Arc<rustls::ClientConfig>)>,
}

pub(crate) struct Conn {
    writer: tokio::sync::Mutex<Writer>,
    /// Request bytes queued by callers that found the writer busy; its holder writes them.
    queued: Mutex<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
    next_sequence: AtomicI32,
    in_flight: Arc<Semaphore>,
    waiting: Arc<Mutex<HashMap<i32, Waiter>>>,
    dead: Arc<AtomicBool>,
    framed: bool,
}

impl Conn {
    /// Connects (TCP_NODELAY; TLS when configured) and starts the connection's reader and
    /// writer tasks.
    pub(crate) async fn connect(addr: &str, o: &ConnOptions) -> Result<Conn, ConnectError> {
        let stream = tokio::time::timeout(o.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError(format!("connecting to {addr} timed out")))?
            .map_err(|e| ConnectError(format!("connecting to {addr}: {e}")))?;
        stream
            .set_nodelay(true)
            .map_err(|e| ConnectError(format!("TCP_NODELAY on {addr}: {e}")))?;
        let waiting = Arc::new(Mutex::new(HashMap::new()));
        let dead = Arc::new(AtomicBool::new(false));
        let (w, d) = (waiting.clone(), dead.clone());
        let (writer, reader): (Writer, _) = match &o.tls {
            None => {
                let (rd, wr) = stream.into_split();
                (Box::new(wr), tokio::spawn(read_loop(rd, o.clone(), w, d)))
            }
            Some((t, config)) => {
                let name = super::tls::server_name(t, addr)?;
                let tls = tokio_rustls::TlsConnector::from(config.clone());
                let stream = tokio::time::timeout(o.connect_timeout, tls.connect(name, stream))
                    .await
                    .map_err(|_| ConnectError(format!("TLS handshake with {addr} timed out")))?
                    .map_err(|e| ConnectError(format!("TLS handshake with {addr}: {e}")))?;
                let (rd, wr) = tokio::io::split(stream);
                (Box::new(wr), tokio::spawn(read_loop(rd, o.clone(), w, d)))
            }
        };
        Ok(Conn {
            writer: tokio::sync::Mutex::new(writer),
            queued: Mutex::new(Vec::new()),
            reader,
            next_sequence: AtomicI32::new(1),
            in_flight: Arc::new(Semaphore::new(o.max_in_flight.max(1))),
            waiting,
            dead,
            framed: o.framed,
        })
    }

    /// True once either direction failed; the pool replaces a dead connection.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Sends `req` and waits for its reply, at most `timeout` (a timeout is `Lost`: the
    /// request may have been sent).
    pub(crate) async fn call<R: Rpc>(
        &self,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, ConnError> {
        let permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| ConnError::NotSent("connection closed".into()))?;
        if self.is_dead() {
            return Err(ConnError::NotSent("connection closed".into()));
        }
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let (tx, rx) = oneshot::channel();
        // Registered before its bytes can leave, so its reply always finds it.
        lock(&self.waiting).insert(sequence, tx);
        wire::encode_call(&mut lock(&self.queued), sequence, req, self.framed);
        self.flush().await;
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ConnError::Lost("connection task ended".into())),
            Err(_) => {
                lock(&self.waiting).remove(&sequence);
                Err(ConnError::Lost(format!(
                    "no reply within the client's request timeout ({timeout:?})"
                )))
            }
        };
        drop(permit);
        let msg = reply?;
        match wire::decode_reply::<R::Response>(&msg) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(app)) => Err(ConnError::Protocol(format!(
                "application exception {:?}: {}",
                app.kind, app.message
            ))),
            Err(e) => Err(ConnError::Protocol(format!("unreadable reply: {e}"))),
        }
    }
}

impl Conn {
    /// Writes what is queued, unless another caller holds the writer: that one writes it (it
    /// looks at the queue again after letting go, so nothing queued meanwhile is left behind).
    async fn flush(&self) {
        loop {
            let Ok(mut w) = self.writer.try_lock() else {
                return;
            };
            loop {
                let bytes = std::mem::take(&mut *lock(&self.queued));
                if bytes.is_empty() {
                    break;
                }
                // A caller dropped mid-write (its own timeout, a select) would leave half a
                // request on the stream: the guard then retires the connection.
                let guard = Retire(self);
                let sent = match w.write_all(&bytes).await {
                    Ok(()) => w.flush().await,
                    Err(e) => Err(e),
                };
                std::mem::forget(guard);
                if let Err(e) = sent {
                    fail_all(&self.waiting, &self.dead, &format!("write failed: {e}"));
                    return;
                }
            }
            drop(w);
            if lock(&self.queued).is_empty() {
                return;
            }
        }
    }
}

struct Retire<'a>(&'a Conn);

impl Drop for Retire<'_> {
    fn drop(&mut self) {
        fail_all(
            &self.0.waiting,
            &self.0.dead,
            "a write was cancelled half-way",
        );
    }
}

impl Drop for Conn {
    /// The pool dropped the connection: stop its reader (the write half closes with it).
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Fails every waiting call with `Lost` and marks the connection dead.
fn fail_all(waiting: &Mutex<HashMap<i32, Waiter>>, dead: &AtomicBool, why: &str) {
    dead.store(true, Ordering::Release);
    for (_, w) in lock(waiting).drain() {
        let _ = w.send(Err(ConnError::Lost(why.to_string())));
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    o: ConnOptions,
    waiting: Arc<Mutex<HashMap<i32, Waiter>>>,
    dead: Arc<AtomicBool>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut first = true;
    let why = loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) => break "the server closed the connection".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
        // A TLS record (alert or handshake) where a Thrift reply should be: plain TCP to a
        // TLS front.
        if std::mem::take(&mut first) && o.tls.is_none() && looks_like_tls(&buf) {
            break "the endpoint speaks TLS: set Config::tls (paxoskv kv: --tls-ca)".to_string();
        }
        match cut_replies(&mut buf, &o, &waiting) {
            Ok(()) => {}
            Err(e) => break e,
        }
        if dead.load(Ordering::Acquire) {
            break "connection closed".to_string();
        }
    };
    fail_all(&waiting, &dead, &why);
}

/// A TLS record header: content type alert (21) or handshake (22), version 3.x.
fn looks_like_tls(b: &[u8]) -> bool {
    b.len() >= 3 && (b[0] == 21 || b[0] == 22) && b[1] == 3 && b[2] <= 4
}

/// Hands every complete reply at the front of `buf` to its waiter and drops the consumed bytes.
fn cut_replies(
    buf: &mut Vec<u8>,
    o: &ConnOptions,
    waiting: &Mutex<HashMap<i32, Waiter>>,
) -> Result<(), String> {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        let (skip, len) = if o.framed {
            if rest.len() < 4 {
                break;
            }
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            (4, n)
        } else {
            match binary_message_len(rest) {
                Ok(Some(n)) => (0, n),
                Ok(None) => {
                    if rest.len() > o.max_reply_bytes {
                        return Err(format!(
                            "a reply over the client's max_reply_bytes ({})",
                            o.max_reply_bytes
                        ));
                    }
                    break;
                }
                Err(e) => return Err(format!("unreadable reply stream: {e}")),
            }
        };
        if len > o.max_reply_bytes {
            return Err(format!(
                "a {len}-byte reply is over the client's max_reply_bytes ({})",
                o.max_reply_bytes
            ));
        }
        if rest.len() < skip + len {
            break;
        }
        let msg = &rest[skip..skip + len];
        let sequence =
            wire::reply_sequence(msg).map_err(|e| format!("unreadable reply header: {e}"))?;
        // A reply nobody waits for belongs to a call that timed out: dropped.
        if let Some(w) = lock(waiting).remove(&sequence) {
            let _ = w.send(Ok(msg.to_vec()));
        }
        at += skip + len;
    }
    buf.drain(..at);
    Ok(())
}
