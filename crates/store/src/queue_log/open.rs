//! Opening a log: what each segment holds, from its index when it is sealed and has a
//! trustworthy one, else by reading every record. A torn tail of the newest segment is
//! cut; damage elsewhere is logged and stepped over; a segment that cannot be read at all
//! is set aside (or skipped) and the rest of the log served; fully acknowledged sealed
//! segments are deleted once a scan confirms the acks name every record.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::ack_file::AckFile;
use super::read_ahead::ReadAhead;
use super::{
    ack_path, index_path, remove_segment_files, report_damage, segment_path, set_aside, QueueLog,
    Recovery, Segment,
};
use crate::data_dir::sync_dir;
use crate::error::{Result, StoreError};
use crate::segment::{self, Damage, Format, SegmentWriter, SEGMENT_HEADER_BYTES};
use crate::segment_index::SegmentIndex;

/// What opening found in one segment.
struct Opened {
    bytes: u64,
    format: Format,
    records: u32,
    /// Acknowledged or transient: not to be delivered.
    acked: HashSet<u32>,
    acks: AckFile,
    transient: Vec<u32>,
    damaged: Vec<Damage>,
    /// Read from its index, not scanned.
    indexed: bool,
}

/// Opens a sealed segment through its index, if it has a trustworthy one.
fn open_indexed(dir: &Path, n: u32, format: Format, segment_bytes: u64) -> Result<Option<Opened>> {
    let Some(index) = SegmentIndex::read(&index_path(dir, n), segment_bytes) else {
        return Ok(None);
    };
    let records_end = index.valid_bytes;
    let read = AckFile::read(ack_path(dir, n), format)?;
    report_damaged_acks(dir, n, read.damaged_entries);
    let acks = read.file;
    let mut acked: HashSet<u32> = read
        .offsets
        .into_iter()
        .filter(|offset| *offset >= SEGMENT_HEADER_BYTES && u64::from(*offset) < records_end)
        .collect();
    acked.extend(index.transient.iter().copied());
    if acked.len() > index.records as usize {
        // The ack file names records the index does not have: trust neither, scan.
        tracing::warn!(segment = n, dir = %dir.display(), "acks do not match the segment index; scanning");
        return Ok(None);
    }
    Ok(Some(Opened {
        bytes: index.valid_bytes,
        format,
        records: index.records,
        acked,
        acks,
        transient: index.transient,
        damaged: Vec::new(),
        indexed: true,
    }))
}

/// Opens a segment by reading every record; damage is logged, a torn tail of the newest
/// segment reported in `recovery`.
fn open_scanned(
    dir: &Path,
    n: u32,
    file: &File,
    newest: bool,
    recovery: &mut Recovery,
) -> Result<Opened> {
    let path = segment_path(dir, n);
    let scan = segment::scan(&path, file)?;
    let mut damaged = scan.damaged;
    for damage in &damaged {
        report_damage(&path, damage);
    }
    let mut bytes = scan.valid_bytes;
    if scan.invalid_bytes > 0 {
        if newest && scan.tail_records == 0 {
            // No whole record header in it: the write a crash tore, never confirmed.
            tracing::warn!(
                file = %path.display(),
                at = scan.valid_bytes,
                dropped_bytes = scan.invalid_bytes,
                "cutting a torn tail"
            );
            recovery.truncated_bytes = scan.invalid_bytes;
        } else if newest {
            tracing::error!(
                file = %path.display(),
                offset = scan.valid_bytes,
                bytes = scan.invalid_bytes,
                records_at_least = scan.tail_records,
                "damaged records at the end of the newest segment: cut (a torn write, or damage)"
            );
            recovery.truncated_bytes = scan.invalid_bytes;
        } else {
            // An older segment was complete when the next one started: damage here is
            // not a crash. The bytes stay in the file, stepped over.
            tracing::error!(
                file = %path.display(),
                offset = scan.valid_bytes,
                bytes = scan.invalid_bytes,
                records_at_least = scan.tail_records.max(1),
                "damaged records at the end of a segment: they are lost"
            );
            damaged.push(Damage {
                offset: scan.valid_bytes as u32,
                bytes: scan.invalid_bytes as u32,
                records: scan.tail_records.max(1),
            });
            bytes += scan.invalid_bytes;
        }
    }
    let valid: HashSet<u32> = scan.records.iter().map(|r| r.offset).collect();
    let read = AckFile::read(ack_path(dir, n), scan.format)?;
    report_damaged_acks(dir, n, read.damaged_entries);
    let acks = read.file;
    let named = read.offsets.len();
    let mut acked: HashSet<u32> = read
        .offsets
        .into_iter()
        .filter(|offset| valid.contains(offset))
        .collect();
    if acked.len() < named {
        tracing::error!(
            file = %ack_path(dir, n).display(),
            ignored = named - acked.len(),
            "ack entries that name no record of the segment are ignored (damage): those \
             messages are delivered again rather than deleted"
        );
    }
    acked.extend(scan.transient.iter().copied());
    Ok(Opened {
        bytes,
        format: scan.format,
        records: scan.records.len() as u32,
        acked,
        acks,
        transient: scan.transient,
        damaged,
        indexed: false,
    })
}

