//! The load engine on the client library (`--engine library`): one tokio runtime, one
//! `paxoskv::client::Client` over the same number of connections, and `connections × pipeline`
//! tasks each running one operation at a time (closed loop). Run beside the native engine it
//! measures what the library costs per call.
//!
//! Reports to the main thread exactly like the native workers (`Msg::Interval`/`Msg::Done`,
//! each tagged with the phase its samples were taken in). The tasks record into one shared
//! `Stats` (a histogram set is ~1 MB: one per task would cost more than the calls measured); a
//! reporter task swaps it out every `REPORT_EVERY` and at each phase change (samples within
//! `PHASE_POLL` of a change may land in the neighbouring phase).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paxoskv::client::{Client, Config, Error};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::engine::{Control, Msg, Plan, Workload, PHASE_STOP};
use crate::keys::write_key;
use crate::stats::{OpKind, Stats};

/// How often the measurements go to the main thread.
const REPORT_EVERY: Duration = Duration::from_millis(200);
/// How often the reporter looks at the phase.
const PHASE_POLL: Duration = Duration::from_millis(5);

type Shared = Arc<std::sync::Mutex<Stats>>;

fn take(shared: &Shared) -> Stats {
    std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Runs the whole library engine on one thread (a tokio runtime with `threads` workers) until
/// the phase becomes STOP.
pub fn run(
    plan: Arc<Plan>,
    control: Arc<Control>,
    addrs: Vec<SocketAddr>,
    connections: usize,
    threads: usize,
    tx: Sender<Msg>,
) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = tx.send(Msg::Fatal(format!("library engine: runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        let mut config = Config::new(addrs.iter().map(|a| a.to_string()));
        config.framed = matches!(plan.wire, crate::wire::Wire::Thrift { framed: true });
        config.connections_per_endpoint = connections.div_ceil(addrs.len()).max(1);
        config.max_in_flight_per_connection = plan.pipeline.max(1);
        let client = match Client::connect(config).await {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Msg::Fatal(format!("library engine: {e}")));
                return;
            }
        };
        let shared: Shared = Arc::default();
        let mut tasks = Vec::new();
        for i in 0..connections * plan.pipeline.max(1) {
            let (plan, control, client, shared) = (
                plan.clone(),
                control.clone(),
                client.clone(),
                shared.clone(),
            );
            tasks.push(tokio::spawn(task(i as u64, plan, control, client, shared)));
        }
        let mut phase = control.phase.load(Ordering::Acquire);
        let mut last_report = Instant::now();
        while phase != PHASE_STOP {
            tokio::time::sleep(PHASE_POLL).await;
            let now_phase = control.phase.load(Ordering::Acquire);
            if now_phase != phase || last_report.elapsed() >= REPORT_EVERY {
                let stats = take(&shared);
                let _ = tx.send(Msg::Interval { phase, stats });
                phase = now_phase;
                last_report = Instant::now();
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        let _ = tx.send(Msg::Done {
            phase: PHASE_STOP,
            stats: take(&shared),
        });
    });
}

async fn task(id: u64, plan: Arc<Plan>, control: Arc<Control>, client: Client, shared: Shared) {
    let mut rng = SmallRng::seed_from_u64(
        plan.seed
            .wrapping_add(id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
    );
    let mut key = Vec::with_capacity(plan.key_size_bytes);
    while control.phase.load(Ordering::Acquire) != PHASE_STOP {
        let op = match plan.workload {
            Workload::Write | Workload::Populate { .. } => OpKind::Set,
            Workload::Read => OpKind::Get,
            Workload::Mixed { read_ratio } => {
                if rng.gen_bool(read_ratio) {
                    OpKind::Get
                } else {
                    OpKind::Set
                }
            }
            Workload::Txn => OpKind::Txn,
            Workload::Range { .. } => OpKind::Range,
            Workload::Ping => OpKind::Ping,
        };
        write_key(&mut key, plan.keys.next(&mut rng), plan.key_size_bytes);
        let started = Instant::now();
        let res = match op {
            OpKind::Set => client.set(&key, &plan.value).await,
            OpKind::Get => client.get(&key).await.map(drop),
            OpKind::Ping => client.ping().await.map(drop),
            OpKind::Range => {
                let limit = match plan.workload {
                    Workload::Range { limit } => limit,
                    _ => 1,
                };
                client.get_range(&key, [0xFF], limit).await.map(drop)
            }
            OpKind::Txn => {
                // The native engine's transaction: read version, snapshot read, commit with
                // the key as read conflict; a conflict is counted, not retried.
                let t = client.transaction();
                match t.get(&key).await {
                    Ok(_) => {
                        t.set(&key, &plan.value);
                        t.commit().await.map(drop)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let ns = started.elapsed().as_nanos() as u64;
        let mut stats = shared.lock().unwrap_or_else(|p| p.into_inner());
        match res {
            Ok(()) => stats.record(op, ns, false),
            Err(Error::Conflict(_)) => stats.record(op, ns, true),
            Err(e) => stats.error(e.code(), 1),
        }
    }
}
