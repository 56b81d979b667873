//! The replicated state machine: the definitions (vhosts, users, permissions, policies,
//! exchanges, queues, bindings) that every node applies the committed entries to, in the
//! same order. It is the store's [`DefinitionState`], the same that a single node's
//! definitions log replays into; a cluster node keeps it here instead, and tells the
//! broker of each change through an [`Applier`].
//!
//! Its snapshot is `<data-dir>/raft/snapshot`: `<crc32c as 8 hex digits> <JSON>`, written
//! atomically whenever openraft builds or installs one. A node that restarts loads it and
//! openraft applies the log entries after it again; a node that fell far behind is sent
//! the leader's.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftLogId, StorageIOError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use wharf_store::{Change, DefinitionState, Definitions};

use super::{
    Command, Entry, LogId, Outcome, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const SNAPSHOT_FILE: &str = "snapshot";

/// What the broker does with the replicated definitions (called in log order, on every
/// node, from the state machine's task), and with the messages other nodes forward to
/// its queues.
pub trait Applier: Send + Sync + 'static {
    /// Replaces everything with `definitions` (a snapshot installed or loaded).
    fn restore(&self, definitions: &Definitions);
    /// Applies one committed change; what it answers goes back to the proposer.
    fn apply(&self, change: &Change) -> Outcome;
    /// What the broker kept of the replicated definitions, and the marker it was given
    /// with them last ([`Applier::mark_applied`]): the state machine starts from there,
    /// so that nothing the broker already holds is applied again.
    fn applied(&self) -> Option<(Definitions, String)>;
    /// Notes, durably, that everything up to `marker` is applied.
    fn mark_applied(&self, marker: String);
    /// Enqueues a forwarded message (`record`, as a queue's log stores one) on `queues`
    /// of `vhost`, and calls `done` with whether they took it. A node without a broker
    /// takes nothing.
    fn take_forwarded(
        &self,
        _vhost: &str,
        _queues: &[&str],
        _record: Vec<u8>,
        done: Box<dyn FnOnce(bool) + Send>,
    ) {
        done(false)
    }
    /// [`Applier::take_forwarded`] of a message of this node's own (no wire between).
    fn take_forwarded_message(
        &self,
        vhost: &str,
        queues: &[&str],
        message: wharf_core::message::Message,
        done: Box<dyn FnOnce(bool) + Send>,
    ) {
        self.take_forwarded(vhost, queues, message.encode_record(None), done)
    }
    /// A channel of node `peer` consumes from a queue of this node's.
    fn serve_consume(
        &self,
        _peer: &str,
        request: wharf_core::cluster::ConsumeRequest,
    ) -> Result<(), (String, String)> {
        Err((
            "NOT_FOUND".to_string(),
            format!("no queue '{}' on this node", request.queue),
        ))
    }
    /// A control of such a consumer; whether the consumer is still held.
    fn serve_control(&self, _peer: &str, _control: wharf_core::cluster::ConsumerControl) -> bool {
        false
    }
    /// Deliveries node `home` pushed to this node's consumers; the keys of those gone.
    fn take_pushed(&self, _home: &str, pushed: Vec<wharf_core::cluster::Pushed>) -> Vec<u64> {
        pushed
            .iter()
            .map(|p| match p {
                wharf_core::cluster::Pushed::Delivery { key, .. }
                | wharf_core::cluster::Pushed::Cancelled { key } => *key,
            })
            .collect()
    }
    /// Node `peer`'s consumers here go (all, or those of `keys`), what they held requeued.
    fn release_peer(&self, _peer: &str, _keys: Option<&[u64]>) {}
    /// This node's consumers on node `home`'s queues are cancelled (all, or `keys`).
    fn cancel_subscriptions(&self, _home: &str, _keys: Option<&[u64]>) {}
    /// This node's answer to another member's operator request.
    fn answer_operator(
        &self,
        _request: &wharf_core::cluster::OperatorRequest,
    ) -> Vec<serde_json::Value> {
        Vec::new()
    }
    /// Answers node `peer`'s request about one of this node's queues.
    fn answer_queue_request(
        &self,
        _peer: &str,
        _vhost: &str,
        queue: &str,
        _request: wharf_core::cluster::QueueRequest,
    ) -> wharf_core::cluster::QueueAnswer {
        wharf_core::cluster::QueueAnswer::Refused {
            kind: "NOT_FOUND".to_string(),
            detail: format!("no queue '{queue}' on this node"),
        }
    }
}

