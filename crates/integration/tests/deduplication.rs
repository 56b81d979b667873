//! Message deduplication (beyond RabbitMQ): a queue with `x-message-deduplication` (a
//! window in ms) stores a message only once per key (its `x-deduplication-header`
//! header, else its message_id) within the window; the publisher's retries are acked.
//! Wharf only: RabbitMQ needs a plugin for this.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel};

fn external() -> bool {
    std::env::var("WHARF_TEST_EXTERNAL").is_ok()
}

fn with_id(id: &str) -> BasicProperties {
    BasicProperties::default().with_message_id(ShortString::from(id))
}

/// Publishes with confirms; true if acked.
async fn publish(ch: &Channel, queue: &str, body: &[u8], properties: BasicProperties) -> bool {
    let confirm = ch
        .basic_publish("", queue, Default::default(), body, properties)
        .await
        .unwrap();
    within(confirm).await.unwrap().is_ack()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_within_the_window_is_stored_once() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue_with(&ch, table(&[("x-message-deduplication", int(60_000))])).await;
    for attempt in 0..3 {
        assert!(
            publish(&ch, &queue, b"order-1", with_id("m-1")).await,
            "attempt {attempt} is acked"
        );
    }
    assert!(publish(&ch, &queue, b"order-2", with_id("m-2")).await);
    // Without a key every message is stored.
    for _ in 0..2 {
        assert!(publish(&ch, &queue, b"anonymous", BasicProperties::default()).await);
    }
    // The header is the key when present, whatever the message_id.
    let keyed = |key: &str, id: &str| {
        with_id(id).with_headers(table(&[("x-deduplication-header", text(key))]))
    };
    assert!(publish(&ch, &queue, b"h-1", keyed("k", "a")).await);
    assert!(publish(&ch, &queue, b"h-2", keyed("k", "b")).await);
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        vec![
            b"order-1".to_vec(),
            b"order-2".to_vec(),
            b"anonymous".to_vec(),
            b"anonymous".to_vec(),
            b"h-1".to_vec()
        ]
    );
    // Consumed or not, the key counts for the whole window.
    assert!(publish(&ch, &queue, b"order-1 again", with_id("m-1")).await);
    assert_eq!(message_count(&ch, &queue).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_window_the_key_is_new_again() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = exclusive_queue_with(&ch, table(&[("x-message-deduplication", int(200))])).await;
    assert!(publish(&ch, &queue, b"first", with_id("same")).await);
    assert!(publish(&ch, &queue, b"retry", with_id("same")).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(publish(&ch, &queue, b"later", with_id("same")).await);
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        vec![b"first".to_vec(), b"later".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_queue_keeps_its_own_keys() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let arguments = table(&[("x-message-deduplication", int(60_000))]);
    let a = exclusive_queue_with(&ch, arguments.clone()).await;
    let b = exclusive_queue_with(&ch, arguments).await;
    for queue in [&a, &b] {
        ch.queue_bind(
            queue,
            "amq.fanout",
            "",
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    for _ in 0..2 {
        let confirm = ch
            .basic_publish("amq.fanout", "", Default::default(), b"m", with_id("x"))
            .await
            .unwrap();
        assert!(within(confirm).await.unwrap().is_ack());
    }
    assert_eq!(message_count(&ch, &a).await, 1);
    assert_eq!(message_count(&ch, &b).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_must_be_a_positive_integer() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let connection = lapin_connect(&broker.url()).await;
    for (value, reason) in [
        (int(0), "{value_zero,0}"),
        (text("1m"), "\"expected integer, got longstr\""),
    ] {
        let ch = connection.create_channel().await.unwrap();
        let name = unique("dedup-args");
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        let error = ch
            .queue_declare(&name, options, table(&[("x-message-deduplication", value)]))
            .await
            .unwrap_err();
        assert_eq!(
            protocol_error(&error),
            (
                406,
                format!(
                    "PRECONDITION_FAILED - invalid arg 'x-message-deduplication' for queue '{name}' in vhost '/': {reason}"
                )
            )
        );
    }
}
