//! The cluster's metadata as one replicated state machine on openraft: what an entry
//! carries ([`Command`]), what applying it answers ([`Outcome`]), and the adapters that
//! give openraft this node's disk ([`log_store`], [`state_machine`]) and its links to the
//! other nodes ([`network`]).

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use wharf_store::Change;

use crate::config::NodeId;

/// A member of the Raft group as the others reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its cluster address (`IP:port`).
    pub address: String,
}

/// What a log entry asks every node to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A change to the definitions (a declare, a delete, a user, a policy...).
    Change(Change),
    /// The default vhost and user, made once for the whole cluster: applied only if no
    /// seed was applied before, all its changes together.
    Seed(Vec<Change>),
}

/// What applying an entry answered, returned to the node that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Applied,
    /// The change could not be made as the state stood when its turn came: the kind of
    /// refusal (as the broker names it, `NOT_FOUND`...) and the reason a client is told.
    Refused {
        kind: String,
        detail: String,
    },
}

openraft::declare_raft_types!(
    /// The types Wharf's metadata group is made of.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
