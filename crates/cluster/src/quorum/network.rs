//! A group's RPCs to the other replicas: encoded with the group's id
//! ([`super::codec`]) and sent over a [`GroupLink`], the node's shared connections (or,
//! in tests, a direct call).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot};

use super::codec::{encode_rpc, GroupAnswer, GroupRpc};
use super::{GroupId, QueueConfig, Vote};
use crate::config::NodeId;
use crate::raft::Member;

/// Why a group's RPC got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The node cannot be reached (down, cut off, or it holds no replica of the group).
    #[error("{0}")]
    Unreachable(String),
    /// Sent, but no answer came back.
    #[error("{0}")]
    Failed(String),
}

/// How a node's groups reach the other nodes.
pub trait GroupLink: Send + Sync + 'static {
    /// Sends an encoded RPC to the node at `address` and returns its answer.
    fn call(
        &self,
        address: &str,
        rpc: Vec<u8>,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<GroupAnswer, LinkError>> + Send + 'static>>;
}

/// Makes a client for each replica a group's leader replicates to.
#[derive(Clone)]
pub struct GroupNetwork {
    pub group: GroupId,
    pub link: Arc<dyn GroupLink>,
}

impl RaftNetworkFactory<QueueConfig> for GroupNetwork {
    type Network = ReplicaClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> ReplicaClient {
        ReplicaClient {
            group: self.group,
            link: self.link.clone(),
            target,
            address: node.address.clone(),
        }
    }
}

pub struct ReplicaClient {
    group: GroupId,
    link: Arc<dyn GroupLink>,
    target: NodeId,
    address: String,
}

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

fn rpc_error<E: std::error::Error>(error: LinkError) -> RPCError<NodeId, Member, E> {
    match error {
        LinkError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&error)),
        LinkError::Failed(_) => RPCError::Network(NetworkError::new(&error)),
    }
}

fn unexpected<E: std::error::Error>(answer: &GroupAnswer) -> RPCError<NodeId, Member, E> {
    let error = std::io::Error::other(format!("an answer of the wrong kind: {answer:?}"));
    RPCError::Network(NetworkError::new(&error))
}

impl ReplicaClient {
    async fn call(&self, rpc: &GroupRpc, timeout: Duration) -> Result<GroupAnswer, LinkError> {
        let bytes = encode_rpc(self.group, rpc);
        match self.link.call(&self.address, bytes, timeout).await? {
            GroupAnswer::NoGroup => Err(LinkError::Unreachable(format!(
                "node {} holds no replica of group {:x}",
                self.target, self.group
            ))),
            answer => Ok(answer),
        }
    }
}

impl RaftNetwork<QueueConfig> for ReplicaClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<QueueConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        match self
            .call(&GroupRpc::AppendEntries(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            GroupAnswer::AppendEntries(answer) => {
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        match self
            .call(&GroupRpc::Vote(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            GroupAnswer::Vote(answer) => {
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<QueueConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<QueueConfig, Fatal<NodeId>>> {
        let rpc = GroupRpc::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let answer = tokio::select! {
            answer = self.call(&rpc, option.hard_ttl()) => answer,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let answer = answer.map_err(|e| match e {
            LinkError::Unreachable(_) => StreamingError::Unreachable(Unreachable::new(&e)),
            LinkError::Failed(_) => StreamingError::Network(NetworkError::new(&e)),
        })?;
        match answer {
            GroupAnswer::Snapshot(Ok(response)) => Ok(response),
            GroupAnswer::Snapshot(Err(reason)) => Err(StreamingError::Network(NetworkError::new(
                &std::io::Error::other(reason),
            ))),
            other => Err(StreamingError::Network(NetworkError::new(
                &std::io::Error::other(format!("an answer of the wrong kind: {other:?}")),
            ))),
        }
    }
}
