//! The definitions as a state that changes apply to, keyed so that each is applied
//! quickly: what the log replays into, and what a cluster's state machine holds.

use std::collections::BTreeMap;

use super::model::*;

/// The definitions being replayed, keyed for fast changes.
#[derive(Default)]
pub struct State {
    exchanges: BTreeMap<(String, String), ExchangeDef>,
    queues: BTreeMap<(String, String), QueueDef>,
    bindings: BTreeMap<BindingDef, ()>,
    policies: BTreeMap<(String, String), PolicyDef>,
    vhosts: BTreeMap<String, VhostDef>,
    users: BTreeMap<String, UserDef>,
    /// By (vhost, user).
    permissions: BTreeMap<(String, String), PermissionDef>,
    /// By (vhost, user, exchange).
    topic_permissions: BTreeMap<(String, String, String), TopicPermissionDef>,
    seeded: bool,
    cluster_name: Option<String>,
    raft_applied: Option<String>,
}

impl State {
    pub fn from_definitions(defs: Definitions) -> State {
        let mut state = State::default();
        for e in defs.exchanges {
            state.apply(Change::PutExchange(e));
        }
        for q in defs.queues {
            state.apply(Change::PutQueue(q));
        }
        for b in defs.bindings {
            state.apply(Change::PutBinding(b));
        }
        for p in defs.policies {
            state.apply(Change::PutPolicy(p));
        }
        for v in defs.vhosts {
            state.apply(Change::PutVhost(v));
        }
        for u in defs.users {
            state.apply(Change::PutUser(u));
        }
        for p in defs.permissions {
            state.apply(Change::PutPermission(p));
        }
        for p in defs.topic_permissions {
            state.apply(Change::PutTopicPermission(p));
        }
        state.seeded = defs.seeded;
        state.cluster_name = defs.cluster_name;
        state.raft_applied = defs.raft_applied;
        state
    }

    pub fn apply(&mut self, change: Change) {
        match change {
            Change::PutExchange(e) => {
                self.exchanges.insert((e.vhost.clone(), e.name.clone()), e);
            }
            Change::DeleteExchange { vhost, name } => {
                self.bindings.retain(|b, _| {
                    !(b.vhost == vhost
                        && (b.source == name
                            || (b.destination_kind == DestinationKind::Exchange
                                && b.destination == name)))
                });
                self.exchanges.remove(&(vhost, name));
            }
            Change::PutQueue(q) => {
                self.queues.insert((q.vhost.clone(), q.name.clone()), q);
            }
            Change::DeleteQueue { vhost, name } => {
                self.bindings.retain(|b, _| {
                    !(b.vhost == vhost
                        && b.destination_kind == DestinationKind::Queue
                        && b.destination == name)
                });
                self.queues.remove(&(vhost, name));
            }
            Change::PutBinding(b) => {
                self.bindings.insert(b, ());
            }
            Change::DeleteBinding(b) => {
                self.bindings.remove(&b);
            }
            Change::PutPolicy(p) => {
                self.policies.insert((p.vhost.clone(), p.name.clone()), p);
            }
            Change::DeletePolicy { vhost, name } => {
                self.policies.remove(&(vhost, name));
            }
            Change::PutUser(u) => {
                self.users.insert(u.name.clone(), u);
            }
            Change::DeleteUser { name } => {
                self.permissions.retain(|(_, user), _| *user != name);
                self.topic_permissions
                    .retain(|(_, user, _), _| *user != name);
                self.users.remove(&name);
            }
            Change::PutVhost(v) => {
                self.vhosts.insert(v.name.clone(), v);
            }
            Change::DeleteVhost { name } => {
                self.exchanges.retain(|(vhost, _), _| *vhost != name);
                self.queues.retain(|(vhost, _), _| *vhost != name);
                self.bindings.retain(|b, _| b.vhost != name);
                self.policies.retain(|(vhost, _), _| *vhost != name);
                self.permissions.retain(|(vhost, _), _| *vhost != name);
                self.topic_permissions
                    .retain(|(vhost, _, _), _| *vhost != name);
                self.vhosts.remove(&name);
            }
            Change::PutPermission(p) => {
                self.permissions
                    .insert((p.vhost.clone(), p.user.clone()), p);
            }
            Change::DeletePermission { user, vhost } => {
                self.permissions.remove(&(vhost, user));
            }
            Change::PutTopicPermission(p) => {
                self.topic_permissions
                    .insert((p.vhost.clone(), p.user.clone(), p.exchange.clone()), p);
            }
            Change::DeleteTopicPermission {
                user,
                vhost,
                exchange,
            } => self.topic_permissions.retain(|(v, u, e), _| {
                !(*v == vhost && *u == user && exchange.as_ref().is_none_or(|x| x == e))
            }),
            Change::Seeded => self.seeded = true,
            Change::SetClusterName { name } => self.cluster_name = Some(name),
            Change::RaftApplied { marker } => self.raft_applied = Some(marker),
            Change::MoveQueue {
                vhost,
                name,
                group,
                home,
            } => {
                if let Some(q) = self.queues.get_mut(&(vhost, name)) {
                    if q.quorum
                        .as_ref()
                        .is_some_and(|quorum| quorum.group == group)
                    {
                        q.home = Some(home);
                    }
                }
            }
            Change::SetQueueMembers {
                vhost,
                name,
                group,
                members,
            } => {
                if let Some(q) = self.queues.get_mut(&(vhost, name)) {
                    if let Some(quorum) = q.quorum.as_mut().filter(|quorum| quorum.group == group) {
                        quorum.members = members;
                    }
                }
            }
        }
    }

