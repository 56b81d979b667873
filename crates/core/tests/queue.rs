//! A queue on its own, driven through its public operations, with a host of the test's
//! own (`QueueHost`): its clock moves only when the test moves it, its timers run when
//! the test says so, and its dead letters are kept to be looked at. No vhost, no sleeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use wharf_amqp::{BasicProperties, ByteString, FieldTable, FieldValue};
use wharf_core::queue::dead_letter::{DeadLetter, DeathReason};
use wharf_core::queue::{Offered, QueueHost, QueueOptions, Window, Woken};
use wharf_core::timer::Task;
use wharf_core::{Consumer, Delivery, DeliveryTarget, Enqueued, Message, Queue};

/// Starts at an arbitrary instant; moves only with `advance`.
const START_MS: u64 = 1_700_000_000_000;

#[derive(Default)]
struct TestHost {
    now: AtomicU64,
    timers: Mutex<Vec<(u64, Task)>>,
    dead: Mutex<Vec<(Bytes, DeathReason, ByteString)>>,
    expired: Mutex<Vec<ByteString>>,
}

impl QueueHost for TestHost {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn dead_letter(&self, _queue: &Queue, letters: Vec<DeadLetter>) {
        let mut dead = self.dead.lock();
        for letter in letters {
            dead.push((letter.message.body.clone(), letter.reason, letter.exchange));
        }
    }

    fn schedule_at_ms(&self, at_ms: u64, task: Task) {
        self.timers.lock().push((at_ms, task));
    }

    fn queue_expired(&self, queue: &Arc<Queue>) {
        self.expired.lock().push(queue.name.clone());
        queue.mark_deleted();
    }
}

impl TestHost {
    fn new() -> Arc<TestHost> {
        let host = TestHost::default();
        host.now.store(START_MS, Ordering::SeqCst);
        Arc::new(host)
    }

    /// Moves the clock on by `ms` and runs every timer then due, in order (a task may set
    /// another).
    fn advance(&self, ms: u64) {
        let now = self.now.fetch_add(ms, Ordering::SeqCst) + ms;
        loop {
            let due = {
                let mut timers = self.timers.lock();
                timers.sort_by_key(|(at, _)| *at);
                match timers.first() {
                    Some((at, _)) if *at <= now => Some(timers.remove(0).1),
                    _ => None,
                }
            };
            match due {
                Some(task) => task(),
                None => return,
            }
        }
    }

    fn dead_bodies(&self) -> Vec<(String, DeathReason)> {
        self.dead
            .lock()
            .iter()
            .map(|(body, reason, _)| (String::from_utf8_lossy(body).into_owned(), *reason))
            .collect()
    }
}

fn queue_with(host: &Arc<TestHost>, arguments: &[(&str, FieldValue)]) -> Arc<Queue> {
    let mut table = FieldTable::new();
    for (name, value) in arguments {
        table.insert(*name, value.clone());
    }
    let home: Weak<dyn QueueHost> = Arc::downgrade(host) as Weak<dyn QueueHost>;
    Arc::new(Queue::new(
        ByteString::from("q"),
        ByteString::from("/"),
        QueueOptions {
            durable: false,
            exclusive_owner: None,
            auto_delete: false,
            arguments: table,
        },
        Window::default(),
        home,
    ))
}

fn text(value: &str) -> FieldValue {
    FieldValue::LongStr(Bytes::copy_from_slice(value.as_bytes()))
}

fn message(body: &str) -> Arc<Message> {
    message_with(body, BasicProperties::default())
}

fn message_with(body: &str, properties: BasicProperties) -> Arc<Message> {
    Arc::new(Message {
        exchange: ByteString::from(""),
        routing_key: ByteString::from("q"),
        properties: properties.into(),
        body: Bytes::copy_from_slice(body.as_bytes()),
    })
}

fn get_body(queue: &Arc<Queue>) -> Option<String> {
    let got = queue.get(true)?;
    Some(String::from_utf8_lossy(&got.message.body).into_owned())
}

/// A consumer's end that takes up to `credit` deliveries and remembers them.
struct Taker {
    credit: AtomicU64,
    taken: Mutex<Vec<(u64, String, bool)>>,
}

impl Taker {
    fn new(credit: u64) -> Arc<Taker> {
        Arc::new(Taker {
            credit: AtomicU64::new(credit),
            taken: Mutex::new(Vec::new()),
        })
    }

    fn consumer(self: &Arc<Self>, tag: &str) -> Consumer {
        let target: Arc<dyn DeliveryTarget> = self.clone();
        Consumer::new(
            ByteString::from(tag),
            false,
            false,
            FieldTable::new(),
            target,
        )
    }

