//! Consuming across a cluster's nodes. A channel of node B consuming from a queue of node
//! A: B registers a consumer on A's queue (a `RemoteConsumer`, which the queue treats
//! as any consumer); A hands it deliveries up to its credit, pushing each to B, where the
//! channel's [`Subscription`] offers it to the channel; B's acks, nacks, rejects and
//! cancel come back to A, which settles the queue's deliveries as a local channel would
//! and gives the credit back. Only what a consumer holds can be settled through it.
//!
//! If B goes away (its connection to A ends), A requeues every delivery B's consumers
//! held, as it does for a local channel that closes. If A goes away, or the queue is
//! deleted, B's consumers are cancelled (basic.cancel to clients that asked for it).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use base64::Engine;
use wharf_amqp::{ByteString, FieldTable};

use crate::broker::Broker;
use crate::cluster::{ConsumeRequest, ConsumerControl, Pushed};
use crate::consuming::{Held, RemoteConsumer, REMOTE_CREDIT_DEFAULT};
use crate::error::{Error, Result};
use crate::queue::consumer::{Consumer, DeliveryTarget};
use crate::queue::remote::Subscription;
use crate::queue::{ConnectionId, ConsumerRemoved};
use crate::vhost::VHost;

impl VHost {
    /// basic.consume on another node's queue: registers the consumer there for `channel`
    /// (whose consumer `tag` it is), and answers the subscription its deliveries come
    /// through.
    #[allow(clippy::too_many_arguments)]
    pub fn consume_remote(
        &self,
        name: &str,
        connection: ConnectionId,
        tag: ByteString,
        no_ack: bool,
        exclusive: bool,
        arguments: &FieldTable,
        prefetch: u16,
        channel: Weak<dyn DeliveryTarget>,
    ) -> Result<Arc<Subscription>> {
        let remote = self.remote_queue(name).ok_or_else(|| {
            Error::not_found(format_args!("no queue '{name}' in vhost '{}'", self.name))
        })?;
        remote.check_owner(connection)?;
        let cluster = self
            .cluster
            .get()
            .ok_or_else(|| remote.out_of_reach("consuming from"))?
            .clone();
        let consuming = &self.consuming;
        let key = consuming.next_key.fetch_add(1, Ordering::Relaxed) + 1;
        let subscription = Arc::new(Subscription::new(
            key,
            &remote,
            tag.clone(),
            no_ack,
            channel,
            cluster.clone(),
        ));
        // Before asking: the first deliveries may come before the answer.
        {
            let mut subscriptions = consuming.subscriptions.lock();
            if key.is_multiple_of(64) {
                // Those whose channels let them go.
                subscriptions.retain(|_, weak| weak.strong_count() > 0);
            }
            subscriptions.insert(key, Arc::downgrade(&subscription));
        }
        let credit = match (no_ack, prefetch) {
            (false, prefetch) if prefetch > 0 => u32::from(prefetch),
            _ => REMOTE_CREDIT_DEFAULT,
        };
        let request = ConsumeRequest {
            vhost: self.name.to_string(),
            queue: name.to_string(),
            key,
            consumer_tag: tag.to_string(),
            no_ack,
            exclusive,
            arguments: base64::engine::general_purpose::STANDARD
                .encode(crate::durability::encode_arguments(arguments)),
            credit,
        };
        subscription.set_request(request.clone());
        let registered = if remote.quorum {
            self.consume_at_leader(cluster.as_ref(), &remote, &subscription, request)
        } else {
            cluster.consume(&remote.home(), request)
        };
        if let Err(error) = registered {
            consuming.subscriptions.lock().remove(&key);
            return Err(error);
        }
        Ok(subscription)
    }
}

