//! A vhost's exchanges, queues and bindings restored from the stored definitions at start.

use std::sync::Arc;

use wharf_amqp::ByteString;
use wharf_store::Definitions;

use super::VHost;
use crate::durability;
use crate::exchange::{Binding, Exchange, ExchangeKind};
use crate::policy::Policy;
use crate::queue::remote::RemoteQueue;
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
                def.durable,
                def.auto_delete,
                def.internal,
                durability::decode_arguments(&def.arguments),
            );
            let exchange = Arc::new(exchange);
            if let (Some(durability), true) = (&self.durability, def.durable) {
                // An exchange whose log cannot be opened stays, holding nothing; the error
                // is logged.
                let _ = durability.attach_delayed_log(&self.name, &exchange, false);
            }
            self.exchanges.write().entry(name).or_insert(exchange);
        }
        let mut restored = Vec::new();
        for def in definitions.queues.iter().filter(|d| mine(&d.vhost)) {
            let name = ByteString::from(def.name.as_str());
            let options = QueueOptions {
                durable: def.durable,
                exclusive_owner: def.exclusive_owner,
                auto_delete: def.auto_delete,
                arguments: durability::decode_arguments(&def.arguments),
            };
            if let Some(quorum) = &def.quorum {
                // A quorum queue's record; its replica here opens once the cluster is.
                self.add_quorum_queue(def, quorum, options);
                continue;
            }
            match def.home.as_deref() {
                // A cluster node's record of another node's queue.
                Some(home) if Some(home) != self.cluster.member() => {
                    let remote =
                        RemoteQueue::new(name.clone(), self.name.clone(), home.into(), options);
                    self.remote_queues.write().insert(name, Arc::new(remote));
                    continue;
                }
                // A transient or exclusive queue of this cluster node's: it died with the
                // node's last run (the node proposes its deletion once it caught up).
                _ if !def.durable || def.exclusive_owner.is_some() => continue,
                _ => {}
            }
            let queue = Queue::new(
                name.clone(),
                self.name.clone(),
                options,
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
            match self.binding_ends(def) {
                Ok((source, destination)) => {
                    source.bind(Binding {
                        destination,
                        routing_key: ByteString::from(def.routing_key.as_str()),
                        arguments: durability::decode_arguments(&def.arguments),
                    });
                }
                // A cluster node's bindings to its queues that died are gone with them.
                Err(_) if self.cluster.member().is_some() => {}
                Err(_) => tracing::warn!(
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
