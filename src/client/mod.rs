//! The paxoskv client library: async (tokio), pipelined, failing over between endpoints, with
//! FoundationDB-style transactions.
//!
//! ```no_run
//! # async fn demo() -> paxoskv::client::Result<()> {
//! use paxoskv::client::{Client, Config};
//!
//! let client = Client::connect(Config::new(["127.0.0.1:9091"])).await?;
//! client.set(b"greeting", b"hello").await?;
//! assert_eq!(client.get(b"greeting").await?, Some(b"hello".to_vec()));
//!
//! // Read-modify-write, retried on conflict: reads see the transaction's own writes and
//! // record read conflicts; the commit is one atomicCommit.
//! let n = client
//!     .transact(|tx| async move {
//!         let n = tx.get(b"counter").await?.map_or(0, |v| v[0]) + 1;
//!         tx.set(b"counter", [n]);
//!         Ok(n)
//!     })
//!     .await?;
//! # let _ = n; Ok(())
//! # }
//! ```
//!
//! # Retry policy
//! Every call runs within `Config::retry_deadline` and `Config::max_attempts`, with backoff
//! between attempts (`backoff_min` doubling up to `backoff_max`, jittered):
//! - **Reads** (`get`, ranges, snapshot reads, versions, `ping`) are retried, on the next
//!   endpoint, after any connection failure, `NOT_PRIMARY`, `UNAVAILABLE`, `TIMEOUT` and the
//!   client's own `request_timeout`.
//! - **Writes** (`set`, `delete`, versionstamped sets, a transaction's commit) are retried only
//!   when they certainly did not apply: the request never left the client (no connection), or
//!   the server answered `NOT_PRIMARY` or `UNAVAILABLE` (refused before proposing). When a
//!   write was sent and no answer came (the connection broke, `request_timeout` passed) the
//!   call returns [`Error::OutcomeUnknown`]; a server `TIMEOUT` is returned as
//!   [`Error::Timeout`]: both mean it may or may not have applied. `CONFLICT` is returned
//!   (`transact` retries it by running its closure again).
//!
//! An endpoint whose connection fails is skipped for a backoff, and a probe task pings it until
//! it answers. With several endpoints (`node` mode: every node forwards to the primary), an
//! endpoint that answers `NOT_PRIMARY` or `UNAVAILABLE` also passes the next call to the next
//! endpoint.

#![warn(missing_docs)]

mod conn;
mod error;
mod pool;
mod range;
mod tls;
mod txn;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

pub use error::{Error, Result};
pub use range::{prefix_end, RangePage, Scan};
pub use tls::TlsConfig;
pub use txn::{Committed, Transaction};

use crate::front::generated::*;
use crate::front::wire::{ErrorText, Rpc};
use conn::{ConnError, ConnOptions};
use pool::{Endpoint, ProbeSettings};

/// A std mutex's guard, also after a panic elsewhere poisoned it (the client's shared state
/// stays consistent between statements, so the data is still good).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One endpoint's health as the client sees it (`Client::endpoints`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint as configured.
    pub addr: String,
    /// No failure since it last answered.
    pub up: bool,
    /// Failed connections or calls in a row (reset by an answer or a successful probe).
    pub consecutive_failures: u32,
    /// When it is backing off: how long until calls or the probe try it again.
    pub retry_in: Option<Duration>,
}

