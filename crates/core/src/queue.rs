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
use std::sync::Arc;

use parking_lot::Mutex;
use wharf_amqp::{ByteString, FieldTable};
use wharf_store::queue_log::{Cursor, Position, QueueLog};
use wharf_store::segment::Lifetime;

use crate::consumer::{Consumer, Delivery, DeliveryTarget};
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
    settings: QueueSettings,
    window: Window,
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
    pub fn new(name: ByteString, vhost: ByteString, options: QueueOptions, window: Window) -> Self {
        let settings = QueueSettings::from_arguments(&options.arguments).unwrap_or_default();
        Queue {
            name,
            vhost,
            options,
            settings,
            window,
            deleted: AtomicBool::new(false),
            state: Mutex::new(State::default()),
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
        // Hand the lock to a waiting consumer's channel (an ack, a delivery) rather than
        // letting this publisher take it straight back: a publisher that never pauses
        // would otherwise starve the consumers of its queue.
        parking_lot::MutexGuard::unlock_fair(guard);
        enqueued
    }

    fn publish_locked(self: &Arc<Self>, state: &mut State, message: Arc<Message>) -> Enqueued {
        if self.is_deleted() {
            return Enqueued::Failed;
        }
        let Some(max) = self.settings.max_length else {
            return self.enqueue_locked(state, message);
        };
        if self.settings.overflow != Overflow::DropHead {
            // As RabbitMQ, a full queue refuses before any consumer is offered the message
            // (a limit of 0 refuses everything, waiting consumer or not).
            if state.ready.len() as u64 + state.spilled >= max {
                return Enqueued::Rejected;
            }
            return self.enqueue_locked(state, message);
        }
        let outcome = self.enqueue_locked(state, message);
        self.drop_head(state, max);
        outcome
    }

    /// Drops the oldest ready messages until `max` are left (as RabbitMQ's drop-head; they
    /// will be dead-lettered once dead-lettering exists).
    fn drop_head(&self, state: &mut State, max: u64) {
        while state.ready.len() as u64 + state.spilled > max {
            self.refill(state);
            let Some(entry) = state.ready.pop_front() else {
                break;
            };
            state.ready_bytes -= entry.message.body.len();
            self.forget(state, &entry);
        }
        self.write_acks(state);
    }

    fn enqueue_locked(self: &Arc<Self>, state: &mut State, message: Arc<Message>) -> Enqueued {
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
            return match log.append(&message.encode_record(), lifetime) {
                Ok(_) => {
                    state.spilled += 1;
                    self.deliver_locked(state);
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
            match log.append(&message.encode_record(), Lifetime::Persistent) {
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
        });
        self.deliver_locked(state);
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
                    return;
                }
            };
            state.spilled -= 1;
            let recovered = state
                .recovered_until
                .is_some_and(|until| position.is_before(&until));
            // (Transient records from before a restart never get here: the log drops them.)
            let Some(message) = Message::decode_record(record) else {
                tracing::warn!(queue = %self.name, ?position, "unreadable message record skipped");
                let _ = log.ack(position, Lifetime::Persistent);
                continue;
            };
            let offset = state.next_offset;
            state.next_offset += 1;
            state.ready_bytes += message.body.len();
            state.ready.push_back(Entry {
                offset,
                message: Arc::new(message),
                redelivered: recovered,
                position: Some(position),
            });
        }
    }

    /// Gives a durable queue its log; what the log held is read back as the queue drains
    /// and comes back redelivered (it may have been delivered before the restart).
    /// Returns how many messages the log held.
    pub fn attach_log(&self, log: QueueLog) -> wharf_store::Result<u64> {
        let mut state = self.state.lock();
        let held = log.message_count();
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
    }

    fn deliver_locked(self: &Arc<Self>, state: &mut State) {
        loop {
            self.refill(state);
            if state.ready.is_empty() || state.consumers.is_empty() {
                return;
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
    pub fn get(&self, no_ack: bool) -> Option<GetResult> {
        let mut state = self.state.lock();
        self.refill(&mut state);
        let entry = state.ready.pop_front()?;
        state.ready_bytes -= entry.message.body.len();
        let result = GetResult {
            offset: entry.offset,
            message: entry.message.clone(),
            redelivered: entry.redelivered,
            message_count: saturating_u64(state.ready.len() as u64 + state.spilled),
        };
        if no_ack {
            self.forget(&mut state, &entry);
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
            if let Some(mut entry) = state.unacked.remove(offset) {
                entry.redelivered = true;
                state.ready_bytes += entry.message.body.len();
                let at = state.ready.partition_point(|e| e.offset < entry.offset);
                state.ready.insert(at, entry);
            }
        }
        self.deliver_locked(&mut state);
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
        self.deliver_locked(&mut state);
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
        if at == 0 && self.settings.single_active_consumer {
            // The next consumer in registration order takes over at once.
            self.deliver_locked(&mut state);
        }
        if state.next_consumer > at {
            state.next_consumer -= 1;
        }
        if state.consumers.is_empty() {
            state.next_consumer = 0;
            if self.options.auto_delete && state.had_consumer {
                return ConsumerRemoved::RemovedLastOfAutoDelete;
            }
        }
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

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn saturating_u64(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
