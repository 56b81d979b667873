//! A channel's consumers and what they receive: basic.consume and basic.cancel (the
//! direct reply-to consumer too), basic.get, acks, nacks and rejects (applied a run at a
//! time), recover, and the consumer timeout.

use std::cell::Cell;
use std::sync::Arc;

use wharf_amqp::*;
use wharf_core::access::{Access, ResourceKind};
use wharf_core::direct_reply::REPLY_QUEUE;
use wharf_core::queue::remote::{QueueRef, Settle};
use wharf_core::queue::{ConsumerRemoved, Woken};
use wharf_core::{Consumer, DeliveryTarget, Queue, VHost};

use super::delivery::{encode_with_content, ConsumerEntry, Unacked};
use super::{Channel, ChannelContext, ReplyConsumer};
use crate::error::{AmqpError, AmqpResult};

impl Channel {
    /// The consumer timeout: whether the oldest unacknowledged delivery has waited longer
    /// than `timeout`, judged at `now`. Called every so often (a fraction of the timeout);
    /// rather than a timestamp per delivery (a clock read on every message), each call
    /// notes the delivery tag reached so far, and a delivery is known to be older than
    /// the timeout once its tag is below one noted at least `timeout` ago. So a timeout is
    /// seen up to two check intervals late.
    pub fn ack_timed_out(&mut self, now: std::time::Instant, timeout: std::time::Duration) -> bool {
        let (oldest, next_tag) = {
            let state = self.delivery.state.lock();
            let oldest = state.unacked.front().map(|u| u.delivery_tag);
            (oldest, state.next_delivery_tag + 1)
        };
        let Some(oldest) = oldest else {
            self.delivery_history.clear();
            return false;
        };
        if self
            .delivery_history
            .back()
            .is_none_or(|&(_, tag)| tag != next_tag)
        {
            self.delivery_history.push_back((now, next_tag));
        }
        let Some(cutoff) = now.checked_sub(timeout) else {
            return false;
        };
        // Only the newest snapshot at or before the cutoff matters among the old ones.
        while self
            .delivery_history
            .get(1)
            .is_some_and(|&(at, _)| at <= cutoff)
        {
            self.delivery_history.pop_front();
        }
        matches!(self.delivery_history.front(), Some(&(at, tag)) if at <= cutoff && oldest < tag)
    }

    /// The deliveries an ack, nack or reject names (counted as acked when `ack`).
    pub(super) fn take_acked(
        &self,
        delivery_tag: u64,
        multiple: bool,
        ack: bool,
    ) -> AmqpResult<Vec<Unacked>> {
        let mut state = self.delivery.state.lock();
        let taken = state.take_acked(delivery_tag, multiple).ok_or_else(|| {
            AmqpError::new(
                ReplyCode::PreconditionFailed,
                format_args!("unknown delivery tag {delivery_tag}"),
            )
        })?;
        if ack {
            state.acked += taken.len() as u64;
        }
        Ok(taken)
    }

    pub(super) fn consume(&mut self, ctx: &ChannelContext<'_>, m: &BasicConsume) -> AmqpResult<()> {
        if let Some(max) = ctx.config.consumer_max_per_channel {
            if self.delivery.state.lock().consumers.len() >= max {
                return Err(AmqpError::new(
                    ReplyCode::NotAllowed,
                    format_args!("reached maximum ({max}) of consumers per channel"),
                ));
            }
        }
        if *m.queue == *REPLY_QUEUE {
            return self.consume_replies(ctx, m);
        }
        let queue_name = self.queue_name(&m.queue)?;
        ctx.grant
            .check(Access::Read, ResourceKind::Queue, &queue_name)?;
        if ctx.vhost.remote_queue(&queue_name).is_some() {
            return self.consume_remote(ctx, m, &queue_name);
        }
        let queue = ctx.vhost.queue_for(&queue_name, ctx.connection_id)?;
        let tag = self.new_consumer_tag(&m.consumer_tag)?;
        let woken = queue.add_consumer(Consumer::new(
            tag.clone(),
            m.no_ack,
            m.exclusive,
            m.arguments.clone(),
            self.target.clone(),
        ))?;
        self.note_woken(woken);
        self.consumer_added(ctx, m, tag.clone(), QueueRef::Local(queue.clone()));
        if queue.is_deleted() {
            // Deleted between add_consumer and now: its cancellation found no entry yet.
            self.delivery.consumer_cancelled(&tag);
        }
        self.note_woken(queue.deliver_ready());
        Ok(())
    }

