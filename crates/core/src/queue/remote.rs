//! A queue that lives on another cluster node. Every node knows every queue (the cluster
//! replicates their definitions), but only the queue's home node holds its messages and
//! consumers; the others keep this record of it, so that a declare is checked against it
//! and a binding can lead to it.

use std::sync::atomic::{AtomicBool, Ordering};

use wharf_amqp::ByteString;

use super::{ConnectionId, QueueOptions};
use crate::error::{Error, ErrorKind, Result};

#[derive(Debug)]
pub struct RemoteQueue {
    pub name: ByteString,
    pub vhost: ByteString,
    /// The node that holds it (a quorum queue's: its leader's, as last known).
    home: parking_lot::RwLock<String>,
    /// A quorum queue's record: its home moves with its leader, and its consumers follow.
    pub quorum: bool,
    /// As declared; an exclusive queue's owner is a connection of the home node.
    pub options: QueueOptions,
    deleted: AtomicBool,
}

impl RemoteQueue {
    pub fn new(name: ByteString, vhost: ByteString, home: String, options: QueueOptions) -> Self {
        RemoteQueue {
            name,
            vhost,
            home: parking_lot::RwLock::new(home),
            quorum: false,
            options,
            deleted: AtomicBool::new(false),
        }
    }

    /// A quorum queue's record, its leader on `home` as last known.
    pub fn quorum(
        name: ByteString,
        vhost: ByteString,
        home: String,
        options: QueueOptions,
    ) -> Self {
        RemoteQueue {
            quorum: true,
            ..RemoteQueue::new(name, vhost, home, options)
        }
    }

    /// The node that holds it now.
    pub fn home(&self) -> String {
        self.home.read().clone()
    }

    /// A quorum queue's leader moved to `home`.
    pub fn set_home(&self, home: &str) {
        *self.home.write() = home.to_string();
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// An exclusive queue is its owner's, and its owner is a connection of another node:
    /// no connection of this one may use it.
    pub fn check_owner(&self, _connection: ConnectionId) -> Result<()> {
        match self.options.exclusive_owner {
            Some(_) => Err(super::locked_queue(&self.name, &self.vhost)),
            None => Ok(()),
        }
    }

    /// What an operation this node cannot do yet on another node's queue answers.
    pub fn out_of_reach(&self, operation: &str) -> Error {
        Error::new(
            ErrorKind::NotImplemented,
            format_args!(
                "queue '{}' in vhost '{}' is on node {}; {operation} a queue of another node is \
                 not supported by this version",
                self.name,
                self.vhost,
                self.home()
            ),
        )
    }
}

/// A message basic.get took from another node's queue.
pub struct RemoteGot {
    pub message: crate::message::Message,
    /// Where it is in its queue (what an acknowledgement names there).
    pub offset: u64,
    pub redelivered: bool,
    /// Ready messages left after it.
    pub message_count: u32,
}

/// What a channel's delivery is settled with: the queue of this node it came from, or
/// the subscription to another node's queue it came through.
#[derive(Clone)]
pub enum QueueRef {
    Local(std::sync::Arc<super::Queue>),
    Remote(std::sync::Arc<Subscription>),
}

impl QueueRef {
    pub fn name(&self) -> &ByteString {
        match self {
            QueueRef::Local(queue) => &queue.name,
            QueueRef::Remote(subscription) => &subscription.queue,
        }
    }

    /// The same queue (or the same subscription).
    pub fn same(&self, other: &QueueRef) -> bool {
        match (self, other) {
            (QueueRef::Local(a), QueueRef::Local(b)) => std::sync::Arc::ptr_eq(a, b),
            (QueueRef::Remote(a), QueueRef::Remote(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl std::fmt::Debug for QueueRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueRef::Local(queue) => write!(f, "queue '{}'", queue.name),
            QueueRef::Remote(s) => write!(f, "queue '{}' on {}", s.queue, s.home()),
        }
    }
}

pub use crate::cluster::Settle;

/// A consumer of a channel of this node on another node's queue, this node's side: the
/// queue's node hands it deliveries (up to the consumer's credit), which it offers the
/// channel, keeping what the channel cannot take now (a full socket, its global
/// prefetch) until the channel asks again; the channel's acks, nacks and rejects, and
/// its cancel, go back to the queue's node in order.
pub struct Subscription {
    pub key: u64,
    /// The node of the queue (a quorum queue's leader's, which may move).
    home: parking_lot::RwLock<String>,
    pub vhost: ByteString,
    pub queue: ByteString,
    pub consumer_tag: ByteString,
    pub no_ack: bool,
    channel: std::sync::Weak<dyn super::consumer::DeliveryTarget>,
    cluster: std::sync::Arc<dyn crate::cluster::Cluster>,
    /// Delivered by the queue's node, not yet taken by the channel.
    waiting: parking_lot::Mutex<std::collections::VecDeque<Waiting>>,
    cancelled: AtomicBool,
    /// Of a quorum queue: it follows the queue's leader when it moves.
    pub quorum: bool,
    /// What registered it (kept to register it again with a quorum queue's new leader).
    request: parking_lot::Mutex<Option<crate::cluster::ConsumeRequest>>,
    /// A quorum queue's subscription on its way to a new leader.
    pub(crate) following: AtomicBool,
}

struct Waiting {
    offset: u64,
    redelivered: bool,
    message: std::sync::Arc<crate::message::Message>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Subscription({} to '{}' on {})",
            self.key,
            self.queue,
            self.home.read()
        )
    }
}

impl Subscription {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        key: u64,
        remote: &RemoteQueue,
        consumer_tag: ByteString,
        no_ack: bool,
        channel: std::sync::Weak<dyn super::consumer::DeliveryTarget>,
        cluster: std::sync::Arc<dyn crate::cluster::Cluster>,
    ) -> Subscription {
        Subscription {
            key,
            home: parking_lot::RwLock::new(remote.home()),
            vhost: remote.vhost.clone(),
            queue: remote.name.clone(),
            consumer_tag,
            no_ack,
            channel,
            cluster,
            waiting: Default::default(),
            cancelled: AtomicBool::new(false),
            quorum: remote.quorum,
            request: Default::default(),
            following: AtomicBool::new(false),
        }
    }

