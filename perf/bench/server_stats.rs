//! Server-side counters scraped from paxoskv's Prometheus endpoint (`--metrics HOST:PORT`)
//! before and after a run, so the report says how well the server batched (commands per Paxos
//! slot, the commands-per-slot histogram of the run) and where a slot's time went (mean time
//! from proposed to chosen on the primary, from Accept to Accepted on the acceptors, and of a
//! WAL write).
//!
//! Must not: fail the run. A scrape that fails is reported as missing, never unwrapped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Timeout of one scrape (connect, write, read).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The counters of one scrape, summed over every replica the endpoint reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub slots: f64,
    pub commands: f64,
    /// `le` bound (as printed) → cumulative committed slots with at most that many commands.
    pub slot_buckets: BTreeMap<String, f64>,
    /// (sum of seconds, count) of each timed stage, in `STAGES` order.
    pub stages: [(f64, f64); STAGES.len()],
}

/// The timed stages the report shows: (histogram, what it times).
const STAGES: [(&str, &str); 3] = [
    ("paxoskv_replica_slot_commit_seconds", "proposed to chosen"),
    ("paxoskv_replica_accept_seconds", "Accept to Accepted"),
    ("paxoskv_replica_wal_sync_seconds", "WAL write"),
];

/// What the run did on the server, from two snapshots.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerStats {
    pub committed_slots: f64,
    pub committed_commands: f64,
    pub commands_per_slot: f64,
    /// (upper bound of commands per slot, share of the run's slots at or below it).
    pub slot_size_cdf: Vec<(String, f64)>,
    /// (stage, mean seconds over the run) for each timed stage the run saw.
    pub stage_means: Vec<(String, f64)>,
}

/// GETs `/metrics` from `addr` and sums the replica counters.
pub fn scrape(addr: &str) -> Result<Snapshot, String> {
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&sock, SCRAPE_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok(parse(&body))
}

/// Parses the Prometheus text the server renders (only the series this report uses).
pub fn parse(text: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or("");
        match name {
            "paxoskv_replica_committed_slots_total" => snap.slots += v,
            "paxoskv_replica_committed_commands_total" => snap.commands += v,
            "paxoskv_replica_slot_commands_bucket" => {
                if let Some(le) = series
                    .split("le=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                {
                    *snap.slot_buckets.entry(le.to_string()).or_default() += v;
                }
            }
            _ => {
                let stage = |suffix: &str| {
                    let base = name.strip_suffix(suffix)?;
                    STAGES.iter().position(|(n, _)| *n == base)
                };
                if let Some(i) = stage("_sum") {
                    snap.stages[i].0 += v;
                } else if let Some(i) = stage("_count") {
                    snap.stages[i].1 += v;
                }
            }
        }
    }
    snap
}

impl ServerStats {
    pub fn between(before: &Snapshot, after: &Snapshot) -> ServerStats {
        let slots = after.slots - before.slots;
        let commands = after.commands - before.commands;
        let total = after.slot_buckets.get("+Inf").copied().unwrap_or(0.0)
            - before.slot_buckets.get("+Inf").copied().unwrap_or(0.0);
        let mut cdf: Vec<(String, f64)> = after
            .slot_buckets
            .iter()
            .map(|(le, v)| {
                let d = v - before.slot_buckets.get(le).copied().unwrap_or(0.0);
                (le.clone(), if total > 0.0 { d / total } else { 0.0 })
            })
            .collect();
        cdf.sort_by(|a, b| {
            let key = |s: &str| s.parse::<f64>().unwrap_or(f64::INFINITY);
            key(&a.0).total_cmp(&key(&b.0))
        });
        let stage_means = STAGES
            .iter()
            .zip(after.stages.iter().zip(&before.stages))
            .filter_map(|((_, what), (a, b))| {
                let n = a.1 - b.1;
                (n > 0.0).then(|| (what.to_string(), (a.0 - b.0) / n))
            })
            .collect();
        ServerStats {
            stage_means,
            committed_slots: slots,
            committed_commands: commands,
            commands_per_slot: if slots > 0.0 { commands / slots } else { 0.0 },
            slot_size_cdf: cdf,
        }
    }

