//! Consumers, and the interface through which a queue hands them messages. The protocol
//! layer implements [`DeliveryTarget`] (for AMQP, one per channel): it decides whether it
//! has credit (prefetch, flow, a full socket buffer), numbers the delivery, and writes it
//! out. Queues call it while holding their own lock, so an implementation must never call
//! back into a queue from `try_deliver` or `consumer_cancelled`.

use std::sync::Arc;

use wharf_amqp::{ByteString, FieldTable};

use super::{ConsumerRemoved, Queue};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::queue_arguments::consumer_priority;

/// One message being handed to a consumer (or to basic.get).
pub struct Delivery<'a> {
    pub queue: &'a Arc<Queue>,
    pub consumer_tag: &'a ByteString,
    /// The queue's position of this message, which an ack or requeue names.
    pub offset: u64,
    pub message: &'a Arc<Message>,
    pub redelivered: bool,
    /// When true the queue forgets the message once delivered: there is nothing to ack.
    pub no_ack: bool,
}

/// What a target did with a delivery it was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Not taken (no credit, flow off, a full socket buffer): the queue keeps it.
    Refused,
    /// Taken; the consumer can take more.
    Taken,
    /// Taken with the consumer's last unit of credit: it gets nothing more until it has
    /// received this and acked.
    TookLastCredit,
}

/// What an operation on a queue delivered to consumers, for the caller to know whether
/// someone now waits on what it did (a connection that woke other connections' writers,
/// or filled a consumer's credit, lets them run before it reads on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Woken {
    pub deliveries: u32,
    pub credit_filled: bool,
}

impl Woken {
    pub fn merge(&mut self, other: Woken) {
        self.deliveries = self.deliveries.saturating_add(other.deliveries);
        self.credit_filled |= other.credit_filled;
    }

    pub(crate) fn note(&mut self, offered: Offered) {
        match offered {
            Offered::Refused => {}
            Offered::Taken => self.deliveries = self.deliveries.saturating_add(1),
            Offered::TookLastCredit => {
                self.deliveries = self.deliveries.saturating_add(1);
                self.credit_filled = true;
            }
        }
    }
}

pub trait DeliveryTarget: Send + Sync {
    /// Offers a delivery. [`Offered::Refused`], without side effects, when the target
    /// cannot take it now; the queue then keeps the message and tries the next consumer.
    fn try_deliver(&self, delivery: Delivery<'_>) -> Offered;

    /// The queue went away (deleted); the consumer no longer exists.
    fn consumer_cancelled(&self, consumer_tag: &ByteString);

    /// A reply for this target's direct reply-to consumer (see `direct_reply`): delivered
    /// without an ack and without regard to prefetch, as RabbitMQ does. False if the
    /// target can no longer take it (closed).
    fn deliver_reply(&self, consumer_tag: &ByteString, message: &Arc<Message>) -> bool;

    /// Offers a delivery from another node's queue, through `subscription` (its consumer
    /// tag names the consumer): as [`DeliveryTarget::try_deliver`]. A target that cannot
    /// consume across nodes refuses.
    fn try_deliver_remote(
        &self,
        _subscription: &Arc<super::remote::Subscription>,
        _offset: u64,
        _message: &Arc<Message>,
        _redelivered: bool,
    ) -> Offered {
        Offered::Refused
    }
}

/// Whether a consumer gets deliveries, in RabbitMQ's words (`activity_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumerActivity {
    /// A consumer of a queue without a single active consumer.
    #[default]
    Up,
    /// The single active consumer of its queue.
    SingleActive,
    /// Waiting behind its queue's single active consumer.
    Waiting,
}

impl ConsumerActivity {
    pub fn is_active(self) -> bool {
        self != ConsumerActivity::Waiting
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerActivity::Up => "up",
            ConsumerActivity::SingleActive => "single_active",
            ConsumerActivity::Waiting => "waiting",
        }
    }
}

pub struct Consumer {
    pub tag: ByteString,
    pub no_ack: bool,
    pub exclusive: bool,
    pub arguments: FieldTable,
    pub target: Arc<dyn DeliveryTarget>,
    /// `x-priority`, read by the queue when the consumer is added.
    pub(crate) priority: i64,
}

