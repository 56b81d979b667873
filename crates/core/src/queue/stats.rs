//! What a queue holds and has done, as a management API reports it (RabbitMQ's queue
//! object and its `message_stats`). The counters are plain fields of the queue's state,
//! counted under the lock each operation already holds: nothing is added to the hot path
//! but an increment. A snapshot is read under one acquisition of that lock.

use std::time::{Duration, Instant};

use wharf_amqp::ByteString;

use super::{saturating_u32, Queue};

/// Counts since the queue was created (in this run of the broker).
///
/// [`DeathReason::index`]: super::dead_letter::DeathReason::index
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Messages that entered the queue (publishes and dead letters routed to it).
    pub published: u64,
    /// Delivered to consumers that ack.
    pub delivered: u64,
    /// Delivered to consumers that do not ack.
    pub delivered_no_ack: u64,
    /// Taken with basic.get, to be acked.
    pub got: u64,
    /// Taken with basic.get without ack.
    pub got_no_ack: u64,
    /// Deliveries and gets of messages delivered before.
    pub redelivered: u64,
    /// Acknowledged.
    pub acked: u64,
    /// basic.get that found nothing.
    pub get_empty: u64,
    /// Messages that left for the dead-letter exchange, by [`DeathReason::index`]
    /// (rejected, expired, maxlen, delivery_limit).
    pub dead_lettered: [u64; 4],
    /// Messages that died the same ways in a queue without a dead-letter exchange.
    pub discarded: [u64; 4],
}

impl QueueCounters {
    /// Adds another queue's counts (a vhost's totals).
    pub fn add(&mut self, other: &QueueCounters) {
        self.published += other.published;
        self.delivered += other.delivered;
        self.delivered_no_ack += other.delivered_no_ack;
        self.got += other.got;
        self.got_no_ack += other.got_no_ack;
        self.redelivered += other.redelivered;
        self.acked += other.acked;
        self.get_empty += other.get_empty;
        for i in 0..4 {
            self.dead_lettered[i] += other.dead_lettered[i];
            self.discarded[i] += other.discarded[i];
        }
    }
}

/// How long the queue had consumers, and how long of that it held messages none of them
/// could take (all at their prefetch limit): consumer utilisation is the rest's share.
/// Time is read only when either starts or ends, never per message.
#[derive(Debug, Default)]
pub(super) struct Utilisation {
    consumers_since: Option<Instant>,
    with_consumers: Duration,
    blocked_since: Option<Instant>,
    blocked: Duration,
}

impl Utilisation {
    /// The queue went from no consumers to some, or from some to none.
    pub(super) fn consumers_changed(&mut self, present: bool) {
        match (present, self.consumers_since) {
            (true, None) => self.consumers_since = Some(Instant::now()),
            (false, Some(since)) => {
                self.unblocked();
                self.with_consumers += since.elapsed();
                self.consumers_since = None;
            }
            _ => {}
        }
    }

    /// Messages wait that no consumer can take.
    #[inline]
    pub(super) fn blocked(&mut self) {
        if self.blocked_since.is_none() && self.consumers_since.is_some() {
            self.blocked_since = Some(Instant::now());
        }
    }

    /// A consumer took a message, or nothing waits any more.
    #[inline]
    pub(super) fn unblocked(&mut self) {
        if let Some(since) = self.blocked_since.take() {
            self.blocked += since.elapsed();
        }
    }

    /// (time with consumers, time of it blocked), up to now.
    fn read(&self, queue_empty: bool) -> (Duration, Duration) {
        let now = Instant::now();
        let with = self.with_consumers + self.consumers_since.map_or(Duration::ZERO, |s| now - s);
        // Blocked ends when nothing is left to deliver, even if no delivery ended it.
        let blocked = self.blocked
            + match (self.blocked_since, queue_empty) {
                (Some(since), false) => now - since,
                _ => Duration::ZERO,
            };
        (with, blocked)
    }
}

/// One reading of a queue, taken under one lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    /// Body bytes of the ready messages (in memory and in the log).
    pub message_bytes_ready: u64,
    /// Body bytes of the delivered messages not yet acknowledged.
    pub message_bytes_unacknowledged: u64,
    /// Ready messages held in memory; the rest wait in the queue's log.
    pub messages_ready_in_memory: u64,
    pub consumers: u32,
    pub policy: Option<ByteString>,
    pub counters: QueueCounters,
    /// An estimate of the memory the queue holds: itself, the bodies it keeps in memory
    /// (ready and unacknowledged) and a fixed cost per message held (its entry, the
    /// shared message, its properties). A body several queues share counts in each.
    pub memory_bytes: u64,
    /// How long the queue has had consumers (since it was created), and how long of that
    /// it held messages none of them could take.
    pub consumer_time: Duration,
    pub blocked_time: Duration,
}

impl QueueStats {
    /// The share of the time with consumers that they could take messages at once
    /// (RabbitMQ's consumer utilisation), over the whole life of the queue: 0 without
    /// consumers ever.
    pub fn consumer_utilisation(&self) -> f64 {
        utilisation(self.consumer_time, self.blocked_time)
    }
}

/// 1 - blocked / with consumers; 0 when there was no time with consumers.
pub fn utilisation(with_consumers: Duration, blocked: Duration) -> f64 {
    if with_consumers.is_zero() {
        return 0.0;
    }
    (1.0 - blocked.as_secs_f64() / with_consumers.as_secs_f64()).clamp(0.0, 1.0)
}

/// What holding one message in memory costs beyond its body, estimated: its entry, the
/// message it shares, and its encoded properties (taken as 64 bytes; most are smaller).
fn per_message_bytes() -> u64 {
    (std::mem::size_of::<super::backlog::Entry>() + std::mem::size_of::<crate::Message>() + 64)
        as u64
}

impl QueueStats {
    pub fn messages(&self) -> u64 {
        self.messages_ready + self.messages_unacknowledged
    }

    pub fn message_bytes(&self) -> u64 {
        self.message_bytes_ready + self.message_bytes_unacknowledged
    }
}

impl Queue {
    /// What the queue holds and has done, read at once.
    pub fn stats(&self) -> QueueStats {
        let state = self.state.lock();
        let message_bytes_unacknowledged = state
            .unacked
            .values()
            .map(|entry| entry.message.body.len() as u64)
            .sum();
        let held = state.backlog.in_memory() as u64 + state.unacked.len() as u64;
        let memory_bytes = std::mem::size_of::<Queue>() as u64
            + state.backlog.in_memory_bytes()
            + message_bytes_unacknowledged
            + held * per_message_bytes();
        let (consumer_time, blocked_time) = state.utilisation.read(state.backlog.is_empty());
        QueueStats {
            consumer_time,
            blocked_time,
            memory_bytes,
            messages_ready: state.backlog.len(),
            messages_unacknowledged: state.unacked.len() as u64,
            message_bytes_ready: state.backlog.body_bytes(),
            message_bytes_unacknowledged,
            messages_ready_in_memory: state.backlog.in_memory() as u64,
            consumers: saturating_u32(state.consumers.len()),
            policy: state.policy.clone(),
            counters: state.counters,
        }
    }
}
