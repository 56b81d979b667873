//! `x-single-active-consumer`: only the first registered consumer gets messages; when it
//! is cancelled or its channel closes, the next one takes over, with what was waiting.

mod common;

use common::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection};

fn single_active() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    arguments
}

/// A consumer on its own channel with prefetch 1 and manual acks.
async fn consumer(conn: &Connection, queue: &str, tag: &str) -> (Channel, lapin::Consumer) {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1, Default::default()).await.unwrap();
    let consumer = ch
        .basic_consume(queue, tag, Default::default(), FieldTable::default())
        .await
        .unwrap();
    (ch, consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_first_consumer_gets_messages_until_it_is_cancelled() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        // RabbitMQ 3.10.8 never hands over when the active consumer is cancelled while it
        // holds an unacknowledged message (not even after that ack or a new publish;
        // without unacknowledged messages it does). Wharf hands over at once, as
        // RabbitMQ's documentation describes: see docs/features.md.
        return;
    }
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let queue = unique("sac");
    ch.queue_declare(&queue, Default::default(), single_active())
        .await
        .unwrap();
    let (first_ch, mut first) = consumer(&conn, &queue, "first").await;
    let (_second_ch, mut second) = consumer(&conn, &queue, "second").await;
    for i in 0..3u8 {
        publish_to(&ch, &queue, &[i]).await;
    }
    // Prefetch 1: the first consumer holds message 0; 1 and 2 wait for it, not for the
    // idle second consumer.
    let held = next_delivery(&mut first).await;
    assert_eq!(held.data, vec![0]);
    no_delivery(&mut second).await;
    held.ack(Default::default()).await.unwrap();
    let next = next_delivery(&mut first).await;
    assert_eq!(next.data, vec![1]);
    // Cancelled, the first hands over what waits: the second gets message 2 at once.
    first_ch
        .basic_cancel("first", Default::default())
        .await
        .unwrap();
    let taken_over = next_delivery(&mut second).await;
    assert_eq!(taken_over.data, vec![2]);
    taken_over.ack(Default::default()).await.unwrap();
    publish_to(&ch, &queue, &[3]).await;
    assert_eq!(next_delivery(&mut second).await.data, vec![3]);
    ch.queue_delete(&queue, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_active_consumers_channel_closes_the_next_gets_its_messages_back() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let queue = unique("sac");
    ch.queue_declare(&queue, Default::default(), single_active())
        .await
        .unwrap();
    let (first_ch, mut first) = consumer(&conn, &queue, "first").await;
    let (_second_ch, mut second) = consumer(&conn, &queue, "second").await;
    publish_to(&ch, &queue, b"unacked").await;
    assert_eq!(next_delivery(&mut first).await.data, b"unacked");
    first_ch.close(200, "gone").await.unwrap();
    let back = next_delivery(&mut second).await;
    assert_eq!(back.data, b"unacked");
    assert!(back.redelivered);
    ch.queue_delete(&queue, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_is_not_a_boolean_is_406() {
    let broker = start_broker().await;
    let (_conn, ch) = lapin_channel(&broker).await;
    let queue = unique("sac");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-single-active-consumer".into(),
        AMQPValue::LongString(LongString::from("yes")),
    );
    let err = ch
        .queue_declare(&queue, Default::default(), arguments)
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue \
                 '{queue}' in vhost '/': {{unacceptable_type,longstr}}"
            )
        )
    );
}
