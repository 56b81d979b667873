//! A queue as a quorum queue's leader runs it (see `crate::quorum`): its messages arrive
//! once the group committed them, at the offsets the group gave them; what it decides
//! about them (settled, returned) goes to the group through its backing; what does not
//! fit in memory is read back from the group.

use std::sync::Arc;

use super::backlog::{Entry, QuorumBacking};
use super::dead_letter::DeathReason;
use super::{Queue, Woken};
use crate::message::Message;
use crate::queue_arguments::Overflow;

/// A message a quorum queue's group committed.
pub struct Committed {
    pub offset: u64,
    pub message: Arc<Message>,
    pub expires_at: Option<u64>,
    /// An earlier leader may have delivered it.
    pub redelivered: bool,
}

impl Queue {
    /// Makes this queue a quorum queue leader's: decisions go to `backing`, held messages
    /// are read from it; `held` are the group's messages (offset, size) when leadership
    /// began, oldest first.
    pub(crate) fn lead_quorum(
        &self,
        backing: QuorumBacking,
        held: impl IntoIterator<Item = (u64, u64)>,
    ) {
        let mut state = self.state.lock();
        state.backlog.set_quorum(backing);
        state.backlog.hold(held);
    }

    /// Whether this queue is a quorum queue's leader's.
    pub fn leads_quorum(&self) -> bool {
        self.state.lock().backlog.is_quorum()
    }

    /// Whether a quorum queue with `pending` messages (`pending_bytes` of bodies) on their
    /// way to its group takes one more of `bytes` under overflow reject-publish; a refused
    /// one is dead-lettered first under reject-publish-dlx, as RabbitMQ does.
    pub(crate) fn admits(
        self: &Arc<Self>,
        message: &Arc<Message>,
        pending: u64,
        pending_bytes: u64,
    ) -> bool {
        let mut state = self.state.lock();
        let settings = &state.settings;
        if settings.overflow == Overflow::DropHead
            || (settings.max_length.is_none() && settings.max_length_bytes.is_none())
        {
            return true;
        }
        let count = state.backlog.len() + pending;
        let bytes = state.backlog.body_bytes() + pending_bytes + message.body.len() as u64;
        let too_long = settings.max_length.is_some_and(|max| count + 1 > max);
        let too_big = settings.max_length_bytes.is_some_and(|max| bytes > max);
        if !(too_long || too_big) {
            return true;
        }
        if settings.overflow == Overflow::RejectPublishDlx {
            self.add_dead_letter(&mut state, message, DeathReason::MaxLen);
            let dead = std::mem::take(&mut state.dead_letters);
            drop(state);
            self.dead_letter(dead);
        }
        false
    }

    /// The TTL a message published now gets on this queue: its expiry, by the host's
    /// clock.
    pub(crate) fn expiry_of(&self, message: &Message) -> Option<u64> {
        let message_ttl = self.state.lock().settings.message_ttl;
        let ttl = match (message_ttl, message.ttl_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ttl.map(|ttl| self.now_ms().saturating_add(ttl))
    }

    /// Takes messages the group committed, in order, and delivers what it can.
    pub(crate) fn take_committed(self: &Arc<Self>, committed: Vec<Committed>) -> Woken {
        let mut state = self.state.lock();
        if self.is_deleted() {
            return Woken::default();
        }
        for message in committed {
            let level = state.backlog.level_of_message(&message.message);
            state.backlog.push_committed(Entry {
                offset: message.offset,
                message: message.message,
                redelivered: message.redelivered,
                position: None,
                expires_at: message.expires_at,
                delivery_count: 0,
                level,
            });
            state.counters.published += 1;
        }
        self.drop_head(&mut state);
        self.deliver_and_unlock(state)
    }

    /// Messages an earlier leader settled, committed after this one took over: they
    /// leave without a decision of this leader's (the group has decided already).
    pub(crate) fn forget_settled(self: &Arc<Self>, offsets: &[u64]) -> Woken {
        let mut state = self.state.lock();
        let _ = state.backlog.remove_ready(offsets);
        for offset in offsets {
            state.unacked.remove(offset);
        }
        self.deliver_and_unlock(state)
    }

    /// Settles messages a consumer acknowledged that this leader did not deliver (an
    /// earlier leader did): wherever they wait, they go, and the group is told.
    pub fn settle_elsewhere(self: &Arc<Self>, offsets: &[u64]) -> Woken {
        let mut state = self.state.lock();
        let (in_memory, held) = state.backlog.remove_ready(offsets);
        for entry in &in_memory {
            state.backlog.forget(entry);
            state.counters.acked += 1;
        }
        for offset in held {
            state.backlog.forget_offset(offset);
            state.counters.acked += 1;
        }
        self.deliver_and_unlock(state)
    }
}
