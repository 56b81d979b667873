//! The `x-delayed-message` exchange (RabbitMQ's delayed-message plugin): a message
//! published to it with an `x-delay` header of so many milliseconds is held that long,
//! then routed by the exchange's bindings as its `x-delayed-type` (direct, topic...)
//! would route it, with `x-delay` turned negative so it is not delayed again downstream.
//!
//! Held messages wait here, ordered by when they are due. A durable exchange keeps the
//! persistent ones in a log of its own as well (the same segment log queues use, each
//! record carrying its due time), so they survive a restart and go out when due, or at
//! start if that time has passed. The vhost's timer thread releases them.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use wharf_amqp::{ByteString, FieldValue};
use wharf_store::queue_log::{Position, QueueLog};
use wharf_store::segment::Lifetime;

use crate::message::Message;

/// The exchange argument naming how released messages are routed.
pub const DELAYED_TYPE: &str = "x-delayed-type";
/// The message header asking for a delay, in milliseconds.
pub const DELAY_HEADER: &str = "x-delay";
/// The longest delay the plugin honours (Erlang's largest timer); longer ones, like
/// negative ones, are routed at once.
const DELAY_MAX_MS: i64 = 4_294_967_295;

/// The delay a message asks for, read as the plugin reads `x-delay`: any integer, or a
/// float (truncated), or a decimal string; None when it is absent, not one of those, not
/// positive, or too long (the message is then routed at once).
pub fn delay_of(message: &Message) -> Option<u64> {
    let properties = message.properties.decode().ok()?;
    let delay = match properties.headers?.get(DELAY_HEADER)? {
        FieldValue::F32(v) => *v as i64,
        FieldValue::F64(v) => *v as i64,
        FieldValue::Decimal { scale, value } => {
            (f64::from(*value) / 10f64.powi(i32::from(*scale))) as i64
        }
        FieldValue::LongStr(text) => std::str::from_utf8(text).ok()?.parse().ok()?,
        other => other.as_i64()?,
    };
    (delay > 0 && delay <= DELAY_MAX_MS).then_some(delay as u64)
}

/// The message as it leaves after its delay: `x-delay` negated, as the plugin marks it.
fn released(message: &Message, delay: u64) -> Message {
    let negated = -(delay as i64);
    let value = i32::try_from(negated).map_or(FieldValue::I64(negated), FieldValue::I32);
    message.with_header(DELAY_HEADER, value)
}

struct Held {
    message: Arc<Message>,
    delay: u64,
    /// Its record in the exchange's log, for a persistent message of a durable exchange.
    position: Option<Position>,
}

#[derive(Default)]
struct State {
    /// By (due time in ms since the epoch, arrival order).
    due: BTreeMap<(u64, u64), Held>,
    next_seq: u64,
    log: Option<QueueLog>,
    /// The earliest time a timer task is already set for.
    wake_at: Option<u64>,
}

/// The messages a delayed exchange holds.
pub struct DelayedMessages {
    exchange: ByteString,
    state: Mutex<State>,
}

impl std::fmt::Debug for DelayedMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayedMessages")
            .field("exchange", &self.exchange)
            .field("held", &self.len())
            .finish()
    }
}

/// What holding a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOutcome {
    /// In memory only (transient message, or an exchange without a log).
    InMemory,
    /// Appended to the exchange's log: durable once synced.
    Appended,
}

