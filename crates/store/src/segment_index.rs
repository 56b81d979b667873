//! A sealed segment's index (`<n>.idx`): how many records the segment holds, where they
//! end, and which of them are transient. It is written when the segment is sealed, after
//! the segment's fsync, so that opening a log reads a few bytes per sealed segment instead
//! of every record: restart time depends on the number of segments, not of messages.
//!
//! The index is a cache of what a scan would find. It is not fsynced; it carries its own
//! CRC, and one that is missing, torn, or does not match its segment's length is ignored
//! (the segment is scanned instead, and the index rewritten).

use std::fs;
use std::path::Path;

use crate::error::{Result, StoreError};

const INDEX_MAGIC: &[u8; 8] = b"WHARFIDX";
const INDEX_VERSION: u32 = 1;
/// Magic, version, valid bytes, record count, transient count.
const FIXED_BYTES: usize = 8 + 4 + 8 + 4 + 4;

/// What a sealed segment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    /// Where the records end: the segment's length.
    pub valid_bytes: u64,
    pub records: u32,
    /// Offsets of the transient records (dropped at recovery).
    pub transient: Vec<u32>,
}

impl SegmentIndex {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_BYTES + 4 * self.transient.len() + 4);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_be_bytes());
        out.extend_from_slice(&self.valid_bytes.to_be_bytes());
        out.extend_from_slice(&self.records.to_be_bytes());
        out.extend_from_slice(&(self.transient.len() as u32).to_be_bytes());
        for offset in &self.transient {
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out.extend_from_slice(&crc32c::crc32c(&out).to_be_bytes());
        out
    }

    /// Decodes an index; None (with the reason) if it is not a valid one.
    fn decode(bytes: &[u8]) -> std::result::Result<SegmentIndex, &'static str> {
        let (body, crc) = bytes
            .split_last_chunk::<4>()
            .ok_or("shorter than an index")?;
        if body.len() < FIXED_BYTES || &body[..8] != INDEX_MAGIC {
            return Err("not an index");
        }
        if crc32c::crc32c(body) != u32::from_be_bytes(*crc) {
            return Err("CRC mismatch");
        }
        let u32_at = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().expect("4 bytes"));
        if u32_at(8) != INDEX_VERSION {
            return Err("unknown index version");
        }
        let valid_bytes = u64::from_be_bytes(body[12..20].try_into().expect("8 bytes"));
        let records = u32_at(20);
        let transient_count = u32_at(24) as usize;
        let offsets = &body[FIXED_BYTES..];
        if offsets.len() != transient_count * 4 || transient_count > records as usize {
            return Err("inconsistent counts");
        }
        Ok(SegmentIndex {
            valid_bytes,
            records,
            transient: offsets
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        })
    }

    /// Writes the index beside its segment (a temporary file renamed into place, so a
    /// reader sees the old file or the whole new one).
    pub fn write(&self, path: &Path) -> Result<()> {
        let temporary = path.with_extension("idx.tmp");
        fs::write(&temporary, self.encode()).map_err(StoreError::io(&temporary))?;
        fs::rename(&temporary, path).map_err(StoreError::io(path))
    }

    /// Reads the index of a segment whose file is `segment_bytes` long. None if there is
    /// none or it cannot be trusted (logged): the caller scans the segment instead.
    pub fn read(path: &Path, segment_bytes: u64) -> Option<SegmentIndex> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "cannot read a segment index; scanning the segment");
                return None;
            }
        };
        match SegmentIndex::decode(&bytes) {
            Ok(index) if index.valid_bytes == segment_bytes => Some(index),
            Ok(_) => {
                tracing::warn!(file = %path.display(), "segment index does not match its segment's length; scanning the segment");
                None
            }
            Err(reason) => {
                tracing::warn!(file = %path.display(), reason, "ignoring a damaged segment index; scanning the segment");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_dir::tests::TempDir;

    fn sample() -> SegmentIndex {
        SegmentIndex {
            valid_bytes: 8_388_000,
            records: 7_000,
            transient: vec![16, 1_216, 40_000],
        }
    }

    #[test]
    fn round_trips() {
        let dir = TempDir::new("idx");
        fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("00000001.idx");
        sample().write(&path).unwrap();
        assert_eq!(SegmentIndex::read(&path, 8_388_000), Some(sample()));
        assert!(!dir.0.join("00000001.idx.tmp").exists());
    }

    #[test]
    fn missing_damaged_or_mismatched_indexes_are_ignored() {
        let dir = TempDir::new("idx-bad");
        fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("00000001.idx");
        assert_eq!(SegmentIndex::read(&path, 100), None, "missing");
        sample().write(&path).unwrap();
        assert_eq!(SegmentIndex::read(&path, 100), None, "another length");
        let good = fs::read(&path).unwrap();
        for at in [0, 10, 14, 22, 26, 30, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            fs::write(&path, &bad).unwrap();
            assert_eq!(SegmentIndex::read(&path, 8_388_000), None, "flip at {at}");
        }
        for len in [0, 3, 4, 20, good.len() - 1] {
            fs::write(&path, &good[..len]).unwrap();
            assert_eq!(SegmentIndex::read(&path, 8_388_000), None, "cut at {len}");
        }
    }
}
