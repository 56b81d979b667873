//! One AMQP channel: the state a client builds on it (consumers, qos, confirm or tx mode,
//! a message being published) and the mapping of each method to core calls. Owned by its
//! connection's task; the part queues reach lives in [`delivery::ChannelDelivery`]. This
//! file dispatches the methods and holds the exchange and queue ones; consuming (consume,
//! get, acks) and publishing (content frames, confirms, transactions) have their own.

mod consuming;
pub mod delivery;
mod publish;

use std::cell::Cell;
use std::sync::Arc;

use wharf_amqp::frame::encode_method;
use wharf_amqp::*;
use wharf_core::direct_reply::REPLY_QUEUE;
use wharf_core::queue::remote::{QueueRef, Subscription};
use wharf_core::queue::Woken;
use wharf_core::{
    DeliveryTarget, ExchangeDeclare, Grant, QueueDeclare as CoreQueueDeclare, RouteCache, VHost,
};

use self::consuming::settle;
use self::delivery::{ChannelDelivery, ConsumerEntry, Unacked};
use self::publish::{PendingPublish, TxBuffer};
use crate::confirms::Confirms;
use crate::error::{AmqpError, AmqpResult};
use crate::outbound::Outbound;
use crate::ServerConfig;

/// What the connection shares with each of its channels.
pub struct ChannelContext<'a> {
    pub vhost: &'a Arc<VHost>,
    /// What the connection's user may do: each method checks what RabbitMQ checks.
    pub grant: &'a Grant,
    /// Group commit for persistent messages; None when confirms need not wait for fsync.
    pub flusher: Option<&'a Arc<wharf_core::flusher::Flusher>>,
    pub connection_id: u64,
    pub config: &'a ServerConfig,
    pub outbound: &'a Arc<Outbound>,
    /// Room for large bodies, when memory is bounded.
    pub body_budget: Option<&'a Arc<crate::body_budget::BodyBudget>>,
}

#[derive(Debug)]
enum Mode {
    Plain,
    Confirm(Arc<Confirms>),
    Tx(TxBuffer),
}

pub struct Channel {
    pub id: u16,
    delivery: Arc<ChannelDelivery>,
    /// The same object as `delivery`, as the trait object queues know consumers by.
    target: Arc<dyn DeliveryTarget>,
    mode: Mode,
    pending: Option<PendingPublish>,
    /// queue.declare's name, which an empty queue name in later methods stands for.
    last_declared_queue: Option<ByteString>,
    /// The prefetch given to consumers created from now on (basic.qos, global=false).
    consumer_prefetch: u16,
    consumer_tags_issued: u64,
    /// Acks received but not yet applied to their queues: a run of acks in one read is
    /// applied at once (one lock per queue, not one per ack). See [`Channel::flush_acks`].
    pending_acks: Vec<Unacked>,
    /// The exchange last published to (see [`PendingPublish::start`]).
    exchange_cache: Option<wharf_core::access::PublishTarget>,
    route_cache: RouteCache,
    /// Snapshots (when, next delivery tag then) taken at each consumer-timeout check while
    /// deliveries are unacknowledged: every tag below a snapshot's was delivered before
    /// its time. See [`Channel::ack_timed_out`].
    delivery_history: std::collections::VecDeque<(std::time::Instant, u64)>,
    /// The direct reply-to consumer, if this channel has one.
    reply_consumer: Option<ReplyConsumer>,
    /// What gets with acknowledgements from other nodes' queues are settled through, by
    /// queue name.
    remote_getters: std::collections::HashMap<ByteString, Arc<Subscription>>,
    /// What the queues delivered to consumers because of what this channel did, since the
    /// connection last took it ([`Channel::take_woken`]).
    woken: Cell<Woken>,
    /// Publishes to the current exchange not yet in the channel's shared counts.
    tally: delivery::ExchangeTally,
}

/// A channel's consumer of `amq.rabbitmq.reply-to`.
struct ReplyConsumer {
    tag: ByteString,
    /// The reply-to its requests carry.
    name: ByteString,
    /// Where the name is registered.
    vhost: Arc<VHost>,
}

/// Adds what queues delivered to what a channel reports to its connection.
fn add_woken(all: &Cell<Woken>, woken: Woken) {
    let mut sum = all.get();
    sum.merge(woken);
    all.set(sum);
}

impl Channel {
    pub fn new(id: u16, outbound: Arc<Outbound>, frame_max: u32, cancel_notify: bool) -> Self {
        let delivery = Arc::new(ChannelDelivery::new(id, outbound, frame_max, cancel_notify));
        let target: Arc<dyn DeliveryTarget> = delivery.clone();
        Channel {
            id,
            delivery,
            target,
            mode: Mode::Plain,
            pending: None,
            last_declared_queue: None,
            consumer_prefetch: 0,
            consumer_tags_issued: 0,
            pending_acks: Vec::new(),
            exchange_cache: None,
            route_cache: RouteCache::default(),
            delivery_history: std::collections::VecDeque::new(),
            reply_consumer: None,
            remote_getters: Default::default(),
            woken: Cell::default(),
            tally: Default::default(),
        }
    }

