//! The `x-delayed-message` exchange, as RabbitMQ's delayed-message plugin: a message with
//! an `x-delay` header is held that many milliseconds, then routed as the exchange's
//! `x-delayed-type` routes, its `x-delay` negated. Wharf only: the plugin is not part of
//! Debian's RabbitMQ.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn external() -> bool {
    std::env::var("WHARF_TEST_EXTERNAL").is_ok()
}

fn delayed_kind() -> ExchangeKind {
    ExchangeKind::Custom("x-delayed-message".into())
}

async fn delayed_exchange(ch: &Channel, routes_as: &str) -> String {
    let name = unique("delayed");
    let options = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    ch.exchange_declare(
        &name,
        delayed_kind(),
        options,
        table(&[("x-delayed-type", text(routes_as))]),
    )
    .await
    .unwrap();
    name
}

fn delayed_by(delay: AMQPValue) -> BasicProperties {
    BasicProperties::default().with_headers(table(&[("x-delay", delay)]))
}

/// Publishes mandatory with confirms; returns whether it came back unroutable.
async fn publish(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> bool {
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = ch
        .basic_publish(exchange, key, options, body, properties)
        .await
        .unwrap();
    let confirmation = within(confirm).await.unwrap();
    assert!(confirmation.is_ack());
    confirmation.take_message().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_after_their_delay_in_due_order() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let exchange = delayed_exchange(&ch, "direct").await;
    let queue = exclusive_queue(&ch).await;
    ch.queue_bind(
        &queue,
        &exchange,
        "k",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
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
    let start = Instant::now();
    let held = publish(&ch, &exchange, "k", b"late", delayed_by(int(600))).await;
    assert!(!held, "a held message counts as routed");
    publish(
        &ch,
        &exchange,
        "k",
        b"soon",
        delayed_by(AMQPValue::LongInt(200)),
    )
    .await;
    publish(&ch, &exchange, "k", b"now", BasicProperties::default()).await;

    let now = next_delivery(&mut consumer).await;
    assert_eq!(now.data, b"now");
    let soon = next_delivery(&mut consumer).await;
    assert_eq!(soon.data, b"soon");
    assert!(start.elapsed() >= Duration::from_millis(200));
    let x_delay = soon
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delay").cloned());
    assert_eq!(
        x_delay,
        Some(AMQPValue::LongInt(-200)),
        "released with x-delay negated"
    );
    let late = next_delivery(&mut consumer).await;
    assert_eq!(late.data, b"late");
    assert!(start.elapsed() >= Duration::from_millis(600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_messages_route_as_the_delayed_type() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let exchange = delayed_exchange(&ch, "topic").await;
    let queue = exclusive_queue(&ch).await;
    ch.queue_bind(
        &queue,
        &exchange,
        "a.*",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // A string delay and a negative one (routed at once), as the plugin reads them.
    publish(&ch, &exchange, "a.b", b"text", delayed_by(text("100"))).await;
    publish(&ch, &exchange, "a.c", b"negative", delayed_by(int(-5))).await;
    publish(&ch, &exchange, "z", b"unbound", delayed_by(int(50))).await;
    assert_eq!(
        message_count(&ch, &queue).await,
        1,
        "the negative one at once"
    );
    assert!(count_becomes(&ch, &queue, 2).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        vec![b"negative".to_vec(), b"text".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_exchange_needs_an_existing_type() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let connection = lapin_connect(&broker.url()).await;
    let cases: [(FieldTable, u16, &str); 3] = [
        (
            FieldTable::default(),
            406,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type",
        ),
        (
            table(&[("x-delayed-type", text("x-delayed-message"))]),
            406,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type",
        ),
        (
            table(&[("x-delayed-type", text("nonsense"))]),
            503,
            "COMMAND_INVALID - unknown exchange type 'nonsense'",
        ),
    ];
    for (arguments, code, reply) in cases {
        let ch = connection.create_channel().await.unwrap();
        let error = ch
            .exchange_declare(&unique("d"), delayed_kind(), Default::default(), arguments)
            .await
            .unwrap_err();
        let (got_code, got_reply) = match &error {
            lapin::Error::ProtocolError(e) => (e.get_id(), e.get_message().to_string()),
            other => panic!("{other:?}"),
        };
        assert_eq!((got_code, got_reply.as_str()), (code, reply));
        // A 503 closes the whole connection.
        if code == 503 {
            break;
        }
    }
}

/// A durable delayed exchange keeps persistent held messages across a restart: one that
/// fell due while the broker was down goes out at start, one still held goes on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_survive_a_restart() {
    if external() {
        return;
    }
    let dir = TempDir::new("delayed-restart");
    {
        let broker = wharf_integration::start_broker_in(&dir.0).await;
        let (_c, ch) = confirming_channel(&broker).await;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            "later",
            delayed_kind(),
            durable,
            table(&[("x-delayed-type", text("fanout"))]),
        )
        .await
        .unwrap();
        let queue_options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("out", queue_options, FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            "out",
            "later",
            "",
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        for (body, delay) in [("due-while-down", 200), ("due-after", 2_500)] {
            let properties = delayed_by(int(delay)).with_delivery_mode(2);
            publish(&ch, "later", "", body.as_bytes(), properties).await;
        }
        broker.stop().await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let broker = wharf_integration::start_broker_in(&dir.0).await;
    let (_c, ch) = confirming_channel(&broker).await;
    assert!(count_becomes(&ch, "out", 1).await);
    let first = ch
        .basic_get("out", BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.delivery.data, b"due-while-down");
    assert!(count_becomes(&ch, "out", 1).await, "the other one on time");
    assert_eq!(
        take_all_bodies(&ch, "out").await,
        vec![b"due-after".to_vec()]
    );
}
