//! One replica of one quorum queue's group on this node: its log, its state machine and
//! the openraft instance that drives them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};
use wharf_core::quorum::{Applied, Command};
use wharf_store::quorum_log::QuorumLog;

use super::codec::{GroupAnswer, GroupRpc};
use super::log_store::LogStore;
use super::network::{GroupLink, GroupNetwork};
use super::state_machine::{ReplicaEvents, StateMachine};
use super::{GroupId, Proposal, QueueRaft};
use crate::config::NodeId;
use crate::raft::Member;

/// How long an RPC of a group may take (openraft also times its appends by this).
const RPC_TIMEOUT_MS: u64 = 2000;
/// A follower grants no vote for this long after it last heard from its leader
/// (openraft's leader lease is the election timeout's maximum).
const LEADER_LEASE_MS: u64 = 3000;
/// How long a snapshot may take to arrive.
const SNAPSHOT_TIMEOUT_MS: u64 = 120_000;
/// Entries behind a snapshot kept for a follower that lags a little.
const KEPT_BEHIND_SNAPSHOT: u64 = 256;

/// openraft's settings for a queue's group: no heartbeats, no election timer (the node's
/// supervisor does both for all groups), snapshots when the group asks.
pub fn group_config() -> Result<Arc<Config>, String> {
    Config {
        cluster_name: "wharf-quorum-queue".to_string(),
        heartbeat_interval: RPC_TIMEOUT_MS,
        election_timeout_min: LEADER_LEASE_MS - 500,
        election_timeout_max: LEADER_LEASE_MS,
        install_snapshot_timeout: SNAPSHOT_TIMEOUT_MS,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: KEPT_BEHIND_SNAPSHOT,
        max_payload_entries: 64,
        enable_tick: false,
        enable_heartbeat: false,
        enable_elect: false,
        ..Config::default()
    }
    .validate()
    .map(Arc::new)
    .map_err(|e| e.to_string())
}

/// Deletes a replica's directory (what it kept), off the runtime's threads.
pub(super) async fn remove_dir(dir: PathBuf) {
    let _ = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot remove a quorum queue's replica")
        }
    })
    .await;
}

/// Why a proposal was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this replica is not the queue's leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    Failed(String),
}

/// This node's replica of a queue's group.
pub struct GroupReplica {
    pub id: GroupId,
    pub raft: QueueRaft,
    pub state: StateMachine,
    log: LogStore,
    dir: PathBuf,
}

impl GroupReplica {
    /// Opens (or creates) the replica kept in `dir` and starts its Raft.
    pub async fn open(
        dir: &Path,
        id: GroupId,
        me: NodeId,
        link: Arc<dyn GroupLink>,
        events: Arc<dyn ReplicaEvents>,
        config: Arc<Config>,
    ) -> Result<GroupReplica, String> {
        let log_dir = dir.join("log");
        let log = tokio::task::spawn_blocking(move || QuorumLog::open(&log_dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let log = LogStore::new(log);
        let state = StateMachine::open(dir, log.shared(), events)?;
        let raft = QueueRaft::new(
            me,
            config,
            GroupNetwork { group: id, link },
            log.clone(),
            state.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(GroupReplica {
            id,
            raft,
            state,
            log,
            dir: dir.to_path_buf(),
        })
    }

    /// Starts a new group with `members` (this replica among them), if this replica never
    /// took part in one. Only one member of a new group does this.
    pub async fn initialize(&self, members: BTreeMap<NodeId, Member>) -> Result<(), String> {
        if !self.log.is_empty() {
            return Ok(());
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Commits `command` through the group and returns once this replica applied it.
    pub async fn propose(&self, command: &Command) -> Result<Applied, ProposeError> {
        match self.raft.client_write(Proposal(command.encode())).await {
            Ok(written) => written
                .data
                .ok_or_else(|| ProposeError::Failed("the entry did not apply".to_string())),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ProposeError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(error) => Err(ProposeError::Failed(error.to_string())),
        }
    }

    /// Hands `command` to the group, in the order of the calls, without waiting for it
    /// to commit: what comes back answers when it applied (see [`GroupReplica::answer`]).
    pub async fn submit(
        &self,
        command: &Command,
    ) -> Result<
        impl std::future::Future<Output = Result<Applied, ProposeError>> + Send + 'static,
        ProposeError,
    > {
        let receiver = self
            .raft
            .client_write_ff(Proposal(command.encode()))
            .await
            .map_err(|error| ProposeError::Failed(error.to_string()))?;
        Ok(async move { GroupReplica::answer(receiver.await) })
    }

    /// What a submitted command's receiver brought: what applying it did, or why it was
    /// not committed.
    fn answer(
        received: Result<
            Result<
                openraft::raft::ClientWriteResponse<super::QueueConfig>,
                ClientWriteError<NodeId, Member>,
            >,
            impl std::fmt::Display,
        >,
    ) -> Result<Applied, ProposeError> {
        match received {
            Ok(Ok(written)) => written
                .data
                .ok_or_else(|| ProposeError::Failed("the entry did not apply".to_string())),
            Ok(Err(ClientWriteError::ForwardToLeader(forward))) => Err(ProposeError::NotLeader {
                leader: forward.leader_id,
            }),
            Ok(Err(error)) => Err(ProposeError::Failed(error.to_string())),
            Err(error) => Err(ProposeError::Failed(format!("the group stopped: {error}"))),
        }
    }

    /// The group's leader as this replica knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this replica leads its group now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The group's members as this replica knows them.
    pub fn members(&self) -> BTreeMap<NodeId, Member> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .nodes()
            .map(|(id, member)| (*id, member.clone()))
            .collect()
    }

    /// Answers another replica's RPC.
    pub async fn handle(&self, rpc: GroupRpc) -> GroupAnswer {
        match rpc {
            GroupRpc::AppendEntries(request) => {
                GroupAnswer::AppendEntries(self.raft.append_entries(request).await)
            }
            GroupRpc::Vote(request) => GroupAnswer::Vote(self.raft.vote(request).await),
            GroupRpc::Snapshot { vote, meta, data } => {
                let snapshot = openraft::Snapshot {
                    meta,
                    snapshot: Box::new(std::io::Cursor::new(data)),
                };
                GroupAnswer::Snapshot(
                    self.raft
                        .install_full_snapshot(vote, snapshot)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
        }
    }

    /// Takes a snapshot if the log has grown well past what the queue holds.
    pub async fn snapshot_if_worth_it(&self) {
        if self.state.wants_snapshot() {
            if let Err(error) = self.raft.trigger().snapshot().await {
                tracing::warn!(group = %format!("{:x}", self.id), %error, "cannot take a quorum queue snapshot");
            }
        }
    }

    /// Stops the replica's Raft.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(group = %format!("{:x}", self.id), %error, "a quorum queue's Raft did not stop cleanly");
        }
    }

    /// Stops the replica and deletes what it kept (the queue is gone from this node).
    pub async fn destroy(self) {
        self.shutdown().await;
        let dir = self.dir.clone();
        drop(self);
        remove_dir(dir).await;
    }

    /// How long a proposal may wait before its publisher is told it was not taken.
    pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);
}
