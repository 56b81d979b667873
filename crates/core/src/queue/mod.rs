//! A queue: messages ready for delivery (its backlog, by priority, in memory and on
//! disk), messages delivered but not yet acknowledged, and the consumers it serves. All of
//! it sits behind one mutex owned by the queue; publishers, consumers' channels and
//! management reach it through `Arc<Queue>` and hold the lock only for the few
//! operations below.

mod backlog;
pub mod consumer;
pub mod dead_letter;
pub mod dedup;
mod host;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use wharf_amqp::{ByteString, FieldTable};
use wharf_store::queue_log::QueueLog;

pub use self::backlog::level_dir;
use self::backlog::{Backlog, Entry};

use self::consumer::{Consumer, Delivery, DeliveryTarget};
use self::dead_letter::{DeadLetter, DeathReason};
pub use self::host::QueueHost;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::queue_arguments::{consumer_priority, Overflow, QueueSettings};

/// How many ready messages a queue keeps in memory: beyond this many (or bytes), new
/// messages wait in the queue's log only and are read back as the queue drains, so memory
/// stays flat however deep the queue gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub messages_max: usize,
    pub bytes_max: usize,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            messages_max: 10_000,
            bytes_max: 8 * 1024 * 1024,
        }
    }
}

/// A queue's log segments roll over at this size, unless the broker's configuration says
/// otherwise.
pub const SEGMENT_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Identifies the connection that owns an exclusive queue.
pub type ConnectionId = u64;

#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub durable: bool,
    pub exclusive_owner: Option<ConnectionId>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// What publishing did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Kept in memory only (transient message, or a queue without a log).
    InMemory,
    /// Appended to the queue's log; durable once the log is synced.
    Appended,
    /// The queue is gone, or its log could not be written: the publisher must be told.
    Failed,
    /// The queue is at its length limit and its overflow is reject-publish: the publisher
    /// gets basic.nack.
    Rejected,
}

struct State {
    /// What the queue's arguments and its policy ask of it.
    settings: QueueSettings,
    /// The policy applied, if any.
    policy: Option<ByteString>,
    /// The ready messages.
    backlog: Backlog,
    unacked: HashMap<u64, Entry>,
    consumers: Vec<Consumer>,
    /// Round-robin cursor into `consumers`.
    next_consumer: usize,
    /// Set once a consumer has attached: an auto-delete queue only goes when that happened.
    had_consumer: bool,
    /// Messages that left the queue (expired, rejected, dropped) for its dead-letter
    /// exchange, routed once the lock is released.
    dead_letters: Vec<DeadLetter>,
    /// The earliest time a timer task is already scheduled for this queue.
    wake_at: Option<u64>,
    /// When the queue was last used (declared, consumed from, read with basic.get), for
    /// `x-expires`.
    last_used_ms: u64,
    /// The message keys seen within the deduplication window, if the queue has one.
    seen: Option<dedup::SeenKeys>,
}

/// A message handed out by basic.get.
pub struct GetResult {
    pub offset: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Ready messages left after this one.
    pub message_count: u32,
}

/// What removing a consumer left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerRemoved {
    NotFound,
    Removed,
    /// The last consumer of an auto-delete queue left: the vhost should delete it.
    RemovedLastOfAutoDelete,
}

pub struct Queue {
    pub name: ByteString,
    pub vhost: ByteString,
    pub options: QueueOptions,
    /// The vhost the queue lives in: dead letters are routed there, timers run there.
    home: Weak<dyn QueueHost>,
    deleted: AtomicBool,
    state: Mutex<State>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .field("vhost", &self.vhost)
            .finish()
    }
}

