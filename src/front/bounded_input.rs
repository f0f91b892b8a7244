//! A binary-protocol reader over one complete message that never trusts a length it reads.
//!
//! The `thrift` crate's `TBinaryInputProtocol` allocates what a string, list, set or map header
//! claims before reading it: a negative length panics (capacity overflow) and a length near
//! 2^31 allocates 2 GiB for a message of a few bytes. Here every length and element count is
//! checked against the bytes left in the message first, so a message costs at most its own
//! size, and bad input is an error.

use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TListIdentifier, TMapIdentifier, TMessageIdentifier,
    TMessageType, TSetIdentifier, TStructIdentifier, TType,
};
use thrift::{ProtocolError, ProtocolErrorKind};

pub struct BoundedInput<'a> {
    data: &'a [u8],
    pos: usize,
}

fn invalid(message: String) -> thrift::Error {
    thrift::Error::Protocol(ProtocolError {
        kind: ProtocolErrorKind::InvalidData,
        message,
    })
}

fn field_type(b: u8) -> thrift::Result<TType> {
    Ok(match b {
        0x00 => TType::Stop,
        0x01 => TType::Void,
        0x02 => TType::Bool,
        0x03 => TType::I08,
        0x04 => TType::Double,
        0x06 => TType::I16,
        0x08 => TType::I32,
        0x0A => TType::I64,
        0x0B => TType::String,
        0x0C => TType::Struct,
        0x0D => TType::Map,
        0x0E => TType::Set,
        0x0F => TType::List,
        0x10 => TType::Utf8,
        0x11 => TType::Utf16,
        other => return Err(invalid(format!("unknown field type {other}"))),
    })
}

impl<'a> BoundedInput<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BoundedInput { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize) -> thrift::Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(thrift::Error::Protocol(ProtocolError {
                kind: ProtocolErrorKind::SizeLimit,
                message: format!(
                    "{n} bytes claimed, {} left in the message",
                    self.remaining()
                ),
            }));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> thrift::Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A length or count read from the message, refused when negative or when `min_each`
    /// bytes per item would not fit in what is left.
    fn count(&mut self, min_each: usize) -> thrift::Result<usize> {
        let n = i32::from_be_bytes(self.array()?);
        let n = usize::try_from(n).map_err(|_| invalid(format!("negative length {n}")))?;
        if n.saturating_mul(min_each) > self.remaining() {
            return Err(thrift::Error::Protocol(ProtocolError {
                kind: ProtocolErrorKind::SizeLimit,
                message: format!("{n} items claimed, {} bytes left", self.remaining()),
            }));
        }
        Ok(n)
    }
}

impl TInputProtocol for BoundedInput<'_> {
    fn read_message_begin(&mut self) -> thrift::Result<TMessageIdentifier> {
        let first: [u8; 4] = self.array()?;
        if first[0] & 0x80 != 0 {
            if first[0..2] != [0x80, 0x01] {
                return Err(thrift::Error::Protocol(ProtocolError {
                    kind: ProtocolErrorKind::BadVersion,
                    message: format!("bad protocol version {:02x?}", &first[0..2]),
                }));
            }
            let kind = TMessageType::try_from(first[3])?;
            let name = self.read_string()?;
            let seq = self.read_i32()?;
            Ok(TMessageIdentifier::new(name, kind, seq))
        } else {
            // Non-strict: the first word is the name's length.
            self.pos -= 4;
            let name = self.read_string()?;
            let kind = TMessageType::try_from(self.read_byte()?)?;
            let seq = self.read_i32()?;
            Ok(TMessageIdentifier::new(name, kind, seq))
        }
    }
    fn read_message_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_struct_begin(&mut self) -> thrift::Result<Option<TStructIdentifier>> {
        Ok(None)
    }
    fn read_struct_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_field_begin(&mut self) -> thrift::Result<TFieldIdentifier> {
        let t = field_type(self.read_byte()?)?;
        let id = match t {
            TType::Stop => 0,
            _ => self.read_i16()?,
        };
        Ok(TFieldIdentifier::new::<Option<String>, String, i16>(
            None, t, id,
        ))
    }
    fn read_field_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_bool(&mut self) -> thrift::Result<bool> {
        Ok(self.read_byte()? != 0)
    }
    fn read_bytes(&mut self) -> thrift::Result<Vec<u8>> {
        let n = self.count(1)?;
        Ok(self.take(n)?.to_vec())
    }
    fn read_i8(&mut self) -> thrift::Result<i8> {
        Ok(self.read_byte()? as i8)
    }
    fn read_i16(&mut self) -> thrift::Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn read_i32(&mut self) -> thrift::Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn read_i64(&mut self) -> thrift::Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn read_double(&mut self) -> thrift::Result<f64> {
        Ok(f64::from_bits(u64::from_be_bytes(self.array()?)))
    }
    fn read_string(&mut self) -> thrift::Result<String> {
        let b = self.read_bytes()?;
        String::from_utf8(b).map_err(|e| invalid(format!("invalid utf-8 string: {e}")))
    }
    fn read_list_begin(&mut self) -> thrift::Result<TListIdentifier> {
        let t = field_type(self.read_byte()?)?;
        let n = self.count(1)?;
        Ok(TListIdentifier::new(t, n as i32))
    }
    fn read_list_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_set_begin(&mut self) -> thrift::Result<TSetIdentifier> {
        let t = field_type(self.read_byte()?)?;
        let n = self.count(1)?;
        Ok(TSetIdentifier::new(t, n as i32))
    }
    fn read_set_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_map_begin(&mut self) -> thrift::Result<TMapIdentifier> {
        let k = field_type(self.read_byte()?)?;
        let v = field_type(self.read_byte()?)?;
        let n = self.count(2)?;
        Ok(TMapIdentifier::new(k, v, n as i32))
    }
    fn read_map_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn read_byte(&mut self) -> thrift::Result<u8> {
        Ok(self.array::<1>()?[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_that_lie_are_errors_not_allocations() {
        // A strict header whose method name claims 2^31 - 1 bytes, and one claiming -1.
        for len in [i32::MAX, -1] {
            let mut m = 0x8001_0001u32.to_be_bytes().to_vec();
            m.extend_from_slice(&len.to_be_bytes());
            m.extend_from_slice(b"abc");
            assert!(BoundedInput::new(&m).read_message_begin().is_err());
        }
        // A list claiming a billion elements in 8 bytes.
        let mut l = vec![0x0B];
        l.extend_from_slice(&1_000_000_000i32.to_be_bytes());
        l.extend_from_slice(&[0; 3]);
        assert!(BoundedInput::new(&l).read_list_begin().is_err());
        // Honest input reads back.
        let mut s = 3i32.to_be_bytes().to_vec();
        s.extend_from_slice(b"key");
        assert_eq!(BoundedInput::new(&s).read_string().unwrap(), "key");
    }
}
