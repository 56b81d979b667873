//! The segment being appended to.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::{
    segment_header, Lifetime, RecordHeader, RecordRef, RECORD_BYTES_MAX, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::error::{Result, StoreError};

/// Transient records wait in memory until this many bytes are pending.
const PENDING_BYTES_MAX: usize = 64 * 1024;

/// The segment being appended to. A persistent record is written to the file at once
/// (with any records pending before it); transient records, which nothing promises to
/// keep through a crash, are gathered and written together, one syscall for many.
///
/// An append either succeeds or leaves the segment as if it had not been tried: a write
/// that fails (a full disk) is cut off the file again and its record dropped from what is
/// pending, so the file never holds a record its log did not count.
pub struct SegmentWriter {
    pub path: PathBuf,
    pub file: File,
    /// Where the next record goes: the segment's length once pending bytes are written.
    pub bytes: u64,
    /// Bytes in the file; `pending` goes after them.
    written: u64,
    pending: Vec<u8>,
    /// A failed write may have left bytes after `written` that could not be cut at once;
    /// they are cut before the next write.
    untidy: bool,
}

impl SegmentWriter {
    /// Creates a new, empty segment. On failure no file is left behind, so that creating
    /// it again (once there is room) does not find it in the way.
    pub fn create(path: PathBuf) -> Result<SegmentWriter> {
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        if let Err(error) = file.write_all(&segment_header()) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(StoreError::Io {
                path,
                source: error,
            });
        }
        crate::write_meter::written(u64::from(SEGMENT_HEADER_BYTES));
        Ok(SegmentWriter {
            path,
            file,
            bytes: u64::from(SEGMENT_HEADER_BYTES),
            written: u64::from(SEGMENT_HEADER_BYTES),
            pending: Vec::new(),
            untidy: false,
        })
    }

    /// Reopens an existing segment to append after its last valid record, cutting
    /// anything after it.
    pub fn reopen(path: PathBuf, valid_bytes: u64) -> Result<SegmentWriter> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        file.set_len(valid_bytes).map_err(StoreError::io(&path))?;
        Ok(SegmentWriter {
            path,
            file,
            bytes: valid_bytes,
            written: valid_bytes,
            pending: Vec::new(),
            untidy: false,
        })
    }

    /// Appends one record; returns where it is. A persistent record is in the file (not
    /// yet durable: see [`SegmentWriter::sync`]) when this returns; a transient one may
    /// wait in memory until [`SegmentWriter::flush`]. On failure nothing was appended.
    pub fn append(&mut self, payload: &[u8], lifetime: Lifetime) -> Result<RecordRef> {
        self.append_parts(&[payload], lifetime)
    }

    /// [`SegmentWriter::append`] of a record whose payload is `parts`, in order: a large
    /// message's body is written from where it is, never copied into the pending bytes.
    pub fn append_parts(&mut self, parts: &[&[u8]], lifetime: Lifetime) -> Result<RecordRef> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let payload_bytes = u32::try_from(len)
            .ok()
            .filter(|n| *n <= RECORD_BYTES_MAX)
            .ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                offset: self.bytes,
                reason: format!("a record of {len} bytes is over the limit"),
            })?;
        let offset = u32::try_from(self.bytes).map_err(|_| StoreError::Corrupt {
            path: self.path.clone(),
            offset: self.bytes,
            reason: "segment over 4 GiB".into(),
        })?;
        let header = RecordHeader::encode(parts, lifetime);
        let record_bytes = len + RECORD_HEADER_BYTES as usize;
        if record_bytes > PENDING_BYTES_MAX {
            self.write_large(&header, parts, record_bytes)?;
            return Ok(RecordRef {
                offset,
                payload_bytes,
            });
        }
        let (pending_before, bytes_before) = (self.pending.len(), self.bytes);
        self.pending.reserve(record_bytes);
        self.pending.extend_from_slice(&header);
        for part in parts {
            self.pending.extend_from_slice(part);
        }
        self.bytes += record_bytes as u64;
        if lifetime == Lifetime::Persistent || self.pending.len() >= PENDING_BYTES_MAX {
            if let Err(error) = self.flush() {
                // Not appended: the records pending before it stay pending, it goes.
                self.pending.truncate(pending_before);
                self.bytes = bytes_before;
                self.shrink_pending();
                return Err(error);
            }
        }
        Ok(RecordRef {
            offset,
            payload_bytes,
        })
    }

    /// Writes a record too large to gather straight to the file, after what is pending.
    /// On failure the file is cut back to what it held and nothing was appended.
    fn write_large(&mut self, header: &[u8], parts: &[&[u8]], record_bytes: usize) -> Result<()> {
        self.flush()?;
        self.tidy()?;
        let mut at = self.written;
        let mut written = Ok(());
        for part in std::iter::once(header).chain(parts.iter().copied()) {
            written = self.file.write_all_at(part, at);
            if written.is_err() {
                break;
            }
            at += part.len() as u64;
        }
        if let Err(error) = written {
            self.untidy = true;
            let _ = self.tidy();
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: error,
            });
        }
        crate::write_meter::written(record_bytes as u64);
        self.bytes += record_bytes as u64;
        self.written = self.bytes;
        Ok(())
    }

    /// Writes the pending records to the file. On failure they stay pending, the file is
    /// cut back to what it held, and the error is returned (a later flush retries).
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.tidy()?;
        if let Err(error) = self.file.write_all_at(&self.pending, self.written) {
            // Part of it may be in the file: cut it, now or before the next write.
            self.untidy = true;
            let _ = self.tidy();
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: error,
            });
        }
        crate::write_meter::written(self.pending.len() as u64);
        self.written = self.bytes;
        self.pending.clear();
        self.shrink_pending();
        Ok(())
    }

    /// Cuts what a failed write left after the written records.
    fn tidy(&mut self) -> Result<()> {
        if self.untidy {
            self.file
                .set_len(self.written)
                .map_err(StoreError::io(&self.path))?;
            self.untidy = false;
        }
        Ok(())
    }

    fn shrink_pending(&mut self) {
        if self.pending.capacity() > 4 * PENDING_BYTES_MAX
            && self.pending.len() <= PENDING_BYTES_MAX
        {
            self.pending.shrink_to(PENDING_BYTES_MAX);
        }
    }

    /// fsyncs the file: every persistent record appended so far is durable once this
    /// returns (they are written when appended; transient records may still be pending,
    /// which nothing needs to be durable).
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(StoreError::io(&self.path))
    }

    /// Bytes in the file: records at or after this offset are still pending.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// `len` bytes from `offset` of the records still pending (`offset` at or after
    /// [`SegmentWriter::written`]); None if they are not all there.
    pub fn pending_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let from = usize::try_from(offset.checked_sub(self.written)?).ok()?;
        self.pending.get(from..from.checked_add(len)?)
    }
}
