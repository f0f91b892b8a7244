//! Where the front runs and how it is started: on an executor of its own or as guest tasks.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;

use glommio::{LocalExecutorBuilder, Placement};

use super::{ctx, server, spread, wire};
use crate::config::{MetricsSection, ThriftSection};
use crate::service::KvService;
use crate::util::guest::GuestSpawner;

/// Another executor of the process where connections that mostly read may be served
/// (`thrift.spread_after_reads`): how to start a task there, and the service for it.
pub struct FrontHelper<S> {
    pub spawn: GuestSpawner,
    pub make_service: Box<dyn FnOnce() -> S + Send>,
}

impl<S> FrontHelper<S> {
    /// A helper on each executor `spawners` reach, each with a service from `factory`.
    pub fn on_each<F>(spawners: Vec<GuestSpawner>, factory: impl Fn() -> F) -> Vec<Self>
    where
        F: FnOnce() -> S + Send + 'static,
    {
        spawners
            .into_iter()
            .map(|spawn| FrontHelper {
                spawn,
                make_service: Box::new(factory()),
            })
            .collect()
    }
}

/// How often a stopping front looks whether its requests in flight have drained.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// Where the front runs.
pub enum FrontHost {
    /// On an executor of its own.
    Executor {
        placement: Placement,
        spin_before_park: std::time::Duration,
    },
    /// As tasks on an executor that already runs (a replica's), handed over by the spawner.
    Guest(GuestSpawner),
}

/// A running front: its bound addresses (and its thread, when it has its own executor).
pub struct FrontHandle {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    _executor: Option<glommio::ExecutorJoinHandle<()>>,
    stop: Option<futures_channel::oneshot::Sender<()>>,
    drained: mpsc::Receiver<()>,
}

impl FrontHandle {
    /// Graceful stop: close the Thrift listener, then wait (at most `grace`) until no request
    /// is in flight. Returns whether everything in flight was answered.
    pub fn stop_and_drain(&mut self, grace: std::time::Duration) -> bool {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.drained.recv_timeout(grace).is_ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("cannot bind thrift port {addr}: {message}")]
    Bind { addr: String, message: String },
    #[error("cannot start the front executor: {0}")]
    Executor(String),
    #[error("thrift TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Starts the front where `host` says, with `helpers` on other executors. `make_service` runs
/// on the executor that hosts it. Returns once the port is bound (so callers can report
/// "listening" truthfully).
pub fn start_front<S, F>(
    limits: ThriftSection,
    metrics_cfg: MetricsSection,
    host: FrontHost,
    make_service: F,
    helpers: Vec<FrontHelper<S>>,
) -> Result<FrontHandle, FrontError>
where
    S: KvService,
    F: FnOnce() -> S + Send + 'static,
{
    let addr = format!("{}:{}", limits.bind_address, limits.port);
    let tls = match (&limits.tls_cert, &limits.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::front_acceptor(cert, key)?),
        _ => None,
    };
    let metrics_bind = metrics_cfg
        .enabled
        .then(|| format!("{}:{}", metrics_cfg.bind_address, metrics_cfg.port));
    type Bound = (SocketAddr, Option<SocketAddr>);
    let (tx, rx) = mpsc::channel::<Result<Bound, FrontError>>();
    let (stop_tx, stop_rx) = futures_channel::oneshot::channel::<()>();
    let (drained_tx, drained_rx) = mpsc::channel::<()>();
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(wire::METHODS));
    let shared = std::sync::Arc::new(ctx::FrontShared::new(&limits, metrics.clone()));
    let mut hand_offs = Vec::new();
    if tls.is_none() && limits.spread_after_reads > 0 {
        for h in helpers {
            let (tx, rx) = futures_channel::mpsc::unbounded();
            let (limits, shared) = (limits.clone(), shared.clone());
            let make = h.make_service;
            let started = (h.spawn)(Box::new(move || {
                Box::pin(async move {
                    let ctx = Rc::new(ctx::FrontCtx::new(make(), limits, shared));
                    spread::run_helper(ctx, rx).await;
                })
            }));
            // An executor that already stopped takes no connections; the others still do.
            if started.is_ok() {
                hand_offs.push(tx);
            }
        }
    }
    let body = move || async move {
        let bound = glommio::net::TcpListener::bind(&addr).and_then(|l| Ok((l.local_addr()?, l)));
        let (local, listener) = match bound {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Err(FrontError::Bind {
                    addr,
                    message: e.to_string(),
                }));
                return;
            }
        };
        let service = make_service();
        let metrics_addr = match metrics_bind {
            None => None,
            Some(m) => match glommio::net::TcpListener::bind(&m)
                .and_then(|l| Ok((l.local_addr()?, l)))
            {
                Ok((a, l)) => {
                    let task =
                        crate::metrics::run_metrics_listener(l, metrics.clone(), service.clone());
                    glommio::spawn_local(task).detach();
                    Some(a)
                }
                Err(e) => {
                    let _ = tx.send(Err(FrontError::Bind {
                        addr: m,
                        message: e.to_string(),
                    }));
                    return;
                }
            },
        };
        let spreader = spread::Spreader::new(
            hand_offs,
            limits.spread_after_reads,
            limits.spread_max_write_percent,
        );
        let ctx = Rc::new(ctx::FrontCtx::new(service, limits, shared.clone()));
        let _ = tx.send(Ok((local, metrics_addr)));
        server::run_thrift_listener(listener, ctx.clone(), tls, stop_rx, spreader).await;
        // Stopping: wait for the requests in flight (on every executor), then report drained.
        // The executors keep running (open connections stay served) until the process exits.
        while shared
            .stats
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
        {
            glommio::timer::sleep(DRAIN_POLL).await;
        }
        let _ = drained_tx.send(());
        futures_lite::future::pending::<()>().await;
    };
    let executor = match host {
        FrontHost::Executor {
            placement,
            spin_before_park,
        } => {
            let mut builder = LocalExecutorBuilder::new(placement).name("paxoskv-front");
            if !spin_before_park.is_zero() {
                builder = builder.spin_before_park(spin_before_park);
            }
            let handle = builder
                .spawn(body)
                .map_err(|e| FrontError::Executor(e.to_string()))?;
            Some(handle)
        }
        FrontHost::Guest(spawn) => {
            spawn(Box::new(move || Box::pin(body())))
                .map_err(|e| FrontError::Executor(e.to_string()))?;
            None
        }
    };
    let (addr, metrics_addr) = rx
        .recv()
        .map_err(|_| FrontError::Executor("the front stopped during start-up".into()))??;
    Ok(FrontHandle {
        addr,
        metrics_addr,
        _executor: executor,
        stop: Some(stop_tx),
        drained: drained_rx,
    })
}
