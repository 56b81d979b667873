//! exchange.declare and exchange.delete on a vhost: RabbitMQ's checks and texts, the
//! standard and auto-delete exchanges, and what a deleted exchange takes with it.

use std::sync::Arc;

use wharf_amqp::{ByteString, FieldTable, FieldValue};
use wharf_store::{Change, ExchangeDef};

use super::{check_arguments, default_exchange_refused, inequivalent, VHost};
use crate::durability;
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::{
    Destination, Exchange, ExchangeKind, HashOn, ALTERNATE_EXCHANGE, DELAYED_TYPE,
};
use crate::queue_arguments::type_name;

/// The arguments of exchange.declare.
#[derive(Debug, Clone, Default)]
pub struct ExchangeDeclare {
    pub name: ByteString,
    pub kind: ByteString,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// A delayed exchange must name the type it routes as: an existing one, not itself.
fn check_delayed_type(arguments: &FieldTable) -> Result<()> {
    let refused = || {
        Error::precondition("Invalid argument, 'x-delayed-type' must be an existing exchange type")
    };
    let Some(name) = arguments.get(DELAYED_TYPE).and_then(FieldValue::as_str) else {
        return Err(refused());
    };
    match ExchangeKind::parse(name) {
        Some(ExchangeKind::Delayed) => Err(refused()),
        Some(_) => Ok(()),
        None => Err(Error::new(
            ErrorKind::CommandInvalid,
            format_args!("unknown exchange type '{name}'"),
        )),
    }
}

impl VHost {
    pub fn declare_exchange(&self, declare: ExchangeDeclare) -> Result<Arc<Exchange>> {
        self.declare_exchange_checked(declare, || Ok(()))
    }

    /// `declare_exchange`, with `may_create` asked (under the lock that makes the exchange,
    /// so no other declare or delete comes between) before an exchange is made: what a
    /// new exchange needs beyond an existing one, its alternate exchange's permissions.
    pub fn declare_exchange_checked(
        &self,
        declare: ExchangeDeclare,
        may_create: impl FnOnce() -> Result<()>,
    ) -> Result<Arc<Exchange>> {
        if declare.passive {
            return self.exchange(&declare.name);
        }
        let kind = self.exchange_kind(&declare)?;
        if let Some(cluster) = self.cluster.get() {
            return self.propose_exchange(cluster.as_ref(), declare, kind, may_create);
        }
        self.make_exchange(declare, kind, may_create)
    }

    /// The kind of exchange a declare asks for, once its name and arguments are checked.
    pub(super) fn exchange_kind(&self, declare: &ExchangeDeclare) -> Result<ExchangeKind> {
        let name = &declare.name;
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        let Some(kind) = ExchangeKind::parse(&declare.kind) else {
            return Err(Error::new(
                ErrorKind::CommandInvalid,
                format_args!("unknown exchange type '{}'", declare.kind),
            ));
        };
        match declare.arguments.get(ALTERNATE_EXCHANGE) {
            None | Some(FieldValue::LongStr(_)) => {}
            Some(other) => {
                return Err(Error::precondition(format_args!(
                    "invalid type '{}' for arg '{ALTERNATE_EXCHANGE}' in exchange '{name}' in \
                     vhost '{}'",
                    type_name(other),
                    self.name
                )))
            }
        }
        if kind == ExchangeKind::Delayed {
            check_delayed_type(&declare.arguments)?;
        }
        let routing_kind = match kind {
            ExchangeKind::Delayed => declare
                .arguments
                .get(DELAYED_TYPE)
                .and_then(FieldValue::as_str)
                .and_then(ExchangeKind::parse)
                .unwrap_or(ExchangeKind::Direct),
            other => other,
        };
        if routing_kind == ExchangeKind::ConsistentHash {
            HashOn::from_arguments(&declare.arguments).map_err(Error::precondition)?;
        }
        Ok(kind)
    }

    /// Refuses a declare that does not match the existing exchange, as RabbitMQ does.
    pub(super) fn check_exchange_equivalent(
        &self,
        existing: &Exchange,
        declare: &ExchangeDeclare,
        kind: ExchangeKind,
    ) -> Result<()> {
        let (name, vhost) = (&declare.name, &self.name);
        let check = |arg: &str, got: String, current: String| {
            if got == current {
                Ok(())
            } else {
                Err(inequivalent("exchange", name, vhost, arg, &got, &current))
            }
        };
        check("type", kind.to_string(), existing.kind.to_string())?;
        check(
            "durable",
            declare.durable.to_string(),
            existing.durable.to_string(),
        )?;
        check(
            "auto_delete",
            declare.auto_delete.to_string(),
            existing.auto_delete.to_string(),
        )?;
        check(
            "internal",
            declare.internal.to_string(),
            existing.internal.to_string(),
        )?;
        check_arguments(
            "exchange",
            name,
            vhost,
            &declare.arguments,
            &existing.arguments,
        )
    }

