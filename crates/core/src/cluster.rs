//! The broker's side of a cluster: where a definitions change goes when the node belongs
//! to one, and what the operator's tools show of it. The cluster itself (consensus,
//! connections between nodes) is another crate's, which implements [`Cluster`]; the
//! broker holds it once the node started, and applies the changes every node commits
//! through [`crate::Broker::apply_replicated`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use wharf_amqp::ByteString;
use wharf_store::Change;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::flusher::SyncTarget;
use crate::message::Message;

/// A future the cluster answers with.
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the broker needs of its cluster.
pub trait Cluster: Send + Sync + 'static {
    /// Commits `change` through the cluster's majority, and returns once this node has
    /// applied it (through [`crate::Broker::apply_replicated`]), with what applying it
    /// answered. Blocks the calling thread: administration is not a hot path, and the
    /// callers are synchronous.
    fn commit(&self, change: Change) -> Result<()>;

    /// Commits `change` in the background, without waiting: what a node does on its own
    /// (an auto-delete or exclusive queue going, an expired queue), from code that must not
    /// block. A refusal is logged.
    fn commit_later(&self, change: Change);

    /// Returns once this node applied every change committed before the call, so that a
    /// check made next (does this user exist?) sees what any node saw. Blocks, as
    /// [`Cluster::commit`].
    fn sync(&self) -> Result<()>;

    /// Hands `message` to `queues` of `vhost` on the node named `home`, after whatever
    /// this node handed that node before (messages arrive in the order they were
    /// forwarded). Returns at once; the answer settles `forwarded` later.
    fn forward(
        &self,
        home: &str,
        vhost: &ByteString,
        queues: Vec<ByteString>,
        message: &Message,
        forwarded: Arc<Forwarded>,
    );

    /// Asks the node named `home` about one of its queues, and waits for the answer.
    /// Blocks, as [`Cluster::commit`]. The node unreachable: [`ErrorKind::NotFound`] with
    /// RabbitMQ's text for a queue whose node is down.
    fn ask(
        &self,
        home: &str,
        vhost: &str,
        queue: &str,
        request: QueueRequest,
    ) -> Result<QueueAnswer>;

    /// Registers, on the node named `home`, a consumer of one of its queues for a channel
    /// of this node (see `queue::remote::Subscription`); blocks until it answers.
    fn consume(&self, home: &str, request: ConsumeRequest) -> Result<()>;

    /// Sends a remote consumer's settlement, credit or cancellation to the node named
    /// `home`, after the ones sent to it before; returns at once.
    fn control(&self, home: &str, control: ConsumerControl);

    /// Hands a delivery (or a cancellation) for a consumer of node `peer` on one of this
    /// node's queues to that node, after the ones handed to it before; returns at once.
    fn push(&self, peer: &str, pushed: Pushed);

    /// The members as they answer now.
    fn status(&self) -> Answer<'_, ClusterView>;

    /// The names of the members that answer now (this node among them). Blocks, as
    /// [`Cluster::commit`].
    fn members_up(&self) -> Vec<String>;

    /// Removes a member that is down (by node name or cluster address) for good; answers
    /// its name, or why not.
    fn forget(&self, member: String) -> Answer<'_, std::result::Result<String, String>>;

    /// Joins this node (fresh, not yet a member) to the cluster of the member at cluster
    /// address `address`; answers that member's name, or why not.
    fn join(&self, address: String) -> Answer<'_, std::result::Result<String, String>>;

    /// Asks every other member at once what an operator's tool asks of each (see
    /// [`OperatorAnswers`]); a member that does not answer in time is listed without
    /// items.
    fn gather(&self, request: OperatorRequest) -> Answer<'_, Vec<Gathered>>;

    /// Opens this node's replica of a quorum queue's group (from its disk, or new: the
    /// queue's first member starts the group), which then drives `queue`: it attaches
    /// itself, applies the group's entries to it and tells it when this node leads.
    /// Returns at once; opening twice opens once.
    fn host_replica(&self, queue: Arc<dyn crate::quorum::ReplicatedQueue>);

    /// Stops this node's replica of quorum queue group `group` and deletes what it kept.
    fn drop_replica(&self, group: u64);
}

pub use crate::error::NOT_LEADER;

/// How long a node looks for a quorum queue's leader (an election, a move) before it
/// gives up on an operation.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);

/// What an operator's tool on one node asks of every member: its part of a cluster-wide
/// list (its queues, its connections, itself), so that the tools on any node show every
/// node's, or an action on what only it holds (closing one of its connections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRequest {
    /// What is asked ("http:queues", "ctl:list", ...: the [`OperatorAnswers`]' to name).
    pub kind: String,
    /// How to render it (a management list's query string, a `ctl` command's columns).
    #[serde(default)]
    pub argument: String,
}

/// One member's answer to an [`OperatorRequest`].
#[derive(Debug, Clone)]
pub struct Gathered {
    pub node: String,
    /// None: it did not answer.
    pub items: Option<Vec<serde_json::Value>>,
}

