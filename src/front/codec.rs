//! Thrift message framing on a byte stream: which transport a connection speaks, where each
//! message ends, and a structural check of a binary-protocol message before it is decoded.
//!
//! Supported: binary protocol (strict and non-strict messages) over the unframed (buffered)
//! transport and over the framed transport, told apart by the first bytes of the connection.
//! The structural walk (`binary_message_len`) proves every length and count in a message fits
//! inside it, so decoding with the generated structs never allocates more than the message holds;
//! a message that does not fit `max_message_bytes` is refused before it is buffered whole.

/// What a connection speaks, decided once from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unframed,
    Framed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message of {0} bytes or more exceeds the limit of {1} bytes")]
    TooLarge(u64, usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported protocol: {0}")]
    Unsupported(&'static str),
}

/// Outcome of looking for one complete message at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// More bytes are needed.
    Incomplete,
    /// A complete message: `header` bytes of framing, then `body` bytes of Thrift message.
    Complete { header: usize, body: usize },
}

const VERSION_1: u32 = 0x8001_0000;
const VERSION_MASK: u32 = 0xffff_0000;
const MAX_DEPTH: usize = 64;
const MAX_NAME_BYTES: usize = 256;

/// Decides the transport from the first bytes; `None` until enough bytes arrived.
pub fn detect(buf: &[u8]) -> Result<Option<Transport>, FrameError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    if b0 == 0x80 {
        return Ok(Some(Transport::Unframed));
    }
    if b0 == 0x82 {
        return Err(FrameError::Unsupported(
            "compact protocol (use the binary protocol)",
        ));
    }
    if buf.len() < 8 {
        return Ok(None);
    }
    let first = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if buf[4] == 0x80 {
        return Ok(Some(Transport::Framed));
    }
    if buf[4] == 0x82 {
        return Err(FrameError::Unsupported(
            "compact protocol (use the binary protocol)",
        ));
    }
    // Non-strict binary: unframed starts with the method name's length and then the name;
    // framed starts with the frame length, then the name's length (whose first byte is 0).
    if first > 0 && (first as usize) <= MAX_NAME_BYTES {
        let n = first as usize;
        let avail = &buf[4..buf.len().min(4 + n)];
        if avail
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.' || *c == b':')
        {
            return Ok(Some(Transport::Unframed));
        }
    }
    if first > 0 && buf[4] == 0 {
        return Ok(Some(Transport::Framed));
    }
    Err(FrameError::Malformed(format!(
        "first bytes {:02x?} are not a Thrift binary message",
        &buf[..8]
    )))
}

/// Finds the first complete message in `buf`.
pub fn scan(buf: &[u8], transport: Transport, max: usize) -> Result<Scan, FrameError> {
    match transport {
        Transport::Framed => {
            if buf.len() < 4 {
                return Ok(Scan::Incomplete);
            }
            let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if len < 0 {
                return Err(FrameError::Malformed(format!(
                    "negative frame length {len}"
                )));
            }
            let len = len as usize;
            if len > max {
                return Err(FrameError::TooLarge(len as u64, max));
            }
            if buf.len() < 4 + len {
                return Ok(Scan::Incomplete);
            }
            match binary_message_len(&buf[4..4 + len])? {
                Some(n) if n == len => Ok(Scan::Complete {
                    header: 4,
                    body: len,
                }),
                Some(n) => Err(FrameError::Malformed(format!(
                    "frame of {len} bytes holds a message of {n} bytes"
                ))),
                None => Err(FrameError::Malformed(format!(
                    "frame of {len} bytes holds a truncated message"
                ))),
            }
        }
        Transport::Unframed => {
            let window = &buf[..buf.len().min(max)];
            match binary_message_len(window)? {
                Some(n) => Ok(Scan::Complete { header: 0, body: n }),
                None if buf.len() >= max => Err(FrameError::TooLarge(buf.len() as u64, max)),
                None => Ok(Scan::Incomplete),
            }
        }
    }
}

