//! Connections: the inbound listener (handshake, then frames to a delivery callback) and one
//! outbound writer per peer (dial, handshake, then batched frame writes; reconnect with
//! exponential backoff).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future::poll_once;
use futures_lite::AsyncReadExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use zerocopy::FromBytes;

use super::frame::{self, FrameHeader, FrameKind, ACK_BYTES, FRAME_HEADER_BYTES, HELLO_BYTES};
use super::TransportError;
use super::{Inbound, TransportFaults};
use crate::util::io::write_all_flushed;
use crate::util::read_buf::ReadBuf;

/// Pause after a failed accept before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub me: u32,
    pub replica_count: u32,
    pub cluster_id: String,
    pub secret: Vec<u8>,
    /// `host:port` of every replica, by id.
    pub peers: Vec<String>,
    pub max_frame_bytes: u32,
    pub connect_timeout: Duration,
    pub backoff_max: Duration,
    /// Frames waiting for one peer at most; more are dropped.
    pub queue_frames_max: usize,
    /// Payload bytes waiting for one peer at most; more are dropped (Paxos resends what
    /// matters: Accepts on the heartbeat, missing slots by catch-up or snapshot).
    pub queue_bytes_max: usize,
    /// Mutual TLS on every link (`[network] tls_*`); `None`: plain TCP.
    pub tls: Option<crate::tls::ReplicaTls>,
}

/// A link's byte stream: plain TCP, or TLS over it.
pub(crate) trait LinkIo: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin {}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin> LinkIo for T {}
type Link = Box<dyn LinkIo>;

const BACKOFF_MIN: Duration = Duration::from_millis(5);
const WRITE_BATCH_BYTES_MAX: usize = 4 << 20;

async fn with_deadline<T>(
    d: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    crate::util::time::within(d, f).await.unwrap_or_else(|| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        ))
    })
}

/// Accepts peers' connections and delivers their frames until the listener fails.
pub async fn run_listener<F>(
    listener: TcpListener,
    cfg: Rc<TransportConfig>,
    faults: Arc<TransportFaults>,
    deliver: F,
) where
    F: Fn(Inbound) + 'static,
{
    let deliver = Rc::new(deliver);
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(replica = cfg.me, error = %e, "replica accept failed");
                glommio::timer::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let cfg = cfg.clone();
        let faults = faults.clone();
        let deliver = deliver.clone();
        glommio::spawn_local(async move {
            if let Err(e) = serve_peer(stream, &cfg, &faults, &*deliver).await {
                tracing::debug!(replica = cfg.me, error = %e, "inbound replica connection closed");
            }
        })
        .detach();
    }
}