    /// The channel as management sees it.
    pub fn view(&self) -> Arc<dyn wharf_core::connections::ChannelView> {
        self.delivery.clone()
    }

    /// Adds what the channel published since the last call to its shared counts (the
    /// connection calls it once it has handled a read).
    pub fn flush_tally(&mut self) {
        self.tally.flush(&self.delivery);
    }

    /// Whether the channel began counting publishes since the last call: the connection
    /// then flushes it at the end of the read.
    pub fn take_tally_started(&mut self) -> bool {
        self.tally.take_started()
    }

    /// What the queues delivered to consumers because of what this channel did since the
    /// last call: the connection lets the consumers' writers run before it reads on.
    pub fn take_woken(&self) -> Woken {
        self.woken.take()
    }

    fn note_woken(&self, woken: Woken) {
        add_woken(&self.woken, woken);
    }

    fn reply(&self, outbound: &Outbound, method: impl Into<Method>) {
        let method = method.into();
        outbound.write(|out| encode_method(self.id, &method, out));
    }

    /// An empty queue name means the queue last declared on this channel.
    fn queue_name(&self, name: &ByteString) -> AmqpResult<ByteString> {
        if !name.is_empty() {
            return Ok(name.clone());
        }
        self.last_declared_queue
            .clone()
            .ok_or_else(|| AmqpError::new(ReplyCode::NotFound, "no previously declared queue"))
    }

    pub fn is_receiving_content(&self) -> bool {
        self.pending.is_some()
    }

    pub fn handle_method(&mut self, ctx: &ChannelContext<'_>, method: Method) -> AmqpResult<()> {
        let (class_id, method_id) = (method.class_id(), method.method_id());
        let result = self.dispatch(ctx, method);
        result.map_err(|e| {
            if e.class_id == 0 {
                e.with_ids(class_id, method_id)
            } else {
                e
            }
        })
    }

