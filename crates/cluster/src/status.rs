//! What `wharf ctl cluster_status` and the management API show of the cluster: its
//! members, whether each answers, and the metadata group's leader and term.

use serde::Serialize;

use crate::config::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// It answers and has applied about as much as the most advanced member.
    Up,
    /// It does not answer.
    Down,
    /// It answers, but is far behind (replaying the log or receiving a snapshot).
    CatchingUp,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::Down => "down",
            MemberState::CatchingUp => "catching up",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub id: NodeId,
    /// Its node name, once it answered.
    pub name: Option<String>,
    pub address: String,
    /// Whether it votes (a joining node is a learner until it caught up).
    pub voter: bool,
    pub state: MemberState,
    pub last_applied: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// The node that answers.
    pub node_id: NodeId,
    pub node_name: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub is_leader: bool,
    pub last_applied: Option<u64>,
    pub members: Vec<MemberStatus>,
}

impl ClusterStatus {
    /// The leader's node name (or its address when its name is not known).
    pub fn leader_name(&self) -> Option<String> {
        let leader = self.leader?;
        self.members
            .iter()
            .find(|m| m.id == leader)
            .map(|m| m.name.clone().unwrap_or_else(|| m.address.clone()))
    }
}
