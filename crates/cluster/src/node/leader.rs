//! Changes and reads through the leader: a change forwarded to it and waited for until
//! applied here (and on the members that answer), a read index so that checks are not
//! stale, and waiting out an election.

use super::*;

impl ClusterNode {
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
    pub(super) async fn through_leader<T, F, Fut>(&self, mut attempt: F) -> Result<T, WriteError>
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

    pub(super) async fn read_index_as_leader(&self) -> Result<u64, WriteRefusal> {
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
    pub(super) async fn await_members(&self, index: u64) {
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

    pub(super) async fn write_as_leader(&self, command: Command) -> Result<Written, WriteRefusal> {
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

    pub(super) async fn forward(
        &self,
        leader: NodeId,
        command: Command,
    ) -> Result<Written, WriteRefusal> {
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

    pub(super) fn member_address(&self, id: NodeId) -> Option<SocketAddr> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        membership
            .get_node(&id)
            .and_then(|member| member.address.parse().ok())
    }
}
