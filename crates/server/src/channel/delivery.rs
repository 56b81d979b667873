//! The part of a channel that queues reach: consumer credit (prefetch), delivery tags and
//! the unacknowledged deliveries they name, and the encoding of deliveries onto the
//! connection's outbound buffer. Queues call it under their own lock, so nothing here
//! calls into a queue; the channel task does that after releasing this state's lock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use wharf_amqp::frame::{
    encode_basic_header, encode_body, encode_deliver, encode_method, DeliverRef,
};
use wharf_amqp::{BasicCancel, ByteString, Method};
use wharf_core::connections::{ChannelStats, ChannelView, ConsumerStats, ExchangeCounts};
use wharf_core::queue::remote::{QueueRef, Subscription};
use wharf_core::queue::Offered;
use wharf_core::{Delivery, DeliveryTarget, Message};

use crate::outbound::Outbound;

/// A delivery the client has not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Unacked {
    pub delivery_tag: u64,
    /// Where it is settled: a queue of this node, or another node's through a
    /// subscription.
    pub queue: QueueRef,
    pub offset: u64,
    /// None for basic.get deliveries, which no consumer's prefetch counts.
    pub consumer_tag: Option<ByteString>,
}

#[derive(Debug)]
pub struct ConsumerEntry {
    pub queue: QueueRef,
    pub no_ack: bool,
    /// 0 = unlimited.
    pub prefetch_count: u16,
    pub unacked: u32,
    /// As basic.consume gave them, for management to show.
    pub exclusive: bool,
    pub arguments: wharf_amqp::FieldTable,
}

#[derive(Debug, Default)]
pub struct DeliveryState {
    pub next_delivery_tag: u64,
    /// Ascending by delivery tag.
    pub unacked: VecDeque<Unacked>,
    pub consumers: HashMap<ByteString, ConsumerEntry>,
    /// basic.qos with global=true: a limit on the channel's unacked consumer deliveries.
    pub global_prefetch: u16,
    /// Consumer deliveries (not gets) currently unacked, for the global limit.
    pub consumer_unacked: u32,
    pub closed: bool,
    /// Deliveries and gets so far, and deliveries acked (for management).
    pub delivered: u64,
    pub acked: u64,
    /// The prefetch consumers created from now on get (mirrors the channel's, for
    /// management), and the channel's mode: confirm or transactional.
    pub consumer_prefetch: u16,
    pub confirm: bool,
    pub transactional: bool,
}

impl DeliveryState {
    fn assign_tag(&mut self) -> u64 {
        self.delivered += 1;
        self.next_delivery_tag += 1;
        self.next_delivery_tag
    }

    /// Records a delivery that needs an ack and counts it against the consumer's credit.
    pub fn record(&mut self, unacked: Unacked) {
        if let Some(tag) = &unacked.consumer_tag {
            if let Some(consumer) = self.consumers.get_mut(tag) {
                consumer.unacked += 1;
            }
            self.consumer_unacked += 1;
        }
        self.unacked.push_back(unacked);
    }

    /// Releases the credit an acknowledged (or requeued) delivery held.
    fn release(&mut self, unacked: &Unacked) {
        if let Some(tag) = &unacked.consumer_tag {
            if let Some(consumer) = self.consumers.get_mut(tag) {
                consumer.unacked = consumer.unacked.saturating_sub(1);
            }
            self.consumer_unacked = self.consumer_unacked.saturating_sub(1);
        }
    }

    /// Removes the deliveries an ack/nack/reject names: one tag, or every tag up to it
    /// with `multiple` (tag 0 with multiple means all). None when a named tag is unknown.
    pub fn take_acked(&mut self, delivery_tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        let taken: Vec<Unacked> = if multiple {
            let upto = if delivery_tag == 0 {
                self.unacked.len()
            } else {
                self.unacked
                    .partition_point(|u| u.delivery_tag <= delivery_tag)
            };
            if upto == 0 && delivery_tag != 0 {
                return None;
            }
            self.unacked.drain(..upto).collect()
        } else {
            let at = self
                .unacked
                .binary_search_by_key(&delivery_tag, |u| u.delivery_tag)
                .ok()?;
            vec![self.unacked.remove(at)?]
        };
        for unacked in &taken {
            self.release(unacked);
        }
        Some(taken)
    }

    /// Removes every unacked delivery (channel close, basic.recover).
    pub fn take_all_unacked(&mut self) -> Vec<Unacked> {
        let all: Vec<Unacked> = self.unacked.drain(..).collect();
        for unacked in &all {
            self.release(unacked);
        }
        all
    }