    /// Applies a change as every node of a cluster makes it: as [`State::apply`], and an
    /// auto-delete exchange that loses its last binding goes with it, as the broker's
    /// exchange does (a cluster replicates every binding, so the state knows them all; a
    /// single node's store, which holds durable bindings only, is told of such a removal
    /// by the broker instead).
    pub fn apply_replicated(&mut self, change: Change) {
        let losing: Vec<(String, String)> = match &change {
            Change::DeleteBinding(b) if self.bindings.contains_key(b) => {
                vec![(b.vhost.clone(), b.source.clone())]
            }
            Change::DeleteQueue { vhost, name } => {
                self.sources_of(vhost, DestinationKind::Queue, name)
            }
            Change::DeleteExchange { vhost, name } => {
                self.sources_of(vhost, DestinationKind::Exchange, name)
            }
            _ => Vec::new(),
        };
        self.apply(change);
        for (vhost, source) in losing {
            let emptied = self
                .exchanges
                .get(&(vhost.clone(), source.clone()))
                .is_some_and(|e| e.auto_delete)
                && !self
                    .bindings
                    .keys()
                    .any(|b| b.vhost == vhost && b.source == source);
            if emptied {
                self.apply_replicated(Change::DeleteExchange {
                    vhost,
                    name: source,
                });
            }
        }
    }

    fn sources_of(&self, vhost: &str, kind: DestinationKind, name: &str) -> Vec<(String, String)> {
        self.bindings
            .keys()
            .filter(|b| b.vhost == vhost && b.destination_kind == kind && b.destination == name)
            .map(|b| (b.vhost.clone(), b.source.clone()))
            .collect()
    }

    /// Whether the default vhost and user were created once.
    pub fn is_seeded(&self) -> bool {
        self.seeded
    }

    pub fn to_definitions(&self) -> Definitions {
        Definitions {
            exchanges: self.exchanges.values().cloned().collect(),
            queues: self.queues.values().cloned().collect(),
            bindings: self.bindings.keys().cloned().collect(),
            policies: self.policies.values().cloned().collect(),
            vhosts: self.vhosts.values().cloned().collect(),
            users: self.users.values().cloned().collect(),
            permissions: self.permissions.values().cloned().collect(),
            topic_permissions: self.topic_permissions.values().cloned().collect(),
            seeded: self.seeded,
            cluster_name: self.cluster_name.clone(),
            raft_applied: self.raft_applied.clone(),
        }
    }
}
