//! Metrics: lock-free counters and fixed-bucket latency histograms, rendered in the Prometheus
//! text format, and a tiny HTTP endpoint (`/metrics`, `/health`) on the front's executor.
//!
//! Recording is a few relaxed atomic adds, so it stays on the request path. Per-replica numbers
//! (view, commit index, WAL syncs, apply lag, ...) are read from the replicas' shared state at
//! scrape time through `KvService::render_metrics`.

mod http;

pub use http::run_metrics_listener;

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::service::ErrorCode;

/// Result labels of `paxoskv_requests_total`: OK, then every `ErrorCode`.
const RESULTS: usize = 1 + ErrorCode::ALL.len();

fn result_label(r: usize) -> &'static str {
    match r.checked_sub(1) {
        None => "OK",
        Some(i) => ErrorCode::ALL[i].as_str(),
    }
}

/// Upper bounds of the latency buckets, in microseconds.
pub const LATENCY_BUCKETS_US: &[u64] = &[
    50, 100, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000, 5_000_000,
];

pub struct Metrics {
    /// The method names requests are counted under (the front's wire methods).
    methods: &'static [&'static str],
    /// [method][result]
    requests: Vec<AtomicU64>,
    /// [method][bucket] (+1 for +Inf)
    latency: Vec<AtomicU64>,
    latency_sum_us: Vec<AtomicU64>,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    connections_closed_bad_input: AtomicU64,
    connections_handed_over: AtomicU64,
}

