//! A segment's ack file (`<n>.ack`): the offsets of its acknowledged records, appended.
//! For a format 3 segment each entry is 8 bytes, the offset and a check of it, so that
//! garbage in the file (damage) is told from acks and ignored rather than taken as
//! acks that would delete unread messages; a format 2 segment's entries are the bare
//! 4-byte offset. Acks are gathered in memory and written in batches; a write that fails
//! (a full disk) keeps its batch for the next try and cuts what it may have written, so
//! the file is always a whole number of entries and never ends in a part of one that a
//! later entry would be misread after.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use crate::error::{Result, StoreError};
use crate::segment::Format;

/// Where an entry's check starts, so that zeros do not check.
const ENTRY_CHECK_SEED: u32 = 0x4143_4b53;

fn entry_check(offset: u32) -> u32 {
    crc32c::crc32c_append(ENTRY_CHECK_SEED, &offset.to_be_bytes())
}

/// Bytes of one entry in the ack file of a segment of `format`.
fn entry_bytes(format: Format) -> u64 {
    match format {
        Format::V2 => 4,
        Format::V3 => 8,
    }
}

/// What reading an ack file found.
pub(super) struct ReadAcks {
    pub file: AckFile,
    pub offsets: HashSet<u32>,
    /// Entries whose check failed: damage, ignored.
    pub damaged_entries: usize,
}

#[derive(Debug)]
pub(super) struct AckFile {
    path: PathBuf,
    format: Format,
    /// Opened at the first write.
    file: Option<File>,
    /// Bytes of whole entries in the file: where the next write goes.
    valid_bytes: u64,
    /// The file may hold bytes after `valid_bytes` (a torn entry from a crash, a failed
    /// write): they are cut before the next write.
    untidy: bool,
    /// Acks recorded but not yet written.
    unwritten: Vec<u8>,
}

impl AckFile {
    /// The ack file of a segment that has none yet.
    pub fn new(path: PathBuf, format: Format) -> AckFile {
        AckFile {
            path,
            format,
            file: None,
            valid_bytes: 0,
            untidy: false,
            unwritten: Vec::new(),
        }
    }

    /// Reads an existing ack file (none: no acks). A torn last entry (a crash mid-write)
    /// is ignored, and cut before anything is appended after it.
    pub fn read(path: PathBuf, format: Format) -> Result<ReadAcks> {
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let entry = entry_bytes(format);
        let mut offsets = HashSet::new();
        let mut damaged_entries = 0;
        for chunk in bytes.chunks_exact(entry as usize) {
            let offset = u32::from_be_bytes(chunk[..4].try_into().expect("4 bytes"));
            if format == Format::V3 && chunk[4..8] != entry_check(offset).to_be_bytes() {
                damaged_entries += 1;
                continue;
            }
            offsets.insert(offset);
        }
        let whole = bytes.len() as u64 / entry * entry;
        let file = AckFile {
            path,
            format,
            file: None,
            valid_bytes: whole,
            untidy: whole != bytes.len() as u64,
            unwritten: Vec::new(),
        };
        Ok(ReadAcks {
            file,
            offsets,
            damaged_entries,
        })
    }

    /// Records an ack, to be written by [`AckFile::write`].
    pub fn push(&mut self, offset: u32) {
        self.unwritten.extend_from_slice(&offset.to_be_bytes());
        if self.format == Format::V3 {
            self.unwritten
                .extend_from_slice(&entry_check(offset).to_be_bytes());
        }
    }

    pub fn unwritten_bytes(&self) -> usize {
        self.unwritten.len()
    }

    /// Appends the gathered acks (not synced). On failure they stay gathered and the file
    /// keeps only the entries it had.
    pub fn write(&mut self) -> Result<()> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(StoreError::io(path))?,
            ),
        };
        if self.untidy {
            file.set_len(self.valid_bytes)
                .map_err(StoreError::io(path))?;
            self.untidy = false;
        }
        if let Err(error) = file.write_all(&self.unwritten) {
            // Part of the batch may be in the file: cut it, now or before the next write.
            self.untidy = file.set_len(self.valid_bytes).is_err();
            return Err(StoreError::Io {
                path: path.clone(),
                source: error,
            });
        }
        crate::write_meter::written(self.unwritten.len() as u64);
        self.valid_bytes += self.unwritten.len() as u64;
        self.unwritten.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_dir::tests::TempDir;

    #[test]
    fn a_torn_entry_is_ignored_and_cut_before_the_next_write() {
        let dir = TempDir::new("ackfile-torn");
        fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("00000001.ack");
        let mut acks = AckFile::new(path.clone(), Format::V3);
        acks.push(16);
        acks.write().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 0]);
        fs::write(&path, &bytes).unwrap();
        let mut read = AckFile::read(path.clone(), Format::V3).unwrap();
        assert_eq!(read.offsets, HashSet::from([16]));
        read.file.push(40);
        read.file.write().unwrap();
        let read = AckFile::read(path.clone(), Format::V3).unwrap();
        assert_eq!(
            read.offsets,
            HashSet::from([16, 40]),
            "40 is not misread after the torn entry"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), 16);
    }

    #[test]
    fn garbage_entries_are_told_from_acks() {
        let dir = TempDir::new("ackfile-garbage");
        fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("00000001.ack");
        let mut acks = AckFile::new(path.clone(), Format::V3);
        acks.push(16);
        acks.push(130);
        acks.write().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        // Garbage after them, and a bit flipped in the first entry's offset.
        bytes.extend((0..800u32).map(|i| (i * 37 % 251) as u8));
        bytes[3] ^= 0x20;
        fs::write(&path, &bytes).unwrap();
        let read = AckFile::read(path, Format::V3).unwrap();
        assert_eq!(read.offsets, HashSet::from([130]));
        assert_eq!(read.damaged_entries, 101);
    }

    #[test]
    fn format_2_segments_keep_bare_offsets() {
        let dir = TempDir::new("ackfile-v2");
        fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("00000001.ack");
        fs::write(&path, [16u32.to_be_bytes(), 40u32.to_be_bytes()].concat()).unwrap();
        let mut read = AckFile::read(path.clone(), Format::V2).unwrap();
        assert_eq!(read.offsets, HashSet::from([16, 40]));
        read.file.push(64);
        read.file.write().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 12);
    }
}
