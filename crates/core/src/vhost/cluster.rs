//! A vhost's exchanges, queues and bindings on a cluster node. A client's declare, delete,
//! bind or unbind is checked here against what this node knows once it caught up with the
//! cluster (the same checks and texts as on a single node), then proposed; the cluster
//! commits it and every node makes it, in log order, through [`VHost::apply_topology`],
//! which checks it again against the state every node shares, so that a change that lost
//! a race (the queue declared meanwhile on another node, differently) is refused the same
//! way everywhere.
//!
//! A queue lives on the node that declared it (RabbitMQ's `client-local` locator); the
//! other nodes keep a [`RemoteQueue`] record of it, so that bindings and declares see it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use wharf_amqp::ByteString;
use wharf_store::{BindingDef, Change, DestinationKind, ExchangeDef, QueueDef};

use super::exchanges::ExchangeDeclare;
use super::queues::{QueueDeclare, QueueDeclared};
use super::{generated_queue_name, VHost};
use base64::Engine;

use crate::cluster::{Cluster, GotMessage, QueueAnswer, QueueRequest};
use crate::durability;
use crate::error::{Error, ErrorKind, Result};
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::message::Message;
use crate::queue::consumer::DeliveryTarget;
use crate::queue::remote::{RemoteGot, RemoteQueue, Settle, Subscription};
use crate::queue::{locked_queue, ConnectionId, QueueOptions};
use crate::queue_arguments::Locator;

