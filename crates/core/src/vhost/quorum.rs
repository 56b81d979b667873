//! A vhost's quorum queues on a cluster node (see `crate::quorum`): where a new one's
//! replicas go, what every node makes of its committed declare, move, membership and
//! delete, and which of this node's queues serves a request for one.

use std::collections::HashMap;
use std::sync::Arc;

use wharf_amqp::{ByteString, FieldValue};
use wharf_store::{QueueDef, QuorumDef};

use super::VHost;
use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, Result};
use crate::queue::remote::RemoteQueue;
use crate::queue::{Queue, QueueOptions};
use crate::queue_arguments::Locator;
use crate::quorum_queue::QuorumQueue;

/// The argument that sets how many replicas a new quorum queue gets.
pub const INITIAL_GROUP_SIZE: &str = "x-quorum-initial-group-size";
/// Replicas a quorum queue gets without that argument (all the members when fewer).
pub const DEFAULT_GROUP_SIZE: usize = 3;
/// Queue arguments a quorum queue refuses (RabbitMQ 3.10's list).
const UNSUPPORTED_ARGUMENTS: [&str; 2] = ["x-max-priority", "x-queue-mode"];

/// What a node that does not lead a quorum queue answers a request for it.
pub fn not_leader(queue: &QuorumQueue) -> Error {
    Error::new(
        ErrorKind::NotLeader,
        format_args!(
            "no leader of queue '{}' in vhost '{}' could be reached",
            queue.name, queue.vhost
        ),
    )
}

impl VHost {
    pub fn quorum_queue(&self, name: &str) -> Option<Arc<QuorumQueue>> {
        self.quorum_queues.read().get(name).cloned()
    }

    pub fn quorum_queues(&self) -> Vec<Arc<QuorumQueue>> {
        self.quorum_queues.read().values().cloned().collect()
    }

    /// The queue of this node that serves another node's request for `name`: its own, or
    /// a quorum queue's while this node leads it.
    pub fn served_queue(&self, name: &str) -> Result<Arc<Queue>> {
        if let Ok(queue) = self.queue(name) {
            return Ok(queue);
        }
        match self.quorum_queue(name) {
            Some(quorum) => quorum.engine().ok_or_else(|| not_leader(&quorum)),
            None => Err(self.no_queue(name)),
        }
    }

    /// Refuses a quorum queue declare as RabbitMQ does: arguments quorum queues do not
    /// take, then auto-delete, exclusive, non-durable and server-named queues.
    pub(super) fn check_quorum_declare(&self, declare: &super::QueueDeclare) -> Result<()> {
        let (name, vhost) = (&declare.name, &self.name);
        for argument in UNSUPPORTED_ARGUMENTS {
            if declare.arguments.get(argument).is_some() {
                return Err(Error::precondition(format_args!(
                    "invalid arg '{argument}' for queue '{name}' in vhost '{vhost}' of queue type \
                     rabbit_quorum_queue"
                )));
            }
        }
        if let Some(value) = declare.arguments.get(INITIAL_GROUP_SIZE) {
            if value.as_i64().is_none_or(|n| n <= 0) {
                return Err(Error::precondition(format_args!(
                    "invalid arg '{INITIAL_GROUP_SIZE}' for queue '{name}' in vhost '{vhost}': {}",
                    describe_size(value)
                )));
            }
        }
        let property = if declare.auto_delete {
            Some("auto-delete")
        } else if declare.exclusive {
            Some("exclusive-owner")
        } else if !declare.durable {
            Some("non-durable")
        } else {
            None
        };
        if let Some(property) = property {
            return Err(Error::precondition(format_args!(
                "invalid property '{property}' for queue '{name}' in vhost '{vhost}'"
            )));
        }
        if name.is_empty() || declare.server_named {
            return Err(Error::precondition(
                "Cannot declare a server-named queue for type rabbit_quorum_queue",
            ));
        }
        Ok(())
    }

    /// The replicas of a new quorum queue: as many members as it asks for (three by
    /// default, all when fewer are up), the first its leader as the locator places it,
    /// the others those holding the fewest replicas.
    pub(super) fn place_replicas(
        &self,
        cluster: &dyn Cluster,
        name: &str,
        options: &QueueOptions,
    ) -> Result<QuorumDef> {
        let here = self
            .cluster
            .member()
            .ok_or_else(|| Error::new(ErrorKind::InternalError, "a cluster node without a name"))?
            .to_string();
        let size = options
            .arguments
            .get(INITIAL_GROUP_SIZE)
            .and_then(FieldValue::as_i64)
            .filter(|n| *n > 0)
            .map_or(DEFAULT_GROUP_SIZE, |n| n as usize);
        let mut up = cluster.members_up();
        if !up.contains(&here) {
            up.push(here.clone());
        }
        up.sort();
        let policy = self.policy_for_queue(name);
        let locator = Locator::of(&options.arguments, policy.as_ref().map(|p| &p.definition))
            .map_err(|error| Error::precondition(error.describe(name, &self.name)))?;
        let mut leaders: HashMap<&str, usize> = up.iter().map(|m| (m.as_str(), 0)).collect();
        let mut replicas: HashMap<&str, usize> = leaders.clone();
        let remotes = self.remote_queues();
        let homes: Vec<String> = remotes.iter().map(|r| r.home()).collect();
        for home in &homes {
            if let Some(count) = leaders.get_mut(home.as_str()) {
                *count += 1;
            }
        }
        if let Some(count) = leaders.get_mut(here.as_str()) {
            *count += self.queues.read().len();
        }
        let quorum_queues = self.quorum_queues();
        for queue in &quorum_queues {
            for member in queue.members() {
                if let Some(count) = replicas.get_mut(member.as_str()) {
                    *count += 1;
                }
            }
        }
        let leader = match locator {
            Locator::ClientLocal => here.clone(),
            Locator::Balanced => up
                .iter()
                .min_by_key(|m| (leaders[m.as_str()], *m != &here, (*m).clone()))
                .cloned()
                .unwrap_or_else(|| here.clone()),
        };
        let mut others: Vec<&String> = up.iter().filter(|m| **m != leader).collect();
        others.sort_by_key(|m| (replicas[m.as_str()], (*m).clone()));
        let mut members = vec![leader];
        members.extend(others.into_iter().take(size.saturating_sub(1)).cloned());
        Ok(QuorumDef {
            group: rand::random(),
            members,
        })
    }

