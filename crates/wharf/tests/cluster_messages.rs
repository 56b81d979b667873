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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_queue_is_counted_purged_read_and_deleted_through_any_node() {
    let place = Place::new("remoteops");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);
    let on0 = channel(&specs[0]).await;
    on0.queue_declare("far", durable(), FieldTable::default())
        .await
        .unwrap();
    let publisher = confirming(&specs[0]).await;
    assert_eq!(publish_all(&publisher, "", "far", 10).await, 10);

    // Counted there, by a passive declare and a redeclare through another node.
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let on1 = channel(&specs[1]).await;
    let counted = on1
        .queue_declare("far", passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!((counted.message_count(), counted.consumer_count()), (10, 0));
    let counted = on1
        .queue_declare("far", durable(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!(counted.message_count(), 10);

    // Read without acknowledgements, in order, through another node.
    let got = on1
        .basic_get("far", BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(got.delivery.data, b"m0");
    assert_eq!(got.message_count, 9);

    // Its node checks a conditional delete: not empty.
    let on2 = channel(&specs[2]).await;
    let refused = on2
        .queue_delete(
            "far",
            lapin::options::QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    match refused {
        lapin::Error::ProtocolError(error) => assert_eq!(
            error.get_message().as_str(),
            "PRECONDITION_FAILED - queue 'far' in vhost '/' not empty"
        ),
        other => panic!("{other}"),
    }
    let on2 = channel(&specs[2]).await;
    assert_eq!(on2.queue_purge("far", Default::default()).await.unwrap(), 9);
    assert_eq!(
        on2.queue_delete("far", Default::default()).await.unwrap(),
        0
    );
    let gone = channel(&specs[0])
        .await
        .queue_declare("far", passive, FieldTable::default())
        .await
        .unwrap_err();
    assert!(gone.to_string().contains("NOT_FOUND"), "{gone}");

    // A queue whose node is down: RabbitMQ's 404, at once.
    channel(&specs[0])
        .await
        .queue_declare("orphan", durable(), FieldTable::default())
        .await
        .unwrap();
    let _down = nodes.remove(0).kill();
    let started = Instant::now();
    let refused = channel(&specs[1])
        .await
        .queue_declare("orphan", passive, FieldTable::default())
        .await
        .unwrap_err();
    match refused {
        lapin::Error::ProtocolError(error) => assert_eq!(
            error.get_message().as_str(),
            "NOT_FOUND - home node 'n0' of durable queue 'orphan' in vhost '/' is down or \
             inaccessible"
        ),
        other => panic!("{other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}