    /// basic.consume on another node's queue: the consumer is registered there, and its
    /// deliveries come through a subscription.
    fn consume_remote(
        &mut self,
        ctx: &ChannelContext<'_>,
        m: &BasicConsume,
        queue_name: &str,
    ) -> AmqpResult<()> {
        let tag = self.new_consumer_tag(&m.consumer_tag)?;
        let channel: Arc<dyn DeliveryTarget> = self.target.clone();
        let subscription = ctx.vhost.consume_remote(
            queue_name,
            ctx.connection_id,
            tag.clone(),
            m.no_ack,
            m.exclusive,
            &m.arguments,
            self.consumer_prefetch,
            Arc::downgrade(&channel),
        )?;
        self.consumer_added(ctx, m, tag, QueueRef::Remote(subscription.clone()));
        // What came before the consumer's entry existed waited: offered now.
        subscription.offer();
        Ok(())
    }

    /// Answers consume-ok, then makes the consumer's entry. consume-ok goes out before the
    /// first delivery: until the entry exists, this channel refuses deliveries for the
    /// consumer, and its queue (or subscription) keeps them.
    fn consumer_added(
        &mut self,
        ctx: &ChannelContext<'_>,
        m: &BasicConsume,
        tag: ByteString,
        queue: QueueRef,
    ) {
        if !m.no_wait {
            self.reply(
                ctx.outbound,
                BasicConsumeOk {
                    consumer_tag: tag.clone(),
                },
            );
        }
        self.delivery.state.lock().consumers.insert(
            tag,
            ConsumerEntry {
                queue,
                no_ack: m.no_ack,
                prefetch_count: self.consumer_prefetch,
                unacked: 0,
                exclusive: m.exclusive,
                arguments: m.arguments.clone(),
            },
        );
    }