    fn take_offsets(&self) -> Vec<u64> {
        self.taken
            .lock()
            .drain(..)
            .map(|(offset, _, _)| offset)
            .collect()
    }
}

impl DeliveryTarget for Taker {
    fn try_deliver(&self, delivery: Delivery<'_>) -> Offered {
        let left = self.credit.load(Ordering::SeqCst);
        if left == 0 {
            return Offered::Refused;
        }
        self.credit.store(left - 1, Ordering::SeqCst);
        let body = String::from_utf8_lossy(&delivery.message.body).into_owned();
        self.taken
            .lock()
            .push((delivery.offset, body, delivery.redelivered));
        if left == 1 {
            Offered::TookLastCredit
        } else {
            Offered::Taken
        }
    }

    fn consumer_cancelled(&self, _consumer_tag: &ByteString) {}

    fn deliver_reply(&self, _consumer_tag: &ByteString, _message: &Arc<Message>) -> bool {
        false
    }
}

#[test]
fn a_message_expires_when_the_clock_reaches_its_ttl_and_is_dead_lettered() {
    let host = TestHost::new();
    let queue = queue_with(
        &host,
        &[
            ("x-message-ttl", FieldValue::I32(1_000)),
            ("x-dead-letter-exchange", text("dlx")),
        ],
    );
    assert_eq!(queue.publish(message("a")).0, Enqueued::InMemory);
    host.advance(500);
    assert_eq!(queue.publish(message("b")).0, Enqueued::InMemory);
    host.advance(499);
    assert_eq!(queue.message_count(), 2, "nothing is due yet");
    assert!(host.dead_bodies().is_empty());
    host.advance(1);
    assert_eq!(queue.message_count(), 1, "a expired at 1000 ms");
    assert_eq!(
        host.dead_bodies(),
        [("a".to_string(), DeathReason::Expired)]
    );
    assert_eq!(host.dead.lock()[0].2, "dlx");
    host.advance(500);
    assert_eq!(queue.message_count(), 0);
    assert_eq!(
        host.dead_bodies()[1],
        ("b".to_string(), DeathReason::Expired)
    );
}

#[test]
fn a_per_message_expiration_shorter_than_the_queue_ttl_wins() {
    let host = TestHost::new();
    let queue = queue_with(&host, &[("x-message-ttl", FieldValue::I32(60_000))]);
    let short = BasicProperties {
        expiration: Some(ByteString::from("100")),
        ..Default::default()
    };
    queue.publish(message_with("short", short));
    queue.publish(message("long"));
    host.advance(100);
    // Without a dead-letter exchange an expired message is dropped; a get sees the next.
    assert!(host.dead_bodies().is_empty());
    assert_eq!(get_body(&queue).as_deref(), Some("long"));
}

#[test]
fn an_unused_queue_expires_and_a_consumer_keeps_it() {
    let host = TestHost::new();
    let queue = queue_with(&host, &[("x-expires", FieldValue::I32(10_000))]);
    let taker = Taker::new(10);
    queue.add_consumer(taker.consumer("c")).unwrap();
    host.advance(60_000);
    assert!(
        host.expired.lock().is_empty(),
        "a queue with a consumer is in use"
    );
    queue.remove_consumer(&(taker.clone() as Arc<dyn DeliveryTarget>), "c");
    host.advance(9_999);
    assert!(host.expired.lock().is_empty());
    host.advance(1);
    assert_eq!(*host.expired.lock(), ["q"]);
    assert!(queue.is_deleted());
}

#[test]
fn drop_head_dead_letters_the_oldest_and_reject_publish_refuses_the_newest() {
    let host = TestHost::new();
    let drop_head = queue_with(
        &host,
        &[
            ("x-max-length", FieldValue::I32(2)),
            ("x-dead-letter-exchange", text("dlx")),
        ],
    );
    for body in ["1", "2", "3"] {
        assert_eq!(drop_head.publish(message(body)).0, Enqueued::InMemory);
    }
    assert_eq!(host.dead_bodies(), [("1".to_string(), DeathReason::MaxLen)]);
    assert_eq!(get_body(&drop_head).as_deref(), Some("2"));
    let counters = drop_head.stats().counters;
    assert_eq!(counters.dead_lettered[DeathReason::MaxLen.index()], 1);
    // Without a dead-letter exchange, the same death is counted as a discard.
    let host_without = TestHost::new();
    let no_dlx = queue_with(&host_without, &[("x-max-length", FieldValue::I32(1))]);
    no_dlx.publish(message("a"));
    no_dlx.publish(message("b"));
    let counters = no_dlx.stats().counters;
    assert_eq!(counters.discarded[DeathReason::MaxLen.index()], 1);
    assert_eq!(counters.dead_lettered, [0; 4]);

    let host = TestHost::new();
    let reject = queue_with(
        &host,
        &[
            ("x-max-length", FieldValue::I32(1)),
            ("x-overflow", text("reject-publish")),
        ],
    );
    assert_eq!(reject.publish(message("kept")).0, Enqueued::InMemory);
    assert_eq!(reject.publish(message("refused")).0, Enqueued::Rejected);
    assert_eq!(reject.message_count(), 1);
    assert!(
        host.dead_bodies().is_empty(),
        "reject-publish does not dead-letter"
    );
}

