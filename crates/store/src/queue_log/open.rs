//! Opening a log: what each segment holds, from its index when it is sealed and has a
//! trustworthy one, else by reading every record. A torn tail of the newest segment is
//! cut; fully acknowledged sealed segments are deleted.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::ack_file::AckFile;
use super::read_ahead::ReadAhead;
use super::{
    ack_path, index_path, remove_segment_files, segment_path, QueueLog, Recovery, Segment,
};
use crate::data_dir::sync_dir;
use crate::error::{Result, StoreError};
use crate::segment::{self, SegmentWriter, SEGMENT_HEADER_BYTES};
use crate::segment_index::SegmentIndex;

/// What opening found in one segment.
struct Opened {
    bytes: u64,
    records: u32,
    /// Acknowledged or transient: not to be delivered.
    acked: HashSet<u32>,
    acks: AckFile,
    transient: Vec<u32>,
}

/// Opens a sealed segment through its index, if it has a trustworthy one.
fn open_indexed(dir: &Path, n: u32, segment_bytes: u64) -> Result<Option<Opened>> {
    let Some(index) = SegmentIndex::read(&index_path(dir, n), segment_bytes) else {
        return Ok(None);
    };
    let records_end = index.valid_bytes;
    let (acks, offsets) = AckFile::read(ack_path(dir, n))?;
    let mut acked: HashSet<u32> = offsets
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
        records: index.records,
        acked,
        acks,
        transient: index.transient,
    }))
}

/// Opens a segment by reading every record; a damaged tail is reported in `recovery`.
fn open_scanned(
    dir: &Path,
    n: u32,
    file: &File,
    newest: bool,
    recovery: &mut Recovery,
) -> Result<Opened> {
    let path = segment_path(dir, n);
    let scan = segment::scan(&path, file)?;
    if scan.invalid_bytes > 0 {
        if newest {
            tracing::warn!(
                file = %path.display(),
                at = scan.valid_bytes,
                dropped_bytes = scan.invalid_bytes,
                "cutting a torn or corrupt tail"
            );
            recovery.truncated_bytes = scan.invalid_bytes;
        } else {
            // An older segment was complete when the next one started: damage
            // here is not a crash, and the records after it are lost.
            tracing::error!(
                file = %path.display(),
                at = scan.valid_bytes,
                lost_bytes = scan.invalid_bytes,
                "corrupt segment: records after this point are lost"
            );
        }
    }
    let valid: HashSet<u32> = scan.records.iter().map(|r| r.offset).collect();
    let (acks, offsets) = AckFile::read(ack_path(dir, n))?;
    let mut acked: HashSet<u32> = offsets
        .into_iter()
        .filter(|offset| valid.contains(offset))
        .collect();
    acked.extend(scan.transient.iter().copied());
    Ok(Opened {
        bytes: scan.valid_bytes,
        records: scan.records.len() as u32,
        acked,
        acks,
        transient: scan.transient,
    })
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
            let path = segment_path(&dir, n);
            let file = File::open(&path).map_err(StoreError::io(&path))?;
            segment::check_header(&path, &file)?;
            let is_newest = Some(n) == newest;
            let indexed = if is_newest {
                None
            } else {
                let length = file.metadata().map_err(StoreError::io(&path))?.len();
                open_indexed(&dir, n, length)?
            };
            let opened = match indexed {
                Some(opened) => opened,
                None => {
                    let opened = open_scanned(&dir, n, &file, is_newest, &mut recovery)?;
                    if !is_newest {
                        let index = SegmentIndex {
                            valid_bytes: opened.bytes,
                            records: opened.records,
                            transient: opened.transient.clone(),
                        };
                        if let Err(error) = index.write(&index_path(&dir, n)) {
                            tracing::warn!(%error, "cannot write a segment index");
                        }
                    }
                    opened
                }
            };
            if is_newest {
                writer_transient = opened.transient;
            }
            let segment = Segment {
                bytes: opened.bytes,
                records: opened.records,
                acked: opened.acked,
                acks: opened.acks,
            };
            if segment.acked.len() as u32 == segment.records && !is_newest {
                remove_segment_files(&dir, n)?;
                continue;
            }
            recovery.messages += u64::from(segment.records - segment.acked.len() as u32);
            segments.insert(n, segment);
        }
        let (writer_number, writer) = match newest.filter(|n| segments.contains_key(n)) {
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
            },
            recovery,
        ))
    }
}
