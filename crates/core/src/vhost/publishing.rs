//! Publishing: the one operation every front end calls to hand a message to the broker
//! (AMQP's basic.publish, the HTTP API's publish, later MQTT). It holds a message for a
//! delayed exchange, or routes it (bindings, exchange-to-exchange bindings, sender-selected
//! keys, alternate exchanges, a direct reply-to name) and enqueues it on every queue
//! reached; and says what the publisher must hear: whether it was routed, whether a queue
//! refused it, and which logs must be synced before it is confirmed.

use std::sync::Arc;

use wharf_amqp::ByteString;

use super::routing::Routes;
use super::VHost;
use crate::cluster::Forwarded;
use crate::exchange::{Exchange, HoldOutcome};
use crate::flusher::{same_target, SyncTarget};
use crate::message::Message;
use crate::queue::remote::RemoteQueue;
use crate::queue::QueueOptions;
use crate::queue::{Enqueued, Queue, Woken};

/// What publishing did with a message.
#[derive(Debug, Default)]
pub struct Published {
    /// Logs that got the message: it is durable once they are synced.
    pub appended_to: Vec<Arc<dyn SyncTarget>>,
    /// A queue could not take it (its log failed, or it is full with reject-publish), or a
    /// delayed exchange could not hold it: the publisher must hear it was not taken.
    pub refused: bool,
    /// Routed nowhere (no queue, no direct reply-to consumer): the message, for a
    /// mandatory publisher to get back.
    pub unroutable: Option<Arc<Message>>,
    /// What the queues delivered to their consumers on the way.
    pub woken: Woken,
}

impl Published {
    /// Adds what another publish did (a transaction's publishes together).
    pub fn merge(&mut self, other: Published) {
        for log in other.appended_to {
            if !self
                .appended_to
                .iter()
                .any(|known| same_target(known, &log))
            {
                self.appended_to.push(log);
            }
        }
        self.refused |= other.refused;
        self.woken.merge(other.woken);
    }
}

/// What a publisher keeps from one publish to the next: a run of publishes to one queue
/// through the default exchange does not look the queue up (a locked, hashed map lookup)
/// every time, and routing allocates no list.
#[derive(Debug, Default)]
pub struct RouteCache {
    /// The queue the default exchange last routed to.
    default_queue: Option<Arc<Queue>>,
    /// The queues of the message being routed; emptied after each.
    routes: Routes,
}

/// Compares two names, short-circuiting the empty one (the default exchange, the
/// commonest name published to). An empty string's pointer is dangling, and glibc's
/// AVX-512 memcmp issues a masked load even for zero bytes: on an unmapped address that
/// load takes a fault-suppression microcode assist, which a profile of publishing showed
/// as 11% of the publishing task (the channel's exchange cache compares the same way).
pub fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

impl VHost {
    /// Publishes `message` to `exchange`, with `bcc` as further routing keys that are not
    /// on the message (RabbitMQ's sender-selected BCC). See [`Published`].
    pub fn publish(
        &self,
        exchange: &Arc<Exchange>,
        message: Arc<Message>,
        bcc: &[ByteString],
        cache: &mut RouteCache,
    ) -> Published {
        if let Some(delayed) = &exchange.delayed {
            if let Some(delay) = crate::exchange::delay_of(&message) {
                // Held, and routed when its delay is over: that counts as routed.
                let mut published = Published::default();
                match self.delay(exchange, message, delay) {
                    Ok(HoldOutcome::Appended) => published.appended_to.push(delayed.clone()),
                    Ok(HoldOutcome::InMemory) => {}
                    Err(_) => published.refused = true,
                }
                return published;
            }
        }
        self.route_cached(exchange, &message, bcc, cache);
        if cache.routes.is_empty() {
            // A reply to a direct reply-to name goes straight to its channel.
            let reply = exchange.name.is_empty()
                && message
                    .routing_key
                    .starts_with(crate::direct_reply::REPLY_PREFIX);
            if reply && self.replies.deliver(&message.routing_key, &message) {
                return Published::default();
            }
            if let Some(home) = reply
                .then(|| self.reply_home(&message.routing_key))
                .flatten()
            {
                // Another node's channel: forwarded, and given to it there.
                cache.routes.remote.push(Arc::new(RemoteQueue::new(
                    message.routing_key.clone(),
                    self.name.clone(),
                    home,
                    QueueOptions::default(),
                )));
                return self.enqueue(&mut cache.routes, message);
            }
            return Published {
                unroutable: Some(message),
                ..Published::default()
            };
        }
        self.enqueue(&mut cache.routes, message)
    }

