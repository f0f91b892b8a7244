//! Bad input on the Thrift port: garbage, a frame claiming 2 GiB, a truncated message, an
//! oversized key, an unknown method. Each gets a clear error or a closed connection, and the
//! server keeps serving everyone else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Server;
use paxoskv::front::generated::*;

fn raw(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until EOF (the server closed the connection); panics if it stays open.
fn expect_closed(mut s: TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("connection was not closed: {e}"),
        }
    }
}

fn still_serving(server: &Server) {
    let mut c = server.client();
    assert!(
        c.set_key(SetKeyRequest::new(
            b"alive".to_vec(),
            b"yes".to_vec(),
            None::<String>
        ))
        .unwrap()
        .success
    );
    let r = c
        .get(GetRequest::new(b"alive".to_vec(), None::<String>))
        .unwrap();
    assert_eq!(r.value, b"yes");
}

#[test]
fn garbage_and_lies_close_only_their_connection() {
    let server = Server::start(&[]);
    // A healthy client connected throughout.
    let mut bystander = server.client();

    let mut s = raw(&server);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    expect_closed(s);

    // A frame claiming 2 GiB.
    let mut s = raw(&server);
    s.write_all(&[0x7f, 0xff, 0xff, 0xff, 0x80, 0x01, 0x00, 0x01])
        .unwrap();
    expect_closed(s);

    // A strict message whose string claims 2 GiB: refused at the size limit, never allocated.
    let mut s = raw(&server);
    let mut m = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 3];
    m.extend_from_slice(b"get");
    m.extend_from_slice(&[0, 0, 0, 1, 12, 0, 1, 11, 0, 1, 0x7f, 0xff, 0xff, 0xff]);
    s.write_all(&m).unwrap();
    s.write_all(&vec![b'x'; 64 << 10]).unwrap();
    // The server waits for the rest of the message; closing mid-message is logged and cleaned up.
    drop(s);

    // A truncated message followed by EOF.
    let mut s = raw(&server);
    s.write_all(&m[..10]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_closed(s);

    // Random bytes after a valid header.
    let mut s = raw(&server);
    let mut m = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 3];
    m.extend_from_slice(b"get");
    m.extend_from_slice(&[0, 0, 0, 1, 99, 99, 99, 99]);
    s.write_all(&m).unwrap();
    expect_closed(s);

    still_serving(&server);
    let r = bystander.ping(PingRequest::new(b"ok".to_vec(), 1)).unwrap();
    assert_eq!(r.message, b"ok");
}

#[test]
fn oversized_messages_are_refused_and_the_server_stays_up() {
    let server = Server::start_with_config(
        "[thrift]\nmax_message_bytes = 65536\nmax_key_bytes = 1024\nmax_value_bytes = 32768\n",
        &[],
    );
    let mut c = server.client();
    let r = c
        .set_key(SetKeyRequest::new(
            vec![b'k'; 2048],
            b"v".to_vec(),
            None::<String>,
        ))
        .unwrap();
    assert_eq!(r.error_code.as_deref(), Some("TOO_LARGE"), "{r:?}");
    let r = c
        .set_key(SetKeyRequest::new(
            b"k".to_vec(),
            vec![0; 40_000],
            None::<String>,
        ))
        .unwrap();
    assert_eq!(r.error_code.as_deref(), Some("TOO_LARGE"), "{r:?}");
    // Over the message limit: the connection is closed, not the server.
    let mut big = server.framed_client();
    assert!(big
        .set_key(SetKeyRequest::new(
            b"k".to_vec(),
            vec![0; 100_000],
            None::<String>
        ))
        .is_err());
    let mut big = server.client();
    assert!(big
        .set_key(SetKeyRequest::new(
            b"k".to_vec(),
            vec![0; 100_000],
            None::<String>
        ))
        .is_err());
    still_serving(&server);
}

