//! One queue's message log: a directory of numbered segments (`<n>.seg`), each with an ack
//! file (`<n>.ack`, the offsets of its acknowledged records) and, once sealed, an index
//! (`<n>.idx`, see [`crate::segment_index`]). Appends go to the newest segment, which rolls
//! over at a size limit; a segment and its files are deleted once every record in it is
//! acknowledged. Nothing per message is kept in memory but the offsets acknowledged in
//! segments not yet deleted, so memory does not grow with the number of messages waiting.
//!
//! Opening a log reads the index of each sealed segment and scans only the newest one, so
//! a restart costs a few reads per segment however many messages wait. Transient records
//! found at opening count as acknowledged: they do not outlive a restart.
//!
//! What the log counts always describes its files: an append or an ack write that fails
//! (a full disk) leaves the files as they were and the counts with them.
//!
//! Owned by its queue, which calls it under the queue's lock. Opening (`open.rs`),
//! appending (`append.rs`), acknowledging (`acks.rs`) and reading back (`reading.rs`)
//! each have their file.

mod ack_file;
mod acks;
mod append;
mod open;
mod read_ahead;
mod reading;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::segment::{Damage, Format, RecordRef, SegmentWriter};
use ack_file::AckFile;
use read_ahead::ReadAhead;

/// Where a record is: its segment and its place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u32,
    pub record: RecordRef,
}

/// A reading position for [`QueueLog::next`]: the next byte offset to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    segment: u32,
    offset: u32,
}

impl Position {
    /// Whether this record lies before `cursor` in the log.
    pub fn is_before(&self, cursor: &Cursor) -> bool {
        (self.segment, self.record.offset) < (cursor.segment, cursor.offset)
    }
}

#[derive(Debug)]
struct Segment {
    /// Valid bytes (records end here).
    bytes: u64,
    format: Format,
    /// Records that verify (damaged ones are not counted).
    records: u32,
    acked: HashSet<u32>,
    acks: AckFile,
    /// Damaged byte ranges, known from a scan: reading steps over them.
    damaged: Vec<Damage>,
}

impl Segment {
    fn empty(dir: &Path, n: u32, bytes: u64) -> Segment {
        Segment {
            bytes,
            format: Format::V3,
            records: 0,
            acked: HashSet::new(),
            acks: AckFile::new(ack_path(dir, n), Format::V3),
            damaged: Vec::new(),
        }
    }

    fn unacked(&self) -> u32 {
        self.records.saturating_sub(self.acked.len() as u32)
    }

    /// The known damage `offset` lies in.
    fn damage_at(&self, offset: u32) -> Option<Damage> {
        self.damaged
            .iter()
            .find(|d| d.offset <= offset && offset < d.end())
            .copied()
    }
}

/// Acks of one segment are appended to its ack file once this many bytes of them gather
/// (or at [`QueueLog::write_acks`]).
const UNWRITTEN_ACK_BYTES_MAX: usize = 4096;

/// What opening a log found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    /// Records not acknowledged.
    pub messages: u64,
    /// Bytes cut from the end of the newest segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Segments that could not be read at all: set aside, or skipped (an I/O error).
    pub unreadable_segments: usize,
}

pub struct QueueLog {
    dir: PathBuf,
    segment_bytes_max: u64,
    segments: BTreeMap<u32, Segment>,
    writer_number: u32,
    writer: SegmentWriter,
    /// Offsets of the transient records in the segment being written, for its index.
    writer_transient: Vec<u32>,
    /// Persistent appends since the last sync.
    unsynced: bool,
    /// The read handle of the last segment read, reused while reads stay in it.
    reading: Option<(u32, File)>,
    /// Bytes read ahead from that segment, for reading records in order.
    read_ahead: ReadAhead,
    /// Segments holding acks not yet written to their ack files.
    unwritten_acks_in: Vec<u32>,
    /// A record that failed a read which a rescan then found intact, read once more.
    second_look: Option<(u32, u32)>,
}

impl Drop for QueueLog {
    /// A log closed with acks still gathered writes them: a clean stop must not bring
    /// acknowledged messages back.
    fn drop(&mut self) {
        if let Err(error) = self.write_acks() {
            tracing::warn!(%error, "cannot write acks when closing a message log");
        }
    }
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

fn ack_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.ack"))
}

fn index_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.idx"))
}

impl QueueLog {
    /// Records not yet acknowledged.
    pub fn message_count(&self) -> u64 {
        self.segments.values().map(|s| u64::from(s.unacked())).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Deletes the whole log (the queue was deleted).
    pub fn destroy(mut self) -> Result<()> {
        // Its gathered acks no longer matter: closing it must not write them.
        self.unwritten_acks_in.clear();
        fs::remove_dir_all(&self.dir).map_err(StoreError::io(&self.dir))
    }
}

/// Logs damage found in a segment: where, how much, and the records known lost in it.
fn report_damage(path: &Path, damage: &Damage) {
    tracing::error!(
        file = %path.display(),
        offset = damage.offset,
        bytes = damage.bytes,
        records_at_least = damage.records,
        "damaged records in a segment: they are lost, the records after them are read"
    );
}

/// Moves a segment that holds damage out of the log's way (`<n>.seg.damaged`), keeping
/// its bytes for the operator, and logs it; its ack file and index go.
fn set_aside(dir: &Path, n: u32, why: &str) {
    let path = segment_path(dir, n);
    let mut target = path.clone().into_os_string();
    target.push(".damaged");
    let target = PathBuf::from(target);
    match fs::rename(&path, &target) {
        Ok(()) => {
            tracing::error!(file = %path.display(), kept_as = %target.display(), why,
                "a damaged segment was set aside; nothing else in the queue is affected");
            let _ = fs::remove_file(ack_path(dir, n));
            let _ = fs::remove_file(index_path(dir, n));
        }
        Err(error) => tracing::error!(file = %path.display(), %error, why,
            "a damaged segment could not be set aside; it is left where it is"),
    }
}

fn remove_segment_files(dir: &Path, n: u32) -> Result<()> {
    for path in [segment_path(dir, n), ack_path(dir, n), index_path(dir, n)] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io { path, source: e }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
