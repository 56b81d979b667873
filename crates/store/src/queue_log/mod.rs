//! One queue's message log: a directory of numbered segments (`<n>.seg`), each with an ack
//! file (`<n>.ack`, the offsets of its acknowledged records) and, once sealed, an index
//! (`<n>.idx`, see [`crate::segment_index`]). Appends go to the newest segment, which rolls
//! over at a size limit; a segment and its files are deleted once every record in it is
//! acknowledged. Nothing per message is kept in memory but the offsets acknowledged in
//! segments not yet deleted, so memory does not grow with the number of messages waiting.
//!
//! Opening a log reads the index of each sealed segment and scans only the newest one, so
//! a restart costs a few reads per segment however many messages wait. Transient records
//! found at opening count as acknowledged: they do not outlive a restart.
//!
//! What the log counts always describes its files: an append or an ack write that fails
//! (a full disk) leaves the files as they were and the counts with them.
//!
//! Owned by its queue, which calls it under the queue's lock.

mod ack_file;
mod open;
mod read_ahead;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::data_dir::sync_dir;
use crate::error::{Result, StoreError};
use crate::segment::{
    self, Damage, Format, Lifetime, RecordHeader, RecordRef, SegmentWriter, RECORD_BYTES_MAX,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::segment_index::SegmentIndex;
use ack_file::AckFile;
use read_ahead::{ReadAhead, READ_AHEAD_BYTES};

/// Where a record is: its segment and its place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u32,
    pub record: RecordRef,
}

/// A reading position for [`QueueLog::next`]: the next byte offset to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    segment: u32,
    offset: u32,
}

impl Position {
    /// Whether this record lies before `cursor` in the log.
    pub fn is_before(&self, cursor: &Cursor) -> bool {
        (self.segment, self.record.offset) < (cursor.segment, cursor.offset)
    }
}

#[derive(Debug)]
struct Segment {
    /// Valid bytes (records end here).
    bytes: u64,
    format: Format,
    /// Records that verify (damaged ones are not counted).
    records: u32,
    acked: HashSet<u32>,
    acks: AckFile,
    /// Damaged byte ranges, known from a scan: reading steps over them.
    damaged: Vec<Damage>,
}

impl Segment {
    fn empty(dir: &Path, n: u32, bytes: u64) -> Segment {
        Segment {
            bytes,
            format: Format::V3,
            records: 0,
            acked: HashSet::new(),
            acks: AckFile::new(ack_path(dir, n), Format::V3),
            damaged: Vec::new(),
        }
    }

    fn unacked(&self) -> u32 {
        self.records.saturating_sub(self.acked.len() as u32)
    }

    /// The known damage `offset` lies in.
    fn damage_at(&self, offset: u32) -> Option<Damage> {
        self.damaged
            .iter()
            .find(|d| d.offset <= offset && offset < d.end())
            .copied()
    }
}

/// Acks of one segment are appended to its ack file once this many bytes of them gather
/// (or at [`QueueLog::write_acks`]).
const UNWRITTEN_ACK_BYTES_MAX: usize = 4096;

/// What opening a log found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    /// Records not acknowledged.
    pub messages: u64,
    /// Bytes cut from the end of the newest segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Segments that could not be read at all: set aside, or skipped (an I/O error).
    pub unreadable_segments: usize,
}

pub struct QueueLog {
    dir: PathBuf,
    segment_bytes_max: u64,
    segments: BTreeMap<u32, Segment>,
    writer_number: u32,
    writer: SegmentWriter,
    /// Offsets of the transient records in the segment being written, for its index.
    writer_transient: Vec<u32>,
    /// Persistent appends since the last sync.
    unsynced: bool,
    /// The read handle of the last segment read, reused while reads stay in it.
    reading: Option<(u32, File)>,
    /// Bytes read ahead from that segment, for reading records in order.
    read_ahead: ReadAhead,
    /// Segments holding acks not yet written to their ack files.
    unwritten_acks_in: Vec<u32>,
    /// A record that failed a read which a rescan then found intact, read once more.
    second_look: Option<(u32, u32)>,
}

