//! What leaves a queue for its dead-letter exchange, and why. The queue gathers these
//! under its lock and hands them to its host (the vhost) once the lock is released; the
//! vhost routes them (`vhost::dead_lettering`).

use std::sync::Arc;

use wharf_amqp::ByteString;

use crate::message::Message;

/// Why a message was dead-lettered: the `reason` of its `x-death` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// basic.reject or basic.nack with requeue=false.
    Rejected,
    /// Its TTL ran out.
    Expired,
    /// The queue's length limit pushed it out (or refused it, with reject-publish-dlx).
    MaxLen,
    /// It was requeued more times than the queue's `x-delivery-limit`.
    DeliveryLimit,
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message on its way out of a queue, to that queue's dead-letter exchange.
pub struct DeadLetter {
    pub message: Arc<Message>,
    pub reason: DeathReason,
    /// The queue's dead-letter exchange and routing key when the message left.
    pub exchange: ByteString,
    pub routing_key: Option<ByteString>,
}
