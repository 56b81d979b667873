//! A message arriving at a queue: deduplicated, given its expiry, stored (in memory and
//! in the queue's log), held to the queue's length limits (drop-head, reject-publish),
//! and handed to a waiting consumer at once when there is one.

use std::sync::Arc;

use super::consumer::Woken;
use super::dead_letter::DeathReason;
use super::{dedup, Enqueued, Queue, State};
use crate::message::Message;
use crate::queue_arguments::Overflow;

impl Queue {
    /// Appends a message and delivers whatever the consumers can take. A persistent message
    /// in a durable queue is written to its log first; any message goes only to the log
    /// when the in-memory window is full.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> (Enqueued, Woken) {
        let mut guard = self.state.lock();
        let enqueued = self.publish_locked(&mut guard, message);
        let dead = self.after_change(&mut guard);
        let woken = std::mem::take(&mut guard.woken);
        // Hand the lock to a waiting consumer's channel (an ack, a delivery) rather than
        // letting this publisher take it straight back: a publisher that never pauses
        // would otherwise starve the consumers of its queue.
        parking_lot::MutexGuard::unlock_fair(guard);
        self.dead_letter(dead);
        (enqueued, woken)
    }

    pub(super) fn publish_locked(
        self: &Arc<Self>,
        state: &mut State,
        message: Arc<Message>,
    ) -> Enqueued {
        if self.is_deleted() {
            return Enqueued::Failed;
        }
        // The clock is read only for a message that can expire or be a duplicate.
        let mut now = None;
        let mut remembered = None;
        if let Some(seen) = &mut state.seen {
            if let Some(key) = dedup::key_of(&message) {
                if seen.seen(key.clone(), *now.get_or_insert_with(|| self.now_ms())) {
                    // Stored once already: the publisher hears it is safe, once what it
                    // duplicates is (a persistent message in a durable queue waits for the
                    // queue's next sync).
                    let durable = self.options.durable && self.options.exclusive_owner.is_none();
                    return if durable && (message.is_persistent() || state.settings.quorum) {
                        Enqueued::Appended
                    } else {
                        Enqueued::InMemory
                    };
                }
                remembered = Some(key);
            }
        }
        let outcome = self.store_locked(state, message, &mut now);
        if matches!(outcome, Enqueued::Failed | Enqueued::Rejected) {
            // Not stored: a retry of it is not a duplicate.
            if let (Some(seen), Some(key)) = (&mut state.seen, remembered) {
                seen.forget(&key);
            }
        }
        outcome
    }

    /// Enqueues a message that is not a duplicate, within the queue's limits.
    pub(super) fn store_locked(
        self: &Arc<Self>,
        state: &mut State,
        message: Arc<Message>,
        now: &mut Option<u64>,
    ) -> Enqueued {
        let ttl = match (state.settings.message_ttl, message.ttl_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let expires_at =
            ttl.map(|ttl| now.get_or_insert_with(|| self.now_ms()).saturating_add(ttl));
        let (max_length, max_length_bytes, overflow) = (
            state.settings.max_length,
            state.settings.max_length_bytes,
            state.settings.overflow,
        );
        if max_length.is_none() && max_length_bytes.is_none() {
            return self.enqueue_locked(state, message, expires_at, now);
        }
        if overflow != Overflow::DropHead {
            // As RabbitMQ, a full queue refuses before any consumer is offered the message
            // (a limit of 0 refuses everything, waiting consumer or not).
            let count = state.backlog.len();
            let bytes = state.backlog.body_bytes() + message.body.len() as u64;
            let too_long = max_length.is_some_and(|max| count + 1 > max);
            let too_big = max_length_bytes.is_some_and(|max| bytes > max);
            if too_long || too_big {
                if overflow == Overflow::RejectPublishDlx {
                    self.add_dead_letter(state, &message, DeathReason::MaxLen);
                }
                return Enqueued::Rejected;
            }
            return self.enqueue_locked(state, message, expires_at, now);
        }
        let outcome = self.enqueue_locked(state, message, expires_at, now);
        self.drop_head(state);
        outcome
    }

    /// Whether the ready messages are over the queue's length or byte limit.
    pub(super) fn over_limit(&self, state: &State) -> bool {
        let count = state.backlog.len();
        state.settings.max_length.is_some_and(|max| count > max)
            || state
                .settings
                .max_length_bytes
                .is_some_and(|max| state.backlog.body_bytes() > max)
    }

    /// Drops messages from the head (the oldest, of the highest priority) until the queue
    /// is within its limits (RabbitMQ's drop-head); they are dead-lettered if the queue
    /// has a dead-letter exchange.
    pub(super) fn drop_head(&self, state: &mut State) {
        while self.over_limit(state) {
            let Some(entry) = state.backlog.pop_head() else {
                break;
            };
            self.discard(state, entry, DeathReason::MaxLen);
        }
        state.backlog.write_acks();
    }

    pub(super) fn enqueue_locked(
        self: &Arc<Self>,
        state: &mut State,
        message: Arc<Message>,
        expires_at: Option<u64>,
        now: &mut Option<u64>,
    ) -> Enqueued {
        let outcome = state.backlog.push(message, expires_at);
        if outcome != Enqueued::Failed {
            state.counters.published += 1;
            self.deliver_at(state, now);
        }
        outcome
    }
}