    /// Takes the method by value: a publish keeps its routing key without a copy.
    fn dispatch(&mut self, ctx: &ChannelContext<'_>, method: Method) -> AmqpResult<()> {
        let vhost = ctx.vhost;
        let out = ctx.outbound;
        match method {
            Method::ChannelFlow(m) => {
                // As RabbitMQ: clients limit deliveries with basic.qos, not by pausing.
                if !m.active {
                    return Err(AmqpError::new(ReplyCode::NotImplemented, "active=false"));
                }
                self.reply(out, ChannelFlowOk { active: true });
            }
            Method::ChannelFlowOk(_) => {}
            Method::ExchangeDeclare(m) => {
                let declare = ExchangeDeclare {
                    name: m.exchange.clone(),
                    kind: m.kind.clone(),
                    passive: m.passive,
                    durable: m.durable,
                    auto_delete: m.auto_delete,
                    internal: m.internal,
                    arguments: m.arguments.clone(),
                };
                ctx.grant.declare_exchange(vhost, declare)?;
                if !m.no_wait {
                    self.reply(out, ExchangeDeclareOk {});
                }
            }
            Method::ExchangeDelete(m) => {
                ctx.grant.delete_exchange(vhost, &m.exchange, m.if_unused)?;
                if !m.no_wait {
                    self.reply(out, ExchangeDeleteOk {});
                }
            }
            Method::ExchangeBind(m) => {
                ctx.grant.bind_exchange(
                    vhost,
                    &m.destination,
                    &m.source,
                    m.routing_key.clone(),
                    m.arguments.clone(),
                )?;
                if !m.no_wait {
                    self.reply(out, ExchangeBindOk {});
                }
            }
            Method::ExchangeUnbind(m) => {
                ctx.grant.unbind_exchange(
                    vhost,
                    &m.destination,
                    &m.source,
                    m.routing_key.clone(),
                    m.arguments.clone(),
                )?;
                if !m.no_wait {
                    self.reply(out, ExchangeUnbindOk {});
                }
            }
            Method::QueueDeclare(m) if m.queue.starts_with(REPLY_QUEUE) => {
                // The direct reply-to pseudo-queue, or a channel's reply name: no queue,
                // but declare-ok (one consumer, no messages) while it means something.
                if *m.queue != *REPLY_QUEUE && !vhost.reply_exists(&m.queue) {
                    return Err(AmqpError::new(
                        ReplyCode::NotFound,
                        format_args!("no queue '{}' in vhost '{}'", m.queue, vhost.name),
                    )
                    .with_ids(50, 10));
                }
                if !m.no_wait {
                    self.reply(
                        out,
                        QueueDeclareOk {
                            queue: m.queue.clone(),
                            message_count: 0,
                            consumer_count: 1,
                        },
                    );
                }
            }
            Method::QueueDeclare(m) => {
                let server_named = !m.passive && m.queue.is_empty();
                let name = if server_named {
                    wharf_core::vhost::generated_queue_name()
                } else {
                    m.queue.clone()
                };
                let declare = CoreQueueDeclare {
                    name,
                    server_named,
                    passive: m.passive,
                    durable: m.durable,
                    exclusive: m.exclusive,
                    auto_delete: m.auto_delete,
                    arguments: m.arguments.clone(),
                };
                let declared = ctx.grant.declare_queue(vhost, declare, ctx.connection_id)?;
                self.last_declared_queue = Some(declared.name.clone());
                if !m.no_wait {
                    self.reply(
                        out,
                        QueueDeclareOk {
                            queue: declared.name.clone(),
                            message_count: declared.message_count,
                            consumer_count: declared.consumer_count,
                        },
                    );
                }
            }
            Method::QueueBind(m) => {
                let queue = self.queue_name(&m.queue)?;
                let routing_key = if m.routing_key.is_empty() && m.queue.is_empty() {
                    queue.clone()
                } else {
                    m.routing_key.clone()
                };
                ctx.grant.bind_queue(
                    vhost,
                    &queue,
                    &m.exchange,
                    routing_key,
                    m.arguments.clone(),
                    ctx.connection_id,
                )?;
                if !m.no_wait {
                    self.reply(out, QueueBindOk {});
                }
            }
            Method::QueueUnbind(m) => {
                let queue = self.queue_name(&m.queue)?;
                ctx.grant.unbind_queue(
                    vhost,
                    &queue,
                    &m.exchange,
                    m.routing_key.clone(),
                    m.arguments.clone(),
                    ctx.connection_id,
                )?;
                self.reply(out, QueueUnbindOk {});
            }
            Method::QueuePurge(m) => {
                let queue = self.queue_name(&m.queue)?;
                let message_count = ctx.grant.purge_queue(vhost, &queue, ctx.connection_id)?;
                if !m.no_wait {
                    self.reply(out, QueuePurgeOk { message_count });
                }
            }
            Method::QueueDelete(m) => {
                let queue = self.queue_name(&m.queue)?;
                let message_count = ctx.grant.delete_queue(
                    vhost,
                    &queue,
                    ctx.connection_id,
                    m.if_unused,
                    m.if_empty,
                )?;
                if !m.no_wait {
                    self.reply(out, QueueDeleteOk { message_count });
                }
            }
            Method::BasicQos(m) => {
                if m.prefetch_size != 0 {
                    return Err(AmqpError::new(
                        ReplyCode::NotImplemented,
                        format_args!("prefetch_size!=0 ({})", m.prefetch_size),
                    ));
                }
                if m.global {
                    self.delivery.state.lock().global_prefetch = m.prefetch_count;
                } else {
                    self.consumer_prefetch = m.prefetch_count;
                    self.delivery.state.lock().consumer_prefetch = m.prefetch_count;
                }
                self.reply(out, BasicQosOk {});
                self.resume_consumers();
            }
            Method::BasicConsume(m) => self.consume(ctx, &m)?,
            Method::BasicCancel(m) => {
                self.cancel(vhost, &m.consumer_tag);
                if !m.no_wait {
                    self.reply(
                        out,
                        BasicCancelOk {
                            consumer_tag: m.consumer_tag.clone(),
                        },
                    );
                }
            }
            Method::BasicPublish(m) => {
                self.pending = Some(PendingPublish::start(ctx, m, &mut self.exchange_cache)?);
            }
            Method::BasicGet(m) => self.get(ctx, &m)?,
            Method::BasicAck(m) => {
                let acked = self.take_acked(m.delivery_tag, m.multiple, true)?;
                match &mut self.mode {
                    Mode::Tx(buffer) => buffer.acks.push((acked, None)),
                    _ => self.pending_acks.extend(acked),
                }
            }
            Method::BasicNack(m) => {
                let nacked = self.take_acked(m.delivery_tag, m.multiple, false)?;
                let settled = match &mut self.mode {
                    Mode::Tx(buffer) => {
                        buffer.acks.push((nacked, Some(m.requeue)));
                        Vec::new()
                    }
                    _ => settle(nacked, Some(m.requeue), &self.woken),
                };
                self.resume_consumers_except(&settled);
            }
            Method::BasicReject(m) => {
                let rejected = self.take_acked(m.delivery_tag, false, false)?;
                let settled = match &mut self.mode {
                    Mode::Tx(buffer) => {
                        buffer.acks.push((rejected, Some(m.requeue)));
                        Vec::new()
                    }
                    _ => settle(rejected, Some(m.requeue), &self.woken),
                };
                self.resume_consumers_except(&settled);
            }
            Method::BasicRecover(m) => {
                self.recover(m.requeue)?;
                self.reply(out, BasicRecoverOk {});
            }
            Method::BasicRecoverAsync(m) => self.recover(m.requeue)?,
            Method::ConfirmSelect(m) => {
                match self.mode {
                    Mode::Tx(_) => {
                        return Err(AmqpError::new(
                            ReplyCode::PreconditionFailed,
                            "cannot switch from tx to confirm mode",
                        ))
                    }
                    Mode::Plain => {
                        let confirms = Arc::new(Confirms::new(self.id));
                        *self.delivery.confirms.lock() = Some(confirms.clone());
                        self.mode = Mode::Confirm(confirms);
                        self.delivery.state.lock().confirm = true;
                    }
                    Mode::Confirm(_) => {}
                }
                if !m.no_wait {
                    self.reply(out, ConfirmSelectOk {});
                }
            }
            Method::TxSelect(_) => {
                match self.mode {
                    Mode::Confirm(_) => {
                        return Err(AmqpError::new(
                            ReplyCode::PreconditionFailed,
                            "cannot switch from confirm to tx mode",
                        ))
                    }
                    Mode::Plain => {
                        self.mode = Mode::Tx(TxBuffer::default());
                        self.delivery.state.lock().transactional = true;
                    }
                    Mode::Tx(_) => {}
                }
                self.reply(out, TxSelectOk {});
            }
            Method::TxCommit(_) => {
                let Mode::Tx(buffer) = &mut self.mode else {
                    return Err(not_transactional());
                };
                let buffer = std::mem::take(buffer);
                let mut stored = buffer.commit(&self.delivery, &self.woken, &mut self.tally, ctx);
                self.flush_tally();
                self.note_woken(stored.woken);
                // commit-ok waits for the disk like a confirm; a failed store still commits
                // what could be stored, as RabbitMQ's commit cannot report a partial failure.
                stored.refused = false;
                self.after_stored(ctx, stored, |_| Method::TxCommitOk(TxCommitOk {}));
                self.resume_consumers();
            }
            Method::TxRollback(_) => {
                let Mode::Tx(buffer) = &mut self.mode else {
                    return Err(not_transactional());
                };
                // Rolled-back acks leave their deliveries unacknowledged, as RabbitMQ does.
                let buffer = std::mem::take(buffer);
                let mut state = self.delivery.state.lock();
                for (deliveries, _) in buffer.acks {
                    for unacked in deliveries {
                        state.record(unacked);
                    }
                }
                state
                    .unacked
                    .make_contiguous()
                    .sort_by_key(|u| u.delivery_tag);
                drop(state);
                self.reply(out, TxRollbackOk {});
            }
            other => {
                return Err(AmqpError::new(
                    ReplyCode::CommandInvalid,
                    format_args!("unexpected method {} on channel {}", other.name(), self.id),
                ))
            }
        }
        Ok(())
    }

