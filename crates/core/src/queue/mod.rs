//! A queue: messages ready for delivery (its backlog, by priority, in memory and on
//! disk), messages delivered but not yet acknowledged, and the consumers it serves. All of
//! it sits behind one mutex owned by the queue; publishers, consumers' channels and
//! management reach it through `Arc<Queue>` and hold the lock only for the few
//! operations below.

mod backlog;
pub mod consumer;
pub mod dead_letter;
pub mod dedup;
mod delivery;
mod expiry;
mod host;
mod publishing;
pub(crate) mod quorum;
pub mod remote;
mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use wharf_amqp::{ByteString, FieldTable};
use wharf_store::queue_log::QueueLog;

pub use self::backlog::level_dir;
pub(crate) use self::backlog::QuorumBacking;
use self::backlog::{Backlog, Entry};

use self::consumer::Consumer;
pub use self::consumer::{Offered, Woken};
use self::dead_letter::DeadLetter;
pub use self::host::QueueHost;
pub use self::stats::{QueueCounters, QueueStats};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::queue_arguments::QueueSettings;

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

/// RabbitMQ's refusal of an exclusive queue to a connection that does not own it.
pub fn locked_queue(name: &str, vhost: &str) -> Error {
    Error::locked(format_args!(
        "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could \
         be originally declared on another connection or the exclusive property value does not \
         match that of the original declaration."
    ))
}

/// Identifies the connection that owns an exclusive queue.
pub type ConnectionId = u64;

#[derive(Debug, Clone, Default)]
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
    /// What delivering has done since the operation in progress began; taken by the
    /// operations that report it ([`Woken`]), cleared by the others.
    woken: consumer::Woken,
    /// What the queue has done, for management ([`Queue::stats`]).
    counters: stats::QueueCounters,
    /// How well its consumers keep up, for management.
    utilisation: stats::Utilisation,
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
        let mut backlog = Backlog::new(name.clone(), levels, window);
        if settings.quorum && options.durable {
            backlog.keep_every_message();
        }
        let state = State {
            woken: Default::default(),
            counters: Default::default(),
            settings: settings.clone(),
            policy: None,
            backlog,
            unacked: HashMap::new(),
            consumers: Vec::new(),
            utilisation: Default::default(),
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
            Some(owner) if owner != connection => Err(locked_queue(&self.name, &self.vhost)),
            _ => Ok(()),
        }
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
        let _ = self.deliver_and_unlock(state);
    }

    /// The name of the policy that applies to the queue, if one does.
    pub fn policy(&self) -> Option<ByteString> {
        self.state.lock().policy.clone()
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
            state.utilisation.consumers_changed(false);
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
