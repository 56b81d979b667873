//! Direct reply-to (RabbitMQ's `amq.rabbitmq.reply-to`): an RPC client consumes from the
//! pseudo-queue `amq.rabbitmq.reply-to` (no_ack) and publishes requests with that
//! reply-to; the broker gives each such channel a name of its own
//! (`amq.rabbitmq.reply-to.<a>.<b>`) in place of the pseudo-queue's, and a reply
//! published to the default exchange with that name as routing key goes straight to the
//! channel's reply consumer, with no queue in between. A name whose channel is gone routes
//! nowhere. On a cluster the name also says which node the channel is on: a reply
//! published through another node is forwarded there, as a message to that node's queue
//! would be.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use base64::Engine;
use parking_lot::RwLock;
use wharf_amqp::ByteString;

use crate::message::Message;
use crate::queue::consumer::DeliveryTarget;

/// The pseudo-queue a client consumes from and names as reply-to.
pub const REPLY_QUEUE: &str = "amq.rabbitmq.reply-to";
/// What every channel's own reply name starts with.
pub const REPLY_PREFIX: &str = "amq.rabbitmq.reply-to.";

struct ReplyConsumer {
    target: Weak<dyn DeliveryTarget>,
    consumer_tag: ByteString,
}

/// The reply consumers of a vhost, by their channel's reply name.
#[derive(Default)]
pub struct ReplyConsumers {
    by_name: RwLock<HashMap<ByteString, ReplyConsumer>>,
}

/// The node a reply name's channel is on, when the name says (a cluster node's).
pub fn home_of(name: &str) -> Option<String> {
    let origin = name.strip_prefix(REPLY_PREFIX)?.split('.').next()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(origin)
        .ok()?;
    let node = bytes.get(10..).filter(|node| !node.is_empty())?;
    String::from_utf8(node.to_vec()).ok()
}

impl std::fmt::Debug for ReplyConsumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyConsumers")
            .field("count", &self.by_name.read().len())
            .finish()
    }
}

impl ReplyConsumers {
    /// Registers a channel's reply consumer; returns the reply name its requests carry.
    /// The name is unguessable: its second part is 16 random bytes. Its first names the
    /// channel, and on a cluster the node (`node`) it is on.
    pub fn register(
        &self,
        target: &Arc<dyn DeliveryTarget>,
        consumer_tag: ByteString,
        connection: u64,
        channel: u16,
        node: Option<&str>,
    ) -> ByteString {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut origin = connection.to_be_bytes().to_vec();
        origin.extend_from_slice(&channel.to_be_bytes());
        if let Some(node) = node {
            origin.extend_from_slice(node.as_bytes());
        }
        let secret: [u8; 16] = rand::random();
        let name = ByteString::from(format!(
            "{REPLY_PREFIX}{}.{}",
            engine.encode(origin),
            engine.encode(secret)
        ));
        self.by_name.write().insert(
            name.clone(),
            ReplyConsumer {
                target: Arc::downgrade(target),
                consumer_tag,
            },
        );
        name
    }

    pub fn unregister(&self, name: &str) {
        self.by_name.write().remove(name);
    }

    /// Whether `name` belongs to a live reply consumer.
    pub fn exists(&self, name: &str) -> bool {
        self.by_name
            .read()
            .get(name)
            .is_some_and(|c| c.target.strong_count() > 0)
    }

    /// Hands a reply to the consumer `name` belongs to; false if there is none (the
    /// message then routes nowhere).
    pub fn deliver(&self, name: &str, message: &Arc<Message>) -> bool {
        let found = self
            .by_name
            .read()
            .get(name)
            .and_then(|c| Some((c.target.upgrade()?, c.consumer_tag.clone())));
        match found {
            Some((target, tag)) => target.deliver_reply(&tag, message),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::consumer::{Delivery, Offered};

    struct Replies;

    impl DeliveryTarget for Replies {
        fn try_deliver(&self, _: Delivery<'_>) -> Offered {
            Offered::Refused
        }
        fn consumer_cancelled(&self, _: &ByteString) {}
        fn deliver_reply(&self, _: &ByteString, _: &Arc<Message>) -> bool {
            true
        }
    }

    #[test]
    fn a_cluster_nodes_reply_names_say_which_node_and_others_do_not() {
        let consumers = ReplyConsumers::default();
        let target: Arc<dyn DeliveryTarget> = Arc::new(Replies);
        let there = consumers.register(&target, "t".into(), 7, 3, Some("n2"));
        assert_eq!(home_of(&there).as_deref(), Some("n2"));
        let here = consumers.register(&target, "u".into(), 7, 4, None);
        assert_eq!(home_of(&here), None);
        assert!(consumers.exists(&there) && consumers.exists(&here));
        assert_ne!(there, here);
        // Names no broker gave: no node, and no panic.
        for name in [
            "amq.rabbitmq.reply-to.",
            "amq.rabbitmq.reply-to.!!!.x",
            "amq.rabbitmq.reply-to.AAAA.x",
            "amq.rabbitmq.reply-to.AAAAAAAAAAAAAP8=.x",
            "elsewhere",
        ] {
            assert_eq!(home_of(name), None, "{name}");
        }
    }
}
