//! The Raft log of one quorum queue on one of its replicas: the entries its consensus
//! group appends (opaque bytes here, indexed), the replica's vote, the last commit it
//! heard of and the last entry purged behind a snapshot.
//!
//! Unlike the metadata log ([`crate::raft_log`]), a queue's log carries message bodies
//! and can hold millions of them, so its entries are not kept in memory: they live in
//! segment files under the queue's directory, `<first index, 20 digits>.seg`, each
//! record `[length u32][crc32c u32][index u64][payload]` as in the metadata log. Memory
//! holds where each record starts (four bytes an entry) and the most recent entries, up
//! to a byte budget, since the group reads those back at once to replicate and apply
//! them. A segment is closed once it passes its size and a new one begun; whole segments
//! behind a purge are deleted.
//!
//! Every append is fsynced before it is reported done. At open, a record cut short at the
//! end of the last segment (a crash mid-append) is dropped; damage anywhere else refuses
//! the open, as a replica that forgot what it acknowledged could lose a committed entry.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data_dir::{sync_dir, write_atomically};
use crate::error::{Result, StoreError};
use crate::raft_log::{encode_record, read_small, record_at, HEADER_BYTES};

const SEGMENT_SUFFIX: &str = ".seg";
const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";
const PURGED_FILE: &str = "purged";

/// A segment is closed and the next one begun once it holds this many bytes.
pub const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// How many bytes of the most recent entries are kept in memory by default.
pub const RECENT_BYTES_MAX: usize = 2 * 1024 * 1024;

/// One segment file: the index of its first record and where each record starts.
#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    /// Offsets of the records' starts, in index order. A segment stays well under 4 GiB:
    /// it is closed past [`SEGMENT_BYTES_MAX`] and one record is at most
    /// [`crate::raft_log::ENTRY_BYTES_MAX`].
    starts: Vec<u32>,
    /// Where the next record would go.
    end: u64,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.starts.is_empty()).then(|| self.first + self.starts.len() as u64 - 1)
    }

    fn holds(&self, index: u64) -> bool {
        index >= self.first && index < self.first + self.starts.len() as u64
    }

    /// The byte range of the record of `index`, which the segment holds.
    fn record_range(&self, index: u64) -> (u64, u64) {
        let at = (index - self.first) as usize;
        let start = u64::from(self.starts[at]);
        let end = self
            .starts
            .get(at + 1)
            .map_or(self.end, |next| u64::from(*next));
        (start, end)
    }
}

/// A quorum queue's Raft log on this replica. See the module comment.
#[derive(Debug)]
pub struct QuorumLog {
    dir: PathBuf,
    segment_bytes_max: u64,
    /// Oldest first; the last one is written to.
    segments: Vec<Segment>,
    /// The last segment, open for appending.
    active: Option<File>,
    /// One older segment kept open for reading.
    reader: Option<(u64, File)>,
    /// The most recent entries, oldest first, contiguous, ending with the last entry.
    recent: VecDeque<(u64, Arc<[u8]>)>,
    recent_bytes: usize,
    recent_bytes_max: usize,
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    /// Where the commit mark is written, once it was.
    committed_file: Option<File>,
    /// The last purged entry: its index, and its id as the caller encoded it.
    purged: Option<(u64, Vec<u8>)>,
}

impl QuorumLog {
    /// Opens (or creates) the log in `dir`, reading back what a previous run stored.
    pub fn open(dir: &Path) -> Result<QuorumLog> {
        QuorumLog::open_with(dir, SEGMENT_BYTES_MAX, RECENT_BYTES_MAX)
    }

    /// [`QuorumLog::open`] with other segment and memory sizes.
    pub fn open_with(
        dir: &Path,
        segment_bytes_max: u64,
        recent_bytes_max: usize,
    ) -> Result<QuorumLog> {
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        sync_dir(dir)?;
        let mut firsts = Vec::new();
        for item in std::fs::read_dir(dir).map_err(StoreError::io(dir))? {
            let item = item.map_err(StoreError::io(dir))?;
            let name = item.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            firsts.push(first);
        }
        firsts.sort_unstable();
        let mut segments: Vec<Segment> = Vec::with_capacity(firsts.len());
        let count = firsts.len();
        for (at, first) in firsts.into_iter().enumerate() {
            let path = dir.join(segment_name(first));
            let is_last = at + 1 == count;
            let segment = scan_segment(&path, first, is_last)?;
            if let Some(previous) = segments.last().and_then(Segment::last) {
                if segment.first != previous + 1 {
                    return Err(StoreError::Corrupt {
                        path,
                        offset: 0,
                        reason: format!(
                            "the segment starts at entry {} after one ending at entry {previous}",
                            segment.first
                        ),
                    });
                }
            }
            segments.push(segment);
        }
        // An empty segment at the end (begun, nothing written before a crash) is dropped.
        if segments.last().is_some_and(|s| s.starts.is_empty()) {
            let empty = segments.pop().expect("checked above");
            std::fs::remove_file(&empty.path).map_err(StoreError::io(&empty.path))?;
        }
        let active = match segments.last() {
            Some(segment) => Some(open_for_append(&segment.path)?),
            None => None,
        };
        let purged = match read_small(&dir.join(PURGED_FILE))? {
            Some(bytes) if bytes.len() >= 8 => {
                let index = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
                Some((index, bytes[8..].to_vec()))
            }
            Some(_) => {
                return Err(StoreError::Damaged {
                    path: dir.join(PURGED_FILE),
                    reason: "the purge mark is cut short".to_string(),
                })
            }
            None => None,
        };
        Ok(QuorumLog {
            dir: dir.to_path_buf(),
            segment_bytes_max,
            segments,
            active,
            reader: None,
            recent: VecDeque::new(),
            recent_bytes: 0,
            recent_bytes_max,
            vote: read_small(&dir.join(VOTE_FILE))?,
            committed: read_small(&dir.join(COMMITTED_FILE))?,
            committed_file: None,
            purged,
        })
    }