    /// The channel is going away (closed by either side, or its connection ended): cancel
    /// its consumers and return its unacknowledged messages to their queues.
    pub fn release(&mut self, vhost: Option<&Arc<VHost>>) {
        self.flush_tally();
        self.drop_reply_consumer();
        if let Mode::Confirm(confirms) = &self.mode {
            // Before the close (or close-ok) is written: no confirm follows it.
            confirms.close();
        }
        let (consumers, unacked) = {
            let mut state = self.delivery.state.lock();
            state.closed = true;
            let consumers: Vec<(ByteString, ConsumerEntry)> = state.consumers.drain().collect();
            (consumers, state.take_all_unacked())
        };
        // Acks the client sent before closing count: apply them before requeueing the rest
        // (the channel is closed now, so the queues do not deliver to it again).
        settle(std::mem::take(&mut self.pending_acks), None, &self.woken);
        for (tag, entry) in consumers {
            match vhost {
                Some(vhost) => self.detach_consumer(vhost, &entry.queue, &tag),
                None => match &entry.queue {
                    QueueRef::Local(queue) => {
                        queue.remove_consumer(&self.target, &tag);
                    }
                    QueueRef::Remote(subscription) => subscription.cancel(),
                },
            }
        }
        settle(unacked, Some(true), &self.woken);
        self.pending = None;
    }
}

fn not_transactional() -> AmqpError {
    AmqpError::new(
        ReplyCode::PreconditionFailed,
        "channel is not transactional",
    )
}
