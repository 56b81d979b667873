//! A queue's ready messages. Each priority level (one in a queue without `x-max-priority`)
//! keeps its oldest messages in memory, up to its share of the queue's window, and the
//! rest in a log of its own that is read back as the level drains: memory stays flat
//! however deep the queue, and a high-priority message never waits behind a log of
//! low-priority ones. The head is the oldest message of the highest non-empty level.
//!
//! Every message gets an offset (its position in the queue's history) when it enters
//! memory. Acks and requeues name offsets; a requeued message goes back to its original
//! place in its level, ahead of anything published after it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use crate::quorum::{Decisions, Records};

use wharf_amqp::ByteString;
use wharf_store::queue_log::{Cursor, Position, QueueLog};
use wharf_store::segment::Lifetime;

use super::{Enqueued, Window};
use crate::message::Message;

/// A message in a queue, ready or delivered and unacknowledged.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub offset: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Where the message is stored in its level's log, if it is.
    pub position: Option<Position>,
    /// When the message expires, in milliseconds since the Unix epoch (the shorter of the
    /// queue's `x-message-ttl` and the message's `expiration`, from when it was enqueued).
    pub expires_at: Option<u64>,
    /// Deliveries of this message that ended in a requeue (`x-delivery-limit`).
    pub delivery_count: u32,
    /// The priority level it belongs to.
    pub level: u8,
}

/// One priority level's ready messages.
#[derive(Default)]
struct Level {
    /// A durable queue's log (opened at declare or recovery), or a transient queue's
    /// spill-over log (opened the first time the window fills).
    log: Option<QueueLog>,
    /// The log keeps messages across restarts (a durable queue's log).
    log_durable: bool,
    /// Where a transient queue may open a spill-over log; None without a data directory.
    spill_dir: Option<PathBuf>,
    /// The log could not be opened: persistent messages are refused rather than kept in
    /// memory under a promise the queue cannot keep.
    log_broken: bool,
    /// Every message is kept as a persistent one is (a quorum queue's, on one node: it
    /// keeps what it is given whatever its delivery mode, as RabbitMQ's do).
    keep_all: bool,
    /// Ready messages that are only in the log, all of them after those in `ready`.
    spilled: u64,
    /// Their body bytes (kept for `x-max-length-bytes`; after a restart counted only for
    /// a queue with that limit).
    spilled_bytes: u64,
    /// Where the next spilled message is read from.
    cursor: Option<Cursor>,
    /// Records before this were in the log at start: they come back redelivered.
    recovered_until: Option<Cursor>,
    /// A quorum queue leader's messages that are not in memory, by offset, oldest first
    /// (their records are in the group's log; see [`QuorumBacking`]).
    held: VecDeque<u64>,
    /// In memory, sorted by offset.
    ready: VecDeque<Entry>,
    /// Body bytes of the messages in `ready`.
    ready_bytes: usize,
}

impl Level {
    fn len(&self) -> u64 {
        self.ready.len() as u64 + self.spilled
    }

    fn lifetime(&self, message: &Message) -> Lifetime {
        if self.log_durable && (message.is_persistent() || self.keep_all) {
            Lifetime::Persistent
        } else {
            Lifetime::Transient
        }
    }
}

/// Where a quorum queue's leader keeps what it decides and reads what it does not hold
/// in memory: the queue's group (see `crate::quorum`).
pub(crate) struct QuorumBacking {
    pub decisions: Arc<dyn Decisions>,
    pub records: Arc<dyn Records>,
}

pub(super) struct Backlog {
    /// Indexed by priority.
    levels: Vec<Level>,
    /// A quorum queue leader's backing; None for any other queue.
    quorum: Option<QuorumBacking>,
    /// What each level may keep in memory.
    window: Window,
    next_offset: u64,
    /// Some message that entered memory had an expiry: only then is the head worth
    /// checking for one (most queues never see a TTL, and the check costs a refill).
    may_expire: bool,
    /// The queue's name, for logging.
    queue: ByteString,
}

impl Backlog {
    /// A backlog of `levels` priority levels (1 for a queue without priorities), which
    /// share `window` between them.
    pub fn new(queue: ByteString, levels: usize, window: Window) -> Backlog {
        let levels = levels.max(1);
        let share = Window {
            messages_max: (window.messages_max / levels).max(16),
            bytes_max: (window.bytes_max / levels).max(64 * 1024),
        };
        Backlog {
            levels: (0..levels).map(|_| Level::default()).collect(),
            quorum: None,
            window: share,
            next_offset: 0,
            may_expire: false,
            queue,
        }
    }

    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// The level a message goes to: its priority, capped at the queue's highest.
    pub fn level_of_message(&self, message: &Message) -> u8 {
        self.level_of(message)
    }

