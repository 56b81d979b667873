//! Quorum queues' Raft groups: one openraft group per queue, its members the nodes that
//! hold a replica. Each replica keeps the queue's log in its own segments
//! ([`wharf_store::quorum_log`]) and applies it to the queue's ledger
//! ([`wharf_core::quorum`]); the groups of a node share its connections to the other
//! nodes, and a group's RPCs travel tagged with its id.
//!
//! Groups do not keep time on their own: openraft's heartbeats and election timers are
//! off, and the node's [`supervisor`] watches the peers once for all its groups. A
//! leader's node that stops answering has each group it led elect a new leader among the
//! replicas that still reach each other; a leader that wrote since the last round tells
//! its followers how far the group committed. Ten thousand queues cost no timer each.

pub mod codec;
pub mod group;
pub mod groups;
pub mod hosting;
pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use wharf_core::quorum::Applied;

use crate::config::NodeId;
use crate::raft::Member;

/// Which queue's group: chosen when the queue is declared, so that a queue declared again
/// under the same name is another group.
pub type GroupId = u64;

/// A command of the queue's (`wharf_core::quorum::Command`), encoded: the log keeps it as
/// it was proposed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal(pub Vec<u8>);

impl std::fmt::Debug for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proposal({} bytes)", self.0.len())
    }
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

openraft::declare_raft_types!(
    /// The types a quorum queue's group is made of.
    pub QueueConfig:
        D = Proposal,
        R = Option<Applied>,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<QueueConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type QueueRaft = openraft::Raft<QueueConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<QueueConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;

#[cfg(test)]
mod tests;
