//! Wharf's cluster: nodes started with the same seed list find each other, prove they
//! share the cluster secret, and keep the broker's metadata (the definitions) as one
//! replicated state machine on openraft. A change proposed on any node is committed by a
//! majority, each fsyncing it, and applied on every node in the same order.
//!
//! Layers, from the socket up: [`wire`] (frames), [`handshake`] (mutual proof of the
//! secret), [`transport`] (one connection per peer, many requests on it), [`raft`] (the
//! log on disk, the state machine, openraft's network), [`node`] (formation, joining,
//! writes through the leader, status).

// openraft's storage traits return its `StorageError` by value; our helpers that build
// one for them do the same.
#![allow(clippy::result_large_err)]

pub mod broker_link;
pub mod config;
pub mod consumers;
pub mod forward;
pub mod handshake;
pub mod messages;
pub mod node;
pub mod quorum;
pub mod raft;
pub mod status;
pub mod tls;
pub mod transport;
pub mod wire;

pub use broker_link::{BrokerApplier, ClusterHandle};
pub use config::{ClusterConfig, NodeId, Secret};
pub use node::{ClusterError, ClusterNode, WriteError};
pub use raft::state_machine::{Applier, NoApplier};
pub use raft::{Command, Outcome};
pub use status::{ClusterStatus, MemberState, MemberStatus};
