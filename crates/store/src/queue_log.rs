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
//! Owned by its queue, which calls it under the queue's lock.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::data_dir::sync_dir;
use crate::error::{Result, StoreError};
use crate::segment::{
    self, Lifetime, RecordHeader, RecordRef, SegmentWriter, RECORD_BYTES_MAX, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::segment_index::SegmentIndex;

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
    records: u32,
    acked: HashSet<u32>,
    ack_file: Option<File>,
    /// Acks recorded but not yet appended to the ack file.
    unwritten_acks: Vec<u8>,
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
}

pub struct QueueLog {
    dir: PathBuf,
    segment_bytes_max: u64,
    segments: BTreeMap<u32, Segment>,
    writer_number: u32,
    writer: SegmentWriter,
    /// Offsets of the transient records in the segment being written, for its index.
    writer_transient: Vec<u32>,
    /// Appends since the last sync.
    unsynced: bool,
    /// The read handle of the last segment read, reused while reads stay in it.
    reading: Option<(u32, File)>,
    /// Bytes read ahead from that segment, for reading records in order.
    read_ahead: ReadAhead,
    /// Segments holding acks not yet written to their ack files.
    unwritten_acks_in: Vec<u32>,
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

/// Appends a segment's gathered acks to its ack file, opening it at the first.
fn write_segment_acks(dir: &Path, n: u32, segment: &mut Segment) -> Result<()> {
    if segment.unwritten_acks.is_empty() {
        return Ok(());
    }
    let path = ack_path(dir, n);
    let file = match &mut segment.ack_file {
        Some(file) => file,
        None => segment.ack_file.insert(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(StoreError::io(&path))?,
        ),
    };
    file.write_all(&segment.unwritten_acks)
        .map_err(StoreError::io(&path))?;
    segment.unwritten_acks.clear();
    Ok(())
}

/// Bytes of one segment read ahead of [`QueueLog::next`]: reading a run of records costs
/// one `pread` per buffer, not two per record. Records never change once written, so the
/// buffer stays valid while its segment exists.
#[derive(Default)]
struct ReadAhead {
    segment: u32,
    /// File offset of `bytes[0]`.
    start: u64,
    bytes: Vec<u8>,
}

/// How much is read ahead at a time.
const READ_AHEAD_BYTES: usize = 256 * 1024;

impl ReadAhead {
    fn get(&self, segment: u32, offset: u64, len: usize) -> Option<&[u8]> {
        if segment != self.segment || offset < self.start {
            return None;
        }
        let from = (offset - self.start) as usize;
        self.bytes.get(from..from.checked_add(len)?)
    }

    /// Reads `[offset, offset + len)` of the segment, refilling the buffer from `offset`
    /// (up to `limit`, the end of the segment's records) when it does not hold them.
    fn read(
        &mut self,
        file: &File,
        path: &Path,
        segment: u32,
        offset: u64,
        len: usize,
        limit: u64,
    ) -> Result<&[u8]> {
        if self.get(segment, offset, len).is_none() {
            let want = (limit.saturating_sub(offset) as usize)
                .min(READ_AHEAD_BYTES)
                .max(len);
            self.bytes.resize(want, 0);
            file.read_exact_at(&mut self.bytes, offset)
                .map_err(StoreError::io(path))?;
            self.segment = segment;
            self.start = offset;
        }
        Ok(self.get(segment, offset, len).expect("filled above"))
    }

