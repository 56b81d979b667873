//! Appending to a queue's log: records go to the newest segment, which rolls over at its
//! size limit; syncing makes what was appended durable (on a handle the flusher can fsync
//! outside the queue's lock).

use std::fs::{self, File};

use crate::data_dir::sync_dir;
use crate::error::{Result, StoreError};
use crate::segment::{Lifetime, SegmentWriter, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::segment_index::SegmentIndex;

use super::{index_path, segment_path, Position, QueueLog, Segment};

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
    pub(super) fn roll(&mut self) -> Result<()> {
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
}
