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

/// Finds the first complete message in `buf` (a fresh walk; see `scan_resume`).
pub fn scan(buf: &[u8], transport: Transport, max: usize) -> Result<Scan, FrameError> {
    scan_resume(buf, transport, max, &mut ScanState::default())
}

/// Finds the first complete message in `buf`, resuming the walk `state` holds from an earlier
/// call on a shorter prefix of the same bytes. Every byte of a message is walked once however
/// it is split across reads (an unframed message has no length up front, so a fresh walk per
/// read would be quadratic). Reset `state` (`ScanState::default()`) after a complete message.
pub fn scan_resume(
    buf: &[u8],
    transport: Transport,
    max: usize,
    state: &mut ScanState,
) -> Result<Scan, FrameError> {
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
            match state.walk(window)? {
                Some(n) => Ok(Scan::Complete { header: 0, body: n }),
                None if buf.len() >= max => Err(FrameError::TooLarge(buf.len() as u64, max)),
                None => Ok(Scan::Incomplete),
            }
        }
    }
}

/// Walks one binary-protocol message; `Ok(None)` when `buf` ends before it does.
pub fn binary_message_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    ScanState::default().walk(buf)
}

/// A walk through one message, stopped where the bytes ran out: the position of the next
/// item and the containers open around it. Each step (a message header, a field header with
/// its value's header or whole primitive, a container element) is taken whole or not at all.
#[derive(Debug, Default)]
pub struct ScanState {
    pos: usize,
    started: bool,
    open: Vec<Open>,
    /// Items taken over the walk's life (for the linearity test: each is taken once).
    #[cfg(test)]
    taken: usize,
}

#[derive(Debug)]
enum Open {
    Struct,
    /// A list or set: element type, elements left.
    Seq(u8, usize),
    /// A map: key and value types, keys plus values left.
    Map(u8, u8, usize),
}

