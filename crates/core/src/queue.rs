//! A queue: messages ready for delivery in order, messages delivered but not yet
//! acknowledged, and the consumers it serves round-robin. All of it sits behind one mutex
//! owned by the queue; publishers, consumers' channels and management reach it through
//! `Arc<Queue>` and hold the lock only for the few operations below.
//!
//! Every message gets an offset (its position in the queue's history). Acks and requeues
//! name offsets; a requeued message goes back to its original place, ahead of anything
//! published after it. The in-memory message list is what a store will sit under.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use wharf_amqp::{ByteString, FieldTable};
use wharf_store::queue_log::{Cursor, Position, QueueLog};
use wharf_store::segment::Lifetime;

use crate::consumer::{Consumer, Delivery, DeliveryTarget};
use crate::dead_letter::{DeadLetter, DeathReason};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::queue_arguments::{consumer_priority, Overflow, QueueSettings};
use crate::timer::now_ms;
use crate::vhost::VHost;

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

/// Identifies the connection that owns an exclusive queue.
pub type ConnectionId = u64;

#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub durable: bool,
    pub exclusive_owner: Option<ConnectionId>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone)]
struct Entry {
    offset: u64,
    message: Arc<Message>,
    redelivered: bool,
    /// Where the message is stored, for a persistent message in a durable queue.
    position: Option<Position>,
    /// When the message expires, in milliseconds since the Unix epoch (the shorter of the
    /// queue's `x-message-ttl` and the message's `expiration`, from when it was enqueued).
    expires_at: Option<u64>,
    /// Deliveries of this message that ended in a requeue (`x-delivery-limit`).
    delivery_count: u32,
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

#[derive(Default)]
struct State {
    /// The message log: a durable queue's (opened at declare or recovery), or a transient
    /// queue's spill-over log (opened the first time its window fills).
    log: Option<QueueLog>,
    /// The log keeps messages across restarts (a durable queue's log).
    log_durable: bool,
    /// Where a transient queue may open a spill-over log; None without a data directory.
    spill_dir: Option<std::path::PathBuf>,
    /// Ready messages that are only in the log, all of them after those in `ready`.
    spilled: u64,
    /// Body bytes of the spilled messages (kept for `x-max-length-bytes`; after a restart
    /// it is counted only for a queue with that limit).
    spilled_bytes: u64,
    /// Where the next spilled message is read from.
    cursor: Option<Cursor>,
    /// Records before this were in the log at start: they come back redelivered.
    recovered_until: Option<Cursor>,
    /// Body bytes of the messages in `ready`.
    ready_bytes: usize,
    /// The log could not be opened: persistent messages are refused rather than kept in
    /// memory under a promise the queue cannot keep.
    log_broken: bool,
    /// Sorted by offset.
    ready: VecDeque<Entry>,
    unacked: HashMap<u64, Entry>,
    next_offset: u64,
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
    /// Read from the arguments (checked at declare).
    pub(crate) settings: QueueSettings,
    window: Window,
    /// The vhost the queue lives in: dead letters are routed there, timers run there.
    home: Weak<VHost>,
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
        home: Weak<VHost>,
    ) -> Self {
        let settings = QueueSettings::from_arguments(&options.arguments).unwrap_or_default();
        let state = State {
            last_used_ms: if settings.expires.is_some() {
                now_ms()
            } else {
                0
            },
            ..State::default()
        };
        Queue {
            name,
            vhost,
            options,
            settings,
            window,
            home,
            deleted: AtomicBool::new(false),
            state: Mutex::new(state),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub fn message_count(&self) -> u32 {
        let state = self.state.lock();
        saturating_u64(state.ready.len() as u64 + state.spilled)
    }

    /// Ready messages held in memory (the rest of `message_count` waits in the log).
    pub fn in_memory_count(&self) -> usize {
        self.state.lock().ready.len()
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
        // The clock is read only for a message that can expire.
        let mut now = None;
        let ttl = match (self.settings.message_ttl, message.ttl_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let expires_at = ttl.map(|ttl| now.get_or_insert_with(now_ms).saturating_add(ttl));
        let settings = &self.settings;
        if settings.max_length.is_none() && settings.max_length_bytes.is_none() {
            return self.enqueue_locked(state, message, expires_at, &mut now);
        }
        if settings.overflow != Overflow::DropHead {
            // As RabbitMQ, a full queue refuses before any consumer is offered the message
            // (a limit of 0 refuses everything, waiting consumer or not).
            let count = state.ready.len() as u64 + state.spilled;
            let bytes = ready_body_bytes(state) + message.body.len() as u64;
            let too_long = settings.max_length.is_some_and(|max| count + 1 > max);
            let too_big = settings.max_length_bytes.is_some_and(|max| bytes > max);
            if too_long || too_big {
                if settings.overflow == Overflow::RejectPublishDlx {
                    self.add_dead_letter(state, &message, DeathReason::MaxLen);
                }
                return Enqueued::Rejected;
            }
            return self.enqueue_locked(state, message, expires_at, &mut now);
        }
        let outcome = self.enqueue_locked(state, message, expires_at, &mut now);
        self.drop_head(state);
        outcome
    }

    /// Whether the ready messages are over the queue's length or byte limit.
    fn over_limit(&self, state: &State) -> bool {
        let count = state.ready.len() as u64 + state.spilled;
        self.settings.max_length.is_some_and(|max| count > max)
            || self
                .settings
                .max_length_bytes
                .is_some_and(|max| ready_body_bytes(state) > max)
    }

    /// Drops the oldest ready messages until the queue is within its limits (RabbitMQ's
    /// drop-head); they are dead-lettered if the queue has a dead-letter exchange.
    fn drop_head(&self, state: &mut State) {
        while self.over_limit(state) {
            self.refill(state);
            let Some(entry) = state.ready.pop_front() else {
                break;
            };
            state.ready_bytes -= entry.message.body.len();
            self.discard(state, entry, DeathReason::MaxLen);
        }
        self.write_acks(state);
    }

    /// A message leaves the queue without being consumed: forgotten, and handed to the
    /// dead-letter exchange if there is one.
    fn discard(&self, state: &mut State, entry: Entry, reason: DeathReason) {
        self.forget(state, &entry);
        self.add_dead_letter(state, &entry.message, reason);
    }

    fn add_dead_letter(&self, state: &mut State, message: &Arc<Message>, reason: DeathReason) {
        if self.settings.dead_letter_exchange.is_some() {
            state.dead_letters.push(DeadLetter {
                message: message.clone(),
                reason,
            });
        }
    }

    /// Routes dead letters to the dead-letter exchange; called without the queue's lock.
    fn dead_letter(&self, letters: Vec<DeadLetter>) {
        if letters.is_empty() {
            return;
        }
        if let Some(vhost) = self.home.upgrade() {
            crate::dead_letter::publish(&vhost, self, letters);
        }
    }

    /// What every operation that changes the queue does before releasing the lock: drops
    /// the expired messages at the head, makes sure a timer is set for the next expiry
    /// (of the head message, or of the queue itself), and takes the dead letters to route
    /// once the lock is released.
    fn after_change(self: &Arc<Self>, state: &mut State) -> Vec<DeadLetter> {
        let head_expires = state.ready.front().is_some_and(|e| e.expires_at.is_some());
        if head_expires || self.settings.expires.is_some() {
            self.expire_head(state, now_ms());
            self.arm_timer(state);
        }
        std::mem::take(&mut state.dead_letters)
    }

    /// Drops (or dead-letters) the messages at the head that expired by `now`.
    fn expire_head(&self, state: &mut State, now: u64) {
        let mut expired = false;
        loop {
            self.refill(state);
            match state.ready.front() {
                Some(entry) if entry.expires_at.is_some_and(|at| at <= now) => {
                    let entry = state.ready.pop_front().expect("front was checked");
                    state.ready_bytes -= entry.message.body.len();
                    self.discard(state, entry, DeathReason::Expired);
                    expired = true;
                }
                _ => break,
            }
        }
        if expired {
            self.write_acks(state);
        }
    }

    /// Schedules a timer task for the next time something is due: the head message's
    /// expiry, or the queue's own (`x-expires`, counted while it has no consumers).
    fn arm_timer(self: &Arc<Self>, state: &mut State) {
        let head = state.ready.front().and_then(|e| e.expires_at);
        let idle = match self.settings.expires {
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
        let Some(vhost) = self.home.upgrade() else {
            return;
        };
        state.wake_at = Some(next);
        let queue = Arc::downgrade(self);
        vhost.timers.schedule_at_ms(
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
        if let Some(expires) = self.settings.expires {
            if state.consumers.is_empty() && now_ms() >= state.last_used_ms.saturating_add(expires)
            {
                drop(state);
                if let Some(vhost) = self.home.upgrade() {
                    tracing::debug!(queue = %self.name, "queue expired (x-expires)");
                    vhost.delete_queue_instance(self);
                }
                return;
            }
        }
        self.deliver_locked(&mut state);
        let dead = self.after_change(&mut state);
        drop(state);
        self.dead_letter(dead);
    }

    /// Notes that the queue was used (declared, consumed from, read with basic.get): its
    /// `x-expires` counts from now.
    pub fn touch(self: &Arc<Self>) {
        if self.settings.expires.is_none() {
            return;
        }
        let mut state = self.state.lock();
        self.touch_locked(&mut state);
    }

    fn touch_locked(self: &Arc<Self>, state: &mut State) {
        if self.settings.expires.is_some() {
            state.last_used_ms = now_ms();
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
        let persistent = message.is_persistent();
        if state.log_broken && persistent {
            return Enqueued::Failed;
        }
        let window_full = state.spilled > 0
            || state.ready.len() >= self.window.messages_max
            || state.ready_bytes >= self.window.bytes_max;
        if window_full && self.ensure_log(state) {
            let durable = state.log_durable;
            let log = state.log.as_mut().expect("ensured above");
            let lifetime = if durable && persistent {
                Lifetime::Persistent
            } else {
                Lifetime::Transient
            };
            return match log.append(&message.encode_record(expires_at), lifetime) {
                Ok(_) => {
                    state.spilled += 1;
                    state.spilled_bytes += message.body.len() as u64;
                    self.deliver_at(state, now);
                    if durable && persistent {
                        Enqueued::Appended
                    } else {
                        Enqueued::InMemory
                    }
                }
                Err(error) => {
                    tracing::error!(queue = %self.name, %error, "cannot store a message");
                    Enqueued::Failed
                }
            };
        }
        let mut outcome = Enqueued::InMemory;
        let mut position = None;
        if let (Some(log), true) = (state.log.as_mut(), persistent && state.log_durable) {
            match log.append(&message.encode_record(expires_at), Lifetime::Persistent) {
                Ok(p) => {
                    position = Some(p);
                    outcome = Enqueued::Appended;
                }
                Err(error) => {
                    tracing::error!(queue = %self.name, %error, "cannot store a message");
                    outcome = Enqueued::Failed;
                }
            }
        }
        if let Some(log) = &state.log {
            // Nothing is spilled: the next spilled record is whatever comes after this one.
            state.cursor = Some(log.end_cursor());
        }
        let offset = state.next_offset;
        state.next_offset += 1;
        state.ready_bytes += message.body.len();
        state.ready.push_back(Entry {
            offset,
            message,
            redelivered: false,
            position,
            expires_at,
            delivery_count: 0,
        });
        self.deliver_at(state, now);
        outcome
    }

    /// Opens a transient queue's spill-over log if it has none; false if it cannot have one.
    fn ensure_log(&self, state: &mut State) -> bool {
        if state.log.is_some() {
            return true;
        }
        let Some(dir) = state.spill_dir.clone() else {
            return false;
        };
        let _ = std::fs::remove_dir_all(&dir);
        match QueueLog::open(&dir, crate::durability::SEGMENT_BYTES_MAX) {
            Ok((log, _)) => {
                state.cursor = Some(log.end_cursor());
                state.log = Some(log);
                true
            }
            Err(error) => {
                tracing::error!(queue = %self.name, %error, "cannot open a spill-over log; keeping messages in memory");
                state.spill_dir = None;
                false
            }
        }
    }

    /// The queue's log could not be opened (the error was logged).
    pub fn mark_log_broken(&self) {
        self.state.lock().log_broken = true;
    }

    /// Lets a transient queue spill messages to disk under `dir` when its window fills.
    pub fn set_spill_dir(&self, dir: std::path::PathBuf) {
        self.state.lock().spill_dir = Some(dir);
    }

    /// Loads spilled messages into the window once it has drained to half.
    fn refill(&self, state: &mut State) {
        if state.spilled == 0
            || state.ready.len() >= self.window.messages_max / 2
            || state.ready_bytes >= self.window.bytes_max / 2
        {
            return;
        }
        while state.spilled > 0
            && state.ready.len() < self.window.messages_max
            && state.ready_bytes < self.window.bytes_max
        {
            let (Some(log), Some(cursor)) = (state.log.as_mut(), state.cursor.as_mut()) else {
                return;
            };
            let (position, record) = match log.next(cursor) {
                Ok(Some(found)) => found,
                Ok(None) => {
                    tracing::error!(queue = %self.name, missing = state.spilled, "the log holds fewer messages than counted");
                    state.spilled = 0;
                    state.spilled_bytes = 0;
                    return;
                }
                Err(error @ wharf_store::StoreError::Corrupt { .. }) => {
                    // Damaged on disk: that message is lost, the ones after it are not.
                    tracing::error!(queue = %self.name, %error, "a stored message is damaged and was skipped");
                    state.spilled -= 1;
                    continue;
                }
                Err(error) => {
                    tracing::error!(queue = %self.name, %error, lost = state.spilled, "cannot read spilled messages");
                    state.spilled = 0;
                    state.spilled_bytes = 0;
                    return;
                }
            };
            state.spilled -= 1;
            let recovered = state
                .recovered_until
                .is_some_and(|until| position.is_before(&until));
            // (Transient records from before a restart never get here: the log drops them.)
            let Some((message, expires_at)) = Message::decode_record(record) else {
                tracing::warn!(queue = %self.name, ?position, "unreadable message record skipped");
                let _ = log.ack(position, Lifetime::Persistent);
                continue;
            };
            let offset = state.next_offset;
            state.next_offset += 1;
            state.ready_bytes += message.body.len();
            state.spilled_bytes = state
                .spilled_bytes
                .saturating_sub(message.body.len() as u64);
            state.ready.push_back(Entry {
                offset,
                message: Arc::new(message),
                redelivered: recovered,
                position: Some(position),
                expires_at,
                delivery_count: 0,
            });
        }
    }

    /// Gives a durable queue its log; what the log held is read back as the queue drains
    /// and comes back redelivered (it may have been delivered before the restart).
    /// Returns how many messages the log held.
    pub fn attach_log(&self, mut log: QueueLog) -> wharf_store::Result<u64> {
        let mut state = self.state.lock();
        let held = log.message_count();
        if self.settings.max_length_bytes.is_some() && held > 0 {
            // The byte limit needs the body bytes of what the log holds: read them once.
            // The limit bounds how much there is to read.
            state.spilled_bytes = stored_body_bytes(&mut log);
        }
        state.spilled = held;
        state.cursor = Some(log.cursor());
        state.recovered_until = Some(log.end_cursor());
        state.log = Some(log);
        state.log_durable = true;
        self.refill(&mut state);
        Ok(held)
    }

    /// fsyncs what was appended to the log so far (the flusher calls this outside the
    /// publish path). Returns false if that failed.
    pub fn sync_appends(&self) -> bool {
        let handle = {
            let mut state = self.state.lock();
            match state.log.as_mut().map(QueueLog::take_sync_handle) {
                None | Some(Ok(None)) => return true,
                Some(Ok(Some(file))) => file,
                Some(Err(error)) => {
                    tracing::error!(queue = %self.name, %error, "cannot sync the message log");
                    return false;
                }
            }
        };
        match handle.sync_data() {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(queue = %self.name, %error, "fsync of the message log failed");
                false
            }
        }
    }

    /// Records in the log that a stored message is gone (acked, purged, dropped).
    /// Acknowledges a message in the log, if it is there. Only a persistent message in a
    /// durable log needs its ack written: the others do not outlive a restart.
    fn forget(&self, state: &mut State, entry: &Entry) {
        let lifetime = if state.log_durable && entry.message.is_persistent() {
            Lifetime::Persistent
        } else {
            Lifetime::Transient
        };
        if let (Some(log), Some(position)) = (state.log.as_mut(), entry.position) {
            if let Err(error) = log.ack(position, lifetime) {
                tracing::warn!(queue = %self.name, %error, "cannot record an ack");
            }
        }
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
            self.refill(state);
            if state.ready.is_empty() || state.consumers.is_empty() {
                return;
            }
            if let Some(at) = state.ready.front().and_then(|e| e.expires_at) {
                if at < *now.get_or_insert_with(now_ms) {
                    let entry = state.ready.pop_front().expect("front was checked");
                    state.ready_bytes -= entry.message.body.len();
                    self.discard(state, entry, DeathReason::Expired);
                    continue;
                }
            }
            // Consumers are sorted by priority: each message goes to the first group (of
            // one priority) with a consumer that takes it, round robin within the group.
            // With a single active consumer only the first registered one is offered.
            let count = if self.settings.single_active_consumer {
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
                        ready, consumers, ..
                    } = &mut *state;
                    let (Some(entry), consumer) = (ready.front(), &consumers[index]) else {
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
                        let entry = ready.pop_front().expect("front was checked above");
                        state.ready_bytes -= entry.message.body.len();
                        if no_ack {
                            self.forget(state, &entry);
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
        self.expire_head(&mut state, now_ms());
        let mut result = self.get_locked(&mut state, no_ack);
        let dead = self.after_change(&mut state);
        if let Some(result) = &mut result {
            // As RabbitMQ: counted after the new head, if expired, went.
            result.message_count = saturating_u64(state.ready.len() as u64 + state.spilled);
        }
        drop(state);
        self.dead_letter(dead);
        result
    }

    fn get_locked(&self, state: &mut State, no_ack: bool) -> Option<GetResult> {
        self.refill(state);
        let entry = state.ready.pop_front()?;
        state.ready_bytes -= entry.message.body.len();
        // As quorum queues: basic.get shows the count from the first delivery on (consumers
        // see it once a delivery has been requeued).
        let message = if self.settings.counts_deliveries() && entry.delivery_count == 0 {
            Arc::new(crate::dead_letter::with_delivery_count(&entry.message, 0))
        } else {
            entry.message.clone()
        };
        let result = GetResult {
            offset: entry.offset,
            message,
            redelivered: entry.redelivered,
            message_count: saturating_u64(state.ready.len() as u64 + state.spilled),
        };
        if no_ack {
            self.forget(state, &entry);
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
                self.forget(&mut state, &entry);
            }
        }
        // One write for the batch's acks, rather than one per ack.
        self.write_acks(&mut state);
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
        self.write_acks(&mut state);
        self.deliver_locked(&mut state);
        let dead = self.after_change(&mut state);
        drop(state);
        self.dead_letter(dead);
    }

    /// Writes the acks the log gathered (acks of messages consumed with no_ack wait for
    /// the next batch, 4 KiB of them, or the log's closing).
    fn write_acks(&self, state: &mut State) {
        if let Some(log) = state.log.as_mut() {
            if let Err(error) = log.write_acks() {
                tracing::warn!(queue = %self.name, %error, "cannot record acks");
            }
        }
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
            if let Some(limit) = self.settings.delivery_limit {
                if u64::from(entry.delivery_count) > limit {
                    self.discard(&mut state, entry, DeathReason::DeliveryLimit);
                    continue;
                }
            }
            if self.settings.counts_deliveries() {
                entry.message = Arc::new(crate::dead_letter::with_delivery_count(
                    &entry.message,
                    entry.delivery_count,
                ));
            }
            state.ready_bytes += entry.message.body.len();
            let at = state.ready.partition_point(|e| e.offset < entry.offset);
            state.ready.insert(at, entry);
        }
        self.write_acks(&mut state);
        self.deliver_locked(&mut state);
        let dead = self.after_change(&mut state);
        drop(state);
        self.dead_letter(dead);
    }

    /// Removes every ready message; returns how many there were.
    pub fn purge(&self) -> u32 {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let count = saturating_u64(state.ready.len() as u64 + state.spilled);
        for entry in std::mem::take(&mut state.ready) {
            self.forget(state, &entry);
        }
        self.write_acks(state);
        state.ready_bytes = 0;
        state.spilled_bytes = 0;
        if let (Some(log), Some(cursor)) = (state.log.as_mut(), state.cursor.as_mut()) {
            if state.spilled > 0 {
                if let Err(error) = log.ack_from(cursor, state.spilled) {
                    tracing::warn!(queue = %self.name, %error, "cannot record a purge");
                }
            }
        }
        state.spilled = 0;
        count
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
        let at = if self.settings.single_active_consumer {
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
        if at == 0 && self.settings.single_active_consumer {
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
        if if_empty && (!state.ready.is_empty() || state.spilled > 0) {
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
            let count = saturating_u64(state.ready.len() as u64 + state.spilled);
            state.ready.clear();
            state.ready_bytes = 0;
            state.spilled = 0;
            state.spilled_bytes = 0;
            state.unacked.clear();
            if let Some(log) = state.log.take() {
                if let Err(error) = log.destroy() {
                    tracing::warn!(queue = %self.name, %error, "cannot remove the message log");
                }
            }
            (count, std::mem::take(&mut state.consumers))
        };
        // Outside the lock: targets may take their own locks while handling this.
        for consumer in consumers {
            consumer.target.consumer_cancelled(&consumer.tag);
        }
        count
    }
}

/// Body bytes of a queue's ready messages, in memory and spilled.
fn ready_body_bytes(state: &State) -> u64 {
    state.ready_bytes as u64 + state.spilled_bytes
}

/// The body bytes of the unacknowledged records in `log`, read from its start.
fn stored_body_bytes(log: &mut QueueLog) -> u64 {
    let mut cursor = log.cursor();
    let mut total = 0;
    loop {
        match log.next(&mut cursor) {
            Ok(Some((_, record))) => {
                if let Some((message, _)) = Message::decode_record(record) {
                    total += message.body.len() as u64;
                }
            }
            Ok(None) => return total,
            Err(wharf_store::StoreError::Corrupt { .. }) => continue,
            Err(_) => return total,
        }
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn saturating_u64(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
