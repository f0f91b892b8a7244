//! Thrift messages written and read by hand (binary protocol, unframed): for tests that send
//! several requests in one burst, which the generated client cannot.

use std::net::TcpStream;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol,
    TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
};

/// Writes a request struct into a call's argument field.
pub type Encode<'a> = &'a dyn Fn(&mut dyn TOutputProtocol);

/// Appends one call `name` with sequence number `seq` to `p`.
pub fn call(p: &mut TBinaryOutputProtocol<&mut Vec<u8>>, name: &str, seq: i32, req: Encode) {
    p.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, seq))
        .unwrap();
    p.write_struct_begin(&TStructIdentifier::new("args"))
        .unwrap();
    p.write_field_begin(&TFieldIdentifier::new("request", TType::Struct, 1))
        .unwrap();
    req(p);
    p.write_field_end().unwrap();
    p.write_field_stop().unwrap();
    p.write_struct_end().unwrap();
    p.write_message_end().unwrap();
}

/// Reads one reply's header (its sequence number must be `seq`) and opens its result struct
/// at the success field; the caller reads the response, then `reply_end`.
pub fn reply_start(p: &mut TBinaryInputProtocol<TcpStream>, seq: i32) {
    let h = p.read_message_begin().unwrap();
    assert_eq!(h.sequence_number, seq, "replies come back in request order");
    p.read_struct_begin().unwrap();
    let f = p.read_field_begin().unwrap();
    assert_eq!(f.id, Some(0), "a success field");
}

/// Closes a reply opened by `reply_start`.
pub fn reply_end(p: &mut TBinaryInputProtocol<TcpStream>) {
    p.read_field_end().unwrap();
    assert_eq!(p.read_field_begin().unwrap().field_type, TType::Stop);
    p.read_struct_end().unwrap();
    p.read_message_end().unwrap();
}
