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
//! Replicated for now: users, vhosts (and their limits), permissions, topic permissions
//! and policies. Exchanges, queues and bindings are each node's own until they are.

use std::collections::HashSet;

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
        self.check_change(change)?;
        self.make_change(change);
        if let Some(durability) = self.durability() {
            if let Err(error) = durability.record(change.clone()) {
                tracing::warn!(%error.detail, "a replicated change is not in this node's definitions store; the cluster's log still has it");
            }
        }
        Ok(())
    }

    /// Makes the replicated part of the broker what `definitions` say (a cluster snapshot
    /// loaded at start, or installed because this node fell far behind): what is not in
    /// them goes (a deleted user's connections are closed, a deleted vhost's queues go),
    /// what is in them is put.
    pub fn restore_replicated(&self, definitions: &Definitions) {
        let vhosts: HashSet<&str> = definitions.vhosts.iter().map(|v| v.name.as_str()).collect();
        for vhost in self.vhosts() {
            if !vhosts.contains(&*vhost.name) {
                self.make_change(&Change::DeleteVhost {
                    name: vhost.name.to_string(),
                });
            }
        }
        for def in &definitions.vhosts {
            self.make_change(&Change::PutVhost(def.clone()));
        }
        let users: HashSet<&str> = definitions.users.iter().map(|u| u.name.as_str()).collect();
        for user in self.access.users() {
            if !users.contains(user.name.as_str()) {
                self.make_change(&Change::DeleteUser { name: user.name });
            }
        }
        for def in &definitions.users {
            self.make_change(&Change::PutUser(def.clone()));
        }
        let permissions: HashSet<(&str, &str)> = definitions
            .permissions
            .iter()
            .map(|p| (p.vhost.as_str(), p.user.as_str()))
            .collect();
        for (vhost, user, _) in self.access.permissions() {
            if !permissions.contains(&(vhost.as_str(), user.as_str())) {
                self.access.remove_permission(&vhost, &user);
            }
        }
        for def in &definitions.permissions {
            self.make_change(&Change::PutPermission(def.clone()));
        }
        let topic: HashSet<(&str, &str, &str)> = definitions
            .topic_permissions
            .iter()
            .map(|p| (p.vhost.as_str(), p.user.as_str(), p.exchange.as_str()))
            .collect();
        for (vhost, user, permission) in self.access.topic_permissions() {
            if !topic.contains(&(vhost.as_str(), user.as_str(), permission.exchange.as_str())) {
                self.access
                    .remove_topic_permissions(&vhost, &user, Some(&permission.exchange));
            }
        }
        for def in &definitions.topic_permissions {
            self.make_change(&Change::PutTopicPermission(def.clone()));
        }
        for vhost in self.vhosts() {
            let kept: HashSet<&str> = definitions
                .policies
                .iter()
                .filter(|p| p.vhost == *vhost.name)
                .map(|p| p.name.as_str())
                .collect();
            for policy in vhost.policies() {
                if !kept.contains(&*policy.name) {
                    vhost.remove_policy(&policy.name);
                }
            }
        }
        for def in &definitions.policies {
            self.make_change(&Change::PutPolicy(def.clone()));
        }
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

    /// The replicated part of this node's definitions store (users, vhosts, permissions,
    /// topic permissions, policies) and how far into the cluster's log it is, if this
    /// node ever applied any of it.
    pub fn replicated_definitions(&self) -> Option<(Definitions, String)> {
        let all = self.durability()?.definitions();
        let marker = all.raft_applied.clone()?;
        let replicated = Definitions {
            vhosts: all.vhosts,
            users: all.users,
            permissions: all.permissions,
            topic_permissions: all.topic_permissions,
            policies: all.policies,
            seeded: all.seeded,
            raft_applied: None,
            ..Definitions::default()
        };
        Some((replicated, marker))
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
            Change::DeletePermission { .. }
            | Change::DeleteTopicPermission { .. }
            | Change::DeletePolicy { .. }
            | Change::Seeded
            | Change::RaftApplied { .. } => {}
            Change::PutExchange(_)
            | Change::DeleteExchange { .. }
            | Change::PutQueue(_)
            | Change::DeleteQueue { .. }
            | Change::PutBinding(_)
            | Change::DeleteBinding(_) => {
                return Err(Error::new(
                    crate::ErrorKind::NotImplemented,
                    "exchanges, queues and bindings are not replicated yet",
                ))
            }
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
            Change::Seeded | Change::RaftApplied { .. } => {}
            Change::PutExchange(_)
            | Change::DeleteExchange { .. }
            | Change::PutQueue(_)
            | Change::DeleteQueue { .. }
            | Change::PutBinding(_)
            | Change::DeleteBinding(_) => {}
        }
    }
}