fn report_damaged_acks(dir: &Path, n: u32, entries: usize) {
    if entries > 0 {
        tracing::error!(
            file = %ack_path(dir, n).display(),
            entries,
            "damaged ack entries are ignored: those messages, if they were acknowledged, \
             are delivered again"
        );
    }
}

/// The numbers of the segments in `dir`, oldest first.
fn segment_numbers(dir: &Path) -> Result<Vec<u32>> {
    let mut numbers: Vec<u32> = fs::read_dir(dir)
        .map_err(StoreError::io(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Opens segment `n`: None when it cannot be read at all (set aside, or skipped on an
/// I/O error), so that one bad file does not take the rest of the queue with it. A
/// segment of a newer format fails the whole log: a newer Wharf reads it, and nothing
/// here may touch it.
fn open_segment(
    dir: &Path,
    n: u32,
    newest: bool,
    recovery: &mut Recovery,
) -> Result<Option<Opened>> {
    let path = segment_path(dir, n);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(file = %path.display(), %error,
                "cannot open a segment: its messages are not served until it can be read");
            recovery.unreadable_segments += 1;
            return Ok(None);
        }
    };
    let format = match segment::check_header(&path, &file) {
        Ok(format) => format,
        Err(StoreError::Corrupt { reason, .. }) => {
            let bytes = file.metadata().map_or(0, |m| m.len());
            tracing::error!(file = %path.display(), bytes, reason, "an unreadable segment");
            set_aside(dir, n, "its header is damaged");
            recovery.unreadable_segments += 1;
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    let opened = (|| {
        let length = file.metadata().map_err(StoreError::io(&path))?.len();
        let indexed = if newest {
            None
        } else {
            open_indexed(dir, n, format, length)?
        };
        // A segment its acks say is done is deleted; that is checked against its records.
        match indexed.filter(|o| o.acked.len() as u32 != o.records) {
            Some(opened) => Ok(opened),
            None => open_scanned(dir, n, &file, newest, recovery),
        }
    })();
    let opened = match opened {
        Ok(opened) => opened,
        // A read that failed (not damage): skipped now, tried again at the next start.
        Err(StoreError::Io { path, source }) => {
            tracing::error!(file = %path.display(), error = %source,
                "cannot read a segment or its acks: its messages are not served until they can be read");
            recovery.unreadable_segments += 1;
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    if !newest && !opened.indexed {
        let index = SegmentIndex {
            valid_bytes: opened.bytes,
            records: opened.records,
            transient: opened.transient.clone(),
        };
        if let Err(error) = index.write(&index_path(dir, n)) {
            tracing::warn!(%error, "cannot write a segment index");
        }
    }
    Ok(Some(opened))
}

impl QueueLog {
    /// Opens the log in `dir` (creating it), scanning its segments: records are counted and
    /// checked, acknowledged ones skipped, fully acknowledged segments deleted, and a torn
    /// tail of the newest segment cut.
    pub fn open(dir: impl Into<PathBuf>, segment_bytes_max: u64) -> Result<(QueueLog, Recovery)> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let numbers = segment_numbers(&dir)?;
        let mut recovery = Recovery::default();
        let mut segments = BTreeMap::new();
        let newest = numbers.last().copied();
        let mut writer_transient = Vec::new();
        for n in numbers {
            let is_newest = Some(n) == newest;
            let Some(opened) = open_segment(&dir, n, is_newest, &mut recovery)? else {
                continue;
            };
            if is_newest {
                writer_transient = opened.transient.clone();
            }
            let segment = Segment {
                bytes: opened.bytes,
                format: opened.format,
                records: opened.records,
                acked: opened.acked,
                acks: opened.acks,
                damaged: opened.damaged,
            };
            if segment.acked.len() as u32 == segment.records && !is_newest {
                if segment.damaged.is_empty() {
                    remove_segment_files(&dir, n)?;
                } else {
                    set_aside(&dir, n, "every readable record in it is acknowledged");
                }
                continue;
            }
            recovery.messages += u64::from(segment.unacked());
            segments.insert(n, segment);
        }
        // Appends go to a segment of the format written: one of an older format is sealed.
        let appendable = newest.filter(|n| segments.get(n).is_some_and(|s| s.format == Format::V3));
        let (writer_number, writer) = match appendable {
            Some(n) => {
                let bytes = segments[&n].bytes;
                (n, SegmentWriter::reopen(segment_path(&dir, n), bytes)?)
            }
            None => {
                let n = newest.map_or(1, |n| n + 1);
                let writer = SegmentWriter::create(segment_path(&dir, n))?;
                sync_dir(&dir)?;
                segments.insert(n, Segment::empty(&dir, n, writer.bytes));
                (n, writer)
            }
        };
        recovery.segments = segments.len();
        Ok((
            QueueLog {
                dir,
                segment_bytes_max,
                segments,
                writer_number,
                writer,
                writer_transient,
                unsynced: false,
                reading: None,
                read_ahead: ReadAhead::default(),
                unwritten_acks_in: Vec::new(),
                second_look: None,
            },
            recovery,
        ))
    }
}
