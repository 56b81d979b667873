//! How a definitions change is made in memory, once it is committed: on a single node
//! after the definitions store wrote it, on a cluster node when the cluster applies it
//! (on every node, in the same order). One place makes each change, whichever way it
//! came.
//!
//! On a cluster node the change was checked where it was proposed, against that node's
//! state; by its turn in the log another change may have come first (the user deleted,
//! the vhost gone). So it is checked again here, against the state every node shares,
//! and refused the same way on every node when it no longer holds.
//!
//! Everything is replicated: users, vhosts (and their limits), permissions, topic
//! permissions, policies, and the vhosts' exchanges, queues and bindings (which their
//! vhost makes: see `vhost::cluster`).

use wharf_store::{Change, Definitions};

use crate::access::{Permission, TopicPermission};
use crate::administration::{AdminError, AdminResult};
use crate::broker::{user_from_def, Broker};
use crate::error::{Error, Result};
use crate::policy::Policy;

fn no_user(name: &str) -> Error {
    Error::not_found(format_args!("User \"{name}\" does not exist"))
}

fn no_vhost(name: &str) -> Error {
    Error::not_found(format_args!("Virtual host '{name}' does not exist"))
}

fn invalid(reason: impl std::fmt::Display) -> Error {
    Error::precondition(reason)
}

/// The vhost of a change to exchanges, queues or bindings.
fn topology_vhost(change: &Change) -> Option<&str> {
    match change {
        Change::PutExchange(def) => Some(&def.vhost),
        Change::PutQueue(def) => Some(&def.vhost),
        Change::PutBinding(def) | Change::DeleteBinding(def) => Some(&def.vhost),
        Change::DeleteExchange { vhost, .. }
        | Change::DeleteQueue { vhost, .. }
        | Change::MoveQueue { vhost, .. }
        | Change::SetQueueMembers { vhost, .. } => Some(vhost),
        _ => None,
    }
}

impl Broker {
    /// Commits an administrative change: through the cluster when the node belongs to
    /// one (every node makes it), else written to the definitions store and made here.
    /// The caller checked it against this node's state.
    pub(crate) fn commit(&self, change: Change) -> AdminResult {
        if let Some(cluster) = self.cluster.get() {
            return cluster.commit(change).map_err(AdminError::from);
        }
        if let Some(durability) = self.durability() {
            durability.record(change.clone())?;
        }
        self.make_change(&change);
        Ok(())
    }

    /// Applies a change the cluster committed: checked against the state every node
    /// shares, then made, and written to this node's definitions store as well (so that
    /// the vhosts its own queues live in are there at its next start; the cluster's log
    /// stays the authority).
    pub fn apply_replicated(&self, change: &Change) -> Result<()> {
        if let Some(vhost) = topology_vhost(change) {
            // The vhost checks, makes and records it.
            return self
                .vhost(vhost)
                .ok_or_else(|| no_vhost(vhost))?
                .apply_topology(change);
        }
        self.check_change(change)?;
        self.make_change(change);
        if let Some(durability) = self.durability() {
            if let Err(error) = durability.record(change.clone()) {
                tracing::warn!(%error.detail, "a replicated change is not in this node's definitions store; the cluster's log still has it");
            }
        }
        Ok(())
    }

    /// Makes the broker what `definitions` say (the cluster's snapshot, installed because
    /// this node fell far behind or lost its log): the changes from what this node's
    /// store holds to them are made (a deleted user's connections are closed, a deleted
    /// vhost's queues go), and the store becomes a copy of them.
    pub fn restore_replicated(&self, definitions: &Definitions) {
        let Some(durability) = self.durability() else {
            return;
        };
        let changes = durability.definitions().changes_to(definitions);
        let replaced = durability.replace(definitions.clone(), || {
            for change in &changes {
                if let Err(error) = self.apply_replicated(change) {
                    tracing::debug!(%error.detail, ?change, "a change towards the cluster's snapshot refused");
                }
            }
        });
        if let Err(error) = replaced {
            tracing::error!(%error.detail, "this node's definitions store does not hold the cluster's snapshot; its next start catches up again");
        }
    }

    /// Proposes the deletion of the queues the cluster says live on this node but that
    /// died with its last run (transient and exclusive ones). Called once the node caught
    /// up, before it serves clients; answers how many went.
    pub fn forget_lost_queues(&self) -> usize {
        let (Some(cluster), Some(durability)) = (self.cluster.get(), self.durability()) else {
            return 0;
        };
        let definitions = durability.definitions();
        let mut forgotten = 0;
        for vhost in self.vhosts() {
            for name in vhost.lost_queues(&definitions) {
                let change = Change::DeleteQueue {
                    vhost: vhost.name.to_string(),
                    name,
                };
                match cluster.commit(change) {
                    Ok(()) => forgotten += 1,
                    Err(error) => {
                        tracing::warn!(vhost = %vhost.name, %error.detail, "a queue lost at the last stop is still listed");
                    }
                }
            }
        }
        forgotten
    }

    /// Notes in this node's definitions store how far into the cluster's log its
    /// definitions are (`marker` is the cluster's own encoding), fsynced with them.
    pub fn mark_replicated(&self, marker: String) {
        if let Some(durability) = self.durability() {
            if let Err(error) = durability.record(Change::RaftApplied { marker }) {
                tracing::warn!(%error.detail, "how far the cluster's log is applied is not noted; a restart applies some of it again");
            }
        }
    }

