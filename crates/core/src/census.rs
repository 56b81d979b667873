//! Connection limits across a cluster: a vhost's and a user's `max-connections` count
//! every node's connections, as RabbitMQ's do. A node admitting a connection under such a
//! limit asks the other members how many they have (only when a limit is set), and adds
//! them to its own count. Two nodes admitting at the same moment may both slip under the
//! limit by one (RabbitMQ's counts, kept per node, allow the same); a member that does not
//! answer in time counts none.

use std::sync::{Arc, Weak};

use serde_json::{json, Value};

use crate::broker::Broker;
use crate::cluster::{OperatorAnswers, OperatorRequest};
use crate::connections::Connections;

/// The operator request kind other members answer with their counts.
const KIND: &str = "core:census";

/// A node's connections in a vhost, and of a user, for another member's limits.
pub(crate) struct CensusAnswers(pub(crate) Weak<Connections>);

impl OperatorAnswers for CensusAnswers {
    fn answer_operator(&self, kind: &str, argument: &str) -> Vec<Value> {
        let (Some(connections), true) = (self.0.upgrade(), kind == KIND) else {
            return Vec::new();
        };
        let Ok(asked) = serde_json::from_str::<Value>(argument) else {
            return Vec::new();
        };
        let (vhost, user) = (asked["vhost"].as_str(), asked["user"].as_str());
        let listed = connections.list();
        let in_vhost = listed
            .iter()
            .filter(|c| Some(c.details.vhost.as_str()) == vhost)
            .count();
        let of_user = listed
            .iter()
            .filter(|c| Some(c.details.user.as_str()) == user)
            .count();
        vec![json!({"in_vhost": in_vhost, "of_user": of_user})]
    }
}

/// Other members' connections: in the vhost, and of the user, asked about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Elsewhere {
    pub in_vhost: usize,
    pub of_user: usize,
}

impl Broker {
    /// How many connections the other cluster members have in `vhost`, and of `user`
    /// (none on a single node).
    pub async fn connections_elsewhere(&self, vhost: &str, user: &str) -> Elsewhere {
        let Some(cluster) = self.cluster() else {
            return Elsewhere::default();
        };
        let request = OperatorRequest {
            kind: KIND.to_string(),
            argument: json!({"vhost": vhost, "user": user}).to_string(),
        };
        let mut elsewhere = Elsewhere::default();
        for member in cluster.gather(request).await {
            let Some(counts) = member.items.and_then(|items| items.into_iter().next()) else {
                continue;
            };
            elsewhere.in_vhost += counts["in_vhost"].as_u64().unwrap_or(0) as usize;
            elsewhere.of_user += counts["of_user"].as_u64().unwrap_or(0) as usize;
        }
        elsewhere
    }

    /// Lets other members ask for this node's counts.
    pub(crate) fn answer_census(
        cluster: &crate::cluster::ClusterSlot,
        connections: &Arc<Connections>,
    ) {
        cluster.add_operator_answers(
            "core:",
            Arc::new(CensusAnswers(Arc::downgrade(connections))),
        );
    }
}
