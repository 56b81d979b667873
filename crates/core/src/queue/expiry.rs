//! Time in a queue: messages at the head that expired, the queue's own `x-expires`, and
//! the one timer a queue keeps pending for whichever falls due first.

use std::sync::Arc;

use super::dead_letter::{DeadLetter, DeathReason};
use super::{Queue, State};

impl Queue {
    /// What every operation that changes the queue does before releasing the lock: drops
    /// the expired messages at the head, makes sure a timer is set for the next expiry
    /// (of the head message, or of the queue itself), and takes the dead letters to route
    /// once the lock is released.
    pub(super) fn after_change(self: &Arc<Self>, state: &mut State) -> Vec<DeadLetter> {
        let head_expires = state.backlog.may_expire()
            && state.backlog.head().is_some_and(|e| e.expires_at.is_some());
        if head_expires || state.settings.expires.is_some() {
            self.expire_head(state, self.now_ms());
            self.arm_timer(state);
        }
        if state.backlog.is_empty() {
            // Nothing waits any more (what waited expired or left).
            state.utilisation.unblocked();
        }
        std::mem::take(&mut state.dead_letters)
    }

    /// Drops (or dead-letters) the messages at the head that expired by `now`.
    pub(super) fn expire_head(&self, state: &mut State, now: u64) {
        let mut expired = false;
        while let Some(entry) = state.backlog.head() {
            if entry.expires_at.is_none_or(|at| at > now) {
                break;
            }
            let entry = state.backlog.pop_head().expect("head was checked");
            self.discard(state, entry, DeathReason::Expired);
            expired = true;
        }
        if expired {
            state.backlog.write_acks();
        }
    }

    /// Schedules a timer task for the next time something is due: the head message's
    /// expiry, or the queue's own (`x-expires`, counted while it has no consumers).
    pub(super) fn arm_timer(self: &Arc<Self>, state: &mut State) {
        let head = state.backlog.head().and_then(|e| e.expires_at);
        let idle = match state.settings.expires {
            Some(expires) if state.consumers.is_empty() => {
                Some(state.last_used_ms.saturating_add(expires))
            }
            _ => None,
        };
        let next = match (head, idle) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        if state.wake_at.is_some_and(|at| at <= next) {
            return;
        }
        let Some(host) = self.home.upgrade() else {
            return;
        };
        state.wake_at = Some(next);
        let queue = Arc::downgrade(self);
        host.schedule_at_ms(
            next,
            Box::new(move || {
                if let Some(queue) = queue.upgrade() {
                    queue.run_due();
                }
            }),
        );
    }

    /// Does what is due (a timer task; also run once a queue is restored): expires
    /// messages at the head, or the queue itself once it has been unused for its
    /// `x-expires`, and sets the timer for what comes next.
    pub(crate) fn run_due(self: &Arc<Self>) {
        if self.is_deleted() {
            return;
        }
        let mut state = self.state.lock();
        state.wake_at = None;
        if let Some(expires) = state.settings.expires {
            if state.consumers.is_empty()
                && self.now_ms() >= state.last_used_ms.saturating_add(expires)
            {
                drop(state);
                if let Some(host) = self.home.upgrade() {
                    tracing::debug!(queue = %self.name, "queue expired (x-expires)");
                    host.queue_expired(self);
                }
                return;
            }
        }
        // Nobody waits on what a timer delivered.
        let _ = self.deliver_and_unlock(state);
    }

    /// Notes that the queue was used (declared, consumed from, read with basic.get): its
    /// `x-expires` counts from now.
    pub fn touch(self: &Arc<Self>) {
        let mut state = self.state.lock();
        self.touch_locked(&mut state);
    }

    pub(super) fn touch_locked(self: &Arc<Self>, state: &mut State) {
        if state.settings.expires.is_some() {
            state.last_used_ms = self.now_ms();
            self.arm_timer(state);
        }
    }
}
