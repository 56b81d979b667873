//! A cluster node: this process's Raft member, its listener for the other nodes, and the
//! way a change proposed here reaches the leader and comes back applied. One
//! `Arc<ClusterNode>` per process, owned by the binary; the broker reaches it through
//! [`ClusterNode::write`] and [`ClusterNode::status`].

mod leader;
mod membership;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use wharf_store::raft_log::RaftLog;

use crate::config::{node_id, ClusterConfig, NodeId};
use crate::handshake::Introduction;
use crate::messages::{Probe, Request, Response, WriteRefusal, Written};
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::{Applier, StateMachine};
use crate::raft::{Command, Member, Outcome, Raft};
use crate::status::{ClusterStatus, MemberState, MemberStatus};
use crate::transport::{Handler, Transport};

/// How long a forwarded change may wait for the leader's answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a change waits for a leader (an election under way) before it is refused:
/// a few election timeouts.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long the proposer of a change waits for the other members to apply it.
const MEMBERS_APPLY_WAIT: Duration = Duration::from_millis(1000);
/// How long a read index may take: one round of heartbeats on a healthy leader.
const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a probe may wait.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// A member this many entries behind the leader is catching up, not up.
const CATCHING_UP_ENTRIES: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot listen for cluster peers on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Storage(String),
    #[error("TLS on the cluster port: {0}")]
    Tls(String),
    #[error("the cluster's consensus stopped: {0}")]
    Raft(String),
}

/// Why a change was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// No leader can be reached (this node is cut off from the majority, or an election
    /// is under way): the change is not made.
    #[error("the cluster has no reachable leader (this node may be cut off from the majority); the change was not made")]
    NoLeader,
    /// The leader was reached but the outcome is unknown (it may yet be committed).
    #[error("the cluster did not confirm the change in time: {0}")]
    Unconfirmed(String),
}

pub struct ClusterNode {
    config: ClusterConfig,
    me: NodeId,
    raft: Raft,
    pub(crate) transport: Arc<Transport>,
    state_machine: StateMachine,
    /// The names the other members gave (in probes and handshakes), kept so that a member
    /// that went down is still shown by its name.
    pub(crate) names: parking_lot::Mutex<std::collections::HashMap<NodeId, String>>,
    /// The broker: what takes the messages other nodes forward.
    pub(crate) applier: Arc<dyn Applier>,
    pub(crate) forwarders: crate::forward::Forwarders,
    pub(crate) consumer_links: crate::consumers::ConsumerLinks,
    /// The quorum queue replicas this node holds.
    pub quorum: Arc<crate::quorum::groups::QuorumGroups>,
}

impl ClusterNode {
    /// This node's name.
    pub fn name(&self) -> &str {
        &self.config.node_name
    }