    fn has_credit(&self, consumer_tag: &str) -> bool {
        let Some(consumer) = self.consumers.get(consumer_tag) else {
            return false;
        };
        if consumer.no_ack {
            return true;
        }
        let consumer_ok =
            consumer.prefetch_count == 0 || consumer.unacked < u32::from(consumer.prefetch_count);
        let channel_ok =
            self.global_prefetch == 0 || self.consumer_unacked < u32::from(self.global_prefetch);
        consumer_ok && channel_ok
    }
}

/// The delivery target of one AMQP channel.
pub struct ChannelDelivery {
    pub channel_id: u16,
    pub outbound: Arc<Outbound>,
    pub frame_max: u32,
    /// Whether the client asked to hear about consumers the broker cancels.
    pub consumer_cancel_notify: bool,
    pub state: Mutex<DeliveryState>,
    /// What the channel's publishes came to: counted by its connection's task alone, read
    /// by management. On a cache line of its own, away from `state`, which queues lock on
    /// every delivery.
    pub publishing: Padded<PublishCounters>,
    /// The channel's confirms, once it is in confirm mode (for their counts).
    pub confirms: Mutex<Option<Arc<crate::confirms::Confirms>>>,
    /// What the channel published to each exchange, as of the last [`ExchangeTally`]
    /// flush (once per read of the socket).
    pub exchanges: Mutex<HashMap<ByteString, ExchangeCounts>>,
}

/// What a channel published to the exchange it publishes to now, counted without any
/// synchronisation by the connection's task, and added to the channel's shared counts
/// when the exchange changes or the connection has handled a read.
#[derive(Debug, Default)]
pub struct ExchangeTally {
    exchange: ByteString,
    counts: ExchangeCounts,
    /// Set when counting began since the last flush; taken by the connection, which
    /// then knows to flush this channel.
    started: bool,
}

impl ExchangeTally {
    #[inline]
    pub fn count(&mut self, exchange: &ByteString, routed: bool, shared: &ChannelDelivery) {
        if !wharf_core::vhost::same_name(&self.exchange, exchange) {
            self.flush(shared);
            self.exchange = exchange.clone();
        }
        self.started |= self.counts.published_in == 0;
        self.counts.published_in += 1;
        self.counts.routed_out += u64::from(routed);
    }

    /// Whether counting began since the last call (the channel needs a flush).
    pub fn take_started(&mut self) -> bool {
        std::mem::take(&mut self.started)
    }

    pub fn flush(&mut self, shared: &ChannelDelivery) {
        if self.counts.published_in == 0 {
            return;
        }
        let counts = std::mem::take(&mut self.counts);
        shared
            .exchanges
            .lock()
            .entry(self.exchange.clone())
            .or_default()
            .add(&counts);
    }
}

/// Counts of a channel's publishes.
#[derive(Debug, Default)]
pub struct PublishCounters {
    pub published: AtomicU64,
    /// Unroutable, returned to a mandatory publisher.
    pub returned: AtomicU64,
    /// Unroutable, dropped.
    pub dropped: AtomicU64,
}

impl PublishCounters {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A value alone on its cache line (two, against adjacent-line prefetching).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

impl ChannelView for ChannelDelivery {
    fn exchanges(&self) -> Vec<(String, ExchangeCounts)> {
        self.exchanges
            .lock()
            .iter()
            .map(|(name, counts)| (name.to_string(), *counts))
            .collect()
    }

    fn consumers(&self) -> Vec<ConsumerStats> {
        let read: Vec<(ConsumerStats, QueueRef)> = {
            let state = self.state.lock();
            state
                .consumers
                .iter()
                .map(|(tag, entry)| {
                    let stats = ConsumerStats {
                        queue: entry.queue.name().to_string(),
                        tag: tag.to_string(),
                        ack_required: !entry.no_ack,
                        prefetch_count: entry.prefetch_count,
                        messages_unacknowledged: entry.unacked,
                        exclusive: entry.exclusive,
                        arguments: entry.arguments.clone(),
                        activity: Default::default(),
                    };
                    (stats, entry.queue.clone())
                })
                .collect()
        };
        // Asked of each queue once this channel's lock is released: a queue delivering
        // holds its own lock and then takes this channel's.
        let this = self as *const Self as *const ();
        read.into_iter()
            .map(|(mut stats, queue)| {
                if let QueueRef::Local(queue) = queue {
                    stats.activity = queue.consumer_activity(this, &stats.tag);
                }
                stats
            })
            .collect()
    }

