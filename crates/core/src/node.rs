//! This broker process as an operator sees it: when it started and where it listens. The
//! binary records its listeners once they are bound; `wharf ctl status`, and the HTTP
//! API's overview, read them here.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

/// One bound listener: the protocol it serves ("amqp", "amqp/ssl") and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeListener {
    pub protocol: String,
    pub address: SocketAddr,
}

#[derive(Debug)]
pub struct Node {
    started: Instant,
    listeners: RwLock<Vec<NodeListener>>,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            started: Instant::now(),
            listeners: RwLock::default(),
        }
    }
}

impl Node {
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn add_listener(&self, protocol: &str, address: SocketAddr) {
        self.listeners.write().push(NodeListener {
            protocol: protocol.to_string(),
            address,
        });
    }

    pub fn listeners(&self) -> Vec<NodeListener> {
        self.listeners.read().clone()
    }
}