    /// Whether anything was ever stored: a vote, an entry, or a purge.
    pub fn is_empty(&self) -> bool {
        self.vote.is_none() && self.segments.is_empty() && self.purged.is_none()
    }

    /// The index of the last entry kept, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.segments.last().and_then(Segment::last)
    }

    /// The index of the first entry that can be read, if any (purged entries may still
    /// be on disk until their whole segment is).
    pub fn first_index(&self) -> Option<u64> {
        let first = self.segments.first()?.first;
        let after_purge = self
            .purged
            .as_ref()
            .map_or(first, |(p, _)| first.max(p + 1));
        (Some(after_purge) <= self.last_index()).then_some(after_purge)
    }

    /// How many bytes the segments take on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.end).sum()
    }

    /// Appends entries (each after the last, in order) and fsyncs them. After a purge that
    /// passed the last entry, the next entry may start anywhere after the purge.
    pub fn append(&mut self, entries: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<()> {
        let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut next = self.last_index().map(|i| i + 1);
        let floor = self.purged.as_ref().map(|(p, _)| p + 1);
        for (index, payload) in entries {
            let expected_ok = match (next, floor) {
                (Some(expected), _) => index == expected,
                (None, Some(floor)) => index >= floor,
                (None, None) => true,
            };
            if !expected_ok {
                return Err(StoreError::Damaged {
                    path: self.dir.clone(),
                    reason: format!(
                        "entry {index} appended where {} was due",
                        next.or(floor).unwrap_or(0)
                    ),
                });
            }
            next = Some(index + 1);
            batch.push((index, payload));
        }
        let Some(first) = batch.first().map(|(i, _)| *i) else {
            return Ok(());
        };
        let roll = match self.segments.last() {
            None => true,
            Some(segment) => segment.end >= self.segment_bytes_max,
        };
        if roll {
            self.begin_segment(first)?;
        }
        let mut buffer = Vec::new();
        let mut starts = Vec::with_capacity(batch.len());
        let base = self.segments.last().expect("begun above").end;
        for (index, payload) in &batch {
            starts.push(base + buffer.len() as u64);
            encode_record(&mut buffer, *index, payload);
        }
        let segment = self.segments.last_mut().expect("begun above");
        let file = self.active.as_mut().expect("the last segment is open");
        let written = file.write_all(&buffer).and_then(|()| file.sync_data());
        if let Err(error) = written {
            // Take back half a record, so that the next append does not follow damage.
            let _ = file.set_len(segment.end).and_then(|()| file.sync_data());
            return Err(StoreError::Io {
                path: segment.path.clone(),
                source: error,
            });
        }
        segment.starts.extend(
            starts
                .into_iter()
                .map(|s| u32::try_from(s).unwrap_or(u32::MAX)),
        );
        segment.end = base + buffer.len() as u64;
        for (index, payload) in batch {
            self.remember(index, payload.into());
        }
        Ok(())
    }

    /// Starts a new segment whose first entry will be `first`.
    fn begin_segment(&mut self, first: u64) -> Result<()> {
        if let Some(segment) = self.segments.last() {
            if let Some(file) = self.active.take() {
                file.sync_all().map_err(StoreError::io(&segment.path))?;
            }
        }
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first,
            path,
            starts: Vec::new(),
            end: 0,
        });
        self.active = Some(file);
        Ok(())
    }

    /// Keeps a new entry among the recent ones, forgetting the oldest past the budget.
    fn remember(&mut self, index: u64, payload: Arc<[u8]>) {
        if self
            .recent
            .back()
            .is_some_and(|(last, _)| last + 1 != index)
        {
            self.recent.clear();
            self.recent_bytes = 0;
        }
        self.recent_bytes += payload.len();
        self.recent.push_back((index, payload));
        while self.recent_bytes > self.recent_bytes_max && self.recent.len() > 1 {
            if let Some((_, old)) = self.recent.pop_front() {
                self.recent_bytes -= old.len();
            }
        }
    }

    /// The entries whose indexes are in `range`, in order, leaving out purged ones.
    pub fn entries(&mut self, range: impl RangeBounds<u64>) -> Result<Vec<(u64, Arc<[u8]>)>> {
        let Some(first) = self.first_index() else {
            return Ok(Vec::new());
        };
        let last = self.last_index().expect("a first entry means a last one");
        let start = match range.start_bound() {
            Bound::Included(&s) => s.max(first),
            Bound::Excluded(&s) => s.saturating_add(1).max(first),
            Bound::Unbounded => first,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.min(last),
            Bound::Excluded(&e) => match e.checked_sub(1) {
                Some(e) => e.min(last),
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => last,
        };
        let mut out = Vec::new();
        let mut index = start;
        while index <= end {
            out.push((index, self.entry_unchecked(index)?));
            index += 1;
        }
        Ok(out)
    }

    /// The entry at `index`, if it is kept and not purged.
    pub fn entry(&mut self, index: u64) -> Result<Option<Arc<[u8]>>> {
        match (self.first_index(), self.last_index()) {
            (Some(first), Some(last)) if (first..=last).contains(&index) => {
                self.entry_unchecked(index).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Reads an entry the log holds, from memory if it is recent.
    fn entry_unchecked(&mut self, index: u64) -> Result<Arc<[u8]>> {
        if let Some((front, _)) = self.recent.front() {
            if index >= *front {
                if let Some((_, payload)) = self.recent.get((index - front) as usize) {
                    return Ok(payload.clone());
                }
            }
        }
        let at = self
            .segments
            .partition_point(|s| s.first <= index)
            .checked_sub(1)
            .filter(|&at| self.segments[at].holds(index))
            .ok_or_else(|| StoreError::Damaged {
                path: self.dir.clone(),
                reason: format!("entry {index} is in no segment"),
            })?;
        let is_active = at + 1 == self.segments.len();
        let segment = &self.segments[at];
        let (start, end) = segment.record_range(index);
        let mut bytes = vec![0u8; (end - start) as usize];
        let file = if is_active {
            self.active.as_ref().expect("the last segment is open")
        } else {
            if self.reader.as_ref().map(|(first, _)| *first) != Some(segment.first) {
                let file = File::open(&segment.path).map_err(StoreError::io(&segment.path))?;
                self.reader = Some((segment.first, file));
            }
            &self.reader.as_ref().expect("opened above").1
        };
        file.read_exact_at(&mut bytes, start)
            .map_err(StoreError::io(&segment.path))?;
        match record_at(&bytes) {
            Some((read_index, length)) if read_index == index && length == bytes.len() => {
                Ok(Arc::from(&bytes[HEADER_BYTES..]))
            }
            _ => Err(StoreError::Corrupt {
                path: segment.path.clone(),
                offset: start,
                reason: format!("entry {index} does not read back as written"),
            }),
        }
    }

    /// The last entry kept, if any.
    pub fn last(&mut self) -> Result<Option<(u64, Arc<[u8]>)>> {
        match self.last_index() {
            Some(index) => Ok(Some((index, self.entry_unchecked(index)?))),
            None => Ok(None),
        }
    }

    /// Removes the entries from `index` on (a new leader overruled them), durably.
    pub fn truncate_from(&mut self, index: u64) -> Result<()> {
        while let Some(segment) = self.segments.last() {
            if segment.first < index {
                break;
            }
            let segment = self.segments.pop().expect("checked above");
            self.active = None;
            if self.reader.as_ref().map(|(first, _)| *first) == Some(segment.first) {
                self.reader = None;
            }
            std::fs::remove_file(&segment.path).map_err(StoreError::io(&segment.path))?;
        }
        let reopen = self.active.is_none();
        if let Some(segment) = self.segments.last_mut() {
            if segment.holds(index) {
                let cut = u64::from(segment.starts[(index - segment.first) as usize]);
                let file = OpenOptions::new()
                    .write(true)
                    .open(&segment.path)
                    .map_err(StoreError::io(&segment.path))?;
                file.set_len(cut)
                    .and_then(|()| file.sync_data())
                    .map_err(StoreError::io(&segment.path))?;
                segment.starts.truncate((index - segment.first) as usize);
                segment.end = cut;
            }
            if reopen {
                self.active = Some(open_for_append(&segment.path)?);
            }
        }
        sync_dir(&self.dir)?;
        while self.recent.back().is_some_and(|(i, _)| *i >= index) {
            if let Some((_, old)) = self.recent.pop_back() {
                self.recent_bytes -= old.len();
            }
        }
        Ok(())
    }

    /// Forgets the entries up to and including `index` (a snapshot holds what they did):
    /// they no longer read, and every segment holding only such entries is deleted.
    /// `purged_id` is what [`QuorumLog::purged`] returns from now on, across restarts.
    pub fn purge_through(&mut self, index: u64, purged_id: Vec<u8>) -> Result<()> {
        // The mark first: entries gone without it would read as a log that starts late.
        let mut mark = index.to_le_bytes().to_vec();
        mark.extend_from_slice(&purged_id);
        write_atomically(&self.dir.join(PURGED_FILE), &mark)?;
        self.purged = Some((index, purged_id));
        let whole = self
            .segments
            .iter()
            .take_while(|s| s.last().is_none_or(|last| last <= index))
            .count();
        if whole > 0 {
            if whole == self.segments.len() {
                self.active = None;
            }
            for segment in self.segments.drain(..whole) {
                if self.reader.as_ref().map(|(first, _)| *first) == Some(segment.first) {
                    self.reader = None;
                }
                std::fs::remove_file(&segment.path).map_err(StoreError::io(&segment.path))?;
            }
            sync_dir(&self.dir)?;
        }
        while self.recent.front().is_some_and(|(i, _)| *i <= index) {
            if let Some((_, old)) = self.recent.pop_front() {
                self.recent_bytes -= old.len();
            }
        }
        Ok(())
    }

    /// The id of the last purged entry, as given to [`QuorumLog::purge_through`].
    pub fn purged(&self) -> Option<&[u8]> {
        self.purged.as_ref().map(|(_, id)| id.as_slice())
    }

    /// Stores the replica's vote, durably.
    pub fn save_vote(&mut self, vote: Vec<u8>) -> Result<()> {
        write_atomically(&self.dir.join(VOTE_FILE), &vote)?;
        self.vote = Some(vote);
        Ok(())
    }

    pub fn vote(&self) -> Option<&[u8]> {
        self.vote.as_deref()
    }

    /// Stores the last commit the replica heard of, overwriting the previous one in
    /// place: neither fsynced nor renamed (the group saves it at every commit, and a
    /// rename over a file makes ext4 flush it). An older mark after a crash only means
    /// fewer entries applied before a leader tells it more; one torn by the crash does
    /// not read, and counts as none.
    pub fn save_committed(&mut self, committed: Vec<u8>) -> Result<()> {
        let path = self.dir.join(COMMITTED_FILE);
        if self.committed_file.is_none() {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(StoreError::io(&path))?;
            self.committed_file = Some(file);
        }
        let file = self.committed_file.as_ref().expect("opened above");
        file.write_all_at(&committed, 0)
            .and_then(|()| file.set_len(committed.len() as u64))
            .map_err(StoreError::io(&path))?;
        self.committed = Some(committed);
        Ok(())
    }

    pub fn committed(&self) -> Option<&[u8]> {
        self.committed.as_deref()
    }

    /// Deletes the log and everything in its directory (the queue is gone from this
    /// replica).
    pub fn destroy(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io {
                path: dir,
                source: e,
            }),
        }
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

fn open_for_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(StoreError::io(path))
}

/// Reads a segment's records and where each starts. Only the last segment may end with a
/// record cut short, which is then cut off the file.
fn scan_segment(path: &Path, first: u64, is_last: bool) -> Result<Segment> {
    let bytes = std::fs::read(path).map_err(StoreError::io(path))?;
    let mut starts = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let expected = first + starts.len() as u64;
        match record_at(&bytes[offset..]) {
            Some((index, length)) if index == expected => {
                starts.push(offset as u32);
                offset += length;
            }
            Some((index, _)) => {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    reason: format!("entry {index} where entry {expected} was due"),
                })
            }
            None => {
                let whole_after =
                    (offset + 1..bytes.len()).any(|at| record_at(&bytes[at..]).is_some());
                if !is_last || whole_after {
                    return Err(StoreError::Corrupt {
                        path: path.to_path_buf(),
                        offset: offset as u64,
                        reason: "a damaged entry in a quorum queue's log; move the queue's \
                                 directory on this node aside and let the replica catch up \
                                 from the others"
                            .to_string(),
                    });
                }
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    dropped_bytes = bytes.len() - offset,
                    "a quorum queue's log ends with an incomplete entry (a crash while it \
                     was written, before it was acknowledged); dropping it"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(StoreError::io(path))?;
                file.set_len(offset as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(StoreError::io(path))?;
                break;
            }
        }
    }
    Ok(Segment {
        first,
        path: path.to_path_buf(),
        starts,
        end: offset as u64,
    })
}

#[cfg(test)]
mod tests;