    fn forget(&mut self, segment: u32) {
        if self.segment == segment {
            self.bytes.clear();
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

/// What opening found in one segment.
struct Opened {
    bytes: u64,
    records: u32,
    /// Acknowledged or transient: not to be delivered.
    acked: HashSet<u32>,
    transient: Vec<u32>,
}

/// Opens a sealed segment through its index, if it has a trustworthy one.
fn open_indexed(dir: &Path, n: u32, segment_bytes: u64) -> Result<Option<Opened>> {
    let Some(index) = SegmentIndex::read(&index_path(dir, n), segment_bytes) else {
        return Ok(None);
    };
    let records_end = index.valid_bytes;
    let mut acked: HashSet<u32> = read_acks(&ack_path(dir, n))?
        .into_iter()
        .filter(|offset| *offset >= SEGMENT_HEADER_BYTES && u64::from(*offset) < records_end)
        .collect();
    acked.extend(index.transient.iter().copied());
    if acked.len() > index.records as usize {
        // The ack file names records the index does not have: trust neither, scan.
        tracing::warn!(segment = n, dir = %dir.display(), "acks do not match the segment index; scanning");
        return Ok(None);
    }
    Ok(Some(Opened {
        bytes: index.valid_bytes,
        records: index.records,
        acked,
        transient: index.transient,
    }))
}

/// Opens a segment by reading every record; a damaged tail is reported in `recovery`.
fn open_scanned(
    dir: &Path,
    n: u32,
    file: &File,
    newest: bool,
    recovery: &mut Recovery,
) -> Result<Opened> {
    let path = segment_path(dir, n);
    let scan = segment::scan(&path, file)?;
    if scan.invalid_bytes > 0 {
        if newest {
            tracing::warn!(
                file = %path.display(),
                at = scan.valid_bytes,
                dropped_bytes = scan.invalid_bytes,
                "cutting a torn or corrupt tail"
            );
            recovery.truncated_bytes = scan.invalid_bytes;
        } else {
            // An older segment was complete when the next one started: damage
            // here is not a crash, and the records after it are lost.
            tracing::error!(
                file = %path.display(),
                at = scan.valid_bytes,
                lost_bytes = scan.invalid_bytes,
                "corrupt segment: records after this point are lost"
            );
        }
    }
    let valid: HashSet<u32> = scan.records.iter().map(|r| r.offset).collect();
    let mut acked: HashSet<u32> = read_acks(&ack_path(dir, n))?
        .into_iter()
        .filter(|offset| valid.contains(offset))
        .collect();
    acked.extend(scan.transient.iter().copied());
    Ok(Opened {
        bytes: scan.valid_bytes,
        records: scan.records.len() as u32,
        acked,
        transient: scan.transient,
    })
}

/// Reads an ack file; a torn last entry (fewer than 4 bytes) is ignored.
fn read_acks(path: &Path) -> Result<HashSet<u32>> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

impl QueueLog {
    /// Opens the log in `dir` (creating it), scanning its segments: records are counted and
    /// checked, acknowledged ones skipped, fully acknowledged segments deleted, and a torn
    /// tail of the newest segment cut.
    pub fn open(dir: impl Into<PathBuf>, segment_bytes_max: u64) -> Result<(QueueLog, Recovery)> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let mut numbers: Vec<u32> = fs::read_dir(&dir)
            .map_err(StoreError::io(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut recovery = Recovery::default();
        let mut segments = BTreeMap::new();
        let newest = numbers.last().copied();
        let mut writer_transient = Vec::new();
        for n in numbers {
            let path = segment_path(&dir, n);
            let file = File::open(&path).map_err(StoreError::io(&path))?;
            segment::check_header(&path, &file)?;
            let is_newest = Some(n) == newest;
            let indexed = if is_newest {
                None
            } else {
                let length = file.metadata().map_err(StoreError::io(&path))?.len();
                open_indexed(&dir, n, length)?
            };
            let opened = match indexed {
                Some(opened) => opened,
                None => {
                    let opened = open_scanned(&dir, n, &file, is_newest, &mut recovery)?;
                    if !is_newest {
                        let index = SegmentIndex {
                            valid_bytes: opened.bytes,
                            records: opened.records,
                            transient: opened.transient.clone(),
                        };
                        if let Err(error) = index.write(&index_path(&dir, n)) {
                            tracing::warn!(%error, "cannot write a segment index");
                        }
                    }
                    opened
                }
            };
            if is_newest {
                writer_transient = opened.transient;
            }
            let segment = Segment {
                bytes: opened.bytes,
                records: opened.records,
                acked: opened.acked,
                ack_file: None,
                unwritten_acks: Vec::new(),
            };
            if segment.acked.len() as u32 == segment.records && !is_newest {
                remove_segment_files(&dir, n)?;
                continue;
            }
            recovery.messages += u64::from(segment.records - segment.acked.len() as u32);
            segments.insert(n, segment);
        }
        let (writer_number, writer) = match newest.filter(|n| segments.contains_key(n)) {
            Some(n) => {
                let bytes = segments[&n].bytes;
                (n, SegmentWriter::reopen(segment_path(&dir, n), bytes)?)
            }
            None => {
                let n = newest.map_or(1, |n| n + 1);
                let writer = SegmentWriter::create(segment_path(&dir, n))?;
                sync_dir(&dir)?;
                segments.insert(
                    n,
                    Segment {
                        bytes: writer.bytes,
                        records: 0,
                        acked: HashSet::new(),
                        ack_file: None,
                        unwritten_acks: Vec::new(),
                    },
                );
                (n, writer)
            }
        };
        recovery.segments = segments.len();
        Ok((
            QueueLog {
                dir,
                segment_bytes_max,
                segments,
                writer_number,
                writer,
                writer_transient,
                unsynced: false,
                reading: None,
                read_ahead: ReadAhead::default(),
                unwritten_acks_in: Vec::new(),
            },
            recovery,
        ))
    }

    /// Appends a record. It is durable once [`QueueLog::sync`] returns; a transient one is
    /// dropped at the next opening of the log.
    pub fn append(&mut self, payload: &[u8], lifetime: Lifetime) -> Result<Position> {
        let record_bytes = payload.len() as u64 + u64::from(RECORD_HEADER_BYTES);
        let used = self.writer.bytes - u64::from(SEGMENT_HEADER_BYTES);
        if used > 0 && self.writer.bytes + record_bytes > self.segment_bytes_max {
            self.roll()?;
        }
        let record = self.writer.append(payload, lifetime)?;
        if lifetime == Lifetime::Transient {
            self.writer_transient.push(record.offset);
        }
        let segment = self
            .segments
            .get_mut(&self.writer_number)
            .expect("the segment being written is known");
        segment.records += 1;
        segment.bytes = self.writer.bytes;
        self.unsynced = true;
        Ok(Position {
            segment: self.writer_number,
            record,
        })
    }

    /// Seals the current segment (synced, then indexed) and starts the next.
    fn roll(&mut self) -> Result<()> {
        self.writer.sync()?;
        let index = SegmentIndex {
            valid_bytes: self.writer.bytes,
            records: self.segments[&self.writer_number].records,
            transient: std::mem::take(&mut self.writer_transient),
        };
        if let Err(error) = index.write(&index_path(&self.dir, self.writer_number)) {
            // Only the next start's speed depends on it: that start scans the segment.
            tracing::warn!(%error, "cannot write a segment index");
        }
        let next = self.writer_number + 1;
        self.writer = SegmentWriter::create(segment_path(&self.dir, next))?;
        sync_dir(&self.dir)?;
        self.segments.insert(
            next,
            Segment {
                bytes: self.writer.bytes,
                records: 0,
                acked: HashSet::new(),
                ack_file: None,
                unwritten_acks: Vec::new(),
            },
        );
        let previous = self.writer_number;
        self.writer_number = next;
        self.delete_if_done(previous)
    }

    /// Makes every append so far durable.
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            self.writer.sync()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// A handle on the segment being written, for an fsync outside the queue's lock, if
    /// anything was appended since the last one. Syncing it makes every append before this
    /// call durable (a segment that rolled over was synced when it did).
    pub fn take_sync_handle(&mut self) -> Result<Option<File>> {
        if !self.unsynced {
            return Ok(None);
        }
        self.writer.flush()?;
        self.unsynced = false;
        let file = self
            .writer
            .file
            .try_clone()
            .map_err(StoreError::io(&self.writer.path))?;
        Ok(Some(file))
    }

    /// Marks a record acknowledged. Acks are written but not synced, and gathered first
    /// (up to 4 KiB per segment, or until [`QueueLog::write_acks`]): an ack lost to a crash
    /// makes the message come back (redelivered), never lost.
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
            if segment.unwritten_acks.is_empty() {
                self.unwritten_acks_in.push(position.segment);
            }
            segment
                .unwritten_acks
                .extend_from_slice(&position.record.offset.to_be_bytes());
            if segment.unwritten_acks.len() >= UNWRITTEN_ACK_BYTES_MAX {
                write_segment_acks(&self.dir, position.segment, segment)?;
            }
        }
        self.delete_if_done(position.segment)
    }

    /// Appends every gathered ack to its segment's ack file (not synced).
    pub fn write_acks(&mut self) -> Result<()> {
        for n in std::mem::take(&mut self.unwritten_acks_in) {
            if let Some(segment) = self.segments.get_mut(&n) {
                write_segment_acks(&self.dir, n, segment)?;
            }
        }
        Ok(())
    }

    /// Acknowledges up to `count` unacknowledged records from `cursor` on (a purge),
    /// reading only record headers and writing each segment's acks at once. Returns how
    /// many were acknowledged.
    pub fn ack_from(&mut self, cursor: &mut Cursor, count: u64) -> Result<u64> {
        use std::io::{BufReader, Read, Seek, SeekFrom};
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
            let path = segment_path(&self.dir, n);
            if n == self.writer_number {
                self.writer.flush()?;
            }
            let segment = self.segments.get_mut(&n).expect("listed above");
            let unacked = u64::from(segment.records) - segment.acked.len() as u64;
            if start == SEGMENT_HEADER_BYTES && n != self.writer_number && unacked <= count - acked
            {
                // A whole sealed segment goes: nothing in it needs reading.
                acked += unacked;
                self.segments.remove(&n);
                if matches!(self.reading, Some((r, _)) if r == n) {
                    self.reading = None;
                }
                self.read_ahead.forget(n);
                remove_segment_files(&self.dir, n)?;
                *cursor = Cursor {
                    segment: n + 1,
                    offset: SEGMENT_HEADER_BYTES,
                };
                continue;
            }
            let file = File::open(&path).map_err(StoreError::io(&path))?;
            let mut reader = BufReader::with_capacity(1 << 20, file);
            reader
                .seek(SeekFrom::Start(u64::from(start)))
                .map_err(StoreError::io(&path))?;
            let mut offset = start;
            let mut newly = Vec::new();
            while acked + (newly.len() as u64) < count
                && u64::from(offset) + u64::from(RECORD_HEADER_BYTES) <= segment.bytes
            {
                let mut header = [0u8; RECORD_HEADER_BYTES as usize];
                reader
                    .read_exact(&mut header)
                    .map_err(StoreError::io(&path))?;
                let payload_bytes = RecordHeader::decode(&header).payload_bytes;
                reader
                    .seek_relative(i64::from(payload_bytes))
                    .map_err(StoreError::io(&path))?;
                if !segment.acked.contains(&offset) {
                    newly.push(offset);
                }
                offset += RECORD_HEADER_BYTES + payload_bytes;
            }
            *cursor = Cursor { segment: n, offset };
            if newly.is_empty() {
                continue;
            }
            if segment.unwritten_acks.is_empty() {
                self.unwritten_acks_in.push(n);
            }
            for record in &newly {
                segment
                    .unwritten_acks
                    .extend_from_slice(&record.to_be_bytes());
                segment.acked.insert(*record);
            }
            write_segment_acks(&self.dir, n, segment)?;
            acked += newly.len() as u64;
            self.delete_if_done(n)?;
        }
        Ok(acked)
    }

    /// Deletes a sealed segment whose records are all acknowledged (its unwritten acks
    /// with it).
    fn delete_if_done(&mut self, n: u32) -> Result<()> {
        let done = self
            .segments
            .get(&n)
            .is_some_and(|s| s.acked.len() as u32 == s.records);
        if done && n != self.writer_number {
            self.segments.remove(&n);
            if matches!(self.reading, Some((r, _)) if r == n) {
                self.reading = None;
            }
            self.read_ahead.forget(n);
            remove_segment_files(&self.dir, n)?;
        }
        Ok(())
    }

    /// Reads one record's payload.
    pub fn read(&mut self, position: Position) -> Result<Vec<u8>> {
        let path = segment_path(&self.dir, position.segment);
        let file = self.reader(position.segment)?;
        segment::read_record(&path, file, position.record)
    }

    fn reader(&mut self, n: u32) -> Result<&File> {
        if n == self.writer_number {
            // Records still pending in the writer are not in the file yet.
            self.writer.flush()?;
        }
        if !matches!(&self.reading, Some((r, _)) if *r == n) {
            let path = segment_path(&self.dir, n);
            let file = File::open(&path).map_err(StoreError::io(&path))?;
            self.reading = Some((n, file));
        }
        Ok(&self.reading.as_ref().expect("set above").1)
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

    /// The next unacknowledged record at or after `cursor`, which moves past it. A record
    /// damaged on disk is an error ([`StoreError::Corrupt`]) with the cursor moved past it
    /// (past the rest of its segment if its length is damaged), so reading can go on.
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
            if u64::from(cursor.offset) + u64::from(RECORD_HEADER_BYTES) > segment.bytes {
                if n == self.writer_number {
                    return Ok(None);
                }
                cursor.segment = n + 1;
                cursor.offset = SEGMENT_HEADER_BYTES;
                continue;
            }
            let acked = segment.acked.contains(&cursor.offset);
            let segment_bytes = segment.bytes;
            let path = segment_path(&self.dir, n);
            self.reader(n)?;
            let file = &self.reading.as_ref().expect("opened above").1;
            let header: [u8; RECORD_HEADER_BYTES as usize] = self
                .read_ahead
                .read(
                    file,
                    &path,
                    n,
                    u64::from(cursor.offset),
                    RECORD_HEADER_BYTES as usize,
                    segment_bytes,
                )?
                .try_into()
                .expect("a whole header");
            let header = RecordHeader::decode(&header);
            let payload_bytes = header.payload_bytes;
            let end = u64::from(cursor.offset)
                + u64::from(RECORD_HEADER_BYTES)
                + u64::from(payload_bytes);
            if payload_bytes > RECORD_BYTES_MAX || end > segment_bytes {
                // The next record cannot be found: the rest of this segment is lost.
                let at = u64::from(cursor.offset);
                if n == self.writer_number {
                    cursor.offset = segment_bytes as u32;
                } else {
                    *cursor = Cursor {
                        segment: n + 1,
                        offset: SEGMENT_HEADER_BYTES,
                    };
                }
                return Err(StoreError::Corrupt {
                    path,
                    offset: at,
                    reason: "damaged record length; the rest of the segment is skipped".into(),
                });
            }
            let record = RecordRef {
                offset: cursor.offset,
                payload_bytes,
            };
            cursor.offset += RECORD_HEADER_BYTES + payload_bytes;
            if acked {
                continue;
            }
            let payload = if payload_bytes as usize <= READ_AHEAD_BYTES {
                let file = &self.reading.as_ref().expect("opened above").1;
                let payload = self
                    .read_ahead
                    .read(
                        file,
                        &path,
                        n,
                        u64::from(record.offset + RECORD_HEADER_BYTES),
                        payload_bytes as usize,
                        segment_bytes,
                    )?
                    .to_vec();
                if !header.verifies(&payload) {
                    return Err(StoreError::Corrupt {
                        path,
                        offset: u64::from(record.offset),
                        reason: "CRC mismatch".into(),
                    });
                }
                payload
            } else {
                let file = &self.reading.as_ref().expect("opened above").1;
                segment::read_record(&path, file, record)?
            };
            return Ok(Some((Position { segment: n, record }, payload)));
        }
    }

