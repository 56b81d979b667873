//! A vhost's policies: set, cleared, and applied to its queues and exchanges.

use wharf_store::{Change, PolicyDef};

use super::VHost;
use crate::error::Result;
use crate::policy::{self, Policy};

impl VHost {
    /// Adds a policy, or replaces the one of the same name, and applies the vhost's
    /// policies again to every queue and exchange.
    pub fn set_policy(&self, policy: Policy) -> Result<()> {
        self.record(|| {
            Change::PutPolicy(PolicyDef {
                vhost: self.name.to_string(),
                name: policy.name.to_string(),
                pattern: policy.pattern.clone(),
                apply_to: policy.apply_to.as_str().to_string(),
                definition: policy.definition_json.clone(),
                priority: policy.priority,
            })
        })?;
        {
            let mut policies = self.policies.write();
            policies.retain(|p| p.name != policy.name);
            policies.push(policy);
        }
        self.apply_policies();
        Ok(())
    }

    /// Removes a policy; Ok(false) if there was none of that name.
    pub fn clear_policy(&self, name: &str) -> Result<bool> {
        if !self.policies.read().iter().any(|p| p.name == name) {
            return Ok(false);
        }
        self.record(|| Change::DeletePolicy {
            vhost: self.name.to_string(),
            name: name.to_string(),
        })?;
        self.policies.write().retain(|p| p.name != name);
        self.apply_policies();
        Ok(true)
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
        for queue in self.queues() {
            queue.apply_policy(self.policy_for_queue(&queue.name).as_ref());
        }
        for exchange in self.exchanges() {
            if !exchange.name.is_empty() {
                exchange.apply_policy(self.policy_for_exchange(&exchange.name).as_ref());
            }
        }
    }
}
