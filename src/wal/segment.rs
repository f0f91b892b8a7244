//! Segment files and the group-commit writer (see the module doc of `wal`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};

use super::{Lsn, WalError, RECORD_HEADER_BYTES};

const ZERO_CHUNK_BYTES: usize = 1 << 20;
const SEGMENT_SUFFIX: &str = ".wal";

/// Counters for metrics.
#[derive(Debug, Default, Clone)]
pub struct WalStats {
    pub syncs: u64,
    pub bytes_written: u64,
    pub records: u64,
    pub sync_us_total: u64,
    /// How long the latest group commit took.
    pub last_sync_us: u64,
    pub segments_created: u64,
    pub segments_removed: u64,
}

struct Segment {
    first: Lsn,
    path: PathBuf,
}

pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    dsync: bool,
    /// Retained segments, oldest first; the last one is `active`.
    segments: VecDeque<Segment>,
    active: DmaFile,
    alignment: u64,
    /// Where the next record goes in the active segment.
    offset: u64,
    /// Bytes of the active segment's last, partially filled block (from its aligned start).
    tail: Vec<u8>,
    /// Encoded records appended but not yet written, and where each one starts in `pending`.
    pending: Vec<u8>,
    pending_starts: Vec<usize>,
    next_lsn: Lsn,
    durable: Lsn,
    failed: bool,
    /// Test hook: the next block write writes only half its bytes, as a short write would.
    short_write_next: bool,
    /// The next segment, being prepared in the background (taken at rotation).
    spare: Option<Spare>,
    pub stats: WalStats,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> WalError {
    WalError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn segment_name(first: Lsn) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first.0)
}

fn encode_record(out: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    let mut crc = crc32c::crc32c(&lsn.0.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The high bit of a record's length word marks the last record of a group commit.
const GROUP_END: u32 = 1 << 31;

/// Marks the record starting at `start` of `buf` as the last of its group commit.
fn mark_group_end(buf: &mut [u8], start: usize) {
    if let Some(w) = buf.get_mut(start..start + 4) {
        let len = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) | GROUP_END;
        w.copy_from_slice(&len.to_le_bytes());
    }
}

/// A valid record at `pos` of `data` with an LSN in `lsns`: (lsn, end offset, group end).
fn record_at(data: &[u8], pos: usize, lsns: std::ops::Range<u64>) -> Option<(u64, usize, bool)> {
    let h = data.get(pos..pos + RECORD_HEADER_BYTES)?;
    let word = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let len = (word & !GROUP_END) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let mut l = [0u8; 8];
    l.copy_from_slice(&h[8..16]);
    let lsn = u64::from_le_bytes(l);
    if !lsns.contains(&lsn) {
        return None;
    }
    let start = pos + RECORD_HEADER_BYTES;
    let payload = data.get(start..start.checked_add(len)?)?;
    let c = crc32c::crc32c_append(crc32c::crc32c(&lsn.to_le_bytes()), payload);
    (c == crc).then_some((lsn, start + len, word & GROUP_END != 0))
}

/// After a damaged record at `end` of the active segment: is the damage only a torn tail?
/// A group commit is written only after the previous one completed, so a torn write can only
/// hit the last group. If a complete group (one that ends with a group-end record) lies past
/// the damage and more records follow it, the damaged group was acknowledged: that is
/// corruption, not a torn tail. Returns the LSN of the first record past the damage that
/// proves it, if any.
fn acknowledged_records_after(data: &[u8], end: usize, next: Lsn) -> Option<u64> {
    let lsns = next.0..next.0.saturating_add(1 << 32);
    let mut group_end_seen = false;
    let mut pos = end + 1;
    while pos + RECORD_HEADER_BYTES <= data.len() {
        // A record's LSN (bytes 8..16 of its header) is never zero: skip zeroed stretches.
        let Some(nz) = data[pos + 8..].iter().position(|&b| b != 0) else {
            break;
        };
        pos = (pos + 8 + nz).saturating_sub(15).max(pos);
        match record_at(data, pos, lsns.clone()) {
            Some((lsn, rec_end, group_end)) => {
                if group_end_seen {
                    return Some(lsn);
                }
                group_end_seen = group_end;
                pos = rec_end;
            }
            None => pos += 1,
        }
    }
    None
}

/// What recovery reads from the bytes of a segment whose first record has LSN `first`: the
/// records in sequence, the offset where they end, and, past damage at that offset, the LSN of
/// a record that proves the damaged group was acknowledged (corruption, not a torn tail).
pub fn recover_segment(data: &[u8], first: Lsn) -> (Vec<(Lsn, Bytes)>, usize, Option<u64>) {
    let mut records = Vec::new();
    let end = parse_records(data, first, &mut records);
    let next = Lsn(first.0 + records.len() as u64);
    (records, end, acknowledged_records_after(data, end, next))
}

/// Parses records from `data` starting at `lsn`; returns them and the end offset of the last
/// valid one. Stops at zero length, a bad CRC, an LSN out of sequence, or the end of `data`.
fn parse_records(data: &[u8], mut lsn: Lsn, out: &mut Vec<(Lsn, Bytes)>) -> usize {
    let mut pos = 0usize;
    while data.len() - pos >= RECORD_HEADER_BYTES {
        let h = &data[pos..pos + RECORD_HEADER_BYTES];
        let len = (u32::from_le_bytes([h[0], h[1], h[2], h[3]]) & !GROUP_END) as usize;
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let mut l = [0u8; 8];
        l.copy_from_slice(&h[8..16]);
        let rec_lsn = u64::from_le_bytes(l);
        if len == 0 && crc == 0 && rec_lsn == 0 {
            break;
        }
        let start = pos + RECORD_HEADER_BYTES;
        if rec_lsn != lsn.0 || data.len() - start < len {
            break;
        }
        let payload = &data[start..start + len];
        let mut c = crc32c::crc32c(&rec_lsn.to_le_bytes());
        c = crc32c::crc32c_append(c, payload);
        if c != crc {
            break;
        }
        out.push((lsn, Bytes::copy_from_slice(payload)));
        lsn = Lsn(lsn.0 + 1);
        pos = start + len;
    }
    pos
}

async fn open_rw(path: &Path, create: bool, dsync: bool) -> Result<DmaFile, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .custom_flags(if dsync { libc::O_DSYNC } else { 0 })
        .dma_open(path)
        .await
        .map_err(|e| io_err(path, e))
}

