//! How the broker and its cluster node reach each other: the state machine applies each
//! committed change to the broker ([`BrokerApplier`]), and the broker commits changes and
//! asks for the cluster's status through [`ClusterHandle`], the core's `Cluster`.

use std::sync::Arc;

use tokio::runtime::{Handle, RuntimeFlavor};
use wharf_amqp::ByteString;
use wharf_core::cluster::{
    Answer, Cluster, ClusterView, ConsumeRequest, ConsumerControl, Forwarded, Gathered, MemberView,
    OperatorRequest, Pushed, QueueAnswer, QueueRequest,
};
use wharf_core::message::Message;
use wharf_core::{Broker, Error, ErrorKind};
use wharf_store::{Change, Definitions};

use crate::node::ClusterNode;
use crate::raft::state_machine::Applier;
use crate::raft::{Command, Outcome};

/// Applies what the cluster commits to this node's broker.
pub struct BrokerApplier {
    pub broker: Arc<Broker>,
}

impl Applier for BrokerApplier {
    fn restore(&self, definitions: &Definitions) {
        self.broker.restore_replicated(definitions);
    }

    fn applied(&self) -> Option<(Definitions, String)> {
        self.broker.replicated_definitions()
    }

    fn mark_applied(&self, marker: String) {
        self.broker.mark_replicated(marker);
    }

    fn take_forwarded(
        &self,
        vhost: &str,
        queues: &[&str],
        record: Vec<u8>,
        done: Box<dyn FnOnce(bool) + Send>,
    ) {
        self.broker.take_forwarded(vhost, queues, record, done);
    }

    fn take_forwarded_message(
        &self,
        vhost: &str,
        queues: &[&str],
        message: Message,
        done: Box<dyn FnOnce(bool) + Send>,
    ) {
        self.broker
            .take_forwarded_message(vhost, queues, message, done);
    }

    fn serve_consume(&self, peer: &str, request: ConsumeRequest) -> Result<(), (String, String)> {
        self.broker
            .serve_consume(peer, request)
            .map_err(|error| (error.kind.name().to_string(), error.detail))
    }

    fn serve_control(&self, peer: &str, control: ConsumerControl) -> bool {
        self.broker.serve_control(peer, control)
    }

    fn take_pushed(&self, home: &str, pushed: Vec<Pushed>) -> Vec<u64> {
        self.broker.take_pushed(home, pushed)
    }

    fn release_peer(&self, peer: &str, keys: Option<&[u64]>) {
        self.broker.release_peer(peer, keys);
    }

    fn cancel_subscriptions(&self, home: &str, keys: Option<&[u64]>) {
        self.broker.cancel_subscriptions(home, keys);
    }

    fn answer_queue_request(
        &self,
        peer: &str,
        vhost: &str,
        queue: &str,
        request: QueueRequest,
    ) -> QueueAnswer {
        self.broker
            .answer_queue_request(peer, vhost, queue, request)
    }

    fn answer_operator(&self, request: &OperatorRequest) -> Vec<serde_json::Value> {
        self.broker.cluster_slot().answer_operator(request)
    }

    fn apply(&self, change: &Change) -> Outcome {
        match self.broker.apply_replicated(change) {
            Ok(()) => Outcome::Applied,
            Err(error) => Outcome::Refused {
                kind: error.kind.name().to_string(),
                detail: error.detail,
            },
        }
    }
}

/// The broker's handle on its cluster node.
pub struct ClusterHandle {
    pub node: Arc<ClusterNode>,
    /// Where to wait for the cluster from a thread outside the runtime.
    pub runtime: Handle,
}

impl ClusterHandle {
    /// Runs a cluster future to completion from synchronous code: on a worker thread of
    /// the multi-threaded runtime, the thread is handed over to blocking meanwhile, so
    /// the runtime's other tasks (the consensus among them) go on.
    fn wait<T>(&self, future: impl std::future::Future<Output = T>) -> Result<T, Error> {
        match Handle::try_current() {
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
                Ok(tokio::task::block_in_place(|| current.block_on(future)))
            }
            Ok(_) => Err(Error::new(
                ErrorKind::InternalError,
                "a cluster change cannot be waited for on a single-threaded runtime",
            )),
            Err(_) => Ok(self.runtime.block_on(future)),
        }
    }
}