    /// Makes the record of a committed quorum queue declare; a member opens its replica.
    pub(super) fn apply_quorum_queue(
        &self,
        def: &QueueDef,
        quorum: &QuorumDef,
        options: QueueOptions,
    ) -> Result<()> {
        if self.keeps(true) {
            self.record(|| wharf_store::Change::PutQueue(def.clone()))?;
        }
        let queue = self.add_quorum_queue(def, quorum, options);
        self.host_replica(&queue);
        Ok(())
    }

    /// Makes a quorum queue's records (restored, or committed).
    pub(super) fn add_quorum_queue(
        &self,
        def: &QueueDef,
        quorum: &QuorumDef,
        options: QueueOptions,
    ) -> Arc<QuorumQueue> {
        let name = ByteString::from(def.name.as_str());
        let home = def
            .home
            .clone()
            .or_else(|| quorum.members.first().cloned())
            .unwrap_or_default();
        let remote = Arc::new(RemoteQueue::quorum(
            name.clone(),
            self.name.clone(),
            home,
            options,
        ));
        let queue = Arc::new(QuorumQueue::new(
            remote.clone(),
            quorum.group,
            quorum.members.clone(),
            self.queue_window,
            self.this.clone(),
        ));
        self.remote_queues.write().insert(name.clone(), remote);
        self.quorum_queues.write().insert(name, queue.clone());
        queue
    }

    /// Opens this node's replica of `queue`, if it is a member and the cluster is here.
    fn host_replica(&self, queue: &Arc<QuorumQueue>) {
        let (Some(here), Some(cluster)) = (self.cluster.member(), self.cluster.get()) else {
            return;
        };
        if queue.members().iter().any(|m| m == here) {
            cluster.host_replica(queue.clone() as Arc<dyn crate::quorum::ReplicatedQueue>);
        }
    }

    /// Opens this node's replicas of the vhost's quorum queues it holds (once the cluster
    /// is attached: the records may have been made before).
    pub fn host_quorum_replicas(&self) {
        for queue in self.quorum_queues() {
            self.host_replica(&queue);
        }
    }

    /// A quorum queue is deleted: its leader here (if any) stops, and this node's replica
    /// goes. Returns whether `name` was a quorum queue.
    pub(super) fn remove_quorum_queue(&self, name: &str) -> bool {
        let Some(queue) = self.quorum_queues.write().remove(name) else {
            return false;
        };
        queue.retire();
        let here = self.cluster.member();
        if let (Some(cluster), true) = (
            self.cluster.get(),
            queue.members().iter().any(|m| Some(m.as_str()) == here),
        ) {
            cluster.drop_replica(queue.group);
        }
        true
    }

    /// A quorum queue's leader moved to `home`: its record follows, and this node's
    /// consumers of it subscribe again there.
    pub(super) fn move_quorum_queue(&self, name: &str, group: u64, home: &str) {
        let Some(queue) = self.quorum_queue(name).filter(|q| q.group == group) else {
            return;
        };
        if queue.remote.home() != home {
            queue.remote.set_home(home);
            tracing::debug!(queue = name, vhost = %self.name, leader = home, "a quorum queue's leader moved");
        }
        self.follow_quorum_queue(&queue.remote);
    }

    /// A quorum queue's replicas are now on `members`: this node opens or drops its own.
    pub(super) fn set_quorum_members(&self, name: &str, group: u64, members: &[String]) {
        let Some(queue) = self.quorum_queue(name).filter(|q| q.group == group) else {
            return;
        };
        let here = self.cluster.member();
        let was = queue.members().iter().any(|m| Some(m.as_str()) == here);
        let is = members.iter().any(|m| Some(m.as_str()) == here);
        queue.set_members(members.to_vec());
        match (was, is) {
            (false, true) => self.host_replica(&queue),
            (true, false) => {
                queue.retire();
                if let Some(cluster) = self.cluster.get() {
                    cluster.drop_replica(queue.group);
                }
            }
            _ => {}
        }
    }
}

fn describe_size(value: &FieldValue) -> String {
    match value.as_i64() {
        Some(0) => "{value_zero,0}".to_string(),
        Some(n) => format!("{{value_negative,{n}}}"),
        None => format!(
            "\"expected integer, got {}\"",
            crate::queue_arguments::type_name(value)
        ),
    }
}