impl Queue {
    pub fn new(
        name: ByteString,
        vhost: ByteString,
        options: QueueOptions,
        window: Window,
        home: Weak<dyn QueueHost>,
    ) -> Self {
        let settings = QueueSettings::from_arguments(&options.arguments).unwrap_or_default();
        let levels = settings.max_priority.map_or(1, |max| usize::from(max) + 1);
        let state = State {
            settings: settings.clone(),
            policy: None,
            backlog: Backlog::new(name.clone(), levels, window),
            unacked: HashMap::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            had_consumer: false,
            dead_letters: Vec::new(),
            wake_at: None,
            last_used_ms: match (settings.expires, home.upgrade()) {
                (Some(_), Some(host)) => host.now_ms(),
                (Some(_), None) => crate::timer::now_ms(),
                (None, _) => 0,
            },
            seen: settings
                .deduplication
                .map(|(window, capacity)| dedup::SeenKeys::new(window, capacity)),
        };
        Queue {
            name,
            vhost,
            options,
            home,
            deleted: AtomicBool::new(false),
            state: Mutex::new(state),
        }
    }

    /// Now, by the host's clock (the system's once the host is gone).
    fn now_ms(&self) -> u64 {
        match self.home.upgrade() {
            Some(host) => host.now_ms(),
            None => crate::timer::now_ms(),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub fn message_count(&self) -> u32 {
        saturating_u64(self.state.lock().backlog.len())
    }

    /// Ready messages held in memory (the rest of `message_count` waits in the log).
    pub fn in_memory_count(&self) -> usize {
        self.state.lock().backlog.in_memory()
    }

    /// How many priority levels the queue keeps (1 without `x-max-priority`).
    pub fn priority_levels(&self) -> usize {
        self.state.lock().backlog.level_count()
    }

    pub fn consumer_count(&self) -> u32 {
        saturating_u32(self.state.lock().consumers.len())
    }

    pub fn unacked_count(&self) -> usize {
        self.state.lock().unacked.len()
    }

    /// Refuses access from a connection other than the owner of an exclusive queue.
    pub fn check_owner(&self, connection: ConnectionId) -> Result<()> {
        match self.options.exclusive_owner {
            Some(owner) if owner != connection => Err(Error::locked(format_args!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be \
                 originally declared on another connection or the exclusive property value does \
                 not match that of the original declaration.",
                self.name, self.vhost
            ))),
            _ => Ok(()),
        }
    }

    /// Appends a message and delivers whatever the consumers can take. A persistent message
    /// in a durable queue is written to its log first; any message goes only to the log
    /// when the in-memory window is full.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> Enqueued {
        let mut guard = self.state.lock();
        let enqueued = self.publish_locked(&mut guard, message);
        let dead = self.after_change(&mut guard);
        // Hand the lock to a waiting consumer's channel (an ack, a delivery) rather than
        // letting this publisher take it straight back: a publisher that never pauses
        // would otherwise starve the consumers of its queue.
        parking_lot::MutexGuard::unlock_fair(guard);
        self.dead_letter(dead);
        enqueued
    }

