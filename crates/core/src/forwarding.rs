//! Messages another cluster node routed to this node's queues: enqueued here as a publish
//! here would enqueue them, and answered once they are held as a publish's confirm
//! would be (a persistent message on a durable queue: once fsynced).

use std::sync::Arc;

use crate::broker::Broker;
use crate::flusher::SyncDone;
use crate::message::Message;
use crate::vhost::Routes;

impl Broker {
    /// Enqueues the message `record` holds (as a queue's log stores one) on `queues` of
    /// `vhost`, and calls `done` with whether they took it. A queue deleted meanwhile is
    /// passed over, as if the delete came just after (RabbitMQ drops a message to a
    /// queue that is gone); a queue that refuses it (full, reject-publish) answers false.
    pub fn take_forwarded(&self, vhost: &str, queues: &[&str], record: Vec<u8>, done: SyncDone) {
        let Some((message, _)) = Message::decode_record(record) else {
            tracing::warn!("a forwarded message that does not read; refused");
            return done(false);
        };
        let Some(vhost) = self.vhost(vhost) else {
            return done(true);
        };
        let mut routes = Routes::default();
        routes
            .queues
            .extend(queues.iter().filter_map(|name| vhost.queue(name).ok()));
        let published = vhost.enqueue(&mut routes, Arc::new(message));
        if published.refused {
            return done(false);
        }
        match (self.flusher(), published.appended_to.is_empty()) {
            (Some(flusher), false) => flusher.after_sync(published.appended_to, done),
            _ => done(true),
        }
    }
}
