//! Segment files: the append-only logs that hold a queue's messages. A segment starts with
//! a header naming the format; then records, each a length word (the payload length, and
//! in its top bit whether the record is transient), a CRC32C of the length word and the
//! payload, and the payload. Reading checks the CRC; opening the last segment of a queue
//! after a crash cuts a torn or corrupt tail and reports how much was cut.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

pub const SEGMENT_MAGIC: &[u8; 8] = b"WHARFSEG";
/// Version 1 (development builds before the transient flag) is not read.
pub const SEGMENT_VERSION: u32 = 2;
/// Magic, version, and 4 reserved bytes.
pub const SEGMENT_HEADER_BYTES: u32 = 16;
/// Length and CRC before each payload.
pub const RECORD_HEADER_BYTES: u32 = 8;
/// No single record may be larger than this (a corrupt length must not allocate 4 GiB).
pub const RECORD_BYTES_MAX: u32 = 512 * 1024 * 1024;
/// The top bit of a record's length word: the record does not outlive a restart.
const TRANSIENT_BIT: u32 = 1 << 31;

/// Whether a record is kept across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Kept until acknowledged, restarts included.
    Persistent,
    /// Dropped at the next start (a transient message that went to disk for lack of memory).
    Transient,
}

/// A record's header: its length word and the CRC32C over that word and the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_bytes: u32,
    pub lifetime: Lifetime,
    pub crc: u32,
}

impl RecordHeader {
    pub fn decode(bytes: &[u8; RECORD_HEADER_BYTES as usize]) -> RecordHeader {
        let word = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
        RecordHeader {
            payload_bytes: word & !TRANSIENT_BIT,
            lifetime: if word & TRANSIENT_BIT == 0 {
                Lifetime::Persistent
            } else {
                Lifetime::Transient
            },
            crc: u32::from_be_bytes(bytes[4..].try_into().expect("4 bytes")),
        }
    }

    fn length_word(payload_bytes: u32, lifetime: Lifetime) -> [u8; 4] {
        let bit = match lifetime {
            Lifetime::Persistent => 0,
            Lifetime::Transient => TRANSIENT_BIT,
        };
        (payload_bytes | bit).to_be_bytes()
    }

    fn checksum(payload_bytes: u32, lifetime: Lifetime, payload: &[u8]) -> u32 {
        let word = Self::length_word(payload_bytes, lifetime);
        crc32c::crc32c_append(crc32c::crc32c(&word), payload)
    }

    /// Whether `payload` is what this header describes.
    pub fn verifies(&self, payload: &[u8]) -> bool {
        Self::checksum(self.payload_bytes, self.lifetime, payload) == self.crc
    }
}

/// One record's place in its segment: the byte offset of its record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordRef {
    pub offset: u32,
    pub payload_bytes: u32,
}

/// What scanning a segment found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<RecordRef>,
    /// Offsets of the transient records among them.
    pub transient: Vec<u32>,
    /// Where the valid records end.
    pub valid_bytes: u64,
    /// Bytes after the last valid record (a torn or corrupt tail).
    pub invalid_bytes: u64,
}

pub fn segment_header() -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
    header
}

/// Checks a segment's header: refuses a file that is not a segment, or of a newer format.
pub fn check_header(path: &Path, file: &File) -> Result<()> {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| StoreError::NotWharf {
            path: path.to_path_buf(),
            reason: "too short to be a segment".into(),
        })?;
    if &header[..8] != SEGMENT_MAGIC {
        return Err(StoreError::NotWharf {
            path: path.to_path_buf(),
            reason: "it does not start with a segment header".into(),
        });
    }
    let version = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
    if version > SEGMENT_VERSION {
        return Err(StoreError::NewerFormat {
            path: path.to_path_buf(),
            found: version,
            supported: SEGMENT_VERSION,
        });
    }
    if version < SEGMENT_VERSION {
        return Err(StoreError::NotWharf {
            path: path.to_path_buf(),
            reason: format!(
                "segment format {version} was written by a development build and is not read by this one"
            ),
        });
    }
    Ok(())
}

