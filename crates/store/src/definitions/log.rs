//! The definitions log: one change a line, appended and fsynced before the client is
//! answered. A line is `<crc32c as 8 hex digits> <the change as JSON>\n`, the CRC taken
//! over the JSON text. Lines from before checksums (they start with `{`) are still read.
//!
//! Replaying tells a torn tail (a crash while appending: the change was never confirmed,
//! so it is dropped) from damage (a line that was whole once: going on without it would
//! silently undo a change, such as a deleted user's return), which is refused.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::model::Change;
use super::snapshot::byte_offset;
use super::state::State;
use super::Recovery;
use crate::error::{Result, StoreError};

/// The line that records `change`.
pub(super) fn encode(change: &Change) -> Vec<u8> {
    let json = serde_json::to_vec(change).expect("definitions serialize");
    let mut line = format!("{:08x} ", crc32c::crc32c(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

/// What a replay found.
#[derive(Debug, Default)]
pub(super) struct Replay {
    /// Changes applied.
    pub entries: usize,
    /// Where the last whole, valid line ends: anything after it is a torn tail.
    pub valid_bytes: u64,
    /// The log's length.
    pub total_bytes: u64,
    /// Damaged lines skipped under [`Recovery::Force`].
    pub skipped: usize,
}

/// Why one line does not read, and where in it.
struct Bad {
    offset_in_line: u64,
    reason: String,
}

fn decode(line: &[u8]) -> std::result::Result<Change, Bad> {
    let json_error = |prefix: usize, json: &[u8], error: serde_json::Error| Bad {
        offset_in_line: prefix as u64 + byte_offset(json, error.line(), error.column()),
        reason: error.to_string(),
    };
    if line.first() == Some(&b'{') {
        return serde_json::from_slice(line).map_err(|e| json_error(0, line, e));
    }
    if line.len() < 10 || line[8] != b' ' {
        return Err(Bad {
            offset_in_line: 0,
            reason: "not a checksummed change".to_string(),
        });
    }
    let (stored, json) = (&line[..8], &line[9..]);
    let stored = std::str::from_utf8(stored)
        .ok()
        .and_then(|hex| u32::from_str_radix(hex, 16).ok());
    let json = json.strip_suffix(b"\n").unwrap_or(json);
    let computed = crc32c::crc32c(json);
    if stored != Some(computed) {
        return Err(Bad {
            offset_in_line: 0,
            reason: format!("the change does not match its checksum (computed {computed:08x})"),
        });
    }
    serde_json::from_slice(json).map_err(|e| json_error(9, json, e))
}

/// Applies every whole, valid line of the log at `path` to `state`.
pub(super) fn replay(path: &Path, state: &mut State, recovery: Recovery) -> Result<Replay> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replay::default()),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let total = file.metadata().map_err(StoreError::io(path))?.len();
    let mut replay = Replay {
        total_bytes: total,
        ..Replay::default()
    };
    let mut reader = BufReader::new(file);
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(StoreError::io(path))? as u64;
        if read == 0 {
            return Ok(replay);
        }
        let whole = line.last() == Some(&b'\n');
        let last = offset + read == total;
        // A crash while appending leaves a last line cut short, or (when the file's length
        // reached the disk before its data) padded with zero bytes.
        let torn = last && (!whole || line.contains(&0));
        if torn {
            tracing::warn!(
                file = %path.display(),
                offset,
                dropped_bytes = read,
                "definitions log ends with an incomplete change (a crash while it was \
                 written, before it was confirmed); dropping it"
            );
            return Ok(replay);
        }
        match decode(&line) {
            Ok(change) => {
                state.apply(change);
                replay.entries += 1;
                replay.valid_bytes = offset + read;
            }
            Err(bad) => {
                let at = offset + bad.offset_in_line;
                if recovery != Recovery::Force {
                    return Err(StoreError::Corrupt {
                        path: path.to_path_buf(),
                        offset: at,
                        reason: format!(
                            "a damaged change ({}) in the line at byte {offset}, {} bytes long",
                            bad.reason, read
                        ),
                    });
                }
                if replay.skipped == 0 {
                    super::set_aside(path);
                }
                tracing::error!(
                    file = %path.display(),
                    offset,
                    bytes = read,
                    reason = bad.reason,
                    text = %String::from_utf8_lossy(&line).trim_end(),
                    "FORCED RECOVERY: skipping a damaged definitions change: whatever it did \
                     (a declare, a delete, a user or permission change) is undone"
                );
                replay.skipped += 1;
                replay.valid_bytes = offset + read;
            }
        }
        offset += read;
    }
}
