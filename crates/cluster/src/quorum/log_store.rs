//! openraft's log storage for one quorum queue on this node: an adapter over the store's
//! [`QuorumLog`], which does the files and the fsyncs. Entries are kept in the binary
//! form of [`super::codec`]; the vote and the marks as JSON. Writes run on the blocking
//! pool, so that an fsync does not stall the runtime's workers.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};
use parking_lot::Mutex;
use wharf_store::quorum_log::QuorumLog;

use super::codec::{decode_entry, entry_bytes};
use super::{Entry, LogId, QueueConfig, StorageError, Vote};

/// A queue's log on this node. Clones share it; the state machine reads message records
/// from it too.
#[derive(Clone)]
pub struct LogStore {
    log: Arc<Mutex<QuorumLog>>,
}

impl LogStore {
    pub fn new(log: QuorumLog) -> LogStore {
        LogStore {
            log: Arc::new(Mutex::new(log)),
        }
    }

    /// The log itself, shared.
    pub fn shared(&self) -> Arc<Mutex<QuorumLog>> {
        self.log.clone()
    }

    /// Whether this replica never took part in its group (no vote, no entry).
    pub fn is_empty(&self) -> bool {
        self.log.lock().is_empty()
    }

    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut QuorumLog) -> wharf_store::Result<T> + Send + 'static,
    ) -> Result<T, wharf_store::StoreError> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || work(&mut log.lock()))
            .await
            .unwrap_or_else(|e| {
                Err(wharf_store::StoreError::Io {
                    path: "quorum log".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }
}

fn decode_json<T: for<'de> serde::Deserialize<'de>>(bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageIOError::read_logs(&e).into())
}

fn encode_json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("Raft types serialize")
}

/// Reads the entries of `range` from `log`.
pub fn read_entries(
    log: &mut QuorumLog,
    range: (Bound<u64>, Bound<u64>),
) -> Result<Vec<Entry>, StorageError> {
    let stored = log
        .entries(range)
        .map_err(|e| StorageIOError::read_logs(&e))?;
    stored
        .iter()
        .map(|(_, bytes)| decode_entry(bytes).map_err(|e| StorageIOError::read_logs(&e).into()))
        .collect()
}

impl RaftLogReader<QueueConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let range: (Bound<u64>, Bound<u64>) =
            (range.start_bound().cloned(), range.end_bound().cloned());
        read_entries(&mut self.log.lock(), range)
    }
}

impl RaftLogStorage<QueueConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<QueueConfig>, StorageError> {
        let mut log = self.log.lock();
        let purged: Option<LogId> = log.purged().map(decode_json).transpose()?;
        let last = match log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((_, bytes)) => Some(
                decode_entry(&bytes)
                    .map_err(|e| StorageIOError::read_logs(&e))?
                    .log_id,
            ),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode_json(vote);
        self.write(move |log| log.save_vote(bytes))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.log.lock().vote().map(decode_json).transpose()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = encode_json(&committed);
        self.write(move |log| log.save_committed(bytes))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        // A mark that does not read is as if none was kept (it is only a hint).
        let log = self.log.lock();
        Ok(log
            .committed()
            .and_then(|bytes| serde_json::from_slice::<Option<LogId>>(bytes).ok())
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<QueueConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let records: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|entry| (entry.log_id.index, entry_bytes(&entry)))
            .collect();
        let appended = self.write(move |log| log.append(records)).await;
        match appended {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(StorageIOError::write_logs(&error).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write(move |log| log.truncate_from(log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = encode_json(&log_id);
        self.write(move |log| log.purge_through(log_id.index, bytes))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
