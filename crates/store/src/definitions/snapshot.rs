//! The snapshot file: every definition at the last compaction, with a checksum.
//!
//! It reads `{"format":2,"crc32c":"<8 hex digits>","definitions":{...}}`: the CRC-32C is
//! taken over the exact text of the `definitions` value, so one flipped bit anywhere in a
//! name is found, even where the JSON still parses. Snapshots written before checksums
//! (the bare definitions object) are still read, with a warning, and the next compaction
//! rewrites them with one.

use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::model::Definitions;
use super::Recovery;
use crate::error::{Result, StoreError};

/// The snapshot format this build writes.
const FORMAT: u32 = 2;

/// What the snapshot file held.
pub(super) enum Snapshot {
    /// There is none.
    Missing,
    /// Read and checked.
    Checked(Definitions),
    /// Read without a check: a snapshot from before checksums, or (under
    /// [`Recovery::Force`]) a damaged one salvaged as far as it reads.
    Unchecked(Definitions),
}

/// The snapshot's text for `definitions`.
pub(super) fn encode(definitions: &Definitions) -> Vec<u8> {
    let body = serde_json::to_string_pretty(definitions).expect("definitions serialize");
    let crc = crc32c::crc32c(body.as_bytes());
    format!("{{\"format\":{FORMAT},\"crc32c\":\"{crc:08x}\",\"definitions\":{body}}}\n")
        .into_bytes()
}

/// The fields of a snapshot, of either format: which ones are there tells them apart.
#[derive(Deserialize)]
struct Envelope<'a> {
    format: Option<u32>,
    crc32c: Option<String>,
    #[serde(borrow)]
    definitions: Option<&'a RawValue>,
    #[serde(borrow)]
    exchanges: Option<&'a RawValue>,
}

/// Reads the snapshot at `path`. Damage is an error naming the file and the byte where it
/// was found; under [`Recovery::Force`] whatever still reads is used, and said so.
pub(super) fn read(path: &Path, recovery: Recovery) -> Result<Snapshot> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Snapshot::Missing),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    match decode(path, &bytes) {
        Ok(snapshot) => Ok(snapshot),
        Err(error) if recovery == Recovery::Force => {
            super::set_aside(path);
            match salvage(&bytes) {
                Some(definitions) => {
                    tracing::error!(file = %path.display(), %error,
                        "FORCED RECOVERY: the definitions snapshot is damaged; using it as it reads, \
                         so names in it may be wrong: check every queue, exchange and user");
                    Ok(Snapshot::Unchecked(definitions))
                }
                None => {
                    tracing::error!(file = %path.display(), %error,
                        "FORCED RECOVERY: the definitions snapshot does not read; starting without \
                         it: every queue, exchange, binding, policy, vhost and user it held is gone \
                         (only changes logged since it was written are restored)");
                    Ok(Snapshot::Unchecked(Definitions::default()))
                }
            }
        }
        Err(error) => Err(error),
    }
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot> {
    let corrupt = |offset: u64, reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let parse_error = |error: serde_json::Error| {
        corrupt(
            byte_offset(bytes, error.line(), error.column()),
            error.to_string(),
        )
    };
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(parse_error)?;
    match envelope {
        Envelope {
            format: Some(FORMAT),
            crc32c: Some(stored),
            definitions: Some(raw),
            ..
        } => {
            let text = raw.get();
            let offset = text.as_ptr() as u64 - bytes.as_ptr() as u64;
            let found = crc32c::crc32c(text.as_bytes());
            if u32::from_str_radix(&stored, 16).ok() != Some(found) || stored.len() != 8 {
                return Err(corrupt(
                    offset,
                    format!("the definitions do not match their checksum (stored {stored}, computed {found:08x})"),
                ));
            }
            let definitions = serde_json::from_str(text).map_err(|error| {
                corrupt(
                    offset + byte_offset(text.as_bytes(), error.line(), error.column()),
                    error.to_string(),
                )
            })?;
            Ok(Snapshot::Checked(definitions))
        }
        Envelope {
            format: Some(found),
            ..
        } if found > FORMAT => Err(StoreError::NewerFormat {
            path: path.to_path_buf(),
            found,
            supported: FORMAT,
        }),
        Envelope {
            format: None,
            crc32c: None,
            definitions: None,
            exchanges: Some(_),
        } => {
            let definitions = serde_json::from_slice(bytes).map_err(parse_error)?;
            tracing::warn!(file = %path.display(),
                "definitions snapshot from before checksums: read unchecked, rewritten with one");
            Ok(Snapshot::Unchecked(definitions))
        }
        _ => Err(corrupt(
            0,
            "not a definitions snapshot: its format, checksum or definitions are missing or unknown"
                .to_string(),
        )),
    }
}

/// The definitions in a damaged snapshot, as far as the JSON reads.
fn salvage(bytes: &[u8]) -> Option<Definitions> {
    let envelope: Envelope = serde_json::from_slice(bytes).ok()?;
    match envelope.definitions {
        Some(raw) => serde_json::from_str(raw.get()).ok(),
        None => serde_json::from_slice(bytes).ok(),
    }
}

/// The byte offset of serde_json's (line, column), both counted from 1 (a column of 0
/// means the start of the line).
pub(super) fn byte_offset(bytes: &[u8], line: usize, column: usize) -> u64 {
    let line_start = bytes
        .split_inclusive(|&b| b == b'\n')
        .take(line.saturating_sub(1))
        .map(<[u8]>::len)
        .sum::<usize>();
    (line_start + column.saturating_sub(1)).min(bytes.len()) as u64
}