/// Walks one binary-protocol message; `Ok(None)` when `buf` ends before it does.
pub fn binary_message_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let mut w = Walker { buf, pos: 0 };
    match w.message() {
        Ok(()) => Ok(Some(w.pos)),
        Err(Walk::Short) => Ok(None),
        Err(Walk::Bad(m)) => Err(FrameError::Malformed(m)),
    }
}

enum Walk {
    Short,
    Bad(String),
}

struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Walker<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Walk> {
        if self.buf.len() - self.pos < n {
            return Err(Walk::Short);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Walk> {
        Ok(self.take(1)?[0])
    }
    fn i32(&mut self) -> Result<i32, Walk> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn len(&mut self, what: &str) -> Result<usize, Walk> {
        let n = self.i32()?;
        if n < 0 {
            return Err(Walk::Bad(format!("negative {what} length {n}")));
        }
        Ok(n as usize)
    }

    fn message(&mut self) -> Result<(), Walk> {
        let first = self.i32()?;
        if first < 0 {
            let v = first as u32;
            if v & VERSION_MASK != VERSION_1 {
                return Err(Walk::Bad(format!("bad protocol version {v:#x}")));
            }
            let n = self.len("method name")?;
            if n > MAX_NAME_BYTES {
                return Err(Walk::Bad(format!("method name of {n} bytes")));
            }
            self.take(n)?;
            self.take(4)?; // sequence id
        } else {
            let n = first as usize;
            if n > MAX_NAME_BYTES {
                return Err(Walk::Bad(format!("method name of {n} bytes")));
            }
            self.take(n)?;
            self.take(1)?; // message type
            self.take(4)?; // sequence id
        }
        self.value(12, 0)
    }

    fn value(&mut self, ty: u8, depth: usize) -> Result<(), Walk> {
        if depth > MAX_DEPTH {
            return Err(Walk::Bad("nesting deeper than 64".into()));
        }
        match ty {
            2 | 3 => {
                self.take(1)?;
            }
            4 | 10 => {
                self.take(8)?;
            }
            6 => {
                self.take(2)?;
            }
            8 => {
                self.take(4)?;
            }
            11 => {
                let n = self.len("string")?;
                self.take(n)?;
            }
            12 => loop {
                let t = self.u8()?;
                if t == 0 {
                    break;
                }
                self.take(2)?; // field id
                self.value(t, depth + 1)?;
            },
            13 => {
                let k = self.u8()?;
                let v = self.u8()?;
                let n = self.len("map")?;
                self.check_room(n, k, "map")?;
                for _ in 0..n {
                    self.value(k, depth + 1)?;
                    self.value(v, depth + 1)?;
                }
            }
            14 | 15 => {
                let e = self.u8()?;
                let n = self.len("list")?;
                self.check_room(n, e, "list")?;
                for _ in 0..n {
                    self.value(e, depth + 1)?;
                }
            }
            t => return Err(Walk::Bad(format!("unknown field type {t}"))),
        }
        Ok(())
    }

    /// A container of `n` elements needs at least `n` bytes; refuse counts that cannot fit a
    /// whole message, so a bogus count cannot spin the walker.
    fn check_room(&self, n: usize, elem: u8, what: &str) -> Result<(), Walk> {
        let min = match elem {
            2 | 3 => 1,
            6 => 2,
            8 | 11 | 13 | 14 | 15 => 4,
            4 | 10 => 8,
            12 => 1,
            t => return Err(Walk::Bad(format!("unknown {what} element type {t}"))),
        };
        if n.saturating_mul(min) > self.buf.len() - self.pos {
            // Either truncated so far, or a lie; the caller's size limit settles which.
            return Err(Walk::Short);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict_msg(name: &str, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(0x8001_0001u32).to_be_bytes());
        m.extend_from_slice(&(name.len() as i32).to_be_bytes());
        m.extend_from_slice(name.as_bytes());
        m.extend_from_slice(&7i32.to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    // struct { 1: struct { 1: binary "key", 2: list<binary> ["a"] } }
    fn body() -> Vec<u8> {
        let mut b = vec![12, 0, 1, 11, 0, 1];
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(b"key");
        b.extend_from_slice(&[15, 0, 2, 11]);
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.push(b'a');
        b.extend_from_slice(&[0, 0]);
        b
    }

    #[test]
    fn finds_message_end_and_waits_for_more() {
        let m = strict_msg("get", &body());
        assert_eq!(detect(&m).unwrap(), Some(Transport::Unframed));
        for cut in 0..m.len() {
            assert_eq!(
                scan(&m[..cut], Transport::Unframed, 1 << 20).unwrap(),
                Scan::Incomplete
            );
        }
        let mut two = m.clone();
        two.extend_from_slice(&m);
        assert_eq!(
            scan(&two, Transport::Unframed, 1 << 20).unwrap(),
            Scan::Complete {
                header: 0,
                body: m.len()
            }
        );
    }

    #[test]
    fn framed_and_non_strict_are_detected() {
        let m = strict_msg("get", &body());
        let mut f = (m.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(&m);
        assert_eq!(detect(&f).unwrap(), Some(Transport::Framed));
        assert_eq!(
            scan(&f, Transport::Framed, 1 << 20).unwrap(),
            Scan::Complete {
                header: 4,
                body: m.len()
            }
        );
        let mut ns = 3i32.to_be_bytes().to_vec();
        ns.extend_from_slice(b"get");
        ns.push(1);
        ns.extend_from_slice(&1i32.to_be_bytes());
        ns.extend_from_slice(&body());
        assert_eq!(detect(&ns).unwrap(), Some(Transport::Unframed));
        assert!(matches!(
            scan(&ns, Transport::Unframed, 1 << 20).unwrap(),
            Scan::Complete { .. }
        ));
        let mut fns = (ns.len() as i32).to_be_bytes().to_vec();
        fns.extend_from_slice(&ns);
        assert_eq!(detect(&fns).unwrap(), Some(Transport::Framed));
    }

    #[test]
    fn limits_and_garbage() {
        let huge = [0x7f, 0xff, 0xff, 0xff, 0x80, 0x01, 0, 1];
        assert_eq!(detect(&huge).unwrap(), Some(Transport::Framed));
        assert!(matches!(
            scan(&huge, Transport::Framed, 1 << 24),
            Err(FrameError::TooLarge(..))
        ));
        assert!(
            detect(b"GET / HTTP/1.1\r\n").is_err() || {
                let t = detect(b"GET / HTTP/1.1\r\n").unwrap().unwrap();
                scan(b"GET / HTTP/1.1\r\n", t, 1 << 20).is_err()
            }
        );
        // A string claiming 2 GiB inside a small message never completes; the limit ends it.
        let mut lie = strict_msg("get", &[12, 0, 1, 11, 0, 1]);
        lie.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(
            scan(&lie, Transport::Unframed, 1 << 20).unwrap(),
            Scan::Incomplete
        );
        let mut padded = lie.clone();
        padded.resize(1 << 20, 0);
        assert!(matches!(
            scan(&padded, Transport::Unframed, 1 << 20),
            Err(FrameError::TooLarge(..))
        ));
        let mut neg = strict_msg("get", &[12, 0, 1, 11, 0, 1]);
        neg.extend_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            scan(&neg, Transport::Unframed, 1 << 20),
            Err(FrameError::Malformed(_))
        ));
        let bad_type = strict_msg("get", &[99, 0, 1]);
        assert!(matches!(
            scan(&bad_type, Transport::Unframed, 1 << 20),
            Err(FrameError::Malformed(_))
        ));
    }
}
