//! Dead-lettering (`x-dead-letter-exchange`, `x-dead-letter-routing-key`) as RabbitMQ 3.10
//! does it: rejected, expired and overflowing messages are republished to the queue's
//! dead-letter exchange with an `x-death` history and `x-first-death-*` headers; cycles
//! without a rejection in them are broken by dropping the message.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

/// A fanout exchange that goes away with its last binding (the test's exclusive queues).
async fn fanout(ch: &Channel) -> String {
    let name = unique("dlx");
    let options = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    ch.exchange_declare(&name, ExchangeKind::Fanout, options, FieldTable::default())
        .await
        .unwrap();
    name
}

async fn bound_queue(ch: &Channel, exchange: &str) -> String {
    let queue = exclusive_queue(ch).await;
    ch.queue_bind(
        &queue,
        exchange,
        "",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    queue
}

/// Publishes through the default exchange and waits for the confirm.
async fn publish(ch: &Channel, queue: &str, body: &[u8], properties: BasicProperties) -> bool {
    let confirm = ch
        .basic_publish("", queue, Default::default(), body, properties)
        .await
        .unwrap();
    within(confirm).await.unwrap().is_ack()
}

async fn get(ch: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    ch.basic_get(queue, BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("a message in {queue}"))
}

/// Waits for a message to arrive in `queue` (dead-lettering is asynchronous in RabbitMQ).
async fn arrives(ch: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    assert!(count_becomes(ch, queue, 1).await, "a message in {queue}");
    get(ch, queue).await
}

async fn reject(message: &lapin::message::BasicGetMessage) {
    message
        .delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(name)
}

fn text_of(value: Option<&AMQPValue>) -> Option<String> {
    match value? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The x-death entries, most recent first.
fn deaths(properties: &BasicProperties) -> Vec<FieldTable> {
    match header(properties, "x-death") {
        Some(AMQPValue::FieldArray(entries)) => entries
            .as_slice()
            .iter()
            .map(|e| match e {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death entry is not a table: {other:?}"),
            })
            .collect(),
        other => panic!("no x-death array: {other:?}"),
    }
}

fn field<'a>(entry: &'a FieldTable, name: &str) -> &'a AMQPValue {
    entry
        .inner()
        .get(name)
        .unwrap_or_else(|| panic!("x-death entry without {name}: {entry:?}"))
}

