//! Reading a whole segment back: every record checked, damage stepped over.
//!
//! A record that does not verify (its header check, its length, or its payload CRC) is
//! damage. In format 3 the scan then looks for the next record start: the next offset
//! whose 12 header bytes check and whose payload verifies. A false start needs both a
//! 32-bit header check and a 32-bit CRC to match by chance, so only the damaged bytes are
//! lost, and every record after them is found. Damage that runs to the end of the file
//! is the segment's tail: on the newest segment, a write a crash tore. Format 2 records
//! have no header check, so a scan of one stops at its first damaged record.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{
    check_header, Format, Lifetime, RecordHeader, RecordRef, RECORD_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
use crate::error::{Result, StoreError};

/// Damaged bytes between two intact records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Where the damage starts: the offset of the first record that did not verify.
    pub offset: u32,
    pub bytes: u32,
    /// Records known to have been there (headers that still check, or the one whose
    /// payload failed); at least one.
    pub records: u32,
}

impl Damage {
    pub fn end(&self) -> u32 {
        self.offset + self.bytes
    }
}

/// What scanning a segment found.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    pub format: Format,
    pub records: Vec<RecordRef>,
    /// Offsets of the transient records among them.
    pub transient: Vec<u32>,
    /// Damage with intact records after it, oldest first.
    pub damaged: Vec<Damage>,
    /// Where the valid records end (before the tail).
    pub valid_bytes: u64,
    /// Bytes after the last valid record (a torn or damaged tail).
    pub invalid_bytes: u64,
    /// Records known to have been in the tail, as in [`Damage::records`] (0 for a torn
    /// one whose header did not make it).
    pub tail_records: u32,
}

/// What is at an offset.
enum Probe {
    End,
    Record(RecordHeader, u64),
    /// Not a record that verifies; `header_checks` when its header still does.
    Bad {
        header_checks: bool,
    },
}

/// Reads a segment sequentially through a large buffer: a scan costs a few dozen read
/// calls, not two per record, and the search for the next record start reads no byte
/// twice from the file.
struct Reader<'a> {
    file: &'a File,
    path: &'a Path,
    len: u64,
    start: u64,
    buffer: Vec<u8>,
}

const BUFFER_BYTES: usize = 1 << 20;

impl Reader<'_> {
    /// `[offset, offset + n)`, which must lie within the file.
    fn get(&mut self, offset: u64, n: usize) -> Result<&[u8]> {
        let end = offset + n as u64;
        if offset < self.start || end > self.start + self.buffer.len() as u64 {
            let want = (self.len - offset).min(BUFFER_BYTES.max(n) as u64) as usize;
            self.buffer.resize(want, 0);
            self.file
                .read_exact_at(&mut self.buffer, offset)
                .map_err(StoreError::io(self.path))?;
            self.start = offset;
        }
        let from = (offset - self.start) as usize;
        Ok(&self.buffer[from..from + n])
    }

    fn probe(&mut self, format: Format, offset: u64) -> Result<Probe> {
        if offset == self.len {
            return Ok(Probe::End);
        }
        let header_bytes = format.record_header_bytes();
        if offset + u64::from(header_bytes) > self.len {
            return Ok(Probe::Bad {
                header_checks: false,
            });
        }
        let Some(header) = RecordHeader::decode(format, self.get(offset, header_bytes as usize)?)
        else {
            return Ok(Probe::Bad {
                header_checks: false,
            });
        };
        let start = offset + u64::from(header_bytes);
        let end = start + u64::from(header.payload_bytes);
        // Only a format 3 header that checks says a record started here.
        let header_checks = format == Format::V3;
        if header.payload_bytes > RECORD_BYTES_MAX || end > self.len {
            return Ok(Probe::Bad { header_checks });
        }
        if !header.verifies(self.get(start, header.payload_bytes as usize)?) {
            return Ok(Probe::Bad { header_checks });
        }
        Ok(Probe::Record(header, end))
    }

    /// The next record start at or after `from`, and how many headers that checked
    /// (records whose payload did not verify) were passed on the way.
    fn resync(&mut self, from: u64) -> Result<(Option<u64>, u32)> {
        let header_bytes = u64::from(Format::V3.record_header_bytes());
        let mut passed = 0;
        let mut offset = from;
        while offset + header_bytes <= self.len {
            let candidate = self.get(offset, header_bytes as usize)?;
            if RecordHeader::decode(Format::V3, candidate).is_some() {
                match self.probe(Format::V3, offset)? {
                    Probe::Record(..) => return Ok((Some(offset), passed)),
                    _ => passed += 1,
                }
            }
            offset += 1;
        }
        Ok((None, passed))
    }
}

/// Reads every record of a segment, verifying each, and steps over damage (see the
/// module's documentation).
pub fn scan(path: &Path, file: &File) -> Result<Scan> {
    let format = check_header(path, file)?;
    let len = file.metadata().map_err(StoreError::io(path))?.len();
    let mut reader = Reader {
        file,
        path,
        len,
        start: 0,
        buffer: Vec::new(),
    };
    let mut scan = Scan {
        format,
        records: Vec::new(),
        transient: Vec::new(),
        damaged: Vec::new(),
        valid_bytes: 0,
        invalid_bytes: 0,
        tail_records: 0,
    };
    let mut offset = u64::from(SEGMENT_HEADER_BYTES);
    // Damage seen and not yet followed by a record: where it started, records in it.
    let mut damage: Option<(u64, u32)> = None;
    loop {
        match reader.probe(format, offset)? {
            Probe::End => break,
            Probe::Record(header, end) => {
                if let Some((start, records)) = damage.take() {
                    scan.damaged.push(Damage {
                        offset: start as u32,
                        bytes: (offset - start) as u32,
                        records: records.max(1),
                    });
                }
                scan.records.push(RecordRef {
                    offset: offset as u32,
                    payload_bytes: header.payload_bytes,
                });
                if header.lifetime == Lifetime::Transient {
                    scan.transient.push(offset as u32);
                }
                offset = end;
            }
            Probe::Bad { header_checks } => {
                let (_, records) = damage.get_or_insert((offset, 0));
                *records += u32::from(header_checks);
                if format != Format::V3 {
                    break;
                }
                let (next, passed) = reader.resync(offset + 1)?;
                *records += passed;
                match next {
                    Some(next) => offset = next,
                    None => break,
                }
            }
        }
    }
    scan.valid_bytes = damage.map_or(offset, |(start, _)| start);
    scan.invalid_bytes = len - scan.valid_bytes;
    scan.tail_records = damage.map_or(0, |(_, records)| records);
    Ok(scan)
}
