//! The replicated log of a cluster node, kept on its disk: the entries the consensus
//! library appends (opaque bytes here, indexed), the node's vote and the last commit it
//! heard of. The cluster crate owns one `RaftLog` and reaches it through its log-storage
//! adapter only; nothing else writes these files.
//!
//! `<data-dir>/raft/log` is append-only: a record is `[length u32][crc32c u32][index u64]
//! [payload]` (little-endian; the CRC covers the index and the payload). Every append is
//! fsynced before it is reported done, as Raft needs: a vote or an entry a node forgets
//! after a crash can elect two leaders or lose a committed change. At open, a record cut
//! short at the end (a crash mid-append) is dropped and logged; a damaged record with
//! whole ones after it refuses the start (the node's copy of the log is not to be trusted:
//! wipe the directory's `raft/` and let the node catch up from the others).
//!
//! Entries are kept in memory too: a metadata log is small, and the cluster purges it
//! behind each snapshot. Truncating the tail cuts the file; purging the head drops
//! entries from memory and rewrites the file once the dead prefix is most of it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};

use crate::data_dir::{sync_dir, write_atomically};
use crate::error::{Result, StoreError};

const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";
const PURGED_FILE: &str = "purged";
/// length, crc, index.
pub(crate) const HEADER_BYTES: usize = 16;
/// No entry is this large: a length beyond it is damage, not a record.
pub const ENTRY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The file is rewritten without its purged head once that head is this large and more
/// than half of the file.
const DEAD_BYTES_REWRITE: u64 = 4 * 1024 * 1024;

/// One entry as stored: where its record starts in the file, and its bytes.
#[derive(Debug, Clone)]
struct Stored {
    offset: u64,
    payload: Vec<u8>,
}

/// A node's Raft log, vote and commit mark. See the module comment.
#[derive(Debug)]
pub struct RaftLog {
    dir: PathBuf,
    file: File,
    entries: BTreeMap<u64, Stored>,
    /// Where the next record goes.
    end_offset: u64,
    /// The bytes before the first live record (purged entries still in the file).
    dead_bytes: u64,
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    /// The id of the last purged entry, as the caller encoded it.
    purged: Option<Vec<u8>>,
}

impl RaftLog {
    /// Opens (or creates) the log in `dir`, reading back what a previous run stored.
    pub fn open(dir: &Path) -> Result<RaftLog> {
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let log_path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(StoreError::io(&log_path))?;
        sync_dir(dir)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(StoreError::io(&log_path))?;
        let (entries, valid_bytes) = scan(&log_path, &bytes)?;
        if valid_bytes < bytes.len() as u64 {
            tracing::warn!(
                file = %log_path.display(),
                offset = valid_bytes,
                dropped_bytes = bytes.len() as u64 - valid_bytes,
                "the Raft log ends with an incomplete entry (a crash while it was written, \
                 before it was acknowledged); dropping it"
            );
            file.set_len(valid_bytes)
                .and_then(|()| file.sync_all())
                .map_err(StoreError::io(&log_path))?;
        }
        let purged = read_small(&dir.join(PURGED_FILE))?;
        let dead_bytes = entries.values().next().map_or(valid_bytes, |s| s.offset);
        Ok(RaftLog {
            dir: dir.to_path_buf(),
            file,
            entries,
            end_offset: valid_bytes,
            dead_bytes,
            vote: read_small(&dir.join(VOTE_FILE))?,
            committed: read_small(&dir.join(COMMITTED_FILE))?,
            purged,
        })
    }

    /// Whether anything was ever stored: a vote, an entry, or a purge.
    pub fn is_empty(&self) -> bool {
        self.vote.is_none() && self.entries.is_empty() && self.purged.is_none()
    }