    /// The definition a declared exchange is stored and replicated as.
    pub(super) fn exchange_def(
        &self,
        declare: &ExchangeDeclare,
        kind: ExchangeKind,
    ) -> ExchangeDef {
        ExchangeDef {
            vhost: self.name.to_string(),
            name: declare.name.to_string(),
            kind: kind.as_str().to_string(),
            auto_delete: declare.auto_delete,
            internal: declare.internal,
            arguments: durability::encode_arguments(&declare.arguments),
            durable: declare.durable,
        }
    }

    /// Makes the exchange a checked declare asks for, or answers the existing one (a
    /// single node's declare, and every cluster node's once the declare is committed).
    pub(super) fn make_exchange(
        &self,
        declare: ExchangeDeclare,
        kind: ExchangeKind,
        may_create: impl FnOnce() -> Result<()>,
    ) -> Result<Arc<Exchange>> {
        let name = &declare.name;
        let mut exchanges = self.exchanges.write();
        if let Some(existing) = exchanges.get(name) {
            self.check_exchange_equivalent(existing, &declare, kind)?;
            return Ok(existing.clone());
        }
        if name.starts_with("amq.") {
            return Err(Error::access_refused(format_args!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        may_create()?;
        if self.keeps(declare.durable) {
            self.record(|| Change::PutExchange(self.exchange_def(&declare, kind)))?;
        }
        let exchange = Arc::new(Exchange::new(
            name.clone(),
            kind,
            declare.durable,
            declare.auto_delete,
            declare.internal,
            declare.arguments,
        ));
        if let (Some(durability), true) = (&self.durability, declare.durable) {
            durability.attach_delayed_log(&self.name, &exchange, true)?;
        }
        exchange.apply_policy(self.policy_for_exchange(name).as_ref());
        exchanges.insert(name.clone(), exchange.clone());
        Ok(exchange)
    }

    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        self.check_deletable_exchange(name)?;
        if let Some(cluster) = self.cluster.get() {
            return self.propose_exchange_deletion(cluster.as_ref(), name, if_unused);
        }
        self.remove_exchange(name, if_unused)
    }

    /// The default exchange and the `amq.` ones are not a client's to delete.
    pub(super) fn check_deletable_exchange(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(Error::access_refused(format_args!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        Ok(())
    }

    pub(super) fn exchange_in_use(&self, name: &str) -> Error {
        Error::precondition(format_args!(
            "exchange '{name}' in vhost '{}' in use",
            self.name
        ))
    }

    /// Deletes an exchange (a single node's delete, and every cluster node's once the
    /// delete is committed), with the bindings to it.
    pub(super) fn remove_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        let exchange = {
            let mut exchanges = self.exchanges.write();
            let Some(exchange) = exchanges.get(name).cloned() else {
                // Deleting what is not there succeeds, as in RabbitMQ.
                return Ok(());
            };
            if if_unused && exchange.has_bindings() {
                return Err(self.exchange_in_use(name));
            }
            if self.keeps(exchange.durable) {
                self.record(|| Change::DeleteExchange {
                    vhost: self.name.to_string(),
                    name: name.to_string(),
                })?;
            }
            exchanges.remove(name);
            exchange.mark_deleted();
            exchange
        };
        self.remove_bindings_to(&Destination::Exchange(exchange));
        Ok(())
    }

    /// Removes bindings leading to `destination` from every exchange, then deletes the
    /// auto-delete exchanges that lost their last binding.
    pub(super) fn remove_bindings_to(&self, destination: &Destination) {
        let mut emptied = Vec::new();
        for exchange in self.exchanges() {
            if exchange.unbind_destination(destination) > 0
                && exchange.auto_delete
                && !exchange.has_bindings()
            {
                emptied.push(exchange);
            }
        }
        for exchange in emptied {
            self.delete_auto_exchange(&exchange);
        }
    }

    pub(super) fn delete_auto_exchange(&self, exchange: &Arc<Exchange>) {
        let removed = {
            let mut exchanges = self.exchanges.write();
            match exchanges.get(&exchange.name) {
                Some(current) if Arc::ptr_eq(current, exchange) && !exchange.has_bindings() => {
                    if self.keeps(exchange.durable) {
                        // The exchange goes from memory either way; a failed write means
                        // it comes back after a restart, bindings-less, as it was declared.
                        let _ = self.record(|| Change::DeleteExchange {
                            vhost: self.name.to_string(),
                            name: exchange.name.to_string(),
                        });
                    }
                    exchanges.remove(&exchange.name);
                    exchange.mark_deleted();
                    true
                }
                _ => false,
            }
        };
        if removed {
            self.remove_bindings_to(&Destination::Exchange(exchange.clone()));
        }
    }
}