/// Creates a segment: preallocated and zero-filled, so later writes overwrite in place
/// (no metadata change per fdatasync) and an unwritten area always reads as zeros.
async fn create_segment(
    dir: &Path,
    first: Lsn,
    size: u64,
    dsync: bool,
) -> Result<(DmaFile, PathBuf), WalError> {
    let tmp = dir.join(format!("{}.tmp", segment_name(first)));
    let f = prepare_file(tmp, size).await?;
    install_segment(f, dir, first, dsync).await
}

/// Name of the segment file prepared ahead of the next rotation.
const SPARE_NAME: &str = "next-segment.tmp";

/// Creates a preallocated, zero-filled, synced file at `tmp` (not yet a segment: recovery
/// deletes `.tmp` files).
async fn prepare_file(tmp: PathBuf, size: u64) -> Result<DmaFile, WalError> {
    {
        // Real data in the first block before glommio sees the file: glommio probes the
        // device's io-poll support with a read of it, and a read of a hole never reaches the
        // device, so the probe would wrongly succeed and every later DMA read would fail.
        use std::io::Write;
        let mut std_file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        std_file
            .write_all(&[0u8; 4096])
            .map_err(|e| io_err(&tmp, e))?;
        std_file.set_len(size).map_err(|e| io_err(&tmp, e))?;
    }
    let f = open_rw(&tmp, false, false).await?;
    f.pre_allocate(size, false)
        .await
        .map_err(|e| io_err(&tmp, e))?;
    let mut pos = 0u64;
    while pos < size {
        let n = ZERO_CHUNK_BYTES.min((size - pos) as usize);
        let mut buf = f.alloc_dma_buffer(n);
        buf.as_bytes_mut().fill(0);
        f.write_at(buf, pos).await.map_err(|e| io_err(&tmp, e))?;
        pos += n as u64;
    }
    f.fdatasync().await.map_err(|e| io_err(&tmp, e))?;
    Ok(f)
}