/// How a node answers other members' [`OperatorRequest`]s; the operator's tools (the
/// management API, `wharf ctl`) answer them, and register once they started.
pub trait OperatorAnswers: Send + Sync + 'static {
    /// This node's items of list `kind` (or what the action `kind` did), as `argument`
    /// asks; an unknown kind has none.
    fn answer_operator(&self, kind: &str, argument: &str) -> Vec<serde_json::Value>;
}

/// What a node asks of another node's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueRequest {
    /// Its ready messages and consumers (a passive declare, a redeclare).
    Counts,
    Purge,
    /// A queue.delete, checked there: answers the ready messages it held.
    Delete {
        if_unused: bool,
        if_empty: bool,
    },
    /// A basic.get: without acknowledgement (`ack_key` None), or held until the asking
    /// node settles it through the getter `ack_key` of its channel (as a consumer's
    /// delivery is settled, see `ConsumerControl`).
    Get {
        ack_key: Option<u64>,
    },
    /// The management API's get: up to `count` messages (all with None), taken and then
    /// settled together as `then` says.
    Inspect {
        count: Option<u32>,
        then: Settle,
    },
}

/// How deliveries are settled: a remote consumer's, or those the management API's get
/// took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settle {
    Ack,
    Requeue,
    Reject,
}

/// A queue's node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueAnswer {
    Counts {
        messages: u32,
        consumers: u32,
    },
    Count(u32),
    /// The message taken (as a queue's log stores it, base64), whether it was delivered
    /// before, and the ready messages left; None when the queue was empty.
    Got(Option<GotMessage>),
    /// What an inspect took, in order.
    Inspected(Vec<GotMessage>),
    /// Refused there: the error's kind (by its AMQP name) and text.
    Refused {
        kind: String,
        detail: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GotMessage {
    pub record: String,
    /// Where it is in its queue: what its settlement names.
    #[serde(default)]
    pub offset: u64,
    pub redelivered: bool,
    pub message_count: u32,
}

/// A consumer of another node's queue, as this node asks that node for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumeRequest {
    pub vhost: String,
    pub queue: String,
    /// This node's key for the consumer: what the queue's node names it by.
    pub key: u64,
    pub consumer_tag: String,
    pub no_ack: bool,
    pub exclusive: bool,
    /// basic.consume's arguments, in their AMQP encoding, base64.
    pub arguments: String,
    /// How many deliveries may be on their way or unacknowledged at once.
    pub credit: u32,
}

/// What a remote consumer's node tells the queue's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerControl {
    Ack {
        key: u64,
        offsets: Vec<u64>,
    },
    Requeue {
        key: u64,
        offsets: Vec<u64>,
    },
    /// Rejected without requeue: dead-lettered or dropped there.
    Reject {
        key: u64,
        offsets: Vec<u64>,
    },
    /// Deliveries without acknowledgement that reached the client: their credit back.
    Credit {
        key: u64,
        count: u32,
    },
    /// basic.cancel: no more deliveries; those outstanding are still settled one by one.
    Cancel {
        key: u64,
    },
}

/// What the queue's node hands a remote consumer's node.
#[derive(Debug, Clone)]
pub enum Pushed {
    Delivery {
        key: u64,
        offset: u64,
        redelivered: bool,
        message: Message,
    },
    /// The queue went (deleted): the consumer is cancelled.
    Cancelled { key: u64 },
}

/// RabbitMQ's refusal of an operation on a queue whose node is down.
pub fn home_down(queue: &str, vhost: &str, home: &str) -> crate::Error {
    crate::Error::not_found(format_args!(
        "home node '{home}' of durable queue '{queue}' in vhost '{vhost}' is down or \
         inaccessible"
    ))
}

/// How long a publisher's confirm waits for another node to take a message before it
/// counts as not taken.
const FORWARD_WAIT: Duration = Duration::from_secs(30);

/// How many bytes of messages a node has handed to other nodes and not yet had answered,
/// beyond which its publishing connections stop reading until answers come (as a
/// resource alarm stops them, but silently: RabbitMQ's credit flow between its
/// processes). Forwarding is then as fast as the other nodes take messages, and what
/// waits, waits in the publishers' sockets, not in this node's memory.
pub const FORWARD_WINDOW_BYTES: u64 = 32 * 1024 * 1024;

/// The bytes a node's forwarded messages hold until answered (see
/// [`FORWARD_WINDOW_BYTES`]).
#[derive(Debug, Default)]
pub struct ForwardWindow {
    bytes: AtomicU64,
}

impl ForwardWindow {
    /// Whether publishers should wait for answers before sending more.
    pub fn is_full(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) >= FORWARD_WINDOW_BYTES
    }

    /// Bytes forwarded and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A message handed to another node's queues: settled once that node answered, true when
/// its queues took it (and, for a persistent message on a durable queue, fsynced it),
/// false when they could not (the node unreachable or gone, a queue full with
/// reject-publish). A publisher's confirm waits on it as on a local queue's log. Until
/// settled it holds its bytes of the node's [`ForwardWindow`].
#[derive(Default)]
pub struct Forwarded {
    outcome: Mutex<Option<bool>>,
    settled: Condvar,
    held: Option<(Arc<ForwardWindow>, u64)>,
}