#[test]
fn requeued_deliveries_come_back_redelivered_until_the_delivery_limit() {
    let host = TestHost::new();
    let queue = queue_with(
        &host,
        &[
            ("x-delivery-limit", FieldValue::I32(1)),
            ("x-dead-letter-exchange", text("dlx")),
        ],
    );
    let taker = Taker::new(100);
    queue.add_consumer(taker.consumer("c")).unwrap();
    queue.publish(message("poison"));
    let first = taker.taken.lock().clone();
    assert_eq!(first.len(), 1);
    assert!(!first[0].2, "first delivery is not redelivered");
    queue.requeue(&taker.take_offsets());
    let second = taker.taken.lock().clone();
    assert_eq!(second.len(), 1, "requeued and delivered again");
    assert!(second[0].2, "redelivered");
    queue.requeue(&taker.take_offsets());
    assert!(taker.taken.lock().is_empty(), "past its delivery limit");
    assert_eq!(
        host.dead_bodies(),
        [("poison".to_string(), DeathReason::DeliveryLimit)]
    );
}

#[test]
fn rejected_without_requeue_is_dead_lettered_and_acked_is_gone() {
    let host = TestHost::new();
    let queue = queue_with(&host, &[("x-dead-letter-exchange", text("dlx"))]);
    let taker = Taker::new(100);
    queue.add_consumer(taker.consumer("c")).unwrap();
    queue.publish(message("bad"));
    queue.publish(message("good"));
    let taken = taker.taken.lock().clone();
    assert_eq!(taken.len(), 2);
    assert_eq!(queue.unacked_count(), 2);
    queue.reject(&[taken[0].0]);
    queue.ack(&[taken[1].0]);
    assert_eq!(queue.unacked_count(), 0);
    assert_eq!(queue.message_count(), 0);
    assert_eq!(
        host.dead_bodies(),
        [("bad".to_string(), DeathReason::Rejected)]
    );
    let counters = queue.stats().counters;
    assert_eq!(counters.dead_lettered[DeathReason::Rejected.index()], 1);
    assert_eq!(counters.discarded, [0; 4]);
}

#[test]
fn higher_priorities_are_delivered_first_and_fifo_within_one() {
    let host = TestHost::new();
    let queue = queue_with(&host, &[("x-max-priority", FieldValue::I32(5))]);
    for (body, priority) in [
        ("low-1", 1),
        ("high-1", 5),
        ("low-2", 1),
        ("high-2", 5),
        ("none", 0),
    ] {
        let properties = BasicProperties {
            priority: Some(priority),
            ..Default::default()
        };
        queue.publish(message_with(body, properties));
    }
    let order: Vec<String> = std::iter::from_fn(|| get_body(&queue)).collect();
    assert_eq!(order, ["high-1", "high-2", "low-1", "low-2", "none"]);
}

#[test]
fn a_queue_whose_host_is_gone_keeps_working_on_the_system_clock() {
    let host = TestHost::new();
    let queue = queue_with(&host, &[("x-message-ttl", FieldValue::I32(60_000))]);
    drop(host);
    assert_eq!(queue.publish(message("still")).0, Enqueued::InMemory);
    assert_eq!(get_body(&queue).as_deref(), Some("still"));
}

