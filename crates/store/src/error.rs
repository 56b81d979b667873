//! Storage errors. Each names the file it concerns, so an operator can act on it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Wharf data directory: {reason}")]
    NotWharf { path: PathBuf, reason: String },
    #[error("{path} holds data format {found}, newer than this Wharf reads ({supported}); run a newer Wharf")]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path} is in use by another Wharf process (a running broker, or wharf ctl)")]
    Locked { path: PathBuf },
    #[error("{path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    /// Damage in a segment that destroyed records: `records` unacknowledged messages are
    /// gone; the records after the damage are read.
    #[error("{path}: damaged from byte {offset} ({bytes} bytes): {records} unacknowledged messages in this segment's damage are lost; the records after it are read")]
    Lost {
        path: PathBuf,
        offset: u64,
        bytes: u64,
        records: u64,
    },
    #[error("{path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