impl Broker {
    /// Another node's channel consumes from a queue of this node.
    pub fn serve_consume(&self, peer: &str, request: ConsumeRequest) -> Result<()> {
        let cluster = self
            .cluster
            .get()
            .ok_or_else(|| Error::not_found("this node is not a cluster member"))?
            .clone();
        let vhost = self.vhost(&request.vhost).ok_or_else(|| {
            Error::not_found(format_args!(
                "Virtual host '{}' does not exist",
                request.vhost
            ))
        })?;
        let queue = vhost.served_queue(&request.queue)?;
        let arguments = base64::engine::general_purpose::STANDARD
            .decode(&request.arguments)
            .map(|bytes| crate::durability::decode_arguments(&bytes))
            .unwrap_or_default();
        let consumer = Arc::new(RemoteConsumer {
            peer: peer.to_string(),
            key: request.key,
            no_ack: request.no_ack,
            credit: request.credit.max(1),
            cluster,
            state: Default::default(),
        });
        let tag = ByteString::from(request.consumer_tag.as_str());
        let held = Held {
            queue: queue.clone(),
            tag: tag.clone(),
            consumer: consumer.clone(),
            cancelled: false,
        };
        // Registered first: the queue may deliver (and the peer settle) at once.
        let slot = (peer.to_string(), request.key);
        let consuming = &self.consuming;
        consuming.consumers.lock().insert(slot.clone(), held);
        let target: Arc<dyn DeliveryTarget> = consumer;
        let added = queue.add_consumer(Consumer::new(
            tag,
            request.no_ack,
            request.exclusive,
            arguments,
            target,
        ));
        if let Err(error) = added {
            consuming.consumers.lock().remove(&slot);
            return Err(error);
        }
        Ok(())
    }

    /// basic.get with acknowledgements by another node's channel, whose getter is `key`:
    /// the message is held here, as a consumer's delivery is, until that node settles it
    /// (or goes away, and it is requeued).
    pub(crate) fn get_for_peer(
        &self,
        peer: &str,
        key: u64,
        queue: &Arc<crate::queue::Queue>,
    ) -> Result<Option<crate::queue::GetResult>> {
        let cluster = self
            .cluster
            .get()
            .ok_or_else(|| Error::not_found("this node is not a cluster member"))?
            .clone();
        let getter = self
            .consuming
            .consumers
            .lock()
            .entry((peer.to_string(), key))
            .or_insert_with(|| Held {
                queue: queue.clone(),
                tag: ByteString::default(),
                consumer: Arc::new(RemoteConsumer {
                    peer: peer.to_string(),
                    key,
                    no_ack: false,
                    credit: u32::MAX,
                    cluster,
                    state: Default::default(),
                }),
                cancelled: true,
            })
            .consumer
            .clone();
        Ok(getter.get(queue))
    }

    /// A remote consumer's settlement, credit or cancel, from its node; answers whether
    /// this node still holds the consumer (one released meanwhile changes nothing).
    pub fn serve_control(&self, peer: &str, control: ConsumerControl) -> bool {
        let consuming = &self.consuming;
        let key = match &control {
            ConsumerControl::Ack { key, .. }
            | ConsumerControl::Requeue { key, .. }
            | ConsumerControl::Reject { key, .. }
            | ConsumerControl::Credit { key, .. }
            | ConsumerControl::Cancel { key } => *key,
        };
        let slot = (peer.to_string(), key);
        let Some((queue, consumer, tag)) = consuming
            .consumers
            .lock()
            .get(&slot)
            .map(|h| (h.queue.clone(), h.consumer.clone(), h.tag.clone()))
        else {
            return false;
        };
        // The queue's lock is taken with no consumer lock held (the queue takes the
        // consumer's when it delivers).
        match control {
            ConsumerControl::Ack { offsets, .. } => {
                let held = consumer.settled(&offsets);
                if held.len() < offsets.len() && queue.leads_quorum() {
                    // Deliveries of an earlier leader's: settled where they wait here.
                    let elsewhere: Vec<u64> = offsets
                        .iter()
                        .copied()
                        .filter(|offset| !held.contains(offset))
                        .collect();
                    queue.settle_elsewhere(&elsewhere);
                }
                queue.ack(&held);
            }
            ConsumerControl::Requeue { offsets, .. } => {
                queue.requeue(&consumer.settled(&offsets));
            }
            ConsumerControl::Reject { offsets, .. } => {
                queue.reject(&consumer.settled(&offsets));
            }
            ConsumerControl::Credit { count, .. } => {
                let mut state = consumer.state.lock();
                state.count = state.count.saturating_sub(count);
            }
            ConsumerControl::Cancel { .. } => {
                let was_consumer = consuming
                    .consumers
                    .lock()
                    .get_mut(&slot)
                    .is_some_and(|held| !std::mem::replace(&mut held.cancelled, true));
                let target: Arc<dyn DeliveryTarget> = consumer.clone();
                if was_consumer
                    && queue.remove_consumer(&target, &tag)
                        == ConsumerRemoved::RemovedLastOfAutoDelete
                {
                    self.delete_auto_queue(&queue);
                }
            }
        }
        let mut consumers = consuming.consumers.lock();
        if consumers
            .get(&slot)
            .is_some_and(|h| h.cancelled && (h.consumer.no_ack || h.consumer.holds_nothing()))
        {
            consumers.remove(&slot);
        }
        drop(consumers);
        queue.deliver_ready();
        true
    }

