//! The broker: its virtual hosts, users and open connections. One `Arc<Broker>` is shared
//! by every listener and connection; the maps are read on connect and changed only by
//! administration (crate::administration).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use wharf_store::{
    Change, DataDir, DefinitionStore, Definitions, PermissionDef, Recovery, StoreError, UserDef,
    VhostDef,
};

use crate::access::{
    AccessControl, HashingAlgorithm, PasswordHash, Permission, TopicPermission, User,
};
use crate::connections::Connections;
use crate::durability::Durability;
use crate::flusher::Flusher;
use crate::queue::ConnectionId;
use crate::timer::Timers;
use crate::vhost::VHost;

/// When confirms (and tx.commit-ok) for persistent messages go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// After the message is fsynced, many publishers sharing each fsync.
    #[default]
    Batch,
    /// As soon as the message is written to the OS: survives a broker crash, not a power cut.
    Never,
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Users who may connect only from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// The user created on the first start, with all permissions on the default vhost
    /// (RabbitMQ's `default_user` / `default_pass`).
    pub default_user: String,
    pub default_pass: String,
    pub fsync: FsyncPolicy,
    /// How many ready messages each queue keeps in memory before the rest wait on disk.
    pub queue_window: crate::queue::Window,
    /// Where a durable queue's log starts a new segment file.
    pub segment_bytes_max: u64,
    /// Start on damaged definitions with what still reads, logging what is lost, rather
    /// than refuse (`--force-recovery`).
    pub force_recovery: bool,
    /// The node's name (`--node-name`); None: `wharf@` and the host name.
    pub node_name: Option<String>,
    /// Create the default vhost and user on the first start. A cluster node does not: its
    /// cluster does, once, for every node.
    pub seed_defaults: bool,
    /// The broker is a cluster node's: its definitions store mirrors the cluster's, and
    /// the queues it holds are homed on it by name.
    pub clustered: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            loopback_users: vec!["guest".to_string()],
            default_user: "guest".to_string(),
            default_pass: "guest".to_string(),
            fsync: FsyncPolicy::Batch,
            queue_window: crate::queue::Window::default(),
            segment_bytes_max: crate::queue::SEGMENT_BYTES_MAX,
            force_recovery: false,
            seed_defaults: true,
            node_name: None,
            clustered: false,
        }
    }
}

#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    durability: Option<Arc<Durability>>,
    flusher: Option<Arc<Flusher>>,
    /// Runs timed work: message and queue expiry.
    timers: Arc<Timers>,
    pub access: Arc<AccessControl>,
    pub connections: Arc<Connections>,
    /// Memory and disk as the resource monitors last measured them, and the alarms.
    pub resources: Arc<crate::resources::Resources>,
    /// When this process started and where it listens.
    pub node: crate::node::Node,
    pub(crate) vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    /// What the queues of deleted vhosts had counted (the broker's totals keep it).
    pub(crate) deleted_vhosts: parking_lot::Mutex<crate::vhost::QueueHistory>,
    next_connection_id: AtomicU64,
    /// Held by each administrative change across its check, record and apply, so that
    /// two at once (from two `wharf ctl` calls) cannot interleave.
    pub(crate) administration: parking_lot::Mutex<()>,
    /// The cluster this node belongs to, once attached.
    pub(crate) cluster: crate::cluster::ClusterSlot,
    /// Consuming across the cluster's nodes: this node's subscriptions to other nodes'
    /// queues, and their consumers on its queues. Shared with the vhosts.
    pub(crate) consuming: Arc<crate::consuming::RemoteConsuming>,
}

/// The vhost every broker starts with.
pub const DEFAULT_VHOST: &str = "/";

impl Broker {
    /// A broker as RabbitMQ starts fresh: vhost "/" and the default user (guest/guest),
    /// kept in memory only.
    pub fn new(config: BrokerConfig) -> Self {
        let mut seed = Definitions::default();
        seed_into(&config, &mut seed, |_| Ok(())).expect("seeding in memory cannot fail");
        let broker = Self::with_durability(config, None);
        broker.restore_access(&seed);
        for def in &seed.vhosts {
            *broker.create_vhost(&def.name).metadata.write() =
                (def.description.clone(), def.tags.clone());
        }
        broker
    }

