//! A vhost's exchanges, queues and bindings restored from the stored definitions at start.

use std::sync::Arc;

use wharf_amqp::ByteString;
use wharf_store::{Definitions, DestinationKind};

use super::VHost;
use crate::durability;
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::policy::Policy;
use crate::queue::{Queue, QueueOptions};

impl VHost {
    /// Recreates this vhost's durable exchanges, queues and bindings as they were stored,
    /// without writing them again. Definitions that no longer make sense (a binding whose
    /// end is gone, an unknown exchange type) are skipped with a warning.
    pub fn restore(&self, definitions: &Definitions) {
        let mine = |vhost: &str| vhost == &*self.name;
        for def in definitions.policies.iter().filter(|d| mine(&d.vhost)) {
            match Policy::new(
                &def.name,
                &def.pattern,
                &def.apply_to,
                &def.definition,
                def.priority,
            ) {
                Ok(policy) => self.policies.write().push(policy),
                Err(reason) => {
                    tracing::warn!(policy = def.name, reason, "stored policy skipped")
                }
            }
        }
        for def in definitions.exchanges.iter().filter(|d| mine(&d.vhost)) {
            let Some(kind) = ExchangeKind::parse(&def.kind) else {
                tracing::warn!(
                    exchange = def.name,
                    kind = def.kind,
                    "stored exchange of unknown type skipped"
                );
                continue;
            };
            let name = ByteString::from(def.name.as_str());
            let exchange = Exchange::new(
                name.clone(),
                kind,
                true,
                def.auto_delete,
                def.internal,
                durability::decode_arguments(&def.arguments),
            );
            let exchange = Arc::new(exchange);
            if let Some(durability) = &self.durability {
                // An exchange whose log cannot be opened stays, holding nothing; the error
                // is logged.
                let _ = durability.attach_delayed_log(&self.name, &exchange, false);
            }
            self.exchanges.write().entry(name).or_insert(exchange);
        }
        let mut restored = Vec::new();
        for def in definitions.queues.iter().filter(|d| mine(&d.vhost)) {
            let name = ByteString::from(def.name.as_str());
            let queue = Queue::new(
                name.clone(),
                self.name.clone(),
                QueueOptions {
                    durable: true,
                    exclusive_owner: None,
                    auto_delete: def.auto_delete,
                    arguments: durability::decode_arguments(&def.arguments),
                },
                self.queue_window,
                self.this.clone(),
            );
            if let Some(durability) = &self.durability {
                // A queue whose log cannot be opened stays, empty, so that its bindings and
                // clients still find it; the error is logged.
                let _ = durability.attach_log(&queue, false);
            }
            let queue = Arc::new(queue);
            self.queues.write().insert(name, queue.clone());
            restored.push(queue);
        }
        for def in definitions.bindings.iter().filter(|d| mine(&d.vhost)) {
            let source = self.exchange(&def.source);
            let destination = match def.destination_kind {
                DestinationKind::Queue => self.queue(&def.destination).map(Destination::Queue),
                DestinationKind::Exchange => {
                    self.exchange(&def.destination).map(Destination::Exchange)
                }
            };
            match (source, destination) {
                (Ok(source), Ok(destination)) => {
                    source.bind(Binding {
                        destination,
                        routing_key: ByteString::from(def.routing_key.as_str()),
                        arguments: durability::decode_arguments(&def.arguments),
                    });
                }
                _ => tracing::warn!(
                    source = def.source,
                    destination = def.destination,
                    "stored binding with a missing end skipped"
                ),
            }
        }
        // Only now, with the bindings back, can expired messages be dead-lettered and
        // held messages that fell due be routed.
        self.apply_policies();
        for queue in restored {
            queue.run_due();
        }
        for exchange in self.exchanges() {
            if exchange.delayed.is_some() {
                self.release_delayed(&exchange);
            }
        }
    }
}