    /// Appends entries (each after the last, in order) and fsyncs them.
    pub fn append(&mut self, entries: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<()> {
        let mut buffer = Vec::new();
        let mut added = Vec::new();
        let mut offset = self.end_offset;
        let mut next = self.last_index().map(|i| i + 1);
        for (index, payload) in entries {
            if let Some(expected) = next {
                if index != expected {
                    return Err(StoreError::Damaged {
                        path: self.log_path(),
                        reason: format!("entry {index} appended where {expected} was due"),
                    });
                }
            }
            next = Some(index + 1);
            let start = buffer.len();
            encode_record(&mut buffer, index, &payload);
            added.push((index, Stored { offset, payload }));
            offset += (buffer.len() - start) as u64;
        }
        if added.is_empty() {
            return Ok(());
        }
        let log_path = self.log_path();
        let written = self
            .file
            .write_all(&buffer)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            // Take back half a record, so that the next append does not follow damage.
            let _ = self
                .file
                .set_len(self.end_offset)
                .and_then(|()| self.file.sync_data());
            return Err(StoreError::Io {
                path: log_path,
                source: error,
            });
        }
        self.end_offset = offset;
        self.entries.extend(added);
        Ok(())
    }

    /// The entries whose indexes are in `range`, in order.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Vec<(u64, Vec<u8>)> {
        self.entries
            .range(range)
            .map(|(index, stored)| (*index, stored.payload.clone()))
            .collect()
    }

    /// The last entry kept, if any.
    pub fn last(&self) -> Option<(u64, &[u8])> {
        self.entries
            .iter()
            .next_back()
            .map(|(index, stored)| (*index, stored.payload.as_slice()))
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.keys().next_back().copied()
    }

    /// Removes the entries from `index` on (a new leader overruled them), durably.
    pub fn truncate_from(&mut self, index: u64) -> Result<()> {
        let Some(offset) = self.entries.range(index..).next().map(|(_, s)| s.offset) else {
            return Ok(());
        };
        let log_path = self.log_path();
        self.file
            .set_len(offset)
            .and_then(|()| self.file.sync_data())
            .map_err(StoreError::io(&log_path))?;
        self.entries.split_off(&index);
        self.end_offset = offset;
        Ok(())
    }

    /// Forgets the entries up to and including `index` (a snapshot holds what they did);
    /// `purged_id` is what [`RaftLog::purged`] returns from now on, across restarts.
    pub fn purge_through(&mut self, index: u64, purged_id: Vec<u8>) -> Result<()> {
        // The mark first: entries gone without it would read as a log that starts late.
        write_atomically(&self.dir.join(PURGED_FILE), &purged_id)?;
        self.purged = Some(purged_id);
        let kept = self.entries.split_off(&(index + 1));
        self.entries = kept;
        self.dead_bytes = self
            .entries
            .values()
            .next()
            .map_or(self.end_offset, |s| s.offset);
        if self.dead_bytes >= DEAD_BYTES_REWRITE && self.dead_bytes * 2 > self.end_offset {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Writes the live entries to a new file that replaces the log.
    fn rewrite(&mut self) -> Result<()> {
        let log_path = self.log_path();
        let mut buffer = Vec::new();
        let mut entries = BTreeMap::new();
        for (index, stored) in std::mem::take(&mut self.entries) {
            let offset = buffer.len() as u64;
            encode_record(&mut buffer, index, &stored.payload);
            entries.insert(
                index,
                Stored {
                    offset,
                    payload: stored.payload,
                },
            );
        }
        write_atomically(&log_path, &buffer)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(StoreError::io(&log_path))?;
        self.entries = entries;
        self.end_offset = buffer.len() as u64;
        self.dead_bytes = 0;
        Ok(())
    }

    /// The id of the last purged entry, as given to [`RaftLog::purge_through`].
    pub fn purged(&self) -> Option<&[u8]> {
        self.purged.as_deref()
    }

    /// Stores the node's vote, durably.
    pub fn save_vote(&mut self, vote: Vec<u8>) -> Result<()> {
        write_atomically(&self.dir.join(VOTE_FILE), &vote)?;
        self.vote = Some(vote);
        Ok(())
    }

    pub fn vote(&self) -> Option<&[u8]> {
        self.vote.as_deref()
    }

    /// Stores the last commit the node heard of. Not fsynced: a mark older than the truth
    /// after a crash only means the node applies fewer entries before a leader tells it
    /// more; a damaged one reads as none.
    pub fn save_committed(&mut self, committed: Vec<u8>) -> Result<()> {
        let path = self.dir.join(COMMITTED_FILE);
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, &committed)
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(StoreError::io(&path))?;
        self.committed = Some(committed);
        Ok(())
    }

    pub fn committed(&self) -> Option<&[u8]> {
        self.committed.as_deref()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }
}