/// An applier that only keeps the state (a node whose broker is not attached yet).
pub struct NoApplier;

impl Applier for NoApplier {
    fn restore(&self, _: &Definitions) {}
    fn apply(&self, _: &Change) -> Outcome {
        Outcome::Applied
    }
    fn applied(&self) -> Option<(Definitions, String)> {
        None
    }
    fn mark_applied(&self, _: String) {}
}

/// How far the broker's definitions are: the last entry applied and the membership then.
#[derive(Serialize, Deserialize)]
struct Marker {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    definitions: Definitions,
}

struct Machine {
    state: DefinitionState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    current: Option<(SnapshotMeta, Vec<u8>)>,
    snapshots_built: u64,
}

/// The state machine. Clones share it (openraft's snapshot builder is one).
#[derive(Clone)]
pub struct StateMachine {
    machine: Arc<Mutex<Machine>>,
    applier: Arc<dyn Applier>,
    dir: PathBuf,
}

impl StateMachine {
    /// Starts where the broker's definitions are (its note of the log, when `resume` and
    /// it has one), else from the last snapshot kept in `dir`, if any. A node whose Raft
    /// log is new (its `raft/` removed, to join again) does not resume: its note speaks
    /// of a log it no longer has.
    pub fn open(
        dir: &Path,
        applier: Arc<dyn Applier>,
        resume: bool,
    ) -> Result<StateMachine, String> {
        let path = dir.join(SNAPSHOT_FILE);
        let mut machine = Machine {
            state: DefinitionState::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            current: None,
            snapshots_built: 0,
        };
        let noted = if resume { applier.applied() } else { None };
        let kept = noted.and_then(|(definitions, marker)| {
            match serde_json::from_str::<Marker>(&marker) {
                Ok(marker) => Some((definitions, marker)),
                Err(error) => {
                    tracing::warn!(%error, "the broker's note of the cluster's log does not read; starting from the snapshot");
                    None
                }
            }
        });
        let resumed = kept.is_some();
        if let Some((definitions, marker)) = kept {
            // The broker holds the cluster's changes up to the marker already (it read
            // them from its definitions store): start there, and apply only what follows.
            machine.state = DefinitionState::from_definitions(definitions);
            machine.last_applied = marker.last_applied;
            machine.membership = marker.membership;
        }
        match std::fs::read(&path) {
            Ok(bytes) if resumed => {
                // Kept to be sent to others; the broker is past it.
                if let Some(json) = checked_json(&bytes) {
                    if let Ok(file) = serde_json::from_slice::<SnapshotFile>(json) {
                        machine.current = Some((file.meta, json.to_vec()));
                    }
                }
            }
            Ok(bytes) => {
                let json = checked_json(&bytes).ok_or_else(|| {
                    format!("{}: damaged (its checksum does not match)", path.display())
                })?;
                let file: SnapshotFile = serde_json::from_slice(json)
                    .map_err(|e| format!("{}: damaged: {e}", path.display()))?;
                applier.restore(&file.definitions);
                machine.state = DefinitionState::from_definitions(file.definitions);
                machine.last_applied = file.meta.last_log_id;
                machine.membership = file.meta.last_membership.clone();
                machine.current = Some((file.meta, json.to_vec()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        Ok(StateMachine {
            machine: Arc::new(Mutex::new(machine)),
            applier,
            dir: dir.to_path_buf(),
        })
    }

    /// The definitions as of the last applied entry.
    pub fn definitions(&self) -> Definitions {
        self.machine.lock().state.to_definitions()
    }

    /// Tells the broker how far it is into the log, with the membership then.
    fn mark_applied(&self) {
        let marker = {
            let machine = self.machine.lock();
            Marker {
                last_applied: machine.last_applied,
                membership: machine.membership.clone(),
            }
        };
        let marker = serde_json::to_string(&marker).expect("markers serialize");
        self.applier.mark_applied(marker);
    }

    /// Whether the cluster's default vhost and user were made.
    pub fn is_seeded(&self) -> bool {
        self.machine.lock().state.is_seeded()
    }

    /// Writes the snapshot file on the blocking pool (it fsyncs).
    async fn keep_aside(&self, json: Vec<u8>) -> Result<(), StorageError> {
        let keeper = self.clone();
        tokio::task::spawn_blocking(move || keeper.keep(&json))
            .await
            .map_err(|e| {
                StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string()))
            })?
    }

    fn keep(&self, json: &[u8]) -> Result<(), StorageError> {
        let mut bytes = format!("{:08x} ", crc32c(json)).into_bytes();
        bytes.extend_from_slice(json);
        wharf_store::data_dir::write_atomically(&self.dir.join(SNAPSHOT_FILE), &bytes)
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The JSON of a kept snapshot, if its checksum matches.
fn checked_json(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < 9 || bytes[8] != b' ' {
        return None;
    }
    let stored = u32::from_str_radix(std::str::from_utf8(&bytes[..8]).ok()?, 16).ok()?;
    let json = &bytes[9..];
    (crc32c(json) == stored).then_some(json)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, json) = {
            let mut machine = self.machine.lock();
            machine.snapshots_built += 1;
            let snapshot_id = match machine.last_applied {
                Some(last) => format!(
                    "{}-{}-{}",
                    last.leader_id, last.index, machine.snapshots_built
                ),
                None => format!("none-{}", machine.snapshots_built),
            };
            let meta = SnapshotMeta {
                last_log_id: machine.last_applied,
                last_membership: machine.membership.clone(),
                snapshot_id,
            };
            let file = SnapshotFile {
                meta: meta.clone(),
                definitions: machine.state.to_definitions(),
            };
            (
                meta,
                serde_json::to_vec(&file).expect("definitions serialize"),
            )
        };
        self.keep_aside(json.clone()).await?;
        self.machine.lock().current = Some((meta.clone(), json.clone()));
        tracing::info!(last_log = ?meta.last_log_id, bytes = json.len(), "metadata snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(json)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let machine = self.machine.lock();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        for entry in entries {
            let log_id = *entry.get_log_id();
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Applied,
                EntryPayload::Normal(Command::Change(change)) => {
                    let outcome = self.applier.apply(&change);
                    if outcome == Outcome::Applied {
                        self.machine.lock().state.apply_replicated(change);
                    }
                    outcome
                }
                EntryPayload::Normal(Command::Seed(changes)) => {
                    if self.machine.lock().state.is_seeded() {
                        Outcome::Applied
                    } else {
                        for change in changes {
                            if self.applier.apply(&change) == Outcome::Applied {
                                self.machine.lock().state.apply_replicated(change);
                            }
                        }
                        Outcome::Applied
                    }
                }
                EntryPayload::Membership(membership) => {
                    self.machine.lock().membership =
                        StoredMembership::new(Some(log_id), membership);
                    Outcome::Applied
                }
            };
            self.machine.lock().last_applied = Some(log_id);
            outcomes.push(outcome);
        }
        self.mark_applied();
        Ok(outcomes)
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
        let json = snapshot.into_inner();
        let file: SnapshotFile = serde_json::from_slice(&json)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.keep_aside(json.clone()).await?;
        self.applier.restore(&file.definitions);
        let mut machine = self.machine.lock();
        machine.state = DefinitionState::from_definitions(file.definitions);
        machine.last_applied = meta.last_log_id;
        machine.membership = meta.last_membership.clone();
        machine.current = Some((meta.clone(), json));
        drop(machine);
        self.mark_applied();
        tracing::info!(last_log = ?meta.last_log_id, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let machine = self.machine.lock();
        Ok(machine.current.as_ref().map(|(meta, json)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(json.clone())),
        }))
    }
}
