//! Bytes of one segment read ahead of [`super::QueueLog::next`]: reading a run of records
//! costs one `pread` per buffer, not two per record. Records never change once written, so
//! the buffer stays valid while its segment exists.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Result, StoreError};

/// How much is read ahead at a time.
pub(super) const READ_AHEAD_BYTES: usize = 256 * 1024;

#[derive(Default)]
pub(super) struct ReadAhead {
    segment: u32,
    /// File offset of `bytes[0]`.
    start: u64,
    bytes: Vec<u8>,
}

impl ReadAhead {
    fn get(&self, segment: u32, offset: u64, len: usize) -> Option<&[u8]> {
        if segment != self.segment || offset < self.start {
            return None;
        }
        let from = usize::try_from(offset - self.start).ok()?;
        self.bytes.get(from..from.checked_add(len)?)
    }

    /// Reads `[offset, offset + len)` of the segment, refilling the buffer from `offset`
    /// (up to `limit`, the end of the segment's records in the file) when it does not
    /// hold them. `len` is at most [`READ_AHEAD_BYTES`]: larger reads go to the file.
    pub fn read(
        &mut self,
        file: &File,
        path: &Path,
        segment: u32,
        offset: u64,
        len: usize,
        limit: u64,
    ) -> Result<&[u8]> {
        debug_assert!(len <= READ_AHEAD_BYTES);
        if self.get(segment, offset, len).is_none() {
            let want = (limit.saturating_sub(offset) as usize)
                .min(READ_AHEAD_BYTES)
                .max(len);
            self.bytes.resize(want, 0);
            if let Err(error) = file.read_exact_at(&mut self.bytes, offset) {
                self.bytes.clear();
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source: error,
                });
            }
            self.segment = segment;
            self.start = offset;
        }
        Ok(self.get(segment, offset, len).expect("filled above"))
    }

    pub fn forget(&mut self, segment: u32) {
        if self.segment == segment {
            self.bytes.clear();
        }
    }
}
