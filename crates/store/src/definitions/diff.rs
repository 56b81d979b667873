//! The changes that turn one set of definitions into another: how a cluster node that
//! installs a snapshot brings what it holds to what the snapshot says, making and
//! recording only what differs.

use std::collections::{BTreeMap, BTreeSet};

use super::model::*;

impl Definitions {
    /// The changes that make `self` into `target`, in an order that applies: removals
    /// first (bindings, queues, exchanges, policies, permissions, users, vhosts), then
    /// additions (vhosts, users, permissions, policies, exchanges, queues, bindings). An
    /// exchange or queue whose definition differs is removed and added again, and so are
    /// the bindings its removal takes with it. (`seeded` and the cluster name only go one
    /// way: once seeded, always; a cluster name is replaced, never cleared.)
    pub fn changes_to(&self, target: &Definitions) -> Vec<Change> {
        let mut changes = Vec::new();
        let vhosts_gone: BTreeSet<&str> = names(&self.vhosts, |v| &v.name)
            .difference(&names(&target.vhosts, |v| &v.name))
            .copied()
            .collect();
        let in_kept_vhost = |vhost: &str| !vhosts_gone.contains(vhost);

        let exchanges = by_key(&target.exchanges, |e| (e.vhost.as_str(), e.name.as_str()));
        let queues = by_key(&target.queues, |q| (q.vhost.as_str(), q.name.as_str()));
        let mut replaced_exchanges: BTreeSet<(&str, &str)> = self
            .exchanges
            .iter()
            .filter(|e| exchanges.get(&(e.vhost.as_str(), e.name.as_str())) != Some(e))
            .map(|e| (e.vhost.as_str(), e.name.as_str()))
            .collect();
        let replaced_queues: BTreeSet<(&str, &str)> = self
            .queues
            .iter()
            .filter(|q| queues.get(&(q.vhost.as_str(), q.name.as_str())) != Some(q))
            .map(|q| (q.vhost.as_str(), q.name.as_str()))
            .collect();
        let target_bindings: BTreeSet<&BindingDef> = target.bindings.iter().collect();
        // A binding the removals take with them.
        let swept = |b: &BindingDef, replaced_exchanges: &BTreeSet<(&str, &str)>| {
            let destination = (b.vhost.as_str(), b.destination.as_str());
            replaced_exchanges.contains(&(b.vhost.as_str(), b.source.as_str()))
                || match b.destination_kind {
                    DestinationKind::Exchange => replaced_exchanges.contains(&destination),
                    DestinationKind::Queue => replaced_queues.contains(&destination),
                }
        };
        // An auto-delete exchange that loses a binding may go with it (when it was its
        // last): it is removed and added again, whatever became of it, and so on for what
        // its removal takes.
        let auto_delete: BTreeSet<(&str, &str)> = self
            .exchanges
            .iter()
            .filter(|e| e.auto_delete)
            .map(|e| (e.vhost.as_str(), e.name.as_str()))
            .collect();
        loop {
            let losing: Vec<(&str, &str)> = self
                .bindings
                .iter()
                .filter(|b| !target_bindings.contains(b) || swept(b, &replaced_exchanges))
                .map(|b| (b.vhost.as_str(), b.source.as_str()))
                .filter(|source| {
                    auto_delete.contains(source) && !replaced_exchanges.contains(source)
                })
                .collect();
            if losing.is_empty() {
                break;
            }
            replaced_exchanges.extend(losing);
        }
        let swept = |b: &BindingDef| swept(b, &replaced_exchanges);

        for binding in &self.bindings {
            if !target_bindings.contains(binding)
                && !swept(binding)
                && in_kept_vhost(&binding.vhost)
            {
                changes.push(Change::DeleteBinding(binding.clone()));
            }
        }
        for (vhost, name) in &replaced_queues {
            if in_kept_vhost(vhost) {
                changes.push(Change::DeleteQueue {
                    vhost: vhost.to_string(),
                    name: name.to_string(),
                });
            }
        }
        for (vhost, name) in &replaced_exchanges {
            if in_kept_vhost(vhost) {
                changes.push(Change::DeleteExchange {
                    vhost: vhost.to_string(),
                    name: name.to_string(),
                });
            }
        }
        let policies = by_key(&target.policies, |p| (p.vhost.as_str(), p.name.as_str()));
        for policy in &self.policies {
            if !policies.contains_key(&(policy.vhost.as_str(), policy.name.as_str()))
                && in_kept_vhost(&policy.vhost)
            {
                changes.push(Change::DeletePolicy {
                    vhost: policy.vhost.clone(),
                    name: policy.name.clone(),
                });
            }
        }
        let users = names(&target.users, |u| &u.name);
        let users_gone = |user: &str| !users.contains(user);
        let topic = by_key(&target.topic_permissions, |p| {
            (p.vhost.as_str(), p.user.as_str(), p.exchange.as_str())
        });
        for permission in &self.topic_permissions {
            let key = (
                permission.vhost.as_str(),
                permission.user.as_str(),
                permission.exchange.as_str(),
            );
            if !topic.contains_key(&key)
                && in_kept_vhost(&permission.vhost)
                && !users_gone(&permission.user)
            {
                changes.push(Change::DeleteTopicPermission {
                    user: permission.user.clone(),
                    vhost: permission.vhost.clone(),
                    exchange: Some(permission.exchange.clone()),
                });
            }
        }
        let permissions = by_key(&target.permissions, |p| (p.vhost.as_str(), p.user.as_str()));
        for permission in &self.permissions {
            if !permissions.contains_key(&(permission.vhost.as_str(), permission.user.as_str()))
                && in_kept_vhost(&permission.vhost)
                && !users_gone(&permission.user)
            {
                changes.push(Change::DeletePermission {
                    user: permission.user.clone(),
                    vhost: permission.vhost.clone(),
                });
            }
        }
        for user in &self.users {
            if users_gone(&user.name) {
                changes.push(Change::DeleteUser {
                    name: user.name.clone(),
                });
            }
        }
        for vhost in &vhosts_gone {
            changes.push(Change::DeleteVhost {
                name: vhost.to_string(),
            });
        }

        let vhosts_now = by_key(&self.vhosts, |v| v.name.as_str());
        for vhost in &target.vhosts {
            if vhosts_now.get(vhost.name.as_str()) != Some(&vhost) {
                changes.push(Change::PutVhost(vhost.clone()));
            }
        }
        let users_now = by_key(&self.users, |u| u.name.as_str());
        for user in &target.users {
            if users_now.get(user.name.as_str()) != Some(&user) {
                changes.push(Change::PutUser(user.clone()));
            }
        }
        let permissions_now = by_key(&self.permissions, |p| (p.vhost.as_str(), p.user.as_str()));
        for permission in &target.permissions {
            let key = (permission.vhost.as_str(), permission.user.as_str());
            if permissions_now.get(&key) != Some(&permission) {
                changes.push(Change::PutPermission(permission.clone()));
            }
        }
        let topic_now = by_key(&self.topic_permissions, |p| {
            (p.vhost.as_str(), p.user.as_str(), p.exchange.as_str())
        });
        for permission in &target.topic_permissions {
            let key = (
                permission.vhost.as_str(),
                permission.user.as_str(),
                permission.exchange.as_str(),
            );
            if topic_now.get(&key) != Some(&permission) {
                changes.push(Change::PutTopicPermission(permission.clone()));
            }
        }
        let policies_now = by_key(&self.policies, |p| (p.vhost.as_str(), p.name.as_str()));
        for policy in &target.policies {
            let key = (policy.vhost.as_str(), policy.name.as_str());
            if policies_now.get(&key) != Some(&policy) {
                changes.push(Change::PutPolicy(policy.clone()));
            }
        }
        let exchanges_now = by_key(&self.exchanges, |e| (e.vhost.as_str(), e.name.as_str()));
        for exchange in &target.exchanges {
            let key = (exchange.vhost.as_str(), exchange.name.as_str());
            if exchanges_now.get(&key) != Some(&exchange) || replaced_exchanges.contains(&key) {
                changes.push(Change::PutExchange(exchange.clone()));
            }
        }
        let queues_now = by_key(&self.queues, |q| (q.vhost.as_str(), q.name.as_str()));
        for queue in &target.queues {
            let key = (queue.vhost.as_str(), queue.name.as_str());
            if queues_now.get(&key) != Some(&queue) || replaced_queues.contains(&key) {
                changes.push(Change::PutQueue(queue.clone()));
            }
        }
        let bindings_now: BTreeSet<&BindingDef> = self.bindings.iter().collect();
        for binding in &target.bindings {
            if !bindings_now.contains(binding) || swept(binding) {
                changes.push(Change::PutBinding(binding.clone()));
            }
        }
        if target.seeded && !self.seeded {
            changes.push(Change::Seeded);
        }
        if let Some(name) = target
            .cluster_name
            .as_ref()
            .filter(|n| self.cluster_name.as_ref() != Some(*n))
        {
            changes.push(Change::SetClusterName { name: name.clone() });
        }
        changes
    }
}

