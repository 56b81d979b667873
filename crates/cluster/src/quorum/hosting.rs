//! This node's replicas as the broker's quorum queues see them: a replica is opened for
//! a queue ([`ClusterNode::host_replica`]), drives it (the entries it applies, the
//! leadership it gains or loses) and serves it ([`ReplicaHandle`]: proposals, records,
//! the ledger).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::mpsc;
use wharf_core::quorum::{Applied, Command, Held, Ledger, Replica, ReplicatedQueue};
use wharf_store::Change;

use super::group::{GroupReplica, ProposeError};
use super::state_machine::ReplicaEvents;
use crate::node::ClusterNode;
use crate::raft::Member;

/// What a replica applies, handed to its queue.
struct QueueEvents {
    queue: Arc<dyn ReplicatedQueue>,
}

impl ReplicaEvents for QueueEvents {
    fn applied(&self, index: u64, command: &Command, _applied: Applied) {
        self.queue.applied(index, command);
    }
}

type Done = Box<dyn FnOnce(Result<Applied, String>) + Send>;

/// A queue's way to its replica on this node.
pub struct ReplicaHandle {
    replica: Arc<GroupReplica>,
    /// Proposals, handed to the group in the order they came by [`submit_in_order`].
    proposals: mpsc::UnboundedSender<(Command, Done)>,
}

impl ReplicaHandle {
    fn new(replica: Arc<GroupReplica>) -> ReplicaHandle {
        let (proposals, waiting) = mpsc::unbounded_channel();
        tokio::spawn(submit_in_order(replica.clone(), waiting));
        ReplicaHandle { replica, proposals }
    }
}

/// Hands a replica's proposals to its group one after another, in order (the queue's
/// messages keep their publishers' order), each answered once it applied, many at once.
async fn submit_in_order(
    replica: Arc<GroupReplica>,
    mut waiting: mpsc::UnboundedReceiver<(Command, Done)>,
) {
    while let Some((command, done)) = waiting.recv().await {
        match replica.submit(&command).await {
            Ok(answer) => {
                tokio::spawn(async move {
                    let answered =
                        tokio::time::timeout(GroupReplica::PROPOSAL_TIMEOUT, answer).await;
                    done(match answered {
                        Ok(answer) => describe(answer),
                        Err(_) => Err(format!(
                            "not committed within {:?} (no majority reached)",
                            GroupReplica::PROPOSAL_TIMEOUT
                        )),
                    });
                });
            }
            Err(error) => done(describe(Err(error))),
        }
    }
}

fn describe(result: Result<Applied, ProposeError>) -> Result<Applied, String> {
    match result {
        Ok(applied) => Ok(applied),
        Err(ProposeError::NotLeader { .. }) => Err("this node does not lead the queue".to_string()),
        Err(ProposeError::Failed(reason)) => Err(reason),
    }
}

impl Replica for ReplicaHandle {
    fn propose(&self, command: Command, done: Done) {
        if let Err(refused) = self.proposals.send((command, done)) {
            let (_, done) = refused.0;
            done(Err("this node's replica is stopped".to_string()));
        }
    }

    fn read(&self, offset: u64) -> Option<(Vec<u8>, Held)> {
        let held = self
            .replica
            .state
            .with_ledger(|ledger| ledger.get(offset))?;
        match self.replica.state.record(offset) {
            Ok(Some(record)) => Some((record, held)),
            Ok(None) => None,
            Err(error) => {
                tracing::error!(group = %format!("{:x}", self.replica.id), offset, %error, "a quorum queue's message cannot be read");
                None
            }
        }
    }

    fn with_ledger(&self, f: &mut dyn FnMut(&Ledger, u64)) {
        self.replica
            .state
            .with_ledger_applied(|ledger, applied| f(ledger, applied));
    }
}

