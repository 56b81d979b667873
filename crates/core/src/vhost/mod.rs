//! A virtual host: its exchanges and queues, and the operations of AMQP's exchange and
//! queue classes on them. The vhost owns both maps; callers hold `Arc`s to the objects,
//! whose own locks guard their contents. Routing takes only read locks.

mod bindings;
mod cluster;
mod dead_lettering;
mod exchanges;
mod policies;
mod publishing;
mod queues;
pub mod quorum;
mod restore;
mod routing;

pub use self::exchanges::ExchangeDeclare;
pub use self::publishing::{same_name, Published, RouteCache};
pub use self::queues::{QueueDeclare, QueueDeclared};
pub use self::routing::Routes;

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use wharf_amqp::{ByteString, FieldTable, FieldValue};
use wharf_store::Change;

use crate::durability::Durability;
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::{Exchange, ExchangeKind, ALTERNATE_EXCHANGE};
use crate::policy::Policy;
use crate::queue::dead_letter::DeadLetter;
use crate::queue::remote::RemoteQueue;
use crate::queue::{ConnectionId, Queue, QueueHost, Window};
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

#[derive(Debug)]
pub struct VHost {
    pub name: ByteString,
    exchanges: RwLock<HashMap<ByteString, Arc<Exchange>>>,
    queues: RwLock<HashMap<ByteString, Arc<Queue>>>,
    /// On a cluster, the queues other nodes hold. A name is in one map or the other.
    remote_queues: RwLock<HashMap<ByteString, Arc<RemoteQueue>>>,
    /// On a cluster, the quorum queues (each also in `remote_queues`, whose record
    /// routing and consumers use).
    quorum_queues: RwLock<HashMap<ByteString, Arc<crate::quorum_queue::QuorumQueue>>>,
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
    /// Queues declared, created and deleted, and what deleted queues had counted.
    history: parking_lot::Mutex<QueueHistory>,
    /// The node's cluster, if it belongs to one: replicated changes go through it.
    pub(crate) cluster: crate::cluster::ClusterSlot,
    /// The node's consuming across the cluster (its registry of subscriptions).
    pub(crate) consuming: Arc<crate::consuming::RemoteConsuming>,
}

/// What a vhost's queues did, including those deleted since (RabbitMQ's churn and global
/// counters outlive the queues they count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueHistory {
    /// queue.declare calls that succeeded (passive ones too), as RabbitMQ counts them.
    pub declared: u64,
    pub created: u64,
    pub deleted: u64,
    /// The counters of the queues deleted.
    pub retired: crate::queue::QueueCounters,
}

