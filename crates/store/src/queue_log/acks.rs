//! Acknowledging records: offsets written to each segment's ack file, in batches; a
//! segment whose records are all acknowledged is deleted with its files.

use std::fs::{self};

use crate::error::{Result, StoreError};
use crate::segment::{Lifetime, SEGMENT_HEADER_BYTES};

use super::{
    remove_segment_files, segment_path, set_aside, Cursor, Position, QueueLog,
    UNWRITTEN_ACK_BYTES_MAX,
};

impl QueueLog {
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
    pub(super) fn delete_if_done(&mut self, n: u32) -> Result<()> {
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
    pub(super) fn forget_segment(&mut self, n: u32) {
        self.segments.remove(&n);
        if matches!(self.reading, Some((r, _)) if r == n) {
            self.reading = None;
        }
        self.read_ahead.forget(n);
    }
}
