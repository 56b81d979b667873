//! The quorum queue replicas this node holds, reached by group id: the groups' RPCs from
//! the other nodes are answered here, and one supervisor keeps time for all of them.
//!
//! The supervisor runs twice a second. A group this node leads that applied something
//! since the last round sends one heartbeat (its followers learn how far it committed);
//! a group whose leader is on a node that stopped answering ([`Transport::peer_alive`])
//! has its replica here stand for election, after a random pause so that two followers
//! rarely split the vote; the others' leader lease (openraft's, three seconds since they
//! last heard the old leader) keeps a follower that only lost its own link from
//! unseating a leader the majority still hears. Each replica takes its snapshots when its
//! log has grown well past what the queue holds.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use parking_lot::{Mutex, RwLock};
use rand::Rng;
use tokio::sync::watch;

use super::codec::{decode_answer, decode_rpc, encode_answer, GroupAnswer};
use super::group::{group_config, remove_dir, GroupReplica};
use super::network::{GroupLink, LinkError};
use super::state_machine::ReplicaEvents;
use super::{GroupId, LogId};
use crate::config::NodeId;
use crate::transport::{Transport, TransportError};

/// How often the supervisor looks at the groups.
const ROUND: Duration = Duration::from_millis(500);
/// The longest random pause before a follower stands for election.
const ELECTION_JITTER_MS: u64 = 1000;
/// Rounds without a known leader before a replica stands for election (after a start,
/// the group's leader may just not have written yet).
const LEADERLESS_ROUNDS: u32 = 4;
/// Rounds between two looks at whether a replica's log is worth a snapshot.
const SNAPSHOT_ROUNDS: u32 = 10;

/// The node's connections, as the groups' link.
pub struct TransportLink(pub Arc<Transport>);

impl GroupLink for TransportLink {
    fn call(
        &self,
        address: &str,
        rpc: Vec<u8>,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<GroupAnswer, LinkError>> + Send + 'static>> {
        let transport = self.0.clone();
        let address: Result<SocketAddr, _> = address.parse();
        Box::pin(async move {
            let address =
                address.map_err(|e| LinkError::Unreachable(format!("not an address: {e}")))?;
            match transport.call_group(address, &rpc, timeout).await {
                Ok(bytes) => decode_answer(&bytes).map_err(|e| LinkError::Failed(e.to_string())),
                Err(error @ TransportError::Unreachable { .. }) => {
                    Err(LinkError::Unreachable(error.to_string()))
                }
                Err(error) => Err(LinkError::Failed(error.to_string())),
            }
        })
    }
}

/// What the supervisor remembers of a group between rounds.
#[derive(Default)]
struct Watch {
    applied: Option<LogId>,
    leaderless_rounds: u32,
    electing: bool,
}

pub struct QuorumGroups {
    me: NodeId,
    dir: PathBuf,
    transport: Arc<Transport>,
    groups: RwLock<HashMap<GroupId, Arc<GroupReplica>>>,
    watches: Mutex<HashMap<GroupId, Watch>>,
}

impl QuorumGroups {
    /// The groups of node `me`, kept under `<data_dir>/quorum`.
    pub fn new(me: NodeId, data_dir: &Path, transport: Arc<Transport>) -> QuorumGroups {
        QuorumGroups {
            me,
            dir: data_dir.join("quorum"),
            transport,
            groups: RwLock::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
        }
    }

    fn group_dir(&self, id: GroupId) -> PathBuf {
        self.dir.join(format!("{id:016x}"))
    }

    /// This node's replica of group `id`, opened (from its disk, or new) if it was not.
    pub async fn open(
        &self,
        id: GroupId,
        events: Arc<dyn ReplicaEvents>,
    ) -> Result<Arc<GroupReplica>, String> {
        if let Some(replica) = self.get(id) {
            return Ok(replica);
        }
        let replica = GroupReplica::open(
            &self.group_dir(id),
            id,
            self.me,
            Arc::new(TransportLink(self.transport.clone())),
            events,
            group_config()?,
        )
        .await?;
        let replica = Arc::new(replica);
        let mut groups = self.groups.write();
        // Opened twice at once: the first stays.
        Ok(groups.entry(id).or_insert(replica).clone())
    }

    pub fn get(&self, id: GroupId) -> Option<Arc<GroupReplica>> {
        self.groups.read().get(&id).cloned()
    }

    /// The ids of the groups this node holds replicas of.
    pub fn ids(&self) -> Vec<GroupId> {
        self.groups.read().keys().copied().collect()
    }

    /// Stops this node's replica of group `id` and deletes what it kept.
    pub async fn remove(&self, id: GroupId) {
        let replica = self.groups.write().remove(&id);
        self.watches.lock().remove(&id);
        tracing::info!(group = %format!("{id:016x}"), open = replica.is_some(), "a quorum queue's replica goes");
        match replica {
            Some(replica) => match Arc::try_unwrap(replica) {
                Ok(replica) => replica.destroy().await,
                Err(shared) => {
                    // Still in use by an RPC under way: stopped now, its files left for
                    // the next start to find unclaimed.
                    shared.shutdown().await;
                    remove_dir(self.group_dir(id)).await;
                }
            },
            None => remove_dir(self.group_dir(id)).await,
        }
    }