    fn publish_locked(self: &Arc<Self>, state: &mut State, message: Arc<Message>) -> Enqueued {
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
                    return if durable && message.is_persistent() {
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
    fn store_locked(
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
    fn over_limit(&self, state: &State) -> bool {
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
    fn drop_head(&self, state: &mut State) {
        while self.over_limit(state) {
            let Some(entry) = state.backlog.pop_head() else {
                break;
            };
            self.discard(state, entry, DeathReason::MaxLen);
        }
        state.backlog.write_acks();
    }

    /// A message leaves the queue without being consumed: forgotten, and handed to the
    /// dead-letter exchange if there is one.
    fn discard(&self, state: &mut State, entry: Entry, reason: DeathReason) {
        state.backlog.forget(&entry);
        self.add_dead_letter(state, &entry.message, reason);
    }

    fn add_dead_letter(&self, state: &mut State, message: &Arc<Message>, reason: DeathReason) {
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
    fn dead_letter(&self, letters: Vec<DeadLetter>) {
        if letters.is_empty() {
            return;
        }
        if let Some(host) = self.home.upgrade() {
            host.dead_letter(self, letters);
        }
    }

    /// What every operation that changes the queue does before releasing the lock: drops
    /// the expired messages at the head, makes sure a timer is set for the next expiry
    /// (of the head message, or of the queue itself), and takes the dead letters to route
    /// once the lock is released.
    fn after_change(self: &Arc<Self>, state: &mut State) -> Vec<DeadLetter> {
        let head_expires = state.backlog.may_expire()
            && state.backlog.head().is_some_and(|e| e.expires_at.is_some());
        if head_expires || state.settings.expires.is_some() {
            self.expire_head(state, self.now_ms());
            self.arm_timer(state);
        }
        std::mem::take(&mut state.dead_letters)
    }

    /// Drops (or dead-letters) the messages at the head that expired by `now`.
    fn expire_head(&self, state: &mut State, now: u64) {
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
    fn arm_timer(self: &Arc<Self>, state: &mut State) {
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
        self.deliver_locked(&mut state);
        let dead = self.after_change(&mut state);
        drop(state);
        self.dead_letter(dead);
    }

    /// Applies a policy, or none: the queue's settings become its own arguments with the
    /// policy's definition laid over them. A lower limit drops what is over it at once; a
    /// new TTL applies to messages published from now on (as in RabbitMQ, a message's
    /// expiry is fixed when it is enqueued).
    pub fn apply_policy(self: &Arc<Self>, policy: Option<&crate::policy::Policy>) {
        let own = QueueSettings::from_arguments(&self.options.arguments).unwrap_or_default();
        let settings = match policy {
            Some(policy) => own.with_policy(&policy.definition),
            None => own,
        };
        let mut state = self.state.lock();
        state.policy = policy.map(|p| p.name.clone());
        if state.settings == settings {
            return;
        }
        if settings.expires != state.settings.expires {
            // A new expiry counts from now, as RabbitMQ restarts it.
            state.last_used_ms = self.now_ms();
        }
        state.settings = settings;
        self.drop_head(&mut state);
        self.deliver_locked(&mut state);
        let dead = self.after_change(&mut state);
        drop(state);
        self.dead_letter(dead);
    }

    /// The name of the policy that applies to the queue, if one does.
    pub fn policy(&self) -> Option<ByteString> {
        self.state.lock().policy.clone()
    }

    /// Notes that the queue was used (declared, consumed from, read with basic.get): its
    /// `x-expires` counts from now.
    pub fn touch(self: &Arc<Self>) {
        let mut state = self.state.lock();
        self.touch_locked(&mut state);
    }

    fn touch_locked(self: &Arc<Self>, state: &mut State) {
        if state.settings.expires.is_some() {
            state.last_used_ms = self.now_ms();
            self.arm_timer(state);
        }
    }

    fn enqueue_locked(
        self: &Arc<Self>,
        state: &mut State,
        message: Arc<Message>,
        expires_at: Option<u64>,
        now: &mut Option<u64>,
    ) -> Enqueued {
        let outcome = state.backlog.push(message, expires_at);
        if outcome != Enqueued::Failed {
            self.deliver_at(state, now);
        }
        outcome
    }

    /// The queue's log could not be opened (the error was logged).
    pub fn mark_log_broken(&self) {
        self.state.lock().backlog.mark_log_broken();
    }

    /// Lets a transient queue spill messages to disk under `dir` when its window fills.
    pub fn set_spill_dir(&self, dir: std::path::PathBuf) {
        self.state.lock().backlog.set_spill_dir(dir);
    }

    /// Gives a durable queue the log of one of its priority levels (level 0 without
    /// priorities); what the log held is read back as the queue drains and comes back
    /// redelivered (it may have been delivered before the restart). Returns how many
    /// messages the log held.
    pub fn attach_log(&self, level: usize, log: QueueLog) -> u64 {
        let mut state = self.state.lock();
        let count_bytes = state.settings.max_length_bytes.is_some();
        state.backlog.attach_log(level, log, count_bytes)
    }

    /// Offers ready messages to consumers until either runs out. Channels call this when
    /// they gain credit (an ack, a larger prefetch, flow back on, a drained socket).
    pub fn deliver_ready(self: &Arc<Self>) {
        let mut state = self.state.lock();
        self.deliver_locked(&mut state);
        let dead = self.after_change(&mut state);
        drop(state);
        self.dead_letter(dead);
    }

    fn deliver_locked(self: &Arc<Self>, state: &mut State) {
        self.deliver_at(state, &mut None);
    }

    /// Delivers as `deliver_locked`; `now` is the clock reading to judge expiry by, read
    /// when first needed (a message published with a TTL of 0 still goes to a consumer
    /// that can take it at once, as in RabbitMQ: its expiry is judged by the publish's
    /// reading).
    fn deliver_at(self: &Arc<Self>, state: &mut State, now: &mut Option<u64>) {
        loop {
            if state.consumers.is_empty() {
                return;
            }
            let Some(level) = state.backlog.head_level() else {
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
                        backlog, consumers, ..
                    } = &mut *state;
                    let (Some(entry), consumer) = (backlog.front(level), &consumers[index]) else {
                        return;
                    };
                    let accepted = consumer.target.try_deliver(Delivery {
                        queue: self,
                        consumer_tag: &consumer.tag,
                        offset: entry.offset,
                        message: &entry.message,
                        redelivered: entry.redelivered,
                        no_ack: consumer.no_ack,
                    });
                    if accepted {
                        let no_ack = consumer.no_ack;
                        let entry = backlog.pop_front(level).expect("head was checked above");
                        if no_ack {
                            state.backlog.forget(&entry);
                        } else {
                            state.unacked.insert(entry.offset, entry);
                        }
                        state.next_consumer = group_start + (index - group_start + 1) % group_len;
                        delivered = true;
                        break;
                    }
                }
                group_start += group_len;
            }
            if !delivered {
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
        let dead = self.after_change(&mut state);
        if let Some(result) = &mut result {
            // As RabbitMQ: counted after the new head, if expired, went.
            result.message_count = saturating_u64(state.backlog.len());
        }
        drop(state);
        self.dead_letter(dead);
        result
    }

    fn get_locked(&self, state: &mut State, no_ack: bool) -> Option<GetResult> {
        let entry = state.backlog.pop_head()?;
        // As quorum queues: basic.get shows the count from the first delivery on (consumers
        // see it once a delivery has been requeued).
        let message = if state.settings.counts_deliveries() && entry.delivery_count == 0 {
            Arc::new(entry.message.with_delivery_count(0))
        } else {
            entry.message.clone()
        };
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
    pub fn ack(self: &Arc<Self>, offsets: &[u64]) {
        let mut state = self.state.lock();
        for offset in offsets {
            if let Some(entry) = state.unacked.remove(offset) {
                state.backlog.forget(&entry);
            }
        }
        // One write for the batch's acks, rather than one per ack.
        state.backlog.write_acks();
        self.deliver_locked(&mut state);
        let dead = self.after_change(&mut state);
        drop(state);
        self.dead_letter(dead);
    }

    /// basic.reject / basic.nack without requeue: the messages leave the queue, to its
    /// dead-letter exchange if it has one.
    pub fn reject(self: &Arc<Self>, offsets: &[u64]) {
        let mut state = self.state.lock();
        for offset in offsets {
            if let Some(entry) = state.unacked.remove(offset) {
                self.discard(&mut state, entry, DeathReason::Rejected);
            }
        }
        state.backlog.write_acks();
        self.deliver_locked(&mut state);
        let dead = self.after_change(&mut state);
        drop(state);
        self.dead_letter(dead);
    }

    /// Puts delivered messages back in their original places, marked redelivered, and
    /// delivers again.
    pub fn requeue(self: &Arc<Self>, offsets: &[u64]) {
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
            state.backlog.requeue(entry);
        }
        state.backlog.write_acks();
        self.deliver_locked(&mut state);
        let dead = self.after_change(&mut state);
        drop(state);
        self.dead_letter(dead);
    }

    /// Removes every ready message; returns how many there were.
    pub fn purge(&self) -> u32 {
        saturating_u64(self.state.lock().backlog.purge())
    }

    pub fn add_consumer(self: &Arc<Self>, mut consumer: Consumer) -> Result<()> {
        consumer.priority = consumer_priority(&consumer.arguments).map_err(|(arg, reason)| {
            Error::precondition(format_args!(
                "invalid arg '{arg}' for queue '{}' in vhost '{}': {reason}",
                self.name, self.vhost
            ))
        })?;
        let mut state = self.state.lock();
        if self.is_deleted() {
            return Err(Error::not_found(format_args!(
                "no queue '{}' in vhost '{}'",
                self.name, self.vhost
            )));
        }
        let locked = state.consumers.iter().any(|c| c.exclusive)
            || (consumer.exclusive && !state.consumers.is_empty());
        if locked {
            return Err(Error::access_refused(format_args!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        // Kept in descending priority, in registration order within one priority (with a
        // single active consumer, in registration order only: the first is the active one).
        let at = if state.settings.single_active_consumer {
            state.consumers.len()
        } else {
            state
                .consumers
                .partition_point(|c| c.priority >= consumer.priority)
        };
        if state.next_consumer >= at && !state.consumers.is_empty() && at < state.consumers.len() {
            state.next_consumer += 1;
        }
        state.consumers.insert(at, consumer);
        state.had_consumer = true;
        self.touch_locked(&mut state);
        self.deliver_locked(&mut state);
        let dead = self.after_change(&mut state);
        drop(state);
        self.dead_letter(dead);
        Ok(())
    }

    pub fn remove_consumer(
        self: &Arc<Self>,
        target: &Arc<dyn DeliveryTarget>,
        tag: &str,
    ) -> ConsumerRemoved {
        let mut state = self.state.lock();
        let Some(at) = state.consumers.iter().position(|c| c.is(target, tag)) else {
            return ConsumerRemoved::NotFound;
        };
        state.consumers.remove(at);
        if state.next_consumer > at {
            state.next_consumer -= 1;
        }
        if state.consumers.is_empty() {
            state.next_consumer = 0;
            if self.options.auto_delete && state.had_consumer {
                return ConsumerRemoved::RemovedLastOfAutoDelete;
            }
            // x-expires counts from when the last consumer left.
            self.touch_locked(&mut state);
        }
        if at == 0 && state.settings.single_active_consumer {
            // The next consumer in registration order takes over at once.
            self.deliver_locked(&mut state);
        }
        let dead = self.after_change(&mut state);
        drop(state);
        self.dead_letter(dead);
        ConsumerRemoved::Removed
    }

    /// Checks queue.delete's if-unused and if-empty conditions.
    pub fn check_deletable(&self, if_unused: bool, if_empty: bool) -> Result<()> {
        let state = self.state.lock();
        if if_unused && !state.consumers.is_empty() {
            return Err(Error::precondition(format_args!(
                "queue '{}' in vhost '{}' in use",
                self.name, self.vhost
            )));
        }
        if if_empty && !state.backlog.is_empty() {
            return Err(Error::precondition(format_args!(
                "queue '{}' in vhost '{}' not empty",
                self.name, self.vhost
            )));
        }
        Ok(())
    }

    /// Marks the queue deleted, drops its messages and tells its consumers they are
    /// cancelled. Returns the number of ready messages it held.
    pub fn mark_deleted(&self) -> u32 {
        let (count, consumers) = {
            let mut state = self.state.lock();
            self.deleted.store(true, Ordering::Release);
            let count = saturating_u64(state.backlog.len());
            state.backlog.destroy();
            state.unacked.clear();
            (count, std::mem::take(&mut state.consumers))
        };
        // Outside the lock: targets may take their own locks while handling this.
        for consumer in consumers {
            consumer.target.consumer_cancelled(&consumer.tag);
        }
        count
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn saturating_u64(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl crate::flusher::SyncTarget for Queue {
    /// fsyncs what was appended to the log so far (the flusher calls this outside the
    /// publish path). Returns false if that failed.
    fn sync_appends(&self) -> bool {
        let handles = match self.state.lock().backlog.take_sync_handles() {
            Ok(handles) => handles,
            Err(error) => {
                tracing::error!(queue = %self.name, %error, "cannot sync the message log");
                return false;
            }
        };
        let mut synced = true;
        for handle in handles {
            if let Err(error) = handle.sync_data() {
                tracing::error!(queue = %self.name, %error, "fsync of the message log failed");
                synced = false;
            }
        }
        synced
    }
}
