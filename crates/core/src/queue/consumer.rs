//! Consumers, and the interface through which a queue hands them messages. The protocol
//! layer implements [`DeliveryTarget`] (for AMQP, one per channel): it decides whether it
//! has credit (prefetch, flow, a full socket buffer), numbers the delivery, and writes it
//! out. Queues call it while holding their own lock, so an implementation must never call
//! back into a queue from `try_deliver` or `consumer_cancelled`.

use std::sync::Arc;

use wharf_amqp::{ByteString, FieldTable};

use super::Queue;
use crate::message::Message;

/// One message being handed to a consumer (or to basic.get).
pub struct Delivery<'a> {
    pub queue: &'a Arc<Queue>,
    pub consumer_tag: &'a ByteString,
    /// The queue's position of this message, which an ack or requeue names.
    pub offset: u64,
    pub message: &'a Arc<Message>,
    pub redelivered: bool,
    /// When true the queue forgets the message once delivered: there is nothing to ack.
    pub no_ack: bool,
}

pub trait DeliveryTarget: Send + Sync {
    /// Offers a delivery. Returns false, without side effects, when the target cannot take
    /// it now; the queue then keeps the message and tries the next consumer.
    fn try_deliver(&self, delivery: Delivery<'_>) -> bool;

    /// The queue went away (deleted); the consumer no longer exists.
    fn consumer_cancelled(&self, consumer_tag: &ByteString);

    /// A reply for this target's direct reply-to consumer (see `direct_reply`): delivered
    /// without an ack and without regard to prefetch, as RabbitMQ does. False if the
    /// target can no longer take it (closed).
    fn deliver_reply(&self, consumer_tag: &ByteString, message: &Arc<Message>) -> bool;
}

pub struct Consumer {
    pub tag: ByteString,
    pub no_ack: bool,
    pub exclusive: bool,
    pub arguments: FieldTable,
    pub target: Arc<dyn DeliveryTarget>,
    /// `x-priority`, read by the queue when the consumer is added.
    pub(crate) priority: i64,
}

impl Consumer {
    pub fn new(
        tag: ByteString,
        no_ack: bool,
        exclusive: bool,
        arguments: FieldTable,
        target: Arc<dyn DeliveryTarget>,
    ) -> Consumer {
        Consumer {
            tag,
            no_ack,
            exclusive,
            arguments,
            target,
            priority: 0,
        }
    }

    /// Whether this consumer is the one registered by `target` under `tag`.
    pub fn is(&self, target: &Arc<dyn DeliveryTarget>, tag: &str) -> bool {
        Arc::ptr_eq(&self.target, target) && self.tag == tag
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("tag", &self.tag)
            .field("no_ack", &self.no_ack)
            .field("exclusive", &self.exclusive)
            .field("priority", &self.priority)
            .finish()
    }
}
