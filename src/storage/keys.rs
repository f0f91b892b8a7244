//! How user data is laid out in RocksDB.
//!
//! Every replica's RocksDB holds three key spaces, told apart by the first byte:
//! - `0x00 name` — metadata (applied sequence, last version), written in the same `WriteBatch` as
//!   the data it describes.
//! - `0x01 esc(cf) esc(key) be(!version)` — one MVCC version of a user key. Versions are stored
//!   inverted, so the newest version of a key comes first in iteration order. The value is a tag
//!   byte (`1` put, `0` tombstone) followed by the user value.
//! - `0x02 be(version) esc(cf) esc(key)` — garbage-collection queue: the write at `version`
//!   superseded the version named in the value (a delete flag byte, then 8 bytes of version if
//!   there was one); that version is garbage once `version` leaves the MVCC window.
//!
//! `esc` escapes `0x00` as `0x00 0xFF` and ends with `0x00 0x01`, so encoded keys sort exactly as
//! the user keys do and no encoded key is a prefix of another.

use crate::types::Version;

pub const META_PREFIX: u8 = 0x00;
pub const DATA_PREFIX: u8 = 0x01;
pub const GC_PREFIX: u8 = 0x02;

pub const META_APPLIED_SEQUENCE: &[u8] = b"\x00applied_sequence";
pub const META_LAST_VERSION: &[u8] = b"\x00last_version";
/// Present while a snapshot from a peer is being written: the store is incomplete.
pub const META_INSTALLING: &[u8] = b"\x00installing";
/// First key past every key space (the end of a whole-store range delete).
pub const END_OF_KEYS: &[u8] = &[0x03];

pub const TAG_TOMBSTONE: u8 = 0;
pub const TAG_PUT: u8 = 1;

pub fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Decodes one escaped component starting at `input[0]`; returns it and the bytes consumed.
pub fn unescape(input: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == 0 {
            match input.get(i + 1)? {
                0xFF => out.push(0),
                0x01 => return Some((out, i + 2)),
                _ => return None,
            }
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    None
}

/// `0x01 esc(cf) esc(key)`: the prefix shared by every version of one user key.
pub fn data_key_prefix(cf: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + cf.len() + 14);
    out.push(DATA_PREFIX);
    escape_into(&mut out, cf.as_bytes());
    escape_into(&mut out, key);
    out
}

/// `0x01 esc(cf)`: the prefix of every key in a column family.
pub fn cf_prefix(cf: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(cf.len() + 3);
    out.push(DATA_PREFIX);
    escape_into(&mut out, cf.as_bytes());
    out
}

/// A data key ends with this many bytes of (inverted, big-endian) version after its prefix.
pub const VERSION_BYTES: usize = 8;

pub fn data_key(cf: &str, key: &[u8], version: Version) -> Vec<u8> {
    let mut out = data_key_prefix(cf, key);
    out.extend_from_slice(&(!version.0).to_be_bytes());
    out
}

/// Splits a data key (without its `0x01 esc(cf)` prefix, which the caller has matched) into the
/// user key and the version.
pub fn split_data_key(rest: &[u8]) -> Option<(Vec<u8>, Version)> {
    let (key, used) = unescape(rest)?;
    let v = rest.get(used..)?;
    if v.len() != VERSION_BYTES {
        return None;
    }
    let mut a = [0u8; VERSION_BYTES];
    a.copy_from_slice(v);
    Some((key, Version(!u64::from_be_bytes(a))))
}

pub fn gc_key(version: Version, cf: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + cf.len() + 13);
    out.push(GC_PREFIX);
    out.extend_from_slice(&version.0.to_be_bytes());
    escape_into(&mut out, cf.as_bytes());
    escape_into(&mut out, key);
    out
}

/// Parses a GC queue key into (version, cf, key).
pub fn split_gc_key(k: &[u8]) -> Option<(Version, String, Vec<u8>)> {
    if k.first() != Some(&GC_PREFIX) || k.len() < 9 {
        return None;
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&k[1..9]);
    let (cf, used) = unescape(&k[9..])?;
    let (key, used2) = unescape(&k[9 + used..])?;
    if 9 + used + used2 != k.len() {
        return None;
    }
    Some((
        Version(u64::from_be_bytes(a)),
        String::from_utf8(cf).ok()?,
        key,
    ))
}

/// The value of a GC queue entry: whether the write was a delete, and the version it
/// superseded (the one to collect), if any.
pub fn gc_value(is_delete: bool, superseded: Option<Version>) -> Vec<u8> {
    let mut out = vec![is_delete as u8];
    if let Some(v) = superseded {
        out.extend_from_slice(&v.0.to_be_bytes());
    }
    out
}

pub fn split_gc_value(v: &[u8]) -> Option<(bool, Option<Version>)> {
    match v {
        [d] => Some((*d != 0, None)),
        [d, rest @ ..] if rest.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(rest);
            Some((*d != 0, Some(Version(u64::from_be_bytes(a)))))
        }
        _ => None,
    }
}

/// Smallest byte string greater than every string with this prefix (None if all 0xFF).
pub fn prefix_successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_order_matches_user_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"a",
            b"a\x00",
            b"ab",
            b"a\xff",
            b"\xff",
        ];
        for w in keys.windows(2) {
            for (va, vb) in [(1u64, 1u64), (1, 100), (100, 1)] {
                let a = data_key("", w[0], Version(va));
                let b = data_key("", w[1], Version(vb));
                assert!(a < b, "{:?}@{va} !< {:?}@{vb}", w[0], w[1]);
            }
        }
        // Newer versions of one key come first.
        assert!(data_key("", b"k", Version(9)) < data_key("", b"k", Version(3)));
    }

    #[test]
    fn splits_round_trip() {
        let k = data_key("cf\x00x", b"a\x00b", Version(77));
        let p = cf_prefix("cf\x00x");
        assert!(k.starts_with(&p));
        let (key, v) = split_data_key(&k[p.len()..]).unwrap();
        assert_eq!(key, b"a\x00b");
        assert_eq!(v, Version(77));
        let g = gc_key(Version(5), "c", b"\x00");
        assert_eq!(
            split_gc_key(&g).unwrap(),
            (Version(5), "c".to_string(), vec![0])
        );
        assert_eq!(prefix_successor(b"a\xff").unwrap(), b"b");
        assert_eq!(prefix_successor(b"\xff\xff"), None);
    }
}
