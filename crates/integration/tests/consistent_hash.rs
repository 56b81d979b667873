//! The `x-consistent-hash` exchange, as RabbitMQ's consistent-hash exchange plugin: one
//! destination per message, by a hash of its routing key (or of the header or property the
//! exchange names); binding keys are weights.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

async fn hash_exchange(ch: &Channel, arguments: FieldTable) -> String {
    let name = unique("chx");
    let options = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    ch.exchange_declare(
        &name,
        ExchangeKind::Custom("x-consistent-hash".into()),
        options,
        arguments,
    )
    .await
    .unwrap();
    name
}

async fn bound(ch: &Channel, exchange: &str, weight: &str) -> String {
    let queue = exclusive_queue(ch).await;
    ch.queue_bind(
        &queue,
        exchange,
        weight,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    queue
}

/// Publishes with confirms (the channel is in confirm mode); true if it came back
/// unroutable.
async fn publish(ch: &Channel, exchange: &str, key: &str, properties: BasicProperties) -> bool {
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = ch
        .basic_publish(exchange, key, options, b"m", properties)
        .await
        .unwrap();
    within(confirm).await.unwrap().take_message().is_some()
}

fn external() -> bool {
    // Debian's RabbitMQ does not enable the plugin.
    std::env::var("WHARF_TEST_EXTERNAL").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_spread_by_weight_and_a_key_always_reaches_the_same_queue() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let exchange = hash_exchange(&ch, FieldTable::default()).await;
    let light = bound(&ch, &exchange, "1").await;
    let heavy = bound(&ch, &exchange, "3").await;
    for i in 0..4_000 {
        let key = format!("key-{i}");
        assert!(!publish(&ch, &exchange, &key, BasicProperties::default()).await);
    }
    let (l, h) = (
        message_count(&ch, &light).await,
        message_count(&ch, &heavy).await,
    );
    assert_eq!(l + h, 4_000, "each message to exactly one queue");
    let ratio = f64::from(h) / f64::from(l);
    assert!((2.3..3.9).contains(&ratio), "weights 1:3 gave {l}:{h}");

    ch.queue_purge(&light, Default::default()).await.unwrap();
    ch.queue_purge(&heavy, Default::default()).await.unwrap();
    for _ in 0..20 {
        publish(&ch, &exchange, "order-42", BasicProperties::default()).await;
    }
    let counts = [
        message_count(&ch, &light).await,
        message_count(&ch, &heavy).await,
    ];
    assert!(counts == [20, 0] || counts == [0, 20], "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbinding_sends_everything_to_the_rest() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let exchange = hash_exchange(&ch, FieldTable::default()).await;
    let stays = bound(&ch, &exchange, "1").await;
    let goes = bound(&ch, &exchange, "1").await;
    ch.queue_unbind(&goes, &exchange, "1", FieldTable::default())
        .await
        .unwrap();
    for i in 0..100 {
        publish(&ch, &exchange, &i.to_string(), BasicProperties::default()).await;
    }
    assert_eq!(message_count(&ch, &stays).await, 100);
    assert_eq!(message_count(&ch, &goes).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_or_a_property_can_be_hashed_instead() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let by_header = hash_exchange(&ch, table(&[("hash-header", text("user"))])).await;
    let queues = [
        bound(&ch, &by_header, "1").await,
        bound(&ch, &by_header, "1").await,
    ];
    for i in 0..30 {
        // Routing keys differ; the header is the same: one queue gets them all.
        let headers = table(&[("user", text("alice"))]);
        let properties = BasicProperties::default().with_headers(headers);
        assert!(!publish(&ch, &by_header, &i.to_string(), properties).await);
    }
    let counts = [
        message_count(&ch, &queues[0]).await,
        message_count(&ch, &queues[1]).await,
    ];
    assert!(counts == [30, 0] || counts == [0, 30], "{counts:?}");
    assert!(
        publish(&ch, &by_header, "k", BasicProperties::default()).await,
        "without the header the message goes nowhere"
    );

    let by_id = hash_exchange(&ch, table(&[("hash-property", text("message_id"))])).await;
    let queues = [bound(&ch, &by_id, "1").await, bound(&ch, &by_id, "1").await];
    for i in 0..30 {
        let properties = BasicProperties::default().with_message_id(ShortString::from("same-id"));
        assert!(!publish(&ch, &by_id, &i.to_string(), properties).await);
    }
    let counts = [
        message_count(&ch, &queues[0]).await,
        message_count(&ch, &queues[1]).await,
    ];
    assert!(counts == [30, 0] || counts == [0, 30], "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_weights_and_arguments_are_refused_with_rabbitmqs_texts() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let connection = lapin_connect(&broker.url()).await;
    let ch = connection.create_channel().await.unwrap();
    let exchange = hash_exchange(&ch, FieldTable::default()).await;
    for (key, text) in [
        ("abc", "The binding key must be an integer: <<\"abc\">>"),
        ("0", "The binding key must be greater than 0"),
    ] {
        let ch = connection.create_channel().await.unwrap();
        let queue = exclusive_queue(&ch).await;
        let error = ch
            .queue_bind(
                &queue,
                &exchange,
                key,
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            protocol_error(&error),
            (406, format!("PRECONDITION_FAILED - {text}"))
        );
    }
    let cases: [(Vec<(&str, AMQPValue)>, &str); 2] = [
        (
            vec![
                ("hash-header", text("h")),
                ("hash-property", text("message_id")),
            ],
            "hash-header and hash-property are mutually exclusive",
        ),
        (
            vec![("hash-property", text("app_id"))],
            "Unsupported property: app_id",
        ),
    ];
    for (arguments, reason) in cases {
        let ch = connection.create_channel().await.unwrap();
        let error = ch
            .exchange_declare(
                &unique("chx-bad"),
                ExchangeKind::Custom("x-consistent-hash".into()),
                Default::default(),
                table(&arguments),
            )
            .await
            .unwrap_err();
        assert_eq!(
            protocol_error(&error),
            (406, format!("PRECONDITION_FAILED - {reason}"))
        );
    }
}

/// The hash is fixed: after a restart a key reaches the queue it reached before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_keeps_its_queue_across_a_restart() {
    if external() {
        return;
    }
    let dir = TempDir::new("chx-restart");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let first = {
        let broker = wharf_integration::start_broker_in(&dir.0).await;
        let (_c, ch) = confirming_channel(&broker).await;
        let options = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            "chx",
            ExchangeKind::Custom("x-consistent-hash".into()),
            options,
            FieldTable::default(),
        )
        .await
        .unwrap();
        // Bound out of name order: the store gives them back in another order.
        for (queue, weight) in [("c", "1"), ("a", "1"), ("b", "2")] {
            ch.queue_declare(queue, durable, FieldTable::default())
                .await
                .unwrap();
            ch.queue_bind(
                queue,
                "chx",
                weight,
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        for i in 0..50 {
            publish(&ch, "chx", &format!("k{i}"), BasicProperties::default()).await;
        }
        let mut counts = Vec::new();
        for queue in ["a", "b", "c"] {
            counts.push(message_count(&ch, queue).await);
            ch.queue_purge(queue, Default::default()).await.unwrap();
        }
        broker.stop().await;
        counts
    };
    let broker = wharf_integration::start_broker_in(&dir.0).await;
    let (_c, ch) = confirming_channel(&broker).await;
    for i in 0..50 {
        publish(&ch, "chx", &format!("k{i}"), BasicProperties::default()).await;
    }
    let mut second = Vec::new();
    for queue in ["a", "b", "c"] {
        second.push(message_count(&ch, queue).await);
    }
    assert_eq!(first, second);
}