    /// The tag a new consumer gets: the one asked for (refused if this channel already has
    /// a consumer of that tag, as RabbitMQ does), or a generated one.
    pub(super) fn new_consumer_tag(&mut self, requested: &ByteString) -> AmqpResult<ByteString> {
        let tag = if requested.is_empty() {
            self.consumer_tags_issued += 1;
            generated_tag("amq.ctag-", self.consumer_tags_issued)
        } else {
            requested.clone()
        };
        if self.delivery.state.lock().consumers.contains_key(&tag) {
            return Err(AmqpError::new(
                ReplyCode::NotAllowed,
                format_args!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        Ok(tag)
    }

    /// basic.consume of `amq.rabbitmq.reply-to`: this channel's requests will carry a reply
    /// name of its own, and replies to it come here.
    pub(super) fn consume_replies(
        &mut self,
        ctx: &ChannelContext<'_>,
        m: &BasicConsume,
    ) -> AmqpResult<()> {
        let refused =
            |text: &str| Err(AmqpError::new(ReplyCode::PreconditionFailed, text).with_ids(60, 20));
        if !m.no_ack {
            return refused("reply consumer cannot acknowledge");
        }
        if self.reply_consumer.is_some() {
            return refused("reply consumer already set");
        }
        let tag = self.new_consumer_tag(&m.consumer_tag)?;
        let name = ctx.vhost.replies.register(
            &self.target,
            tag.clone(),
            ctx.connection_id,
            self.id,
            ctx.vhost.member(),
        );
        self.reply_consumer = Some(ReplyConsumer {
            tag: tag.clone(),
            name,
            vhost: ctx.vhost.clone(),
        });
        if !m.no_wait {
            self.reply(ctx.outbound, BasicConsumeOk { consumer_tag: tag });
        }
        Ok(())
    }

    pub(super) fn drop_reply_consumer(&mut self) {
        if let Some(consumer) = self.reply_consumer.take() {
            consumer.vhost.replies.unregister(&consumer.name);
        }
    }

    pub(super) fn cancel(&mut self, vhost: &VHost, tag: &ByteString) {
        if self.reply_consumer.as_ref().is_some_and(|c| c.tag == *tag) {
            self.drop_reply_consumer();
            return;
        }
        let entry = self.delivery.state.lock().consumers.remove(tag);
        if let Some(entry) = entry {
            self.detach_consumer(vhost, &entry.queue, tag);
        }
    }

    pub(super) fn detach_consumer(&self, vhost: &VHost, queue: &QueueRef, tag: &str) {
        match queue {
            QueueRef::Local(queue) => {
                if queue.remove_consumer(&self.target, tag)
                    == ConsumerRemoved::RemovedLastOfAutoDelete
                {
                    vhost.delete_queue_instance(queue);
                }
            }
            QueueRef::Remote(subscription) => subscription.cancel(),
        }
    }

    pub(super) fn get(&mut self, ctx: &ChannelContext<'_>, m: &BasicGet) -> AmqpResult<()> {
        let queue_name = self.queue_name(&m.queue)?;
        ctx.grant
            .check(Access::Read, ResourceKind::Queue, &queue_name)?;
        if let Some(remote) = ctx.vhost.remote_queue(&queue_name) {
            return self.get_remote(ctx, &queue_name, &remote.home(), m.no_ack);
        }
        let queue = ctx.vhost.queue_for(&queue_name, ctx.connection_id)?;
        let Some(got) = queue.get(m.no_ack) else {
            self.reply(ctx.outbound, BasicGetEmpty {});
            return Ok(());
        };
        // Tag assignment and the write happen under one lock so tags go out in order.
        let mut state = self.delivery.state.lock();
        state.next_delivery_tag += 1;
        let delivery_tag = state.next_delivery_tag;
        if !m.no_ack {
            state.record(Unacked {
                delivery_tag,
                queue: QueueRef::Local(queue.clone()),
                offset: got.offset,
                consumer_tag: None,
            });
        }
        let method = Method::BasicGetOk(Box::new(BasicGetOk {
            delivery_tag,
            redelivered: got.redelivered,
            exchange: got.message.exchange.clone(),
            routing_key: got.message.routing_key.clone(),
            message_count: got.message_count,
        }));
        let frame_max = self.delivery.frame_max;
        ctx.outbound
            .write(|out| encode_with_content(self.id, &method, &got.message, frame_max, out));
        Ok(())
    }

    /// basic.get from another node's queue: taken there; with acknowledgements, held
    /// there until settled through this channel's getter for the queue.
    fn get_remote(
        &mut self,
        ctx: &ChannelContext<'_>,
        queue_name: &ByteString,
        home: &str,
        no_ack: bool,
    ) -> AmqpResult<()> {
        let getter = match no_ack {
            true => None,
            // One per queue, while the queue is on the node it was made for (a queue
            // deleted and declared again elsewhere gets a new one).
            false => Some(match self.remote_getters.get(queue_name) {
                Some(getter) if getter.home() == home => getter.clone(),
                _ => {
                    let target = Arc::downgrade(&self.target);
                    let getter = ctx.vhost.remote_getter(queue_name, target)?;
                    self.remote_getters
                        .insert(queue_name.clone(), getter.clone());
                    getter
                }
            }),
        };
        let Some(got) = ctx
            .vhost
            .get_remote(queue_name, ctx.connection_id, getter.as_deref())?
        else {
            self.reply(ctx.outbound, BasicGetEmpty {});
            return Ok(());
        };
        let mut state = self.delivery.state.lock();
        state.next_delivery_tag += 1;
        let delivery_tag = state.next_delivery_tag;
        if let Some(getter) = getter {
            state.record(Unacked {
                delivery_tag,
                queue: QueueRef::Remote(getter),
                offset: got.offset,
                consumer_tag: None,
            });
        }
        let method = Method::BasicGetOk(Box::new(BasicGetOk {
            delivery_tag,
            redelivered: got.redelivered,
            exchange: got.message.exchange.clone(),
            routing_key: got.message.routing_key.clone(),
            message_count: got.message_count,
        }));
        let frame_max = self.delivery.frame_max;
        ctx.outbound
            .write(|out| encode_with_content(self.id, &method, &got.message, frame_max, out));
        Ok(())
    }

    pub(super) fn recover(&mut self, requeue: bool) -> AmqpResult<()> {
        if !requeue {
            return Err(AmqpError::new(ReplyCode::NotImplemented, "requeue=false"));
        }
        let all = self.delivery.state.lock().take_all_unacked();
        settle(all, Some(true), &self.woken);
        self.resume_consumers();
        Ok(())
    }

    /// Applies the acks gathered since the last flush, and lets the queues deliver with
    /// the credit they freed. The connection calls this when it has handled every frame
    /// of a read, and before any frame that is not an ack, so that nothing observes an
    /// ack as pending.
    pub fn flush_acks(&mut self) {
        if self.pending_acks.is_empty() {
            return;
        }
        let settled = settle(std::mem::take(&mut self.pending_acks), None, &self.woken);
        self.resume_consumers_except(&settled);
    }

    /// Lets every queue this channel consumes from deliver again (credit was freed).
    pub fn resume_consumers(&self) {
        self.resume_consumers_except(&[]);
    }

    /// Like [`Channel::resume_consumers`], skipping queues that already delivered again
    /// when they were settled with.
    pub(super) fn resume_consumers_except(&self, done: &[Arc<Queue>]) {
        let queues: Vec<QueueRef> = {
            let state = self.delivery.state.lock();
            let mut queues: Vec<QueueRef> = Vec::new();
            for entry in state.consumers.values() {
                let settled = match &entry.queue {
                    QueueRef::Local(queue) => done.iter().any(|q| Arc::ptr_eq(q, queue)),
                    QueueRef::Remote(_) => false,
                };
                if !settled && !queues.iter().any(|q| q.same(&entry.queue)) {
                    queues.push(entry.queue.clone());
                }
            }
            queues
        };
        for queue in queues {
            match queue {
                QueueRef::Local(queue) => self.note_woken(queue.deliver_ready()),
                QueueRef::Remote(subscription) => subscription.offer(),
            }
        }
    }
}

/// Applies acks (requeue None), or nacks/rejects with or without requeue, per queue.
/// Each queue of this node delivers again in the same step; returns those queues.
/// Another node's deliveries are settled there, in order.
pub(super) fn settle(
    deliveries: Vec<Unacked>,
    requeue: Option<bool>,
    woken: &Cell<Woken>,
) -> Vec<Arc<Queue>> {
    let mut by_queue: Vec<(QueueRef, Vec<u64>)> = Vec::new();
    for unacked in deliveries {
        match by_queue.iter_mut().find(|(q, _)| q.same(&unacked.queue)) {
            Some((_, offsets)) => offsets.push(unacked.offset),
            None => by_queue.push((unacked.queue, vec![unacked.offset])),
        }
    }
    let mut settled = Vec::new();
    for (queue, offsets) in by_queue {
        match queue {
            QueueRef::Local(queue) => {
                let delivered = match requeue {
                    None => queue.ack(&offsets),
                    Some(true) => queue.requeue(&offsets),
                    Some(false) => queue.reject(&offsets),
                };
                super::add_woken(woken, delivered);
                settled.push(queue);
            }
            QueueRef::Remote(subscription) => {
                let how = match requeue {
                    None => Settle::Ack,
                    Some(true) => Settle::Requeue,
                    Some(false) => Settle::Reject,
                };
                subscription.settle(offsets, how);
            }
        }
    }
    settled
}

pub(super) fn generated_tag(prefix: &str, n: u64) -> ByteString {
    let random: u64 = rand_u64();
    ByteString::from(format!("{prefix}{n}-{random:016x}"))
}

/// A random 64-bit value without pulling a RNG crate into the server: RandomState is seeded
/// from the OS for each instance.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}
