//! Quorum queues: a queue replicated on a majority of the cluster's nodes, each replica
//! a member of the queue's own Raft group (the cluster crate runs the groups). This
//! module is the queue's side of it, independent of the consensus library: the
//! [`Command`]s a group's log carries and their encoding, and the [`Ledger`] every
//! replica applies them to in log order.
//!
//! (This module names nothing else of the crate: the queue, the vhost and the cluster
//! all meet here. The queue that runs on a leader is `crate::quorum_queue`'s.)
//!
//! The leader decides, the log records the decisions: which messages were published
//! (their records, in order), which are gone (acknowledged, rejected, expired, dropped
//! over a length limit, dead-lettered, purged) and which came back from a consumer
//! (counted towards their delivery limit). Deliveries themselves are not replicated: a
//! new leader offers again everything still in its ledger, marked redelivered when it
//! may have been delivered before (an entry from an earlier term).

pub mod command;
pub mod ledger;

pub use command::{offset_of, position_of, BadCommand, Command, Reader, MESSAGES_PER_ENTRY_MAX};
pub use ledger::{Applied, Held, Ledger};

/// Where a quorum queue's leader sends what it decides about its messages: to the
/// group's log, batched (see `queue`). Called with the queue's lock held: never blocks.
pub trait Decisions: Send + Sync {
    /// The message at `offset` is gone (acknowledged, rejected, expired, dropped,
    /// dead-lettered, purged).
    fn settled(&self, offset: u64);
    /// The message at `offset` came back from a consumer: one more delivery counted.
    fn returned(&self, offset: u64);
}

/// A message of a quorum queue as its group holds it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// As `Message::encode_record` wrote it.
    pub record: Vec<u8>,
    /// How many times a consumer gave it back.
    pub returns: u32,
    /// It may have been delivered before (an earlier leader's, or returned).
    pub redelivered: bool,
}

/// Where a quorum queue's leader reads the messages it does not keep in memory.
pub trait Records: Send + Sync {
    /// The message at `offset`, or None when the group no longer holds it.
    fn read(&self, offset: u64) -> Option<Stored>;
}

/// What a quorum queue needs of this node's replica of its group (the cluster crate's).
pub trait Replica: Send + Sync + 'static {
    /// Commits `command` through the group; `done` is called once this replica applied
    /// it, or with why it was not (this replica does not lead, no majority in time).
    fn propose(&self, command: Command, done: Box<dyn FnOnce(Result<Applied, String>) + Send>);
    /// The record of a message the group holds, with its bookkeeping.
    fn read(&self, offset: u64) -> Option<(Vec<u8>, Held)>;
    /// Runs `f` on the ledger as it stands, with the index of the last entry applied.
    fn with_ledger(&self, f: &mut dyn FnMut(&Ledger, u64));
}

/// A quorum queue as this node's replica of its group drives it (the cluster crate
/// calls these; `crate::quorum_queue::QuorumQueue` answers them).
pub trait ReplicatedQueue: Send + Sync + 'static {
    /// The group's id.
    fn group(&self) -> u64;
    /// The names of the nodes that hold its replicas, the first the one that starts it.
    fn members(&self) -> Vec<String>;
    /// This node's replica is open: the group is reached through it.
    fn attach_replica(&self, replica: std::sync::Arc<dyn Replica>);
    /// The entry at `index` was applied on this node's replica.
    fn applied(&self, index: u64, command: &Command);
    /// The group's leader is now the node named `leader` (this one when `here`), as far
    /// as this replica knows; `last_log_index` is the last entry of its log then.
    /// Answers whether the cluster should be told the queue's leader moved (this node
    /// leads now, and the queue's record still says otherwise).
    fn leadership(&self, leader: Option<String>, here: bool, last_log_index: u64) -> bool;
    /// The queue's vhost and name.
    fn names(&self) -> (String, String);
}
