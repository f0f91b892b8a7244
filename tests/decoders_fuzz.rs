//! Every decoder that reads bytes from outside — the Thrift message walker and decoder, the
//! replica protocol's messages, WAL records and segments, snapshot chunks, command envelopes,
//! config files — gets arbitrary and mutated input and must answer with an error, never a
//! panic, a hang or a huge allocation; valid input must survive encode → decode unchanged.
//! Deterministic (seeded) and bounded to about a second per decoder, for CI.

use std::time::{Duration, Instant};

use bytes::Bytes;
use paxoskv::cluster::envelope;
use paxoskv::front::{codec, wire};
use paxoskv::paxos::{Ballot, Batch, Message, PromiseEntry, ReadId, Record, Slot, Value};
use paxoskv::storage::SnapshotChunk;
use paxoskv::txn::{Command, WriteOp};
use paxoskv::util::codec::Reader;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const BUDGET: Duration = Duration::from_millis(1200);

/// Random bytes, and mutations of `seeds` (flips, truncations, splices, length-field lies).
fn inputs(seeds: &[Vec<u8>], mut check: impl FnMut(&[u8])) -> u64 {
    let mut rng = SmallRng::seed_from_u64(0x5EED_F022);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < BUDGET {
        let mut b: Vec<u8> = if seeds.is_empty() || rng.gen_bool(0.2) {
            let len = rng.gen_range(0..256);
            (0..len).map(|_| rng.gen()).collect()
        } else {
            seeds[rng.gen_range(0..seeds.len())].clone()
        };
        for _ in 0..rng.gen_range(0..4) {
            if b.is_empty() {
                break;
            }
            let at = rng.gen_range(0..b.len());
            match rng.gen_range(0..5) {
                0 => b[at] ^= 1 << rng.gen_range(0..8),
                1 => b.truncate(at),
                2 => b[at] = 0xFF,
                3 => {
                    // A length or count field claiming far more than there is.
                    let end = (at + 4).min(b.len());
                    b[at..end].fill(0x7F);
                }
                _ => {
                    let extra: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                    b.splice(at..at, extra);
                }
            }
        }
        check(&b);
        n += 1;
    }
    n
}

fn value(n: usize) -> Value {
    Value::Batch(Batch::new(vec![
        Bytes::from(vec![b'c'; n]),
        Bytes::from_static(b"x"),
    ]))
}

#[test]
fn replica_messages_never_panic_and_round_trip() {
    let messages = vec![
        Message::Prepare {
            ballot: Ballot(7),
            from_slot: Slot(3),
            released: None,
        },
        Message::Prepare {
            ballot: Ballot(9),
            from_slot: Slot(3),
            released: Some(Ballot(7)),
        },
        Message::Promise {
            ballot: Ballot(7),
            log_start: Slot(1),
            commit_upto: Slot(2),
            entries: vec![PromiseEntry {
                slot: Slot(3),
                ballot: Ballot(4),
                value: value(20),
                committed: false,
            }],
            amnesiac: true,
            more: false,
        },
        Message::Accept {
            ballot: Ballot(7),
            slot: Slot(9),
            value: value(40),
            commit_upto: Slot(8),
        },
        Message::Catchup {
            entries: vec![(Slot(1), value(3)), (Slot(2), Value::Noop)],
            commit_upto: Slot(2),
        },
        Message::Heartbeat {
            ballot: Ballot(7),
            commit_upto: Slot(8),
            read_seq: 5,
            compact_upto: Slot(4),
            log_end: Slot(9),
            bootstrap: false,
        },
        Message::Forward {
            commands: vec![Bytes::from_static(b"set k v"), Bytes::new()],
        },
        Message::ForwardRefused {
            commands: vec![Bytes::from_static(b"cas k")],
            overloaded: true,
        },
        Message::ReadIndexRequest { id: ReadId(3) },
        Message::RebuildBarrier { ballot: Ballot(7) },
        Message::ReadIndexReply {
            id: ReadId(3),
            read_index: Some(Slot(8)),
        },
    ];
    let mut seeds = Vec::new();
    for m in &messages {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        assert_eq!(&Message::decode(&buf).unwrap(), m);
        seeds.push(buf);
    }
    let n = inputs(&seeds, |b| {
        if let Ok(m) = Message::decode(b) {
            // Whatever decodes re-encodes to something that decodes the same.
            let mut again = Vec::new();
            m.encode(&mut again);
            assert_eq!(Message::decode(&again).ok(), Some(m));
        }
    });
    eprintln!("replica messages: {n} inputs");
}

