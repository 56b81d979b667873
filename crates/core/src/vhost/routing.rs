//! Where a message published to an exchange goes: the queues its bindings reach,
//! following exchange-to-exchange bindings, sender-selected keys and alternate exchanges;
//! and messages a delayed exchange holds until they fall due.

use std::sync::Arc;

use wharf_amqp::ByteString;

use super::VHost;
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::{Destination, Exchange, HoldOutcome};
use crate::message::Message;
use crate::queue::remote::RemoteQueue;
use crate::queue::Queue;

/// The queues a message reaches: this node's, and, on a cluster, other nodes'. Each once.
#[derive(Debug, Default)]
pub struct Routes {
    pub queues: Vec<Arc<Queue>>,
    pub remote: Vec<Arc<RemoteQueue>>,
}

impl Routes {
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.remote.is_empty()
    }

    fn add_queue(&mut self, queue: &Arc<Queue>) {
        if !self.queues.iter().any(|known| Arc::ptr_eq(known, queue)) {
            self.queues.push(queue.clone());
        }
    }

    fn add_remote(&mut self, queue: &Arc<RemoteQueue>) {
        if !self.remote.iter().any(|known| Arc::ptr_eq(known, queue)) {
            self.remote.push(queue.clone());
        }
    }
}

impl VHost {
    /// Holds a message published to a delayed exchange for `delay` ms.
    pub fn delay(
        &self,
        exchange: &Arc<Exchange>,
        message: Arc<Message>,
        delay: u64,
    ) -> Result<HoldOutcome> {
        let Some(delayed) = &exchange.delayed else {
            return Ok(HoldOutcome::InMemory);
        };
        // The clock reads whole milliseconds, rounded down: one more keeps a message from
        // falling due (up to a millisecond) before its delay is over.
        let due = crate::timer::now_ms()
            .saturating_add(delay)
            .saturating_add(1);
        let outcome = delayed.hold(message, delay, due).map_err(|e| {
            tracing::error!(exchange = %exchange.name, error = %e, "cannot store a delayed message");
            Error::new(
                ErrorKind::InternalError,
                format_args!("cannot store delayed message: {e}"),
            )
        })?;
        self.arm_delayed(exchange);
        Ok(outcome)
    }

    /// Sets a timer for the next message `exchange` holds, if none is set early enough.
    pub(super) fn arm_delayed(&self, exchange: &Arc<Exchange>) {
        let Some(at) = exchange.delayed.as_ref().and_then(|d| d.needs_wake()) else {
            return;
        };
        let (vhost, exchange) = (self.this.clone(), Arc::downgrade(exchange));
        self.timers.schedule_at_ms(
            at,
            Box::new(move || {
                if let (Some(vhost), Some(exchange)) = (vhost.upgrade(), exchange.upgrade()) {
                    vhost.release_delayed(&exchange);
                }
            }),
        );
    }

    /// Routes the messages `exchange` held whose delay is over, as its bindings route.
    pub(super) fn release_delayed(&self, exchange: &Arc<Exchange>) {
        if exchange.is_deleted() {
            return;
        }
        let Some(delayed) = &exchange.delayed else {
            return;
        };
        let mut routes = Routes::default();
        for message in delayed.take_due(crate::timer::now_ms()) {
            let message = Arc::new(message);
            self.route(exchange, &message, &mut routes);
            // Confirmed when it was held: a queue that refuses it now drops it.
            let _ = self.enqueue(&mut routes, message);
        }
        self.arm_delayed(exchange);
    }

    /// The queues a message published to `exchange` reaches, each once, following
    /// exchange-to-exchange bindings (cycles included: each exchange is visited once).
    /// They are added to `routes`, which the caller empties and reuses (a publish then
    /// allocates no list).
    pub fn route(&self, exchange: &Arc<Exchange>, message: &Message, routes: &mut Routes) {
        self.route_with(exchange, message, &[], routes);
    }

    /// Routes as [`VHost::route`], by the message's routing key, its `CC` keys, and the
    /// `bcc` keys its publisher gave (taken off the message before it was stored).
    pub fn route_with(
        &self,
        exchange: &Arc<Exchange>,
        message: &Message,
        bcc: &[ByteString],
        routes: &mut Routes,
    ) {
        let mut keys: Vec<&str> = Vec::new();
        let cc = if message.properties.has_sender_routes() {
            // Checked on publish: a dead letter or a stored message cannot have a bad one.
            message.sender_routes().map(|r| r.cc).unwrap_or_default()
        } else {
            Vec::new()
        };
        keys.extend(cc.iter().map(|k| &**k));
        keys.extend(bcc.iter().map(|k| &**k));
        if exchange.name.is_empty() {
            for key in std::iter::once(&*message.routing_key).chain(keys) {
                if let Ok(queue) = self.queue(key) {
                    routes.add_queue(&queue);
                } else if let Some(queue) = self.remote_queue(key) {
                    routes.add_remote(&queue);
                }
            }
            return;
        }
        // Headers that do not decode (they were checked on publish) route as no headers.
        let decoded = std::cell::OnceCell::new();
        let headers = || {
            decoded
                .get_or_init(|| message.properties.decode().ok().and_then(|p| p.headers))
                .as_ref()
        };
        let mut visited: Vec<*const Exchange> = vec![Arc::as_ptr(exchange)];
        let mut pending: Vec<Arc<Exchange>> = Vec::new();
        let mut current = exchange.clone();
        loop {
            let mut routed = false;
            let mut found = |destination: &Destination| {
                routed = true;
                match destination {
                    Destination::Queue(q) => routes.add_queue(q),
                    Destination::Remote(q) => routes.add_remote(q),
                    Destination::Exchange(e) => {
                        if !visited.contains(&Arc::as_ptr(e)) {
                            visited.push(Arc::as_ptr(e));
                            pending.push(e.clone());
                        }
                    }
                }
            };
            current.route(message, &message.routing_key, &headers, &mut found);
            for key in &keys {
                current.route(message, key, &headers, &mut found);
            }
            // As RabbitMQ: an exchange whose bindings matched nothing (no queue, no
            // exchange) hands the message to its alternate exchange, once per route.
            if !routed {
                if let Some(alternate) = current.alternate() {
                    self.add_alternate(&current, &alternate, &mut visited, &mut pending);
                }
            }
            match pending.pop() {
                Some(next) => current = next,
                None => break,
            }
        }
    }

    fn add_alternate(
        &self,
        exchange: &Exchange,
        alternate: &str,
        visited: &mut Vec<*const Exchange>,
        pending: &mut Vec<Arc<Exchange>>,
    ) {
        match self.exchanges.read().get(alternate) {
            Some(found) => {
                if !visited.contains(&Arc::as_ptr(found)) {
                    visited.push(Arc::as_ptr(found));
                    pending.push(found.clone());
                }
            }
            None => {
                if exchange.first_missing_alternate() {
                    tracing::warn!(
                        vhost = %self.name,
                        exchange = %exchange.name,
                        alternate,
                        "alternate exchange not found: unroutable messages are dropped"
                    );
                }
            }
        }
    }
}