impl Drop for QueueLog {
    /// A log closed with acks still gathered writes them: a clean stop must not bring
    /// acknowledged messages back.
    fn drop(&mut self) {
        if let Err(error) = self.write_acks() {
            tracing::warn!(%error, "cannot write acks when closing a message log");
        }
    }
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

fn ack_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.ack"))
}

fn index_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.idx"))
}

impl QueueLog {
    /// Appends a record. It is durable once [`QueueLog::sync`] returns; a transient one is
    /// dropped at the next opening of the log. On failure nothing was appended.
    pub fn append(&mut self, payload: &[u8], lifetime: Lifetime) -> Result<Position> {
        self.append_parts(&[payload], lifetime)
    }

    /// [`QueueLog::append`] of a record whose payload is `parts`, in order (a message's
    /// head and its body, which is not copied to be stored).
    pub fn append_parts(&mut self, parts: &[&[u8]], lifetime: Lifetime) -> Result<Position> {
        let payload_bytes: usize = parts.iter().map(|p| p.len()).sum();
        let record_bytes = payload_bytes as u64 + u64::from(RECORD_HEADER_BYTES);
        let used = self.writer.bytes - u64::from(SEGMENT_HEADER_BYTES);
        if used > 0 && self.writer.bytes + record_bytes > self.segment_bytes_max {
            self.roll()?;
        }
        let record = self.writer.append_parts(parts, lifetime)?;
        if lifetime == Lifetime::Transient {
            self.writer_transient.push(record.offset);
        } else {
            self.unsynced = true;
        }
        let segment = self
            .segments
            .get_mut(&self.writer_number)
            .expect("the segment being written is known");
        segment.records += 1;
        segment.bytes = self.writer.bytes;
        Ok(Position {
            segment: self.writer_number,
            record,
        })
    }

