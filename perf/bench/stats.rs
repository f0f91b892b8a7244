//! Measurements of one run: latency histograms (nanoseconds) per operation kind and in total,
//! completions, conflicts and errors by code; merged from the workers' interval snapshots.
//!
//! Invariant: a latency is recorded only for an operation that got an answer (success or a
//! transaction conflict); errors are counted by code, never timed.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

/// The kinds of logical operation a workload issues (a txn is one operation of three calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Get = 0,
    Set = 1,
    Txn = 2,
    Range = 3,
    Ping = 4,
}

impl OpKind {
    pub const ALL: [OpKind; 5] = [
        OpKind::Get,
        OpKind::Set,
        OpKind::Txn,
        OpKind::Range,
        OpKind::Ping,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Set => "set",
            OpKind::Txn => "txn",
            OpKind::Range => "range",
            OpKind::Ping => "ping",
        }
    }
}

/// Largest latency a histogram holds: 60 s in nanoseconds (larger values are clamped).
const LATENCY_NS_MAX: u64 = 60_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    // 3 significant digits over 1 ns ..= 60 s; these bounds are valid, so creation cannot fail.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("sigfig 3 is valid"))
}

#[derive(Debug, Clone)]
pub struct Stats {
    /// Per `OpKind` (by discriminant).
    pub by_op: Vec<Histogram<u64>>,
    pub total: Histogram<u64>,
    /// Operations answered with success (for txn: committed).
    pub ok_count: u64,
    /// Transactions aborted with CONFLICT.
    pub conflict_count: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            by_op: OpKind::ALL.iter().map(|_| new_histogram()).collect(),
            total: new_histogram(),
            ok_count: 0,
            conflict_count: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Stats {
    pub fn record(&mut self, op: OpKind, latency_ns: u64, conflict: bool) {
        let v = latency_ns.clamp(1, LATENCY_NS_MAX);
        // In bounds by the clamp, so recording cannot fail.
        let _ = self.by_op[op as usize].record(v);
        let _ = self.total.record(v);
        if conflict {
            self.conflict_count += 1;
        } else {
            self.ok_count += 1;
        }
    }

    pub fn error(&mut self, code: &str, n: u64) {
        *self.errors.entry(code.to_string()).or_insert(0) += n;
    }

    pub fn merge(&mut self, other: &Stats) {
        for (a, b) in self.by_op.iter_mut().zip(&other.by_op) {
            let _ = a.add(b);
        }
        let _ = self.total.add(&other.total);
        self.ok_count += other.ok_count;
        self.conflict_count += other.conflict_count;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Operations that got an answer (successes and conflicts).
    pub fn answered_count(&self) -> u64 {
        self.ok_count + self.conflict_count
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Latency summary of one histogram, in microseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Formats microseconds with a unit that keeps 3-4 significant digits.
pub fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = Stats::default();
        a.record(OpKind::Set, 1_000, false);
        a.error("TIMEOUT", 2);
        let mut b = Stats::default();
        b.record(OpKind::Txn, 5_000, true);
        b.error("TIMEOUT", 1);
        a.merge(&b);
        assert_eq!(a.answered_count(), 2);
        assert_eq!(a.conflict_count, 1);
        assert_eq!(a.errors["TIMEOUT"], 3);
        assert_eq!(a.total.len(), 2);
        assert_eq!(a.by_op[OpKind::Txn as usize].len(), 1);
        assert_eq!(fmt_us(1500.0), "1.50ms");
    }
}