/// Turns a prepared file into the segment starting at `first` (a rename made durable).
async fn install_segment(
    f: DmaFile,
    dir: &Path,
    first: Lsn,
    dsync: bool,
) -> Result<(DmaFile, PathBuf), WalError> {
    let path = dir.join(segment_name(first));
    f.rename(&path).await.map_err(|e| io_err(&path, e))?;
    sync_dir(dir)?;
    if dsync {
        // Zero-filling is done; from now on every write is durable when it completes.
        f.close().await.map_err(|e| io_err(&path, e))?;
        let f = open_rw(&path, false, true).await?;
        return Ok((f, path));
    }
    Ok((f, path))
}

type Spare = glommio::task::JoinHandle<Result<DmaFile, WalError>>;

/// Starts preparing the next segment on this executor, beside the appends: the zero-fill is
/// io_uring writes the WAL task does not wait for.
fn start_spare(dir: &Path, size: u64) -> Spare {
    let tmp = dir.join(SPARE_NAME);
    glommio::spawn_local(prepare_file(tmp, size)).detach()
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let d = std::fs::File::open(dir).map_err(|e| io_err(dir, e))?;
    d.sync_all().map_err(|e| io_err(dir, e))
}

impl Wal {
    /// Opens (or creates) the log in `dir` and returns every record it holds, in order.
    /// A torn tail is cut and zeroed; damage before the tail is an error. With `dsync`,
    /// segments are written with O_DSYNC: a write is durable when it completes (one io_uring
    /// operation per group commit instead of a write and an fdatasync).
    pub async fn open(
        dir: &Path,
        segment_bytes: u64,
        dsync: bool,
    ) -> Result<(Wal, Vec<(Lsn, Bytes)>), WalError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut found: Vec<Segment> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                // A segment whose creation did not finish holds no records.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if let Some(num) = name.strip_suffix(SEGMENT_SUFFIX) {
                if let Ok(n) = num.parse::<u64>() {
                    found.push(Segment {
                        first: Lsn(n),
                        path: entry.path(),
                    });
                }
            }
        }
        found.sort_by_key(|s| s.first);
        let mut records = Vec::new();
        if found.is_empty() {
            // Creating the first segment also gives this executor a non-empty DMA file first.
            let (f, path) = create_segment(dir, Lsn(1), segment_bytes, dsync).await?;
            let alignment = f.alignment();
            let mut segments = VecDeque::new();
            segments.push_back(Segment {
                first: Lsn(1),
                path,
            });
            return Ok((
                Wal::new(
                    dir,
                    segment_bytes,
                    dsync,
                    segments,
                    f,
                    alignment,
                    0,
                    Vec::new(),
                    Lsn(1),
                ),
                records,
            ));
        }
        let mut next = found[0].first;
        let count = found.len();
        let mut active: Option<(DmaFile, u64)> = None;
        let mut keep = VecDeque::new();
        for (i, seg) in found.into_iter().enumerate() {
            if seg.first != next {
                return Err(WalError::Corrupt(format!(
                    "segment {} starts at lsn {} but the log continues at {}",
                    seg.path.display(),
                    seg.first.0,
                    next.0
                )));
            }
            let f = open_rw(&seg.path, false, dsync && i + 1 == count).await?;
            let size = f.file_size().await.map_err(|e| io_err(&seg.path, e))?;
            let data = f
                .read_at_aligned(0, size as usize)
                .await
                .map_err(|e| io_err(&seg.path, e))?;
            let (found, end, acknowledged_past_damage) = recover_segment(&data, next);
            next = Lsn(next.0 + found.len() as u64);
            records.extend(found);
            let is_last = i + 1 == count;
            if is_last {
                if let Some(lsn) = acknowledged_past_damage {
                    return Err(WalError::Corrupt(format!(
                        "segment {} is damaged at offset {end} (lsn {}), and complete group \
                         commits follow it (lsn {lsn}): acknowledged records would be lost. \
                         The replica refuses to start; restart it with --rebuild to move its \
                         state aside and rebuild it from its peers",
                        seg.path.display(),
                        next.0
                    )));
                }
                active = Some((f, end as u64));
            } else {
                // A full segment's unused end is zeros; anything else means damage mid-log.
                if data[end..]
                    .iter()
                    .take(RECORD_HEADER_BYTES)
                    .any(|&b| b != 0)
                    && data.len() - end >= RECORD_HEADER_BYTES
                {
                    return Err(WalError::Corrupt(format!(
                        "segment {} is damaged at offset {end}, before the end of the log; \
                         restart the replica with --rebuild to rebuild it from its peers",
                        seg.path.display()
                    )));
                }
                f.close().await.map_err(|e| io_err(&seg.path, e))?;
            }
            keep.push_back(seg);
        }
        let Some((f, end)) = active else {
            return Err(WalError::Corrupt("no active segment".into()));
        };
        let alignment = f.alignment();
        let path = keep.back().map(|s| s.path.clone()).unwrap_or_default();
        // Zero everything after the last valid record: a torn write may have left fragments.
        let size = f.file_size().await.map_err(|e| io_err(&path, e))?;
        let block = end - end % alignment;
        let tail_data = f
            .read_at_aligned(block, alignment as usize)
            .await
            .map_err(|e| io_err(&path, e))?;
        let mut tail = tail_data[..(end - block) as usize].to_vec();
        let mut pos = block;
        let mut first = true;
        while pos < size {
            let n = ZERO_CHUNK_BYTES.min((size - pos) as usize);
            let mut buf = f.alloc_dma_buffer(n);
            let b = buf.as_bytes_mut();
            b.fill(0);
            if first {
                b[..tail.len()].copy_from_slice(&tail);
                first = false;
            }
            f.write_at(buf, pos).await.map_err(|e| io_err(&path, e))?;
            pos += n as u64;
        }
        f.fdatasync().await.map_err(|e| io_err(&path, e))?;
        tail.truncate((end - block) as usize);
        Ok((
            Wal::new(
                dir,
                segment_bytes,
                dsync,
                keep,
                f,
                alignment,
                end,
                tail,
                next,
            ),
            records,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        dir: &Path,
        segment_bytes: u64,
        dsync: bool,
        segments: VecDeque<Segment>,
        active: DmaFile,
        alignment: u64,
        offset: u64,
        tail: Vec<u8>,
        next_lsn: Lsn,
    ) -> Wal {
        Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            dsync,
            segments,
            active,
            alignment,
            offset,
            tail,
            pending: Vec::new(),
            pending_starts: Vec::new(),
            next_lsn,
            durable: Lsn(next_lsn.0 - 1),
            failed: false,
            short_write_next: false,
            spare: Some(start_spare(dir, segment_bytes)),
            stats: WalStats::default(),
        }
    }

    /// Buffers one record; it is durable once a later `sync` returns an LSN at or past it.
    pub fn append(&mut self, payload: &[u8]) -> Result<Lsn, WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        let size = payload.len() + RECORD_HEADER_BYTES;
        if size as u64 > self.segment_bytes - self.alignment {
            return Err(WalError::TooLarge {
                size,
                segment: self.segment_bytes,
            });
        }
        let lsn = self.next_lsn;
        self.pending_starts.push(self.pending.len());
        encode_record(&mut self.pending, lsn, payload);
        self.next_lsn = Lsn(lsn.0 + 1);
        Ok(lsn)
    }

    /// Test hook: the next write of the log writes only half of its bytes (a short write).
    #[doc(hidden)]
    pub fn inject_short_write(&mut self) {
        self.short_write_next = true;
    }

    /// The last LSN known durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes every buffered record and makes it durable (one fdatasync per segment touched).
    /// Returns the durable LSN. Any failure poisons the log.
    pub async fn sync(&mut self) -> Result<Lsn, WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        if self.pending.is_empty() {
            return Ok(self.durable);
        }
        let started = std::time::Instant::now();
        let r = self.write_pending().await;
        if r.is_err() {
            self.failed = true;
        }
        r?;
        self.stats.syncs += 1;
        self.stats.last_sync_us = started.elapsed().as_micros() as u64;
        self.stats.sync_us_total += self.stats.last_sync_us;
        self.durable = Lsn(self.next_lsn.0 - 1);
        Ok(self.durable)
    }

    async fn write_pending(&mut self) -> Result<(), WalError> {
        let mut pending = std::mem::take(&mut self.pending);
        let starts = std::mem::take(&mut self.pending_starts);
        if let Some(&last) = starts.last() {
            mark_group_end(&mut pending, last);
        }
        let first_lsn = Lsn(self.next_lsn.0 - starts.len() as u64);
        let mut i = 0;
        while i < starts.len() {
            // Take as many whole records as fit the active segment.
            let room = self.segment_bytes - self.offset;
            let mut j = i;
            while j < starts.len() {
                let end = starts.get(j + 1).copied().unwrap_or(pending.len());
                if (end - starts[i]) as u64 > room {
                    break;
                }
                j += 1;
            }
            if j == i {
                self.rotate(Lsn(first_lsn.0 + i as u64)).await?;
                continue;
            }
            let end = starts.get(j).copied().unwrap_or(pending.len());
            self.write_block_run(&pending[starts[i]..end]).await?;
            self.stats.records += (j - i) as u64;
            i = j;
        }
        if self.dsync {
            return Ok(());
        }
        let path = self.active_path();
        self.active.fdatasync().await.map_err(|e| io_err(&path, e))
    }

    /// Writes `bytes` at the current offset, rewriting the partial block before it.
    async fn write_block_run(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        let a = self.alignment as usize;
        let block_start = self.offset - self.tail.len() as u64;
        let total = self.tail.len() + bytes.len();
        let padded = total.div_ceil(a) * a;
        let mut buf = self.active.alloc_dma_buffer(padded);
        let b = buf.as_bytes_mut();
        b[..self.tail.len()].copy_from_slice(&self.tail);
        b[self.tail.len()..total].copy_from_slice(bytes);
        b[total..].fill(0);
        let keep_from = total - total % a;
        let new_tail = b[keep_from..total].to_vec();
        let path = self.active_path();
        let buf = if std::mem::take(&mut self.short_write_next) {
            let half = (padded / 2).div_ceil(a).max(1) * a;
            let mut short = self.active.alloc_dma_buffer(half.min(padded));
            let n = short.len();
            short.as_bytes_mut().copy_from_slice(&buf.as_bytes()[..n]);
            short
        } else {
            buf
        };
        let written = self
            .active
            .write_at(buf, block_start)
            .await
            .map_err(|e| io_err(&path, e))?;
        if written < padded {
            // Never assume the rest landed: the records are not durable, and the log stops.
            return Err(io_err(
                &path,
                format!("short write: {written} of {padded} bytes at offset {block_start}"),
            ));
        }
        self.stats.bytes_written += padded as u64;
        self.offset += bytes.len() as u64;
        self.tail = new_tail;
        Ok(())
    }

    /// Switches to a new segment starting at `first`: the spare prepared in the background
    /// when there is one (only a rename), else one made now; then the next spare starts.
    async fn rotate(&mut self, first: Lsn) -> Result<(), WalError> {
        let path = self.active_path();
        if !self.dsync {
            self.active
                .fdatasync()
                .await
                .map_err(|e| io_err(&path, e))?;
        }
        let prepared = match self.spare.take() {
            Some(task) => task.await,
            None => None,
        };
        let (f, p) = match prepared {
            Some(Ok(f)) => install_segment(f, &self.dir, first, self.dsync).await?,
            // No spare, or preparing it failed: make the segment inline (its errors count).
            _ => create_segment(&self.dir, first, self.segment_bytes, self.dsync).await?,
        };
        let old = std::mem::replace(&mut self.active, f);
        old.close().await.map_err(|e| io_err(&path, e))?;
        self.segments.push_back(Segment { first, path: p });
        self.offset = 0;
        self.tail.clear();
        self.stats.segments_created += 1;
        self.spare = Some(start_spare(&self.dir, self.segment_bytes));
        Ok(())
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .back()
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    /// Deletes whole segments all of whose records are below `lsn` (never the active one).
    pub fn remove_before(&mut self, lsn: Lsn) -> Result<usize, WalError> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].first <= lsn {
            if let Some(s) = self.segments.pop_front() {
                std::fs::remove_file(&s.path).map_err(|e| io_err(&s.path, e))?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
            self.stats.segments_removed += removed as u64;
        }
        Ok(removed)
    }

    /// The first LSN still retained.
    pub fn first_lsn(&self) -> Lsn {
        self.segments
            .front()
            .map(|s| s.first)
            .unwrap_or(self.next_lsn)
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub async fn close(mut self) -> Result<(), WalError> {
        // The spare's task must not outlive the WAL: a later open of this directory deletes
        // its file, and glommio panics when a file it is opening disappears before it stats it.
        if let Some(spare) = self.spare.take() {
            spare.cancel();
            if let Some(Ok(f)) = spare.await {
                let _ = f.close().await;
            }
        }
        let path = self.active_path();
        self.active.close().await.map_err(|e| io_err(&path, e))
    }
}

#[cfg(test)]
mod tests;
