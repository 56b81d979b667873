//! openraft's network: its RPCs to another member go over the [`Transport`] as requests,
//! and come back as that member's Raft's answers.

use std::future::Future;
use std::net::SocketAddr;
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

use super::{Member, TypeConfig, Vote};
use crate::config::NodeId;
use crate::messages::{Request, Response};
use crate::transport::{Transport, TransportError};

/// Makes a client for each member openraft replicates to.
#[derive(Clone)]
pub struct Network {
    pub transport: Arc<Transport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = MemberClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> MemberClient {
        MemberClient {
            transport: self.transport.clone(),
            target,
            address: node.address.parse().ok(),
            address_text: node.address.clone(),
        }
    }
}

pub struct MemberClient {
    transport: Arc<Transport>,
    target: NodeId,
    address: Option<SocketAddr>,
    address_text: String,
}

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

impl MemberClient {
    async fn call(&self, request: Request, timeout: Duration) -> Result<Response, TransportError> {
        let Some(address) = self.address else {
            return Err(TransportError::Unreachable {
                address: SocketAddr::from(([0, 0, 0, 0], 0)),
                reason: format!("'{}' is not an address", self.address_text),
            });
        };
        self.transport
            .request(address, &request, timeout)
            .await
            .map(|(_, response)| response)
    }
}

fn rpc_error<E: std::error::Error>(error: TransportError) -> RPCError<NodeId, Member, E> {
    match error {
        TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        _ => RPCError::Network(NetworkError::new(&error)),
    }
}

fn unexpected<E: std::error::Error>(response: &Response) -> RPCError<NodeId, Member, E> {
    let error = std::io::Error::other(format!("an answer of the wrong kind: {response:?}"));
    RPCError::Network(NetworkError::new(&error))
}

impl RaftNetwork<TypeConfig> for MemberClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        match self
            .call(Request::AppendEntries(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            Response::AppendEntries(answer) => {
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
            .call(Request::Vote(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            Response::Vote(answer) => {
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let data = String::from_utf8(snapshot.snapshot.into_inner()).map_err(|e| {
            StreamingError::Network(NetworkError::new(&std::io::Error::other(e.to_string())))
        })?;
        let request = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            data,
        };
        let answer = tokio::select! {
            answer = self.call(request, option.hard_ttl()) => answer,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let answer = answer.map_err(|e| match e {
            TransportError::Unreachable { .. } => StreamingError::Unreachable(Unreachable::new(&e)),
            _ => StreamingError::Network(NetworkError::new(&e)),
        })?;
        match answer {
            Response::Snapshot(Ok(response)) => Ok(response),
            Response::Snapshot(Err(reason)) => Err(StreamingError::Network(NetworkError::new(
                &std::io::Error::other(reason),
            ))),
            other => Err(StreamingError::Network(NetworkError::new(
                &std::io::Error::other(format!("an answer of the wrong kind: {other:?}")),
            ))),
        }
    }
}