    fn stats(&self) -> ChannelStats {
        let confirms = self.confirms.lock().clone();
        let (confirmed, unconfirmed) = confirms.map_or((0, 0), |c| (c.counts().0, c.unconfirmed()));
        let state = self.state.lock();
        ChannelStats {
            number: self.channel_id,
            confirm: state.confirm,
            transactional: state.transactional,
            consumers: state.consumers.len() as u32,
            messages_unacknowledged: state.unacked.len() as u64,
            prefetch_count: state.consumer_prefetch,
            global_prefetch_count: state.global_prefetch,
            published: self.publishing.0.published.load(Ordering::Relaxed),
            delivered: state.delivered,
            acked: state.acked,
            confirmed,
            unconfirmed,
            unroutable_returned: self.publishing.0.returned.load(Ordering::Relaxed),
            unroutable_dropped: self.publishing.0.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Appends basic.deliver / basic.get-ok / basic.return with the message's content frames.
pub fn encode_with_content(
    channel: u16,
    method: &Method,
    message: &Message,
    frame_max: u32,
    out: &mut BytesMut,
) {
    encode_method(channel, method, out);
    encode_content(channel, message, frame_max, out);
}

/// Appends a message's content frames: its header and its body.
fn encode_content(channel: u16, message: &Message, frame_max: u32, out: &mut BytesMut) {
    encode_basic_header(channel, message.body.len() as u64, &message.properties, out);
    encode_body(channel, &message.body, frame_max, out);
}

impl ChannelDelivery {
    pub fn new(
        channel_id: u16,
        outbound: Arc<Outbound>,
        frame_max: u32,
        consumer_cancel_notify: bool,
    ) -> Self {
        ChannelDelivery {
            channel_id,
            outbound,
            frame_max,
            consumer_cancel_notify,
            state: Mutex::new(DeliveryState::default()),
            publishing: Padded::default(),
            confirms: Mutex::new(None),
            exchanges: Mutex::new(HashMap::new()),
        }
    }
}

impl ChannelDelivery {
    /// Writes a delivery to a consumer of this channel if it has credit and the socket
    /// room; records it as unacknowledged (settled through `queue`) unless `no_ack`.
    fn offer(
        &self,
        consumer_tag: &ByteString,
        queue: impl FnOnce() -> QueueRef,
        offset: u64,
        message: &Message,
        redelivered: bool,
        no_ack: bool,
    ) -> Offered {
        let mut state = self.state.lock();
        if state.closed || !state.has_credit(consumer_tag) {
            return Offered::Refused;
        }
        let delivery_tag = state.next_delivery_tag + 1;
        let deliver = DeliverRef {
            consumer_tag,
            delivery_tag,
            redelivered,
            exchange: &message.exchange,
            routing_key: &message.routing_key,
        };
        let written = self.outbound.try_write_delivery(|out| {
            encode_deliver(self.channel_id, deliver, out);
            encode_content(self.channel_id, message, self.frame_max, out);
        });
        if !written {
            return Offered::Refused;
        }
        state.assign_tag();
        if !no_ack {
            state.record(Unacked {
                delivery_tag,
                queue: queue(),
                offset,
                consumer_tag: Some(consumer_tag.clone()),
            });
            if !state.has_credit(consumer_tag) {
                return Offered::TookLastCredit;
            }
        }
        Offered::Taken
    }
}

impl DeliveryTarget for ChannelDelivery {
    fn try_deliver(&self, delivery: Delivery<'_>) -> Offered {
        self.offer(
            delivery.consumer_tag,
            || QueueRef::Local(delivery.queue.clone()),
            delivery.offset,
            delivery.message,
            delivery.redelivered,
            delivery.no_ack,
        )
    }

    fn try_deliver_remote(
        &self,
        subscription: &Arc<Subscription>,
        offset: u64,
        message: &Arc<Message>,
        redelivered: bool,
    ) -> Offered {
        self.offer(
            &subscription.consumer_tag,
            || QueueRef::Remote(subscription.clone()),
            offset,
            message,
            redelivered,
            subscription.no_ack,
        )
    }

    fn deliver_reply(&self, consumer_tag: &ByteString, message: &Arc<Message>) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        let delivery_tag = state.assign_tag();
        let deliver = DeliverRef {
            consumer_tag,
            delivery_tag,
            redelivered: false,
            exchange: &message.exchange,
            routing_key: &message.routing_key,
        };
        // Not held back by prefetch or a full buffer, as in RabbitMQ: a reply is small
        // and its requester asked for it.
        self.outbound.write(|out| {
            encode_deliver(self.channel_id, deliver, out);
            encode_content(self.channel_id, message, self.frame_max, out);
        });
        true
    }

    fn consumer_cancelled(&self, consumer_tag: &ByteString) {
        let mut state = self.state.lock();
        if state.consumers.remove(consumer_tag).is_none() || state.closed {
            return;
        }
        if self.consumer_cancel_notify {
            let method = Method::BasicCancel(BasicCancel {
                consumer_tag: consumer_tag.clone(),
                no_wait: true,
            });
            self.outbound
                .write(|out| encode_method(self.channel_id, &method, out));
        }
    }
}
