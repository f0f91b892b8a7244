//! A replica's start: open its WAL, fold the records into the core's durable state, decide
//! whether it starts without its votes (amnesia), and draw this run's incarnation.

use super::ReplicaParams;
use crate::error::Error;
use crate::paxos::{self, Ballot, DurableState, Record, Slot};
use crate::wal::Wal;

pub(super) struct Recovered {
    pub(super) wal: Wal,
    pub(super) core: paxos::Replica,
    /// The slot the core's log restarts after.
    pub(super) base: Slot,
    pub(super) promised: Ballot,
    /// The highest slot the recovered WAL holds an accept for.
    pub(super) recovered_max_slot: Slot,
    pub(super) incarnation: u64,
}

pub(super) async fn recover(p: &ReplicaParams) -> Result<Recovered, Error> {
    // The WAL opens first: its segments are the first DMA files this executor touches.
    let (wal, records) = Wal::open(&p.wal_dir, p.wal_segment_bytes, p.wal_dsync).await?;
    // The core's log restarts below everything the WAL still holds, not at the store's applied
    // slot: peers that lag behind this replica can then catch up from its log. Slots the store
    // already applied are re-emitted as committed and skipped by the executor (exactly once).
    let mut decoded = Vec::with_capacity(records.len());
    let mut first_wal_slot: Option<u64> = None;
    for (lsn, bytes) in &records {
        let rec =
            Record::decode(bytes).map_err(|source| Error::WalRecord { lsn: lsn.0, source })?;
        if let Record::Accept { slot, .. } = &rec {
            first_wal_slot = Some(first_wal_slot.map_or(slot.0, |f| f.min(slot.0)));
        }
        decoded.push(rec);
    }
    let base =
        Slot(first_wal_slot.map_or(p.applied_slot, |f| p.applied_slot.min(f.saturating_sub(1))));
    let amnesiac = crate::cluster::rebuild::amnesiac_at_start(&p.wal_dir, records.is_empty())?;
    if amnesiac {
        tracing::info!(
            replica = p.id,
            "this replica starts without its durable Paxos state (a new cluster, or a lost \
             WAL): it does not vote until it has rebuilt from its peers"
        );
    }
    let mut durable = DurableState {
        snapshot_upto: base,
        amnesiac,
        ..DurableState::default()
    };
    for rec in &decoded {
        durable.apply(rec);
    }
    drop(decoded);
    let promised = durable.promised;
    // Segments recovered from disk may hold accepts up to here: no cut may drop them before
    // the store covers that slot.
    let recovered_max_slot = durable
        .accepted
        .keys()
        .next_back()
        .copied()
        .unwrap_or(Slot(0));
    let incarnation = crate::cluster::incarnation::next_incarnation(&p.wal_dir)?;
    tracing::info!(
        replica = p.id,
        incarnation,
        "request ids of this run carry incarnation {incarnation}"
    );
    tracing::info!(
        replica = p.id,
        records = records.len(),
        applied = p.applied_slot,
        log_base = base.0,
        "replica recovered"
    );
    drop(records);
    Ok(Recovered {
        wal,
        core: paxos::Replica::new(p.paxos.clone(), durable),
        base,
        promised,
        recovered_max_slot,
        incarnation,
    })
}