    /// A broker whose durable definitions live in `data_dir`, restored from it. On the
    /// first start, the default vhost and user are created there.
    pub fn open(config: BrokerConfig, data_dir: &std::path::Path) -> Result<Self, StoreError> {
        let data_dir = DataDir::open(data_dir)?;
        let recovery = if config.force_recovery {
            Recovery::Force
        } else {
            Recovery::Refuse
        };
        let mut store = DefinitionStore::open_with(&data_dir, recovery)?;
        let mut definitions = store.definitions();
        if !definitions.seeded && config.seed_defaults {
            seed_into(&config, &mut definitions, |change| store.record(change))?;
        }
        let durability = Durability::new(store, &data_dir, config.segment_bytes_max);
        let broker = Self::with_durability(config, Some(durability));
        broker.restore_access(&definitions);
        if let Some(name) = &definitions.cluster_name {
            broker.node.set_cluster_name(name.clone());
        }
        for def in &definitions.vhosts {
            let vhost = broker.create_vhost(&def.name);
            *vhost.metadata.write() = (def.description.clone(), def.tags.clone());
            *vhost.limits.write() = crate::limits::Limits::from_map(&def.limits);
            vhost.restore(&definitions);
        }
        if let Some(durability) = &broker.durability {
            durability.set_aside_unnamed(&definitions);
        }
        tracing::info!(
            vhosts = definitions.vhosts.len(),
            users = definitions.users.len(),
            exchanges = definitions.exchanges.len(),
            queues = definitions.queues.len(),
            bindings = definitions.bindings.len(),
            "restored durable definitions"
        );
        Ok(broker)
    }

    /// Users and permissions as stored; one that no longer reads is skipped, logged.
    fn restore_access(&self, definitions: &Definitions) {
        for def in &definitions.users {
            match user_from_def(def) {
                Ok(user) => self.access.put_user(user),
                Err(reason) => tracing::warn!(user = def.name, reason, "stored user skipped"),
            }
        }
        for def in &definitions.permissions {
            match Permission::new(&def.configure, &def.write, &def.read) {
                Ok(p) => self.access.put_permission(&def.vhost, &def.user, p),
                Err(reason) => tracing::warn!(user = def.user, reason, "stored permission skipped"),
            }
        }
        for def in &definitions.topic_permissions {
            let permission = match TopicPermission::new(&def.exchange, &def.write, &def.read) {
                Ok(permission) => permission,
                Err(reason) => {
                    // Skipped, the exchange would allow every key: kept, it allows none.
                    tracing::warn!(
                        user = def.user,
                        reason,
                        "stored topic permission does not compile: it denies every key"
                    );
                    TopicPermission {
                        exchange: def.exchange.clone(),
                        write: def.write.clone(),
                        read: def.read.clone(),
                    }
                }
            };
            self.access
                .put_topic_permission(&def.vhost, &def.user, permission);
        }
    }

    fn with_durability(config: BrokerConfig, durability: Option<Arc<Durability>>) -> Self {
        // A cluster node's publishers wait for other nodes' queues as for its own logs, so
        // it has a flusher whatever its fsync policy (its own logs are then synced too).
        let flusher = (durability.is_some()
            && (config.fsync == FsyncPolicy::Batch || config.clustered))
            .then(Flusher::start);
        let node = config
            .node_name
            .clone()
            .map(crate::node::Node::named)
            .unwrap_or_default();
        let cluster = crate::cluster::ClusterSlot::default();
        let connections: Arc<Connections> = Arc::default();
        if config.clustered {
            cluster.set_member(node.name().to_string());
            Broker::answer_census(&cluster, &connections);
        }
        Broker {
            config,
            durability,
            flusher,
            timers: Timers::start(),
            access: Arc::default(),
            connections,
            resources: Arc::default(),
            node,
            vhosts: RwLock::new(HashMap::new()),
            deleted_vhosts: Default::default(),
            next_connection_id: AtomicU64::new(1),
            administration: parking_lot::Mutex::new(()),
            cluster,
            consuming: Arc::default(),
        }
    }

    /// Makes this broker a cluster node's: from now on, replicated changes (users,
    /// vhosts, permissions, limits, policies) are committed through `cluster` and applied
    /// on every node. A second cluster is refused.
    pub fn attach_cluster(&self, cluster: Arc<dyn crate::cluster::Cluster>) -> bool {
        let attached = self.cluster.set(cluster);
        if attached {
            // The quorum queues known before (restored, or applied while the cluster
            // started) open their replicas here now.
            for vhost in self.vhosts() {
                vhost.host_quorum_replicas();
            }
        }
        attached
    }

    /// What this node's messages forwarded to other nodes hold, on a cluster node: its
    /// publishers wait while it is full.
    pub fn forward_window(&self) -> Option<&Arc<crate::cluster::ForwardWindow>> {
        self.cluster.member().map(|_| self.cluster.forward_window())
    }