async fn serve_peer(
    stream: TcpStream,
    cfg: &TransportConfig,
    faults: &TransportFaults,
    deliver: &dyn Fn(Inbound),
) -> Result<(), TransportError> {
    let _ = stream.set_nodelay(true);
    let (mut stream, peer_certs): (Link, _) = match &cfg.tls {
        None => (Box::new(stream), None),
        Some(tls) => {
            let s = match with_deadline(cfg.connect_timeout, tls.acceptor.accept(stream)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(replica = cfg.me, error = %e, "refused a replica connection: TLS handshake failed");
                    return Err(TransportError::Tls(e.to_string()));
                }
            };
            let certs: Option<Vec<_>> = s
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
            (Box::new(s), certs)
        }
    };
    let from = {
        let mut h = [0u8; HELLO_BYTES];
        with_deadline(cfg.connect_timeout, stream.read_exact(&mut h)).await?;
        let res = match frame::parse_hello(&h) {
            Ok(hh) => {
                let mut rest =
                    vec![0u8; hh.cluster_id_len.get() as usize + hh.nonce_len.get() as usize];
                with_deadline(cfg.connect_timeout, stream.read_exact(&mut rest)).await?;
                frame::check_hello(&hh, &rest, &cfg.cluster_id, cfg.replica_count)
            }
            Err(e) => Err(e),
        };
        // Under TLS the id a dialer claims must be the one its certificate names.
        let res = res.and_then(|(claimed, nonce)| {
            if cfg.tls.is_some() {
                crate::tls::cert_names_replica(peer_certs.as_deref(), claimed)
                    .map_err(|e| frame::HandshakeError::Certificate(e.to_string()))?;
            }
            Ok((claimed, nonce))
        });
        let (claimed, dialer_nonce) = match res {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(replica = cfg.me, error = %e, "refused a replica connection");
                let _ = write_all_flushed(&mut stream, &frame::encode_ack(1)).await;
                return Err(e.into());
            }
        };
        // Prove we hold the secret, then make the dialer prove it for the id it claims.
        let own_nonce = frame::nonce();
        let (ours, want) = handshake_proofs(cfg, claimed, cfg.me, &dialer_nonce, &own_nonce);
        let mut reply = frame::encode_ack(0);
        reply.extend_from_slice(&own_nonce);
        reply.extend_from_slice(&ours);
        write_all_flushed(&mut stream, &reply).await?;
        let mut theirs = [0u8; frame::PROOF_BYTES];
        with_deadline(cfg.connect_timeout, stream.read_exact(&mut theirs)).await?;
        if let Err(e) = frame::check_proof(&theirs, &want) {
            tracing::warn!(replica = cfg.me, claimed, error = %e, "refused a replica connection");
            return Err(e.into());
        }
        claimed
    };
    let mut buf = ReadBuf::new(READ_CHUNK_BYTES);
    loop {
        // Deliver every complete frame in the buffer.
        while buf.pending().len() >= FRAME_HEADER_BYTES {
            let pending = buf.pending();
            let h = FrameHeader::read_from_bytes(&pending[..FRAME_HEADER_BYTES])
                .map_err(|_| TransportError::Frame("bad header".into()))?;
            let len = h.len.get() as usize;
            if len > cfg.max_frame_bytes as usize {
                return Err(TransportError::Frame(format!(
                    "{len} bytes exceed network.max_frame_bytes"
                )));
            }
            let kind = FrameKind::from_u8(h.kind)
                .ok_or_else(|| TransportError::Frame(format!("unknown kind {}", h.kind)))?;
            if pending.len() < FRAME_HEADER_BYTES + len {
                break;
            }
            let payload =
                Bytes::copy_from_slice(&pending[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len]);
            buf.consume(FRAME_HEADER_BYTES + len);
            if !faults.drop_from(from) {
                deliver(Inbound {
                    from,
                    kind,
                    payload,
                });
            }
        }
        match stream.read(buf.spare(READ_CHUNK_BYTES / 4)).await {
            Ok(0) => return Ok(()),
            Ok(n) => buf.filled(n),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Bytes read from a peer per `read` call at most (the buffer grows past it for a larger frame).
const READ_CHUNK_BYTES: usize = 128 << 10;

/// Outbound queues to every peer; frames go out in order per peer, batched into few writes.
pub struct Outbound {
    queues: Vec<Option<PeerQueue>>,
    faults: Arc<TransportFaults>,
    bytes_max: usize,
}

struct PeerQueue {
    tx: LocalSender<(FrameKind, Bytes)>,
    /// Payload bytes queued and not yet taken by the writer.
    queued: Rc<std::cell::Cell<usize>>,
}

impl Outbound {
    /// Spawns one writer task per peer on the current executor.
    pub fn start(cfg: Rc<TransportConfig>, faults: Arc<TransportFaults>) -> Outbound {
        let mut queues = Vec::new();
        for peer in 0..cfg.replica_count {
            if peer == cfg.me {
                queues.push(None);
                continue;
            }
            let (tx, rx) = local_channel::new_bounded(cfg.queue_frames_max);
            let queued = Rc::new(std::cell::Cell::new(0));
            let writer = run_peer_writer(cfg.clone(), peer, rx, queued.clone(), faults.clone());
            glommio::spawn_local(writer).detach();
            queues.push(Some(PeerQueue { tx, queued }));
        }
        Outbound {
            queues,
            faults,
            bytes_max: cfg.queue_bytes_max,
        }
    }

    /// Queues a frame for `to`; dropped if the peer's queue is full (by frames or bytes) or a
    /// fault says so.
    pub fn send(&self, to: u32, kind: FrameKind, payload: Bytes) {
        if self.faults.drop_to(to) {
            return;
        }
        if let Some(Some(q)) = self.queues.get(to as usize) {
            let len = payload.len();
            if q.queued.get() + len > self.bytes_max && q.queued.get() > 0 {
                return;
            }
            if q.tx.try_send((kind, payload)).is_ok() {
                q.queued.set(q.queued.get() + len);
            }
        }
    }

    /// Payload bytes queued for `to` (0 for itself or an unknown peer).
    pub fn queued_bytes(&self, to: u32) -> usize {
        match self.queues.get(to as usize) {
            Some(Some(q)) => q.queued.get(),
            _ => 0,
        }
    }
}

async fn run_peer_writer(
    cfg: Rc<TransportConfig>,
    peer: u32,
    rx: LocalReceiver<(FrameKind, Bytes)>,
    queued: Rc<std::cell::Cell<usize>>,
    faults: Arc<TransportFaults>,
) {
    let taken = |p: &Bytes| queued.set(queued.get().saturating_sub(p.len()));
    let mut backoff = BACKOFF_MIN;
    let mut out: Vec<u8> = Vec::with_capacity(256 << 10);
    // Wait for the first frame before dialing: an idle peer link costs nothing.
    let mut first = match rx.recv().await {
        Some(f) => {
            taken(&f.1);
            Some(f)
        }
        None => return,
    };
    loop {
        let mut stream = match dial(&cfg, peer).await {
            Ok(s) => {
                backoff = BACKOFF_MIN;
                s
            }
            Err(e) => {
                tracing::debug!(replica = cfg.me, peer, error = %e, "dial failed");
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.backoff_max);
                continue;
            }
        };
        loop {
            let f = match first.take() {
                Some(f) => f,
                None => match rx.recv().await {
                    Some(f) => {
                        taken(&f.1);
                        f
                    }
                    None => return,
                },
            };
            out.clear();
            frame::encode_frame(&mut out, f.0, &f.1);
            while out.len() < WRITE_BATCH_BYTES_MAX {
                match poll_once(rx.recv()).await {
                    Some(Some((k, p))) => {
                        taken(&p);
                        frame::encode_frame(&mut out, k, &p)
                    }
                    Some(None) => return,
                    None => break,
                }
            }
            let delay = faults.delay_us();
            if delay > 0 {
                glommio::timer::sleep(Duration::from_micros(delay)).await;
            }
            if let Err(e) = write_all_flushed(&mut stream, &out).await {
                tracing::debug!(replica = cfg.me, peer, error = %e, "write to peer failed; reconnecting");
                break;
            }
        }
    }
}

/// Both proofs of one handshake, (the listener's, the dialer's): each side sends one and
/// checks the other.
fn handshake_proofs(
    cfg: &TransportConfig,
    dialer: u32,
    listener: u32,
    dialer_nonce: &[u8; frame::NONCE_BYTES],
    listener_nonce: &[u8; frame::NONCE_BYTES],
) -> ([u8; frame::PROOF_BYTES], [u8; frame::PROOF_BYTES]) {
    let proof = |role| {
        frame::proof(
            &cfg.secret,
            role,
            &cfg.cluster_id,
            dialer,
            listener,
            dialer_nonce,
            listener_nonce,
        )
    };
    (proof(frame::Role::Listener), proof(frame::Role::Dialer))
}

async fn dial(cfg: &TransportConfig, peer: u32) -> Result<Link, TransportError> {
    let addr = (cfg.peers.get(peer as usize)).ok_or(TransportError::NoAddress(peer))?;
    let bad = |message: String| TransportError::Address {
        addr: addr.clone(),
        message,
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to nothing".into()))?;
    let tcp = TcpStream::connect_timeout(addr, cfg.connect_timeout)
        .await
        .map_err(|e| TransportError::Io(e.into()))?;
    let _ = tcp.set_nodelay(true);
    let mut s: Link = match &cfg.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let name = crate::tls::ReplicaTls::server_name(peer)
                .map_err(|e| TransportError::Tls(e.to_string()))?;
            match with_deadline(cfg.connect_timeout, tls.connector.connect(name, tcp)).await {
                Ok(s) => Box::new(s),
                Err(e) => {
                    // The peer answered but its certificate (or ours) was not accepted.
                    tracing::warn!(replica = cfg.me, peer, error = %e, "TLS handshake with a replica peer failed");
                    return Err(TransportError::Tls(format!("with replica {peer}: {e}")));
                }
            }
        }
    };
    let own_nonce = frame::nonce();
    let hello = frame::encode_hello(cfg.me as u16, &cfg.cluster_id, &own_nonce);
    write_all_flushed(&mut s, &hello).await?;
    let mut ack = [0u8; ACK_BYTES];
    with_deadline(cfg.connect_timeout, s.read_exact(&mut ack)).await?;
    frame::parse_ack(&ack)?;
    // The listener proves it holds the secret and is the replica we meant; then we prove it.
    let mut challenge = [0u8; frame::NONCE_BYTES + frame::PROOF_BYTES];
    with_deadline(cfg.connect_timeout, s.read_exact(&mut challenge)).await?;
    let (their_nonce, their_proof) = challenge.split_at(frame::NONCE_BYTES);
    let mut listener_nonce = [0u8; frame::NONCE_BYTES];
    listener_nonce.copy_from_slice(their_nonce);
    let (want, ours) = handshake_proofs(cfg, cfg.me, peer, &own_nonce, &listener_nonce);
    if let Err(e) = frame::check_proof(their_proof, &want) {
        tracing::warn!(replica = cfg.me, peer, error = %e, "replica peer failed its handshake proof");
        return Err(e.into());
    }
    write_all_flushed(&mut s, &ours).await?;
    Ok(s)
}