#[test]
fn each_operation_says_what_it_delivered_and_whose_credit_it_filled() {
    let host = TestHost::new();
    let queue = queue_with(&host, &[]);
    let taker = Taker::new(2);
    let woken = |deliveries, credit_filled| Woken {
        deliveries,
        credit_filled,
    };
    assert_eq!(
        queue.publish(message("early")).1,
        woken(0, false),
        "no consumer yet"
    );
    assert_eq!(
        queue.add_consumer(taker.consumer("c")).unwrap(),
        woken(1, false)
    );
    assert_eq!(
        queue.publish(message("second")).1,
        woken(1, true),
        "its last credit"
    );
    assert_eq!(
        queue.publish(message("third")).1,
        woken(0, false),
        "refused: kept"
    );
    taker.credit.store(1, Ordering::SeqCst);
    let offsets = taker.take_offsets();
    assert_eq!(
        queue.ack(&offsets),
        woken(1, true),
        "the ack let the third go"
    );
    assert_eq!(queue.deliver_ready(), woken(0, false));
}

#[test]
fn stats_read_what_the_queue_holds_and_has_done() {
    let host = TestHost::new();
    let queue = queue_with(&host, &[]);
    for body in ["0123456789", "abcdefghij", "klmnopqrst", "uvwxyz0123"] {
        queue.publish(message(body));
    }
    let taker = Taker::new(2);
    queue.add_consumer(taker.consumer("c")).unwrap();
    let delivered = taker.take_offsets();
    assert_eq!(delivered.len(), 2);
    let stats = queue.stats();
    assert_eq!(
        (
            stats.messages_ready,
            stats.messages_unacknowledged,
            stats.messages()
        ),
        (2, 2, 4)
    );
    assert_eq!(
        (
            stats.message_bytes_ready,
            stats.message_bytes_unacknowledged
        ),
        (20, 20)
    );
    assert_eq!(stats.consumers, 1);
    queue.ack(&delivered[..1]);
    queue.requeue(&delivered[1..]);
    // The requeued one goes back to the consumer (one unit of credit left), redelivered.
    taker.credit.store(1, Ordering::SeqCst);
    queue.deliver_ready();
    assert!(get_body(&queue).is_some(), "a get without ack");
    let counters = queue.stats().counters;
    assert_eq!(
        counters,
        wharf_core::queue::QueueCounters {
            published: 4,
            delivered: 3,
            delivered_no_ack: 0,
            got: 0,
            got_no_ack: 1,
            redelivered: 1,
            acked: 1,
            get_empty: 0,
            dead_lettered: [0; 4],
            discarded: [0; 4],
        }
    );
    let stats = queue.stats();
    assert_eq!(
        (stats.messages_ready, stats.messages_unacknowledged),
        (1, 1)
    );
    assert_eq!(stats.message_bytes(), 20);
}

#[test]
fn a_get_that_finds_nothing_is_counted() {
    let host = TestHost::new();
    let queue = queue_with(&host, &[]);
    assert!(get_body(&queue).is_none());
    assert!(get_body(&queue).is_none());
    assert_eq!(queue.stats().counters.get_empty, 2);
}

#[test]
fn memory_grows_with_the_messages_held_and_falls_when_they_go() {
    let host = TestHost::new();
    let queue = queue_with(&host, &[]);
    let empty = queue.stats().memory_bytes;
    assert!(empty > 0, "the queue itself");
    for _ in 0..10 {
        queue.publish(Arc::new(Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: message("x").properties.clone(),
            body: vec![7u8; 1000].into(),
        }));
    }
    let full = queue.stats().memory_bytes;
    assert!(full >= empty + 10_000, "{empty} -> {full}");
    queue.purge();
    assert_eq!(queue.stats().memory_bytes, empty);
}

#[test]
fn utilisation_is_the_share_of_time_consumers_could_take_what_waits() {
    let host = TestHost::new();
    let queue = queue_with(&host, &[]);
    assert_eq!(
        queue.stats().consumer_utilisation(),
        0.0,
        "no consumers yet"
    );
    let taker = Taker::new(0);
    queue.add_consumer(taker.consumer("c")).unwrap();
    // Nothing waits: the consumer keeps up.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let idle = queue.stats();
    assert_eq!(idle.blocked_time, std::time::Duration::ZERO);
    assert_eq!(idle.consumer_utilisation(), 1.0);
    // A message the consumer has no credit for: blocked until it takes it.
    queue.publish(message("a"));
    std::thread::sleep(std::time::Duration::from_millis(30));
    let blocked = queue.stats();
    assert!(
        blocked.blocked_time >= std::time::Duration::from_millis(30),
        "{:?}",
        blocked.blocked_time
    );
    assert!(blocked.consumer_utilisation() < 1.0);
    taker.credit.store(1, Ordering::SeqCst);
    queue.deliver_ready();
    let after = queue.stats().blocked_time;
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(queue.stats().blocked_time, after, "no longer blocked");
}
