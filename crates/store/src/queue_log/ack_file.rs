//! A segment's ack file (`<n>.ack`): the offsets of its acknowledged records, 4 bytes
//! each, appended. Acks are gathered in memory and written in batches; a write that fails
//! (a full disk) keeps its batch for the next try and cuts what it may have written, so
//! the file is always a whole number of entries and never ends in a part of one that a
//! later entry would be misread after.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use crate::error::{Result, StoreError};

/// Bytes of one entry.
const ENTRY_BYTES: u64 = 4;

#[derive(Debug)]
pub(super) struct AckFile {
    path: PathBuf,
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
    pub fn new(path: PathBuf) -> AckFile {
        AckFile {
            path,
            file: None,
            valid_bytes: 0,
            untidy: false,
            unwritten: Vec::new(),
        }
    }

    /// Reads an existing ack file (none: no acks). A torn last entry (fewer than 4 bytes,
    /// a crash mid-write) is ignored, and cut before anything is appended after it.
    pub fn read(path: PathBuf) -> Result<(AckFile, HashSet<u32>)> {
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let offsets = bytes
            .chunks_exact(ENTRY_BYTES as usize)
            .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let whole = bytes.len() as u64 / ENTRY_BYTES * ENTRY_BYTES;
        let file = AckFile {
            path,
            file: None,
            valid_bytes: whole,
            untidy: whole != bytes.len() as u64,
            unwritten: Vec::new(),
        };
        Ok((file, offsets))
    }

    /// Records an ack, to be written by [`AckFile::write`].
    pub fn push(&mut self, offset: u32) {
        self.unwritten.extend_from_slice(&offset.to_be_bytes());
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
        let mut bytes = 16u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 0]);
        fs::write(&path, &bytes).unwrap();
        let (mut acks, offsets) = AckFile::read(path.clone()).unwrap();
        assert_eq!(offsets, HashSet::from([16]));
        acks.push(40);
        acks.write().unwrap();
        let (_, offsets) = AckFile::read(path.clone()).unwrap();
        assert_eq!(
            offsets,
            HashSet::from([16, 40]),
            "40 is not misread after the torn entry"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), 8);
    }
}
