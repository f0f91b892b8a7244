//! Thrift codec cost on the server's hot path: decoding a `setKey` call (header + generated
//! request struct) and encoding its reply, unframed and framed, with `front::wire`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use paxoskv::front::generated::{SetKeyRequest, SetKeyResponse};
use paxoskv::front::wire::{decode, encode_call, encode_reply, Call, Response};

/// A strict binary `setKey` call with a 16-byte key and a 100-byte value (unframed).
fn set_key_call() -> Vec<u8> {
    let req = SetKeyRequest::new(vec![b'k'; 16], vec![b'v'; 100], None::<String>);
    let mut out = Vec::new();
    encode_call(&mut out, 7, &req, false);
    out
}

fn codec(c: &mut Criterion) {
    let msg = set_key_call();
    let mut g = c.benchmark_group("thrift_codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_set_key", |b| {
        b.iter(|| {
            let inc = decode(black_box(&msg)).expect("valid message");
            black_box(inc)
        })
    });
    let resp = Response::SetKey(SetKeyResponse::new(true, None::<String>, None::<String>));
    let mut out = Vec::with_capacity(256);
    for framed in [false, true] {
        let name = if framed {
            "encode_reply_framed"
        } else {
            "encode_reply_unframed"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                encode_reply(&mut out, "setKey", 7, black_box(&resp), framed);
                black_box(out.len())
            })
        });
    }
    g.bench_function("decode_and_reply_set_key", |b| {
        b.iter(|| {
            let inc = decode(black_box(&msg)).expect("valid message");
            let ok = matches!(inc.call, Ok(Call::SetKey(_)));
            let resp = Response::SetKey(SetKeyResponse::new(ok, None::<String>, None::<String>));
            out.clear();
            encode_reply(&mut out, &inc.name, inc.sequence, &resp, false);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