    /// The node a reply name's channel is on, when it is another cluster node.
    fn reply_home(&self, name: &str) -> Option<String> {
        let home = crate::direct_reply::home_of(name)?;
        (self.cluster.get().is_some() && Some(home.as_str()) != self.cluster.member())
            .then_some(home)
    }

    /// Whether a reply name means a live reply consumer, on this node or, on a cluster,
    /// on the node the name says (asked: a passive declare of the name checks it).
    pub fn reply_exists(&self, name: &str) -> bool {
        if self.replies.exists(name) {
            return true;
        }
        let (Some(home), Some(cluster)) = (self.reply_home(name), self.cluster.get()) else {
            return false;
        };
        matches!(
            cluster.ask(
                &home,
                &self.name,
                name,
                crate::cluster::QueueRequest::Counts
            ),
            Ok(crate::cluster::QueueAnswer::Counts { .. })
        )
    }

    fn route_cached(
        &self,
        exchange: &Arc<Exchange>,
        message: &Message,
        bcc: &[ByteString],
        cache: &mut RouteCache,
    ) {
        if message.properties.has_sender_routes() || !bcc.is_empty() {
            self.route_with(exchange, message, bcc, &mut cache.routes);
            return;
        }
        if exchange.name.is_empty() {
            if let Some(queue) = &cache.default_queue {
                if same_name(&queue.name, &message.routing_key) && !queue.is_deleted() {
                    cache.routes.queues.push(queue.clone());
                    return;
                }
            }
            self.route(exchange, message, &mut cache.routes);
            cache.default_queue = cache.routes.queues.first().cloned();
            return;
        }
        self.route(exchange, message, &mut cache.routes);
    }
}

impl VHost {
    /// Enqueues `message` on each of the queues `routes` reached (drained), the last
    /// taking the caller's reference (no count up and down for it); on a cluster, hands it
    /// to the other nodes' queues it reached, one forward per node.
    pub(crate) fn enqueue(&self, routes: &mut Routes, message: Arc<Message>) -> Published {
        let mut published = Published::default();
        if !routes.remote.is_empty() {
            self.forward(&mut routes.remote, &message, &mut published);
        }
        let queues = &mut routes.queues;
        let Some(last) = queues.len().checked_sub(1) else {
            return published;
        };
        let mut message = Some(message);
        for (i, queue) in queues.drain(..).enumerate() {
            let message = if i == last {
                message.take().expect("taken by the last queue only")
            } else {
                message.clone().expect("kept until the last queue")
            };
            let (enqueued, woken) = queue.publish(message);
            published.woken.merge(woken);
            match enqueued {
                Enqueued::InMemory => {}
                Enqueued::Appended => published.appended_to.push(queue),
                // Either way the publisher must hear it was not taken.
                Enqueued::Failed | Enqueued::Rejected => published.refused = true,
            }
        }
        published
    }

    fn forward(
        &self,
        remote: &mut Vec<Arc<RemoteQueue>>,
        message: &Message,
        published: &mut Published,
    ) {
        let Some(cluster) = self.cluster.get() else {
            // Only a cluster node knows other nodes' queues.
            remote.clear();
            published.refused = true;
            return;
        };
        // Sorted by home, so that each node gets one forward with all its queues (a home
        // is read once: a quorum queue's moves with its leader).
        let mut homes: Vec<(String, &Arc<RemoteQueue>)> =
            remote.iter().map(|q| (q.home(), q)).collect();
        homes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut rest = &homes[..];
        while let Some((home, _)) = rest.first() {
            let count = rest.iter().take_while(|(h, _)| h == home).count();
            let names = rest[..count].iter().map(|(_, q)| q.name.clone()).collect();
            let bytes = (message.body.len() + message.properties.as_bytes().len() + 64) as u64;
            let forwarded = Arc::new(Forwarded::holding(self.cluster.forward_window(), bytes));
            cluster.forward(home, &self.name, names, message, forwarded.clone());
            published.appended_to.push(forwarded);
            rest = &rest[count..];
        }
        remote.clear();
    }
}