    /// The node `peer` went away (its connection to this node ended), or no longer has
    /// the consumers `keys` (all of them when None): they go, and every delivery they
    /// held is requeued, as for a local channel that closes.
    pub fn release_peer(&self, peer: &str, keys: Option<&[u64]>) {
        let consuming = &self.consuming;
        let released: Vec<Held> = {
            let mut consumers = consuming.consumers.lock();
            let slots: Vec<(String, u64)> = consumers
                .keys()
                .filter(|(from, key)| from == peer && keys.is_none_or(|k| k.contains(key)))
                .cloned()
                .collect();
            slots
                .into_iter()
                .filter_map(|slot| consumers.remove(&slot))
                .collect()
        };
        if !released.is_empty() {
            tracing::info!(
                node = peer,
                consumers = released.len(),
                "a node's consumers released; what they held is requeued"
            );
        }
        for held in released {
            if !held.cancelled {
                let target: Arc<dyn DeliveryTarget> = held.consumer.clone();
                if held.queue.remove_consumer(&target, &held.tag)
                    == ConsumerRemoved::RemovedLastOfAutoDelete
                {
                    self.delete_auto_queue(&held.queue);
                }
            }
            held.queue.requeue(&held.consumer.all_held());
        }
    }

    /// An auto-delete queue whose last consumer (another node's) left.
    fn delete_auto_queue(&self, queue: &Arc<crate::queue::Queue>) {
        if let Some(vhost) = self.vhost(&queue.vhost) {
            vhost.delete_queue_instance(queue);
        }
    }

    /// A quorum queue's consumer whose node let it go follows the queue's leader instead
    /// of being cancelled (see `quorum_consumers`).
    fn follows_leader(&self, subscription: &Arc<Subscription>) -> bool {
        subscription.quorum
            && self
                .vhost(&subscription.vhost)
                .is_some_and(|vhost| vhost.keep_following(subscription))
    }

    /// What the node `home` pushed to this node's subscriptions; answers the keys of
    /// those this node no longer has (the queue's node then lets them go).
    pub fn take_pushed(&self, home: &str, pushed: Vec<Pushed>) -> Vec<u64> {
        let consuming = &self.consuming;
        let mut unknown = Vec::new();
        for item in pushed {
            let key = match &item {
                Pushed::Delivery { key, .. } | Pushed::Cancelled { key } => *key,
            };
            let subscription = consuming
                .subscriptions
                .lock()
                .get(&key)
                .and_then(Weak::upgrade)
                .filter(|s| s.home() == home);
            let Some(subscription) = subscription else {
                if !unknown.contains(&key) {
                    unknown.push(key);
                }
                continue;
            };
            match item {
                Pushed::Delivery {
                    offset,
                    redelivered,
                    message,
                    ..
                } => {
                    if subscription.is_cancelled() {
                        // Cancelled while it was on its way: back to the queue.
                        if !subscription.no_ack {
                            subscription
                                .settle(vec![offset], crate::queue::remote::Settle::Requeue);
                        }
                        continue;
                    }
                    subscription.take(offset, redelivered, message);
                }
                Pushed::Cancelled { .. } => {
                    if self.follows_leader(&subscription) {
                        continue;
                    }
                    consuming.subscriptions.lock().remove(&key);
                    subscription.cancelled_there();
                }
            }
        }
        unknown
    }

    /// The node `home` went away, or answered that it no longer has these consumers:
    /// this node's subscriptions to its queues are cancelled (all of them when `keys` is
    /// None).
    pub fn cancel_subscriptions(&self, home: &str, keys: Option<&[u64]>) {
        let consuming = &self.consuming;
        let gone: Vec<Arc<Subscription>> = {
            let mut subscriptions = consuming.subscriptions.lock();
            let mut gone = Vec::new();
            subscriptions.retain(|key, weak| match weak.upgrade() {
                None => false,
                Some(s) if s.home() == home && keys.is_none_or(|k| k.contains(key)) => {
                    // A quorum queue's consumer stays registered: it follows the leader.
                    let keep = s.quorum;
                    gone.push(s);
                    keep
                }
                Some(_) => true,
            });
            gone
        };
        for subscription in gone {
            if self.follows_leader(&subscription) {
                continue;
            }
            consuming.subscriptions.lock().remove(&subscription.key);
            subscription.cancelled_there();
        }
    }
}
