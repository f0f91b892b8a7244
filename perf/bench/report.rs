//! Presenting a run: the live progress line, the final text report, the JSON summary (with a
//! percentile spectrum for plots) and the HDR histogram interval log.
//!
//! Must not: measure anything itself; it only formats what `stats` holds.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crate::stats::{fmt_us, LatencySummary, OpKind, Stats};
use crate::{engine, Args, Outcome, ProtocolArg, WorkloadArg};

/// Quantiles of the percentile spectrum in the JSON report (what a latency plot draws).
const SPECTRUM: &[f64] = &[
    0.0, 0.1, 0.25, 0.5, 0.75, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999,
    1.0,
];

#[derive(Debug, serde::Serialize)]
pub struct SpectrumPoint {
    pub quantile: f64,
    pub latency_us: f64,
}

/// The final report of a run (also its JSON form).
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub tool: &'static str,
    pub label: Option<String>,
    pub workload: WorkloadArg,
    pub protocol: String,
    pub engine: crate::EngineArg,
    pub addr: String,
    pub connections: usize,
    pub pipeline: usize,
    pub threads: usize,
    /// Open-loop target in operations/s; `None` for closed loop.
    pub rate_target_ops_per_s: Option<f64>,
    pub read_ratio: Option<f64>,
    pub keys: u64,
    pub key_dist: crate::keys::KeyDist,
    pub key_size_bytes: usize,
    pub value_size_bytes: usize,
    pub warmup_s: f64,
    pub measured_s: f64,
    /// Answered operations (successes and transaction conflicts) per second.
    pub throughput_ops_per_s: f64,
    pub ok_count: u64,
    pub conflict_count: u64,
    pub error_count: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency: LatencySummary,
    pub latency_by_op: BTreeMap<&'static str, LatencySummary>,
    pub spectrum: Vec<SpectrumPoint>,
    /// The server's batching over the run (with `--metrics`), including the warm-up.
    pub server: Option<crate::server_stats::ServerStats>,
}

impl Summary {
    pub fn new(args: &Args, threads: usize, outcome: &Outcome) -> Summary {
        let s = &outcome.stats;
        let secs = outcome.measured.as_secs_f64();
        let protocol = match (args.protocol, args.framed) {
            (ProtocolArg::Thrift, false) => "thrift-binary-unframed",
            (ProtocolArg::Thrift, true) => "thrift-binary-framed",
            (ProtocolArg::EtcdHttp, _) => "etcd-v3-http-json",
        };
        let latency_by_op = OpKind::ALL
            .iter()
            .filter(|op| !s.by_op[**op as usize].is_empty())
            .map(|op| (op.name(), LatencySummary::of(&s.by_op[*op as usize])))
            .collect();
        Summary {
            tool: "paxoskv-bench",
            label: args.label.clone(),
            workload: args.workload,
            protocol: protocol.to_string(),
            engine: args.engine,
            addr: args.addr.clone(),
            connections: args.connections,
            pipeline: args.pipeline,
            threads,
            rate_target_ops_per_s: (args.rate > 0.0).then_some(args.rate),
            read_ratio: (args.workload == WorkloadArg::Mixed).then_some(args.read_ratio),
            keys: args.keys,
            key_dist: args.key_dist,
            key_size_bytes: args.key_size,
            value_size_bytes: args.value_size,
            warmup_s: args.warmup.as_secs_f64(),
            measured_s: secs,
            throughput_ops_per_s: if secs > 0.0 {
                s.answered_count() as f64 / secs
            } else {
                0.0
            },
            ok_count: s.ok_count,
            conflict_count: s.conflict_count,
            error_count: s.error_count(),
            errors: s.errors.clone(),
            latency: LatencySummary::of(&s.total),
            latency_by_op,
            spectrum: spectrum(&s.total),
            server: None,
        }
    }