    /// Opens this node's Raft state under `<data_dir>/raft`, listens for the other nodes,
    /// and starts forming (or rejoining) the cluster in the background.
    pub async fn start(
        config: ClusterConfig,
        data_dir: &Path,
        applier: Arc<dyn Applier>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<ClusterNode>, ClusterError> {
        let me = config.node_id();
        let dir = data_dir.join("raft");
        let log = RaftLog::open(&dir).map_err(|e| ClusterError::Storage(e.to_string()))?;
        let log_store = LogStore::new(log);
        let fresh = log_store.is_empty();
        let state_machine =
            StateMachine::open(&dir, applier.clone(), !fresh).map_err(ClusterError::Storage)?;
        let introduction = Introduction {
            node_id: me,
            name: config.node_name.clone(),
            address: config.listen.to_string(),
        };
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::ClusterTls::load(files).map_err(ClusterError::Tls)?),
            None => None,
        };
        let transport = Transport::new(introduction, config.secret.clone(), tls);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ClusterError::Listen {
                    address: config.listen,
                    source,
                })?;
        let raft_config = Config {
            cluster_name: "wharf".to_string(),
            heartbeat_interval: 250,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            install_snapshot_timeout: 60_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(5000),
            max_in_snapshot_log_to_keep: 1000,
            ..Config::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let raft = Raft::new(
            me,
            Arc::new(raft_config),
            Network {
                transport: transport.clone(),
            },
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let node = Arc::new(ClusterNode {
            config,
            me,
            raft,
            transport: transport.clone(),
            state_machine,
            names: Default::default(),
            applier,
            forwarders: Default::default(),
            consumer_links: Default::default(),
            quorum: Arc::new(crate::quorum::groups::QuorumGroups::new(
                me,
                data_dir,
                transport.clone(),
            )),
        });
        {
            // A peer this node reached is gone: as when its connection to this node ends.
            let node = Arc::downgrade(&node);
            transport.on_lost(Arc::new(move |peer: &Introduction| {
                if let Some(node) = node.upgrade() {
                    node.peer_gone(peer);
                }
            }));
        }
        tokio::spawn(transport.serve(listener, node.clone(), shutdown.clone()));
        tokio::spawn(node.clone().form(fresh, shutdown.clone()));
        tokio::spawn(node.clone().learn_names(shutdown.clone()));
        tokio::spawn(node.quorum.clone().supervise(shutdown.clone()));
        {
            let node = node.clone();
            let mut shutdown = shutdown;
            tokio::spawn(async move {
                let _ = shutdown.changed().await;
                node.quorum.shutdown().await;
                let _ = node.raft.shutdown().await;
            });
        }
        tracing::info!(
            node = %node.config.node_name,
            id = me,
            listen = %node.config.listen,
            seeds = ?node.config.seeds,
            "cluster node started"
        );
        Ok(node)
    }

    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The cluster address the other nodes reach this one at.
    pub fn listen_address(&self) -> String {
        self.config.listen.to_string()
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Whether this node has applied the cluster's default vhost and user (the first
    /// entries of every cluster): before, it has none of the cluster's definitions.
    pub fn is_seeded(&self) -> bool {
        self.state_machine.is_seeded()
    }

    /// The definitions as this node last applied them.
    pub fn definitions(&self) -> wharf_store::Definitions {
        self.state_machine.definitions()
    }

    async fn probe(&self, address: SocketAddr) -> Result<Probe, String> {
        match self
            .transport
            .request(address, &Request::Probe, PROBE_TIMEOUT)
            .await
        {
            Ok((_, Response::Probe(probe))) => Ok(probe),
            Ok((_, other)) => Err(format!("an answer of the wrong kind: {other:?}")),
            Err(error) => Err(error.to_string()),
        }
    }

    fn own_probe(&self) -> Probe {
        let metrics = self.raft.metrics().borrow().clone();
        Probe {
            name: self.config.node_name.clone(),
            initialized: metrics.last_log_index.is_some() || metrics.vote.leader_id().term > 0,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_applied: metrics.last_applied.map(|l| l.index),
            members: metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect(),
        }
    }
}

impl Handler for ClusterNode {
    fn push(&self, from: &Introduction, payload: Vec<u8>) -> Response {
        self.take_pushes(from, &payload)
    }

    fn control(
        &self,
        from: &Introduction,
        control: wharf_core::cluster::ConsumerControl,
    ) -> Response {
        Response::Controlled(self.applier.serve_control(&from.name, control))
    }

    fn peer_gone(&self, peer: &Introduction) {
        self.applier.release_peer(&peer.name, None);
        self.applier.cancel_subscriptions(&peer.name, None);
    }

    fn deliver(
        &self,
        payload: Vec<u8>,
    ) -> impl std::future::Future<Output = Response> + Send + 'static {
        self.take_delivery(payload)
    }

    fn group(
        &self,
        payload: Vec<u8>,
    ) -> impl std::future::Future<Output = Vec<u8>> + Send + 'static {
        let groups = self.quorum.clone();
        async move { groups.answer(payload).await }
    }

    async fn handle(&self, from: Introduction, request: Request) -> Response {
        let from_name = from.name.clone();
        self.names.lock().insert(from.node_id, from.name);
        match request {
            Request::AppendEntries(rpc) => {
                Response::AppendEntries(self.raft.append_entries(rpc).await)
            }
            Request::Vote(rpc) => Response::Vote(self.raft.vote(rpc).await),
            Request::Snapshot { vote, meta, data } => {
                let snapshot = openraft::Snapshot {
                    meta,
                    snapshot: Box::new(std::io::Cursor::new(data.into_bytes())),
                };
                Response::Snapshot(
                    self.raft
                        .install_full_snapshot(vote, snapshot)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            Request::Write(command) => Response::Write(self.write_as_leader(command).await),
            Request::Join { node_id, member } => Response::Join(self.join(node_id, member).await),
            Request::Probe => Response::Probe(self.own_probe()),
            Request::ReadIndex => Response::ReadIndex(self.read_index_as_leader().await),
            Request::Forget { node_id } => Response::Forget(self.remove_member(node_id).await),
            Request::Queue {
                vhost,
                queue,
                request,
            } => {
                self.answer_queue(from_name.clone(), vhost, queue, request)
                    .await
            }
            Request::Operator(asked) => {
                let applier = self.applier.clone();
                let answered =
                    tokio::task::spawn_blocking(move || applier.answer_operator(&asked)).await;
                Response::Operator(answered.unwrap_or_default())
            }
            Request::Consume(request) => {
                let applier = self.applier.clone();
                let peer = from_name.clone();
                let answered =
                    tokio::task::spawn_blocking(move || applier.serve_consume(&peer, request))
                        .await;
                Response::Consumed(
                    answered.unwrap_or_else(|error| {
                        Err(("INTERNAL_ERROR".to_string(), error.to_string()))
                    }),
                )
            }
            // Taken in the connection's order, before it gets here.
            Request::Control(control) => {
                Response::Controlled(self.applier.serve_control(&from_name, control))
            }
            Request::AwaitApplied { index } => Response::AwaitApplied(
                self.raft
                    .wait(Some(MEMBERS_APPLY_WAIT))
                    .applied_index_at_least(Some(index), "applied for a proposer")
                    .await
                    .is_ok(),
            ),
        }
    }
}