/// How a client connects, retries and bounds itself. `Config::new(endpoints)` has defaults for
/// the rest; every field is public.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` of each Thrift front (one for `serve`, one per node for `node` clusters).
    pub endpoints: Vec<String>,
    /// Framed transport (default) or unframed (buffered); the server accepts both.
    pub framed: bool,
    /// Connections per endpoint; calls are spread over them round-robin.
    pub connections_per_endpoint: usize,
    /// Requests in flight on one connection; further calls wait for room.
    pub max_in_flight_per_connection: usize,
    /// Largest reply accepted; a bigger one closes the connection.
    pub max_reply_bytes: usize,
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// How long one attempt waits for its reply. Above the server's commit timeout (10 s by
    /// default), so a slow commit is answered by the server (`TIMEOUT`) first.
    pub request_timeout: Duration,
    /// Attempts of one call.
    pub max_attempts: u32,
    /// The time all attempts of one call may take together.
    pub retry_deadline: Duration,
    /// First pause between attempts (and before probing a failed endpoint); doubles per
    /// failure.
    pub backoff_min: Duration,
    /// Longest pause between attempts or probes.
    pub backoff_max: Duration,
    /// `timeout_seconds` sent with each commit (`None`: the server's default).
    pub commit_timeout: Option<Duration>,
    /// How many times `transact` runs its closure at most.
    pub txn_max_attempts: u32,
    /// How long `transact` keeps retrying.
    pub txn_deadline: Duration,
    /// First pause after a conflict (doubling up to `backoff_max`).
    pub txn_backoff_min: Duration,
    /// Keys per request of a `Scan`.
    pub scan_page: i32,
    /// TLS to fronts that serve it (`[thrift] tls_cert/tls_key`); `None`: plain TCP.
    pub tls: Option<TlsConfig>,
}

impl Config {
    /// The defaults for `endpoints` (`"host:port"` strings).
    pub fn new<I, S>(endpoints: I) -> Config
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Config {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            framed: true,
            connections_per_endpoint: 2,
            max_in_flight_per_connection: 256,
            max_reply_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
            max_attempts: 20,
            retry_deadline: Duration::from_secs(20),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            commit_timeout: None,
            txn_max_attempts: 100,
            txn_deadline: Duration::from_secs(30),
            txn_backoff_min: Duration::from_millis(2),
            scan_page: 1000,
            tls: None,
        }
    }
}

struct Inner {
    endpoints: Vec<Endpoint>,
    preferred: AtomicUsize,
    config: Config,
    conn: ConnOptions,
}

/// A handle to a paxoskv cluster: cheap to clone, safe to share between tasks. Its calls act on
/// the default column family, or on the one named by [`Client::in_cf`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    cf: Option<Arc<str>>,
}

/// Whether a call may be repeated after its outcome became unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Write,
}

