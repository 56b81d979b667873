//! Messages leaving a queue: delivered to consumers (by priority, round-robin, with
//! their credit), taken with basic.get, and settled: acked, rejected or requeued.

use std::sync::Arc;

use super::consumer::{Delivery, Offered, Woken};
use super::dead_letter::DeathReason;
use super::{saturating_u64, GetResult, Queue, State};

impl Queue {
    /// Offers ready messages to consumers until either runs out. Channels call this when
    /// they gain credit (an ack, a larger prefetch, flow back on, a drained socket).
    pub fn deliver_ready(self: &Arc<Self>) -> Woken {
        let state = self.state.lock();
        self.deliver_and_unlock(state)
    }

    /// What an operation does last: delivers what it made deliverable, finishes the
    /// change (expiry, timers), releases the lock, then routes the dead letters; returns
    /// what it delivered.
    pub(super) fn deliver_and_unlock(
        self: &Arc<Self>,
        mut state: parking_lot::MutexGuard<'_, State>,
    ) -> Woken {
        self.deliver_locked(&mut state);
        let dead = self.after_change(&mut state);
        let woken = std::mem::take(&mut state.woken);
        drop(state);
        self.dead_letter(dead);
        woken
    }

    pub(super) fn deliver_locked(self: &Arc<Self>, state: &mut State) {
        self.deliver_at(state, &mut None);
    }

    /// Delivers as `deliver_locked`; `now` is the clock reading to judge expiry by, read
    /// when first needed (a message published with a TTL of 0 still goes to a consumer
    /// that can take it at once, as in RabbitMQ: its expiry is judged by the publish's
    /// reading).
    pub(super) fn deliver_at(self: &Arc<Self>, state: &mut State, now: &mut Option<u64>) {
        loop {
            if state.consumers.is_empty() {
                return;
            }
            let Some(level) = state.backlog.head_level() else {
                state.utilisation.unblocked();
                return;
            };
            let head = state
                .backlog
                .front(level)
                .expect("the head's level has one");
            if let Some(at) = head.expires_at {
                if at < *now.get_or_insert_with(|| self.now_ms()) {
                    let entry = state.backlog.pop_front(level).expect("head was checked");
                    self.discard(state, entry, DeathReason::Expired);
                    continue;
                }
            }
            // Consumers are sorted by priority: each message goes to the first group (of
            // one priority) with a consumer that takes it, round robin within the group.
            // With a single active consumer only the first registered one is offered.
            let count = if state.settings.single_active_consumer {
                1
            } else {
                state.consumers.len()
            };
            let mut delivered = false;
            let mut group_start = 0;
            while group_start < count && !delivered {
                let priority = state.consumers[group_start].priority;
                let group_len = state.consumers[group_start..count]
                    .iter()
                    .take_while(|c| c.priority == priority)
                    .count();
                let group = group_start..group_start + group_len;
                let first = if group.contains(&state.next_consumer) {
                    state.next_consumer - group_start
                } else {
                    0
                };
                for attempt in 0..group_len {
                    let index = group_start + (first + attempt) % group_len;
                    let State {
                        backlog,
                        consumers,
                        woken,
                        ..
                    } = &mut *state;
                    let (Some(entry), consumer) = (backlog.front(level), &consumers[index]) else {
                        return;
                    };
                    let offered = consumer.target.try_deliver(Delivery {
                        queue: self,
                        consumer_tag: &consumer.tag,
                        offset: entry.offset,
                        message: &entry.message,
                        redelivered: entry.redelivered,
                        no_ack: consumer.no_ack,
                    });
                    if offered != Offered::Refused {
                        woken.note(offered);
                        let no_ack = consumer.no_ack;
                        let entry = backlog.pop_front(level).expect("head was checked above");
                        let counters = &mut state.counters;
                        match no_ack {
                            true => counters.delivered_no_ack += 1,
                            false => counters.delivered += 1,
                        }
                        counters.redelivered += u64::from(entry.redelivered);
                        if no_ack {
                            state.backlog.forget(&entry);
                        } else {
                            state.unacked.insert(entry.offset, entry);
                        }
                        state.next_consumer = group_start + (index - group_start + 1) % group_len;
                        state.utilisation.unblocked();
                        delivered = true;
                        break;
                    }
                }
                group_start += group_len;
            }
            if !delivered {
                // Messages wait that no consumer can take now.
                state.utilisation.blocked();
                return;
            }
        }
    }

    /// basic.get: takes the head message, if any.
    pub fn get(self: &Arc<Self>, no_ack: bool) -> Option<GetResult> {
        let mut state = self.state.lock();
        self.touch_locked(&mut state);
        self.expire_head(&mut state, self.now_ms());
        let mut result = self.get_locked(&mut state, no_ack);
        if result.is_none() {
            state.counters.get_empty += 1;
        }
        let dead = self.after_change(&mut state);
        if let Some(result) = &mut result {
            // As RabbitMQ: counted after the new head, if expired, went.
            result.message_count = saturating_u64(state.backlog.len());
        }
        drop(state);
        self.dead_letter(dead);
        result
    }