    /// This node's definitions store (on a cluster node, a mirror of the cluster's
    /// definitions) and how far into the cluster's log it is, if this node ever applied
    /// any of it.
    pub fn replicated_definitions(&self) -> Option<(Definitions, String)> {
        let mut all = self.durability()?.definitions();
        let marker = all.raft_applied.take()?;
        Some((all, marker))
    }

    /// Whether `change` can be made now. Deterministic: every node decides the same.
    fn check_change(&self, change: &Change) -> Result<()> {
        match change {
            Change::PutUser(def) => {
                user_from_def(def)
                    .map_err(|reason| invalid(format_args!("user '{}': {reason}", def.name)))?;
            }
            Change::DeleteUser { name } => {
                self.access.user(name).ok_or_else(|| no_user(name))?;
            }
            Change::PutVhost(def) => {
                if def.name.is_empty() {
                    return Err(invalid("vhost name must not be empty"));
                }
            }
            Change::DeleteVhost { name } => {
                self.vhost(name).ok_or_else(|| no_vhost(name))?;
            }
            Change::PutPermission(def) => {
                self.access
                    .user(&def.user)
                    .ok_or_else(|| no_user(&def.user))?;
                self.vhost(&def.vhost).ok_or_else(|| no_vhost(&def.vhost))?;
                Permission::new(&def.configure, &def.write, &def.read).map_err(invalid)?;
            }
            Change::PutTopicPermission(def) => {
                self.access
                    .user(&def.user)
                    .ok_or_else(|| no_user(&def.user))?;
                self.vhost(&def.vhost).ok_or_else(|| no_vhost(&def.vhost))?;
                TopicPermission::new(&def.exchange, &def.write, &def.read).map_err(invalid)?;
            }
            Change::PutPolicy(def) => {
                self.vhost(&def.vhost).ok_or_else(|| no_vhost(&def.vhost))?;
                Policy::new(
                    &def.name,
                    &def.pattern,
                    &def.apply_to,
                    &def.definition,
                    def.priority,
                )
                .map_err(invalid)?;
            }
            Change::SetClusterName { name } => {
                if name.is_empty() {
                    return Err(invalid("the cluster name must not be empty"));
                }
            }
            Change::DeletePermission { .. }
            | Change::DeleteTopicPermission { .. }
            | Change::DeletePolicy { .. }
            | Change::Seeded
            | Change::RaftApplied { .. } => {}
            // Their vhost's (see `apply_replicated`).
            Change::PutExchange(_)
            | Change::DeleteExchange { .. }
            | Change::PutQueue(_)
            | Change::DeleteQueue { .. }
            | Change::PutBinding(_)
            | Change::DeleteBinding(_)
            | Change::MoveQueue { .. }
            | Change::SetQueueMembers { .. } => {}
        }
        Ok(())
    }

    /// Makes a checked change in memory.
    fn make_change(&self, change: &Change) {
        match change {
            Change::PutUser(def) => match user_from_def(def) {
                Ok(user) => self.access.put_user(user),
                Err(reason) => tracing::warn!(user = def.name, reason, "a user change skipped"),
            },
            Change::DeleteUser { name } => {
                self.access.remove_user(name);
                self.connections
                    .close_user(name, &format!("user '{name}' is deleted"));
            }
            Change::PutVhost(def) => {
                let vhost = self.create_vhost(&def.name);
                *vhost.metadata.write() = (def.description.clone(), def.tags.clone());
                *vhost.limits.write() = crate::limits::Limits::from_map(&def.limits);
            }
            Change::DeleteVhost { name } => {
                let Some(vhost) = self.vhosts.write().remove(name) else {
                    return;
                };
                // Its queues' counts stay in the broker's totals.
                self.deleted_vhosts.lock().add(&vhost.queue_totals());
                self.access.remove_vhost(name);
                self.connections
                    .close_vhost(name, &format!("vhost '{name}' is down"));
                vhost.destroy();
            }
            Change::PutPermission(def) => {
                if let Ok(permission) = Permission::new(&def.configure, &def.write, &def.read) {
                    self.access
                        .put_permission(&def.vhost, &def.user, permission);
                }
            }
            Change::DeletePermission { user, vhost } => {
                self.access.remove_permission(vhost, user);
            }
            Change::PutTopicPermission(def) => {
                if let Ok(permission) = TopicPermission::new(&def.exchange, &def.write, &def.read) {
                    self.access
                        .put_topic_permission(&def.vhost, &def.user, permission);
                }
            }
            Change::DeleteTopicPermission {
                user,
                vhost,
                exchange,
            } => {
                self.access
                    .remove_topic_permissions(vhost, user, exchange.as_deref());
            }
            Change::PutPolicy(def) => {
                let policy = Policy::new(
                    &def.name,
                    &def.pattern,
                    &def.apply_to,
                    &def.definition,
                    def.priority,
                );
                if let (Some(vhost), Ok(policy)) = (self.vhost(&def.vhost), policy) {
                    vhost.put_policy(policy);
                }
            }
            Change::DeletePolicy { vhost, name } => {
                if let Some(vhost) = self.vhost(vhost) {
                    vhost.remove_policy(name);
                }
            }
            Change::SetClusterName { name } => self.node.set_cluster_name(name.clone()),
            Change::Seeded | Change::RaftApplied { .. } => {}
            // Their vhost's (see `apply_replicated`).
            Change::PutExchange(_)
            | Change::DeleteExchange { .. }
            | Change::PutQueue(_)
            | Change::DeleteQueue { .. }
            | Change::PutBinding(_)
            | Change::DeleteBinding(_)
            | Change::MoveQueue { .. }
            | Change::SetQueueMembers { .. } => {}
        }
    }
}