fn texts(value: &AMQPValue) -> Vec<String> {
    match value {
        AMQPValue::FieldArray(items) => items
            .as_slice()
            .iter()
            .map(|v| text_of(Some(v)).expect("a long string"))
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

/// (queue, reason, count) of each x-death entry, most recent first.
fn history(properties: &BasicProperties) -> Vec<(String, String, i64)> {
    deaths(properties)
        .iter()
        .map(|d| {
            let count = match field(d, "count") {
                AMQPValue::LongLongInt(n) => *n,
                other => panic!("count is not a long: {other:?}"),
            };
            (
                text_of(Some(field(d, "queue"))).unwrap(),
                text_of(Some(field(d, "reason"))).unwrap(),
                count,
            )
        })
        .collect()
}

fn dead_letter_to(exchange: &str, routing_key: Option<&str>) -> Vec<(&'static str, AMQPValue)> {
    let mut arguments = vec![("x-dead-letter-exchange", text(exchange))];
    if let Some(key) = routing_key {
        arguments.push(("x-dead-letter-routing-key", text(key)));
    }
    arguments
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_is_republished_with_its_death_recorded() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let dlx = fanout(&ch).await;
    let source = exclusive_queue_with(&ch, table(&dead_letter_to(&dlx, None))).await;
    let dead = bound_queue(&ch, &dlx).await;
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(ShortString::from("m1"))
        .with_expiration(ShortString::from("60000"))
        .with_headers(table(&[("h1", text("v1"))]));
    assert!(publish(&ch, &source, b"payload", properties).await);
    let before = now_s();
    reject(&get(&ch, &source).await).await;

    let got = arrives(&ch, &dead).await;
    let delivery = &got.delivery;
    assert_eq!(delivery.data, b"payload");
    assert_eq!(delivery.exchange.as_str(), dlx);
    assert_eq!(delivery.routing_key.as_str(), source, "its own routing key");
    assert!(!delivery.redelivered);
    let properties = &delivery.properties;
    assert_eq!(properties.delivery_mode(), &Some(2));
    assert_eq!(properties.message_id().as_ref().unwrap().as_str(), "m1");
    assert_eq!(
        properties.expiration(),
        &None,
        "the expiration is removed so that it does not expire again"
    );
    assert_eq!(text_of(header(properties, "h1")).as_deref(), Some("v1"));
    assert_eq!(
        text_of(header(properties, "x-first-death-reason")).as_deref(),
        Some("rejected")
    );
    assert_eq!(
        text_of(header(properties, "x-first-death-queue")),
        Some(source.clone())
    );
    assert_eq!(
        text_of(header(properties, "x-first-death-exchange")).as_deref(),
        Some("")
    );
    let deaths = deaths(properties);
    assert_eq!(deaths.len(), 1);
    let death = &deaths[0];
    assert_eq!(field(death, "count"), &AMQPValue::LongLongInt(1));
    assert_eq!(text_of(Some(field(death, "reason"))).unwrap(), "rejected");
    assert_eq!(text_of(Some(field(death, "queue"))).unwrap(), source);
    assert_eq!(text_of(Some(field(death, "exchange"))).unwrap(), "");
    assert_eq!(texts(field(death, "routing-keys")), vec![source.clone()]);
    assert_eq!(
        text_of(Some(field(death, "original-expiration"))).unwrap(),
        "60000"
    );
    match field(death, "time") {
        AMQPValue::Timestamp(t) => assert!(
            (before..before + 60).contains(t),
            "time {t} is the moment of death in seconds"
        ),
        other => panic!("time is not a timestamp: {other:?}"),
    }
    assert_eq!(death.inner().len(), 7, "nothing more: {death:?}");
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Expired twice along a chain (Q1 -> Q2 -> Q3, through the default exchange with a
/// dead-letter routing key each): the newest death comes first; the first-death headers
/// keep the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_follow_a_chain_and_the_newest_death_comes_first() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let q3 = exclusive_queue(&ch).await;
    let mut q2_args = dead_letter_to("", Some(&q3));
    q2_args.push(("x-message-ttl", int(50)));
    let q2 = exclusive_queue_with(&ch, table(&q2_args)).await;
    let mut q1_args = dead_letter_to("", Some(&q2));
    q1_args.push(("x-message-ttl", int(50)));
    let q1 = exclusive_queue_with(&ch, table(&q1_args)).await;
    assert!(publish(&ch, &q1, b"m", BasicProperties::default()).await);

    let got = arrives(&ch, &q3).await;
    assert_eq!(got.delivery.exchange.as_str(), "");
    assert_eq!(got.delivery.routing_key.as_str(), q3);
    let properties = &got.delivery.properties;
    assert_eq!(
        history(properties),
        vec![
            (q2.clone(), "expired".to_string(), 1),
            (q1.clone(), "expired".to_string(), 1)
        ]
    );
    let deaths = deaths(properties);
    // Each death records the keys the message had when it died.
    assert_eq!(texts(field(&deaths[0], "routing-keys")), vec![q2.clone()]);
    assert_eq!(texts(field(&deaths[1], "routing-keys")), vec![q1.clone()]);
    assert!(
        !deaths[0].inner().contains_key("original-expiration"),
        "a queue TTL leaves no original-expiration"
    );
    assert_eq!(
        text_of(header(properties, "x-first-death-queue")),
        Some(q1.clone())
    );
    assert_eq!(
        text_of(header(properties, "x-first-death-reason")).as_deref(),
        Some("expired")
    );
}

/// A message dead-lettered again from a queue, for a reason, it already died of counts up
/// that entry and moves it to the front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dying_again_the_same_way_counts_up() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    // Two queues that dead-letter into each other.
    let a = unique("ping");
    let b = unique("pong");
    for (name, other) in [(&a, &b), (&b, &a)] {
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        ch.queue_declare(name, options, table(&dead_letter_to("", Some(other))))
            .await
            .unwrap();
    }
    assert!(publish(&ch, &a, b"m", BasicProperties::default()).await);
    reject(&get(&ch, &a).await).await; // a -> b
    reject(&arrives(&ch, &b).await).await; // b -> a
    reject(&arrives(&ch, &a).await).await; // a -> b
    let got = arrives(&ch, &b).await;
    assert_eq!(
        history(&got.delivery.properties),
        vec![
            (a.clone(), "rejected".to_string(), 2),
            (b.clone(), "rejected".to_string(), 1)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_of_many_without_requeue_dead_letters_each_in_order() {
    let broker = start_broker().await;
    let (connection, ch) = confirming_channel(&broker).await;
    let dlx = fanout(&ch).await;
    let source = exclusive_queue_with(&ch, table(&dead_letter_to(&dlx, None))).await;
    let dead = bound_queue(&ch, &dlx).await;
    for body in [b"1", b"2", b"3"] {
        assert!(publish(&ch, &source, body, BasicProperties::default()).await);
    }
    let consumer_ch = connection.create_channel().await.unwrap();
    let mut consumer = consumer_ch
        .basic_consume(&source, "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let mut last = None;
    for _ in 0..3 {
        last = Some(next_delivery(&mut consumer).await);
    }
    last.unwrap()
        .nack(BasicNackOptions {
            multiple: true,
            requeue: false,
        })
        .await
        .unwrap();
    assert!(count_becomes(&ch, &dead, 3).await);
    assert_eq!(
        take_all_bodies(&ch, &dead).await,
        vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
    );
    assert_eq!(message_count(&ch, &source).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowing_messages_are_dead_lettered_with_reason_maxlen() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let dlx = fanout(&ch).await;
    let dead = bound_queue(&ch, &dlx).await;
    for (overflow, dropped) in [
        ("drop-head", &b"first"[..]),
        ("reject-publish-dlx", &b"second"[..]),
    ] {
        let mut arguments = dead_letter_to(&dlx, None);
        arguments.push(("x-max-length", int(1)));
        arguments.push(("x-overflow", text(overflow)));
        let queue = exclusive_queue_with(&ch, table(&arguments)).await;
        assert!(publish(&ch, &queue, b"first", BasicProperties::default()).await);
        let second = publish(&ch, &queue, b"second", BasicProperties::default()).await;
        assert_eq!(
            second,
            overflow == "drop-head",
            "{overflow}: the second is acked"
        );
        let got = arrives(&ch, &dead).await;
        assert_eq!(got.delivery.data, dropped, "{overflow}");
        assert_eq!(
            history(&got.delivery.properties),
            vec![(queue.clone(), "maxlen".to_string(), 1)]
        );
        got.delivery.ack(Default::default()).await.unwrap();
        assert_eq!(take_all_bodies(&ch, &queue).await.len(), 1, "{overflow}");
    }
}

/// A message that expires into its own queue is dropped (a cycle with no rejection in it);
/// one rejected into its own queue goes round as often as it is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_without_a_rejection_are_broken() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let expiring = unique("self-expire");
    let mut arguments = dead_letter_to("", None);
    arguments.push(("x-message-ttl", int(50)));
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare(&expiring, options, table(&arguments))
        .await
        .unwrap();
    assert!(publish(&ch, &expiring, b"m", BasicProperties::default()).await);
    assert!(count_becomes(&ch, &expiring, 0).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        message_count(&ch, &expiring).await,
        0,
        "dropped, not cycling"
    );

    let rejecting = unique("self-reject");
    ch.queue_declare(&rejecting, options, table(&dead_letter_to("", None)))
        .await
        .unwrap();
    assert!(publish(&ch, &rejecting, b"m", BasicProperties::default()).await);
    for round in 1..=3 {
        let got = arrives(&ch, &rejecting).await;
        if round > 1 {
            assert_eq!(
                history(&got.delivery.properties),
                vec![(rejecting.clone(), "rejected".to_string(), round - 1)]
            );
        }
        reject(&got).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_exchange_drops_the_message() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let source = exclusive_queue_with(&ch, table(&dead_letter_to(&unique("nowhere"), None))).await;
    assert!(publish(&ch, &source, b"m", BasicProperties::default()).await);
    reject(&get(&ch, &source).await).await;
    assert_eq!(message_count(&ch, &source).await, 0);
    // The channel is unharmed.
    assert!(publish(&ch, &source, b"n", BasicProperties::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_dead_letter_arguments_are_refused_with_rabbitmqs_texts() {
    let broker = start_broker().await;
    let connection = lapin_connect(&broker.url()).await;
    let cases: [(Vec<(&str, AMQPValue)>, String); 3] = [
        (
            vec![("x-dead-letter-exchange", AMQPValue::LongInt(5))],
            "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"
                .to_string(),
        ),
        (
            vec![("x-dead-letter-routing-key", text("rk"))],
            "invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': routing_key_but_no_dlx_defined"
                .to_string(),
        ),
        (
            vec![
                ("x-dead-letter-exchange", text("dlx")),
                ("x-dead-letter-routing-key", AMQPValue::LongInt(5)),
            ],
            "invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': {unacceptable_type,signedint}"
                .to_string(),
        ),
    ];
    for (arguments, expected) in cases {
        let ch = connection.create_channel().await.unwrap();
        let name = unique("dlx-args");
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        let error = ch
            .queue_declare(&name, options, table(&arguments))
            .await
            .unwrap_err();
        assert_eq!(
            protocol_error(&error),
            (
                406,
                format!("PRECONDITION_FAILED - {}", expected.replace("{q}", &name))
            )
        );
    }
}

/// `x-delivery-limit` (a quorum-queue argument; Wharf accepts it on any queue): each
/// requeue counts, shown to consumers as `x-delivery-count`; past the limit the message
/// is dead-lettered with reason delivery_limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_delivery_limit_a_message_is_dead_lettered() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let dlx = fanout(&ch).await;
    let dead = bound_queue(&ch, &dlx).await;
    // Declared as RabbitMQ requires for the limit (a durable quorum queue), so that the
    // test runs against RabbitMQ too.
    let source = unique("limited");
    let mut arguments = dead_letter_to(&dlx, None);
    arguments.push(("x-queue-type", text("quorum")));
    arguments.push(("x-delivery-limit", int(2)));
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(&source, options, table(&arguments))
        .await
        .unwrap();
    assert!(publish(&ch, &source, b"m", BasicProperties::default()).await);
    let requeue = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    // basic.get shows the count from the first delivery on...
    for attempt in 0..2i64 {
        let got = arrives(&ch, &source).await;
        let count = header(&got.delivery.properties, "x-delivery-count");
        assert_eq!(count, Some(&AMQPValue::LongLongInt(attempt)));
        assert_eq!(got.delivery.redelivered, attempt > 0);
        got.delivery.nack(requeue).await.unwrap();
    }
    // ...a consumer sees it once a delivery was requeued.
    let mut consumer = ch
        .basic_consume(&source, "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let got = next_delivery(&mut consumer).await;
    let count = header(&got.properties, "x-delivery-count");
    assert_eq!(count, Some(&AMQPValue::LongLongInt(2)));
    got.nack(requeue).await.unwrap();
    let got = arrives(&ch, &dead).await;
    assert_eq!(
        history(&got.delivery.properties),
        vec![(source.clone(), "delivery_limit".to_string(), 1)]
    );
    assert_eq!(message_count(&ch, &source).await, 0);
    ch.queue_delete(&source, Default::default()).await.unwrap();
}

/// Messages that expire while the broker is down are dead-lettered when it comes back,
/// once the bindings they route by are back too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_expired_while_down_are_dead_lettered_at_start() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // restarts the broker
    }
    let dir = TempDir::new("dlx-restart");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    {
        let broker = wharf_integration::start_broker_in(&dir.0).await;
        let (_c, ch) = confirming_channel(&broker).await;
        let exchange_options = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            "dlx",
            ExchangeKind::Fanout,
            exchange_options,
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare("dead", durable, FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind("dead", "dlx", "", Default::default(), FieldTable::default())
            .await
            .unwrap();
        let mut arguments = dead_letter_to("dlx", None);
        arguments.push(("x-message-ttl", int(200)));
        ch.queue_declare("source", durable, table(&arguments))
            .await
            .unwrap();
        let persistent = BasicProperties::default().with_delivery_mode(2);
        assert!(publish(&ch, "source", b"m", persistent).await);
        broker.stop().await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let broker = wharf_integration::start_broker_in(&dir.0).await;
    let (_c, ch) = confirming_channel(&broker).await;
    let got = arrives(&ch, "dead").await;
    assert_eq!(got.delivery.data, b"m");
    assert_eq!(
        history(&got.delivery.properties),
        vec![("source".to_string(), "expired".to_string(), 1)]
    );
    assert_eq!(message_count(&ch, "source").await, 0);
}