impl Forwarded {
    /// A forward that holds `bytes` of `window` until settled.
    pub fn holding(window: &Arc<ForwardWindow>, bytes: u64) -> Forwarded {
        window.bytes.fetch_add(bytes, Ordering::Relaxed);
        Forwarded {
            outcome: Mutex::new(None),
            settled: Condvar::new(),
            held: Some((window.clone(), bytes)),
        }
    }

    pub fn settle(&self, taken: bool) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if outcome.is_none() {
            *outcome = Some(taken);
            if let Some((window, bytes)) = &self.held {
                window.bytes.fetch_sub(*bytes, Ordering::Relaxed);
            }
            self.settled.notify_all();
        }
    }
}

impl SyncTarget for Forwarded {
    fn sync_appends(&self) -> bool {
        let outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        let (outcome, _) = self
            .settled
            .wait_timeout_while(outcome, FORWARD_WAIT, |o| o.is_none())
            .unwrap_or_else(|e| e.into_inner());
        outcome.unwrap_or(false)
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        // Never settled (its forwarder gone): its bytes go back all the same.
        self.settle(false);
    }
}

/// The cluster as the operator's tools show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The node that answers.
    pub node_name: String,
    /// The metadata group's leader (its name, or its address when no name is known).
    pub leader: Option<String>,
    pub term: u64,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Its node name, or its address while it has not answered.
    pub name: String,
    pub address: String,
    /// "up", "down" or "catching up".
    pub state: String,
    pub voter: bool,
    pub leader: bool,
    /// The node that answers.
    pub this_node: bool,
}

/// Where the broker and its vhosts find the cluster. Shared by the broker and each vhost:
/// the node's name is set when the broker starts as a cluster member (before the cluster
/// is attached: what it restores from its store is already the cluster's), the cluster
/// once attached.
#[derive(Clone, Default)]
pub struct ClusterSlot(Arc<SlotInner>);

#[derive(Default)]
struct SlotInner {
    member: OnceLock<String>,
    cluster: OnceLock<Arc<dyn Cluster>>,
    window: Arc<ForwardWindow>,
    operator_answers: std::sync::RwLock<Vec<(String, Arc<dyn OperatorAnswers>)>>,
}

impl ClusterSlot {
    pub fn get(&self) -> Option<&Arc<dyn Cluster>> {
        self.0.cluster.get()
    }

    /// Fills the slot; a second cluster is refused (a node belongs to one).
    pub fn set(&self, cluster: Arc<dyn Cluster>) -> bool {
        self.0.cluster.set(cluster).is_ok()
    }

    /// This node's name, when it is a cluster member: the home of the queues it holds.
    pub fn member(&self) -> Option<&str> {
        self.0.member.get().map(String::as_str)
    }

    /// What this node's forwarded messages hold (see [`FORWARD_WINDOW_BYTES`]).
    pub fn forward_window(&self) -> &Arc<ForwardWindow> {
        &self.0.window
    }

    /// Registers what answers the operator requests whose kind starts with `prefix`
    /// (the management API's, `ctl`'s).
    pub fn add_operator_answers(&self, prefix: &str, answers: Arc<dyn OperatorAnswers>) {
        if let Ok(mut all) = self.0.operator_answers.write() {
            all.push((prefix.to_string(), answers));
        }
    }

    /// This node's answer to another member's operator request.
    pub fn answer_operator(&self, request: &OperatorRequest) -> Vec<serde_json::Value> {
        let answers = self.0.operator_answers.read().ok().and_then(|all| {
            all.iter()
                .find(|(prefix, _)| request.kind.starts_with(prefix.as_str()))
                .map(|(_, answers)| answers.clone())
        });
        answers.map_or_else(Vec::new, |answers| {
            answers.answer_operator(&request.kind, &request.argument)
        })
    }

    pub(crate) fn set_member(&self, node_name: String) {
        let _ = self.0.member.set(node_name);
    }
}

impl std::fmt::Debug for ClusterSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.member(), self.get().is_some()) {
            (_, true) => "ClusterSlot(attached)",
            (Some(_), false) => "ClusterSlot(member, not attached yet)",
            (None, false) => "ClusterSlot(none)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_holds_its_bytes_of_the_window_until_settled_once() {
        let window = Arc::new(ForwardWindow::default());
        let first = Forwarded::holding(&window, FORWARD_WINDOW_BYTES - 10);
        assert!(!window.is_full());
        let second = Forwarded::holding(&window, 10);
        assert!(window.is_full());
        second.settle(true);
        second.settle(false); // a second answer changes nothing
        assert!(second.sync_appends(), "the first answer stands");
        assert_eq!(window.in_flight(), FORWARD_WINDOW_BYTES - 10);
        drop(first); // never answered: its bytes go back all the same
        assert_eq!(window.in_flight(), 0);
        drop(second);
        assert_eq!(window.in_flight(), 0, "given back once");
    }

    #[test]
    fn a_forward_that_is_not_taken_is_not_synced() {
        let forwarded = Forwarded::default();
        forwarded.settle(false);
        assert!(!forwarded.sync_appends());
    }
}