    /// Records not yet acknowledged.
    pub fn message_count(&self) -> u64 {
        self.segments
            .values()
            .map(|s| u64::from(s.records - s.acked.len() as u32))
            .sum()
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
mod tests {
    use super::*;
    use crate::data_dir::tests::TempDir;

    fn drain(log: &mut QueueLog) -> Vec<(Position, Vec<u8>)> {
        let mut cursor = log.cursor();
        let mut out = Vec::new();
        while let Some(item) = log.next(&mut cursor).unwrap() {
            out.push(item);
        }
        out
    }

    fn bodies(items: &[(Position, Vec<u8>)]) -> Vec<Vec<u8>> {
        items.iter().map(|(_, b)| b.clone()).collect()
    }

    #[test]
    fn acks_are_gathered_until_written_or_closed() {
        let dir = TempDir::new("qlog-acks");
        let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
        let positions: Vec<Position> = (0..4u8)
            .map(|i| log.append(&[i; 3], Lifetime::Persistent).unwrap())
            .collect();
        let ack_file = ack_path(&dir.0, positions[0].segment);
        let ack_file_len = || fs::metadata(&ack_file).map(|m| m.len()).unwrap_or(0);
        log.ack(positions[0], Lifetime::Persistent).unwrap();
        log.ack(positions[1], Lifetime::Persistent).unwrap();
        assert_eq!(ack_file_len(), 0, "gathered, not written yet");
        log.write_acks().unwrap();
        assert_eq!(ack_file_len(), 8, "two acks of 4 bytes, one write");
        log.ack(positions[2], Lifetime::Persistent).unwrap();
        drop(log);
        assert_eq!(
            ack_file_len(),
            12,
            "closing the log writes what it gathered"
        );
        let (log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(recovery.messages, 1);
        drop(log);
    }

    #[test]
    fn append_read_ack_and_reopen() {
        let dir = TempDir::new("qlog");
        let (mut log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(recovery.messages, 0);
        let positions: Vec<Position> = (0..5u8)
            .map(|i| log.append(&[i; 3], Lifetime::Persistent).unwrap())
            .collect();
        log.sync().unwrap();
        assert_eq!(log.read(positions[3]).unwrap(), vec![3; 3]);
        log.ack(positions[1], Lifetime::Persistent).unwrap();
        log.ack(positions[3], Lifetime::Persistent).unwrap();
        assert_eq!(log.message_count(), 3);
        assert_eq!(
            bodies(&drain(&mut log)),
            vec![vec![0; 3], vec![2; 3], vec![4; 3]]
        );
        drop(log);
        let (mut log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(recovery.messages, 3);
        assert_eq!(
            bodies(&drain(&mut log)),
            vec![vec![0; 3], vec![2; 3], vec![4; 3]]
        );
        // Appends continue after the recovered records.
        log.append(b"new", Lifetime::Persistent).unwrap();
        assert_eq!(drain(&mut log).len(), 4);
    }

    #[test]
    fn segments_roll_and_go_when_fully_acked() {
        let dir = TempDir::new("qlog-roll");
        // Small segments: a few 100-byte records each.
        let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
        let positions: Vec<Position> = (0..20u8)
            .map(|i| log.append(&[i; 100], Lifetime::Persistent).unwrap())
            .collect();
        log.sync().unwrap();
        assert!(log.segment_count() > 5, "{} segments", log.segment_count());
        for p in &positions[..19] {
            log.ack(*p, Lifetime::Persistent).unwrap();
        }
        assert_eq!(log.segment_count(), 1, "only the newest segment is left");
        let files = fs::read_dir(&dir.0).unwrap().count();
        assert!(files <= 2, "{files} files left");
        assert_eq!(bodies(&drain(&mut log)), vec![vec![19; 100]]);
        log.ack(positions[19], Lifetime::Persistent).unwrap();
        assert_eq!(log.message_count(), 0);
        drop(log);
        let (log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
        assert_eq!((recovery.messages, log.message_count()), (0, 0));
    }

    #[test]
    fn a_torn_tail_is_cut_at_reopen_and_reported() {
        let dir = TempDir::new("qlog-torn");
        let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
        for i in 0..3u8 {
            log.append(&[i; 50], Lifetime::Persistent).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let seg = segment_path(&dir.0, 1);
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let (mut log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(recovery.messages, 2);
        assert_eq!(recovery.truncated_bytes, 50 + 8 - 10);
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            len - 58,
            "the tail was cut"
        );
        log.append(b"after the cut", Lifetime::Persistent).unwrap();
        assert_eq!(drain(&mut log).len(), 3);
    }

    #[test]
    fn a_torn_ack_entry_is_ignored() {
        let dir = TempDir::new("qlog-ack");
        let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
        let a = log.append(b"a", Lifetime::Persistent).unwrap();
        log.append(b"b", Lifetime::Persistent).unwrap();
        log.ack(a, Lifetime::Persistent).unwrap();
        drop(log);
        let mut acks = OpenOptions::new()
            .append(true)
            .open(ack_path(&dir.0, 1))
            .unwrap();
        acks.write_all(&[0, 0]).unwrap();
        drop(acks);
        let (mut log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(recovery.messages, 1);
        assert_eq!(bodies(&drain(&mut log)), vec![b"b".to_vec()]);
    }

    #[test]
    fn ack_from_acknowledges_the_rest_in_bulk() {
        let dir = TempDir::new("qlog-ackfrom");
        let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
        let positions: Vec<Position> = (0..20u8)
            .map(|i| log.append(&[i; 100], Lifetime::Persistent).unwrap())
            .collect();
        // Read (and keep) the first three, ack one of the rest individually.
        let mut cursor = log.cursor();
        for _ in 0..3 {
            log.next(&mut cursor).unwrap().unwrap();
        }
        log.ack(positions[10], Lifetime::Persistent).unwrap();
        assert_eq!(log.ack_from(&mut cursor, 16).unwrap(), 16);
        assert_eq!(log.message_count(), 3, "only the three taken before remain");
        assert_eq!(log.next(&mut cursor).unwrap(), None);
        drop(log);
        let (mut log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
        assert_eq!(recovery.messages, 3);
        assert_eq!(
            bodies(&drain(&mut log)),
            vec![vec![0; 100], vec![1; 100], vec![2; 100]]
        );
    }

    #[test]
    fn sealed_segments_are_opened_from_their_index() {
        let dir = TempDir::new("qlog-index");
        let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
        let positions: Vec<Position> = (0..10u8)
            .map(|i| log.append(&[i; 100], Lifetime::Persistent).unwrap())
            .collect();
        log.sync().unwrap();
        log.ack(positions[0], Lifetime::Persistent).unwrap();
        drop(log);
        let first = positions[0].segment;
        assert!(
            index_path(&dir.0, first).exists(),
            "sealed segments are indexed"
        );
        let newest = positions[9].segment;
        assert!(
            !index_path(&dir.0, newest).exists(),
            "the open segment is not"
        );
        // Damage a record of a sealed segment: opening trusts the index and does not read
        // it, so the count is whole; reading that record then reports the damage.
        let damaged = positions[2];
        assert_eq!(damaged.segment, first, "three records to a segment");
        let seg = segment_path(&dir.0, damaged.segment);
        let mut bytes = fs::read(&seg).unwrap();
        bytes[(damaged.record.offset + RECORD_HEADER_BYTES) as usize] ^= 0xff;
        fs::write(&seg, &bytes).unwrap();
        let (mut log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
        assert_eq!(recovery.messages, 9);
        let err = log.read(damaged).unwrap_err();
        assert!(err.to_string().contains("CRC mismatch"), "{err}");
        drop(log);
        // Without its index, the segment is scanned (the damage found) and indexed again.
        fs::remove_file(index_path(&dir.0, damaged.segment)).unwrap();
        let (_log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
        assert_eq!(recovery.messages, 8, "the scan stops at the damaged record");
        assert!(index_path(&dir.0, damaged.segment).exists());
    }

    #[test]
    fn acks_of_transient_records_are_not_written_but_still_free_segments() {
        let dir = TempDir::new("qlog-transient-ack");
        let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
        let positions: Vec<Position> = (0..10u8)
            .map(|i| log.append(&[i; 100], Lifetime::Transient).unwrap())
            .collect();
        for p in &positions[..9] {
            log.ack(*p, Lifetime::Transient).unwrap();
        }
        assert_eq!(log.segment_count(), 1, "fully acked segments went");
        let ack_files = fs::read_dir(&dir.0)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("ack".as_ref()))
            .count();
        assert_eq!(ack_files, 0);
        assert_eq!(log.message_count(), 1);
    }

    #[test]
    fn reads_in_order_across_read_ahead_buffers_and_segments() {
        let dir = TempDir::new("qlog-readahead");
        let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
        // Odd sizes so records straddle buffer ends; one larger than a buffer; some
        // transient ones still pending in the writer when reading starts.
        let mut expected = Vec::new();
        for i in 0..3000u32 {
            let len = if i == 1500 {
                300 * 1024
            } else {
                997 + (i as usize % 13)
            };
            let body: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
            let lifetime = if i % 7 == 0 {
                Lifetime::Transient
            } else {
                Lifetime::Persistent
            };
            log.append(&body, lifetime).unwrap();
            expected.push(body);
        }
        assert!(log.segment_count() > 2);
        assert_eq!(bodies(&drain(&mut log)), expected);
    }

    #[test]
    fn reading_goes_on_past_a_damaged_record() {
        let dir = TempDir::new("qlog-skip");
        let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
        let positions: Vec<Position> = (0..4u8)
            .map(|i| log.append(&[i; 100], Lifetime::Persistent).unwrap())
            .collect();
        log.sync().unwrap();
        let seg = segment_path(&dir.0, 1);
        let mut bytes = fs::read(&seg).unwrap();
        bytes[(positions[1].record.offset + RECORD_HEADER_BYTES) as usize] ^= 0xff;
        // And a damaged length, which loses the rest of the segment.
        let at = positions[3].record.offset as usize;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        fs::write(&seg, &bytes).unwrap();
        let mut cursor = log.cursor();
        assert_eq!(log.next(&mut cursor).unwrap().unwrap().1, vec![0; 100]);
        let err = log.next(&mut cursor).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(log.next(&mut cursor).unwrap().unwrap().1, vec![2; 100]);
        assert!(log.next(&mut cursor).is_err());
        assert_eq!(log.next(&mut cursor).unwrap(), None);
    }

    #[test]
    fn an_index_that_does_not_match_its_segment_is_ignored() {
        let dir = TempDir::new("qlog-index-stale");
        let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
        for i in 0..10u8 {
            log.append(&[i; 100], Lifetime::Persistent).unwrap();
        }
        drop(log);
        // Claim more records than the segment holds, for a length it does not have.
        let stale = SegmentIndex {
            valid_bytes: 12_345,
            records: 99,
            transient: vec![],
        };
        stale.write(&index_path(&dir.0, 1)).unwrap();
        let (_log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
        assert_eq!(recovery.messages, 10);
    }

    #[test]
    fn transient_records_do_not_outlive_a_reopen() {
        let dir = TempDir::new("qlog-transient");
        let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
        // Sealed segments and the open one both hold transient records.
        for i in 0..10u8 {
            let lifetime = if i % 2 == 0 {
                Lifetime::Persistent
            } else {
                Lifetime::Transient
            };
            log.append(&[i; 100], lifetime).unwrap();
        }
        log.sync().unwrap();
        assert_eq!(log.message_count(), 10);
        drop(log);
        let (mut log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
        assert_eq!(recovery.messages, 5, "the count is exact at once");
        // A transient record appended now is delivered until the next reopen.
        log.append(b"fresh", Lifetime::Transient).unwrap();
        let delivered = bodies(&drain(&mut log));
        let expected: Vec<Vec<u8>> = (0..10u8)
            .step_by(2)
            .map(|i| vec![i; 100])
            .chain([b"fresh".to_vec()])
            .collect();
        assert_eq!(delivered, expected);
        drop(log);
        let (mut log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
        assert_eq!(recovery.messages, 5);
        assert_eq!(drain(&mut log).len(), 5);
    }

    #[test]
    fn destroy_removes_everything() {
        let dir = TempDir::new("qlog-destroy");
        let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
        log.append(b"x", Lifetime::Persistent).unwrap();
        let acked = log.append(b"y", Lifetime::Persistent).unwrap();
        log.ack(acked, Lifetime::Persistent).unwrap();
        log.destroy().unwrap();
        assert!(
            !dir.0.exists(),
            "gathered acks are not written after the log is gone"
        );
    }
}
