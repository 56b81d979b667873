//! What leaves a queue for its dead-letter exchange, and why. The queue gathers these
//! under its lock and hands them to its host (the vhost) once the lock is released; the
//! vhost routes them (`vhost::dead_lettering`).

use std::sync::Arc;

use wharf_amqp::ByteString;

use super::backlog::Entry;
use super::{Queue, State};
use crate::message::Message;

/// Why a message was dead-lettered: the `reason` of its `x-death` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// basic.reject or basic.nack with requeue=false.
    Rejected,
    /// Its TTL ran out.
    Expired,
    /// The queue's length limit pushed it out (or refused it, with reject-publish-dlx).
    MaxLen,
    /// It was requeued more times than the queue's `x-delivery-limit`.
    DeliveryLimit,
}

impl DeathReason {
    /// Every reason, in the order of [`DeathReason::index`].
    pub const ALL: [DeathReason; 4] = [
        DeathReason::Rejected,
        DeathReason::Expired,
        DeathReason::MaxLen,
        DeathReason::DeliveryLimit,
    ];

    /// Its place in per-reason counts.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message on its way out of a queue, to that queue's dead-letter exchange.
pub struct DeadLetter {
    pub message: Arc<Message>,
    pub reason: DeathReason,
    /// The queue's dead-letter exchange and routing key when the message left.
    pub exchange: ByteString,
    pub routing_key: Option<ByteString>,
}

impl Queue {
    /// A message leaves the queue without being consumed: forgotten, and handed to the
    /// dead-letter exchange if there is one.
    pub(super) fn discard(&self, state: &mut State, entry: Entry, reason: DeathReason) {
        state.backlog.forget(&entry);
        self.add_dead_letter(state, &entry.message, reason);
    }

    pub(super) fn add_dead_letter(
        &self,
        state: &mut State,
        message: &Arc<Message>,
        reason: DeathReason,
    ) {
        let counts = match state.settings.dead_letter_exchange {
            Some(_) => &mut state.counters.dead_lettered,
            None => &mut state.counters.discarded,
        };
        counts[reason.index()] += 1;
        if let Some(exchange) = &state.settings.dead_letter_exchange {
            state.dead_letters.push(DeadLetter {
                message: message.clone(),
                reason,
                exchange: exchange.clone(),
                routing_key: state.settings.dead_letter_routing_key.clone(),
            });
        }
    }

    /// Routes dead letters to the dead-letter exchange; called without the queue's lock.
    pub(super) fn dead_letter(&self, letters: Vec<DeadLetter>) {
        if letters.is_empty() {
            return;
        }
        if let Some(host) = self.home.upgrade() {
            host.dead_letter(self, letters);
        }
    }
}
