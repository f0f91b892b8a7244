//! A reusable read buffer for a byte stream: bytes read but not yet consumed live in
//! `buf[start..end]`. Consumed bytes are reclaimed by moving the unread tail to the front (only
//! when that frees useful room), and the buffer is zero-filled only when it grows, never per
//! read. Used by the Thrift front and the replica transport.

pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    chunk: usize,
}

impl ReadBuf {
    /// A buffer that offers about `chunk` bytes of room per read.
    pub fn new(chunk: usize) -> ReadBuf {
        ReadBuf {
            buf: vec![0; chunk],
            start: 0,
            end: 0,
            chunk: chunk.max(1),
        }
    }

    /// The bytes read and not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks the first `n` pending bytes consumed.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start = (self.start + n).min(self.end);
    }

    /// Room for the next read: at least `min_room` bytes (at least 1), reclaiming consumed
    /// space first and growing the buffer only if that is not enough.
    pub fn spare(&mut self, min_room: usize) -> &mut [u8] {
        let min_room = min_room.max(1);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0
            && (self.start >= self.chunk || self.buf.len() - self.end < min_room)
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < min_room {
            self.buf.resize(self.end + min_room.max(self.chunk), 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that a read put `n` bytes into the slice `spare` returned.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::ReadBuf;

    #[test]
    fn keeps_unread_bytes_across_reclaims_and_growth() {
        let mut b = ReadBuf::new(8);
        let room = b.spare(4);
        room[..6].copy_from_slice(b"abcdef");
        b.filled(6);
        b.consume(4);
        assert_eq!(b.pending(), b"ef");
        // Needs more room than is left: the tail moves to the front.
        let room = b.spare(7);
        assert!(room.len() >= 7);
        room[..3].copy_from_slice(b"ghi");
        b.filled(3);
        assert_eq!(b.pending(), b"efghi");
        // A message larger than the buffer grows it and keeps what is pending.
        let room = b.spare(20);
        assert!(room.len() >= 20);
        b.filled(0);
        assert_eq!(b.pending(), b"efghi");
        b.consume(5);
        assert!(b.pending().is_empty());
    }
}