/// Reads every record of a segment, verifying each CRC, and stops at the first record that
/// is short or does not verify. Reads sequentially through a large buffer: a segment costs
/// a few dozen read calls, not two per record.
pub fn scan(path: &Path, file: &File) -> Result<Scan> {
    use std::io::{BufReader, Read, Seek, SeekFrom};
    check_header(path, file)?;
    let len = file.metadata().map_err(StoreError::io(path))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader
        .seek(SeekFrom::Start(u64::from(SEGMENT_HEADER_BYTES)))
        .map_err(StoreError::io(path))?;
    let mut scan = Scan::default();
    let mut offset = u64::from(SEGMENT_HEADER_BYTES);
    let mut payload = Vec::new();
    while offset + u64::from(RECORD_HEADER_BYTES) <= len {
        let mut bytes = [0u8; RECORD_HEADER_BYTES as usize];
        reader
            .read_exact(&mut bytes)
            .map_err(StoreError::io(path))?;
        let header = RecordHeader::decode(&bytes);
        let payload_bytes = header.payload_bytes;
        let end = offset + u64::from(RECORD_HEADER_BYTES) + u64::from(payload_bytes);
        if payload_bytes > RECORD_BYTES_MAX || end > len {
            break;
        }
        payload.resize(payload_bytes as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(StoreError::io(path))?;
        if !header.verifies(&payload) {
            break;
        }
        scan.records.push(RecordRef {
            offset: offset as u32,
            payload_bytes,
        });
        if header.lifetime == Lifetime::Transient {
            scan.transient.push(offset as u32);
        }
        offset = end;
    }
    scan.valid_bytes = offset.min(len);
    scan.invalid_bytes = len - scan.valid_bytes;
    Ok(scan)
}

/// Reads one record's payload, checking its CRC.
pub fn read_record(path: &Path, file: &File, record: RecordRef) -> Result<Vec<u8>> {
    let mut bytes = [0u8; RECORD_HEADER_BYTES as usize];
    file.read_exact_at(&mut bytes, u64::from(record.offset))
        .map_err(StoreError::io(path))?;
    let header = RecordHeader::decode(&bytes);
    let payload_bytes = header.payload_bytes;
    let corrupt = |reason: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: u64::from(record.offset),
        reason: reason.to_string(),
    };
    if payload_bytes != record.payload_bytes {
        return Err(corrupt("record length changed on disk"));
    }
    let mut payload = vec![0u8; payload_bytes as usize];
    file.read_exact_at(&mut payload, u64::from(record.offset + RECORD_HEADER_BYTES))
        .map_err(StoreError::io(path))?;
    if !header.verifies(&payload) {
        return Err(corrupt("CRC mismatch"));
    }
    Ok(payload)
}

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
        let payload_bytes = u32::try_from(payload.len())
            .ok()
            .filter(|n| *n <= RECORD_BYTES_MAX)
            .ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                offset: self.bytes,
                reason: format!("a record of {} bytes is over the limit", payload.len()),
            })?;
        let offset = u32::try_from(self.bytes).map_err(|_| StoreError::Corrupt {
            path: self.path.clone(),
            offset: self.bytes,
            reason: "segment over 4 GiB".into(),
        })?;
        let (pending_before, bytes_before) = (self.pending.len(), self.bytes);
        let record_bytes = payload.len() + RECORD_HEADER_BYTES as usize;
        self.pending.reserve(record_bytes);
        self.pending
            .extend_from_slice(&RecordHeader::length_word(payload_bytes, lifetime));
        self.pending.extend_from_slice(
            &RecordHeader::checksum(payload_bytes, lifetime, payload).to_be_bytes(),
        );
        self.pending.extend_from_slice(payload);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_dir::tests::TempDir;

    fn write_segment(path: &Path, payloads: &[&[u8]]) -> Vec<RecordRef> {
        let mut writer = SegmentWriter::create(path.to_path_buf()).unwrap();
        let refs = payloads
            .iter()
            .map(|p| writer.append(p, Lifetime::Persistent).unwrap())
            .collect();
        writer.flush().unwrap();
        writer.sync().unwrap();
        refs
    }

    #[test]
    fn append_scan_and_read_back() {
        let dir = TempDir::new("seg");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("1.seg");
        let refs = write_segment(&path, &[b"one", b"", b"three"]);
        let file = File::open(&path).unwrap();
        let scan = scan(&path, &file).unwrap();
        assert_eq!(scan.records, refs);
        assert_eq!(scan.invalid_bytes, 0);
        assert_eq!(read_record(&path, &file, refs[0]).unwrap(), b"one");
        assert_eq!(read_record(&path, &file, refs[1]).unwrap(), b"");
        assert_eq!(read_record(&path, &file, refs[2]).unwrap(), b"three");
    }

    #[test]
    fn a_torn_tail_is_found_and_cut() {
        let dir = TempDir::new("seg-torn");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("1.seg");
        let refs = write_segment(&path, &[b"kept", b"also kept", b"torn record"]);
        let full = std::fs::metadata(&path).unwrap().len();
        // Cut the last record in the middle of its payload.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(full - 4).unwrap();
        let file = File::open(&path).unwrap();
        let found = scan(&path, &file).unwrap();
        assert_eq!(found.records, refs[..2].to_vec());
        assert_eq!(found.valid_bytes, u64::from(refs[2].offset));
        assert_eq!(found.invalid_bytes, full - 4 - u64::from(refs[2].offset));
        // Reopening for append cuts the tail; the next record goes where the torn one was.
        let mut writer = SegmentWriter::reopen(path.clone(), found.valid_bytes).unwrap();
        let next = writer.append(b"after", Lifetime::Persistent).unwrap();
        assert_eq!(next.offset, refs[2].offset);
        let file = File::open(&path).unwrap();
        assert_eq!(scan(&path, &file).unwrap().records.len(), 3);
    }

    #[test]
    fn a_flipped_byte_stops_the_scan_and_fails_the_read() {
        let dir = TempDir::new("seg-flip");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("1.seg");
        let refs = write_segment(&path, &[b"first", b"second", b"third"]);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = (refs[1].offset + RECORD_HEADER_BYTES + 2) as usize;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let found = scan(&path, &file).unwrap();
        assert_eq!(found.records, refs[..1].to_vec());
        let err = read_record(&path, &file, refs[1]).unwrap_err();
        assert!(err.to_string().contains("CRC mismatch"), "{err}");
    }

    #[test]
    fn a_corrupt_length_does_not_allocate_it() {
        let dir = TempDir::new("seg-len");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("1.seg");
        let refs = write_segment(&path, &[b"x"]);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = refs[0].offset as usize;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        assert!(scan(&path, &file).unwrap().records.is_empty());
    }

    #[test]
    fn foreign_and_newer_files_are_refused() {
        let dir = TempDir::new("seg-foreign");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("1.seg");
        std::fs::write(&path, b"PK\x03\x04 a zip file, not a segment").unwrap();
        let err = scan(&path, &File::open(&path).unwrap()).unwrap_err();
        assert!(matches!(err, StoreError::NotWharf { .. }), "{err}");
        let mut header = segment_header();
        header[8..12].copy_from_slice(&(SEGMENT_VERSION + 1).to_be_bytes());
        std::fs::write(&path, header).unwrap();
        let err = scan(&path, &File::open(&path).unwrap()).unwrap_err();
        assert!(matches!(err, StoreError::NewerFormat { .. }), "{err}");
        std::fs::write(&path, b"WHA").unwrap();
        assert!(scan(&path, &File::open(&path).unwrap()).is_err());
        header[8..12].copy_from_slice(&(SEGMENT_VERSION - 1).to_be_bytes());
        std::fs::write(&path, header).unwrap();
        let err = scan(&path, &File::open(&path).unwrap()).unwrap_err();
        assert!(err.to_string().contains("development build"), "{err}");
    }

    #[test]
    fn transient_records_are_gathered_and_persistent_ones_written_at_once() {
        let dir = TempDir::new("seg-pending");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("1.seg");
        let mut writer = SegmentWriter::create(path.clone()).unwrap();
        let file_len = || std::fs::metadata(&path).unwrap().len();
        writer.append(b"spilled", Lifetime::Transient).unwrap();
        assert_eq!(file_len(), u64::from(SEGMENT_HEADER_BYTES), "still pending");
        writer.append(b"kept", Lifetime::Persistent).unwrap();
        assert_eq!(file_len(), writer.bytes, "written with the one before it");
        writer
            .append(b"spilled again", Lifetime::Transient)
            .unwrap();
        writer.flush().unwrap();
        assert_eq!(file_len(), writer.bytes);
        let file = File::open(&path).unwrap();
        assert_eq!(scan(&path, &file).unwrap().records.len(), 3);
    }

    #[test]
    fn transient_records_are_flagged_and_the_flag_is_checksummed() {
        let dir = TempDir::new("seg-transient");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("1.seg");
        let mut writer = SegmentWriter::create(path.clone()).unwrap();
        let kept = writer.append(b"kept", Lifetime::Persistent).unwrap();
        let dropped = writer.append(b"dropped", Lifetime::Transient).unwrap();
        writer.flush().unwrap();
        let file = File::open(&path).unwrap();
        let found = scan(&path, &file).unwrap();
        assert_eq!(found.records, vec![kept, dropped]);
        assert_eq!(found.transient, vec![dropped.offset]);
        assert_eq!(read_record(&path, &file, dropped).unwrap(), b"dropped");
        // Clearing the flag by a bit flip must not make a transient record persistent.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[dropped.offset as usize] ^= 0x80;
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(scan(&path, &file).unwrap().records, vec![kept]);
    }
}
