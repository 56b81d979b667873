//! Segment files: the append-only logs that hold a queue's messages. A segment starts with
//! a header naming the format; then records, each a length word (the payload length, and
//! in its top bit whether the record is transient), a CRC32C of the length word and the
//! payload, a check of those 8 header bytes (format 3), and the payload.
//!
//! The header check is what lets reading resynchronise past damage: a damaged length
//! word is caught before it is followed, and the next record is found by looking for the
//! next header whose check (and then payload CRC) verifies, so damage loses the records it
//! hit and no others ([`scan`]).

mod scan;
mod writer;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Result, StoreError};

pub use scan::{scan, Damage, Scan};
pub use writer::SegmentWriter;

pub const SEGMENT_MAGIC: &[u8; 8] = b"WHARFSEG";
/// The format written. Version 2 (no header check) is still read; version 1
/// (development builds before the transient flag) is not.
pub const SEGMENT_VERSION: u32 = 3;
/// Magic, version, and 4 reserved bytes.
pub const SEGMENT_HEADER_BYTES: u32 = 16;
/// Record header bytes in the format written: length word, CRC, header check.
pub const RECORD_HEADER_BYTES: u32 = Format::V3.record_header_bytes();
/// No single record may be larger than this (a corrupt length must not allocate 4 GiB).
pub const RECORD_BYTES_MAX: u32 = 512 * 1024 * 1024;
/// The top bit of a record's length word: the record does not outlive a restart.
const TRANSIENT_BIT: u32 = 1 << 31;
/// Where the header check's CRC starts, so that 8 zero bytes do not check.
const HEADER_CHECK_SEED: u32 = 0x5752_4543;

/// A segment's record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Records without a header check: reading cannot resynchronise past a damaged one.
    V2,
    /// Records with a header check.
    V3,
}

impl Format {
    pub const fn record_header_bytes(self) -> u32 {
        match self {
            Format::V2 => 8,
            Format::V3 => 12,
        }
    }
}

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
    /// Decodes a record header of `format` from the start of `bytes`; None if `bytes` is
    /// too short or the header check fails (damage, or not a record start at all).
    pub fn decode(format: Format, bytes: &[u8]) -> Option<RecordHeader> {
        let bytes = bytes.get(..format.record_header_bytes() as usize)?;
        if format == Format::V3 && bytes[8..12] != header_check(&bytes[..8]).to_be_bytes() {
            return None;
        }
        let word = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
        Some(RecordHeader {
            payload_bytes: word & !TRANSIENT_BIT,
            lifetime: if word & TRANSIENT_BIT == 0 {
                Lifetime::Persistent
            } else {
                Lifetime::Transient
            },
            crc: u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes")),
        })
    }

    /// The header of a record of the written format whose payload is `parts`, in order.
    fn encode(parts: &[&[u8]], lifetime: Lifetime) -> [u8; RECORD_HEADER_BYTES as usize] {
        let payload_bytes = parts.iter().map(|p| p.len()).sum::<usize>() as u32;
        let word = Self::length_word(payload_bytes, lifetime);
        let crc = parts.iter().fold(crc32c::crc32c(&word), |crc, part| {
            crc32c::crc32c_append(crc, part)
        });
        let mut out = [0u8; RECORD_HEADER_BYTES as usize];
        out[..4].copy_from_slice(&word);
        out[4..8].copy_from_slice(&crc.to_be_bytes());
        let check = header_check(&out[..8]);
        out[8..12].copy_from_slice(&check.to_be_bytes());
        out
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

fn header_check(first_eight: &[u8]) -> u32 {
    crc32c::crc32c_append(HEADER_CHECK_SEED, first_eight)
}

/// One record's place in its segment: the byte offset of its record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordRef {
    pub offset: u32,
    pub payload_bytes: u32,
}

pub fn segment_header() -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
    header
}

/// Checks a segment's header and returns its format: a file too short for a header, or
/// whose header is damaged or of a development build's format, is
/// [`StoreError::Corrupt`] (unreadable: set aside by the log); one of a newer format is
/// [`StoreError::NewerFormat`] (readable by a newer Wharf: left alone).
pub fn check_header(path: &Path, file: &File) -> Result<Format> {
    let damaged = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    };
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| damaged("too short for a segment header".into()))?;
    if &header[..8] != SEGMENT_MAGIC {
        return Err(damaged(
            "damaged segment header: it does not start with WHARFSEG".into(),
        ));
    }
    match u32::from_be_bytes(header[8..12].try_into().expect("4 bytes")) {
        3 => Ok(Format::V3),
        2 => Ok(Format::V2),
        version if version > SEGMENT_VERSION => Err(StoreError::NewerFormat {
            path: path.to_path_buf(),
            found: version,
            supported: SEGMENT_VERSION,
        }),
        version => Err(damaged(format!(
            "segment format {version} was written by a development build and is not read by this one"
        ))),
    }
}

