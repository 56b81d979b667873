//! A queue that lives on another cluster node. Every node knows every queue (the cluster
//! replicates their definitions), but only the queue's home node holds its messages and
//! consumers; the others keep this record of it, so that a declare is checked against it
//! and a binding can lead to it.

use std::sync::atomic::{AtomicBool, Ordering};

use wharf_amqp::ByteString;

use super::{ConnectionId, QueueOptions};
use crate::error::{Error, ErrorKind, Result};

#[derive(Debug)]
pub struct RemoteQueue {
    pub name: ByteString,
    pub vhost: ByteString,
    /// The node that holds it.
    pub home: String,
    /// As declared; an exclusive queue's owner is a connection of the home node.
    pub options: QueueOptions,
    deleted: AtomicBool,
}

impl RemoteQueue {
    pub fn new(name: ByteString, vhost: ByteString, home: String, options: QueueOptions) -> Self {
        RemoteQueue {
            name,
            vhost,
            home,
            options,
            deleted: AtomicBool::new(false),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// An exclusive queue is its owner's, and its owner is a connection of another node:
    /// no connection of this one may use it.
    pub fn check_owner(&self, _connection: ConnectionId) -> Result<()> {
        match self.options.exclusive_owner {
            Some(_) => Err(super::locked_queue(&self.name, &self.vhost)),
            None => Ok(()),
        }
    }

    /// What an operation this node cannot do yet on another node's queue answers.
    pub fn out_of_reach(&self, operation: &str) -> Error {
        Error::new(
            ErrorKind::NotImplemented,
            format_args!(
                "queue '{}' in vhost '{}' is on node {}; {operation} a queue of another node is \
                 not supported by this version",
                self.name, self.vhost, self.home
            ),
        )
    }
}
