//! Quorum queues on one node, as a client sees them: what their declare refuses (with
//! RabbitMQ's texts), how they compare on a redeclare. (The replicated side is in the
//! cluster tests: crates/wharf/tests/cluster_quorum.rs.)

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};

fn arguments(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in pairs {
        table.insert((*key).into(), value.clone());
    }
    table
}

fn quorum_with(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut all = vec![("x-queue-type", AMQPValue::LongString("quorum".into()))];
    all.extend(pairs.iter().cloned());
    arguments(&all)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declares `name` as told on a channel of its own; answers the refusal.
async fn refused(
    broker: &TestBroker,
    name: &str,
    options: QueueDeclareOptions,
    table: FieldTable,
) -> (u16, String) {
    let (_conn, ch) = lapin_channel(broker).await;
    let error = within(ch.queue_declare(name, options, table))
        .await
        .expect_err("the declare is refused");
    protocol_error(&error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_must_be_durable_shared_and_named() {
    let broker = start_broker().await;
    let name = unique("qq");
    let precondition = |text: &str| (406, format!("PRECONDITION_FAILED - {text}"));
    let property = |property: &str| {
        precondition(&format!(
            "invalid property '{property}' for queue '{name}' in vhost '/'"
        ))
    };
    assert_eq!(
        refused(
            &broker,
            &name,
            QueueDeclareOptions::default(),
            quorum_with(&[])
        )
        .await,
        property("non-durable")
    );
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..durable()
    };
    assert_eq!(
        refused(&broker, &name, exclusive, quorum_with(&[])).await,
        property("exclusive-owner")
    );
    // Exclusive is named before non-durable, auto-delete before both.
    let exclusive_transient = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    assert_eq!(
        refused(&broker, &name, exclusive_transient, quorum_with(&[])).await,
        property("exclusive-owner")
    );
    let auto_delete = QueueDeclareOptions {
        auto_delete: true,
        ..durable()
    };
    assert_eq!(
        refused(&broker, &name, auto_delete, quorum_with(&[])).await,
        property("auto-delete")
    );
    assert_eq!(
        refused(&broker, "", durable(), quorum_with(&[])).await,
        precondition("Cannot declare a server-named queue for type rabbit_quorum_queue")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_refuses_the_arguments_it_does_not_take() {
    let broker = start_broker().await;
    let name = unique("qq");
    let unsupported = |argument: &str| {
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg '{argument}' for queue '{name}' in vhost '/' \
                 of queue type rabbit_quorum_queue"
            ),
        )
    };
    for (argument, value) in [
        ("x-max-priority", AMQPValue::LongInt(5)),
        ("x-queue-mode", AMQPValue::LongString("lazy".into())),
    ] {
        assert_eq!(
            refused(&broker, &name, durable(), quorum_with(&[(argument, value)])).await,
            unsupported(argument)
        );
    }
    let size = |value: AMQPValue| quorum_with(&[("x-quorum-initial-group-size", value)]);
    let invalid_size = |reason: &str| {
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg 'x-quorum-initial-group-size' for queue \
                 '{name}' in vhost '/': {reason}"
            ),
        )
    };
    assert_eq!(
        refused(&broker, &name, durable(), size(AMQPValue::LongInt(0))).await,
        invalid_size("{value_zero,0}")
    );
    assert_eq!(
        refused(
            &broker,
            &name,
            durable(),
            size(AMQPValue::LongString("x".into()))
        )
        .await,
        invalid_size("\"expected integer, got longstr\"")
    );
    let queue_type = |value: AMQPValue| arguments(&[("x-queue-type", value)]);
    let invalid_type = |reason: &str| {
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{name}' in vhost \
                 '/': {reason}"
            ),
        )
    };
    assert_eq!(
        refused(
            &broker,
            &name,
            durable(),
            queue_type(AMQPValue::LongString("bogus".into()))
        )
        .await,
        invalid_type("\"unsupported queue type 'bogus'\"")
    );
    assert_eq!(
        refused(&broker, &name, durable(), queue_type(AMQPValue::LongInt(5))).await,
        invalid_type("{unacceptable_type,signedint}")
    );
    // A size of one, TTLs and an expiry are taken.
    let (_conn, ch) = lapin_channel(&broker).await;
    let taken = quorum_with(&[
        ("x-quorum-initial-group-size", AMQPValue::LongInt(1)),
        ("x-message-ttl", AMQPValue::LongInt(60_000)),
        ("x-expires", AMQPValue::LongInt(600_000)),
    ]);
    within(ch.queue_declare(&name, durable(), taken))
        .await
        .unwrap();
    within(ch.queue_delete(&name, Default::default()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeclare_of_another_type_is_refused_as_inequivalent() {
    let broker = start_broker().await;
    let quorum = unique("qq");
    let (conn, ch) = lapin_channel(&broker).await;
    within(ch.queue_declare(&quorum, durable(), quorum_with(&[])))
        .await
        .unwrap();
    let inequivalent = |name: &str, tail: &str| {
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{name}' in \
                 vhost '/': {tail}"
            ),
        )
    };
    let classic = arguments(&[("x-queue-type", AMQPValue::LongString("classic".into()))]);
    assert_eq!(
        refused(&broker, &quorum, durable(), classic).await,
        inequivalent(&quorum, "received 'classic' but current is 'quorum'")
    );
    assert_eq!(
        refused(&broker, &quorum, durable(), FieldTable::default()).await,
        inequivalent(
            &quorum,
            "received none but current is the value 'quorum' of type 'longstr'"
        )
    );
    // A passive declare names no type, and is answered.
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    within(ch.queue_declare(&quorum, passive, FieldTable::default()))
        .await
        .unwrap();
    let plain = unique("classic");
    within(ch.queue_declare(&plain, durable(), FieldTable::default()))
        .await
        .unwrap();
    assert_eq!(
        refused(&broker, &plain, durable(), quorum_with(&[])).await,
        inequivalent(
            &plain,
            "received the value 'quorum' of type 'longstr' but current is none"
        )
    );
    let ch = conn.create_channel().await.unwrap();
    for name in [&quorum, &plain] {
        within(ch.queue_delete(name, Default::default()))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_keeps_every_message_across_a_restart_whatever_its_delivery_mode() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // restarts an in-process broker
    }
    let dir = TempDir::new("quorum-restart");
    {
        let broker = wharf_integration::start_broker_in(&dir.0).await;
        let (conn, ch) = lapin_channel(&broker).await;
        within(ch.queue_declare("qq", durable(), quorum_with(&[])))
            .await
            .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for i in 0..10u8 {
            // Transient and persistent alike.
            let mode = if i % 2 == 0 { 1 } else { 2 };
            ch.basic_publish(
                "",
                "qq",
                Default::default(),
                &[i],
                lapin::BasicProperties::default().with_delivery_mode(mode),
            )
            .await
            .unwrap();
        }
        ch.wait_for_confirms().await.unwrap();
        conn.close(200, "restart").await.unwrap();
        broker.stop().await;
    }
    let broker = wharf_integration::start_broker_in(&dir.0).await;
    let (_conn, ch) = lapin_channel(&broker).await;
    let mut back = Vec::new();
    while let Some(got) = ch.basic_get("qq", Default::default()).await.unwrap() {
        back.push(got.delivery.data[0]);
        got.delivery.ack(Default::default()).await.unwrap();
    }
    assert_eq!(back, (0..10).collect::<Vec<u8>>());
}