impl Metrics {
    /// Counters for requests to `methods`; requests to other names are not counted.
    pub fn new(methods: &'static [&'static str]) -> Self {
        let m = methods.len();
        Metrics {
            methods,
            requests: (0..m * RESULTS).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..m * (LATENCY_BUCKETS_US.len() + 1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            latency_sum_us: (0..m).map(|_| AtomicU64::new(0)).collect(),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_closed_bad_input: AtomicU64::new(0),
            connections_handed_over: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one answered request: OK, or the code it failed with.
    pub fn record(&self, method: &str, failed: Option<ErrorCode>, latency_us: u64) {
        let Some(m) = self.methods.iter().position(|x| *x == method) else {
            return;
        };
        let r = failed.map_or(0, |c| 1 + c.index());
        self.requests[m * RESULTS + r].fetch_add(1, Ordering::Relaxed);
        let b = LATENCY_BUCKETS_US
            .iter()
            .position(|&ub| latency_us <= ub)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency[m * (LATENCY_BUCKETS_US.len() + 1) + b].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us[m].fetch_add(latency_us, Ordering::Relaxed);
    }

    /// Mean request latency over every method so far, in milliseconds (0 before any request).
    pub fn mean_latency_ms(&self) -> f64 {
        let sum: u64 = self
            .latency_sum_us
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        let count: u64 = self.latency.iter().map(|a| a.load(Ordering::Relaxed)).sum();
        sum as f64 / count.max(1) as f64 / 1000.0
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self, bad_input: bool) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
        if bad_input {
            self.connections_closed_bad_input
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection that mostly reads moved to another executor (it stays open).
    pub fn connection_handed_over(&self) {
        self.connections_handed_over.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the front's metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP paxoskv_requests_total Thrift requests by method and result.\n# TYPE paxoskv_requests_total counter\n");
        for (m, method) in self.methods.iter().enumerate() {
            for r in 0..RESULTS {
                let result = result_label(r);
                let v = self.requests[m * RESULTS + r].load(Ordering::Relaxed);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "paxoskv_requests_total{{method=\"{method}\",result=\"{result}\"}} {v}"
                    );
                }
            }
        }
        out.push_str("# HELP paxoskv_request_latency_seconds Thrift request latency, decode to reply.\n# TYPE paxoskv_request_latency_seconds histogram\n");
        let nb = LATENCY_BUCKETS_US.len() + 1;
        for (m, method) in self.methods.iter().enumerate() {
            let counts: Vec<u64> = (0..nb)
                .map(|b| self.latency[m * nb + b].load(Ordering::Relaxed))
                .collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let mut cum = 0;
            for (b, ub) in LATENCY_BUCKETS_US.iter().enumerate() {
                cum += counts[b];
                let _ = writeln!(
                    out,
                    "paxoskv_request_latency_seconds_bucket{{method=\"{method}\",le=\"{}\"}} {cum}",
                    *ub as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "paxoskv_request_latency_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {total}"
            );
            let sum = self.latency_sum_us[m].load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "paxoskv_request_latency_seconds_sum{{method=\"{method}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "paxoskv_request_latency_seconds_count{{method=\"{method}\"}} {total}"
            );
        }
        gauge(
            out,
            "paxoskv_connections_open",
            "Open Thrift connections.",
            self.connections_open.load(Ordering::Relaxed),
        );
        counter(
            out,
            "paxoskv_connections_total",
            "Thrift connections accepted.",
            self.connections_total.load(Ordering::Relaxed),
        );
        counter(
            out,
            "paxoskv_connections_closed_bad_input_total",
            "Thrift connections closed for malformed or oversized input.",
            self.connections_closed_bad_input.load(Ordering::Relaxed),
        );
        counter(
            out,
            "paxoskv_connections_handed_over_total",
            "Thrift connections that mostly read, moved to another executor's front (thrift.spread_after_reads, spread_max_write_percent).",
            self.connections_handed_over.load(Ordering::Relaxed),
        );
        let (batches, sends) = (
            REPLY_BATCHES.load(Ordering::Relaxed),
            REPLY_BATCHED_SENDS.load(Ordering::Relaxed),
        );
        counter(
            out,
            "paxoskv_front_reply_batches_total",
            "io_uring_enter calls that handed a turn's plain-TCP replies to the kernel (thrift.batch_reply_sends).",
            batches,
        );
        counter(
            out,
            "paxoskv_front_reply_batched_sends_total",
            "Replies handed to the kernel in those batches (sends per batch = this / paxoskv_front_reply_batches_total).",
            sends,
        );
    }
}

/// Batches of replies handed to the kernel, and the replies in them, over every executor of the
/// process (the front's batched sends, `thrift.batch_reply_sends`).
static REPLY_BATCHES: AtomicU64 = AtomicU64::new(0);
static REPLY_BATCHED_SENDS: AtomicU64 = AtomicU64::new(0);

/// Counts one batch of `sends` replies.
pub fn reply_batch_sent(sends: u64) {
    REPLY_BATCHES.fetch_add(1, Ordering::Relaxed);
    REPLY_BATCHED_SENDS.fetch_add(sends, Ordering::Relaxed);
}

pub fn gauge(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

pub fn counter(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::new(&["get", "setKey"]);
        m.record("setKey", None, 120);
        m.record("setKey", Some(ErrorCode::Conflict), 900);
        m.record("setKey", Some(ErrorCode::Timeout), 10_000_000);
        m.record("get", Some(ErrorCode::Unauthorized), 10);
        let mut s = String::new();
        m.render(&mut s);
        assert!(
            s.contains("paxoskv_requests_total{method=\"setKey\",result=\"OK\"} 1"),
            "{s}"
        );
        assert!(s.contains("paxoskv_requests_total{method=\"setKey\",result=\"CONFLICT\"} 1"));
        assert!(s.contains("paxoskv_requests_total{method=\"setKey\",result=\"TIMEOUT\"} 1"));
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "ErrorCode::ALL is out of declaration order");
        }
        assert!(
            s.contains("paxoskv_request_latency_seconds_bucket{method=\"setKey\",le=\"0.0002\"} 1")
        );
        assert!(
            s.contains("paxoskv_request_latency_seconds_bucket{method=\"setKey\",le=\"0.001\"} 2")
        );
        assert!(
            s.contains("paxoskv_request_latency_seconds_bucket{method=\"setKey\",le=\"+Inf\"} 3")
        );
        assert!(s.contains("paxoskv_requests_total{method=\"get\",result=\"UNAUTHORIZED\"} 1"));
        let mean = m.mean_latency_ms();
        assert!(
            (mean - (120.0 + 900.0 + 10_000_000.0 + 10.0) / 4.0 / 1000.0).abs() < 1e-9,
            "{mean}"
        );
    }
}
