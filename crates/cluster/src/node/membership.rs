//! How a node becomes and stays a member: formation from the seed list, joining through
//! the seeds, the cluster's default vhost and user, learning the members' names, and
//! removing a member that is down.

use super::*;

impl ClusterNode {
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
    pub(super) async fn learn_names(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
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
    pub(super) async fn form(self: Arc<Self>, fresh: bool, mut shutdown: watch::Receiver<bool>) {
        if !fresh {
            tracing::info!("rejoining the cluster with this node's own Raft state");
            return;
        }
        if self.config.seeds.is_empty() {
            tracing::info!(
                "no seeds: waiting for `wharf ctl join_cluster <cluster address of a member>`"
            );
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
    pub(super) async fn try_to_form(&self) -> Result<bool, String> {
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
            if answered.iter().any(|p| p.members.contains(&self.me)) {
                // The cluster exists and lists this node: its leader will replicate to it.
                tracing::info!("the cluster exists already; waiting for its leader");
                return Ok(true);
            }
            // Not (or no longer, once forgotten) a member: ask to become one.
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

    pub(super) async fn ask_to_join(&self, seeds: &[SocketAddr]) -> Result<bool, String> {
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

    /// `wharf ctl join_cluster`: a fresh node (started without seeds, or not yet joined
    /// through them) joins the cluster of the member at `address`. A node that belongs
    /// to a cluster already is refused: RabbitMQ resets a node before it joins another
    /// cluster, and Wharf does not throw a node's data away.
    pub async fn join_through(&self, address: &str) -> Result<String, String> {
        let address: SocketAddr = address.parse().map_err(|_| {
            format!("'{address}' is not a cluster address (IP:PORT, such as 10.0.0.1:25672)")
        })?;
        if address == self.config.listen {
            return Err(format!("{address} is this node's own address"));
        }
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| e.to_string())?
        {
            return Err(
                "this node is a cluster member already; to move it to another cluster, \
                 forget it there (forget_cluster_node) and start it with an empty data directory"
                    .to_string(),
            );
        }
        let probe = self
            .probe(address)
            .await
            .map_err(|reason| format!("cannot reach the node at {address}: {reason}"))?;
        if !probe.initialized {
            return Err(format!(
                "the node at {address} ({}) is not a cluster member",
                probe.name
            ));
        }
        self.ask_to_join(&[address]).await?;
        Ok(probe.name)
    }

    pub(super) async fn join(&self, node_id: NodeId, member: Member) -> Result<(), WriteRefusal> {
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
    pub(super) async fn remove_member(&self, id: NodeId) -> Result<(), WriteRefusal> {
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
}