    /// Seals the current segment (written, synced, then indexed) and starts the next. On
    /// failure the current segment stays the one written to.
    fn roll(&mut self) -> Result<()> {
        self.writer.flush()?;
        self.writer.sync()?;
        let index = SegmentIndex {
            valid_bytes: self.writer.bytes,
            records: self.segments[&self.writer_number].records,
            transient: self.writer_transient.clone(),
        };
        if let Err(error) = index.write(&index_path(&self.dir, self.writer_number)) {
            // Only the next start's speed depends on it: that start scans the segment.
            tracing::warn!(%error, "cannot write a segment index");
        }
        let next = self.writer_number + 1;
        let path = segment_path(&self.dir, next);
        let writer = SegmentWriter::create(path.clone())?;
        if let Err(error) = sync_dir(&self.dir) {
            drop(writer);
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        self.writer = writer;
        self.writer_transient.clear();
        self.segments
            .insert(next, Segment::empty(&self.dir, next, self.writer.bytes));
        let previous = self.writer_number;
        self.writer_number = next;
        if let Err(error) = self.delete_if_done(previous) {
            tracing::warn!(%error, "cannot delete an acknowledged segment");
        }
        Ok(())
    }

    /// Makes every persistent append so far durable.
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            self.writer.sync()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// A handle on the segment being written, for an fsync outside the queue's lock, if
    /// anything persistent was appended since the last one. Syncing it makes every
    /// persistent append before this call durable (they are in the file once appended, and
    /// a segment that rolled over was synced when it did).
    pub fn take_sync_handle(&mut self) -> Result<Option<File>> {
        if !self.unsynced {
            return Ok(None);
        }
        let file = self
            .writer
            .file
            .try_clone()
            .map_err(StoreError::io(&self.writer.path))?;
        self.unsynced = false;
        Ok(Some(file))
    }

    /// Marks a record acknowledged. Acks are written but not synced, and gathered first
    /// (up to 4 KiB per segment, or until [`QueueLog::write_acks`]): an ack lost to a crash
    /// makes the message come back (redelivered), never lost. An ack whose write fails is
    /// kept and written with the next.
    ///
    /// The ack of a transient record is kept in memory only: the record is dropped at the
    /// next opening anyway, so nothing needs writing (and a spilled transient message costs
    /// no write when it is acknowledged).
    pub fn ack(&mut self, position: Position, lifetime: Lifetime) -> Result<()> {
        let Some(segment) = self.segments.get_mut(&position.segment) else {
            return Ok(()); // already deleted with its segment
        };
        if !segment.acked.insert(position.record.offset) {
            return Ok(());
        }
        if lifetime == Lifetime::Persistent {
            if segment.acks.unwritten_bytes() == 0 {
                self.unwritten_acks_in.push(position.segment);
            }
            segment.acks.push(position.record.offset);
            if segment.acks.unwritten_bytes() >= UNWRITTEN_ACK_BYTES_MAX {
                segment.acks.write()?;
            }
        }
        self.delete_if_done(position.segment)
    }

    /// Appends every gathered ack to its segment's ack file (not synced). Those that
    /// cannot be written stay gathered for the next call.
    pub fn write_acks(&mut self) -> Result<()> {
        let mut first_error = None;
        for n in std::mem::take(&mut self.unwritten_acks_in) {
            let Some(segment) = self.segments.get_mut(&n) else {
                continue;
            };
            if let Err(error) = segment.acks.write() {
                self.unwritten_acks_in.push(n);
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Acknowledges up to `count` unacknowledged records from `cursor` on (a purge),
    /// reading only record headers and writing each segment's acks at once. Returns how
    /// many were acknowledged.
    pub fn ack_from(&mut self, cursor: &mut Cursor, count: u64) -> Result<u64> {
        let mut acked = 0u64;
        let numbers: Vec<u32> = self
            .segments
            .range(cursor.segment..)
            .map(|(n, _)| *n)
            .collect();
        for n in numbers {
            if acked == count {
                break;
            }
            let start = if n == cursor.segment {
                cursor.offset
            } else {
                SEGMENT_HEADER_BYTES
            };
            let segment = &self.segments[&n];
            let unacked = u64::from(segment.unacked());
            if start == SEGMENT_HEADER_BYTES && n != self.writer_number && unacked <= count - acked
            {
                // A whole sealed segment goes: nothing in it needs reading.
                acked += unacked;
                let damaged = !segment.damaged.is_empty();
                self.forget_segment(n);
                if damaged {
                    set_aside(&self.dir, n, "purged, with damage in it");
                } else {
                    remove_segment_files(&self.dir, n)?;
                }
                *cursor = Cursor {
                    segment: n + 1,
                    offset: SEGMENT_HEADER_BYTES,
                };
                continue;
            }
            let mut offset = start;
            let mut newly = Vec::new();
            while acked + (newly.len() as u64) < count {
                let segment = &self.segments[&n];
                if let Some(damage) = segment.damage_at(offset) {
                    offset = damage.end();
                    continue;
                }
                let header_bytes = segment.format.record_header_bytes();
                if u64::from(offset) + u64::from(header_bytes) > segment.bytes {
                    break;
                }
                match self.record_at(n, offset)? {
                    Some(header) => {
                        if !self.segments[&n].acked.contains(&offset) {
                            newly.push(offset);
                        }
                        offset += header_bytes + header.payload_bytes;
                    }
                    None => {
                        // Damage: what it destroyed is gone from the count as a purge
                        // would have taken it; the walk goes on after it.
                        acked += self.rescan(n)?;
                        if self.segments[&n].damage_at(offset).is_none() {
                            break;
                        }
                    }
                }
            }
            *cursor = Cursor { segment: n, offset };
            // A rescan may have found some of them damaged: they are no longer records.
            let segment = &self.segments[&n];
            newly.retain(|offset| segment.damage_at(*offset).is_none());
            if newly.is_empty() {
                continue;
            }
            let segment = self.segments.get_mut(&n).expect("listed above");
            if segment.acks.unwritten_bytes() == 0 {
                self.unwritten_acks_in.push(n);
            }
            for record in &newly {
                segment.acks.push(*record);
                segment.acked.insert(*record);
            }
            acked += newly.len() as u64;
            segment.acks.write()?;
            self.delete_if_done(n)?;
        }
        Ok(acked)
    }

    /// Deletes a sealed segment whose records are all acknowledged (its unwritten acks
    /// with it). The count is checked against the file first: a segment whose file holds
    /// more than its log counted is kept, and reported.
    fn delete_if_done(&mut self, n: u32) -> Result<()> {
        let Some(segment) = self.segments.get(&n) else {
            return Ok(());
        };
        if segment.unacked() != 0 || n == self.writer_number {
            return Ok(());
        }
        let path = segment_path(&self.dir, n);
        let on_disk = fs::metadata(&path).map_err(StoreError::io(&path))?.len();
        if on_disk != segment.bytes {
            tracing::error!(
                file = %path.display(),
                counted_bytes = segment.bytes,
                on_disk,
                "a segment's file does not match what its log counted; keeping it (its messages come back at the next start)"
            );
            return Ok(());
        }
        let damaged = !segment.damaged.is_empty();
        self.forget_segment(n);
        if damaged {
            // Its damaged bytes are kept for whoever wants to look at them.
            set_aside(&self.dir, n, "every readable record in it is acknowledged");
            return Ok(());
        }
        remove_segment_files(&self.dir, n)
    }

    /// Drops a segment from the log (its files are removed by the caller).
    fn forget_segment(&mut self, n: u32) {
        self.segments.remove(&n);
        if matches!(self.reading, Some((r, _)) if r == n) {
            self.reading = None;
        }
        self.read_ahead.forget(n);
    }

    /// Reads one record's payload.
    pub fn read(&mut self, position: Position) -> Result<Vec<u8>> {
        let n = position.segment;
        let header =
            self.record_at(n, position.record.offset)?
                .ok_or_else(|| StoreError::Corrupt {
                    path: segment_path(&self.dir, n),
                    offset: u64::from(position.record.offset),
                    reason: "damaged record header".into(),
                })?;
        if header.payload_bytes != position.record.payload_bytes {
            return Err(StoreError::Corrupt {
                path: segment_path(&self.dir, n),
                offset: u64::from(position.record.offset),
                reason: "record length changed on disk".into(),
            });
        }
        self.payload_of(n, position.record, header)
    }

    /// The file handle of segment `n`, opened once while reads stay in it.
    fn reader(&mut self, n: u32) -> Result<&File> {
        if !matches!(&self.reading, Some((r, _)) if *r == n) {
            let path = segment_path(&self.dir, n);
            let file = File::open(&path).map_err(StoreError::io(&path))?;
            self.reading = Some((n, file));
        }
        Ok(&self.reading.as_ref().expect("set above").1)
    }

    /// `len` (at most [`READ_AHEAD_BYTES`]) bytes of segment `n` from `offset`: from the
    /// read-ahead buffer, the file, or, for records the segment being written still
    /// holds in memory, from there (so reading never needs a write, on a full disk too).
    fn bytes_at(&mut self, n: u32, offset: u32, len: usize) -> Result<&[u8]> {
        let offset = u64::from(offset);
        let mut limit = self.segments.get(&n).map_or(0, |s| s.bytes);
        if n == self.writer_number {
            let written = self.writer.written();
            if offset >= written {
                return self
                    .writer
                    .pending_at(offset, len)
                    .ok_or_else(|| StoreError::Corrupt {
                        path: self.writer.path.clone(),
                        offset,
                        reason: "no record there".into(),
                    });
            }
            limit = limit.min(written);
        }
        let path = segment_path(&self.dir, n);
        self.reader(n)?;
        let file = &self.reading.as_ref().expect("opened above").1;
        self.read_ahead.read(file, &path, n, offset, len, limit)
    }

    /// The header of the record at `offset` in segment `n` (whose header fits in the
    /// segment), if it checks and its record ends within the segment; None is damage.
    fn record_at(&mut self, n: u32, offset: u32) -> Result<Option<RecordHeader>> {
        let segment = &self.segments[&n];
        let (format, segment_bytes) = (segment.format, segment.bytes);
        let header_bytes = format.record_header_bytes();
        let header = RecordHeader::decode(format, self.bytes_at(n, offset, header_bytes as usize)?);
        Ok(header.filter(|header| {
            header.payload_bytes <= RECORD_BYTES_MAX
                && u64::from(offset) + u64::from(header_bytes) + u64::from(header.payload_bytes)
                    <= segment_bytes
        }))
    }

    /// Scans segment `n` again after reading found damage in it, to learn exactly which
    /// records survive: the damaged ranges are stepped over from now on, and records lost
    /// in them are no longer counted. Returns how many unacknowledged records were lost.
    fn rescan(&mut self, n: u32) -> Result<u64> {
        if n == self.writer_number {
            self.writer.flush()?;
        }
        let path = segment_path(&self.dir, n);
        let file = File::open(&path).map_err(StoreError::io(&path))?;
        let scan = match segment::scan(&path, &file) {
            Ok(scan) => scan,
            // Its header was fine when the log opened: not damage to step over.
            Err(StoreError::Corrupt { reason, .. }) => {
                return Err(StoreError::Io {
                    path,
                    source: std::io::Error::other(reason),
                })
            }
            Err(error) => return Err(error),
        };
        self.read_ahead.forget(n);
        self.reading = None;
        let segment = self.segments.get_mut(&n).expect("a segment being read");
        let mut damaged = scan.damaged;
        if scan.valid_bytes < segment.bytes {
            damaged.push(Damage {
                offset: scan.valid_bytes as u32,
                bytes: (segment.bytes - scan.valid_bytes) as u32,
                records: scan.tail_records.max(1),
            });
        }
        let records: HashSet<u32> = scan.records.iter().map(|r| r.offset).collect();
        let before = segment.unacked();
        segment.acked.retain(|offset| records.contains(offset));
        segment.records = scan.records.len() as u32;
        for damage in &damaged {
            if segment.damage_at(damage.offset).is_none() {
                report_damage(&path, damage);
            }
        }
        segment.damaged = damaged;
        Ok(u64::from(before.saturating_sub(segment.unacked())))
    }

    /// A record's payload, checked against its header's CRC.
    fn payload_of(&mut self, n: u32, record: RecordRef, header: RecordHeader) -> Result<Vec<u8>> {
        let at = record.offset + self.segments[&n].format.record_header_bytes();
        let len = record.payload_bytes as usize;
        let in_file = n != self.writer_number || u64::from(at) < self.writer.written();
        let payload = if len > READ_AHEAD_BYTES && in_file {
            // A large record is read straight into its own buffer, not through the
            // read-ahead one (which would keep its size).
            let mut payload = vec![0u8; len];
            let path = segment_path(&self.dir, n);
            self.reader(n)?
                .read_exact_at(&mut payload, u64::from(at))
                .map_err(StoreError::io(&path))?;
            payload
        } else if len > READ_AHEAD_BYTES {
            self.writer
                .pending_at(u64::from(at), len)
                .ok_or_else(|| StoreError::Corrupt {
                    path: self.writer.path.clone(),
                    offset: u64::from(record.offset),
                    reason: "no record there".into(),
                })?
                .to_vec()
        } else {
            self.bytes_at(n, at, len)?.to_vec()
        };
        if !header.verifies(&payload) {
            return Err(StoreError::Corrupt {
                path: segment_path(&self.dir, n),
                offset: u64::from(record.offset),
                reason: "CRC mismatch".into(),
            });
        }
        Ok(payload)
    }

    /// A cursor after the newest record: what is appended from now on.
    pub fn end_cursor(&self) -> Cursor {
        Cursor {
            segment: self.writer_number,
            offset: self.writer.bytes as u32,
        }
    }

    /// A cursor at the oldest record.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            segment: self
                .segments
                .keys()
                .next()
                .copied()
                .unwrap_or(self.writer_number),
            offset: SEGMENT_HEADER_BYTES,
        }
    }

    /// The next unacknowledged record at or after `cursor`, which moves past it.
    ///
    /// Damage found on the way (a record whose header or payload does not verify) makes
    /// the segment be scanned again ([`QueueLog::rescan`]); the records it destroyed are
    /// reported once as [`StoreError::Lost`], with the cursor left to step over them at
    /// the next call, and the records after them are read. Any other error (an I/O error)
    /// leaves the cursor where it was, so that reading is tried again.
    pub fn next(&mut self, cursor: &mut Cursor) -> Result<Option<(Position, Vec<u8>)>> {
        loop {
            let Some((&n, segment)) = self.segments.range(cursor.segment..).next() else {
                return Ok(None);
            };
            if n != cursor.segment {
                *cursor = Cursor {
                    segment: n,
                    offset: SEGMENT_HEADER_BYTES,
                };
            }
            if let Some(damage) = segment.damage_at(cursor.offset) {
                cursor.offset = damage.end();
                continue;
            }
            let header_bytes = segment.format.record_header_bytes();
            if u64::from(cursor.offset) + u64::from(header_bytes) > segment.bytes {
                if n == self.writer_number {
                    return Ok(None);
                }
                cursor.segment = n + 1;
                cursor.offset = SEGMENT_HEADER_BYTES;
                continue;
            }
            let acked = segment.acked.contains(&cursor.offset);
            let Some(header) = self.record_at(n, cursor.offset)? else {
                self.damage_found(n, cursor)?;
                continue;
            };
            let record = RecordRef {
                offset: cursor.offset,
                payload_bytes: header.payload_bytes,
            };
            let after = cursor.offset + header_bytes + header.payload_bytes;
            if acked {
                cursor.offset = after;
                continue;
            }
            match self.payload_of(n, record, header) {
                Ok(payload) => {
                    cursor.offset = after;
                    return Ok(Some((Position { segment: n, record }, payload)));
                }
                Err(StoreError::Corrupt { .. }) => {
                    self.damage_found(n, cursor)?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Reading found damage at `cursor` in segment `n`: scans the segment again and
    /// reports what was lost. Ok when nothing counted was lost (damage reported by an
    /// earlier run, whose index already left it out): reading goes on.
    fn damage_found(&mut self, n: u32, cursor: &mut Cursor) -> Result<()> {
        let at = cursor.offset;
        let lost = self.rescan(n)?;
        let path = segment_path(&self.dir, n);
        let Some(damage) = self.segments[&n].damage_at(at) else {
            // The scan found the record intact: read it once more; only if that fails
            // too is it stepped past, rather than read again and again.
            if self.second_look != Some((n, at)) {
                self.second_look = Some((n, at));
                return Ok(());
            }
            let header_bytes = self.segments[&n].format.record_header_bytes();
            let header = self.record_at(n, at)?;
            cursor.offset = at + header_bytes + header.map_or(0, |h| h.payload_bytes);
            return Err(StoreError::Corrupt {
                path,
                offset: u64::from(at),
                reason: "a record failed its check once and passed it on a second read; skipped"
                    .into(),
            });
        };
        if lost == 0 {
            return Ok(());
        }
        Err(StoreError::Lost {
            path,
            offset: u64::from(damage.offset),
            bytes: u64::from(damage.bytes),
            records: lost,
        })
    }

    /// Records not yet acknowledged.
    pub fn message_count(&self) -> u64 {
        self.segments.values().map(|s| u64::from(s.unacked())).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Deletes the whole log (the queue was deleted).
    pub fn destroy(mut self) -> Result<()> {
        // Its gathered acks no longer matter: closing it must not write them.
        self.unwritten_acks_in.clear();
        fs::remove_dir_all(&self.dir).map_err(StoreError::io(&self.dir))
    }
}

/// Logs damage found in a segment: where, how much, and the records known lost in it.
fn report_damage(path: &Path, damage: &Damage) {
    tracing::error!(
        file = %path.display(),
        offset = damage.offset,
        bytes = damage.bytes,
        records_at_least = damage.records,
        "damaged records in a segment: they are lost, the records after them are read"
    );
}

/// Moves a segment that holds damage out of the log's way (`<n>.seg.damaged`), keeping
/// its bytes for the operator, and logs it; its ack file and index go.
fn set_aside(dir: &Path, n: u32, why: &str) {
    let path = segment_path(dir, n);
    let mut target = path.clone().into_os_string();
    target.push(".damaged");
    let target = PathBuf::from(target);
    match fs::rename(&path, &target) {
        Ok(()) => {
            tracing::error!(file = %path.display(), kept_as = %target.display(), why,
                "a damaged segment was set aside; nothing else in the queue is affected");
            let _ = fs::remove_file(ack_path(dir, n));
            let _ = fs::remove_file(index_path(dir, n));
        }
        Err(error) => tracing::error!(file = %path.display(), %error, why,
            "a damaged segment could not be set aside; it is left where it is"),
    }
}

fn remove_segment_files(dir: &Path, n: u32) -> Result<()> {
    for path in [segment_path(dir, n), ack_path(dir, n), index_path(dir, n)] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io { path, source: e }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
