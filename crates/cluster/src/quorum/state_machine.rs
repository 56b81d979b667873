//! A quorum queue's state machine on one replica: the queue's [`Ledger`], applied from
//! the group's log in order, and the queue's snapshot.
//!
//! A snapshot is the ledger as of its last entry with the record of every message the
//! queue held then, so that the log behind it can go: `<group dir>/snapshot`, written
//! whole and fsynced before it replaces the previous one, read back at start (a replica
//! then applies the log entries after it again). The group asks for one when the log has
//! grown well past what the queue holds ([`StateMachine::wants_snapshot`]), so a snapshot
//! costs a fraction of what it lets go.
//!
//! A message's record is read where it is: in the snapshot if its entry is at or before
//! the snapshot's last one, else in the log's entry.

use std::collections::HashMap;
use std::fs::File;
use std::io::Cursor;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, StorageIOError};
use parking_lot::Mutex;
use wharf_core::quorum::{position_of, Applied, Command, Ledger};
use wharf_store::quorum_log::QuorumLog;

use super::codec::decode_entry;
use super::{Entry, LogId, QueueConfig, SnapshotMeta, StorageError, StoredMembership};

const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_MAGIC: &[u8; 4] = b"WQS1";
/// The log is worth a snapshot once it holds this many bytes...
const SNAPSHOT_LOG_BYTES: u64 = 16 * 1024 * 1024;
/// ...and this many times what the queue holds.
const SNAPSHOT_LOG_RATIO: u64 = 4;

/// What the broker does with what a replica applies (called in log order, from the
/// state machine's task).
pub trait ReplicaEvents: Send + Sync + 'static {
    /// The entry at `index` was applied: its command, and what it did.
    fn applied(&self, index: u64, command: &Command, applied: Applied);
    /// The ledger was replaced by a snapshot's.
    fn restored(&self) {}
}

/// Events nobody listens to.
pub struct NoEvents;

impl ReplicaEvents for NoEvents {
    fn applied(&self, _: u64, _: &Command, _: Applied) {}
}

/// The current snapshot's file, open, and where each message's record is in it.
struct SnapshotFile {
    meta: SnapshotMeta,
    file: File,
    /// Offset of a message to where its record starts in the file, and its length.
    records: HashMap<u64, (u64, u32)>,
    bytes: u64,
}

impl SnapshotFile {
    fn last_index(&self) -> Option<u64> {
        self.meta.last_log_id.map(|id| id.index)
    }

    fn record(&self, offset: u64) -> std::io::Result<Option<Vec<u8>>> {
        let Some(&(at, length)) = self.records.get(&offset) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; length as usize];
        self.file.read_exact_at(&mut bytes, at)?;
        Ok(Some(bytes))
    }
}

struct Machine {
    ledger: Ledger,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Option<Arc<SnapshotFile>>,
    built: u64,
}

/// The state machine. Clones share it (openraft's snapshot builder is one).
#[derive(Clone)]
pub struct StateMachine {
    machine: Arc<Mutex<Machine>>,
    log: Arc<Mutex<QuorumLog>>,
    dir: PathBuf,
    events: Arc<dyn ReplicaEvents>,
}