pub(crate) fn encode_record(buffer: &mut Vec<u8>, index: u64, payload: &[u8]) {
    let mut checked = Vec::with_capacity(8 + payload.len());
    checked.extend_from_slice(&index.to_le_bytes());
    checked.extend_from_slice(payload);
    buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&crc32c::crc32c(&checked).to_le_bytes());
    buffer.extend_from_slice(&checked);
}

/// The record at the start of `bytes`, if one is whole and checks: its index, and where
/// its payload ends.
pub(crate) fn record_at(bytes: &[u8]) -> Option<(u64, usize)> {
    if bytes.len() < HEADER_BYTES {
        return None;
    }
    let length = u32::from_le_bytes(bytes[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
    let end = HEADER_BYTES + length;
    if length > ENTRY_BYTES_MAX || end > bytes.len() || crc32c::crc32c(&bytes[8..end]) != crc {
        return None;
    }
    let index = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    Some((index, end))
}

/// Reads every record; returns them and where the valid ones end. A bad record with no
/// whole record anywhere after it is a torn tail (a crash mid-append); one followed by a
/// whole record is damage, which refuses the open: dropping the entries after it would
/// forget what this node acknowledged to the leader.
fn scan(path: &Path, bytes: &[u8]) -> Result<(BTreeMap<u64, Stored>, u64)> {
    let mut entries = BTreeMap::new();
    let mut offset = 0usize;
    let mut previous: Option<u64> = None;
    while offset < bytes.len() {
        let Some((index, end)) = record_at(&bytes[offset..]) else {
            let whole_after = (offset + 1..bytes.len()).any(|at| record_at(&bytes[at..]).is_some());
            if !whole_after {
                break;
            }
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                offset: offset as u64,
                reason: "a damaged Raft log entry with whole ones after it; move the node's \
                         raft/ directory aside and let it catch up from the cluster"
                    .to_string(),
            });
        };
        if let Some(p) = previous.filter(|p| index != p + 1) {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                offset: offset as u64,
                reason: format!("Raft log entry {index} follows entry {p}"),
            });
        }
        previous = Some(index);
        entries.insert(
            index,
            Stored {
                offset: offset as u64,
                payload: bytes[offset + HEADER_BYTES..offset + end].to_vec(),
            },
        );
        offset += end;
    }
    Ok((entries, offset as u64))
}

