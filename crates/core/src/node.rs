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

/// A certificate a listener presents, and when it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCertificate {
    pub subject: String,
    /// Seconds since the epoch.
    pub not_after: i64,
}

#[derive(Debug)]
pub struct Node {
    name: String,
    /// The cluster name, once set (RabbitMQ's `set_cluster_name`).
    cluster_name: RwLock<Option<String>>,
    certificates: RwLock<Vec<NodeCertificate>>,
    /// How many client connections the listeners take at once, when bounded.
    connection_limit: RwLock<Option<u64>>,
    started: Instant,
    listeners: RwLock<Vec<NodeListener>>,
}

impl Default for Node {
    fn default() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        Node {
            name: format!("wharf@{host}"),
            cluster_name: RwLock::default(),
            certificates: RwLock::default(),
            connection_limit: RwLock::default(),
            started: Instant::now(),
            listeners: RwLock::default(),
        }
    }
}

impl Node {
    /// A node with the name its operator gave it (`--node-name`).
    pub fn named(name: String) -> Node {
        Node {
            name,
            ..Node::default()
        }
    }

    /// The node's name, as RabbitMQ's `rabbit@host`: `wharf@` and the host name, unless
    /// named otherwise.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name clients and operators are shown for the node's cluster: the one set, or
    /// (as RabbitMQ's default) the node's own.
    pub fn cluster_name(&self) -> String {
        self.cluster_name
            .read()
            .clone()
            .unwrap_or_else(|| self.name.clone())
    }

    pub(crate) fn set_cluster_name(&self, name: String) {
        *self.cluster_name.write() = Some(name);
    }

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

    /// Replaces the certificates the listeners present (at start and after a reload).
    pub fn set_certificates(&self, certificates: Vec<NodeCertificate>) {
        *self.certificates.write() = certificates;
    }

    pub fn set_connection_limit(&self, limit: u64) {
        *self.connection_limit.write() = Some(limit);
    }

    pub fn connection_limit(&self) -> Option<u64> {
        *self.connection_limit.read()
    }

    pub fn certificates(&self) -> Vec<NodeCertificate> {
        self.certificates.read().clone()
    }
}
