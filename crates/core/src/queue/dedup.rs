//! Message deduplication, beyond RabbitMQ (its community plugin,
//! rabbitmq-message-deduplication, names the header used here): a queue declared with
//! `x-message-deduplication` = a window in milliseconds stores a message only if no
//! message with the same key reached it within that window, so a producer's retry after
//! a lost confirm is stored once. The key is the message's `x-deduplication-header`
//! header if it has one, else its `message_id`; a message with neither is always stored.
//!
//! The keys seen are kept in memory, at most `x-cache-size` of them (the oldest go first
//! beyond that), so a retry after a broker restart, or after that many newer messages,
//! is stored again.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use wharf_amqp::FieldValue;

use crate::message::Message;

pub use crate::queue_arguments::{CACHE_SIZE, CACHE_SIZE_DEFAULT, DEDUPLICATION};

/// The message header whose value is the key (else the message_id is).
pub const KEY_HEADER: &str = "x-deduplication-header";

/// The key a message is deduplicated by, if it has one.
pub fn key_of(message: &Message) -> Option<Bytes> {
    let properties = message.properties.decode().ok()?;
    if let Some(value) = properties.headers.as_ref().and_then(|h| h.get(KEY_HEADER)) {
        return Some(match value {
            FieldValue::LongStr(bytes) => bytes.clone(),
            other => Bytes::from(format!("{other:?}")),
        });
    }
    properties.message_id.map(|id| id.as_bytes().clone())
}

/// The keys a queue saw within its window.
#[derive(Debug)]
pub(super) struct SeenKeys {
    window_ms: u64,
    capacity: usize,
    /// Key -> when it stops counting.
    until: HashMap<Bytes, u64>,
    /// Keys in the order they were recorded, with their end, to forget them in order.
    order: VecDeque<(u64, Bytes)>,
}

impl SeenKeys {
    pub fn new(window_ms: u64, capacity: u64) -> SeenKeys {
        SeenKeys {
            window_ms,
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX).max(1),
            until: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `key` was seen within the window; if not, it is remembered from `now`.
    pub fn seen(&mut self, key: Bytes, now: u64) -> bool {
        self.forget_before(now);
        if self.until.get(&key).is_some_and(|&until| until > now) {
            return true;
        }
        while self.until.len() >= self.capacity {
            let Some((until, oldest)) = self.order.pop_front() else {
                break;
            };
            if self.until.get(&oldest) == Some(&until) {
                self.until.remove(&oldest);
            }
        }
        let until = now.saturating_add(self.window_ms);
        self.until.insert(key.clone(), until);
        self.order.push_back((until, key));
        false
    }

    /// Forgets `key` (its message was not stored after all: a retry is not a duplicate).
    pub fn forget(&mut self, key: &Bytes) {
        self.until.remove(key);
    }

    fn forget_before(&mut self, now: u64) {
        while let Some((until, _)) = self.order.front() {
            if *until > now {
                break;
            }
            let (until, key) = self.order.pop_front().expect("front was checked");
            if self.until.get(&key) == Some(&until) {
                self.until.remove(&key);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_counts_within_its_window_only() {
        let mut seen = SeenKeys::new(100, 10);
        let key = Bytes::from_static(b"m1");
        assert!(!seen.seen(key.clone(), 1_000));
        assert!(seen.seen(key.clone(), 1_050), "a retry within the window");
        assert!(seen.seen(key.clone(), 1_099));
        assert!(!seen.seen(key.clone(), 1_100), "the window is over");
        assert!(seen.seen(key, 1_150), "and starts again");
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn beyond_capacity_the_oldest_keys_go() {
        let mut seen = SeenKeys::new(60_000, 3);
        for k in [b"a", b"b", b"c", b"d"] {
            assert!(!seen.seen(Bytes::from_static(k), 0));
        }
        assert_eq!(seen.len(), 3);
        assert!(!seen.seen(Bytes::from_static(b"a"), 1), "forgotten");
        assert!(seen.seen(Bytes::from_static(b"d"), 1));
    }
}