impl Consumer {
    pub fn new(
        tag: ByteString,
        no_ack: bool,
        exclusive: bool,
        arguments: FieldTable,
        target: Arc<dyn DeliveryTarget>,
    ) -> Consumer {
        Consumer {
            tag,
            no_ack,
            exclusive,
            arguments,
            target,
            priority: 0,
        }
    }

    /// Whether this consumer is the one registered by `target` under `tag`.
    pub fn is(&self, target: &Arc<dyn DeliveryTarget>, tag: &str) -> bool {
        Arc::ptr_eq(&self.target, target) && self.tag == tag
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("tag", &self.tag)
            .field("no_ack", &self.no_ack)
            .field("exclusive", &self.exclusive)
            .field("priority", &self.priority)
            .finish()
    }
}

impl Queue {
    /// Adds a consumer and delivers it what it can take of the ready messages.
    pub fn add_consumer(self: &Arc<Self>, mut consumer: Consumer) -> Result<Woken> {
        consumer.priority = consumer_priority(&consumer.arguments).map_err(|(arg, reason)| {
            Error::precondition(format_args!(
                "invalid arg '{arg}' for queue '{}' in vhost '{}': {reason}",
                self.name, self.vhost
            ))
        })?;
        let mut state = self.state.lock();
        if self.is_deleted() {
            return Err(Error::not_found(format_args!(
                "no queue '{}' in vhost '{}'",
                self.name, self.vhost
            )));
        }
        let locked = state.consumers.iter().any(|c| c.exclusive)
            || (consumer.exclusive && !state.consumers.is_empty());
        if locked {
            return Err(Error::access_refused(format_args!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        // Kept in descending priority, in registration order within one priority (with a
        // single active consumer, in registration order only: the first is the active one).
        let at = if state.settings.single_active_consumer {
            state.consumers.len()
        } else {
            state
                .consumers
                .partition_point(|c| c.priority >= consumer.priority)
        };
        if state.next_consumer >= at && !state.consumers.is_empty() && at < state.consumers.len() {
            state.next_consumer += 1;
        }
        state.consumers.insert(at, consumer);
        state.utilisation.consumers_changed(true);
        state.had_consumer = true;
        self.touch_locked(&mut state);
        Ok(self.deliver_and_unlock(state))
    }

    /// Whether the consumer `tag` of the delivery target at `target` gets deliveries: with a
    /// single active consumer only the first registered does (the others wait), else all.
    pub fn consumer_activity(&self, target: *const (), tag: &str) -> ConsumerActivity {
        let state = self.state.lock();
        if !state.settings.single_active_consumer {
            return ConsumerActivity::Up;
        }
        let first = state
            .consumers
            .first()
            .is_some_and(|c| std::ptr::addr_eq(Arc::as_ptr(&c.target), target) && c.tag == tag);
        match first {
            true => ConsumerActivity::SingleActive,
            false => ConsumerActivity::Waiting,
        }
    }

    pub fn remove_consumer(
        self: &Arc<Self>,
        target: &Arc<dyn DeliveryTarget>,
        tag: &str,
    ) -> ConsumerRemoved {
        let mut state = self.state.lock();
        let Some(at) = state.consumers.iter().position(|c| c.is(target, tag)) else {
            return ConsumerRemoved::NotFound;
        };
        state.consumers.remove(at);
        if state.consumers.is_empty() {
            state.utilisation.consumers_changed(false);
        }
        if state.next_consumer > at {
            state.next_consumer -= 1;
        }
        if state.consumers.is_empty() {
            state.next_consumer = 0;
            if self.options.auto_delete && state.had_consumer {
                return ConsumerRemoved::RemovedLastOfAutoDelete;
            }
            // x-expires counts from when the last consumer left.
            self.touch_locked(&mut state);
        }
        if at == 0 && state.settings.single_active_consumer {
            // The next consumer in registration order takes over at once.
            self.deliver_locked(&mut state);
        }
        let dead = self.after_change(&mut state);
        state.woken = Woken::default();
        drop(state);
        self.dead_letter(dead);
        ConsumerRemoved::Removed
    }
}