/// A format 2 record (no header check), as older Wharf wrote them: for tests that read
/// old segments.
#[cfg(test)]
pub(crate) fn format_2_record(payload: &[u8], lifetime: Lifetime) -> Vec<u8> {
    let payload_bytes = payload.len() as u32;
    let mut out = RecordHeader::length_word(payload_bytes, lifetime).to_vec();
    out.extend_from_slice(&RecordHeader::checksum(payload_bytes, lifetime, payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A format 2 segment's header.
#[cfg(test)]
pub(crate) fn format_2_header() -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = segment_header();
    header[8..12].copy_from_slice(&2u32.to_be_bytes());
    header
}

/// Reads one record's payload, checking its header and CRC.
pub fn read_record(path: &Path, file: &File, format: Format, record: RecordRef) -> Result<Vec<u8>> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: u64::from(record.offset),
        reason: reason.to_string(),
    };
    let header_bytes = format.record_header_bytes();
    let mut bytes = [0u8; 12];
    let bytes = &mut bytes[..header_bytes as usize];
    file.read_exact_at(bytes, u64::from(record.offset))
        .map_err(StoreError::io(path))?;
    let header =
        RecordHeader::decode(format, bytes).ok_or_else(|| corrupt("damaged record header"))?;
    if header.payload_bytes != record.payload_bytes {
        return Err(corrupt("record length changed on disk"));
    }
    let mut payload = vec![0u8; header.payload_bytes as usize];
    file.read_exact_at(&mut payload, u64::from(record.offset + header_bytes))
        .map_err(StoreError::io(path))?;
    if !header.verifies(&payload) {
        return Err(corrupt("CRC mismatch"));
    }
    Ok(payload)
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
        assert_eq!(
            read_record(&path, &file, Format::V3, refs[0]).unwrap(),
            b"one"
        );
        assert_eq!(read_record(&path, &file, Format::V3, refs[1]).unwrap(), b"");
        assert_eq!(
            read_record(&path, &file, Format::V3, refs[2]).unwrap(),
            b"three"
        );
    }

    #[test]
    fn a_torn_tail_is_found_and_cut() {
        let dir = TempDir::new("seg-torn");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("1.seg");
        let refs = write_segment(&path, &[b"kept", b"also kept", b"torn record"]);
        let full = std::fs::metadata(&path).unwrap().len();
        // Cut the last record in the middle of its payload.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
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
    fn a_flipped_byte_loses_only_its_record() {
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
        assert_eq!(found.records, vec![refs[0], refs[2]]);
        let damage = Damage {
            offset: refs[1].offset,
            bytes: refs[2].offset - refs[1].offset,
            records: 1,
        };
        assert_eq!(found.damaged, vec![damage]);
        assert_eq!(found.invalid_bytes, 0);
        let err = read_record(&path, &file, Format::V3, refs[1]).unwrap_err();
        assert!(err.to_string().contains("CRC mismatch"), "{err}");
    }

    #[test]
    fn damaged_lengths_and_runs_of_damage_are_stepped_over() {
        let dir = TempDir::new("seg-resync");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("1.seg");
        let payloads: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let slices: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let refs = write_segment(&path, &slices);
        let mut bytes = std::fs::read(&path).unwrap();
        // A length word made huge (record 3), and 40 bytes of noise across records 10-11.
        bytes[refs[3].offset as usize] ^= 0x10;
        let noise_at = refs[11].offset as usize - 20;
        for (i, b) in bytes[noise_at..noise_at + 40].iter_mut().enumerate() {
            *b ^= 0x5a ^ (i as u8);
        }
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let found = scan(&path, &file).unwrap();
        let expected: Vec<RecordRef> = refs
            .iter()
            .enumerate()
            .filter(|(i, _)| ![3, 10, 11].contains(i))
            .map(|(_, r)| *r)
            .collect();
        assert_eq!(found.records, expected);
        assert_eq!(found.damaged.len(), 2, "{:?}", found.damaged);
        assert_eq!(found.damaged[0].offset, refs[3].offset);
        assert_eq!(found.damaged[0].end(), refs[4].offset);
        assert_eq!(found.damaged[1].offset, refs[10].offset);
        assert_eq!(found.damaged[1].end(), refs[12].offset);
        assert_eq!(found.invalid_bytes, 0);
    }

    #[test]
    fn a_version_2_segment_is_read_up_to_its_first_damage() {
        let dir = TempDir::new("seg-v2");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("1.seg");
        // Format 2: an 8-byte record header, no header check.
        let mut bytes = format_2_header().to_vec();
        let mut offsets = Vec::new();
        for payload in [&b"one"[..], b"two", b"three"] {
            offsets.push(bytes.len() as u32);
            bytes.extend_from_slice(&format_2_record(payload, Lifetime::Persistent));
        }
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let found = scan(&path, &file).unwrap();
        assert_eq!(found.format, Format::V2);
        assert_eq!(found.records.len(), 3);
        let two = RecordRef {
            offset: offsets[1],
            payload_bytes: 3,
        };
        assert_eq!(read_record(&path, &file, Format::V2, two).unwrap(), b"two");
        bytes[offsets[1] as usize + 9] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let found = scan(&path, &File::open(&path).unwrap()).unwrap();
        assert_eq!(found.records.len(), 1);
        assert_eq!(found.valid_bytes, u64::from(offsets[1]));
    }

    #[test]
    fn foreign_damaged_and_newer_headers_are_told_apart() {
        let dir = TempDir::new("seg-foreign");
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("1.seg");
        std::fs::write(&path, b"PK\x03\x04 a zip file, not a segment").unwrap();
        let err = scan(&path, &File::open(&path).unwrap()).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { offset: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("damaged segment header"), "{err}");
        let mut header = segment_header();
        header[8..12].copy_from_slice(&(SEGMENT_VERSION + 1).to_be_bytes());
        std::fs::write(&path, header).unwrap();
        let err = scan(&path, &File::open(&path).unwrap()).unwrap_err();
        assert!(matches!(err, StoreError::NewerFormat { .. }), "{err}");
        std::fs::write(&path, b"WHA").unwrap();
        let err = scan(&path, &File::open(&path).unwrap()).unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
        header[8..12].copy_from_slice(&1u32.to_be_bytes());
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
        assert_eq!(
            read_record(&path, &file, Format::V3, dropped).unwrap(),
            b"dropped"
        );
        // Clearing the flag by a bit flip must not make a transient record persistent.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[dropped.offset as usize] ^= 0x80;
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(scan(&path, &file).unwrap().records, vec![kept]);
    }
}
