//! The cluster as this node sees it, for `cluster_status` and the management API: each
//! member probed.

use super::*;
use wharf_core::cluster::{Gathered, OperatorRequest};

impl ClusterNode {
    /// The cluster as this node sees it now: each member probed (a member that does not
    /// answer is down).
    pub async fn status(&self) -> ClusterStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut probes = Vec::new();
        for (id, member) in membership.nodes() {
            let id = *id;
            let member = member.clone();
            probes.push(async move {
                let probe = if id == self.me {
                    Ok(self.own_probe())
                } else {
                    match member.address.parse() {
                        Ok(address) => self.probe(address).await,
                        Err(_) => Err("not an address".to_string()),
                    }
                };
                (id, member, probe)
            });
        }
        let answers = join_all(probes).await;
        let newest_applied = answers
            .iter()
            .filter_map(|(_, _, p)| p.as_ref().ok().and_then(|p| p.last_applied))
            .max();
        let members: Vec<MemberStatus> = answers
            .into_iter()
            .map(|(id, member, probe)| {
                let (state, name, applied) = match probe {
                    Ok(probe) => {
                        self.names.lock().insert(id, probe.name.clone());
                        let behind = newest_applied
                            .unwrap_or(0)
                            .saturating_sub(probe.last_applied.unwrap_or(0));
                        let state = if behind > CATCHING_UP_ENTRIES {
                            MemberState::CatchingUp
                        } else {
                            MemberState::Up
                        };
                        (state, Some(probe.name), probe.last_applied)
                    }
                    Err(_) => (MemberState::Down, self.names.lock().get(&id).cloned(), None),
                };
                MemberStatus {
                    id,
                    name,
                    address: member.address,
                    voter: voters.contains(&id),
                    state,
                    last_applied: applied,
                }
            })
            .collect();
        // A leader that does not answer leads nothing this node can use.
        let leader = metrics.current_leader.filter(|leader| {
            members
                .iter()
                .any(|m: &MemberStatus| m.id == *leader && m.state != MemberState::Down)
        });
        ClusterStatus {
            node_id: self.me,
            node_name: self.config.node_name.clone(),
            leader,
            term: metrics.current_term,
            is_leader: metrics.state == ServerState::Leader,
            last_applied: metrics.last_applied.map(|l| l.index),
            members,
        }
    }
}

/// How long an operator request waits for a member's answer.
const GATHER_WAIT: Duration = Duration::from_secs(5);

impl ClusterNode {
    /// Every other member's answer to an operator request, asked of all at once.
    pub async fn gather(&self, asked: OperatorRequest) -> Vec<Gathered> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let mut asks = Vec::new();
        for (id, member) in membership.nodes() {
            if *id == self.me {
                continue;
            }
            let known = self.names.lock().get(id).cloned();
            let address = member.address.clone();
            let request = Request::Operator(asked.clone());
            asks.push(async move {
                let answer = match address.parse() {
                    Ok(address) => self
                        .transport
                        .request(address, &request, GATHER_WAIT)
                        .await
                        .ok(),
                    Err(_) => None,
                };
                match answer {
                    Some((peer, Response::Operator(items))) => Gathered {
                        node: peer.name,
                        items: Some(items),
                    },
                    _ => Gathered {
                        node: known.unwrap_or(address),
                        items: None,
                    },
                }
            });
        }
        join_all(asks).await
    }
}