impl DelayedMessages {
    pub fn new(exchange: ByteString) -> Self {
        DelayedMessages {
            exchange,
            state: Mutex::new(State::default()),
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives a durable exchange its log and takes back what it held.
    pub fn attach_log(&self, mut log: QueueLog) {
        let mut state = self.state.lock();
        let mut cursor = log.cursor();
        loop {
            match log.next(&mut cursor) {
                Ok(Some((position, record))) => {
                    let Some((message, Some(due))) = Message::decode_record(record) else {
                        tracing::warn!(exchange = %self.exchange, "unreadable delayed message skipped");
                        let _ = log.ack(position, Lifetime::Persistent);
                        continue;
                    };
                    let delay = delay_of(&message).unwrap_or(0);
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    state.due.insert(
                        (due, seq),
                        Held {
                            message: Arc::new(message),
                            delay,
                            position: Some(position),
                        },
                    );
                }
                Ok(None) => break,
                Err(
                    error @ (wharf_store::StoreError::Corrupt { .. }
                    | wharf_store::StoreError::Lost { .. }),
                ) => {
                    tracing::error!(exchange = %self.exchange, %error, "delayed messages are damaged and were skipped");
                }
                Err(error) => {
                    tracing::error!(exchange = %self.exchange, %error, "cannot read delayed messages");
                    break;
                }
            }
        }
        if !state.due.is_empty() {
            tracing::info!(exchange = %self.exchange, messages = state.due.len(), "recovered delayed messages");
        }
        state.log = Some(log);
    }

    /// Holds `message` until `due` (ms since the epoch). A persistent message goes to the
    /// log too, if the exchange has one.
    pub fn hold(
        &self,
        message: Arc<Message>,
        delay: u64,
        due: u64,
    ) -> wharf_store::Result<HoldOutcome> {
        let mut state = self.state.lock();
        let mut outcome = HoldOutcome::InMemory;
        let mut position = None;
        if let (Some(log), true) = (state.log.as_mut(), message.is_persistent()) {
            position = Some(log.append(&message.encode_record(Some(due)), Lifetime::Persistent)?);
            outcome = HoldOutcome::Appended;
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.due.insert(
            (due, seq),
            Held {
                message,
                delay,
                position,
            },
        );
        Ok(outcome)
    }

    /// Takes the messages due by `now`, ready to route (their `x-delay` negated), and
    /// forgets them in the log.
    pub fn take_due(&self, now: u64) -> Vec<Message> {
        let mut state = self.state.lock();
        state.wake_at = None;
        let mut out = Vec::new();
        while let Some(entry) = state.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let held = entry.remove();
            if let (Some(log), Some(position)) = (state.log.as_mut(), held.position) {
                if let Err(error) = log.ack(position, Lifetime::Persistent) {
                    tracing::warn!(exchange = %self.exchange, %error, "cannot record a released delayed message");
                }
            }
            out.push(released(&held.message, held.delay));
        }
        if let Some(log) = state.log.as_mut() {
            if let Err(error) = log.write_acks() {
                tracing::warn!(exchange = %self.exchange, %error, "cannot record released delayed messages");
            }
        }
        out
    }

    /// When a timer should next wake, if that is earlier than one already set (which it
    /// then records as set).
    pub fn needs_wake(&self) -> Option<u64> {
        let mut state = self.state.lock();
        let (next, _) = *state.due.keys().next()?;
        if state.wake_at.is_some_and(|at| at <= next) {
            return None;
        }
        state.wake_at = Some(next);
        Some(next)
    }

    /// Drops everything, and the log (the exchange is deleted).
    pub fn destroy(&self) {
        let mut state = self.state.lock();
        state.due.clear();
        if let Some(log) = state.log.take() {
            if let Err(error) = log.destroy() {
                tracing::warn!(exchange = %self.exchange, %error, "cannot remove the delayed messages' log");
            }
        }
    }
}

impl crate::flusher::SyncTarget for DelayedMessages {
    fn sync_appends(&self) -> bool {
        let handle = match self
            .state
            .lock()
            .log
            .as_mut()
            .map(QueueLog::take_sync_handle)
        {
            None | Some(Ok(None)) => return true,
            Some(Ok(Some(file))) => file,
            Some(Err(error)) => {
                tracing::error!(exchange = %self.exchange, %error, "cannot sync the delayed messages' log");
                return false;
            }
        };
        match handle.sync_data() {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(exchange = %self.exchange, %error, "fsync of the delayed messages' log failed");
                false
            }
        }
    }
}
