//! Message TTL, per queue (`x-message-ttl`) and per message (`expiration`), as RabbitMQ's
//! classic queues apply it: a message expires when it reaches the head of its queue, or
//! when it would be delivered; one behind an unexpired head waits (and is counted) until it
//! gets there; a TTL of 0 lets a message through only to a consumer that takes it at once;
//! a requeued message keeps its expiry.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel};

fn expiring(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ShortString::from(ms))
}

/// Publishes and waits for the confirm (the channel is in confirm mode): the message is
/// in the queue when this returns (RabbitMQ enqueues asynchronously).
async fn publish(ch: &Channel, queue: &str, body: &[u8], properties: BasicProperties) {
    let confirm = ch
        .basic_publish("", queue, Default::default(), body, properties)
        .await
        .unwrap();
    assert!(within(confirm).await.unwrap().is_ack());
}

async fn get(ch: &Channel, queue: &str, no_ack: bool) -> Option<lapin::message::BasicGetMessage> {
    ch.basic_get(queue, BasicGetOptions { no_ack })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_ttl_expires_messages_nobody_reads() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue_with(&ch, table(&[("x-message-ttl", int(300))])).await;
    for body in [b"a", b"b", b"c"] {
        publish(&ch, &queue, body, BasicProperties::default()).await;
    }
    assert_eq!(message_count(&ch, &queue).await, 3, "not yet expired");
    // Nothing touches the queue: the broker's own timer expires them.
    assert!(
        count_becomes(&ch, &queue, 0).await,
        "expired within {WAIT:?}"
    );
    assert!(get(&ch, &queue, true).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_expiration_and_the_shorter_of_the_two_wins() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue_with(&ch, table(&[("x-message-ttl", int(60_000))])).await;
    publish(&ch, &queue, b"short", expiring("100")).await;
    assert!(count_becomes(&ch, &queue, 0).await);

    publish(&ch, &queue, b"long", expiring("120000")).await;
    let got = get(&ch, &queue, true).await.expect("the message is there");
    assert_eq!(got.delivery.data, b"long");
    assert_eq!(
        got.delivery
            .properties
            .expiration()
            .as_ref()
            .map(|e| e.as_str()),
        Some("120000"),
        "a delivered message keeps its expiration property"
    );

    // Without a queue TTL the message's own applies.
    let plain = exclusive_queue(&ch).await;
    publish(&ch, &plain, b"x", expiring("50")).await;
    publish(&ch, &plain, b"y", expiring("60000")).await;
    assert!(count_becomes(&ch, &plain, 1).await);
    assert_eq!(take_all_bodies(&ch, &plain).await, vec![b"y".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_zero_reaches_only_a_consumer_that_takes_it_at_once() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue_with(&ch, table(&[("x-message-ttl", int(0))])).await;
    publish(&ch, &queue, b"nobody", BasicProperties::default()).await;
    assert_eq!(message_count(&ch, &queue).await, 0, "dropped at once");

    ch.basic_qos(1, Default::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(&queue, "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    publish(&ch, &queue, b"first", BasicProperties::default()).await;
    let first = next_delivery(&mut consumer).await;
    assert_eq!(first.data, b"first");
    // The consumer's one prefetch slot is taken: the next has nowhere to go at once.
    publish(&ch, &queue, b"second", BasicProperties::default()).await;
    no_delivery(&mut consumer).await;
    first.ack(Default::default()).await.unwrap();
    no_delivery(&mut consumer).await;
    assert_eq!(message_count(&ch, &queue).await, 0);
}

/// As RabbitMQ's classic queues: only the head is checked, so an expired message behind a
/// live one is still counted, and goes as soon as it reaches the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_waits_behind_a_live_head() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue(&ch).await;
    publish(&ch, &queue, b"head", expiring("60000")).await;
    publish(&ch, &queue, b"short", expiring("50")).await;
    publish(&ch, &queue, b"plain", BasicProperties::default()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(message_count(&ch, &queue).await, 3);
    let head = get(&ch, &queue, true).await.unwrap();
    assert_eq!(head.delivery.data, b"head");
    assert_eq!(
        head.message_count, 1,
        "the expired one went once at the head"
    );
    assert_eq!(take_all_bodies(&ch, &queue).await, vec![b"plain".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_message_keeps_its_expiry() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue_with(&ch, table(&[("x-message-ttl", int(400))])).await;
    publish(&ch, &queue, b"held", BasicProperties::default()).await;
    let held = get(&ch, &queue, false).await.unwrap();
    // Held unacknowledged past its TTL: it does not expire while delivered...
    tokio::time::sleep(Duration::from_millis(600)).await;
    held.delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    // ...but back in the queue it is past its time.
    assert!(count_becomes(&ch, &queue, 0).await);
    assert!(get(&ch, &queue, true).await.is_none());

    // One requeued before its time is delivered again.
    publish(&ch, &queue, b"quick", BasicProperties::default()).await;
    let quick = get(&ch, &queue, false).await.unwrap();
    quick
        .delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let again = get(&ch, &queue, true).await.expect("requeued in time");
    assert_eq!(again.delivery.data, b"quick");
    assert!(again.delivery.redelivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_is_not_given_expired_messages() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue(&ch).await;
    publish(&ch, &queue, b"stale", expiring("60000")).await;
    publish(&ch, &queue, b"gone", expiring("1")).await;
    publish(&ch, &queue, b"fresh", BasicProperties::default()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut consumer = ch
        .basic_consume(
            &queue,
            "c",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(next_delivery(&mut consumer).await.data, b"stale");
    assert_eq!(next_delivery(&mut consumer).await.data, b"fresh");
    no_delivery(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_expiration_closes_the_channel_with_rabbitmqs_reason() {
    let broker = start_broker().await;
    let connection = lapin_connect(&broker.url()).await;
    let cases = [
        ("abc", "no_integer"),
        ("", "no_integer"),
        ("-1", "{value_negative,-1}"),
        ("10.5", "{leftover_string,\".5\"}"),
        ("315360000001", "{value_too_large,315360000001}"),
    ];
    for (expiration, reason) in cases {
        let ch = connection.create_channel().await.unwrap();
        let closed = channel_error(&ch);
        let queue = exclusive_queue(&ch).await;
        let _ = ch
            .basic_publish("", &queue, Default::default(), b"x", expiring(expiration))
            .await;
        let (code, text) = closed_with(closed).await;
        assert_eq!(code, 406);
        assert_eq!(
            text,
            format!("PRECONDITION_FAILED - invalid expiration '{expiration}': {reason}")
        );
    }
    // "+5" is a number to Erlang's parser, and so to RabbitMQ.
    let ch = connection.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let queue = exclusive_queue(&ch).await;
    publish(&ch, &queue, b"ok", expiring("+5000")).await;
    assert_eq!(message_count(&ch, &queue).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ttl_arguments_are_refused_with_rabbitmqs_reasons() {
    let broker = start_broker().await;
    let connection = lapin_connect(&broker.url()).await;
    let cases = [
        ("x-message-ttl", int(-1), "{value_negative,-1}"),
        (
            "x-message-ttl",
            text("abc"),
            "\"expected integer, got longstr\"",
        ),
        (
            "x-message-ttl",
            int(315_360_000_001),
            "{value_too_large,315360000001}",
        ),
        ("x-expires", int(0), "{value_zero,0}"),
        ("x-expires", int(-5), "{value_negative,-5}"),
    ];
    for (argument, value, reason) in cases {
        let ch = connection.create_channel().await.unwrap();
        let name = unique("ttl-args");
        let error = ch
            .queue_declare(
                &name,
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                table(&[(argument, value)]),
            )
            .await
            .unwrap_err();
        assert_eq!(
            protocol_error(&error),
            (
                406,
                format!(
                    "PRECONDITION_FAILED - invalid arg '{argument}' for queue '{name}' in vhost '/': {reason}"
                )
            )
        );
    }
}

/// Beyond the in-memory window (10,000 messages) messages wait in the queue's log; they
/// expire from there too, as they reach the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_spilled_to_disk_expire_too() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // Wharf's window; RabbitMQ pages differently.
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue_with(&ch, table(&[("x-message-ttl", int(500))])).await;
    for i in 0..12_000u32 {
        publish_to(&ch, &queue, &i.to_be_bytes()).await;
    }
    publish(&ch, &queue, b"last", BasicProperties::default()).await;
    assert!(count_becomes(&ch, &queue, 0).await);
}

/// The expiry is kept with a stored message: a persistent message in a durable queue
/// whose TTL runs out while the broker is down is gone when it comes back; one with time
/// left expires on time after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_survives_a_restart() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // restarts the broker
    }
    let dir = TempDir::new("ttl-restart");
    let queue = "ttl-durable";
    {
        let broker = wharf_integration::start_broker_in(&dir.0).await;
        let (_c, ch) = confirming_channel(&broker).await;
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(queue, options, FieldTable::default())
            .await
            .unwrap();
        let persistent = BasicProperties::default().with_delivery_mode(2);
        publish(
            &ch,
            queue,
            b"short",
            persistent.clone().with_expiration("300".into()),
        )
        .await;
        publish(
            &ch,
            queue,
            b"long",
            persistent.with_expiration("2500".into()),
        )
        .await;
        ch.close(200, "bye").await.unwrap();
        broker.stop().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let broker = wharf_integration::start_broker_in(&dir.0).await;
    let (_c, ch) = confirming_channel(&broker).await;
    assert_eq!(
        message_count(&ch, queue).await,
        1,
        "the short one expired while the broker was down"
    );
    assert!(
        count_becomes(&ch, queue, 0).await,
        "the long one expires on time"
    );
}