    /// Tells a quorum queue's group that the message at `offset`, not in memory, is gone.
    pub fn forget_offset(&self, offset: u64) {
        if let Some(quorum) = &self.quorum {
            quorum.decisions.settled(offset);
        }
    }

    fn level_of(&self, message: &Message) -> u8 {
        let top = self.levels.len() - 1;
        usize::from(message.properties.priority().unwrap_or(0)).min(top) as u8
    }

    /// Ready messages, in memory and in logs.
    pub fn len(&self) -> u64 {
        self.levels.iter().map(Level::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(|l| l.len() == 0)
    }

    /// Ready messages held in memory.
    pub fn in_memory(&self) -> usize {
        self.levels.iter().map(|l| l.ready.len()).sum()
    }

    /// Body bytes of the ready messages held in memory.
    pub fn in_memory_bytes(&self) -> u64 {
        self.levels.iter().map(|l| l.ready_bytes as u64).sum()
    }

    /// Body bytes of the ready messages, in memory and in logs.
    pub fn body_bytes(&self) -> u64 {
        self.levels
            .iter()
            .map(|l| l.ready_bytes as u64 + l.spilled_bytes)
            .sum()
    }

    /// Adds a published message to its level: to memory while the level's window has
    /// room, else to the level's log only. A persistent message in a durable queue is
    /// written to the log either way.
    pub fn push(&mut self, message: Arc<Message>, expires_at: Option<u64>) -> Enqueued {
        self.may_expire |= expires_at.is_some();
        let level_index = self.level_of(&message);
        let window = self.window;
        let queue = &self.queue;
        let level = &mut self.levels[usize::from(level_index)];
        let persistent = message.is_persistent() || level.keep_all;
        if level.log_broken && persistent {
            return Enqueued::Failed;
        }
        let window_full = level.spilled > 0
            || level.ready.len() >= window.messages_max
            || level.ready_bytes >= window.bytes_max;
        if window_full && ensure_log(level, queue) {
            let lifetime = level.lifetime(&message);
            let log = level.log.as_mut().expect("ensured above");
            let head = message.encode_record_head(expires_at);
            return match log.append_parts(&[&head, &message.body], lifetime) {
                Ok(_) => {
                    level.spilled += 1;
                    level.spilled_bytes += message.body.len() as u64;
                    if lifetime == Lifetime::Persistent {
                        Enqueued::Appended
                    } else {
                        Enqueued::InMemory
                    }
                }
                Err(error) => {
                    tracing::error!(%queue, %error, "cannot store a message");
                    Enqueued::Failed
                }
            };
        }
        let mut outcome = Enqueued::InMemory;
        let mut position = None;
        if let (Some(log), true) = (level.log.as_mut(), persistent && level.log_durable) {
            let head = message.encode_record_head(expires_at);
            match log.append_parts(&[&head, &message.body], Lifetime::Persistent) {
                Ok(p) => {
                    position = Some(p);
                    outcome = Enqueued::Appended;
                }
                Err(error) => {
                    // The publisher is told it was not taken: it must not be delivered
                    // either (a retry would make it twice), nor come back from the log.
                    tracing::error!(%queue, %error, "cannot store a message");
                    return Enqueued::Failed;
                }
            }
        }
        if let Some(log) = &level.log {
            // Nothing is spilled: the next spilled record is whatever comes after this one.
            level.cursor = Some(log.end_cursor());
        }
        let offset = self.next_offset;
        self.next_offset += 1;
        level.ready_bytes += message.body.len();
        level.ready.push_back(Entry {
            offset,
            message,
            redelivered: false,
            position,
            expires_at,
            delivery_count: 0,
            level: level_index,
        });
        outcome
    }

    /// Keeps every message as a persistent one (see `Level::keep_all`).
    pub fn keep_every_message(&mut self) {
        for level in &mut self.levels {
            level.keep_all = true;
        }
    }

    /// Whether this is a quorum queue leader's backlog.
    pub fn is_quorum(&self) -> bool {
        self.quorum.is_some()
    }

    /// Makes this the backlog of a quorum queue's leader: decisions go to `backing`, and
    /// messages beyond the window are read back from it.
    pub fn set_quorum(&mut self, backing: QuorumBacking) {
        self.quorum = Some(backing);
    }

    /// Adds a message a quorum queue's group committed, at the offset the group gave it:
    /// to memory while the window has room and nothing waits outside it, else only
    /// counted (it is read back from the group's log as the queue drains).
    pub fn push_committed(&mut self, entry: Entry) {
        self.may_expire |= entry.expires_at.is_some();
        self.next_offset = self.next_offset.max(entry.offset + 1);
        let window = self.window;
        let level = &mut self.levels[usize::from(entry.level)];
        let window_full = !level.held.is_empty()
            || level.ready.len() >= window.messages_max
            || level.ready_bytes >= window.bytes_max;
        let body_bytes = entry.message.body.len();
        if window_full {
            level.held.push_back(entry.offset);
            level.spilled += 1;
            level.spilled_bytes += body_bytes as u64;
        } else {
            level.ready_bytes += body_bytes;
            level.ready.push_back(entry);
        }
    }

    /// Counts messages a quorum queue's group holds (`offsets`, oldest first, with their
    /// sizes) as waiting outside memory: a new leader's queue, read as it drains.
    pub fn hold(&mut self, offsets: impl IntoIterator<Item = (u64, u64)>) {
        let level = &mut self.levels[0];
        for (offset, bytes) in offsets {
            self.next_offset = self.next_offset.max(offset + 1);
            level.held.push_back(offset);
            level.spilled += 1;
            level.spilled_bytes += bytes;
        }
        self.may_expire = true;
    }

    /// Removes ready messages by offset (in memory or held outside it), wherever they
    /// are; returns those found in memory, for their settling. Offsets not ready are
    /// passed over.
    pub fn remove_ready(&mut self, offsets: &[u64]) -> (Vec<Entry>, Vec<u64>) {
        let mut in_memory = Vec::new();
        let mut held = Vec::new();
        for &offset in offsets {
            for level in &mut self.levels {
                if let Ok(at) = level.ready.binary_search_by_key(&offset, |e| e.offset) {
                    let entry = level.ready.remove(at).expect("found above");
                    level.ready_bytes -= entry.message.body.len();
                    in_memory.push(entry);
                    break;
                }
                if let Ok(at) = level.held.binary_search(&offset) {
                    level.held.remove(at);
                    level.spilled = level.spilled.saturating_sub(1);
                    held.push(offset);
                    break;
                }
            }
        }
        (in_memory, held)
    }

    /// A quorum queue's message went back to its consumers (a requeue): the group counts
    /// one more delivery of it.
    pub fn returned(&self, offset: u64) {
        if let Some(quorum) = &self.quorum {
            quorum.decisions.returned(offset);
        }
    }

    /// The level the head is in, with its messages loaded; None when nothing is ready.
    #[inline]
    pub fn head_level(&mut self) -> Option<usize> {
        for index in (0..self.levels.len()).rev() {
            self.refill(index);
            if !self.levels[index].ready.is_empty() {
                return Some(index);
            }
        }
        None
    }

    /// Whether any message has had an expiry (if not, none has one now).
    #[inline]
    pub fn may_expire(&self) -> bool {
        self.may_expire
    }

    /// The next message to deliver.
    pub fn head(&mut self) -> Option<&Entry> {
        let index = self.head_level()?;
        self.levels[index].ready.front()
    }

    /// The oldest message in memory of a level (the head, given its level).
    #[inline]
    pub fn front(&self, level: usize) -> Option<&Entry> {
        self.levels[level].ready.front()
    }

    /// Takes the next message to deliver.
    pub fn pop_head(&mut self) -> Option<Entry> {
        let index = self.head_level()?;
        self.pop_front(index)
    }

    /// Takes the oldest message in memory of a level (the head, given its level).
    #[inline]
    pub fn pop_front(&mut self, level: usize) -> Option<Entry> {
        let level = &mut self.levels[level];
        let entry = level.ready.pop_front()?;
        level.ready_bytes -= entry.message.body.len();
        Some(entry)
    }

    /// Puts a delivered message back in its original place.
    pub fn requeue(&mut self, entry: Entry) {
        let level = &mut self.levels[usize::from(entry.level)];
        level.ready_bytes += entry.message.body.len();
        let at = level.ready.partition_point(|e| e.offset < entry.offset);
        level.ready.insert(at, entry);
    }

    /// Records in its log that a stored message is gone (acked, purged, dropped). Only a
    /// persistent message in a durable log needs its ack written: the others do not
    /// outlive a restart.
    pub fn forget(&mut self, entry: &Entry) {
        if let Some(quorum) = &self.quorum {
            quorum.decisions.settled(entry.offset);
            return;
        }
        let Some(position) = entry.position else {
            return;
        };
        let level = &mut self.levels[usize::from(entry.level)];
        let lifetime = level.lifetime(&entry.message);
        if let Some(log) = level.log.as_mut() {
            if let Err(error) = log.ack(position, lifetime) {
                tracing::warn!(queue = %self.queue, %error, "cannot record an ack");
            }
        }
    }

    /// Writes the acks the logs gathered (acks of messages consumed with no_ack wait for
    /// the next batch, 4 KiB of them, or the log's closing).
    pub fn write_acks(&mut self) {
        for level in &mut self.levels {
            if let Some(log) = level.log.as_mut() {
                if let Err(error) = log.write_acks() {
                    tracing::warn!(queue = %self.queue, %error, "cannot record acks");
                }
            }
        }
    }

    /// Removes every ready message; returns how many there were.
    pub fn purge(&mut self) -> u64 {
        let count = self.len();
        for index in 0..self.levels.len() {
            for entry in std::mem::take(&mut self.levels[index].ready) {
                self.forget(&entry);
            }
            let level = &mut self.levels[index];
            level.ready_bytes = 0;
            level.spilled_bytes = 0;
            if let Some(quorum) = &self.quorum {
                for offset in level.held.drain(..) {
                    quorum.decisions.settled(offset);
                }
            }
            if let (Some(log), Some(cursor)) = (level.log.as_mut(), level.cursor.as_mut()) {
                if level.spilled > 0 {
                    if let Err(error) = log.ack_from(cursor, level.spilled) {
                        tracing::warn!(queue = %self.queue, %error, "cannot record a purge");
                    }
                }
            }
            level.spilled = 0;
        }
        self.write_acks();
        count
    }

    /// Drops everything and removes the logs (the queue is deleted).
    pub fn destroy(&mut self) {
        for level in std::mem::take(&mut self.levels) {
            if let Some(log) = level.log {
                if let Err(error) = log.destroy() {
                    tracing::warn!(queue = %self.queue, %error, "cannot remove the message log");
                }
            }
        }
        self.levels.push(Level::default());
    }

    /// Gives a level of a durable queue its log; what the log held is read back as the
    /// level drains and comes back redelivered (it may have been delivered before the
    /// restart). With `count_bytes` the log is read once to count its body bytes. Returns
    /// how many messages the log held.
    pub fn attach_log(&mut self, level: usize, mut log: QueueLog, count_bytes: bool) -> u64 {
        let held = log.message_count();
        let state = &mut self.levels[level];
        if count_bytes && held > 0 {
            state.spilled_bytes = stored_body_bytes(&mut log);
        }
        state.spilled = held;
        state.cursor = Some(log.cursor());
        state.recovered_until = Some(log.end_cursor());
        state.log = Some(log);
        state.log_durable = true;
        self.refill(level);
        held
    }

    /// Lets a transient queue spill messages to disk when a level's window fills: under
    /// `dir`, or `dir/priority-N` with priorities.
    pub fn set_spill_dir(&mut self, dir: PathBuf) {
        let single = self.levels.len() == 1;
        for (n, level) in self.levels.iter_mut().enumerate() {
            level.spill_dir = Some(if single {
                dir.clone()
            } else {
                level_dir(&dir, n)
            });
        }
    }

    /// The queue's logs could not be opened (the error was logged).
    pub fn mark_log_broken(&mut self) {
        for level in &mut self.levels {
            level.log_broken = true;
        }
    }

    /// File handles to fsync for what was appended since the last call.
    pub fn take_sync_handles(&mut self) -> wharf_store::Result<Vec<std::fs::File>> {
        let mut handles = Vec::new();
        for level in &mut self.levels {
            if let Some(file) = level
                .log
                .as_mut()
                .map(QueueLog::take_sync_handle)
                .transpose()?
            {
                handles.extend(file);
            }
        }
        Ok(handles)
    }

    /// Loads a level's spilled messages into its window once it has drained to half.
    #[inline]
    fn refill(&mut self, index: usize) {
        if self.levels[index].spilled > 0 {
            if self.quorum.is_some() {
                self.refill_from_group(index);
            } else {
                self.refill_from_log(index);
            }
        }
    }

    /// Reads a quorum queue leader's held messages back from its group, oldest first.
    fn refill_from_group(&mut self, index: usize) {
        let window = self.window;
        let Some(quorum) = &self.quorum else {
            return;
        };
        let level = &mut self.levels[index];
        if level.ready.len() >= window.messages_max / 2 || level.ready_bytes >= window.bytes_max / 2
        {
            return;
        }
        while level.ready.len() < window.messages_max && level.ready_bytes < window.bytes_max {
            let Some(offset) = level.held.pop_front() else {
                level.spilled = 0;
                level.spilled_bytes = 0;
                return;
            };
            level.spilled = level.spilled.saturating_sub(1);
            // Settled meanwhile (an ack after a failover, a purge): nothing to read.
            let Some(stored) = quorum.records.read(offset) else {
                continue;
            };
            let Some((message, expires_at)) = Message::decode_record(stored.record) else {
                tracing::warn!(queue = %self.queue, offset, "a quorum queue message that does not read; dropped");
                quorum.decisions.settled(offset);
                continue;
            };
            self.may_expire |= expires_at.is_some();
            let body_bytes = message.body.len();
            level.ready_bytes += body_bytes;
            level.spilled_bytes = level.spilled_bytes.saturating_sub(body_bytes as u64);
            let message = match stored.returns {
                0 => message,
                n => message.with_delivery_count(n),
            };
            level.ready.push_back(Entry {
                offset,
                message: Arc::new(message),
                redelivered: stored.redelivered,
                position: None,
                expires_at,
                delivery_count: stored.returns,
                level: index as u8,
            });
        }
    }

    fn refill_from_log(&mut self, index: usize) {
        let window = self.window;
        let level = &mut self.levels[index];
        if level.ready.len() >= window.messages_max / 2 || level.ready_bytes >= window.bytes_max / 2
        {
            return;
        }
        let queue = &self.queue;
        while level.spilled > 0
            && level.ready.len() < window.messages_max
            && level.ready_bytes < window.bytes_max
        {
            let (Some(log), Some(cursor)) = (level.log.as_mut(), level.cursor.as_mut()) else {
                return;
            };
            let (position, record) = match log.next(cursor) {
                Ok(Some(found)) => found,
                Ok(None) => {
                    tracing::error!(%queue, missing = level.spilled, "the log holds fewer messages than counted");
                    level.spilled = 0;
                    level.spilled_bytes = 0;
                    return;
                }
                Err(error @ wharf_store::StoreError::Corrupt { .. }) => {
                    // Damaged on disk: that message is lost, the ones after it are not.
                    tracing::error!(%queue, %error, "a stored message is damaged and was skipped");
                    level.spilled -= 1;
                    continue;
                }
                Err(error @ wharf_store::StoreError::Lost { records, .. }) => {
                    // Damage that destroyed `records` messages; those after it are read.
                    tracing::error!(%queue, %error, "stored messages are damaged and were skipped");
                    level.spilled = level.spilled.saturating_sub(records);
                    continue;
                }
                Err(error) => {
                    // Not damage but a failed read: the messages are still there, and
                    // reading is tried again when the queue next needs its head.
                    tracing::error!(%queue, %error, waiting = level.spilled, "cannot read spilled messages now");
                    return;
                }
            };
            level.spilled -= 1;
            let recovered = level
                .recovered_until
                .is_some_and(|until| position.is_before(&until));
            // (Transient records from before a restart never get here: the log drops them.)
            let Some((message, expires_at)) = Message::decode_record(record) else {
                tracing::warn!(%queue, ?position, "unreadable message record skipped");
                let _ = log.ack(position, Lifetime::Persistent);
                continue;
            };
            self.may_expire |= expires_at.is_some();
            let offset = self.next_offset;
            self.next_offset += 1;
            let body_bytes = message.body.len();
            level.ready_bytes += body_bytes;
            level.spilled_bytes = level.spilled_bytes.saturating_sub(body_bytes as u64);
            level.ready.push_back(Entry {
                offset,
                message: Arc::new(message),
                redelivered: recovered,
                position: Some(position),
                expires_at,
                delivery_count: 0,
                level: index as u8,
            });
        }
    }
}

/// Where level `n` of a queue with priorities keeps its log, under the queue's directory.
pub fn level_dir(queue_dir: &std::path::Path, n: usize) -> PathBuf {
    queue_dir.join(format!("priority-{n}"))
}

/// Opens a transient queue's spill-over log if the level has none; false if it cannot
/// have one.
fn ensure_log(level: &mut Level, queue: &ByteString) -> bool {
    if level.log.is_some() {
        return true;
    }
    let Some(dir) = level.spill_dir.clone() else {
        return false;
    };
    let _ = std::fs::remove_dir_all(&dir);
    match QueueLog::open(&dir, super::SEGMENT_BYTES_MAX) {
        Ok((log, _)) => {
            level.cursor = Some(log.end_cursor());
            level.log = Some(log);
            true
        }
        Err(error) => {
            tracing::error!(%queue, %error, "cannot open a spill-over log; keeping messages in memory");
            level.spill_dir = None;
            false
        }
    }
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
            Err(wharf_store::StoreError::Corrupt { .. } | wharf_store::StoreError::Lost { .. }) => {
                continue
            }
            Err(_) => return total,
        }
    }
}
