//! Messages across a cluster's nodes: published through any node, a message reaches the
//! queues it is routed to on every node, in the order it was published; a publisher's
//! confirm still means the queue's node holds it (fsynced, for a persistent message on
//! a durable queue: a confirmed message survives that node killed); a queue's node that
//! is down makes a confirm a nack, never a hang.

mod support;

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use support::*;

async fn channel(spec: &NodeSpec) -> Channel {
    let properties = lapin::ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let url = format!(
        "amqp://{ADMIN}:{ADMIN_PASSWORD}@{}:{}/%2f",
        spec.host, spec.amqp
    );
    let connection = Connection::connect(&url, properties).await.unwrap();
    connection.create_channel().await.unwrap()
}

async fn confirming(spec: &NodeSpec) -> Channel {
    let channel = channel(spec).await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Publishes `count` persistent messages `m0`, `m1`, ... without waiting between them,
/// then waits for every confirm; answers how many were acked.
async fn publish_all(channel: &Channel, exchange: &str, key: &str, count: usize) -> usize {
    let mut confirms = Vec::with_capacity(count);
    for i in 0..count {
        let confirm = channel
            .basic_publish(
                exchange,
                key,
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    let mut acked = 0;
    for confirm in confirms {
        if confirm.await.unwrap().is_ack() {
            acked += 1;
        }
    }
    acked
}

/// Every message a queue holds now, in order, taken with basic.get.
async fn drain(channel: &Channel, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(message) = channel
        .basic_get(queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        bodies.push(String::from_utf8(message.delivery.data.clone()).unwrap());
    }
    bodies
}

fn numbered(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("m{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_through_any_node_reach_every_queue_in_order() {
    let place = Place::new("fanout");
    let specs = specs(&place, 3);
    let _nodes = start_all(&specs);
    let exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel(&specs[0])
        .await
        .exchange_declare(
            "spread",
            ExchangeKind::Fanout,
            exchange,
            FieldTable::default(),
        )
        .await
        .unwrap();
    for (spec, queue) in specs.iter().zip(["qa", "qb", "qc"]) {
        let channel = channel(spec).await;
        channel
            .queue_declare(queue, durable(), FieldTable::default())
            .await
            .unwrap();
        channel
            .queue_bind(
                queue,
                "spread",
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    // One publisher on the third node reaches the queues of all three.
    let publisher = confirming(&specs[2]).await;
    assert_eq!(publish_all(&publisher, "spread", "", 500).await, 500);
    for (spec, queue) in specs.iter().zip(["qa", "qb", "qc"]) {
        assert_eq!(
            drain(&channel(spec).await, queue).await,
            numbered(500),
            "{queue} on {}",
            spec.name
        );
    }
    // Through the default exchange, by the queue's name, from a node that does not hold it.
    let publisher = confirming(&specs[1]).await;
    assert_eq!(publish_all(&publisher, "", "qa", 100).await, 100);
    assert_eq!(drain(&channel(&specs[0]).await, "qa").await, numbered(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_through_another_node_means_the_queues_node_has_it_on_disk() {
    let place = Place::new("forwarded");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);
    channel(&specs[0])
        .await
        .queue_declare("kept", durable(), FieldTable::default())
        .await
        .unwrap();
    let publisher = confirming(&specs[1]).await;
    assert_eq!(publish_all(&publisher, "", "kept", 300).await, 300);
    // The queue's node killed at once: every confirmed message was written there (its
    // confirm waited for the flusher's fsync, as a local publish's does; a kill does not
    // test the fsync itself, which only a power cut would).
    let spec = nodes.remove(0).kill();

    // Meanwhile a publisher through another node hears a nack, and soon.
    let started = Instant::now();
    assert_eq!(publish_all(&publisher, "", "kept", 3).await, 0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "nacked in {:?}",
        started.elapsed()
    );

    let back = Node::spawn(&spec, &seeds(&specs)).ready();
    assert_eq!(
        drain(&channel(&back.spec).await, "kept").await,
        numbered(300)
    );
    // Back, it takes forwarded messages again.
    let publisher = confirming(&specs[2]).await;
    assert_eq!(publish_all(&publisher, "", "kept", 5).await, 5);
    assert_eq!(drain(&channel(&back.spec).await, "kept").await, numbered(5));
}
