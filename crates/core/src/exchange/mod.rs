//! Exchanges and their bindings. An exchange owns the list of bindings whose source it is,
//! and an index built for its type (hash map, trie, list) so that routing never scans
//! patterns. The vhost owns the exchanges; routing reads them under a read lock.

mod consistent_hash;
mod delayed;
mod headers;
mod topic;

pub use consistent_hash::{weight as consistent_hash_weight, HashOn};
pub use delayed::{delay_of, DelayedMessages, HoldOutcome, DELAYED_TYPE};

pub use headers::{headers_match, validate_binding as validate_headers_binding};
pub use topic::{pattern_matches as topic_pattern_matches, TopicTrie};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use wharf_amqp::{ByteString, FieldTable, FieldValue};

use crate::message::Message;
use crate::queue::remote::RemoteQueue;
use crate::queue::Queue;

/// The routing algorithm of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// `x-consistent-hash`: one destination per message, by a hash of its routing key.
    ConsistentHash,
    /// `x-delayed-message`: holds messages for their `x-delay`, then routes them as its
    /// `x-delayed-type`.
    Delayed,
}

impl ExchangeKind {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            "x-consistent-hash" => Some(ExchangeKind::ConsistentHash),
            "x-delayed-message" => Some(ExchangeKind::Delayed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::ConsistentHash => "x-consistent-hash",
            ExchangeKind::Delayed => "x-delayed-message",
        }
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a binding leads: a queue, another node's queue, or another exchange
/// (exchange-to-exchange binding). Two destinations are equal when they are the same
/// object.
#[derive(Clone)]
pub enum Destination {
    Queue(Arc<Queue>),
    Remote(Arc<RemoteQueue>),
    Exchange(Arc<Exchange>),
}

impl Destination {
    /// The name of the queue or exchange.
    pub fn name(&self) -> &str {
        match self {
            Destination::Queue(q) => &q.name,
            Destination::Remote(q) => &q.name,
            Destination::Exchange(e) => &e.name,
        }
    }

    /// Whether it is a queue (of this node or another), not an exchange.
    pub fn is_queue(&self) -> bool {
        !matches!(self, Destination::Exchange(_))
    }