fn names<'a, T>(items: &'a [T], name: impl Fn(&'a T) -> &'a String) -> BTreeSet<&'a str> {
    items.iter().map(|item| name(item).as_str()).collect()
}

fn by_key<'a, T, K: Ord>(items: &'a [T], key: impl Fn(&'a T) -> K) -> BTreeMap<K, &'a T> {
    items.iter().map(|item| (key(item), item)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DefinitionState;

    /// A small deterministic generator (xorshift), so that a failure can be replayed.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % sides
        }
    }

    /// Definitions drawn from a small universe of names, so that two draws overlap.
    fn draw(dice: &mut Dice) -> Definitions {
        let mut state = DefinitionState::default();
        for vhost in ["/", "a", "b"] {
            if dice.roll(4) == 0 {
                continue;
            }
            state.apply(Change::PutVhost(VhostDef {
                name: vhost.into(),
                description: format!("d{}", dice.roll(2)),
                tags: vec![],
                limits: BTreeMap::new(),
            }));
            for name in ["e1", "e2", "e3"] {
                if dice.roll(3) > 0 {
                    state.apply(Change::PutExchange(ExchangeDef {
                        vhost: vhost.into(),
                        name: name.into(),
                        kind: ["topic", "direct"][dice.roll(2) as usize].into(),
                        auto_delete: dice.roll(2) == 0,
                        internal: false,
                        arguments: vec![],
                        durable: true,
                    }));
                }
            }
            for name in ["q1", "q2"] {
                if dice.roll(3) > 0 {
                    state.apply(Change::PutQueue(QueueDef {
                        vhost: vhost.into(),
                        name: name.into(),
                        auto_delete: false,
                        arguments: vec![],
                        durable: dice.roll(3) > 0,
                        exclusive_owner: None,
                        home: Some(format!("n{}", dice.roll(2))),
                        quorum: (dice.roll(3) == 0).then(|| crate::QuorumDef {
                            group: dice.roll(2),
                            members: vec!["n0".into(), "n1".into()],
                        }),
                    }));
                }
            }
            let defs = state.to_definitions();
            for _ in 0..dice.roll(6) {
                let source = &defs.exchanges[dice.roll(defs.exchanges.len().max(1) as u64)
                    as usize
                    % defs.exchanges.len().max(1)..];
                let Some(source) = source.first().filter(|e| e.vhost == vhost) else {
                    continue;
                };
                let (destination, destination_kind) = if dice.roll(2) == 0 {
                    (["q1", "q2"][dice.roll(2) as usize], DestinationKind::Queue)
                } else {
                    (
                        ["e1", "e2", "e3"][dice.roll(3) as usize],
                        DestinationKind::Exchange,
                    )
                };
                let present = match destination_kind {
                    DestinationKind::Queue => defs
                        .queues
                        .iter()
                        .any(|q| q.vhost == vhost && q.name == destination),
                    DestinationKind::Exchange => defs
                        .exchanges
                        .iter()
                        .any(|e| e.vhost == vhost && e.name == destination),
                };
                if present {
                    state.apply(Change::PutBinding(BindingDef {
                        vhost: vhost.into(),
                        source: source.name.clone(),
                        destination: destination.into(),
                        destination_kind,
                        routing_key: format!("k{}", dice.roll(2)),
                        arguments: vec![],
                    }));
                }
            }
        }
        for user in ["u1", "u2"] {
            if dice.roll(3) > 0 {
                state.apply(Change::PutUser(UserDef {
                    name: user.into(),
                    password_hash: format!("h{}", dice.roll(2)),
                    hashing_algorithm: "sha256".into(),
                    tags: vec![],
                    limits: BTreeMap::new(),
                }));
                let defs = state.to_definitions();
                for vhost in defs.vhosts {
                    if dice.roll(2) == 0 {
                        state.apply(Change::PutPermission(PermissionDef {
                            user: user.into(),
                            vhost: vhost.name.clone(),
                            configure: format!("c{}", dice.roll(2)),
                            write: ".*".into(),
                            read: ".*".into(),
                        }));
                    }
                    if dice.roll(2) == 0 {
                        state.apply(Change::PutTopicPermission(TopicPermissionDef {
                            user: user.into(),
                            vhost: vhost.name.clone(),
                            exchange: "e1".into(),
                            write: format!("w{}", dice.roll(2)),
                            read: ".*".into(),
                        }));
                    }
                    if dice.roll(3) == 0 {
                        state.apply(Change::PutPolicy(PolicyDef {
                            vhost: vhost.name.clone(),
                            name: "p".into(),
                            pattern: ".*".into(),
                            apply_to: "all".into(),
                            definition: format!("{{\"max-length\":{}}}", dice.roll(3)),
                            priority: 0,
                        }));
                    }
                }
            }
        }
        if dice.roll(2) == 0 {
            state.apply(Change::Seeded);
        }
        if dice.roll(3) > 0 {
            let name = format!("cluster-{}", dice.roll(2));
            state.apply(Change::SetClusterName { name });
        }
        state.to_definitions()
    }

    #[test]
    fn the_changes_turn_any_definitions_into_any_other() {
        let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
        for round in 0..2000 {
            let (from, mut to) = (draw(&mut dice), draw(&mut dice));
            // Seeding happens once and is never taken back.
            to.seeded |= from.seeded;
            // So is a cluster name: replaced, never cleared.
            if to.cluster_name.is_none() {
                to.cluster_name = from.cluster_name.clone();
            }
            let changes = from.changes_to(&to);
            let mut state = DefinitionState::from_definitions(from.clone());
            for change in changes.clone() {
                state.apply_replicated(change);
            }
            assert_eq!(
                state.to_definitions(),
                to,
                "round {round}: from {from:#?}\nchanges {changes:#?}"
            );
        }
    }

    #[test]
    fn the_same_definitions_need_no_change() {
        let mut dice = Dice(7);
        for _ in 0..200 {
            let definitions = draw(&mut dice);
            assert_eq!(definitions.changes_to(&definitions), Vec::new());
        }
    }
}
