//! The broker: its virtual hosts and users. One `Arc<Broker>` is shared by every listener
//! and connection; the maps are read on connect and changed only by administration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use wharf_store::{DataDir, DefinitionStore, StoreError};

use crate::durability::Durability;
use crate::flusher::Flusher;
use crate::queue::ConnectionId;
use crate::timer::Timers;
use crate::users::Users;
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
    pub fsync: FsyncPolicy,
    /// How many ready messages each queue keeps in memory before the rest wait on disk.
    pub queue_window: crate::queue::Window,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            loopback_users: vec!["guest".to_string()],
            fsync: FsyncPolicy::Batch,
            queue_window: crate::queue::Window::default(),
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
    pub users: Users,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    next_connection_id: AtomicU64,
}

impl Broker {
    /// A broker as RabbitMQ starts fresh: vhost "/" and user guest/guest, kept in memory
    /// only.
    pub fn new(config: BrokerConfig) -> Self {
        Self::with_durability(config, None)
    }

    /// A broker whose durable definitions live in `data_dir`, restored from it.
    pub fn open(config: BrokerConfig, data_dir: &std::path::Path) -> Result<Self, StoreError> {
        let data_dir = DataDir::open(data_dir)?;
        let store = DefinitionStore::open(&data_dir)?;
        let definitions = store.definitions();
        let broker = Self::with_durability(config, Some(Durability::new(store, data_dir.path())));
        let vhost = broker.vhost("/").expect("the default vhost exists");
        vhost.restore(&definitions);
        tracing::info!(
            exchanges = definitions.exchanges.len(),
            queues = definitions.queues.len(),
            bindings = definitions.bindings.len(),
            "restored durable definitions"
        );
        Ok(broker)
    }

    fn with_durability(config: BrokerConfig, durability: Option<Arc<Durability>>) -> Self {
        let flusher =
            (durability.is_some() && config.fsync == FsyncPolicy::Batch).then(Flusher::start);
        let broker = Broker {
            config,
            durability,
            flusher,
            timers: Timers::start(),
            users: Users::new(),
            vhosts: RwLock::new(HashMap::new()),
            next_connection_id: AtomicU64::new(1),
        };
        broker.add_vhost("/");
        broker.users.add("guest", "guest", &["administrator"]);
        broker
    }

    /// The group-commit flusher that confirms of persistent messages wait for, if any.
    pub fn flusher(&self) -> Option<&Arc<Flusher>> {
        self.flusher.as_ref()
    }

    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        self.vhosts
            .write()
            .entry(name.to_string())
            .or_insert_with(|| {
                VHost::new(
                    name.to_string(),
                    self.durability.clone(),
                    self.config.queue_window,
                    self.timers.clone(),
                )
            })
            .clone()
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `user` may log in from a non-loopback address.
    pub fn allows_remote(&self, user: &str) -> bool {
        !self.config.loopback_users.iter().any(|u| u == user)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.timers.stop();
        if let Some(flusher) = &self.flusher {
            flusher.stop();
        }
    }
}