/// What one value at a position is: its bytes when it is whole (a primitive or a string), or
/// the header of a container to open.
enum Item {
    Whole(usize),
    Opens(usize, Open),
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    let s = b.get(at..at + 4)?;
    Some(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn malformed(message: String) -> FrameError {
    FrameError::Malformed(message)
}

/// A container's element type must be a Thrift type. Its count needs no check here: elements
/// are walked as their bytes arrive, each at least one byte, so a count that lies is ended by
/// the message size limit, never by spinning.
fn check_elem(elem: u8, what: &str) -> Result<(), FrameError> {
    match elem {
        2 | 3 | 4 | 6 | 8 | 10 | 11 | 12 | 13 | 14 | 15 => Ok(()),
        t => Err(malformed(format!("unknown {what} element type {t}"))),
    }
}

/// A length or count at `at`: `None` while its bytes are missing, an error if negative.
fn len_at(buf: &[u8], at: usize, what: &str) -> Result<Option<usize>, FrameError> {
    match be_i32(buf, at) {
        None => Ok(None),
        Some(n) if n < 0 => Err(malformed(format!("negative {what} length {n}"))),
        Some(n) => Ok(Some(n as usize)),
    }
}

impl ScanState {
    /// Continues the walk over `buf` (which extends what earlier calls saw): `Some(len)` once
    /// the message is complete, `None` while bytes are missing.
    fn walk(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if !self.started {
            let Some(n) = message_header_len(buf)? else {
                return Ok(None);
            };
            self.pos = n;
            self.started = true;
            self.open.push(Open::Struct);
        }
        loop {
            let ty = match self.open.last_mut() {
                None => return Ok(Some(self.pos)),
                Some(Open::Struct) => {
                    let Some(&t) = buf.get(self.pos) else {
                        return Ok(None);
                    };
                    if t == 0 {
                        self.pos += 1;
                        self.open.pop();
                        continue;
                    }
                    // A field: type, id, then its value, taken together.
                    match self.item(buf, self.pos + 3, t)? {
                        None => return Ok(None),
                        Some(item) => {
                            self.take(item)?;
                            continue;
                        }
                    }
                }
                Some(Open::Seq(_, 0)) | Some(Open::Map(_, _, 0)) => {
                    self.open.pop();
                    continue;
                }
                Some(Open::Seq(e, _)) => *e,
                Some(Open::Map(k, v, left)) => {
                    if *left % 2 == 0 {
                        *k
                    } else {
                        *v
                    }
                }
            };
            match self.item(buf, self.pos, ty)? {
                None => return Ok(None),
                Some(item) => {
                    if let Some(Open::Seq(_, left) | Open::Map(_, _, left)) = self.open.last_mut() {
                        *left -= 1;
                    }
                    self.take(item)?;
                }
            }
        }
    }

    /// Moves past an item and opens its container, if any.
    fn take(&mut self, item: Item) -> Result<(), FrameError> {
        #[cfg(test)]
        {
            self.taken += 1;
        }
        match item {
            Item::Whole(end) => self.pos = end,
            Item::Opens(end, open) => {
                if self.open.len() > MAX_DEPTH {
                    return Err(malformed("nesting deeper than 64".into()));
                }
                self.pos = end;
                self.open.push(open);
            }
        }
        Ok(())
    }

    /// The value of type `ty` starting at `at`: `None` if its bytes (or its container header)
    /// are not all in `buf` yet.
    fn item(&self, buf: &[u8], at: usize, ty: u8) -> Result<Option<Item>, FrameError> {
        let whole = |n: usize| (buf.len() >= at + n).then_some(Item::Whole(at + n));
        Ok(match ty {
            2 | 3 => whole(1),
            4 | 10 => whole(8),
            6 => whole(2),
            8 => whole(4),
            11 => match len_at(buf, at, "string")? {
                None => None,
                Some(n) => whole(4 + n),
            },
            12 => (buf.len() >= at).then_some(Item::Opens(at, Open::Struct)),
            13 => match (buf.get(at), buf.get(at + 1), len_at(buf, at + 2, "map")?) {
                (Some(&k), Some(&v), Some(n)) => {
                    check_elem(k, "map")?;
                    check_elem(v, "map")?;
                    Some(Item::Opens(at + 6, Open::Map(k, v, n.saturating_mul(2))))
                }
                _ => None,
            },
            14 | 15 => match (buf.get(at), len_at(buf, at + 1, "list")?) {
                (Some(&e), Some(n)) => {
                    check_elem(e, "list")?;
                    Some(Item::Opens(at + 5, Open::Seq(e, n)))
                }
                _ => None,
            },
            t => return Err(malformed(format!("unknown field type {t}"))),
        })
    }
}

/// The length of a message's header (strict or not), `None` while it is incomplete.
fn message_header_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(first) = be_i32(buf, 0) else {
        return Ok(None);
    };
    // Strict: version, name length, name, sequence id. Old style: name length, name, message
    // type, sequence id.
    let (name_len, start, after_name) = if first < 0 {
        let v = first as u32;
        if v & VERSION_MASK != VERSION_1 {
            return Err(malformed(format!("bad protocol version {v:#x}")));
        }
        let Some(n) = len_at(buf, 4, "method name")? else {
            return Ok(None);
        };
        (n, 8, 4)
    } else {
        (first as usize, 4, 5)
    };
    if name_len > MAX_NAME_BYTES {
        return Err(malformed(format!("method name of {name_len} bytes")));
    }
    let end = start + name_len + after_name;
    Ok((buf.len() >= end).then_some(end))
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

    /// A message fed a few bytes at a time: the resumed walk finds the same end as one walk
    /// over the whole message, and takes each item once (never walks from the start again).
    #[test]
    fn resumed_walk_is_linear_and_agrees_with_a_whole_walk() {
        // struct { 1: list<i32> of 100k, 2: binary of 64 KiB, 3: map<binary, struct{}> }
        let mut b = vec![15, 0, 1, 8];
        b.extend_from_slice(&100_000i32.to_be_bytes());
        for i in 0..100_000i32 {
            b.extend_from_slice(&i.to_be_bytes());
        }
        b.extend_from_slice(&[11, 0, 2]);
        b.extend_from_slice(&(64i32 << 10).to_be_bytes());
        b.resize(b.len() + (64 << 10), 7);
        b.extend_from_slice(&[13, 0, 3, 11, 12]);
        b.extend_from_slice(&2i32.to_be_bytes());
        for k in [b"a", b"b"] {
            b.extend_from_slice(&1i32.to_be_bytes());
            b.extend_from_slice(k);
            b.push(0);
        }
        b.push(0);
        let m = strict_msg("setKey", &b);
        let mut once = ScanState::default();
        let whole = scan_resume(&m, Transport::Unframed, 1 << 24, &mut once).unwrap();
        assert_eq!(
            whole,
            Scan::Complete {
                header: 0,
                body: m.len()
            }
        );
        for step in [1usize, 7, 1000, 4096] {
            let mut st = ScanState::default();
            let mut end = step;
            let found = loop {
                let cut = end.min(m.len());
                match scan_resume(&m[..cut], Transport::Unframed, 1 << 24, &mut st).unwrap() {
                    Scan::Complete { body, .. } => break body,
                    Scan::Incomplete => assert!(cut < m.len(), "complete bytes not found"),
                }
                end += step;
            };
            assert_eq!(found, m.len(), "step {step}");
            assert_eq!(
                st.taken, once.taken,
                "step {step}: items walked more than once"
            );
        }
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