/// A small file's bytes, or None when it does not exist (or, for the commit mark, does
/// not read).
pub(crate) fn read_small(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_dir::tests::TempDir;

    fn payload(i: u64) -> Vec<u8> {
        format!("entry {i}").into_bytes()
    }

    fn indexes(log: &RaftLog) -> Vec<u64> {
        log.entries(..).into_iter().map(|(i, _)| i).collect()
    }

    #[test]
    fn entries_vote_and_marks_come_back_after_a_restart() {
        let dir = TempDir::new("raft-log");
        let mut log = RaftLog::open(&dir.0).unwrap();
        assert!(log.is_empty());
        log.append((1..=5).map(|i| (i, payload(i)))).unwrap();
        log.save_vote(b"vote 3".to_vec()).unwrap();
        log.save_committed(b"commit 4".to_vec()).unwrap();
        drop(log);
        let log = RaftLog::open(&dir.0).unwrap();
        assert!(!log.is_empty());
        assert_eq!(indexes(&log), [1, 2, 3, 4, 5]);
        assert_eq!(log.entries(2..4), [(2, payload(2)), (3, payload(3))]);
        assert_eq!(log.last(), Some((5, payload(5).as_slice())));
        assert_eq!(log.vote(), Some(b"vote 3".as_slice()));
        assert_eq!(log.committed(), Some(b"commit 4".as_slice()));
        assert_eq!(log.purged(), None);
    }

    #[test]
    fn a_truncated_tail_is_gone_and_new_entries_follow_the_cut() {
        let dir = TempDir::new("raft-log");
        let mut log = RaftLog::open(&dir.0).unwrap();
        log.append((1..=5).map(|i| (i, payload(i)))).unwrap();
        log.truncate_from(3).unwrap();
        assert_eq!(indexes(&log), [1, 2]);
        log.append([(3, b"overruled".to_vec())]).unwrap();
        drop(log);
        let log = RaftLog::open(&dir.0).unwrap();
        assert_eq!(indexes(&log), [1, 2, 3]);
        assert_eq!(log.entries(3..), [(3, b"overruled".to_vec())]);
    }

    #[test]
    fn an_append_out_of_order_is_refused() {
        let dir = TempDir::new("raft-log");
        let mut log = RaftLog::open(&dir.0).unwrap();
        log.append([(1, payload(1))]).unwrap();
        assert!(log.append([(3, payload(3))]).is_err());
        assert_eq!(indexes(&log), [1]);
    }

    #[test]
    fn purged_entries_stay_gone_and_the_file_is_rewritten_once_mostly_dead() {
        let dir = TempDir::new("raft-log");
        let mut log = RaftLog::open(&dir.0).unwrap();
        let big = vec![7u8; 64 * 1024];
        log.append((1..=100).map(|i| (i, big.clone()))).unwrap();
        let before = std::fs::metadata(dir.0.join(LOG_FILE)).unwrap().len();
        log.purge_through(90, b"purged 90".to_vec()).unwrap();
        assert_eq!(indexes(&log), (91..=100).collect::<Vec<_>>());
        let after = std::fs::metadata(dir.0.join(LOG_FILE)).unwrap().len();
        assert!(after < before / 5, "{after} of {before} bytes left");
        log.append([(101, payload(101))]).unwrap();
        drop(log);
        let log = RaftLog::open(&dir.0).unwrap();
        assert_eq!(indexes(&log), (91..=101).collect::<Vec<_>>());
        assert_eq!(log.purged(), Some(b"purged 90".as_slice()));
    }

    #[test]
    fn a_torn_last_record_is_dropped() {
        let dir = TempDir::new("raft-log");
        let mut log = RaftLog::open(&dir.0).unwrap();
        log.append((1..=3).map(|i| (i, payload(i)))).unwrap();
        drop(log);
        let path = dir.0.join(LOG_FILE);
        let length = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(length - 3).unwrap();
        let mut log = RaftLog::open(&dir.0).unwrap();
        assert_eq!(indexes(&log), [1, 2]);
        // The cut is made on disk: the next entry follows a whole record.
        log.append([(3, payload(3))]).unwrap();
        drop(log);
        assert_eq!(indexes(&RaftLog::open(&dir.0).unwrap()), [1, 2, 3]);
    }

    #[test]
    fn damage_with_whole_records_after_it_refuses_the_open() {
        let dir = TempDir::new("raft-log");
        let mut log = RaftLog::open(&dir.0).unwrap();
        log.append((1..=3).map(|i| (i, payload(i)))).unwrap();
        drop(log);
        let path = dir.0.join(LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 2] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        match RaftLog::open(&dir.0) {
            Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, 0),
            other => panic!("expected damage at byte 0, got {other:?}"),
        }
    }

    #[test]
    fn a_damaged_length_with_whole_records_after_it_refuses_the_open() {
        let dir = TempDir::new("raft-log");
        let mut log = RaftLog::open(&dir.0).unwrap();
        log.append((1..=3).map(|i| (i, payload(i)))).unwrap();
        drop(log);
        let path = dir.0.join(LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        // The first record's length now runs past the end of the file.
        bytes[3] = 0x7f;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            RaftLog::open(&dir.0),
            Err(StoreError::Corrupt { offset: 0, .. })
        ));
    }

    #[test]
    fn a_huge_length_at_the_end_is_a_torn_tail_not_an_allocation() {
        let dir = TempDir::new("raft-log");
        let mut log = RaftLog::open(&dir.0).unwrap();
        log.append([(1, payload(1))]).unwrap();
        drop(log);
        let path = dir.0.join(LOG_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let mut garbage = u32::MAX.to_le_bytes().to_vec();
        garbage.extend_from_slice(&[0u8; 20]);
        file.write_all(&garbage).unwrap();
        drop(file);
        assert_eq!(indexes(&RaftLog::open(&dir.0).unwrap()), [1]);
    }
}
