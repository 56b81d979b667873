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

pub use command::{offset_of, position_of, Command, MESSAGES_PER_ENTRY_MAX};
pub use ledger::{Applied, Ledger};
