//! Quorum queues: a queue replicated on a majority of the cluster's nodes, each replica
//! a member of the queue's own Raft group (the cluster crate runs the groups). This
//! module is the queue's side of it, independent of the consensus library: the
//! [`Command`]s a group's log carries and their encoding, and the [`Ledger`] every
//! replica applies them to in log order.
//!
//! The leader decides, the log records the decisions: which messages were published
//! (their records, in order), which are gone (acknowledged, rejected, expired, dropped
//! over a length limit, dead-lettered, purged) and which came back from a consumer
//! (counted towards their delivery limit). Deliveries themselves are not replicated: a
//! new leader offers again everything still in its ledger, marked redelivered when it
//! may have been delivered before (an entry from an earlier term).

pub mod command;
pub mod ledger;
pub mod queue;

pub use command::{offset_of, position_of, Command, MESSAGES_PER_ENTRY_MAX};
pub use ledger::{Applied, Held, Ledger};
pub use queue::{QuorumQueue, Replica};

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