impl StateMachine {
    /// Starts from the snapshot kept in `dir`, if any; `log` is the group's log, where
    /// records after the snapshot are read.
    pub fn open(
        dir: &Path,
        log: Arc<Mutex<QuorumLog>>,
        events: Arc<dyn ReplicaEvents>,
    ) -> Result<StateMachine, String> {
        let mut machine = Machine {
            ledger: Ledger::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: None,
            built: 0,
        };
        let path = dir.join(SNAPSHOT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let (meta, ledger, records) = parse_snapshot(&bytes)
                    .map_err(|reason| format!("{}: damaged: {reason}", path.display()))?;
                let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                machine.ledger = ledger;
                machine.last_applied = meta.last_log_id;
                machine.membership = meta.last_membership.clone();
                machine.snapshot = Some(Arc::new(SnapshotFile {
                    meta,
                    file,
                    records,
                    bytes: bytes.len() as u64,
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        Ok(StateMachine {
            machine: Arc::new(Mutex::new(machine)),
            log,
            dir: dir.to_path_buf(),
            events,
        })
    }

    /// Runs `f` on the ledger as it stands.
    pub fn with_ledger<T>(&self, f: impl FnOnce(&Ledger) -> T) -> T {
        f(&self.machine.lock().ledger)
    }

    /// Runs `f` on the ledger as it stands and the index of the last entry applied to it.
    pub fn with_ledger_applied<T>(&self, f: impl FnOnce(&Ledger, u64) -> T) -> T {
        let machine = self.machine.lock();
        f(
            &machine.ledger,
            machine.last_applied.map_or(0, |id| id.index),
        )
    }

    /// The last entry applied.
    pub fn last_applied(&self) -> Option<LogId> {
        self.machine.lock().last_applied
    }

    /// Whether the log has grown enough past what the queue holds to be worth a
    /// snapshot.
    pub fn wants_snapshot(&self) -> bool {
        let held = self.machine.lock().ledger.bytes();
        let log_bytes = self.log.lock().disk_bytes();
        log_bytes >= SNAPSHOT_LOG_BYTES && log_bytes >= held.saturating_mul(SNAPSHOT_LOG_RATIO)
    }

    /// The record of the message at `offset`, if the queue holds it.
    pub fn record(&self, offset: u64) -> Result<Option<Vec<u8>>, String> {
        let snapshot = {
            let machine = self.machine.lock();
            if machine.ledger.get(offset).is_none() {
                return Ok(None);
            }
            machine.snapshot.clone()
        };
        read_record(&self.log, snapshot.as_deref(), offset)
    }

    fn write_snapshot(&self, bytes: &[u8]) -> Result<File, StorageError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        wharf_store::data_dir::write_atomically(&path, bytes)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        File::open(&path).map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

/// A message's record, from the snapshot or the log.
fn read_record(
    log: &Mutex<QuorumLog>,
    snapshot: Option<&SnapshotFile>,
    offset: u64,
) -> Result<Option<Vec<u8>>, String> {
    let (index, position) = position_of(offset);
    if let Some(snapshot) = snapshot.filter(|s| s.last_index().is_some_and(|last| index <= last)) {
        return snapshot.record(offset).map_err(|e| e.to_string());
    }
    let Some(bytes) = log.lock().entry(index).map_err(|e| e.to_string())? else {
        return Err(format!("entry {index} is not in the log"));
    };
    let entry = decode_entry(&bytes).map_err(|e| e.to_string())?;
    let EntryPayload::Normal(proposal) = entry.payload else {
        return Err(format!("entry {index} carries no messages"));
    };
    match Command::decode(&proposal.0).map_err(|e| e.to_string())? {
        Command::Enqueue(records) if position < records.len() => {
            Ok(Some(records[position].to_vec()))
        }
        _ => Err(format!("entry {index} has no message {position}")),
    }
}

/// A snapshot's bytes: magic, CRC32C of the rest, the meta (JSON, length first), the
/// ledger (length first), then each held message's record (length first), in the
/// ledger's order.
fn encode_snapshot(meta: &SnapshotMeta, ledger: &Ledger, records: &[Vec<u8>]) -> Vec<u8> {
    let meta = serde_json::to_vec(meta).expect("snapshot metas serialize");
    let ledger = ledger.encode();
    let mut body = Vec::with_capacity(
        16 + meta.len() + ledger.len() + records.iter().map(|r| r.len() + 4).sum::<usize>(),
    );
    body.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    body.extend_from_slice(&meta);
    body.extend_from_slice(&(ledger.len() as u64).to_le_bytes());
    body.extend_from_slice(&ledger);
    for record in records {
        body.extend_from_slice(&(record.len() as u32).to_le_bytes());
        body.extend_from_slice(record);
    }
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

type Parsed = (SnapshotMeta, Ledger, HashMap<u64, (u64, u32)>);

/// Reads a snapshot's meta and ledger, and where each record is in `bytes`.
fn parse_snapshot(bytes: &[u8]) -> Result<Parsed, String> {
    if bytes.len() < 8 || &bytes[..4] != SNAPSHOT_MAGIC {
        return Err("not a quorum queue snapshot".to_string());
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[8..]) != crc {
        return Err("its checksum does not match".to_string());
    }
    let mut at = 8usize;
    let mut take = |n: usize| -> Result<(usize, &[u8]), String> {
        let slice = bytes
            .get(at..at.checked_add(n).ok_or("too long")?)
            .ok_or_else(|| "cut short".to_string())?;
        let start = at;
        at += n;
        Ok((start, slice))
    };
    let meta_len = u32::from_le_bytes(take(4)?.1.try_into().expect("4 bytes")) as usize;
    let meta: SnapshotMeta =
        serde_json::from_slice(take(meta_len)?.1).map_err(|e| e.to_string())?;
    let ledger_len = u64::from_le_bytes(take(8)?.1.try_into().expect("8 bytes"));
    let ledger_len = usize::try_from(ledger_len).map_err(|e| e.to_string())?;
    let ledger = Ledger::decode(take(ledger_len)?.1).map_err(|e| e.to_string())?;
    let mut records = HashMap::with_capacity(ledger.len());
    for (offset, _) in ledger.messages() {
        let length = u32::from_le_bytes(take(4)?.1.try_into().expect("4 bytes"));
        let (start, _) = take(length as usize)?;
        records.insert(offset, (start as u64, length));
    }
    if take(0)?.0 != bytes.len() {
        return Err("bytes after the last record".to_string());
    }
    Ok((meta, ledger, records))
}

impl RaftSnapshotBuilder<QueueConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<QueueConfig>, StorageError> {
        // The state as of the last applied entry; the records are read outside the lock,
        // from entries that are committed (the log keeps them until this snapshot is
        // kept) or from the previous snapshot, whose file stays open.
        let (meta, ledger, previous) = {
            let mut machine = self.machine.lock();
            machine.built += 1;
            let snapshot_id = match machine.last_applied {
                Some(last) => format!("{}-{}-{}", last.leader_id, last.index, machine.built),
                None => format!("none-{}", machine.built),
            };
            let meta = SnapshotMeta {
                last_log_id: machine.last_applied,
                last_membership: machine.membership.clone(),
                snapshot_id,
            };
            (meta, machine.ledger.clone(), machine.snapshot.clone())
        };
        let this = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            let mut records = Vec::with_capacity(ledger.len());
            for (offset, _) in ledger.messages() {
                match read_record(&this.log, previous.as_deref(), offset)? {
                    Some(record) => records.push(record),
                    None => return Err(format!("the record of message {offset} is missing")),
                }
            }
            let bytes = encode_snapshot(&meta, &ledger, &records);
            let file = this.write_snapshot(&bytes).map_err(|e| e.to_string())?;
            let (_, _, positions) = parse_snapshot(&bytes)?;
            Ok::<_, String>((bytes, file, positions, meta))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|built| built);
        let (bytes, file, positions, meta) = built.map_err(|reason| {
            StorageIOError::write_snapshot(None, &std::io::Error::other(reason))
        })?;
        self.machine.lock().snapshot = Some(Arc::new(SnapshotFile {
            meta: meta.clone(),
            file,
            records: positions,
            bytes: bytes.len() as u64,
        }));
        tracing::debug!(dir = %self.dir.display(), last_log = ?meta.last_log_id, bytes = bytes.len(), "quorum queue snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<QueueConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let machine = self.machine.lock();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Option<Applied>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut answers = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let answer = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(proposal) => {
                    match Command::decode_shared(&bytes::Bytes::from(proposal.0)) {
                        Ok(command) => {
                            let applied = self.machine.lock().ledger.apply(log_id.index, &command);
                            self.events.applied(log_id.index, &command, applied);
                            Some(applied)
                        }
                        Err(error) => {
                            // Every replica reads the same bytes, so every replica skips it.
                            tracing::error!(dir = %self.dir.display(), index = log_id.index, %error, "a quorum queue entry that does not read; skipped");
                            None
                        }
                    }
                }
                EntryPayload::Membership(membership) => {
                    self.machine.lock().membership =
                        StoredMembership::new(Some(log_id), membership);
                    None
                }
            };
            self.machine.lock().last_applied = Some(log_id);
            answers.push(answer);
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let (_, ledger, positions) = parse_snapshot(&bytes).map_err(|reason| {
            StorageIOError::read_snapshot(Some(meta.signature()), &std::io::Error::other(reason))
        })?;
        let this = self.clone();
        let kept = bytes.clone();
        let file = tokio::task::spawn_blocking(move || this.write_snapshot(&kept))
            .await
            .map_err(|e| {
                StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string()))
            })??;
        {
            let mut machine = self.machine.lock();
            machine.ledger = ledger;
            machine.last_applied = meta.last_log_id;
            machine.membership = meta.last_membership.clone();
            machine.snapshot = Some(Arc::new(SnapshotFile {
                meta: meta.clone(),
                file,
                records: positions,
                bytes: bytes.len() as u64,
            }));
        }
        self.events.restored();
        tracing::info!(dir = %self.dir.display(), last_log = ?meta.last_log_id, "quorum queue snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<QueueConfig>>, StorageError> {
        let Some(snapshot) = self.machine.lock().snapshot.clone() else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; snapshot.bytes as usize];
        snapshot
            .file
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| StorageIOError::read_snapshot(Some(snapshot.meta.signature()), &e))?;
        Ok(Some(Snapshot {
            meta: snapshot.meta.clone(),
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
