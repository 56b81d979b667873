//! A published message as the core sees it: where it was published, its properties and
//! its body. Immutable once published and shared (`Arc`) by every queue it is routed to,
//! so a fanout to ten queues holds one copy of the body.

use bytes::Bytes;
use wharf_amqp::{BasicProperties, ByteString};

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub exchange: ByteString,
    pub routing_key: ByteString,
    pub properties: BasicProperties,
    pub body: Bytes,
}

impl Message {
    /// delivery_mode 2 asks for the message to survive a restart (when its queue is durable).
    pub fn is_persistent(&self) -> bool {
        self.properties.delivery_mode == Some(2)
    }

    pub fn body_bytes(&self) -> usize {
        self.body.len()
    }
}