impl Cluster for ClusterHandle {
    fn commit(&self, change: Change) -> Result<(), Error> {
        match self.wait(self.node.write(Command::Change(change)))? {
            Ok(Outcome::Applied) => Ok(()),
            Ok(Outcome::Refused { kind, detail }) => Err(Error::new(
                ErrorKind::from_name(&kind).unwrap_or(ErrorKind::InternalError),
                detail,
            )),
            Err(error) => Err(Error::new(ErrorKind::Unavailable, error.to_string())),
        }
    }

    fn forward(
        &self,
        home: &str,
        vhost: &ByteString,
        queues: Vec<ByteString>,
        message: &Message,
        forwarded: Arc<Forwarded>,
    ) {
        // Called from publishing, on a runtime thread or not: the forwarder is spawned
        // on the cluster's runtime.
        let _entered = self.runtime.enter();
        self.node
            .forward_message(home, vhost, queues, message, forwarded)
    }

    fn ask(
        &self,
        home: &str,
        vhost: &str,
        queue: &str,
        request: QueueRequest,
    ) -> Result<QueueAnswer, Error> {
        self.wait(self.node.ask_queue(home, vhost, queue, request))?
            .ok_or_else(|| wharf_core::cluster::home_down(queue, vhost, home))
    }

    fn consume(&self, home: &str, request: ConsumeRequest) -> Result<(), Error> {
        self.wait(self.node.consume_on(home, request))?
            .map_err(|(kind, detail)| {
                Error::new(
                    ErrorKind::from_name(&kind).unwrap_or(ErrorKind::InternalError),
                    detail,
                )
            })
    }

    fn control(&self, home: &str, control: ConsumerControl) {
        let _entered = self.runtime.enter();
        self.node.send_control(home, control);
    }

    fn push(&self, peer: &str, pushed: Pushed) {
        let _entered = self.runtime.enter();
        self.node.send_push(peer, pushed);
    }

    fn commit_later(&self, change: Change) {
        let node = self.node.clone();
        self.runtime.spawn(async move {
            let what = format!("{change:?}");
            match node.write(Command::Change(change)).await {
                Ok(Outcome::Applied) => {}
                Ok(Outcome::Refused { detail, .. }) => {
                    tracing::debug!(change = what, detail, "a change of this node's own refused")
                }
                Err(error) => {
                    tracing::warn!(change = what, %error, "a change of this node's own not committed")
                }
            }
        });
    }

    fn sync(&self) -> Result<(), Error> {
        self.wait(self.node.sync())?
            .map_err(|error| Error::new(ErrorKind::Unavailable, error.to_string()))
    }

    fn forget(&self, member: String) -> Answer<'_, Result<String, String>> {
        Box::pin(async move { self.node.forget(&member).await })
    }

    fn join(&self, address: String) -> Answer<'_, Result<String, String>> {
        Box::pin(async move { self.node.join_through(&address).await })
    }

    fn gather(&self, request: OperatorRequest) -> Answer<'_, Vec<Gathered>> {
        Box::pin(async move { self.node.gather(request).await })
    }

    fn host_replica(&self, queue: Arc<dyn wharf_core::quorum::ReplicatedQueue>) {
        self.runtime.spawn(self.node.clone().host_replica(queue));
    }

    fn drop_replica(&self, group: u64) {
        let node = self.node.clone();
        self.runtime
            .spawn(async move { node.quorum.remove(group).await });
    }

    fn members_up(&self) -> Vec<String> {
        let Ok(status) = self.wait(self.node.status()) else {
            return Vec::new();
        };
        status
            .members
            .iter()
            .filter(|m| m.state == crate::status::MemberState::Up)
            .filter_map(|m| m.name.clone())
            .collect()
    }

    fn status(&self) -> Answer<'_, ClusterView> {
        Box::pin(async move {
            let status = self.node.status().await;
            let leader = status.leader_name();
            let members = status
                .members
                .iter()
                .map(|m| MemberView {
                    name: m.name.clone().unwrap_or_else(|| m.address.clone()),
                    address: m.address.clone(),
                    state: m.state.as_str().to_string(),
                    voter: m.voter,
                    leader: status.leader == Some(m.id),
                    this_node: m.id == status.node_id,
                })
                .collect();
            ClusterView {
                node_name: status.node_name.clone(),
                leader,
                term: status.term,
                members,
            }
        })
    }
}
