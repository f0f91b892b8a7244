//! Range reads: one linearizable page (`Client::get_range`), and a `Scan` that pages through a
//! range at one read version, following `has_more`, as an async iterator or a `Stream`.

use std::collections::VecDeque;

use super::{Client, Error, KeyValue, Kind, Result};
use crate::front::generated::{GetRangeRequest, SnapshotGetRangeRequest};

/// One page of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePage {
    /// The pairs, in key order.
    pub pairs: Vec<KeyValue>,
    /// True when the limit (or the server's reply size bound) cut the page: ask again from
    /// after the last key.
    pub has_more: bool,
}

/// The first key after every key that starts with `prefix` (for `[prefix, prefix_end(prefix))`);
/// a prefix of only 0xFF bytes (or an empty one) has no end inside the key space, so it gets
/// the server's "end of keys" (one 0xFF byte) and keys made only of 0xFF bytes are left out.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF]
}

pub(crate) fn snapshot_page_request(
    cf: Option<String>,
    begin: &[u8],
    begin_inclusive: bool,
    end: &[u8],
    version: i64,
    limit: i32,
) -> SnapshotGetRangeRequest {
    SnapshotGetRangeRequest {
        begin_key: Some(begin.to_vec()),
        end_key: Some(end.to_vec()),
        begin_offset: None,
        begin_or_equal: Some(begin_inclusive),
        end_offset: None,
        end_or_equal: Some(false),
        read_version: version,
        limit: Some(limit),
        column_family: cf,
    }
}

fn pairs(kvs: Vec<crate::front::generated::KeyValue>) -> Vec<KeyValue> {
    kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

impl Client {
    /// Keys in `[begin, end)`, at most `limit` (0: the server's own bound), in one linearizable
    /// request.
    pub async fn get_range(
        &self,
        begin: impl AsRef<[u8]>,
        end: impl AsRef<[u8]>,
        limit: i32,
    ) -> Result<RangePage> {
        let req = GetRangeRequest {
            begin_key: Some(begin.as_ref().to_vec()),
            end_key: Some(end.as_ref().to_vec()),
            begin_offset: None,
            begin_or_equal: Some(true),
            end_offset: None,
            end_or_equal: Some(false),
            limit: Some(limit),
            column_family: self.cf(),
        };
        let r = self.call(&req, Kind::Read).await?;
        Ok(RangePage {
            pairs: pairs(r.key_values),
            has_more: r.has_more,
        })
    }

    /// One page of `[begin, end)` as of `version` (MVCC).
    pub async fn snapshot_get_range(
        &self,
        begin: impl AsRef<[u8]>,
        end: impl AsRef<[u8]>,
        version: i64,
        limit: i32,
    ) -> Result<RangePage> {
        let req = snapshot_page_request(
            self.cf(),
            begin.as_ref(),
            true,
            end.as_ref(),
            version,
            limit,
        );
        let r = self.call(&req, Kind::Read).await?;
        Ok(RangePage {
            pairs: pairs(r.key_values),
            has_more: r.has_more,
        })
    }

    /// Every key in `[begin, end)`, paged (`Config::scan_page` keys per request) at one read
    /// version, so the whole scan sees one consistent state.
    pub fn scan(&self, begin: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> Scan {
        Scan {
            client: self.clone(),
            next_begin: begin.as_ref().to_vec(),
            begin_inclusive: true,
            end: end.as_ref().to_vec(),
            version: None,
            remaining: None,
            buffered: VecDeque::new(),
            done: false,
        }
    }

    /// Every key that starts with `prefix` (see [`Client::scan`]).
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Scan {
        self.scan(prefix.as_ref(), prefix_end(prefix.as_ref()))
    }
}

/// A paged range read at one version. `next().await` yields pairs in key order.
pub struct Scan {
    client: Client,
    next_begin: Vec<u8>,
    begin_inclusive: bool,
    end: Vec<u8>,
    version: Option<i64>,
    remaining: Option<usize>,
    buffered: VecDeque<KeyValue>,
    done: bool,
}

impl Scan {
    /// Reads as of `version` instead of a fresh read version.
    pub fn at_version(mut self, version: i64) -> Scan {
        self.version = Some(version);
        self
    }

    /// Stops after `n` pairs.
    pub fn limit(mut self, n: usize) -> Scan {
        self.remaining = Some(n);
        self
    }

    /// The read version the scan uses (known after the first `next`, or when set).
    pub fn version(&self) -> Option<i64> {
        self.version
    }

    /// The next pair, `None` at the end of the range (or of the limit).
    pub async fn next(&mut self) -> Result<Option<KeyValue>> {
        if self.remaining == Some(0) {
            return Ok(None);
        }
        while self.buffered.is_empty() && !self.done {
            self.fetch().await?;
        }
        let kv = self.buffered.pop_front();
        if kv.is_some() {
            if let Some(r) = self.remaining.as_mut() {
                *r -= 1;
            }
        }
        Ok(kv)
    }

    async fn fetch(&mut self) -> Result<()> {
        let version = match self.version {
            Some(v) => v,
            None => {
                let v = self.client.read_version().await?;
                self.version = Some(v);
                v
            }
        };
        let page = self.client.config().scan_page.max(1);
        let limit = match self.remaining {
            Some(r) => page.min(i32::try_from(r).unwrap_or(i32::MAX)),
            None => page,
        };
        let req = snapshot_page_request(
            self.client.cf(),
            &self.next_begin,
            self.begin_inclusive,
            &self.end,
            version,
            limit,
        );
        let r = self.client.call(&req, Kind::Read).await?;
        let got = pairs(r.key_values);
        match got.last() {
            Some((k, _)) => {
                self.next_begin = k.clone();
                self.begin_inclusive = false;
            }
            None if r.has_more => {
                return Err(Error::Protocol(
                    "an empty range page that claims more follows".into(),
                ))
            }
            None => {}
        }
        self.done = !r.has_more;
        self.buffered.extend(got);
        Ok(())
    }

    /// All remaining pairs.
    pub async fn collect(mut self) -> Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        while let Some(kv) = self.next().await? {
            out.push(kv);
        }
        Ok(out)
    }

    /// The scan as a `Stream` of pairs (ends after the first error).
    pub fn into_stream(self) -> impl futures_lite::Stream<Item = Result<KeyValue>> {
        futures_lite::stream::unfold(Some(self), |state| async move {
            let mut scan = state?;
            match scan.next().await {
                Ok(Some(kv)) => Some((Ok(kv), Some(scan))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xFF]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xFF, 0xFF]), vec![0xFF]);
        assert_eq!(prefix_end(b""), vec![0xFF]);
    }
}
