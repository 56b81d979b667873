//! What a queue holds and has done, as a management API reports it (RabbitMQ's queue
//! object and its `message_stats`). The counters are plain fields of the queue's state,
//! counted under the lock each operation already holds: nothing is added to the hot path
//! but an increment. A snapshot is read under one acquisition of that lock.

use wharf_amqp::ByteString;

use super::{saturating_u32, Queue};

/// Counts since the queue was created (in this run of the broker).
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
        QueueStats {
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