impl ClusterNode {
    /// Opens this node's replica of `queue`'s group and lets it drive the queue (see
    /// `Cluster::host_replica`).
    pub async fn host_replica(self: Arc<Self>, queue: Arc<dyn ReplicatedQueue>) {
        let group = queue.group();
        let events = Arc::new(QueueEvents {
            queue: queue.clone(),
        });
        let already = self.quorum.get(group).is_some();
        let replica = match self.quorum.open(group, events).await {
            Ok(replica) => replica,
            Err(error) => {
                let (vhost, name) = queue.names();
                tracing::error!(queue = name, vhost, %error, "cannot open this node's replica of a quorum queue");
                return;
            }
        };
        if already {
            return;
        }
        queue.attach_replica(Arc::new(ReplicaHandle::new(replica.clone())));
        let members = queue.members();
        if members.first().map(String::as_str) == Some(self.name()) {
            let mut group_members = BTreeMap::new();
            for name in &members {
                match self.member_named(name) {
                    Some((id, member)) => {
                        group_members.insert(id, member);
                    }
                    None => {
                        tracing::warn!(
                            member = name,
                            "a quorum queue's member is not a known node; left out"
                        )
                    }
                }
            }
            if let Err(error) = replica.initialize(group_members).await {
                let (vhost, name) = queue.names();
                tracing::error!(queue = name, vhost, %error, "cannot start a quorum queue's group");
            }
        }
        tokio::spawn(self.clone().watch_leadership(replica, queue));
    }

    /// Tells `queue` each time its group's leader changes, as this replica sees it; a new
    /// leader here has the cluster record the move.
    async fn watch_leadership(
        self: Arc<Self>,
        replica: Arc<GroupReplica>,
        queue: Arc<dyn ReplicatedQueue>,
    ) {
        let mut metrics = replica.raft.metrics();
        let mut seen: Option<(bool, Option<u64>)> = None;
        loop {
            let (here, leader, last_log_index) = {
                let now = metrics.borrow_and_update();
                (
                    now.state == ServerState::Leader,
                    now.current_leader,
                    now.last_log_index.unwrap_or(0),
                )
            };
            if seen != Some((here, leader)) {
                seen = Some((here, leader));
                let leader_name = leader.and_then(|id| self.name_of(id));
                if queue.leadership(leader_name, here, last_log_index) {
                    let (vhost, name) = queue.names();
                    let change = Change::MoveQueue {
                        vhost,
                        name,
                        group: replica.id,
                        home: self.name().to_string(),
                    };
                    let node = self.clone();
                    let replica = replica.clone();
                    tokio::spawn(async move {
                        // Tried until recorded, while this node leads (the metadata's own
                        // leader may be the node that went).
                        let mut pause = Duration::from_millis(200);
                        while replica.is_leader() {
                            match node
                                .write(crate::raft::Command::Change(change.clone()))
                                .await
                            {
                                Ok(_) => return,
                                Err(error) => {
                                    tracing::debug!(%error, "a quorum queue's new leader is not recorded yet");
                                    tokio::time::sleep(pause).await;
                                    pause = (pause * 2).min(Duration::from_secs(2));
                                }
                            }
                        }
                    });
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// The member of the cluster named `name`: its id and how the others reach it.
    pub(crate) fn member_named(&self, name: &str) -> Option<(crate::config::NodeId, Member)> {
        if name == self.name() {
            return Some((
                self.node_id(),
                Member {
                    address: self.listen_address(),
                },
            ));
        }
        let id = self
            .names
            .lock()
            .iter()
            .find(|(_, known)| known.as_str() == name)
            .map(|(id, _)| *id)?;
        let metrics = self.raft().metrics().borrow().clone();
        let member = metrics
            .membership_config
            .membership()
            .get_node(&id)?
            .clone();
        Some((id, member))
    }

    /// The name of the member with id `id`, as known.
    pub(crate) fn name_of(&self, id: crate::config::NodeId) -> Option<String> {
        if id == self.node_id() {
            return Some(self.name().to_string());
        }
        self.names.lock().get(&id).cloned()
    }
}
