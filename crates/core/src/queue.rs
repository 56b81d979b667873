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
use wharf_store::queue_log::{Position, QueueLog};

use crate::consumer::{Consumer, Delivery, DeliveryTarget};
use crate::error::{Error, Result};
use crate::message::Message;

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
}

#[derive(Default)]
struct State {
    /// The message log of a durable queue on a broker with a data directory.
    log: Option<QueueLog>,
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
    pub fn new(name: ByteString, vhost: ByteString, options: QueueOptions) -> Self {
        Queue {
            name,
            vhost,
            options,
            deleted: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub fn message_count(&self) -> u32 {
        saturating_u32(self.state.lock().ready.len())
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
    /// in a queue with a log is written to it first.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> Enqueued {
        let mut state = self.state.lock();
        if self.is_deleted() {
            return Enqueued::Failed;
        }
        if state.log_broken && message.is_persistent() {
            return Enqueued::Failed;
        }
        let mut outcome = Enqueued::InMemory;
        let mut position = None;
        if let (Some(log), true) = (state.log.as_mut(), message.is_persistent()) {
            match log.append(&message.encode_record()) {
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
        let offset = state.next_offset;
        state.next_offset += 1;
        state.ready.push_back(Entry {
            offset,
            message,
            redelivered: false,
            position,
        });
        self.deliver_locked(&mut state);
        outcome
    }

    /// Gives the queue its log and the messages recovered from it, which come back as
    /// redelivered (they may have been delivered before the restart).
    pub fn attach_log(&self, mut log: QueueLog) -> wharf_store::Result<u64> {
        let mut state = self.state.lock();
        let mut cursor = log.cursor();
        let mut recovered = 0;
        while let Some((position, record)) = log.next(&mut cursor)? {
            let Some(message) = Message::decode_record(record) else {
                tracing::warn!(queue = %self.name, ?position, "unreadable message record skipped");
                continue;
            };
            let offset = state.next_offset;
            state.next_offset += 1;
            state.ready.push_back(Entry {
                offset,
                message: Arc::new(message),
                redelivered: true,
                position: Some(position),
            });
            recovered += 1;
        }
        state.log = Some(log);
        Ok(recovered)
    }

    /// The queue's log could not be opened (the error was logged).
    pub fn mark_log_broken(&self) {
        self.state.lock().log_broken = true;
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
    fn forget(&self, state: &mut State, position: Option<Position>) {
        if let (Some(log), Some(position)) = (state.log.as_mut(), position) {
            if let Err(error) = log.ack(position) {
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
        while !state.ready.is_empty() && !state.consumers.is_empty() {
            let consumer_count = state.consumers.len();
            let mut delivered = false;
            for attempt in 0..consumer_count {
                let index = (state.next_consumer + attempt) % consumer_count;
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
                    if no_ack {
                        let position = entry.position;
                        self.forget(state, position);
                    } else {
                        state.unacked.insert(entry.offset, entry);
                    }
                    state.next_consumer = (index + 1) % consumer_count;
                    delivered = true;
                    break;
                }
            }
            if !delivered {
                return;
            }
        }
    }

    /// basic.get: takes the head message, if any.
    pub fn get(&self, no_ack: bool) -> Option<GetResult> {
        let mut state = self.state.lock();
        let entry = state.ready.pop_front()?;
        let result = GetResult {
            offset: entry.offset,
            message: entry.message.clone(),
            redelivered: entry.redelivered,
            message_count: saturating_u32(state.ready.len()),
        };
        if no_ack {
            self.forget(&mut state, entry.position);
        } else {
            state.unacked.insert(entry.offset, entry);
        }
        Some(result)
    }

    /// Forgets acknowledged messages. Unknown offsets (already gone with a purge or
    /// a deletion) are ignored: the channel has already validated its delivery tags.
    pub fn ack(&self, offsets: &[u64]) {
        let mut state = self.state.lock();
        for offset in offsets {
            if let Some(entry) = state.unacked.remove(offset) {
                self.forget(&mut state, entry.position);
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
                let at = state.ready.partition_point(|e| e.offset < entry.offset);
                state.ready.insert(at, entry);
            }
        }
        self.deliver_locked(&mut state);
    }

    /// Removes every ready message; returns how many there were.
    pub fn purge(&self) -> u32 {
        let mut state = self.state.lock();
        let count = saturating_u32(state.ready.len());
        for entry in std::mem::take(&mut state.ready) {
            self.forget(&mut state, entry.position);
        }
        count
    }

    pub fn add_consumer(self: &Arc<Self>, consumer: Consumer) -> Result<()> {
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
        state.consumers.push(consumer);
        state.had_consumer = true;
        self.deliver_locked(&mut state);
        Ok(())
    }

    pub fn remove_consumer(&self, target: &Arc<dyn DeliveryTarget>, tag: &str) -> ConsumerRemoved {
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
        if if_empty && !state.ready.is_empty() {
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
            let count = saturating_u32(state.ready.len());
            state.ready.clear();
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
