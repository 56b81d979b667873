//! A cluster node: this process's Raft member, its listener for the other nodes, and the
//! way a change proposed here reaches the leader and comes back applied. One
//! `Arc<ClusterNode>` per process, owned by the binary; the broker reaches it through
//! [`ClusterNode::write`] and [`ClusterNode::status`].

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
    transport: Arc<Transport>,
    state_machine: StateMachine,
    /// The names the other members gave (in probes and handshakes), kept so that a member
    /// that went down is still shown by its name.
    names: parking_lot::Mutex<std::collections::HashMap<NodeId, String>>,
}

impl ClusterNode {
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
        let state_machine = StateMachine::open(&dir, applier).map_err(ClusterError::Storage)?;
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
        });
        tokio::spawn(transport.serve(listener, node.clone(), shutdown.clone()));
        tokio::spawn(node.clone().form(fresh, shutdown.clone()));
        tokio::spawn(node.clone().learn_names(shutdown.clone()));
        {
            let node = node.clone();
            let mut shutdown = shutdown;
            tokio::spawn(async move {
                let _ = shutdown.changed().await;
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

    /// Makes the default vhost and user once for the whole cluster: whenever this node
    /// leads a cluster that has none, it commits them (applied only if no other leader's
    /// seed came first).
    pub async fn seed_when_leading(
        self: Arc<Self>,
        changes: Vec<wharf_store::Change>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut metrics = self.raft.metrics();
        loop {
            let leading = metrics.borrow().state == ServerState::Leader;
            if leading && !self.state_machine.is_seeded() {
                match self.write(Command::Seed(changes.clone())).await {
                    Ok(_) => tracing::info!("the cluster's default vhost and user are made"),
                    Err(error) => {
                        tracing::warn!(%error, "the default vhost and user are not made yet")
                    }
                }
            }
            if self.state_machine.is_seeded() {
                return;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Asks each member whose name this node does not know yet for it (every 200 ms while
    /// some are unknown, then every 5 s for members that join), so that a member that
    /// goes down is still shown by its name.
    async fn learn_names(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let metrics = self.raft.metrics().borrow().clone();
            let unknown: Vec<(NodeId, SocketAddr)> = metrics
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.me && !self.names.lock().contains_key(id))
                .filter_map(|(id, member)| Some((*id, member.address.parse().ok()?)))
                .collect();
            let members = metrics.membership_config.membership().nodes().count();
            let mut all_known = members > 0;
            for (id, address) in unknown {
                match self.probe(address).await {
                    Ok(probe) => {
                        self.names.lock().insert(id, probe.name);
                    }
                    Err(_) => all_known = false,
                }
            }
            let pause = if all_known {
                Duration::from_secs(5)
            } else {
                Duration::from_millis(200)
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Forms the cluster (a fresh seed, once a majority of the seeds answers), asks to join
    /// it (a fresh node that is not a seed), or does nothing (a node with state: Raft
    /// takes it from there).
    async fn form(self: Arc<Self>, fresh: bool, mut shutdown: watch::Receiver<bool>) {
        if !fresh {
            tracing::info!("rejoining the cluster with this node's own Raft state");
            return;
        }
        let mut attempt = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.try_to_form().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(reason) => {
                    if attempt.is_multiple_of(20) {
                        tracing::info!(%reason, "waiting to form the cluster");
                    }
                }
            }
            attempt += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One formation attempt: true once this node is part of a cluster (or about to be).
    async fn try_to_form(&self) -> Result<bool, String> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(true);
        }
        let others: Vec<SocketAddr> = self
            .config
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != self.config.listen)
            .collect();
        let probes = join_all(others.iter().map(|address| self.probe(*address))).await;
        let answered: Vec<&Probe> = probes.iter().filter_map(|p| p.as_ref().ok()).collect();
        if answered.iter().any(|p| p.initialized) {
            if self.config.is_seed() {
                // The cluster exists and lists this seed: its leader will replicate to it.
                tracing::info!("the cluster exists already; waiting for its leader");
                return Ok(true);
            }
            return self.ask_to_join(&others).await;
        }
        if !self.config.is_seed() {
            return Err("no seed belongs to a cluster yet".to_string());
        }
        let up = 1 + answered.len();
        let seeds = self.config.seeds.len();
        if up * 2 <= seeds {
            return Err(format!(
                "{up} of the {seeds} seeds answer; a majority is needed to form the cluster"
            ));
        }
        // Every seed initializes with the same members, so however they race there is one
        // cluster: Raft's vote decides the leader among identical logs.
        let members: BTreeMap<NodeId, Member> = self
            .config
            .seeds
            .iter()
            .map(|s| {
                (
                    node_id(s),
                    Member {
                        address: s.to_string(),
                    },
                )
            })
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(seeds, "cluster formed from the seed list");
                Ok(true)
            }
            // Another attempt (or a leader's entries) got there first.
            Err(RaftError::APIError(_)) => Ok(true),
            Err(error) => Err(error.to_string()),
        }
    }

    async fn ask_to_join(&self, seeds: &[SocketAddr]) -> Result<bool, String> {
        let request = Request::Join {
            node_id: self.me,
            member: Member {
                address: self.config.listen.to_string(),
            },
        };
        let mut last = String::from("no seed answered");
        for seed in seeds {
            match self.transport.request(*seed, &request, WRITE_TIMEOUT).await {
                Ok((_, Response::Join(Ok(())))) => {
                    tracing::info!(via = %seed, "joined the cluster");
                    return Ok(true);
                }
                Ok((_, Response::Join(Err(refusal)))) => last = refusal.to_string(),
                Ok((_, other)) => last = format!("an answer of the wrong kind: {other:?}"),
                Err(error) => last = error.to_string(),
            }
        }
        Err(last)
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
        }
    }

    /// Waits until this node has applied every change the cluster committed before now
    /// (the leader's read index, confirmed by a majority), so that what it checks next
    /// is not stale.
    pub async fn sync(&self) -> Result<(), WriteError> {
        let index = self
            .through_leader(|leader| async move {
                if leader == self.me {
                    return self.read_index_as_leader().await;
                }
                let address = self
                    .member_address(leader)
                    .ok_or(WriteRefusal::NotLeader { leader: None })?;
                match self
                    .transport
                    .request(address, &Request::ReadIndex, READ_INDEX_TIMEOUT)
                    .await
                {
                    Ok((_, Response::ReadIndex(answer))) => answer,
                    Ok((_, other)) => Err(WriteRefusal::Failed(format!(
                        "an answer of the wrong kind: {other:?}"
                    ))),
                    // A read changes nothing: a leader that does not answer (gone, or
                    // this node cut off) is as if there were none; ask again.
                    Err(_) => Err(WriteRefusal::NotLeader { leader: None }),
                }
            })
            .await?;
        self.raft
            .wait(Some(WRITE_TIMEOUT))
            .applied_index_at_least(Some(index), "caught up with the leader")
            .await
            .map_err(|e| WriteError::Unconfirmed(e.to_string()))?;
        Ok(())
    }

    /// Runs `attempt` on the leader: follows a redirection to a new leader, and waits out
    /// an election (up to [`LEADER_WAIT`]) when there is none, or none that answers.
    async fn through_leader<T, F, Fut>(&self, mut attempt: F) -> Result<T, WriteError>
    where
        F: FnMut(NodeId) -> Fut,
        Fut: std::future::Future<Output = Result<T, WriteRefusal>>,
    {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let mut leader = self.raft.current_leader().await;
        loop {
            if let Some(id) = leader {
                match attempt(id).await {
                    Ok(value) => return Ok(value),
                    Err(WriteRefusal::NotLeader { leader: Some(next) }) if next != id => {
                        leader = Some(next);
                        continue;
                    }
                    Err(WriteRefusal::NotLeader { .. }) => {}
                    Err(WriteRefusal::Failed(reason)) => {
                        return Err(WriteError::Unconfirmed(reason))
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WriteError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            leader = self.raft.current_leader().await;
        }
    }

    async fn read_index_as_leader(&self) -> Result<u64, WriteRefusal> {
        match self.raft.ensure_linearizable().await {
            Ok(read) => Ok(read.map_or(0, |log_id| log_id.index)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                forward,
            ))) => Err(WriteRefusal::NotLeader {
                leader: forward.leader_id,
            }),
            // A leader cut off from the majority leads nothing: as if there were none.
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(WriteRefusal::NotLeader { leader: None })
            }
            Err(error) => Err(WriteRefusal::Failed(error.to_string())),
        }
    }

    /// Commits a change through the leader and waits until this node applied it.
    pub async fn write(&self, command: Command) -> Result<Outcome, WriteError> {
        let command = &command;
        let written = self
            .through_leader(|leader| async move {
                if leader == self.me {
                    self.write_as_leader(command.clone()).await
                } else {
                    self.forward(leader, command.clone()).await
                }
            })
            .await?;
        self.raft
            .wait(Some(WRITE_TIMEOUT))
            .applied_index_at_least(Some(written.index), "a change applied here")
            .await
            .map_err(|e| WriteError::Unconfirmed(e.to_string()))?;
        self.await_members(written.index).await;
        Ok(written.outcome)
    }

    /// Waits (up to [`MEMBERS_APPLY_WAIT`]) until the other members that answer applied
    /// the log up to `index`: a user added here can log in on any node that is up once
    /// the change is answered, as on RabbitMQ, whose metadata every node applies before
    /// the answer. A member that is down or slow is not waited for longer; the change is
    /// committed whatever they say.
    async fn await_members(&self, index: u64) {
        let metrics = self.raft.metrics().borrow().clone();
        let others: Vec<SocketAddr> = metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.me)
            .filter_map(|(_, member)| member.address.parse().ok())
            .collect();
        let request = Request::AwaitApplied { index };
        join_all(others.into_iter().map(|address| {
            let request = &request;
            async move {
                let _ = self
                    .transport
                    .request(address, request, MEMBERS_APPLY_WAIT)
                    .await;
            }
        }))
        .await;
    }

    async fn write_as_leader(&self, command: Command) -> Result<Written, WriteRefusal> {
        let written = tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(command)).await;
        let Ok(written) = written else {
            return Err(WriteRefusal::Failed(format!(
                "the change was not committed within {WRITE_TIMEOUT:?} (is a majority reachable?); \
                 it may still be"
            )));
        };
        match written {
            Ok(response) => {
                // Followers learn the new commit index with the next heartbeat: send it
                // now rather than in up to a heartbeat interval.
                let _ = self.raft.trigger().heartbeat().await;
                Ok(Written {
                    index: response.log_id.index,
                    outcome: response.data,
                })
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(WriteRefusal::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(error) => Err(WriteRefusal::Failed(error.to_string())),
        }
    }

    async fn forward(&self, leader: NodeId, command: Command) -> Result<Written, WriteRefusal> {
        let Some(address) = self.member_address(leader) else {
            return Err(WriteRefusal::NotLeader { leader: None });
        };
        match self
            .transport
            .request(address, &Request::Write(command), WRITE_TIMEOUT)
            .await
        {
            Ok((_, Response::Write(answer))) => answer,
            Ok((_, other)) => Err(WriteRefusal::Failed(format!(
                "an answer of the wrong kind: {other:?}"
            ))),
            // Unreachable before anything was sent: no leader for this node.
            Err(crate::transport::TransportError::Unreachable { .. }) => {
                Err(WriteRefusal::NotLeader { leader: None })
            }
            Err(error) => Err(WriteRefusal::Failed(error.to_string())),
        }
    }

    fn member_address(&self, id: NodeId) -> Option<SocketAddr> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        membership
            .get_node(&id)
            .and_then(|member| member.address.parse().ok())
    }

    async fn join(&self, node_id: NodeId, member: Member) -> Result<(), WriteRefusal> {
        let leader = self.raft.current_leader().await;
        if leader != Some(self.me) {
            let Some(address) = leader.and_then(|l| self.member_address(l)) else {
                return Err(WriteRefusal::NotLeader { leader: None });
            };
            return match self
                .transport
                .request(address, &Request::Join { node_id, member }, WRITE_TIMEOUT)
                .await
            {
                Ok((_, Response::Join(answer))) => answer,
                Ok((_, other)) => Err(WriteRefusal::Failed(format!(
                    "an answer of the wrong kind: {other:?}"
                ))),
                Err(error) => Err(WriteRefusal::Failed(error.to_string())),
            };
        }
        let refusal = |e: RaftError<NodeId, ClientWriteError<NodeId, Member>>| {
            WriteRefusal::Failed(e.to_string())
        };
        self.raft
            .add_learner(node_id, member, true)
            .await
            .map_err(refusal)?;
        let voters: BTreeSet<NodeId> = BTreeSet::from([node_id]);
        self.raft
            .change_membership(openraft::ChangeMembers::AddVoterIds(voters), false)
            .await
            .map_err(refusal)?;
        tracing::info!(node = node_id, "a node joined the cluster");
        Ok(())
    }

    /// Removes a member that is down from the cluster for good (RabbitMQ's
    /// `forget_cluster_node`), named by its node name or its cluster address. A member
    /// that answers is refused, as RabbitMQ refuses a running node: stop it first. The
    /// forgotten node must not come back with its data (it would still think itself a
    /// member): delete its data directory's `raft/` before starting it again.
    pub async fn forget(&self, member: &str) -> Result<String, String> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let found = membership
            .nodes()
            .find(|(id, node)| {
                node.address == member || self.names.lock().get(*id).is_some_and(|n| n == member)
            })
            .map(|(id, node)| (*id, node.clone()));
        let Some((id, node)) = found else {
            return Err(format!("'{member}' is not a member of this cluster"));
        };
        let shown = self
            .names
            .lock()
            .get(&id)
            .cloned()
            .unwrap_or_else(|| node.address.clone());
        if id == self.me {
            return Err(format!(
                "{shown} is this node: run forget_cluster_node on another member"
            ));
        }
        if let Ok(address) = node.address.parse() {
            if self.probe(address).await.is_ok() {
                return Err(format!("{shown} is running: stop it before forgetting it"));
            }
        }
        self.through_leader(|leader| async move {
            if leader == self.me {
                return self.remove_member(id).await;
            }
            let address = self
                .member_address(leader)
                .ok_or(WriteRefusal::NotLeader { leader: None })?;
            match self
                .transport
                .request(address, &Request::Forget { node_id: id }, WRITE_TIMEOUT)
                .await
            {
                Ok((_, Response::Forget(answer))) => answer,
                Ok((_, other)) => Err(WriteRefusal::Failed(format!(
                    "an answer of the wrong kind: {other:?}"
                ))),
                Err(crate::transport::TransportError::Unreachable { .. }) => {
                    Err(WriteRefusal::NotLeader { leader: None })
                }
                Err(error) => Err(WriteRefusal::Failed(error.to_string())),
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(node = %shown, "forgot a cluster member");
        Ok(shown)
    }

    /// On the leader: takes a member out of the membership (a voter, or a learner).
    async fn remove_member(&self, id: NodeId) -> Result<(), WriteRefusal> {
        let metrics = self.raft.metrics().borrow().clone();
        let voter = metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == id);
        let ids = BTreeSet::from([id]);
        let change = if voter {
            openraft::ChangeMembers::RemoveVoters(ids)
        } else {
            openraft::ChangeMembers::RemoveNodes(ids)
        };
        match self.raft.change_membership(change, false).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(WriteRefusal::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(error) => Err(WriteRefusal::Failed(error.to_string())),
        }
    }

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

impl Handler for ClusterNode {
    async fn handle(&self, from: Introduction, request: Request) -> Response {
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
