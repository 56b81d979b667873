//! Priority queues (`x-max-priority`), as RabbitMQ's: a message's `priority` property
//! (none = 0, above the maximum = the maximum) picks its level; the highest level is
//! delivered first, first in first out within a level; a requeued message goes back to
//! its place in its level.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

async fn publish(ch: &Channel, queue: &str, body: &[u8], priority: Option<u8>) -> bool {
    let mut properties = BasicProperties::default();
    if let Some(priority) = priority {
        properties = properties.with_priority(priority);
    }
    let confirm = ch
        .basic_publish("", queue, Default::default(), body, properties)
        .await
        .unwrap();
    within(confirm).await.unwrap().is_ack()
}

fn bodies(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|b| b.as_bytes().to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_priority_goes_first_and_fifo_within_one() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue_with(&ch, table(&[("x-max-priority", int(10))])).await;
    let published = [
        ("p1", Some(1)),
        ("p5-a", Some(5)),
        ("none", None),
        ("p10", Some(10)),
        ("p5-b", Some(5)),
        ("p200", Some(200)),
        ("p0", Some(0)),
    ];
    for (body, priority) in published {
        assert!(publish(&ch, &queue, body.as_bytes(), priority).await);
    }
    assert_eq!(message_count(&ch, &queue).await, 7);
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        bodies(&["p10", "p200", "p5-a", "p5-b", "p1", "none", "p0"]),
        "200 counts as the maximum, no priority as 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_message_goes_back_to_its_place_in_its_level() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue_with(&ch, table(&[("x-max-priority", int(5))])).await;
    assert!(publish(&ch, &queue, b"high-1", Some(5)).await);
    assert!(publish(&ch, &queue, b"low", Some(1)).await);
    let held = ch
        .basic_get(&queue, BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.delivery.data, b"high-1");
    assert!(publish(&ch, &queue, b"high-2", Some(5)).await);
    held.delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        bodies(&["high-1", "high-2", "low"])
    );
}

/// With a consumer at its prefetch limit, messages wait in the queue and are ordered
/// there: what is published later at a higher priority overtakes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_gets_the_highest_priority_next() {
    let broker = start_broker().await;
    let (connection, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue_with(&ch, table(&[("x-max-priority", int(9))])).await;
    let consumer_ch = connection.create_channel().await.unwrap();
    consumer_ch.basic_qos(1, Default::default()).await.unwrap();
    let mut consumer = consumer_ch
        .basic_consume(&queue, "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    assert!(publish(&ch, &queue, b"first", Some(0)).await);
    let first = next_delivery(&mut consumer).await;
    assert_eq!(first.data, b"first");
    for (body, priority) in [("low", 1), ("mid", 5), ("high", 9)] {
        assert!(publish(&ch, &queue, body.as_bytes(), Some(priority)).await);
    }
    first.ack(Default::default()).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let delivery = next_delivery(&mut consumer).await;
        order.push(String::from_utf8(delivery.data.clone()).unwrap());
        delivery.ack(Default::default()).await.unwrap();
    }
    assert_eq!(order, ["high", "mid", "low"]);
}

/// Each level keeps its own log beyond its share of the in-memory window: a high-priority
/// message published after many low ones (most of them on disk) still comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_backlog_of_low_priority_does_not_hold_back_a_high_one() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue_with(&ch, table(&[("x-max-priority", int(2))])).await;
    let low = BasicProperties::default().with_priority(0);
    let mut last = None;
    for i in 0..20_000u32 {
        let confirm = ch
            .basic_publish(
                "",
                &queue,
                Default::default(),
                &i.to_be_bytes(),
                low.clone(),
            )
            .await
            .unwrap();
        last = Some(confirm);
    }
    assert!(within(last.unwrap()).await.unwrap().is_ack());
    assert!(publish(&ch, &queue, b"urgent", Some(2)).await);
    let got = ch
        .basic_get(&queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data, b"urgent");
    let rest = take_all_bodies(&ch, &queue).await;
    assert_eq!(rest.len(), 20_000);
    assert!(
        rest.iter()
            .enumerate()
            .all(|(i, body)| body[..] == (i as u32).to_be_bytes()),
        "the low ones in publish order"
    );
}

/// As RabbitMQ's priority queue: drop-head drops the head, which is the oldest message of
/// the highest priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_head_drops_the_next_message_to_be_delivered() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let arguments = table(&[("x-max-priority", int(5)), ("x-max-length", int(2))]);
    let queue = exclusive_queue_with(&ch, arguments).await;
    assert!(publish(&ch, &queue, b"low-1", Some(1)).await);
    assert!(publish(&ch, &queue, b"high", Some(5)).await);
    assert!(publish(&ch, &queue, b"low-2", Some(1)).await);
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        bodies(&["low-1", "low-2"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_survive_a_restart() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // restarts the broker
    }
    let dir = TempDir::new("priority-restart");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let arguments = table(&[("x-max-priority", int(3))]);
    {
        let broker = wharf_integration::start_broker_in(&dir.0).await;
        let (_c, ch) = confirming_channel(&broker).await;
        ch.queue_declare("prio", durable, arguments.clone())
            .await
            .unwrap();
        for (body, priority) in [("a1", 1), ("c3", 3), ("b2", 2), ("a1-again", 1)] {
            let properties = BasicProperties::default()
                .with_priority(priority)
                .with_delivery_mode(2);
            let confirm = ch
                .basic_publish("", "prio", Default::default(), body.as_bytes(), properties)
                .await
                .unwrap();
            assert!(within(confirm).await.unwrap().is_ack());
        }
        broker.stop().await;
    }
    let broker = wharf_integration::start_broker_in(&dir.0).await;
    let (_c, ch) = confirming_channel(&broker).await;
    ch.queue_declare("prio", durable, arguments).await.unwrap();
    assert_eq!(
        take_all_bodies(&ch, "prio").await,
        bodies(&["c3", "b2", "a1", "a1-again"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_max_priorities_are_refused_with_rabbitmqs_reasons() {
    let broker = start_broker().await;
    let connection = lapin_connect(&broker.url()).await;
    let cases = [
        (int(256), "{max_value_exceeded,256}"),
        (int(-1), "{value_negative,-1}"),
        (text("a"), "\"expected integer, got longstr\""),
    ];
    for (value, reason) in cases {
        let ch = connection.create_channel().await.unwrap();
        let name = unique("prio-args");
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        let error = ch
            .queue_declare(&name, options, table(&[("x-max-priority", value)]))
            .await
            .unwrap_err();
        assert_eq!(
            protocol_error(&error),
            (
                406,
                format!(
                    "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{name}' in vhost '/': {reason}"
                )
            )
        );
    }
}
