//! What a user does to a vhost's exchanges, queues and bindings, checked against their
//! permissions in RabbitMQ's order before the vhost does it. The AMQP channel and the
//! HTTP API both go through here, so a refusal reads the same from either.

use std::sync::Arc;

use wharf_amqp::{ByteString, FieldTable, FieldValue};

use super::{Access, Grant, ResourceKind};
use crate::error::Result;
use crate::exchange::{Exchange, ExchangeKind, ALTERNATE_EXCHANGE};
use crate::queue::ConnectionId;
use crate::queue_arguments::DEAD_LETTER_EXCHANGE;
use crate::vhost::{ExchangeDeclare, QueueDeclare, QueueDeclared, VHost};

impl Grant {
    /// exchange.declare: configure on the exchange; for one made now with an alternate
    /// exchange, read on it and write on the alternate. A passive declare checks nothing;
    /// the default exchange is refused (by the vhost) before any permission is looked at.
    pub fn declare_exchange(
        &self,
        vhost: &VHost,
        declare: ExchangeDeclare,
    ) -> Result<Arc<Exchange>> {
        let name = declare.name.clone();
        let alternate = declare
            .arguments
            .get(ALTERNATE_EXCHANGE)
            .and_then(FieldValue::as_str)
            .map(str::to_string);
        let may_create = || -> Result<()> {
            if let Some(alternate) = &alternate {
                self.check(Access::Read, ResourceKind::Exchange, &name)?;
                self.check(Access::Write, ResourceKind::Exchange, alternate)?;
            }
            Ok(())
        };
        if !declare.passive && !name.is_empty() {
            self.check(Access::Configure, ResourceKind::Exchange, &name)?;
            // Checked here first, in RabbitMQ's order; again as the exchange is made, in
            // case it was deleted in between.
            if vhost.exchange(&name).is_err() {
                may_create()?;
            }
        }
        vhost.declare_exchange_checked(declare, may_create)
    }

    /// exchange.delete: configure on it (the default and `amq.*` exchanges are refused by
    /// the vhost with their own texts).
    pub fn delete_exchange(&self, vhost: &VHost, name: &str, if_unused: bool) -> Result<()> {
        if !name.is_empty() && !name.starts_with("amq.") {
            self.check(Access::Configure, ResourceKind::Exchange, name)?;
        }
        vhost.delete_exchange(name, if_unused)
    }

    /// queue.declare: configure on the queue; for one made now with a dead-letter
    /// exchange, read on it and write on that exchange. A server-named queue is checked
    /// under the name it gets; a reserved name is refused (by the vhost) first.
    pub fn declare_queue(
        &self,
        vhost: &VHost,
        declare: QueueDeclare,
        connection: ConnectionId,
    ) -> Result<QueueDeclared> {
        let name = declare.name.clone();
        let dead_letter = declare
            .arguments
            .get(DEAD_LETTER_EXCHANGE)
            .and_then(FieldValue::as_str)
            .map(str::to_string);
        let may_create = || -> Result<()> {
            if let Some(exchange) = &dead_letter {
                self.check(Access::Read, ResourceKind::Queue, &name)?;
                self.check(Access::Write, ResourceKind::Exchange, exchange)?;
            }
            Ok(())
        };
        if !declare.passive && (declare.server_named || !name.starts_with("amq.")) {
            self.check(Access::Configure, ResourceKind::Queue, &name)?;
            if vhost.queue(&name).is_err() {
                may_create()?;
            }
        }
        vhost.declare_queue_checked(declare, connection, may_create)
    }

    /// queue.delete: configure on it. A missing queue is deleted already (0 messages).
    pub fn delete_queue(
        &self,
        vhost: &VHost,
        name: &str,
        connection: ConnectionId,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32> {
        self.check(Access::Configure, ResourceKind::Queue, name)?;
        vhost.delete_queue(name, connection, if_unused, if_empty)
    }

    /// queue.purge: read on it.
    pub fn purge_queue(&self, vhost: &VHost, name: &str, connection: ConnectionId) -> Result<u32> {
        self.check(Access::Read, ResourceKind::Queue, name)?;
        vhost.purge_queue(name, connection)
    }

    /// A binding's checks: write on the destination, read on the source, and for a topic
    /// source the user's topic permission on the routing key.
    fn check_binding(
        &self,
        vhost: &VHost,
        (kind, destination): (ResourceKind, &str),
        source: &str,
        routing_key: &str,
    ) -> Result<()> {
        self.check(Access::Write, kind, destination)?;
        if source.is_empty() || (kind == ResourceKind::Exchange && destination.is_empty()) {
            // The vhost refuses bindings to or from the default exchange with its own text.
            return Ok(());
        }
        self.check(Access::Read, ResourceKind::Exchange, source)?;
        if let Ok(exchange) = vhost.exchange(source) {
            if exchange.kind == ExchangeKind::Topic {
                self.check_topic(Access::Read, source, routing_key)?;
            }
        }
        Ok(())
    }

    pub fn bind_queue(
        &self,
        vhost: &VHost,
        queue: &str,
        exchange: &str,
        routing_key: ByteString,
        arguments: FieldTable,
        connection: ConnectionId,
    ) -> Result<()> {
        self.check_binding(vhost, (ResourceKind::Queue, queue), exchange, &routing_key)?;
        vhost.bind_queue(queue, exchange, routing_key, arguments, connection)
    }

    pub fn unbind_queue(
        &self,
        vhost: &VHost,
        queue: &str,
        exchange: &str,
        routing_key: ByteString,
        arguments: FieldTable,
        connection: ConnectionId,
    ) -> Result<()> {
        self.check_binding(vhost, (ResourceKind::Queue, queue), exchange, &routing_key)?;
        vhost.unbind_queue(queue, exchange, routing_key, arguments, connection)
    }

    pub fn bind_exchange(
        &self,
        vhost: &VHost,
        destination: &str,
        source: &str,
        routing_key: ByteString,
        arguments: FieldTable,
    ) -> Result<()> {
        let target = (ResourceKind::Exchange, destination);
        self.check_binding(vhost, target, source, &routing_key)?;
        vhost.bind_exchange(destination, source, routing_key, arguments)
    }

    pub fn unbind_exchange(
        &self,
        vhost: &VHost,
        destination: &str,
        source: &str,
        routing_key: ByteString,
        arguments: FieldTable,
    ) -> Result<()> {
        let target = (ResourceKind::Exchange, destination);
        self.check_binding(vhost, target, source, &routing_key)?;
        vhost.unbind_exchange(destination, source, routing_key, arguments)
    }
}