    /// Whether the queue it leads to is exclusive (exchanges are not).
    pub fn is_exclusive_queue(&self) -> bool {
        match self {
            Destination::Queue(q) => q.options.exclusive_owner.is_some(),
            Destination::Remote(q) => q.options.exclusive_owner.is_some(),
            Destination::Exchange(_) => false,
        }
    }
}

impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Destination::Queue(a), Destination::Queue(b)) => Arc::ptr_eq(a, b),
            (Destination::Remote(a), Destination::Remote(b)) => Arc::ptr_eq(a, b),
            (Destination::Exchange(a), Destination::Exchange(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Queue(q) => write!(f, "queue '{}'", q.name),
            Destination::Remote(q) => write!(f, "queue '{}' on {}", q.name, q.home()),
            Destination::Exchange(e) => write!(f, "exchange '{}'", e.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: ByteString,
    pub arguments: FieldTable,
}

/// The per-type routing index over an exchange's bindings.
#[derive(Debug)]
enum Router {
    Direct(HashMap<ByteString, Vec<Destination>>),
    Fanout,
    Topic(TopicTrie<Destination>),
    Headers,
    ConsistentHash(consistent_hash::Ring),
}

#[derive(Debug)]
struct Bindings {
    list: Vec<Binding>,
    router: Router,
}

/// The exchange argument naming an alternate exchange.
pub const ALTERNATE_EXCHANGE: &str = "alternate-exchange";

#[derive(Debug)]
pub struct Exchange {
    pub name: ByteString,
    pub kind: ExchangeKind,
    /// How its bindings route: its kind, or a delayed exchange's `x-delayed-type`.
    pub routing_kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// Where messages this exchange cannot route go: its `alternate-exchange` argument,
    /// else its policy's.
    alternate: RwLock<Option<ByteString>>,
    /// The name of the policy that applies to the exchange, if one does.
    policy: RwLock<Option<ByteString>>,
    /// What an `x-consistent-hash` exchange hashes.
    hash_on: HashOn,
    /// The messages an `x-delayed-message` exchange holds.
    pub delayed: Option<Arc<DelayedMessages>>,
    /// Set once a missing alternate exchange was logged, so it is logged once, not per
    /// message.
    alternate_missing_logged: std::sync::atomic::AtomicBool,
    bindings: RwLock<Bindings>,
    /// Set when the exchange is removed from its vhost, so that holders of an `Arc` (a
    /// channel's cache of the exchange it publishes to) know to look it up again.
    deleted: std::sync::atomic::AtomicBool,
}

impl Exchange {
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Where messages this exchange cannot route go, if anywhere.
    pub fn alternate(&self) -> Option<ByteString> {
        self.alternate.read().clone()
    }

    /// Applies a policy, or none: its `alternate-exchange` counts unless the exchange's own
    /// argument names one.
    pub fn apply_policy(&self, policy: Option<&crate::policy::Policy>) {
        let own = self
            .arguments
            .get(ALTERNATE_EXCHANGE)
            .and_then(FieldValue::as_str)
            .map(ByteString::from);
        let from_policy = policy
            .and_then(|p| p.definition.get(ALTERNATE_EXCHANGE))
            .and_then(FieldValue::as_str)
            .map(ByteString::from);
        *self.alternate.write() = own.or(from_policy);
        *self.policy.write() = policy.map(|p| p.name.clone());
    }

    /// The name of the policy that applies to the exchange, if one does.
    pub fn policy(&self) -> Option<ByteString> {
        self.policy.read().clone()
    }

    /// Whether this is the first time its alternate exchange was found missing.
    pub(crate) fn first_missing_alternate(&self) -> bool {
        !self
            .alternate_missing_logged
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(delayed) = &self.delayed {
            delayed.destroy();
        }
    }

    pub fn new(
        name: ByteString,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        // A delayed exchange routes as its x-delayed-type (checked at declare).
        let routing_kind = match kind {
            ExchangeKind::Delayed => arguments
                .get(DELAYED_TYPE)
                .and_then(FieldValue::as_str)
                .and_then(ExchangeKind::parse)
                .filter(|k| *k != ExchangeKind::Delayed)
                .unwrap_or(ExchangeKind::Direct),
            other => other,
        };
        let router = match routing_kind {
            ExchangeKind::Direct | ExchangeKind::Delayed => Router::Direct(HashMap::new()),
            ExchangeKind::Fanout => Router::Fanout,
            ExchangeKind::Topic => Router::Topic(TopicTrie::new()),
            ExchangeKind::Headers => Router::Headers,
            ExchangeKind::ConsistentHash => Router::ConsistentHash(Default::default()),
        };
        let delayed =
            (kind == ExchangeKind::Delayed).then(|| Arc::new(DelayedMessages::new(name.clone())));
        // Bad values are refused at declare (406, as RabbitMQ does).
        let hash_on = match routing_kind {
            ExchangeKind::ConsistentHash => {
                HashOn::from_arguments(&arguments).unwrap_or(HashOn::RoutingKey)
            }
            _ => HashOn::RoutingKey,
        };
        // A value that is not a string is refused at declare (406, as RabbitMQ does).
        let alternate = arguments
            .get(ALTERNATE_EXCHANGE)
            .and_then(FieldValue::as_str)
            .map(ByteString::from);
        Exchange {
            name,
            kind,
            routing_kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate: RwLock::new(alternate),
            policy: RwLock::new(None),
            hash_on,
            delayed,
            alternate_missing_logged: std::sync::atomic::AtomicBool::new(false),
            bindings: RwLock::new(Bindings {
                list: Vec::new(),
                router,
            }),
            deleted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Adds a binding; binding the same (destination, key, arguments) twice is a no-op.
    /// Returns whether the binding is new.
    pub fn bind(&self, binding: Binding) -> bool {
        let mut bindings = self.bindings.write();
        if bindings.list.contains(&binding) {
            return false;
        }
        match &mut bindings.router {
            Router::Direct(map) => {
                let dests = map.entry(binding.routing_key.clone()).or_default();
                if !dests.contains(&binding.destination) {
                    dests.push(binding.destination.clone());
                }
            }
            Router::Topic(trie) => {
                trie.bind(&binding.routing_key, binding.destination.clone());
            }
            Router::Fanout | Router::Headers | Router::ConsistentHash(_) => {}
        }
        bindings.list.push(binding);
        bindings.rebuild_ring();
        true
    }

    /// Removes a binding; returns whether it existed.
    pub fn unbind(&self, binding: &Binding) -> bool {
        let mut bindings = self.bindings.write();
        let Some(at) = bindings.list.iter().position(|b| b == binding) else {
            return false;
        };
        bindings.list.remove(at);
        // The index ignores arguments: only drop its entry when no twin binding remains.
        let twin_left = bindings
            .list
            .iter()
            .any(|b| b.destination == binding.destination && b.routing_key == binding.routing_key);
        if !twin_left {
            match &mut bindings.router {
                Router::Direct(map) => {
                    if let Some(dests) = map.get_mut(&binding.routing_key) {
                        dests.retain(|d| d != &binding.destination);
                        if dests.is_empty() {
                            map.remove(&binding.routing_key);
                        }
                    }
                }
                Router::Topic(trie) => {
                    trie.unbind(&binding.routing_key, &binding.destination);
                }
                Router::Fanout | Router::Headers | Router::ConsistentHash(_) => {}
            }
        }
        bindings.rebuild_ring();
        true
    }

    /// Removes every binding leading to `destination`; returns how many there were.
    pub fn unbind_destination(&self, destination: &Destination) -> usize {
        let mut bindings = self.bindings.write();
        let before = bindings.list.len();
        bindings.list.retain(|b| &b.destination != destination);
        let removed = before - bindings.list.len();
        if removed > 0 {
            match &mut bindings.router {
                Router::Direct(map) => map.retain(|_, dests| {
                    dests.retain(|d| d != destination);
                    !dests.is_empty()
                }),
                Router::Topic(trie) => trie.remove_destination(&|d| d == destination),
                Router::Fanout | Router::Headers | Router::ConsistentHash(_) => {}
            }
            bindings.rebuild_ring();
        }
        removed
    }

    pub fn has_binding(&self, binding: &Binding) -> bool {
        self.bindings.read().list.contains(binding)
    }

    pub fn has_bindings(&self) -> bool {
        !self.bindings.read().list.is_empty()
    }

    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.read().list.clone()
    }

    /// Calls `found` with each destination a message goes to, routed by `routing_key` (its
    /// own, or one of its CC/BCC keys) and its headers. The same destination may be reported more than once; the caller deduplicates.
    /// `headers` is asked only by a headers exchange: most messages are routed without
    /// their headers ever being decoded.
    pub fn route<'h>(
        &self,
        message: &Message,
        routing_key: &str,
        headers: &dyn Fn() -> Option<&'h FieldTable>,
        found: &mut impl FnMut(&Destination),
    ) {
        let bindings = self.bindings.read();
        match &bindings.router {
            Router::Direct(map) => {
                if let Some(dests) = map.get(routing_key) {
                    dests.iter().for_each(found);
                }
            }
            Router::Fanout => bindings.list.iter().for_each(|b| found(&b.destination)),
            Router::Topic(trie) => trie.route(routing_key, found),
            Router::Headers => {
                let headers = headers();
                bindings
                    .list
                    .iter()
                    .filter(|b| headers_match(&b.arguments, headers))
                    .for_each(|b| found(&b.destination))
            }
            Router::ConsistentHash(ring) => {
                if let Some(destination) = ring.pick(&self.hash_on, message, headers) {
                    found(destination);
                }
            }
        }
    }
}

impl Bindings {
    /// A consistent-hash exchange's buckets follow its binding list.
    fn rebuild_ring(&mut self) {
        if let Router::ConsistentHash(ring) = &mut self.router {
            ring.rebuild(self.list.iter().map(|b| (&*b.routing_key, &b.destination)));
        }
    }
}