impl Client {
    /// A client for `config.endpoints`; fails only when none is given (connections are made on
    /// first use, so a cluster that is still starting is not an error).
    pub async fn connect(config: Config) -> Result<Client> {
        if config.endpoints.is_empty() {
            return Err(Error::InvalidArgument("no endpoints given".into()));
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|a| Endpoint::new(a.clone(), config.connections_per_endpoint))
            .collect();
        let tls = match &config.tls {
            Some(t) => Some((t.clone(), tls::client_config(t)?)),
            None => None,
        };
        let conn = ConnOptions {
            framed: config.framed,
            max_in_flight: config.max_in_flight_per_connection,
            max_reply_bytes: config.max_reply_bytes,
            connect_timeout: config.connect_timeout,
            tls,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                preferred: AtomicUsize::new(0),
                config,
                conn,
            }),
            cf: None,
        })
    }

    /// The same client acting on column family `cf` (created by its first write).
    pub fn in_cf(&self, cf: &str) -> Client {
        Client {
            inner: self.inner.clone(),
            cf: Some(Arc::from(cf)),
        }
    }

    /// How the client sees each endpoint now, in `Config::endpoints` order.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.inner
            .endpoints
            .iter()
            .map(|e| {
                let (failures, down_until) = e.health();
                EndpointStatus {
                    addr: e.addr.clone(),
                    up: failures == 0,
                    consecutive_failures: failures,
                    retry_in: down_until.map(|t| t.saturating_duration_since(Instant::now())),
                }
            })
            .collect()
    }

    /// The configuration the client was made with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn cf(&self) -> Option<String> {
        self.cf.as_deref().map(str::to_string)
    }

    /// The value of `key`, linearizably (`None` when absent).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let r = self
            .call(
                &GetRequest {
                    key: key.as_ref().to_vec(),
                    column_family: self.cf(),
                },
                Kind::Read,
            )
            .await?;
        Ok(r.found.then_some(r.value))
    }

    /// Sets `key` to `value` (a blind write: applied once a majority has it).
    pub async fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let req = SetKeyRequest {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            column_family: self.cf(),
        };
        self.call(&req, Kind::Write).await.map(drop)
    }

    /// Deletes `key` (deleting an absent key succeeds).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let req = DeleteKeyRequest {
            key: key.as_ref().to_vec(),
            column_family: self.cf(),
        };
        self.call(&req, Kind::Write).await.map(drop)
    }

    /// The value of `key` as of `version` (MVCC; `TOO_OLD` once the version left the window).
    pub async fn snapshot_get(
        &self,
        key: impl AsRef<[u8]>,
        version: i64,
    ) -> Result<Option<Vec<u8>>> {
        let r = self
            .call(
                &SnapshotGetRequest {
                    key: key.as_ref().to_vec(),
                    read_version: version,
                    column_family: self.cf(),
                },
                Kind::Read,
            )
            .await?;
        Ok(r.found.then_some(r.value))
    }

    /// A read version at least as new as every commit acknowledged before the call.
    pub async fn read_version(&self) -> Result<i64> {
        Ok(self
            .call(&GetReadVersionRequest {}, Kind::Read)
            .await?
            .read_version)
    }

    /// The newest committed version the serving replica has applied.
    pub async fn committed_version(&self) -> Result<i64> {
        Ok(self
            .call(&GetCommittedVersionRequest {}, Kind::Read)
            .await?
            .version)
    }

    /// Writes `value` under `key_prefix` whose last 10 bytes become the commit's versionstamp;
    /// returns the key written.
    pub async fn set_versionstamped_key(
        &self,
        key_prefix: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Vec<u8>> {
        let req = SetVersionstampedKeyRequest {
            key_prefix: key_prefix.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            column_family: self.cf(),
        };
        Ok(self.call(&req, Kind::Write).await?.generated_key)
    }

    /// Writes `value_prefix` (its last 10 bytes become the versionstamp) under `key`; returns
    /// the value written.
    pub async fn set_versionstamped_value(
        &self,
        key: impl AsRef<[u8]>,
        value_prefix: impl AsRef<[u8]>,
    ) -> Result<Vec<u8>> {
        let req = SetVersionstampedValueRequest {
            key: key.as_ref().to_vec(),
            value_prefix: value_prefix.as_ref().to_vec(),
            column_family: self.cf(),
        };
        Ok(self.call(&req, Kind::Write).await?.generated_value)
    }

    /// Round trip to one endpoint; returns the server's clock (µs since the epoch).
    pub async fn ping(&self) -> Result<i64> {
        let req = PingRequest {
            message: None,
            timestamp: None,
        };
        Ok(self.call(&req, Kind::Read).await?.server_timestamp)
    }

    /// The cluster's health as the serving node sees it (`auth_token` when the server has an
    /// admin token).
    pub async fn cluster_health(&self, auth_token: Option<&str>) -> Result<ClusterHealth> {
        let req = GetClusterHealthRequest {
            auth_token: auth_token.map(str::to_string),
        };
        self.call(&req, Kind::Read)
            .await?
            .cluster_health
            .ok_or_else(|| Error::Protocol("getClusterHealth without cluster_health".into()))
    }

    /// The serving node's counters (keys, bytes, operations, transactions).
    pub async fn database_stats(&self, auth_token: Option<&str>) -> Result<DatabaseStats> {
        let req = GetDatabaseStatsRequest {
            auth_token: auth_token.map(str::to_string),
            include_detailed_stats: None,
        };
        self.call(&req, Kind::Read)
            .await?
            .database_stats
            .ok_or_else(|| Error::Protocol("getDatabaseStats without database_stats".into()))
    }

    /// One node's status (`None`: the primary as the serving node sees it).
    pub async fn node_info(
        &self,
        auth_token: Option<&str>,
        node_id: Option<i32>,
    ) -> Result<NodeStatus> {
        let req = GetNodeInfoRequest {
            auth_token: auth_token.map(str::to_string),
            node_id,
        };
        self.call(&req, Kind::Read)
            .await?
            .node_info
            .ok_or_else(|| Error::Protocol("getNodeInfo without node_info".into()))
    }

    /// Sends one request with the retry policy of its kind (see the module docs) and returns
    /// the response, or the error it carries.
    pub(crate) async fn call<R: Rpc>(&self, req: &R, kind: Kind) -> Result<R::Response> {
        let span = tracing::debug_span!("paxoskv.call", method = R::METHOD);
        self.call_inner(req, kind).instrument(span).await
    }

    async fn call_inner<R: Rpc>(&self, req: &R, kind: Kind) -> Result<R::Response> {
        let cfg = &self.inner.config;
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let i = self.pick_endpoint();
            let ep = &self.inner.endpoints[i];
            let err = match ep.conn(&self.inner.conn).await {
                Err(e) => {
                    self.endpoint_failed(i);
                    Error::Unreachable(e.to_string())
                }
                Ok(conn) => match conn.call(req, cfg.request_timeout).await {
                    Ok(resp) => match resp.error_text() {
                        None => {
                            ep.mark_up();
                            self.inner.preferred.store(i, Ordering::Relaxed);
                            return Ok(resp);
                        }
                        Some(text) => {
                            let e = Error::from_wire(text, None);
                            let again = e.not_applied()
                                || (kind == Kind::Read && matches!(e, Error::Timeout(_)));
                            if !again {
                                return Err(e);
                            }
                            // This endpoint has no primary to offer now; try the next one.
                            self.pass_on(i);
                            e
                        }
                    },
                    Err(ConnError::NotSent(m)) => {
                        self.endpoint_failed(i);
                        Error::Unreachable(format!("{}: {m}", ep.addr))
                    }
                    Err(ConnError::Lost(m)) => {
                        self.endpoint_failed(i);
                        if kind == Kind::Write {
                            return Err(Error::OutcomeUnknown(format!("{}: {m}", ep.addr)));
                        }
                        Error::Unreachable(format!("{}: {m}", ep.addr))
                    }
                    Err(ConnError::Protocol(m)) => return Err(Error::Protocol(m)),
                },
            };
            let pause = pool::backoff(attempt, cfg.backoff_min, cfg.backoff_max);
            if attempt >= cfg.max_attempts || started.elapsed() + pause > cfg.retry_deadline {
                return Err(err);
            }
            tracing::debug!(attempt, endpoint = %ep.addr, error = %err, "retrying");
            tokio::time::sleep(pause).await;
        }
    }

    /// The endpoint to use now: the preferred one, or the next that is not backing off, or (all
    /// backing off) the one that comes back first.
    fn pick_endpoint(&self) -> usize {
        let eps = &self.inner.endpoints;
        let n = eps.len();
        let first = self.inner.preferred.load(Ordering::Relaxed) % n;
        let now = Instant::now();
        let mut soonest = (first, None::<Instant>);
        for k in 0..n {
            let i = (first + k) % n;
            match eps[i].down_until(now) {
                None => return i,
                Some(t) => {
                    if soonest.1.is_none_or(|s| t < s) {
                        soonest = (i, Some(t));
                    }
                }
            }
        }
        soonest.0
    }

    fn pass_on(&self, from: usize) {
        let n = self.inner.endpoints.len();
        let _ = self.inner.preferred.compare_exchange(
            from,
            (from + 1) % n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn endpoint_failed(&self, i: usize) {
        let cfg = &self.inner.config;
        self.pass_on(i);
        if self.inner.endpoints[i].mark_down(cfg.backoff_min, cfg.backoff_max) {
            pool::spawn_probe(
                Arc::downgrade(&self.inner),
                move |inner: &Inner| &inner.endpoints[i],
                ProbeSettings {
                    conn: self.inner.conn.clone(),
                    backoff_min: cfg.backoff_min,
                    backoff_max: cfg.backoff_max,
                },
            );
        }
    }
}