    /// One line for the text report.
    pub fn text(&self) -> String {
        let median = self
            .slot_size_cdf
            .iter()
            .find(|(_, share)| *share >= 0.5)
            .map_or("-".to_string(), |(le, _)| format!("<= {le}"));
        let mut text = format!(
            "server      {:.1} commands per slot ({:.0} commands in {:.0} slots, summed over replicas); median slot {median} commands\n",
            self.commands_per_slot, self.committed_commands, self.committed_slots
        );
        if !self.stage_means.is_empty() {
            let stages: Vec<String> = self
                .stage_means
                .iter()
                .map(|(what, s)| format!("{what} {:.0} us", s * 1e6))
                .collect();
            text += &format!("slot time   mean {}\n", stages.join(", "));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_per_slot_comes_from_the_difference_of_two_scrapes() {
        let before = parse(
            "paxoskv_replica_committed_slots_total{replica=\"0\"} 10\n\
             paxoskv_replica_committed_commands_total{replica=\"0\"} 10\n\
             paxoskv_replica_slot_commands_bucket{replica=\"0\",le=\"1\"} 10\n\
             paxoskv_replica_slot_commands_bucket{replica=\"0\",le=\"+Inf\"} 10\n",
        );
        let after = parse(
            "# HELP x\n\
             paxoskv_replica_committed_slots_total{replica=\"0\"} 20\n\
             paxoskv_replica_committed_commands_total{replica=\"0\"} 410\n\
             paxoskv_replica_slot_commands_bucket{replica=\"0\",le=\"1\"} 12\n\
             paxoskv_replica_slot_commands_bucket{replica=\"0\",le=\"64\"} 14\n\
             paxoskv_replica_slot_commands_bucket{replica=\"0\",le=\"+Inf\"} 20\n",
        );
        let s = ServerStats::between(&before, &after);
        assert_eq!(s.committed_slots, 10.0);
        assert_eq!(s.commands_per_slot, 40.0);
        assert_eq!(s.slot_size_cdf.last().map(|c| c.1), Some(1.0));
        assert_eq!(s.slot_size_cdf[0], ("1".to_string(), 0.2));
        assert!(s.text().contains("40.0 commands per slot"), "{}", s.text());
        assert!(s.stage_means.is_empty(), "no stage was timed");
    }

    #[test]
    fn stage_means_come_from_the_difference_of_two_scrapes() {
        let before = parse(
            "paxoskv_replica_slot_commit_seconds_sum{replica=\"0\"} 1.0\n\
             paxoskv_replica_slot_commit_seconds_count{replica=\"0\"} 100\n\
             paxoskv_replica_accept_seconds_sum{replica=\"1\"} 0.5\n\
             paxoskv_replica_accept_seconds_count{replica=\"1\"} 100\n",
        );
        let after = parse(
            "paxoskv_replica_slot_commit_seconds_sum{replica=\"0\"} 1.2\n\
             paxoskv_replica_slot_commit_seconds_count{replica=\"0\"} 300\n\
             paxoskv_replica_accept_seconds_sum{replica=\"1\"} 0.6\n\
             paxoskv_replica_accept_seconds_count{replica=\"1\"} 150\n\
             paxoskv_replica_accept_seconds_sum{replica=\"2\"} 0.3\n\
             paxoskv_replica_accept_seconds_count{replica=\"2\"} 50\n",
        );
        let s = ServerStats::between(&before, &after);
        let mean = |what: &str| {
            s.stage_means
                .iter()
                .find(|(w, _)| w == what)
                .map(|(_, m)| (m * 1e6).round())
        };
        assert_eq!(mean("proposed to chosen"), Some(1000.0));
        assert_eq!(mean("Accept to Accepted"), Some(4000.0));
        assert_eq!(mean("WAL write"), None, "not in the scrapes");
        assert!(
            s.text()
                .contains("proposed to chosen 1000 us, Accept to Accepted 4000 us"),
            "{}",
            s.text()
        );
    }
}
