//! `x-expires`, as RabbitMQ applies it: a queue unused for that long (no consumers, no
//! basic.get, no redeclare; publishing does not count) is deleted, its messages with it,
//! not dead-lettered.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

/// Whether `queue` exists, asked without using it: a mandatory publish through the default
/// exchange comes back if the queue is gone (the channel is in confirm mode). A passive
/// declare would count as a use.
async fn exists(ch: &Channel, queue: &str) -> bool {
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = ch
        .basic_publish("", queue, options, b"probe", BasicProperties::default())
        .await
        .unwrap();
    within(confirm).await.unwrap().take_message().is_none()
}

/// Polls until `queue` is gone; false if it is still there after [`WAIT`].
async fn disappears(ch: &Channel, queue: &str) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if !exists(ch, queue).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn declare(ch: &Channel, name: &str, arguments: FieldTable) {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare(name, options, arguments).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_queue_is_deleted_with_its_messages_not_dead_lettered() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let dead = exclusive_queue(&ch).await;
    let queue = unique("expires");
    let arguments = table(&[
        ("x-expires", int(300)),
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text(&dead)),
    ]);
    declare(&ch, &queue, arguments).await;
    // Publishing (the probes included) is not a use.
    assert!(exists(&ch, &queue).await);
    assert!(disappears(&ch, &queue).await, "expired within {WAIT:?}");
    assert_eq!(message_count(&ch, &dead).await, 0, "nothing dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_and_redeclares_count_as_uses() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = unique("expires-used");
    let arguments = table(&[("x-expires", int(400))]);
    declare(&ch, &queue, arguments.clone()).await;
    for round in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if round % 2 == 0 {
            ch.basic_get(&queue, BasicGetOptions { no_ack: true })
                .await
                .unwrap();
        } else {
            declare(&ch, &queue, arguments.clone()).await;
        }
    }
    // 1.2 s of life, never 400 ms unused.
    assert!(exists(&ch, &queue).await);
    assert!(disappears(&ch, &queue).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_a_consumer_does_not_expire_until_it_leaves() {
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = unique("expires-consumed");
    declare(&ch, &queue, table(&[("x-expires", int(200))])).await;
    let _consumer = ch
        .basic_consume(&queue, "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(exists(&ch, &queue).await, "a consumer keeps it");
    ch.basic_cancel("c", Default::default()).await.unwrap();
    assert!(disappears(&ch, &queue).await);
}

/// A durable queue's expiry counts from the broker's start after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_queue_expires_too() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // restarts the broker
    }
    let dir = TempDir::new("expires-restart");
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    {
        let broker = wharf_integration::start_broker_in(&dir.0).await;
        let (_c, ch) = lapin_channel(&broker).await;
        ch.queue_declare("short-lived", options, table(&[("x-expires", int(300))]))
            .await
            .unwrap();
        broker.stop().await;
    }
    let broker = wharf_integration::start_broker_in(&dir.0).await;
    let (_c, ch) = confirming_channel(&broker).await;
    assert!(disappears(&ch, "short-lived").await);
    drop((_c, ch));
    broker.stop().await;
    // Its deletion was recorded: it stays gone after another restart.
    let broker = wharf_integration::start_broker_in(&dir.0).await;
    let (_c, ch) = confirming_channel(&broker).await;
    assert!(!exists(&ch, "short-lived").await);
}