impl QueueHistory {
    pub fn add(&mut self, other: &QueueHistory) {
        self.declared += other.declared;
        self.created += other.created;
        self.deleted += other.deleted;
        self.retired.add(&other.retired);
    }
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

/// An argument in an inequivalence refusal, as RabbitMQ words it: a value alone when
/// both sides have one (`'20'`), else `none` or `the value '20' of type 'signedint'`.
fn describe(value: Option<&FieldValue>, both: bool) -> String {
    let Some(value) = value else {
        return "none".to_string();
    };
    let shown = match (value.as_str(), value.as_i64()) {
        (Some(text), _) => text.to_string(),
        (None, Some(number)) => number.to_string(),
        _ => format!("{value:?}"),
    };
    if both {
        format!("'{shown}'")
    } else {
        format!(
            "the value '{shown}' of type '{}'",
            crate::queue_arguments::type_name(value)
        )
    }
}

/// Queue and exchange arguments must match those of the existing object. RabbitMQ
/// compares the arguments it understands; Wharf compares every `x-` argument the same way
/// (a queue type left out is the classic type, as in RabbitMQ).
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
        if a == b {
            continue;
        }
        let classic = |v: Option<&FieldValue>| v.and_then(FieldValue::as_str) == Some("classic");
        if &**key == crate::queue_arguments::QUEUE_TYPE
            && ((a.is_none() && classic(b)) || (b.is_none() && classic(a)))
        {
            continue;
        }
        let both = a.is_some() && b.is_some();
        return Err(Error::precondition(format_args!(
            "inequivalent arg '{key}' for {what} '{name}' in vhost '{vhost}': received {} but \
             current is {}",
            describe(a, both),
            describe(b, both)
        )));
    }
    Ok(())
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
        Self::new_in(
            name,
            durability,
            queue_window,
            timers,
            Default::default(),
            Default::default(),
        )
    }

    /// A vhost of a broker that may belong to a cluster.
    pub(crate) fn new_in(
        name: impl Into<ByteString>,
        durability: Option<Arc<Durability>>,
        queue_window: Window,
        timers: Arc<Timers>,
        cluster: crate::cluster::ClusterSlot,
        consuming: Arc<crate::consuming::RemoteConsuming>,
    ) -> Arc<Self> {
        let vhost = Arc::new_cyclic(|this| VHost {
            name: name.into(),
            exchanges: RwLock::new(HashMap::new()),
            queues: RwLock::new(HashMap::new()),
            remote_queues: RwLock::new(HashMap::new()),
            quorum_queues: RwLock::new(HashMap::new()),
            durability,
            queue_window,
            timers,
            replies: Default::default(),
            policies: RwLock::new(Vec::new()),
            this: this.clone(),
            metadata: RwLock::default(),
            limits: RwLock::default(),
            history: Default::default(),
            cluster,
            consuming,
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

    /// What the vhost's queues did (see [`QueueHistory`]).
    pub fn queue_history(&self) -> QueueHistory {
        *self.history.lock()
    }

    /// The history with the live queues' counters added in `retired`: everything the
    /// vhost's queues counted, read at once.
    pub fn queue_totals(&self) -> QueueHistory {
        let (queues, mut history) = self.queues_and_history();
        for (_, stats) in &queues {
            history.retired.add(&stats.counters);
        }
        history
    }

    /// Whether an object's definition is written to the definitions store: a durable one's;
    /// on a cluster node every one's (the store mirrors the cluster's definitions, which
    /// hold transient objects too).
    fn keeps(&self, durable: bool) -> bool {
        durable || self.cluster.member().is_some()
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
    /// Another node's queue (on a cluster) is refused as out of reach, after the same
    /// owner check.
    pub fn queue_for(&self, name: &str, connection: ConnectionId) -> Result<Arc<Queue>> {
        match self.queue(name) {
            Ok(queue) => {
                queue.check_owner(connection)?;
                Ok(queue)
            }
            Err(missing) => match self.remote_queue(name) {
                Some(remote) => {
                    remote.check_owner(connection)?;
                    Err(remote.out_of_reach("using"))
                }
                None => Err(missing),
            },
        }
    }

    /// Whether the vhost has a queue `name`, on any node.
    pub fn has_queue(&self, name: &str) -> bool {
        self.queues.read().contains_key(name) || self.remote_queues.read().contains_key(name)
    }

    /// Another node's queue, on a cluster.
    pub fn remote_queue(&self, name: &str) -> Option<Arc<RemoteQueue>> {
        self.remote_queues.read().get(name).cloned()
    }

    /// The queues other nodes hold, on a cluster.
    /// This node's name, when it is a cluster member.
    pub fn member(&self) -> Option<&str> {
        self.cluster.member()
    }

    /// The names of every queue of the vhost, this node's and (on a cluster) the
    /// others', sorted.
    pub fn queue_names(&self) -> Vec<ByteString> {
        let mut names: Vec<ByteString> = self.queues.read().keys().cloned().collect();
        names.extend(self.remote_queues.read().keys().cloned());
        names.sort();
        names
    }

    pub fn remote_queues(&self) -> Vec<Arc<RemoteQueue>> {
        self.remote_queues.read().values().cloned().collect()
    }

    /// How many queues the vhost has, on every node.
    fn queue_total(&self) -> usize {
        self.queues.read().len() + self.remote_queues.read().len()
    }

    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.read().values().cloned().collect()
    }

    /// The queues this node delivers from: its own, and the quorum queues it leads
    /// (what its listings, figures and policies cover; a quorum queue is in
    /// [`VHost::remote_queues`] too, as every node's record of it).
    pub fn served_queues(&self) -> Vec<Arc<Queue>> {
        let mut queues = self.queues();
        queues.extend(
            self.quorum_queues
                .read()
                .values()
                .filter_map(|quorum| quorum.engine()),
        );
        queues
    }

    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.read().values().cloned().collect()
    }

    /// Empties a deleted vhost: every queue is deleted with its messages (their logs
    /// removed from disk) and its consumers told, every exchange and policy goes. The
    /// store forgot them already (a deleted vhost takes its definitions with it).
    pub(crate) fn destroy(&self) {
        let queues: Vec<Arc<Queue>> = self.queues.write().drain().map(|(_, q)| q).collect();
        for queue in queues {
            queue.mark_deleted();
        }
        for (_, queue) in self.remote_queues.write().drain() {
            queue.mark_deleted();
        }
        let quorum: Vec<ByteString> = self.quorum_queues.read().keys().cloned().collect();
        for name in quorum {
            self.remove_quorum_queue(&name);
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

    fn queue_started(&self, queue: &Arc<Queue>) {
        queue.apply_policy(self.policy_for_queue(&queue.name).as_ref());
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