    /// What the management API's "get messages" does: takes up to `count` messages (all
    /// with None), then settles them together as `then` says (requeued, they are back
    /// at the head, in order, marked redelivered).
    pub fn take_and_settle(
        self: &Arc<Self>,
        count: Option<usize>,
        then: super::remote::Settle,
    ) -> Vec<GetResult> {
        let mut taken = Vec::new();
        while count.is_none_or(|count| taken.len() < count) {
            let Some(got) = self.get(false) else {
                break;
            };
            taken.push(got);
        }
        if !taken.is_empty() {
            let offsets: Vec<u64> = taken.iter().map(|got| got.offset).collect();
            match then {
                super::remote::Settle::Requeue => self.requeue(&offsets),
                super::remote::Settle::Ack => self.ack(&offsets),
                super::remote::Settle::Reject => self.reject(&offsets),
            };
        }
        taken
    }

    pub(super) fn get_locked(&self, state: &mut State, no_ack: bool) -> Option<GetResult> {
        let entry = state.backlog.pop_head()?;
        // As quorum queues: basic.get shows the count from the first delivery on (consumers
        // see it once a delivery has been requeued).
        let message = if state.settings.counts_deliveries() && entry.delivery_count == 0 {
            Arc::new(entry.message.with_delivery_count(0))
        } else {
            entry.message.clone()
        };
        match no_ack {
            true => state.counters.got_no_ack += 1,
            false => state.counters.got += 1,
        }
        state.counters.redelivered += u64::from(entry.redelivered);
        let result = GetResult {
            offset: entry.offset,
            message,
            redelivered: entry.redelivered,
            message_count: saturating_u64(state.backlog.len()),
        };
        if no_ack {
            state.backlog.forget(&entry);
        } else {
            state.unacked.insert(entry.offset, entry);
        }
        Some(result)
    }

    /// Forgets acknowledged messages, then delivers what the freed credit allows, under
    /// one lock. Unknown offsets (already gone with a purge or a deletion) are ignored:
    /// the channel has already validated its delivery tags.
    pub fn ack(self: &Arc<Self>, offsets: &[u64]) -> Woken {
        let mut state = self.state.lock();
        for offset in offsets {
            if let Some(entry) = state.unacked.remove(offset) {
                state.backlog.forget(&entry);
                state.counters.acked += 1;
            }
        }
        // One write for the batch's acks, rather than one per ack.
        state.backlog.write_acks();
        self.deliver_and_unlock(state)
    }

    /// basic.reject / basic.nack without requeue: the messages leave the queue, to its
    /// dead-letter exchange if it has one.
    pub fn reject(self: &Arc<Self>, offsets: &[u64]) -> Woken {
        let mut state = self.state.lock();
        for offset in offsets {
            if let Some(entry) = state.unacked.remove(offset) {
                self.discard(&mut state, entry, DeathReason::Rejected);
            }
        }
        state.backlog.write_acks();
        self.deliver_and_unlock(state)
    }

    /// Puts delivered messages back in their original places, marked redelivered, and
    /// delivers again.
    pub fn requeue(self: &Arc<Self>, offsets: &[u64]) -> Woken {
        let mut state = self.state.lock();
        for offset in offsets {
            let Some(mut entry) = state.unacked.remove(offset) else {
                continue;
            };
            entry.redelivered = true;
            entry.delivery_count = entry.delivery_count.saturating_add(1);
            if let Some(limit) = state.settings.delivery_limit {
                if u64::from(entry.delivery_count) > limit {
                    self.discard(&mut state, entry, DeathReason::DeliveryLimit);
                    continue;
                }
            }
            if state.settings.counts_deliveries() {
                entry.message = Arc::new(entry.message.with_delivery_count(entry.delivery_count));
            }
            state.backlog.returned(entry.offset);
            state.backlog.requeue(entry);
        }
        state.backlog.write_acks();
        self.deliver_and_unlock(state)
    }

    /// Takes the head message to place it elsewhere (the management API's move): as
    /// basic.get with manual ack, but the message as it was published, without the
    /// delivery count a quorum queue's get adds. [`Queue::ack`] or [`Queue::put_back`]
    /// settles it.
    pub fn take(self: &Arc<Self>) -> Option<GetResult> {
        let mut result = self.get(false)?;
        if let Some(entry) = self.state.lock().unacked.get(&result.offset) {
            result.message = entry.message.clone();
        }
        Some(result)
    }

    /// Puts messages taken with [`Queue::take`] back in their places as they were: not
    /// redelivered, no delivery counted (they were never delivered to anyone).
    pub fn put_back(self: &Arc<Self>, offsets: &[u64]) -> Woken {
        let mut state = self.state.lock();
        for offset in offsets {
            if let Some(entry) = state.unacked.remove(offset) {
                state.backlog.requeue(entry);
            }
        }
        self.deliver_and_unlock(state)
    }

    /// Removes every ready message; returns how many there were.
    pub fn purge(&self) -> u32 {
        let mut state = self.state.lock();
        let purged = state.backlog.purge();
        // Nothing waits any more.
        state.utilisation.unblocked();
        saturating_u64(purged)
    }
}
