//! What nodes ask each other once connected, and what they answer: Raft's own RPCs, a
//! change forwarded to the leader, a request to join, and a probe of a node's state.

use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use wharf_core::cluster::{
    ConsumeRequest, ConsumerControl, OperatorRequest, QueueAnswer, QueueRequest,
};

use crate::config::NodeId;
use crate::raft::{Command, Member, Outcome, SnapshotMeta, TypeConfig, Vote};

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// A whole snapshot (the definitions as JSON text).
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: String,
    },
    /// A change proposed on another node, for the leader to commit.
    Write(Command),
    /// A node that is not a seed asks to become a member.
    Join {
        node_id: NodeId,
        member: Member,
    },
    /// How is this node, and what does it know of the cluster?
    Probe,
    /// The leader's commit index, confirmed by a majority: a node that applied that far
    /// has seen every change committed before it asked.
    ReadIndex,
    /// Answer once this node applied the log up to `index` (or after a short while): the
    /// proposer of a change waits for the members that answer, so that the change holds
    /// on every node that is up by the time its client is answered.
    AwaitApplied {
        index: u64,
    },
    /// The leader removes this member from the cluster.
    Forget {
        node_id: NodeId,
    },
    /// A channel of the asking node consumes from a queue of this node's.
    Consume(ConsumeRequest),
    /// A settlement, credit or cancel of such a consumer.
    Control(ConsumerControl),
    /// What an operator's tool asks of every member: its part of a cluster-wide list,
    /// or an action on what it holds.
    Operator(OperatorRequest),
    /// A client of the asking node operates on a queue of this node's.
    Queue {
        vhost: String,
        queue: String,
        request: QueueRequest,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<SnapshotResponse<NodeId>, String>),
    Write(Result<Written, WriteRefusal>),
    Join(Result<(), WriteRefusal>),
    Probe(Probe),
    ReadIndex(Result<u64, WriteRefusal>),
    /// Whether it applied that far in time.
    AwaitApplied(bool),
    Forget(Result<(), WriteRefusal>),
    /// For each delivery of a batch, in order, whether its queues took its message.
    Delivered(Vec<bool>),
    Queue(QueueAnswer),
    /// A consumer registered, or why not: the error's kind (its AMQP name) and text.
    Consumed(Result<(), (String, String)>),
    /// Whether the consumer a control named is still held.
    Controlled(bool),
    /// The keys of pushed deliveries' consumers the receiver no longer has.
    Pushed(Vec<u64>),
    Operator(Vec<serde_json::Value>),
    /// A quorum queue group's answer, as its group answer frame carried it (never sent
    /// as JSON).
    Group(Vec<u8>),
}

/// A change committed and applied on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    /// Its place in the log: the proposer waits until it applied that far itself.
    pub index: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteRefusal {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    Failed(String),
}

/// A node's answer to a probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub name: String,
    /// Whether it belongs to a cluster already (it has a vote or a log).
    pub initialized: bool,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_applied: Option<u64>,
    /// The members of the cluster as this node knows them.
    #[serde(default)]
    pub members: Vec<NodeId>,
}