    /// The cluster this node belongs to, if any.
    pub fn cluster(&self) -> Option<&Arc<dyn crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// Where the node finds its cluster, and its views for cluster-wide lists.
    pub fn cluster_slot(&self) -> &crate::cluster::ClusterSlot {
        &self.cluster
    }

    /// What every queue did since the broker started: the queues of every vhost (their
    /// live counters and those of queues deleted), and the vhosts deleted.
    pub fn queue_history(&self) -> crate::vhost::QueueHistory {
        let mut total = *self.deleted_vhosts.lock();
        for vhost in self.vhosts() {
            total.add(&vhost.queue_totals());
        }
        total
    }

    /// The group-commit flusher that confirms of persistent messages wait for, if any.
    pub fn flusher(&self) -> Option<&Arc<Flusher>> {
        self.flusher.as_ref()
    }

    pub(crate) fn durability(&self) -> Option<&Arc<Durability>> {
        self.durability.as_ref()
    }

    /// The vhost of that name, made (in memory only) if there is none.
    pub(crate) fn create_vhost(&self, name: &str) -> Arc<VHost> {
        self.vhosts
            .write()
            .entry(name.to_string())
            .or_insert_with(|| {
                VHost::new_in(
                    name.to_string(),
                    self.durability.clone(),
                    self.config.queue_window,
                    self.timers.clone(),
                    self.cluster.clone(),
                    self.consuming.clone(),
                )
            })
            .clone()
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    /// Every vhost, by name.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        let mut all: Vec<_> = self.vhosts.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `user` may log in from a non-loopback address.
    pub fn allows_remote(&self, user: &str) -> bool {
        !self.config.loopback_users.iter().any(|u| u == user)
    }
}

/// What the first start creates: the default vhost, and the default user with every
/// permission on it. Written through `record`, and into `definitions`.
fn seed_into(
    config: &BrokerConfig,
    definitions: &mut Definitions,
    mut record: impl FnMut(Change) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let vhost = VhostDef {
        name: DEFAULT_VHOST.to_string(),
        description: "Default virtual host".to_string(),
        tags: Vec::new(),
        limits: Default::default(),
    };
    let hash = PasswordHash::new(&config.default_pass);
    let user = UserDef {
        name: config.default_user.clone(),
        password_hash: hash.to_base64(),
        hashing_algorithm: hash.algorithm.name().to_string(),
        tags: vec!["administrator".to_string()],
        limits: Default::default(),
    };
    let permission = PermissionDef {
        user: user.name.clone(),
        vhost: vhost.name.clone(),
        configure: ".*".to_string(),
        write: ".*".to_string(),
        read: ".*".to_string(),
    };
    // A data directory from before vhosts were stored already has "/" in use.
    if !definitions.vhosts.iter().any(|v| v.name == vhost.name) {
        record(Change::PutVhost(vhost.clone()))?;
        definitions.vhosts.push(vhost);
    }
    record(Change::PutUser(user.clone()))?;
    record(Change::PutPermission(permission.clone()))?;
    record(Change::Seeded)?;
    definitions.users.push(user);
    definitions.permissions.push(permission);
    definitions.seeded = true;
    Ok(())
}

/// The changes that create the default vhost and user, as a cluster commits them once.
pub fn seed_changes(config: &BrokerConfig) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut definitions = Definitions::default();
    seed_into(config, &mut definitions, |change| {
        changes.push(change);
        Ok(())
    })
    .expect("collecting changes cannot fail");
    // The cluster is named after the node that seeds it (RabbitMQ names a cluster after
    // its first node), so that every node shows one name.
    if let Some(name) = &config.node_name {
        changes.push(Change::SetClusterName { name: name.clone() });
    }
    changes
}

/// A stored user as the access control keeps it.
pub(crate) fn user_from_def(def: &UserDef) -> Result<User, String> {
    let password = if def.password_hash.is_empty() {
        None
    } else {
        let algorithm = HashingAlgorithm::parse(&def.hashing_algorithm).ok_or_else(|| {
            format!(
                "unsupported hashing algorithm '{}' (rabbit_password_hashing_sha256 and _sha512 are)",
                def.hashing_algorithm
            )
        })?;
        Some(
            PasswordHash::from_base64(&def.password_hash, algorithm)
                .ok_or_else(|| "password_hash is not base64 of a salt and a digest".to_string())?,
        )
    };
    Ok(User {
        name: def.name.clone(),
        password,
        tags: def.tags.clone(),
        limits: crate::limits::Limits::from_map(&def.limits),
    })
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.timers.stop();
        if let Some(flusher) = &self.flusher {
            flusher.stop();
        }
    }
}