#[test]
fn wal_records_commands_envelopes_and_snapshot_chunks_never_panic() {
    let rec = Record::Accept {
        slot: Slot(5),
        ballot: Ballot(2),
        value: value(30),
    };
    let mut r = Vec::new();
    rec.encode(&mut r);
    assert_eq!(Record::decode(&r).unwrap(), rec);
    let cmd = Command::blind(vec![WriteOp::Set {
        cf: "cf".into(),
        key: Bytes::from_static(b"key"),
        value: Bytes::from_static(b"value"),
    }]);
    let c = cmd.encode_to_bytes();
    let env = envelope::encode(1, 99, &c);
    let chunk = SnapshotChunk {
        slot: 10,
        last_version: 20,
        cursor: Bytes::from_static(b"\x01k"),
        count: 1,
        pairs: {
            let mut p = Vec::new();
            paxoskv::util::codec::put_bytes(&mut p, b"\x01k");
            paxoskv::util::codec::put_bytes(&mut p, b"\x01v");
            Bytes::from(p)
        },
        done: true,
    };
    let mut ch = Vec::new();
    chunk.encode(&mut ch);
    // A segment's bytes as recovery reads them: records with LSNs 1 and 2 (the first ends its
    // group), then zeros.
    let mut seg = Vec::new();
    for (lsn, payload, group_end) in [(1u64, &r[..], true), (2, &r[..], false)] {
        let word = payload.len() as u32 | if group_end { 1 << 31 } else { 0 };
        seg.extend_from_slice(&word.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&lsn.to_le_bytes()), payload);
        seg.extend_from_slice(&crc.to_le_bytes());
        seg.extend_from_slice(&lsn.to_le_bytes());
        seg.extend_from_slice(payload);
    }
    seg.resize(seg.len() + 64, 0);
    let (found, end, acked) = paxoskv::wal::recover_segment(&seg, paxoskv::wal::Lsn(1));
    assert_eq!(found.len(), 2, "the segment seed holds two records");
    assert_eq!((end, acked), (seg.len() - 64, None));
    let seeds = vec![r, c.to_vec(), env.to_vec(), ch, seg];
    let n = inputs(&seeds, |b| {
        let _ = Record::decode(b);
        let (found, end, _) = paxoskv::wal::recover_segment(b, paxoskv::wal::Lsn(1));
        assert!(end <= b.len());
        for (i, (lsn, _)) in found.iter().enumerate() {
            assert_eq!(lsn.0, 1 + i as u64, "records out of sequence");
        }
        let owned = Bytes::copy_from_slice(b);
        let _ = Command::decode(&owned);
        let _ = envelope::decode(&owned);
        if let Ok(c) = SnapshotChunk::decode(&mut Reader::new(b)) {
            let _ = c.for_each_pair(|_, _| {});
        }
    });
    eprintln!("records, commands, envelopes, chunks: {n} inputs");
}

/// A binary-protocol `setKey` call, as a client sends it (unframed).
fn set_key_call() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x8001_0001u32.to_be_bytes());
    b.extend_from_slice(&6u32.to_be_bytes());
    b.extend_from_slice(b"setKey");
    b.extend_from_slice(&1i32.to_be_bytes());
    // args struct: field 1 (struct) = SetKeyRequest { 1: binary key, 2: binary value }
    b.extend_from_slice(&[12, 0, 1]);
    b.extend_from_slice(&[11, 0, 1]);
    b.extend_from_slice(&3u32.to_be_bytes());
    b.extend_from_slice(b"key");
    b.extend_from_slice(&[11, 0, 2]);
    b.extend_from_slice(&5u32.to_be_bytes());
    b.extend_from_slice(b"value");
    b.extend_from_slice(&[0, 0]);
    b
}

#[test]
fn thrift_messages_never_panic() {
    let unframed = set_key_call();
    let mut framed = (unframed.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&unframed);
    assert!(wire::decode(&unframed).is_ok_and(|i| i.call.is_ok()));
    let n = inputs(&[unframed, framed], |b| {
        if let Ok(Some(t)) = codec::detect(b) {
            if let Ok(codec::Scan::Complete { header, body }) = codec::scan(b, t, 1 << 20) {
                let _ = wire::decode(&b[header..header + body]);
            }
        }
        let _ = wire::decode(b);
    });
    eprintln!("thrift messages: {n} inputs");
}

#[test]
fn config_files_never_panic() {
    let good = paxoskv::config::ReplicatedConfig::default().to_toml();
    let n = inputs(&[good.into_bytes()], |b| {
        if let Ok(text) = std::str::from_utf8(b) {
            if let Ok(c) = paxoskv::config::ReplicatedConfig::from_toml(text) {
                let _ = c.validate();
            }
        }
    });
    eprintln!("config files: {n} inputs");
}