    pub fn text(&self) -> String {
        let mode = match self.rate_target_ops_per_s {
            Some(r) => format!("open loop at {r:.0} ops/s"),
            None => "closed loop".to_string(),
        };
        let mut out = format!(
            "paxoskv-bench {:?} over {} to {}: {} connections x pipeline {}, {} threads, {}, {:.1}s measured\n",
            self.workload, self.protocol, self.addr, self.connections, self.pipeline, self.threads, mode, self.measured_s
        )
        .to_lowercase();
        out += &format!(
            "throughput  {:.0} ops/s   (ok {}, conflicts {}, errors {})\n",
            self.throughput_ops_per_s, self.ok_count, self.conflict_count, self.error_count
        );
        let line = |name: &str, l: &LatencySummary| {
            format!(
                "{name:<11} p50 {:>8}  p90 {:>8}  p99 {:>8}  p99.9 {:>8}  max {:>8}  (n={})\n",
                fmt_us(l.p50_us),
                fmt_us(l.p90_us),
                fmt_us(l.p99_us),
                fmt_us(l.p999_us),
                fmt_us(l.max_us),
                l.count
            )
        };
        out += &line("latency", &self.latency);
        if self.latency_by_op.len() > 1 {
            for (op, l) in &self.latency_by_op {
                out += &line(&format!("  {op}"), l);
            }
        }
        if let Some(server) = &self.server {
            out += &server.text();
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out += &format!("errors      {}\n", list.join(", "));
        }
        out
    }
}

fn spectrum(h: &Histogram<u64>) -> Vec<SpectrumPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    SPECTRUM
        .iter()
        .map(|&q| SpectrumPoint {
            quantile: q,
            latency_us: h.value_at_quantile(q) as f64 / 1000.0,
        })
        .collect()
}

/// One progress line for the last interval.
pub fn progress_line(elapsed: Duration, phase: u8, s: &Stats, interval_s: f64) -> String {
    let phase = match phase {
        engine::PHASE_WARMUP => "warmup",
        engine::PHASE_MEASURE => "measure",
        _ => "stop",
    };
    let rate = if interval_s > 0.0 {
        s.answered_count() as f64 / interval_s
    } else {
        0.0
    };
    let (p50, p99, max) = if s.total.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            s.total.value_at_quantile(0.5) as f64 / 1000.0,
            s.total.value_at_quantile(0.99) as f64 / 1000.0,
            s.total.max() as f64 / 1000.0,
        )
    };
    format!(
        "[{:>4.0}s] {phase:<7} {rate:>9.0} ops/s  p50 {:>8}  p99 {:>8}  max {:>8}  conflicts {}  errors {}",
        elapsed.as_secs_f64(),
        fmt_us(p50),
        fmt_us(p99),
        fmt_us(max),
        s.conflict_count,
        s.error_count()
    )
}

/// An HDR histogram interval log (values in nanoseconds), readable by HdrHistogram's log tools.
pub struct HdrLog {
    file: BufWriter<File>,
    serializer: V2DeflateSerializer,
}

impl HdrLog {
    pub fn create(path: &Path) -> anyhow::Result<HdrLog> {
        let mut file = BufWriter::new(
            File::create(path).with_context(|| format!("create {}", path.display()))?,
        );
        let mut serializer = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .add_comment("paxoskv-bench latency log; values in nanoseconds")
            .with_start_time(SystemTime::now())
            .with_base_time(SystemTime::now())
            .begin_log_with(&mut file, &mut serializer)
            .context("write the HDR log header")?;
        writeln!(
            file,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        Ok(HdrLog { file, serializer })
    }

    pub fn write(
        &mut self,
        h: &Histogram<u64>,
        start: Duration,
        length: Duration,
    ) -> anyhow::Result<()> {
        let mut w = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.file, &mut self.serializer)
            .context("HDR log")?;
        w.write_histogram(h, start, length, None)
            .map_err(|e| anyhow::anyhow!("write the HDR log: {e:?}"))
    }

    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.file.flush().context("flush the HDR log")
    }
}
