//! The registry of consuming across a cluster's nodes (see `remote_consumers` for what
//! is done with it): this node's channels' subscriptions to other nodes' queues, by key,
//! and the consumers other nodes' channels hold on this node's queues, each a
//! [`RemoteConsumer`] the queue delivers to like any consumer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use wharf_amqp::ByteString;

use crate::cluster::{Cluster, Pushed};
use crate::message::Message;
use crate::queue::consumer::{Delivery, DeliveryTarget, Offered};
use crate::queue::remote::Subscription;
use crate::queue::Queue;

/// The credit of a remote consumer without a prefetch limit (or without acks): how many
/// deliveries may be on their way to its node, or unacknowledged there, at once.
pub const REMOTE_CREDIT_DEFAULT: u32 = 1000;

/// A node's remote consuming: the subscriptions of its channels to other nodes' queues
/// (by key), and the consumers other nodes' channels hold on its queues.
#[derive(Default)]
pub struct RemoteConsuming {
    pub(crate) next_key: AtomicU64,
    pub(crate) subscriptions: Mutex<HashMap<u64, Weak<Subscription>>>,
    pub(crate) consumers: Mutex<HashMap<(String, u64), Held>>,
}

impl std::fmt::Debug for RemoteConsuming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConsuming")
            .field("subscriptions", &self.subscriptions.lock().len())
            .field("consumers", &self.consumers.lock().len())
            .finish()
    }
}

/// A consumer of another node's channel on a queue of this node, or the getter of such a
/// channel (what it took with basic.get, waiting for its settlement).
pub(crate) struct Held {
    pub(crate) queue: Arc<Queue>,
    pub(crate) tag: ByteString,
    pub(crate) consumer: Arc<RemoteConsumer>,
    /// Not (or no longer) among the queue's consumers: cancelled, or a getter, which
    /// never is. It goes once what it holds is settled.
    pub(crate) cancelled: bool,
}

/// What the queue sees of another node's consumer.
pub struct RemoteConsumer {
    pub(crate) peer: String,
    pub(crate) key: u64,
    pub(crate) no_ack: bool,
    pub(crate) credit: u32,
    pub(crate) cluster: Arc<dyn Cluster>,
    pub(crate) state: Mutex<InFlight>,
}

#[derive(Default)]
pub(crate) struct InFlight {
    pub(crate) count: u32,
    /// The queue's offsets of the deliveries that wait for their settlement.
    offsets: HashSet<u64>,
    /// Its node went away and what it held was requeued: it takes nothing more.
    released: bool,
}

impl DeliveryTarget for RemoteConsumer {
    fn try_deliver(&self, delivery: Delivery<'_>) -> Offered {
        let mut state = self.state.lock();
        if state.count >= self.credit {
            return Offered::Refused;
        }
        state.count += 1;
        if !delivery.no_ack {
            state.offsets.insert(delivery.offset);
        }
        self.cluster.push(
            &self.peer,
            Pushed::Delivery {
                key: self.key,
                offset: delivery.offset,
                redelivered: delivery.redelivered,
                message: (**delivery.message).clone(),
            },
        );
        if state.count >= self.credit {
            Offered::TookLastCredit
        } else {
            Offered::Taken
        }
    }

    fn consumer_cancelled(&self, _consumer_tag: &ByteString) {
        self.cluster
            .push(&self.peer, Pushed::Cancelled { key: self.key });
    }

    fn deliver_reply(&self, _consumer_tag: &ByteString, _message: &Arc<Message>) -> bool {
        false
    }
}

impl RemoteConsumer {
    /// Takes back the credit of settled deliveries: of `offsets`, those it held (the
    /// others are not its to settle).
    pub(crate) fn settled(&self, offsets: &[u64]) -> Vec<u64> {
        let mut state = self.state.lock();
        let held: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|offset| state.offsets.remove(offset))
            .collect();
        state.count = state.count.saturating_sub(held.len() as u32);
        held
    }

    /// Everything it holds, for requeueing: it is released, and takes nothing more.
    pub(crate) fn all_held(&self) -> Vec<u64> {
        let mut state = self.state.lock();
        state.count = 0;
        state.released = true;
        state.offsets.drain().collect()
    }

    /// basic.get for its node's channel: the queue's next message, held until settled.
    /// Taken under its own lock, so that a release of its node (which requeues what it
    /// holds) comes wholly before the get (which then takes nothing) or after it.
    pub(crate) fn get(&self, queue: &Arc<Queue>) -> Option<crate::queue::GetResult> {
        let mut state = self.state.lock();
        if state.released {
            return None;
        }
        let got = queue.get(false)?;
        state.count += 1;
        state.offsets.insert(got.offset);
        Some(got)
    }

    pub(crate) fn holds_nothing(&self) -> bool {
        self.state.lock().offsets.is_empty()
    }
}
