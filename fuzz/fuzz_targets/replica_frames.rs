//! The replica protocol on arbitrary bytes: handshake hellos and acks, Paxos messages, command
//! envelopes, snapshot chunks. No panic; whatever decodes re-encodes to the same message.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use paxoskv::cluster::envelope;
use paxoskv::paxos::Message;
use paxoskv::storage::SnapshotChunk;
use paxoskv::transport::frame;
use paxoskv::util::codec::Reader;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let mut again = Vec::new();
        m.encode(&mut again);
        assert_eq!(Message::decode(&again).ok(), Some(m));
    }
    if data.len() >= frame::HELLO_BYTES {
        let mut h = [0u8; frame::HELLO_BYTES];
        h.copy_from_slice(&data[..frame::HELLO_BYTES]);
        if let Ok(hello) = frame::parse_hello(&h) {
            let _ = frame::check_hello(&hello, &data[frame::HELLO_BYTES..], "paxoskv", 3);
        }
    }
    if data.len() >= frame::ACK_BYTES {
        let mut a = [0u8; frame::ACK_BYTES];
        a.copy_from_slice(&data[..frame::ACK_BYTES]);
        let _ = frame::parse_ack(&a);
    }
    let owned = Bytes::copy_from_slice(data);
    let _ = envelope::decode(&owned);
    if let Ok(c) = SnapshotChunk::decode(&mut Reader::new(data)) {
        let _ = c.for_each_pair(|_, _| {});
    }
});
