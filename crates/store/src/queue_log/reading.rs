//! Reading a queue's log back: one record by position, or in order from a cursor, with
//! read-ahead; damage found on the way is reported, set aside and skipped.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::read_ahead::READ_AHEAD_BYTES;
use crate::error::{Result, StoreError};
use crate::segment::{
    self, Damage, RecordHeader, RecordRef, RECORD_BYTES_MAX, SEGMENT_HEADER_BYTES,
};

use super::{report_damage, segment_path, Cursor, Position, QueueLog};

impl QueueLog {
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
    pub(super) fn reader(&mut self, n: u32) -> Result<&File> {
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
    pub(super) fn bytes_at(&mut self, n: u32, offset: u32, len: usize) -> Result<&[u8]> {
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
    pub(super) fn record_at(&mut self, n: u32, offset: u32) -> Result<Option<RecordHeader>> {
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
    pub(super) fn rescan(&mut self, n: u32) -> Result<u64> {
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
    pub(super) fn payload_of(
        &mut self,
        n: u32,
        record: RecordRef,
        header: RecordHeader,
    ) -> Result<Vec<u8>> {
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
    pub(super) fn damage_found(&mut self, n: u32, cursor: &mut Cursor) -> Result<()> {
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
}
