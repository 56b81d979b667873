//! A virtual host: its exchanges and queues, and the operations of AMQP's exchange and
//! queue classes on them. The vhost owns both maps; callers hold `Arc`s to the objects,
//! whose own locks guard their contents. Routing takes only read locks.

mod dead_lettering;
mod policies;
mod publishing;
mod routing;

pub use self::publishing::{same_name, Published, RouteCache};

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use wharf_amqp::{ByteString, FieldTable, FieldValue};
use wharf_store::{Change, Definitions, DestinationKind, ExchangeDef, QueueDef};

use crate::durability::{self, Durability};
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::{
    consistent_hash_weight, validate_headers_binding, Binding, Destination, Exchange, ExchangeKind,
    HashOn, ALTERNATE_EXCHANGE, DELAYED_TYPE,
};
use crate::policy::Policy;
use crate::queue::dead_letter::DeadLetter;
use crate::queue::{ConnectionId, Queue, QueueHost, QueueOptions, Window};
use crate::queue_arguments::{type_name, QueueSettings};
use crate::timer::Timers;

/// The exchanges every vhost starts with, as RabbitMQ declares them.
const STANDARD_EXCHANGES: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

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

/// The arguments of queue.declare.
#[derive(Debug, Clone, Default)]
pub struct QueueDeclare {
    /// Empty: the broker names the queue.
    pub name: ByteString,
    /// `name` was made by [`generated_queue_name`] for a client that asked for a
    /// server-named queue (so its reserved prefix is allowed).
    pub server_named: bool,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

pub struct QueueDeclared {
    pub queue: Arc<Queue>,
    pub message_count: u32,
    pub consumer_count: u32,
}

#[derive(Debug)]
pub struct VHost {
    pub name: ByteString,
    exchanges: RwLock<HashMap<ByteString, Arc<Exchange>>>,
    queues: RwLock<HashMap<ByteString, Arc<Queue>>>,
    /// Where durable definitions are written; None for a broker without a data directory.
    durability: Option<Arc<Durability>>,
    /// The in-memory window of every queue of this vhost.
    queue_window: Window,
    pub(crate) timers: Arc<Timers>,
    /// Direct reply-to consumers of this vhost's channels.
    pub replies: crate::direct_reply::ReplyConsumers,
    /// The vhost's policies, by name.
    policies: RwLock<Vec<Policy>>,
    /// This vhost, for the queues it creates (they route dead letters through it).
    this: Weak<VHost>,
    /// Description and tags, as an administrator gave them.
    pub metadata: RwLock<(String, Vec<String>)>,
    /// max-connections, max-queues.
    pub limits: RwLock<crate::limits::Limits>,
}

fn inequivalent(what: &str, name: &str, vhost: &str, arg: &str, got: &str, current: &str) -> Error {
    Error::precondition(format_args!(
        "inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received '{got}' but current is '{current}'"
    ))
}

/// A lookup's object, or None when it is not there (any other refusal stays one).
fn present<T>(found: Result<T>) -> Result<Option<T>> {
    match found {
        Ok(found) => Ok(Some(found)),
        Err(error) if error.kind == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

fn default_exchange_refused() -> Error {
    Error::access_refused("operation not permitted on the default exchange")
}

fn describe(value: Option<&FieldValue>) -> String {
    match value {
        None => "none".to_string(),
        Some(v) => match v.as_str() {
            Some(s) => s.to_string(),
            None => format!("{v:?}"),
        },
    }
}

/// RabbitMQ's server-generated queue names: "amq.gen-" and 22 URL-safe base64 characters.
pub fn generated_queue_name() -> ByteString {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    ByteString::from(format!("amq.gen-{encoded}"))
}

impl VHost {
    pub fn new(
        name: impl Into<ByteString>,
        durability: Option<Arc<Durability>>,
        queue_window: Window,
        timers: Arc<Timers>,
    ) -> Arc<Self> {
        let vhost = Arc::new_cyclic(|this| VHost {
            name: name.into(),
            exchanges: RwLock::new(HashMap::new()),
            queues: RwLock::new(HashMap::new()),
            durability,
            queue_window,
            timers,
            replies: Default::default(),
            policies: RwLock::new(Vec::new()),
            this: this.clone(),
            metadata: RwLock::default(),
            limits: RwLock::default(),
        });
        {
            let mut exchanges = vhost.exchanges.write();
            for (name, kind) in STANDARD_EXCHANGES {
                let name = ByteString::from_static(name);
                let exchange =
                    Exchange::new(name.clone(), *kind, true, false, false, FieldTable::new());
                exchanges.insert(name, Arc::new(exchange));
            }
        }
        vhost
    }

    /// Writes a change to the definitions store, if this broker has one.
    fn record(&self, change: impl FnOnce() -> Change) -> Result<()> {
        match &self.durability {
            Some(durability) => durability.record(change()),
            None => Ok(()),
        }
    }

    fn no_exchange(&self, name: &str) -> Error {
        Error::not_found(format_args!(
            "no exchange '{name}' in vhost '{}'",
            self.name
        ))
    }

    fn no_queue(&self, name: &str) -> Error {
        Error::not_found(format_args!("no queue '{name}' in vhost '{}'", self.name))
    }

    pub fn exchange(&self, name: &str) -> Result<Arc<Exchange>> {
        self.exchanges
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_exchange(name))
    }

    pub fn queue(&self, name: &str) -> Result<Arc<Queue>> {
        self.queues
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_queue(name))
    }

    /// A queue, checked to be usable by `connection` (exclusive queues are their owner's).
    pub fn queue_for(&self, name: &str, connection: ConnectionId) -> Result<Arc<Queue>> {
        let queue = self.queue(name)?;
        queue.check_owner(connection)?;
        Ok(queue)
    }

    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.read().values().cloned().collect()
    }

    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.read().values().cloned().collect()
    }

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
        let name = &declare.name;
        if declare.passive {
            return self.exchange(name);
        }
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
        let mut exchanges = self.exchanges.write();
        if let Some(existing) = exchanges.get(name) {
            let vhost = &self.name;
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
            )?;
            return Ok(existing.clone());
        }
        if name.starts_with("amq.") {
            return Err(Error::access_refused(format_args!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        may_create()?;
        if declare.durable {
            self.record(|| {
                Change::PutExchange(ExchangeDef {
                    vhost: self.name.to_string(),
                    name: name.to_string(),
                    kind: kind.as_str().to_string(),
                    auto_delete: declare.auto_delete,
                    internal: declare.internal,
                    arguments: durability::encode_arguments(&declare.arguments),
                })
            })?;
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
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(Error::access_refused(format_args!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let exchange = {
            let mut exchanges = self.exchanges.write();
            let Some(exchange) = exchanges.get(name).cloned() else {
                // Deleting what is not there succeeds, as in RabbitMQ.
                return Ok(());
            };
            if if_unused && exchange.has_bindings() {
                return Err(Error::precondition(format_args!(
                    "exchange '{name}' in vhost '{}' in use",
                    self.name
                )));
            }
            if exchange.durable {
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
    fn remove_bindings_to(&self, destination: &Destination) {
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

    fn delete_auto_exchange(&self, exchange: &Arc<Exchange>) {
        let removed = {
            let mut exchanges = self.exchanges.write();
            match exchanges.get(&exchange.name) {
                Some(current) if Arc::ptr_eq(current, exchange) && !exchange.has_bindings() => {
                    if exchange.durable {
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

    pub fn declare_queue(
        &self,
        declare: QueueDeclare,
        connection: ConnectionId,
    ) -> Result<QueueDeclared> {
        self.declare_queue_checked(declare, connection, || Ok(()))
    }

    /// `declare_queue`, with `may_create` asked (under the lock that makes the queue) before
    /// a queue is made: its dead-letter exchange's permissions.
    pub fn declare_queue_checked(
        &self,
        declare: QueueDeclare,
        connection: ConnectionId,
        may_create: impl FnOnce() -> Result<()>,
    ) -> Result<QueueDeclared> {
        let declared = |queue: Arc<Queue>| QueueDeclared {
            message_count: {
                // A declare, passive or not, counts as a use for x-expires.
                queue.touch();
                queue.message_count()
            },
            consumer_count: queue.consumer_count(),
            queue,
        };
        if declare.passive {
            // A passive declare with an empty name refers to no queue at all.
            let queue = self.queue_for(&declare.name, connection)?;
            return Ok(declared(queue));
        }
        // As RabbitMQ, before anything else and whether or not the queue exists: only the
        // broker makes `amq.` queues, and a client may not redeclare one (not even its own
        // server-named queue) to learn its counts.
        if declare.name.starts_with("amq.") && !declare.server_named {
            return Err(Error::access_refused(format_args!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                declare.name
            )));
        }
        if let Err(error) = QueueSettings::from_arguments(&declare.arguments) {
            return Err(Error::precondition(
                error.describe(&declare.name, &self.name),
            ));
        }
        let mut queues = self.queues.write();
        if let Some(existing) = queues.get(&declare.name) {
            existing.check_owner(connection)?;
            let (name, vhost) = (&declare.name, &self.name);
            let options = &existing.options;
            let check = |arg: &str, got: bool, current: bool| {
                if got == current {
                    Ok(())
                } else {
                    Err(inequivalent(
                        "queue",
                        name,
                        vhost,
                        arg,
                        &got.to_string(),
                        &current.to_string(),
                    ))
                }
            };
            check("durable", declare.durable, options.durable)?;
            check(
                "exclusive",
                declare.exclusive,
                options.exclusive_owner.is_some(),
            )?;
            check("auto_delete", declare.auto_delete, options.auto_delete)?;
            check_arguments("queue", name, vhost, &declare.arguments, &options.arguments)?;
            let existing = existing.clone();
            drop(queues);
            return Ok(declared(existing));
        }
        may_create()?;
        let name = if declare.name.is_empty() {
            generated_queue_name()
        } else {
            declare.name
        };
        // Only queues made now count against the vhost's limit.
        if let Some(max) = self.limits.read().get(crate::limits::MAX_QUEUES) {
            if queues.len() as u64 >= max {
                return Err(Error::precondition(format_args!(
                    "cannot declare queue '{name}': queue limit in vhost '{}' ({max}) is reached",
                    self.name
                )));
            }
        }
        let queue = Arc::new(Queue::new(
            name.clone(),
            self.name.clone(),
            QueueOptions {
                durable: declare.durable,
                exclusive_owner: declare.exclusive.then_some(connection),
                auto_delete: declare.auto_delete,
                arguments: declare.arguments,
            },
            self.queue_window,
            self.this.clone(),
        ));
        if let Some(durability) = &self.durability {
            if durability::is_durable_queue(&queue) {
                durability.attach_log(&queue, true)?;
            } else {
                queue.set_spill_dir(durability.spill_dir());
            }
        }
        if declare.durable && !declare.exclusive {
            self.record(|| {
                Change::PutQueue(QueueDef {
                    vhost: self.name.to_string(),
                    name: name.to_string(),
                    auto_delete: queue.options.auto_delete,
                    arguments: durability::encode_arguments(&queue.options.arguments),
                })
            })?;
        }
        queues.insert(name, queue.clone());
        drop(queues);
        queue.apply_policy(self.policy_for_queue(&queue.name).as_ref());
        Ok(declared(queue))
    }

    /// Deletes a queue; returns how many ready messages it held. A missing queue is not an
    /// error (RabbitMQ answers delete-ok with a count of 0).
    pub fn delete_queue(
        &self,
        name: &str,
        connection: ConnectionId,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32> {
        let queue = {
            let mut queues = self.queues.write();
            let Some(queue) = queues.get(name).cloned() else {
                return Ok(0);
            };
            queue.check_owner(connection)?;
            queue.check_deletable(if_unused, if_empty)?;
            if durability::is_durable_queue(&queue) {
                self.record(|| Change::DeleteQueue {
                    vhost: self.name.to_string(),
                    name: name.to_string(),
                })?;
            }
            queues.remove(name);
            queue
        };
        Ok(self.finish_queue_deletion(queue))
    }

    /// Deletes `queue` if it is still the one registered under its name (auto-delete and
    /// exclusive queues go this way, without owner checks).
    pub fn delete_queue_instance(&self, queue: &Arc<Queue>) {
        let removed = {
            let mut queues = self.queues.write();
            match queues.get(&queue.name) {
                Some(current) if Arc::ptr_eq(current, queue) => {
                    if durability::is_durable_queue(queue) {
                        let _ = self.record(|| Change::DeleteQueue {
                            vhost: self.name.to_string(),
                            name: queue.name.to_string(),
                        });
                    }
                    queues.remove(&queue.name)
                }
                _ => None,
            }
        };
        if let Some(queue) = removed {
            self.finish_queue_deletion(queue);
        }
    }

    fn finish_queue_deletion(&self, queue: Arc<Queue>) -> u32 {
        let count = queue.mark_deleted();
        self.remove_bindings_to(&Destination::Queue(queue));
        count
    }

    /// Empties a deleted vhost: every queue is deleted with its messages (their logs
    /// removed from disk) and its consumers told, every exchange and policy goes. The
    /// store forgot them already (a deleted vhost takes its definitions with it).
    pub(crate) fn destroy(&self) {
        let queues: Vec<Arc<Queue>> = self.queues.write().drain().map(|(_, q)| q).collect();
        for queue in queues {
            queue.mark_deleted();
        }
        let exchanges: Vec<Arc<Exchange>> =
            self.exchanges.write().drain().map(|(_, e)| e).collect();
        for exchange in exchanges {
            exchange.mark_deleted();
        }
        self.policies.write().clear();
    }

    /// Deletes the exclusive queues a closing connection owned.
    pub fn connection_closed(&self, connection: ConnectionId) {
        let owned: Vec<Arc<Queue>> = self
            .queues
            .read()
            .values()
            .filter(|q| q.options.exclusive_owner == Some(connection))
            .cloned()
            .collect();
        for queue in owned {
            self.delete_queue_instance(&queue);
        }
    }

    pub fn purge_queue(&self, name: &str, connection: ConnectionId) -> Result<u32> {
        Ok(self.queue_for(name, connection)?.purge())
    }

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
        let queue = self.queue_for(queue, connection)?;
        let source = self.check_bindable_source(exchange)?;
        self.bind(&source, Destination::Queue(queue), routing_key, arguments)
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
        let destination = self.check_bindable_source(destination)?;
        let source = self.check_bindable_source(source)?;
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
        let Some(destination) = present(self.exchange(destination))? else {
            return Ok(());
        };
        let Some(source) = present(self.exchange(source))? else {
            return Ok(());
        };
        self.unbind(
            &source,
            Destination::Exchange(destination),
            routing_key,
            arguments,
        );
        Ok(())
    }

    fn bind(
        &self,
        source: &Arc<Exchange>,
        destination: Destination,
        routing_key: ByteString,
        arguments: FieldTable,
    ) -> Result<()> {
        match source.routing_kind {
            ExchangeKind::Headers => {
                validate_headers_binding(&arguments).map_err(Error::precondition)?;
            }
            ExchangeKind::ConsistentHash => {
                consistent_hash_weight(&routing_key).map_err(Error::precondition)?;
            }
            _ => {}
        }
        let binding = Binding {
            destination,
            routing_key,
            arguments,
        };
        let durable = durability::is_durable(source, &binding.destination);
        if source.bind(binding.clone()) && durable {
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

    fn unbind(
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
        if durability::is_durable(source, &binding.destination) {
            let _ = self.record(|| {
                Change::DeleteBinding(durability::binding_def(&self.name, source, &binding))
            });
        }
        if source.auto_delete && !source.has_bindings() {
            self.delete_auto_exchange(source);
        }
    }

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

/// Queue and exchange arguments must match those of the existing object. RabbitMQ
/// compares the arguments it understands; Wharf compares every `x-` argument the same way.
fn check_arguments(
    what: &str,
    name: &str,
    vhost: &str,
    got: &FieldTable,
    current: &FieldTable,
) -> Result<()> {
    let keys = got.iter().chain(current.iter()).map(|(k, _)| k);
    // RabbitMQ also compares an exchange's alternate-exchange.
    let compared = |k: &&ByteString| k.starts_with("x-") || *k == ALTERNATE_EXCHANGE;
    for key in keys.filter(compared) {
        let (a, b) = (got.get(key), current.get(key));
        if a != b {
            return Err(inequivalent(
                what,
                name,
                vhost,
                key,
                &describe(a),
                &describe(b),
            ));
        }
    }
    Ok(())
}

/// What the vhost does for the queues it holds.
impl QueueHost for VHost {
    fn now_ms(&self) -> u64 {
        crate::timer::now_ms()
    }

    fn dead_letter(&self, queue: &Queue, letters: Vec<DeadLetter>) {
        if let Some(vhost) = self.this.upgrade() {
            dead_lettering::publish(&vhost, queue, letters);
        }
    }

    fn schedule_at_ms(&self, at_ms: u64, task: crate::timer::Task) {
        self.timers.schedule_at_ms(at_ms, task);
    }

    fn queue_expired(&self, queue: &Arc<Queue>) {
        self.delete_queue_instance(queue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Broker, BrokerConfig};

    #[test]
    fn may_create_is_asked_only_for_what_is_made_and_can_refuse_it() {
        let broker = Broker::new(BrokerConfig::default());
        let vhost = broker.vhost("/").unwrap();
        let queue = |name: &str| QueueDeclare {
            name: name.into(),
            ..Default::default()
        };
        let refuse = || Err(Error::access_refused("not this one"));
        assert!(vhost.declare_queue_checked(queue("q"), 1, refuse).is_err());
        assert!(vhost.queue("q").is_err(), "a refused queue is not made");
        vhost.declare_queue(queue("q"), 1).unwrap();
        // It exists now: nothing more to ask.
        vhost.declare_queue_checked(queue("q"), 1, refuse).unwrap();

        let exchange = |name: &str| ExchangeDeclare {
            name: name.into(),
            kind: "direct".into(),
            ..Default::default()
        };
        assert!(vhost
            .declare_exchange_checked(exchange("x"), refuse)
            .is_err());
        assert!(
            vhost.exchange("x").is_err(),
            "a refused exchange is not made"
        );
        vhost.declare_exchange(exchange("x")).unwrap();
        vhost
            .declare_exchange_checked(exchange("x"), refuse)
            .unwrap();
    }
}