impl VHost {
    /// A client's exchange.declare on a cluster node.
    pub(super) fn propose_exchange(
        &self,
        cluster: &dyn Cluster,
        declare: ExchangeDeclare,
        kind: ExchangeKind,
        may_create: impl FnOnce() -> Result<()>,
    ) -> Result<Arc<Exchange>> {
        cluster.sync()?;
        if let Ok(existing) = self.exchange(&declare.name) {
            self.check_exchange_equivalent(&existing, &declare, kind)?;
            return Ok(existing);
        }
        if declare.name.starts_with("amq.") {
            return Err(Error::access_refused(format_args!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                declare.name
            )));
        }
        may_create()?;
        cluster.commit(Change::PutExchange(self.exchange_def(&declare, kind)))?;
        self.exchange(&declare.name)
    }

    /// A client's exchange.delete on a cluster node.
    pub(super) fn propose_exchange_deletion(
        &self,
        cluster: &dyn Cluster,
        name: &str,
        if_unused: bool,
    ) -> Result<()> {
        cluster.sync()?;
        match self.exchange(name) {
            Err(_) => Ok(()),
            Ok(exchange) if if_unused && exchange.has_bindings() => Err(self.exchange_in_use(name)),
            Ok(_) => cluster.commit(Change::DeleteExchange {
                vhost: self.name.to_string(),
                name: name.to_string(),
            }),
        }
    }

    /// A client's queue.declare on a cluster node (not passive: the caller answered those).
    pub(super) fn propose_queue(
        &self,
        cluster: &dyn Cluster,
        declare: QueueDeclare,
        connection: ConnectionId,
        may_create: impl FnOnce() -> Result<()>,
    ) -> Result<QueueDeclared> {
        cluster.sync()?;
        if let Ok(existing) = self.queue(&declare.name) {
            existing.check_owner(connection)?;
            self.check_queue_equivalent(&declare, &existing.options)?;
            return Ok(self.declared(existing));
        }
        if let Some(remote) = self.remote_queue(&declare.name) {
            remote.check_owner(connection)?;
            self.check_queue_equivalent(&declare, &remote.options)?;
            return self.declared_remote(&remote);
        }
        may_create()?;
        let name = if declare.name.is_empty() {
            generated_queue_name()
        } else {
            declare.name
        };
        self.check_queue_limit(&name, self.queue_total())?;
        let options = QueueOptions {
            durable: declare.durable,
            exclusive_owner: declare.exclusive.then_some(connection),
            auto_delete: declare.auto_delete,
            arguments: declare.arguments,
        };
        if crate::queue_arguments::queue_type(&options.arguments) == "quorum" {
            let quorum = self.place_replicas(cluster, &name, &options)?;
            let mut def =
                self.queue_def(&name, &options, quorum.members.first().map(String::as_str));
            def.quorum = Some(quorum);
            cluster.commit(Change::PutQueue(def))?;
            // Answered once its group has a leader, so that the client's next publish
            // or consume finds one.
            let remote = self
                .remote_queue(&name)
                .ok_or_else(|| self.no_queue(&name))?;
            if let Err(error) = self.ask_home(cluster, &remote, QueueRequest::Counts) {
                tracing::warn!(queue = %name, %error, "a new quorum queue has no leader yet");
            }
            return Ok(QueueDeclared {
                name,
                queue: None,
                message_count: 0,
                consumer_count: 0,
            });
        }
        let home = self.place_queue(cluster, &name, &options)?;
        let def = self.queue_def(&name, &options, Some(home.as_str()));
        cluster.commit(Change::PutQueue(def))?;
        match self.queue(&name) {
            Ok(queue) => Ok(self.declared(queue)),
            // Placed on another node: new there, empty.
            Err(_) => Ok(QueueDeclared {
                name,
                queue: None,
                message_count: 0,
                consumer_count: 0,
            }),
        }
    }

    /// The node a new queue goes to, as its locator says (see [`Locator`]): this node,
    /// or, balanced, the member that is up and holds the fewest of the vhost's queues
    /// (this node on a tie). An exclusive queue stays with its connection.
    fn place_queue(
        &self,
        cluster: &dyn Cluster,
        name: &str,
        options: &QueueOptions,
    ) -> Result<String> {
        let here = self
            .cluster
            .member()
            .ok_or_else(|| Error::new(ErrorKind::InternalError, "a cluster node without a name"))?
            .to_string();
        let policy = self.policy_for_queue(name);
        let locator = Locator::of(&options.arguments, policy.as_ref().map(|p| &p.definition))
            .map_err(|error| Error::precondition(error.describe(name, &self.name)))?;
        if locator == Locator::ClientLocal || options.exclusive_owner.is_some() {
            return Ok(here);
        }
        let mut held: std::collections::HashMap<String, usize> = cluster
            .members_up()
            .into_iter()
            .map(|member| (member, 0))
            .collect();
        held.entry(here.clone()).or_default();
        *held.get_mut(&here).expect("entered") += self.queues.read().len();
        for remote in self.remote_queues() {
            if let Some(count) = held.get_mut(&remote.home()) {
                *count += 1;
            }
        }
        let fewest = held
            .into_iter()
            .min_by(|(a, count_a), (b, count_b)| {
                count_a
                    .cmp(count_b)
                    .then((*a != here).cmp(&(*b != here)))
                    .then(a.cmp(b))
            })
            .map(|(member, _)| member);
        Ok(fewest.unwrap_or(here))
    }

    /// A client's or an administrator's queue.delete on a cluster node: the number of
    /// ready messages the queue held, or None when there was no queue.
    pub(super) fn propose_queue_deletion(
        &self,
        cluster: &dyn Cluster,
        name: &str,
        connection: Option<ConnectionId>,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<Option<u32>> {
        cluster.sync()?;
        let count = if let Ok(queue) = self.queue(name) {
            if let Some(connection) = connection {
                queue.check_owner(connection)?;
            }
            queue.check_deletable(if_unused, if_empty)?;
            queue.message_count()
        } else if let Some(remote) = self.remote_queue(name) {
            if let Some(connection) = connection {
                remote.check_owner(connection)?;
            }
            // Its node checks and deletes it; a node that is down cannot check, but a
            // delete without conditions goes through without it.
            let request = QueueRequest::Delete {
                if_unused,
                if_empty,
            };
            match self.ask_home(cluster, &remote, request) {
                Ok(QueueAnswer::Count(count)) => return Ok(Some(count)),
                Ok(other) => return Err(unexpected(&remote, other)),
                Err(error) if error.kind == ErrorKind::NotFound && !if_unused && !if_empty => 0,
                Err(error) => return Err(error),
            }
        } else {
            return Ok(None);
        };
        cluster.commit(Change::DeleteQueue {
            vhost: self.name.to_string(),
            name: name.to_string(),
        })?;
        Ok(Some(count))
    }

    /// Asks a queue's node about it; its refusal comes back as this node's, and a node
    /// that cannot be reached is RabbitMQ's 404 for a queue whose node is down.
    fn ask_home(
        &self,
        cluster: &dyn Cluster,
        remote: &RemoteQueue,
        request: QueueRequest,
    ) -> Result<QueueAnswer> {
        // A quorum queue's leader may be moving: asked again until one answers.
        let deadline = std::time::Instant::now() + crate::cluster::LEADER_WAIT;
        loop {
            let answer = cluster
                .ask(&remote.home(), &self.name, &remote.name, request)
                .and_then(|answer| match answer {
                    QueueAnswer::Refused { kind, detail } => Err(Error::new(
                        ErrorKind::from_name(&kind).unwrap_or(ErrorKind::InternalError),
                        detail,
                    )),
                    answer => Ok(answer),
                });
            match answer {
                Err(error)
                    if remote.quorum
                        && matches!(error.kind, ErrorKind::NotLeader | ErrorKind::NotFound)
                        && !remote.is_deleted()
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// A declare-ok for another node's queue, with its counts from there.
    pub(super) fn declared_remote(&self, remote: &RemoteQueue) -> Result<QueueDeclared> {
        let cluster = self
            .cluster
            .get()
            .ok_or_else(|| remote.out_of_reach("declaring"))?;
        match self.ask_home(cluster.as_ref(), remote, QueueRequest::Counts)? {
            QueueAnswer::Counts {
                messages,
                consumers,
            } => {
                self.history.lock().declared += 1;
                Ok(QueueDeclared {
                    name: remote.name.clone(),
                    queue: None,
                    message_count: messages,
                    consumer_count: consumers,
                })
            }
            other => Err(unexpected(remote, other)),
        }
    }

    pub(super) fn purge_remote(&self, remote: &RemoteQueue) -> Result<u32> {
        let cluster = self
            .cluster
            .get()
            .ok_or_else(|| remote.out_of_reach("purging"))?;
        match self.ask_home(cluster.as_ref(), remote, QueueRequest::Purge)? {
            QueueAnswer::Count(count) => Ok(count),
            other => Err(unexpected(remote, other)),
        }
    }

    /// basic.get from another node's queue. Without a `getter`, acknowledged at once;
    /// with the channel's getter for that queue (see [`VHost::remote_getter`]), the
    /// message is held there until the channel settles it through the getter.
    pub fn get_remote(
        &self,
        name: &str,
        connection: ConnectionId,
        getter: Option<&Subscription>,
    ) -> Result<Option<RemoteGot>> {
        let (remote, cluster) = self.reachable(name, connection)?;
        let request = QueueRequest::Get {
            ack_key: getter.map(|getter| getter.key),
        };
        let got = match self.ask_home(cluster.as_ref(), &remote, request)? {
            QueueAnswer::Got(got) => got,
            other => return Err(unexpected(&remote, other)),
        };
        got.map(|got| remote_got(&remote, got)).transpose()
    }

    /// The management API's get on another node's queue: up to `count` messages (all
    /// with None), taken there and settled together as `then` says.
    pub fn inspect_remote(
        &self,
        name: &str,
        connection: ConnectionId,
        count: Option<u32>,
        then: Settle,
    ) -> Result<Vec<RemoteGot>> {
        let (remote, cluster) = self.reachable(name, connection)?;
        match self.ask_home(
            cluster.as_ref(),
            &remote,
            QueueRequest::Inspect { count, then },
        )? {
            QueueAnswer::Inspected(messages) => messages
                .into_iter()
                .map(|got| remote_got(&remote, got))
                .collect(),
            other => Err(unexpected(&remote, other)),
        }
    }

    /// Another node's queue that `connection` may take messages from, and the cluster
    /// to ask its node through.
    fn reachable(
        &self,
        name: &str,
        connection: ConnectionId,
    ) -> Result<(Arc<RemoteQueue>, &Arc<dyn Cluster>)> {
        let remote = self.remote_queue(name).ok_or_else(|| self.no_queue(name))?;
        remote.check_owner(connection)?;
        let cluster = self
            .cluster
            .get()
            .ok_or_else(|| remote.out_of_reach("getting from"))?;
        Ok((remote, cluster))
    }

    /// What a channel's gets with acknowledgements from another node's queue are
    /// settled through (one per channel and queue; it delivers nothing).
    pub fn remote_getter(
        &self,
        name: &str,
        channel: Weak<dyn DeliveryTarget>,
    ) -> Result<Arc<Subscription>> {
        let remote = self.remote_queue(name).ok_or_else(|| self.no_queue(name))?;
        let cluster = self
            .cluster
            .get()
            .ok_or_else(|| remote.out_of_reach("getting from"))?
            .clone();
        let key = self.consuming.next_key.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Arc::new(Subscription::new(
            key,
            &remote,
            ByteString::default(),
            false,
            channel,
            cluster,
        )))
    }

    /// A client's bind (`bind` true) or unbind on a cluster node; binding what is bound,
    /// and unbinding what is not, change nothing.
    pub(super) fn propose_binding(
        &self,
        cluster: &dyn Cluster,
        source: &Exchange,
        binding: &Binding,
        bind: bool,
    ) -> Result<()> {
        if source.has_binding(binding) == bind {
            return Ok(());
        }
        let def = durability::binding_def(&self.name, source, binding);
        cluster.commit(if bind {
            Change::PutBinding(def)
        } else {
            Change::DeleteBinding(def)
        })
    }

    /// Makes a committed change to this vhost's exchanges, queues or bindings, checked
    /// against the state every node shares (deterministic: every node decides the same).
    /// Other changes are not this function's and are refused.
    pub(crate) fn apply_topology(&self, change: &Change) -> Result<()> {
        match change {
            Change::PutExchange(def) => {
                let declare = exchange_declare(def);
                let kind = self.exchange_kind(&declare)?;
                self.make_exchange(declare, kind, || Ok(())).map(drop)
            }
            Change::DeleteExchange { name, .. } => {
                self.check_deletable_exchange(name)?;
                self.remove_exchange(name, false)
            }
            Change::PutQueue(def) => self.apply_queue(def),
            Change::DeleteQueue { name, .. } if self.remove_quorum_queue(name) => {
                if let Some(remote) = self.remote_queues.write().remove(name.as_str()) {
                    if self.keeps(false) {
                        self.record(|| change.clone())?;
                    }
                    remote.mark_deleted();
                    self.remove_bindings_to(&Destination::Remote(remote));
                }
                Ok(())
            }
            Change::MoveQueue {
                name, group, home, ..
            } => {
                if self.keeps(false) {
                    self.record(|| change.clone())?;
                }
                self.move_quorum_queue(name, *group, home);
                Ok(())
            }
            Change::SetQueueMembers {
                name,
                group,
                members,
                ..
            } => {
                if self.keeps(false) {
                    self.record(|| change.clone())?;
                }
                self.set_quorum_members(name, *group, members);
                Ok(())
            }
            Change::DeleteQueue { name, .. } => {
                if let Some(queue) = self.remove_queue(name, None, false, false)? {
                    self.finish_queue_deletion(queue);
                } else if let Some(remote) = self.remote_queues.write().remove(name.as_str()) {
                    if self.keeps(false) {
                        self.record(|| change.clone())?;
                    }
                    remote.mark_deleted();
                    self.remove_bindings_to(&Destination::Remote(remote));
                }
                Ok(())
            }
            Change::PutBinding(def) => {
                let (source, destination) = self.binding_ends(def)?;
                let arguments = durability::decode_arguments(&def.arguments);
                self.bind(
                    &source,
                    destination,
                    def.routing_key.as_str().into(),
                    arguments,
                )
            }
            Change::DeleteBinding(def) => {
                if let Ok((source, destination)) = self.binding_ends(def) {
                    let arguments = durability::decode_arguments(&def.arguments);
                    self.unbind(
                        &source,
                        destination,
                        def.routing_key.as_str().into(),
                        arguments,
                    );
                }
                Ok(())
            }
            other => Err(Error::precondition(format_args!(
                "not a change to a vhost's exchanges, queues or bindings: {other:?}"
            ))),
        }
    }

    fn apply_queue(&self, def: &QueueDef) -> Result<()> {
        let options = QueueOptions {
            durable: def.durable,
            exclusive_owner: def.exclusive_owner,
            auto_delete: def.auto_delete,
            arguments: durability::decode_arguments(&def.arguments),
        };
        let name = ByteString::from(def.name.as_str());
        let declare = QueueDeclare {
            name: name.clone(),
            durable: def.durable,
            exclusive: def.exclusive_owner.is_some(),
            auto_delete: def.auto_delete,
            arguments: options.arguments.clone(),
            ..QueueDeclare::default()
        };
        // Declared on two nodes at once: the first committed stays, the second is refused
        // unless it asked for the same queue (its home does not matter).
        let existing = self
            .queue(&name)
            .map(|q| q.options.clone())
            .ok()
            .or_else(|| self.remote_queue(&name).map(|q| q.options.clone()));
        if let Some(existing) = existing {
            if existing.exclusive_owner.is_some() && existing.exclusive_owner != def.exclusive_owner
            {
                return Err(locked_queue(&name, &self.name));
            }
            return self.check_queue_equivalent(&declare, &existing);
        }
        self.check_queue_limit(&name, self.queue_total())?;
        if let Some(quorum) = &def.quorum {
            return self.apply_quorum_queue(def, quorum, options);
        }
        match &def.home {
            Some(home) if Some(home.as_str()) != self.cluster.member() => {
                if self.keeps(false) {
                    self.record(|| Change::PutQueue(def.clone()))?;
                }
                let remote =
                    RemoteQueue::new(name.clone(), self.name.clone(), home.clone(), options);
                self.remote_queues.write().insert(name, Arc::new(remote));
            }
            _ => {
                let queue = {
                    let mut queues = self.queues.write();
                    self.create_queue(&mut queues, name, options)?
                };
                self.queue_created(&queue);
            }
        }
        Ok(())
    }

    /// The two ends of a stored binding, or why not.
    pub(super) fn binding_ends(&self, def: &BindingDef) -> Result<(Arc<Exchange>, Destination)> {
        let source = self.exchange(&def.source)?;
        let destination = match def.destination_kind {
            DestinationKind::Exchange => Destination::Exchange(self.exchange(&def.destination)?),
            DestinationKind::Queue => match self.queue(&def.destination) {
                Ok(queue) => Destination::Queue(queue),
                Err(missing) => match self.remote_queue(&def.destination) {
                    Some(remote) => Destination::Remote(remote),
                    None => return Err(missing),
                },
            },
        };
        Ok((source, destination))
    }

    /// The queues the cluster says live here but that do not: transient and exclusive
    /// ones, which died with this node's last run. Their deletion is the node's to
    /// propose once it caught up.
    pub fn lost_queues(&self, definitions: &wharf_store::Definitions) -> Vec<String> {
        let Some(here) = self.cluster.member() else {
            return Vec::new();
        };
        definitions
            .queues
            .iter()
            .filter(|q| q.vhost == *self.name && q.home.as_deref() == Some(here))
            .filter(|q| q.quorum.is_none())
            .filter(|q| self.queue(&q.name).is_err())
            .map(|q| q.name.clone())
            .collect()
    }
}

/// An answer of the wrong kind (a node of another build).
fn unexpected(remote: &RemoteQueue, answer: QueueAnswer) -> Error {
    Error::new(
        ErrorKind::InternalError,
        format_args!("node {} answered {answer:?}", remote.home()),
    )
}

/// The declare a stored exchange definition stands for.
pub(super) fn exchange_declare(def: &ExchangeDef) -> ExchangeDeclare {
    ExchangeDeclare {
        name: def.name.as_str().into(),
        kind: def.kind.as_str().into(),
        passive: false,
        durable: def.durable,
        auto_delete: def.auto_delete,
        internal: def.internal,
        arguments: durability::decode_arguments(&def.arguments),
    }
}

/// A message another node's queue handed over, read.
fn remote_got(remote: &RemoteQueue, got: GotMessage) -> Result<RemoteGot> {
    let message = base64::engine::general_purpose::STANDARD
        .decode(&got.record)
        .ok()
        .and_then(|bytes| Message::decode_record(bytes).map(|(message, _)| message))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InternalError,
                format_args!("a message from node {} does not read", remote.home()),
            )
        })?;
    Ok(RemoteGot {
        message,
        offset: got.offset,
        redelivered: got.redelivered,
        message_count: got.message_count,
    })
}