#[test]
fn unknown_method_gets_an_application_exception_and_the_connection_stays_usable() {
    use thrift::protocol::*;
    let server = Server::start(&[]);
    let mut s = raw(&server);
    let mut out = Vec::new();
    {
        let mut p = TBinaryOutputProtocol::new(&mut out, true);
        p.write_message_begin(&TMessageIdentifier::new(
            "frobnicate",
            TMessageType::Call,
            5,
        ))
        .unwrap();
        p.write_struct_begin(&TStructIdentifier::new("args"))
            .unwrap();
        p.write_field_stop().unwrap();
        p.write_struct_end().unwrap();
        p.write_message_end().unwrap();
        // A ping right behind it on the same connection.
        p.write_message_begin(&TMessageIdentifier::new("ping", TMessageType::Call, 6))
            .unwrap();
        p.write_struct_begin(&TStructIdentifier::new("args"))
            .unwrap();
        p.write_field_begin(&TFieldIdentifier::new("request", TType::Struct, 1))
            .unwrap();
        PingRequest::new(b"after".to_vec(), 1)
            .write_to_out_protocol(&mut p)
            .unwrap();
        p.write_field_end().unwrap();
        p.write_field_stop().unwrap();
        p.write_struct_end().unwrap();
        p.write_message_end().unwrap();
    }
    s.write_all(&out).unwrap();
    let mut p = TBinaryInputProtocol::new(s.try_clone().unwrap(), true);
    let h = p.read_message_begin().unwrap();
    assert_eq!(
        (h.message_type, h.sequence_number),
        (TMessageType::Exception, 5)
    );
    let e = thrift::Error::read_application_error_from_in_protocol(&mut p).unwrap();
    assert_eq!(e.kind, thrift::ApplicationErrorKind::UnknownMethod);
    p.read_message_end().unwrap();
    let h = p.read_message_begin().unwrap();
    assert_eq!(
        (h.message_type, h.sequence_number, h.name.as_str()),
        (TMessageType::Reply, 6, "ping")
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    use thrift::protocol::*;
    let server = Server::start(&[]);
    let mut s = raw(&server);
    let mut out = Vec::new();
    {
        let mut p = TBinaryOutputProtocol::new(&mut out, true);
        for i in 0..100i32 {
            type Writer = Box<dyn Fn(&mut dyn TOutputProtocol)>;
            let (name, req): (&str, Writer) = if i % 2 == 0 {
                (
                    "setKey",
                    Box::new(move |p| {
                        SetKeyRequest::new(
                            format!("p{i}").into_bytes(),
                            b"v".to_vec(),
                            None::<String>,
                        )
                        .write_to_out_protocol(p)
                        .unwrap()
                    }),
                )
            } else {
                (
                    "ping",
                    Box::new(move |p| {
                        PingRequest::new(format!("m{i}").into_bytes(), i as i64)
                            .write_to_out_protocol(p)
                            .unwrap()
                    }),
                )
            };
            common::raw::call(&mut p, name, i, &*req);
        }
    }
    s.write_all(&out).unwrap();
    let mut p = TBinaryInputProtocol::new(s.try_clone().unwrap(), true);
    for i in 0..100i32 {
        common::raw::reply_start(&mut p, i);
        if i % 2 == 0 {
            assert!(
                SetKeyResponse::read_from_in_protocol(&mut p)
                    .unwrap()
                    .success
            );
        } else {
            assert_eq!(
                PingResponse::read_from_in_protocol(&mut p)
                    .unwrap()
                    .timestamp,
                i as i64
            );
        }
        common::raw::reply_end(&mut p);
    }
}

#[test]
fn a_pipelined_read_sees_the_writes_sent_before_it_on_its_connection() {
    use thrift::protocol::*;
    let server = Server::start(&["--enable-fault-injection"]);
    // Every setKey is held 300 ms before it runs: a read that did not wait would overtake it.
    common::delay_every(&mut server.client(), "setKey", 300);
    let mut s = raw(&server);
    let mut out = Vec::new();
    {
        let mut p = TBinaryOutputProtocol::new(&mut out, true);
        let call = common::raw::call;
        call(&mut p, "setKey", 1, &|p| {
            SetKeyRequest::new(b"ryw".to_vec(), b"mine".to_vec(), None::<String>)
                .write_to_out_protocol(p)
                .unwrap()
        });
        call(&mut p, "get", 2, &|p| {
            GetRequest::new(b"ryw".to_vec(), None::<String>)
                .write_to_out_protocol(p)
                .unwrap()
        });
    }
    s.write_all(&out).unwrap();
    let mut p = TBinaryInputProtocol::new(s.try_clone().unwrap(), true);
    for seq in 1..=2 {
        common::raw::reply_start(&mut p, seq);
        if seq == 1 {
            assert!(
                SetKeyResponse::read_from_in_protocol(&mut p)
                    .unwrap()
                    .success
            );
        } else {
            let g = GetResponse::read_from_in_protocol(&mut p).unwrap();
            assert!(g.found, "the read overtook the write before it: {g:?}");
            assert_eq!(g.value, b"mine");
        }
        common::raw::reply_end(&mut p);
    }
}