    /// Keeps what registered it.
    pub(crate) fn set_request(&self, request: crate::cluster::ConsumeRequest) {
        *self.request.lock() = Some(request);
    }

    pub(crate) fn request(&self) -> Option<crate::cluster::ConsumeRequest> {
        self.request.lock().clone()
    }

    pub(crate) fn cluster(&self) -> &std::sync::Arc<dyn crate::cluster::Cluster> {
        &self.cluster
    }

    /// The node of the queue it consumes from.
    pub fn home(&self) -> String {
        self.home.read().clone()
    }

    /// Now consumes from the queue on `home` (a quorum queue's new leader).
    pub fn set_home(&self, home: &str) {
        *self.home.write() = home.to_string();
    }

    /// A delivery the queue's node handed over: offered to the channel now, or kept.
    pub fn take(
        self: &std::sync::Arc<Self>,
        offset: u64,
        redelivered: bool,
        message: crate::message::Message,
    ) {
        self.waiting.lock().push_back(Waiting {
            offset,
            redelivered,
            message: std::sync::Arc::new(message),
        });
        self.offer();
    }

    /// Offers the channel what waits, in order, until it refuses one.
    pub fn offer(self: &std::sync::Arc<Self>) {
        let Some(channel) = self.channel.upgrade() else {
            return;
        };
        let mut taken_without_ack = 0u32;
        {
            let mut waiting = self.waiting.lock();
            while let Some(next) = waiting.front() {
                if self.cancelled.load(Ordering::Acquire) {
                    break;
                }
                let offered =
                    channel.try_deliver_remote(self, next.offset, &next.message, next.redelivered);
                if offered == super::consumer::Offered::Refused {
                    break;
                }
                waiting.pop_front();
                if self.no_ack {
                    taken_without_ack += 1;
                }
            }
        }
        if taken_without_ack > 0 {
            self.cluster.control(
                &self.home(),
                crate::cluster::ConsumerControl::Credit {
                    key: self.key,
                    count: taken_without_ack,
                },
            );
        }
    }

    /// Settles deliveries the channel took.
    pub fn settle(&self, offsets: Vec<u64>, how: Settle) {
        use crate::cluster::ConsumerControl;
        let key = self.key;
        let control = match how {
            Settle::Ack => ConsumerControl::Ack { key, offsets },
            Settle::Requeue => ConsumerControl::Requeue { key, offsets },
            Settle::Reject => ConsumerControl::Reject { key, offsets },
        };
        self.cluster.control(&self.home(), control);
    }

    /// basic.cancel (or the channel closing): no more deliveries; what waits untaken goes
    /// back to the queue.
    pub fn cancel(&self) {
        if self.cancelled.swap(true, Ordering::AcqRel) {
            return;
        }
        let untaken: Vec<u64> = self.waiting.lock().drain(..).map(|w| w.offset).collect();
        if !untaken.is_empty() && !self.no_ack {
            self.settle(untaken, Settle::Requeue);
        }
        self.cluster.control(
            &self.home(),
            crate::cluster::ConsumerControl::Cancel { key: self.key },
        );
    }

    /// The queue's node cancelled it (the queue deleted, the node gone): the channel's
    /// consumer is told, as for a queue of this node.
    pub fn cancelled_there(&self) {
        if self.cancelled.swap(true, Ordering::AcqRel) {
            return;
        }
        self.waiting.lock().clear();
        if let Some(channel) = self.channel.upgrade() {
            channel.consumer_cancelled(&self.consumer_tag);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}
