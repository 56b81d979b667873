//! What the durable definitions are: the records a snapshot and the log hold.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod opaque {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeDef {
    pub vhost: String,
    pub name: String,
    pub kind: String,
    pub auto_delete: bool,
    pub internal: bool,
    #[serde(with = "opaque")]
    pub arguments: Vec<u8>,
    /// A single node stores durable exchanges only; a cluster replicates transient ones
    /// too (they live as long as the cluster does). Absent from older records: durable.
    #[serde(default = "durable")]
    pub durable: bool,
}

fn durable() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDef {
    pub vhost: String,
    pub name: String,
    pub auto_delete: bool,
    #[serde(with = "opaque")]
    pub arguments: Vec<u8>,
    /// As for exchanges: transient queues are replicated on a cluster only. Absent from
    /// older records: durable.
    #[serde(default = "durable")]
    pub durable: bool,
    /// An exclusive queue's owner: a connection of the queue's home node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_owner: Option<u64>,
    /// The cluster node (by name) that holds the queue's messages; None on a single node
    /// (the node itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// A quorum queue's group and the nodes that hold its replicas (`home` is then where
    /// its leader was last seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumDef>,
}

/// A quorum queue's replication: its Raft group's id (chosen when the queue was declared,
/// so that a queue declared again under the same name is a new group) and its members.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QuorumDef {
    pub group: u64,
    /// Node names, the first the one that started the group.
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    Queue,
    Exchange,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BindingDef {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    pub destination_kind: DestinationKind,
    pub routing_key: String,
    #[serde(with = "opaque")]
    pub arguments: Vec<u8>,
}

/// A policy: arguments applied to the queues and exchanges whose names match a pattern.
/// The definition is JSON text, as given (the store does not read it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDef {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    pub apply_to: String,
    pub definition: String,
    pub priority: i64,
}

/// A user. The password is kept as RabbitMQ keeps it: `password_hash` is base64 of a
/// 4-byte salt and the digest of salt ++ password (empty: no password, certificate login
/// only); `hashing_algorithm` names the digest as RabbitMQ does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDef {
    pub name: String,
    pub password_hash: String,
    pub hashing_algorithm: String,
    pub tags: Vec<String>,
    /// max-connections, max-channels (absent: no limit).
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// max-connections, max-queues (absent: no limit).
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
}

/// What a user may do in a vhost: regular expressions over resource names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// What routing keys a user may publish with (write) and bind with (read) on a topic
/// exchange of a vhost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPermissionDef {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// One change to the durable definitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    PutExchange(ExchangeDef),
    DeleteExchange {
        vhost: String,
        name: String,
    },
    PutQueue(QueueDef),
    DeleteQueue {
        vhost: String,
        name: String,
    },
    PutBinding(BindingDef),
    DeleteBinding(BindingDef),
    PutPolicy(PolicyDef),
    DeletePolicy {
        vhost: String,
        name: String,
    },
    PutUser(UserDef),
    /// Also removes the user's permissions.
    DeleteUser {
        name: String,
    },
    PutVhost(VhostDef),
    /// Also removes everything in the vhost and every permission on it.
    DeleteVhost {
        name: String,
    },
    PutPermission(PermissionDef),
    DeletePermission {
        user: String,
        vhost: String,
    },
    PutTopicPermission(TopicPermissionDef),
    /// `exchange` None: the user's topic permissions on every exchange of the vhost.
    DeleteTopicPermission {
        user: String,
        vhost: String,
        exchange: Option<String>,
    },
    /// The default vhost and user were created (once, on the first start).
    Seeded,
    /// The name the node (or the cluster) shows its clients and operators (RabbitMQ's
    /// cluster name); once set, it is replaced, never cleared.
    SetClusterName {
        name: String,
    },
    /// A cluster node applied its replicated log up to this point (opaque to the store:
    /// the cluster's own encoding of the entry's id and the membership): what these
    /// definitions hold of the cluster's changes, so that a restart does not apply them
    /// again.
    RaftApplied {
        marker: String,
    },
    /// A quorum queue's leader is now on the node `home` (for group `group`: a stale move
    /// of a queue declared again since changes nothing).
    MoveQueue {
        vhost: String,
        name: String,
        group: u64,
        home: String,
    },
    /// A quorum queue's replicas are now on `members`.
    SetQueueMembers {
        vhost: String,
        name: String,
        group: u64,
        members: Vec<String>,
    },
}

/// Every durable definition, as of the last change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definitions {
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
    /// (Absent from snapshots written before policies existed; the same for every field
    /// below, added with access control.)
    #[serde(default)]
    pub policies: Vec<PolicyDef>,
    #[serde(default)]
    pub vhosts: Vec<VhostDef>,
    #[serde(default)]
    pub users: Vec<UserDef>,
    #[serde(default)]
    pub permissions: Vec<PermissionDef>,
    #[serde(default)]
    pub topic_permissions: Vec<TopicPermissionDef>,
    /// Whether the default vhost and user were created: they are created once, so that
    /// deleting them is not undone by a restart.
    #[serde(default)]
    pub seeded: bool,
    /// The cluster name, once set (a node without one shows its own name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// On a cluster node: how far into the cluster's log these definitions are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_applied: Option<String>,
}
