//! A vhost's policies: set, cleared, and applied to its queues and exchanges.

use wharf_store::{Change, PolicyDef};

use super::VHost;
use crate::error::Result;
use crate::policy::{self, Policy};

impl VHost {
    /// Adds a policy, or replaces the one of the same name, and applies the vhost's
    /// policies again to every queue and exchange.
    pub fn set_policy(&self, policy: Policy) -> Result<()> {
        let change = Change::PutPolicy(PolicyDef {
            vhost: self.name.to_string(),
            name: policy.name.to_string(),
            pattern: policy.pattern.clone(),
            apply_to: policy.apply_to.as_str().to_string(),
            definition: policy.definition_json.clone(),
            priority: policy.priority,
        });
        // A cluster node's policies are the cluster's: every node puts it when committed.
        if let Some(cluster) = self.cluster.get() {
            return cluster.commit(change);
        }
        self.record(|| change)?;
        self.put_policy(policy);
        Ok(())
    }

    /// Removes a policy; Ok(false) if there was none of that name.
    pub fn clear_policy(&self, name: &str) -> Result<bool> {
        if let Some(cluster) = self.cluster.get() {
            // A policy set on another node a moment ago is one to clear.
            cluster.sync()?;
        }
        if !self.policies.read().iter().any(|p| p.name == name) {
            return Ok(false);
        }
        let change = Change::DeletePolicy {
            vhost: self.name.to_string(),
            name: name.to_string(),
        };
        if let Some(cluster) = self.cluster.get() {
            cluster.commit(change)?;
            return Ok(true);
        }
        self.record(|| change)?;
        self.remove_policy(name);
        Ok(true)
    }

    /// Puts a policy in place (replacing one of its name) and applies the policies again.
    pub(crate) fn put_policy(&self, policy: Policy) {
        {
            let mut policies = self.policies.write();
            policies.retain(|p| p.name != policy.name);
            policies.push(policy);
        }
        self.apply_policies();
    }

    pub(crate) fn remove_policy(&self, name: &str) {
        self.policies.write().retain(|p| p.name != name);
        self.apply_policies();
    }

    /// The vhost's policies, by name.
    pub fn policies(&self) -> Vec<Policy> {
        let mut policies = self.policies.read().clone();
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        policies
    }

    pub(super) fn policy_for_queue(&self, name: &str) -> Option<Policy> {
        policy::pick(self.policies.read().iter(), |p| p.applies_to_queue(name)).cloned()
    }

    pub(super) fn policy_for_exchange(&self, name: &str) -> Option<Policy> {
        policy::pick(self.policies.read().iter(), |p| p.applies_to_exchange(name)).cloned()
    }

    /// Gives every queue and exchange the policy that applies to it now.
    pub(super) fn apply_policies(&self) {
        for queue in self.served_queues() {
            queue.apply_policy(self.policy_for_queue(&queue.name).as_ref());
        }
        for exchange in self.exchanges() {
            if !exchange.name.is_empty() {
                exchange.apply_policy(self.policy_for_exchange(&exchange.name).as_ref());
            }
        }
    }
}