    /// Stops every replica (the node shuts down), keeping their files.
    pub async fn shutdown(&self) {
        let replicas: Vec<Arc<GroupReplica>> =
            self.groups.write().drain().map(|(_, r)| r).collect();
        for replica in replicas {
            replica.shutdown().await;
        }
    }

    /// The ids of the groups this node kept files for, open or not.
    pub fn ids_on_disk(&self) -> Vec<GroupId> {
        let Ok(items) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        items
            .filter_map(|item| item.ok())
            .filter_map(|item| {
                item.file_name()
                    .to_str()
                    .and_then(|name| u64::from_str_radix(name, 16).ok())
            })
            .collect()
    }

    /// Answers another node's RPC to one of this node's groups.
    pub async fn answer(&self, payload: Vec<u8>) -> Vec<u8> {
        let answer = match decode_rpc(&payload) {
            Ok((id, rpc)) => match self.get(id) {
                Some(replica) => replica.handle(rpc).await,
                None => GroupAnswer::NoGroup,
            },
            Err(error) => {
                tracing::warn!(%error, "a quorum queue RPC that does not read; answered as if the group were not here");
                GroupAnswer::NoGroup
            }
        };
        encode_answer(&answer)
    }

    /// Keeps time for every group until shutdown (see the module comment).
    pub async fn supervise(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut round = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ROUND) => {}
                _ = shutdown.changed() => return,
            }
            round = round.wrapping_add(1);
            self.clone().look(round).await;
        }
    }

    async fn look(self: Arc<Self>, round: u32) {
        let groups: Vec<Arc<GroupReplica>> = self.groups.read().values().cloned().collect();
        let mut alive: HashMap<NodeId, bool> = HashMap::new();
        for replica in groups {
            let metrics = replica.raft.metrics().borrow().clone();
            if round.is_multiple_of(SNAPSHOT_ROUNDS) {
                replica.snapshot_if_worth_it().await;
            }
            match metrics.state {
                ServerState::Leader => {
                    let wrote = {
                        let mut watches = self.watches.lock();
                        let watch = watches.entry(replica.id).or_default();
                        watch.leaderless_rounds = 0;
                        let wrote = metrics.last_applied != watch.applied;
                        watch.applied = metrics.last_applied;
                        wrote
                    };
                    if wrote {
                        let _ = replica.raft.trigger().heartbeat().await;
                    }
                }
                ServerState::Follower | ServerState::Candidate => {
                    let membership = metrics.membership_config.membership();
                    if !membership.voter_ids().any(|id| id == self.me) {
                        continue;
                    }
                    let leader_gone = match metrics.current_leader.filter(|l| *l != self.me) {
                        Some(leader) => {
                            if let Some(watch) = self.watches.lock().get_mut(&replica.id) {
                                watch.leaderless_rounds = 0;
                            }
                            let up = match alive.get(&leader) {
                                Some(up) => *up,
                                None => {
                                    let up = match address_of(&metrics, leader) {
                                        Some(address) => self.transport.peer_alive(address).await,
                                        None => false,
                                    };
                                    alive.insert(leader, up);
                                    up
                                }
                            };
                            !up
                        }
                        None => {
                            let mut watches = self.watches.lock();
                            let watch = watches.entry(replica.id).or_default();
                            watch.leaderless_rounds += 1;
                            watch.leaderless_rounds >= LEADERLESS_ROUNDS
                        }
                    };
                    let stand = leader_gone && {
                        let mut watches = self.watches.lock();
                        let watch = watches.entry(replica.id).or_default();
                        !std::mem::replace(&mut watch.electing, true)
                    };
                    if stand {
                        self.clone().stand_for_election(replica);
                    }
                }
                _ => {}
            }
        }
    }

    /// Has a replica stand for election after a random pause.
    fn stand_for_election(self: Arc<Self>, replica: Arc<GroupReplica>) {
        let pause = Duration::from_millis(rand::thread_rng().gen_range(0..ELECTION_JITTER_MS));
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            // Someone may have won meanwhile, or the leader answered again.
            let metrics = replica.raft.metrics().borrow().clone();
            let leader_up = match metrics.current_leader {
                _ if metrics.state == ServerState::Leader => true,
                Some(leader) if leader != self.me => match address_of(&metrics, leader) {
                    Some(address) => self.transport.peer_alive(address).await,
                    None => false,
                },
                _ => false,
            };
            let still_needed = !leader_up;
            if still_needed {
                tracing::debug!(group = %format!("{:x}", replica.id), "standing for election");
                let _ = replica.raft.trigger().elect().await;
            }
            if let Some(watch) = self.watches.lock().get_mut(&replica.id) {
                watch.electing = false;
                watch.leaderless_rounds = 0;
            }
        });
    }
}

/// A member's cluster address, as the group's membership knows it.
fn address_of(
    metrics: &openraft::RaftMetrics<NodeId, crate::raft::Member>,
    node: NodeId,
) -> Option<SocketAddr> {
    metrics
        .membership_config
        .membership()
        .get_node(&node)
        .and_then(|member| member.address.parse().ok())
}
