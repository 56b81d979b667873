//! queue.bind, queue.unbind, exchange.bind and exchange.unbind: the binding checks
//! RabbitMQ makes, durable bindings recorded, and unbinding what is not there answered
//! as RabbitMQ answers it.

use std::sync::Arc;

use wharf_amqp::{ByteString, FieldTable};
use wharf_store::Change;

use super::{default_exchange_refused, present, VHost};
use crate::durability;
use crate::error::{Error, Result};
use crate::exchange::{
    consistent_hash_weight, validate_headers_binding, Binding, Destination, Exchange, ExchangeKind,
};
use crate::queue::ConnectionId;

impl VHost {
    fn check_bindable_source(&self, exchange: &str) -> Result<Arc<Exchange>> {
        if exchange.is_empty() {
            return Err(default_exchange_refused());
        }
        self.exchange(exchange)
    }

    pub fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: ByteString,
        arguments: FieldTable,
        connection: ConnectionId,
    ) -> Result<()> {
        if let Some(cluster) = self.cluster.get() {
            cluster.sync()?;
            let destination = self.queue_destination(queue, connection)?;
            let source = self.check_bindable_source(exchange)?;
            let binding = self.checked_binding(&source, destination, routing_key, arguments)?;
            return self.propose_binding(cluster.as_ref(), &source, &binding, true);
        }
        let queue = self.queue_for(queue, connection)?;
        let source = self.check_bindable_source(exchange)?;
        self.bind(&source, Destination::Queue(queue), routing_key, arguments)
    }

    /// A queue of this node or, on a cluster, another's, checked to be usable by
    /// `connection`.
    pub(super) fn queue_destination(
        &self,
        name: &str,
        connection: ConnectionId,
    ) -> Result<Destination> {
        if let Ok(queue) = self.queue(name) {
            queue.check_owner(connection)?;
            return Ok(Destination::Queue(queue));
        }
        match self.remote_queue(name) {
            Some(queue) => {
                queue.check_owner(connection)?;
                Ok(Destination::Remote(queue))
            }
            None => Err(self.no_queue(name)),
        }
    }

    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: ByteString,
        arguments: FieldTable,
        connection: ConnectionId,
    ) -> Result<()> {
        // As RabbitMQ: unbinding what is not there (the queue, the exchange or the
        // binding) is already done, so clients may unbind again after a reconnect or
        // after an auto-delete queue went. The default exchange is refused first.
        if exchange.is_empty() {
            return Err(default_exchange_refused());
        }
        if let Some(cluster) = self.cluster.get() {
            cluster.sync()?;
            let Some(destination) = present(self.queue_destination(queue, connection))? else {
                return Ok(());
            };
            let Some(source) = present(self.exchange(exchange))? else {
                return Ok(());
            };
            let binding = Binding {
                destination,
                routing_key,
                arguments,
            };
            return self.propose_binding(cluster.as_ref(), &source, &binding, false);
        }
        let Some(queue) = present(self.queue_for(queue, connection))? else {
            return Ok(());
        };
        let Some(source) = present(self.exchange(exchange))? else {
            return Ok(());
        };
        self.unbind(&source, Destination::Queue(queue), routing_key, arguments);
        Ok(())
    }

    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: ByteString,
        arguments: FieldTable,
    ) -> Result<()> {
        if let Some(cluster) = self.cluster.get() {
            cluster.sync()?;
        }
        let destination = self.check_bindable_source(destination)?;
        let source = self.check_bindable_source(source)?;
        if let Some(cluster) = self.cluster.get() {
            let destination = Destination::Exchange(destination);
            let binding = self.checked_binding(&source, destination, routing_key, arguments)?;
            return self.propose_binding(cluster.as_ref(), &source, &binding, true);
        }
        self.bind(
            &source,
            Destination::Exchange(destination),
            routing_key,
            arguments,
        )
    }

    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: ByteString,
        arguments: FieldTable,
    ) -> Result<()> {
        // Unbinding what is not there is already done (see `unbind_queue`).
        if destination.is_empty() || source.is_empty() {
            return Err(default_exchange_refused());
        }
        if let Some(cluster) = self.cluster.get() {
            cluster.sync()?;
        }
        let Some(destination) = present(self.exchange(destination))? else {
            return Ok(());
        };
        let Some(source) = present(self.exchange(source))? else {
            return Ok(());
        };
        if let Some(cluster) = self.cluster.get() {
            let binding = Binding {
                destination: Destination::Exchange(destination),
                routing_key,
                arguments,
            };
            return self.propose_binding(cluster.as_ref(), &source, &binding, false);
        }
        self.unbind(
            &source,
            Destination::Exchange(destination),
            routing_key,
            arguments,
        );
        Ok(())
    }

    /// A binding from `source`, its key and arguments checked as its exchange type wants.
    pub(super) fn checked_binding(
        &self,
        source: &Exchange,
        destination: Destination,
        routing_key: ByteString,
        arguments: FieldTable,
    ) -> Result<Binding> {
        match source.routing_kind {
            ExchangeKind::Headers => {
                validate_headers_binding(&arguments).map_err(Error::precondition)?;
            }
            ExchangeKind::ConsistentHash => {
                consistent_hash_weight(&routing_key).map_err(Error::precondition)?;
            }
            _ => {}
        }
        Ok(Binding {
            destination,
            routing_key,
            arguments,
        })
    }

    /// Binds (a single node's bind, and every cluster node's once the bind is committed).
    pub(super) fn bind(
        &self,
        source: &Arc<Exchange>,
        destination: Destination,
        routing_key: ByteString,
        arguments: FieldTable,
    ) -> Result<()> {
        let binding = self.checked_binding(source, destination, routing_key, arguments)?;
        let kept = self.keeps(durability::is_durable(source, &binding.destination));
        if source.bind(binding.clone()) && kept {
            let recorded = self.record(|| {
                Change::PutBinding(durability::binding_def(&self.name, source, &binding))
            });
            if let Err(error) = recorded {
                source.unbind(&binding);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Unbinds (a single node's unbind, and every cluster node's once it is committed).
    pub(super) fn unbind(
        &self,
        source: &Arc<Exchange>,
        destination: Destination,
        routing_key: ByteString,
        arguments: FieldTable,
    ) {
        let binding = Binding {
            destination,
            routing_key,
            arguments,
        };
        if !source.unbind(&binding) {
            return;
        }
        if self.keeps(durability::is_durable(source, &binding.destination)) {
            let _ = self.record(|| {
                Change::DeleteBinding(durability::binding_def(&self.name, source, &binding))
            });
        }
        if source.auto_delete && !source.has_bindings() {
            self.delete_auto_exchange(source);
        }
    }
}
