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
use lapin::{BasicProperties, Channel, ExchangeKind};
use support::*;

async fn declare_durable(spec: &NodeSpec, queue: &str) {
    channel(spec)
        .await
        .queue_declare(queue, durable(), FieldTable::default())
        .await
        .unwrap();
}

async fn confirming(spec: &NodeSpec) -> Channel {
    let channel = channel(spec).await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
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
    declare_durable(&specs[0], "kept").await;
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
    assert_eq!(
        refusal(refused),
        "406 - PRECONDITION_FAILED - queue 'far' in vhost '/' not empty"
    );
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
    declare_durable(&specs[0], "orphan").await;
    let _down = nodes.remove(0).kill();
    let started = Instant::now();
    let refused = channel(&specs[1])
        .await
        .queue_declare("orphan", passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        refusal(refused),
        "404 - NOT_FOUND - home node 'n0' of durable queue 'orphan' in vhost '/' is down or \
             inaccessible"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A consumer without acknowledgements on `channel`: its deliveries.
async fn consume_no_ack(channel: &Channel, queue: &str) -> lapin::Consumer {
    let options = lapin::options::BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    channel
        .basic_consume(queue, "", options, FieldTable::default())
        .await
        .unwrap()
}

/// A consumer through `spec`: its channel (prefetch `prefetch`) and its deliveries.
async fn consumer(spec: &NodeSpec, queue: &str, prefetch: u16) -> (Channel, lapin::Consumer) {
    let channel = channel(spec).await;
    channel
        .basic_qos(prefetch, Default::default())
        .await
        .unwrap();
    let consumer = channel
        .basic_consume(queue, "", Default::default(), FieldTable::default())
        .await
        .unwrap();
    (channel, consumer)
}

/// The next delivery, within 10 s.
async fn next(consumer: &mut lapin::Consumer) -> Option<lapin::message::Delivery> {
    use futures_lite::StreamExt;
    match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
        Ok(Some(Ok(delivery))) => Some(delivery),
        Ok(_) => None,
        Err(_) => panic!("no delivery within 10 s"),
    }
}

async fn ready_count(spec: &NodeSpec, queue: &str) -> u32 {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel(spec)
        .await
        .queue_declare(queue, passive, FieldTable::default())
        .await
        .unwrap()
        .message_count()
}

async fn eventually_ready(spec: &NodeSpec, queue: &str, count: u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = ready_count(spec, queue).await;
        if now == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue}: {now} ready, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_another_node_gets_every_message_in_order_and_its_acks_count_there() {
    use lapin::options::{BasicAckOptions, BasicRejectOptions};
    let place = Place::new("consume");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);
    declare_durable(&specs[0], "work").await;
    let publisher = confirming(&specs[0]).await;
    assert_eq!(publish_all(&publisher, "", "work", 200).await, 200);

    // A consumer through node 1, prefetch 10: all 200, in order, acked one by one.
    let (first, mut deliveries) = consumer(&specs[1], "work", 10).await;
    for i in 0..200 {
        let delivery = next(&mut deliveries).await.expect("a delivery");
        assert_eq!(delivery.data, format!("m{i}").as_bytes());
        assert!(!delivery.redelivered);
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    eventually_ready(&specs[0], "work", 0).await;
    // More, published through the third node, reach it too.
    let publisher = confirming(&specs[2]).await;
    assert_eq!(publish_all(&publisher, "", "work", 5).await, 5);
    for i in 0..5 {
        let delivery = next(&mut deliveries).await.expect("a delivery");
        assert_eq!(delivery.data, format!("m{i}").as_bytes());
        if i == 4 {
            // Rejected with requeue: back on its node, delivered again, marked so.
            delivery
                .reject(BasicRejectOptions { requeue: true })
                .await
                .unwrap();
            let again = next(&mut deliveries).await.expect("redelivered");
            assert_eq!(again.data, b"m4");
            assert!(again.redelivered);
            again.ack(BasicAckOptions::default()).await.unwrap();
        } else {
            delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    eventually_ready(&specs[0], "work", 0).await;
    first.close(200, "done").await.unwrap();

    // Unacknowledged deliveries go back when the consumer's channel closes...
    assert_eq!(publish_all(&publisher, "", "work", 20).await, 20);
    let (holder, mut held) = consumer(&specs[1], "work", 5).await;
    for _ in 0..5 {
        next(&mut held).await.expect("a delivery");
    }
    drop(held);
    eventually_ready(&specs[0], "work", 15).await;
    holder.close(200, "done").await.unwrap();
    eventually_ready(&specs[0], "work", 20).await;

    // ... and when the consumer's node dies.
    let (_holder, mut held) = consumer(&specs[2], "work", 7).await;
    for _ in 0..7 {
        next(&mut held).await.expect("a delivery");
    }
    eventually_ready(&specs[0], "work", 13).await;
    let _dead = nodes.remove(2).kill();
    eventually_ready(&specs[0], "work", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_another_node_is_cancelled_when_its_queue_or_the_queues_node_goes() {
    let place = Place::new("cancel");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);
    for queue in ["doomed", "stranded"] {
        declare_durable(&specs[0], queue).await;
    }
    // The queue deleted (through the third node): the consumer is cancelled.
    let (_channel, mut doomed) = consumer(&specs[1], "doomed", 10).await;
    channel(&specs[2])
        .await
        .queue_delete("doomed", Default::default())
        .await
        .unwrap();
    assert!(next(&mut doomed).await.is_none(), "cancelled");
    // The queue's node killed: the consumer is cancelled too, not left waiting.
    let (_channel, mut stranded) = consumer(&specs[1], "stranded", 10).await;
    let _dead = nodes.remove(0).kill();
    assert!(next(&mut stranded).await.is_none(), "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_consumer_keeps_its_prefetch_its_exclusivity_and_without_acks_gets_everything() {
    use lapin::options::BasicConsumeOptions;
    let place = Place::new("credit");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);
    for queue in ["limited", "free", "solo"] {
        declare_durable(&specs[0], queue).await;
    }
    let publisher = confirming(&specs[0]).await;

    // Prefetch 3 and no acks: exactly 3 delivered, the rest wait on the queue's node.
    assert_eq!(publish_all(&publisher, "", "limited", 10).await, 10);
    let (_limited, mut limited) = consumer(&specs[1], "limited", 3).await;
    for _ in 0..3 {
        next(&mut limited).await.expect("a delivery");
    }
    {
        use futures_lite::StreamExt;
        let more = tokio::time::timeout(Duration::from_millis(500), limited.next()).await;
        assert!(more.is_err(), "nothing beyond the prefetch");
    }
    eventually_ready(&specs[0], "limited", 7).await;

    // Without acknowledgements: more than a consumer's credit of deliveries, all of them.
    assert_eq!(publish_all(&publisher, "", "free", 2500).await, 2500);
    let channel_1 = channel(&specs[1]).await;
    let mut free = consume_no_ack(&channel_1, "free").await;
    for i in 0..2500 {
        let delivery = next(&mut free).await.expect("a delivery");
        assert_eq!(delivery.data, format!("m{i}").as_bytes());
    }
    eventually_ready(&specs[0], "free", 0).await;

    // An exclusive consumer on one node keeps another node's consumer out.
    let owner = channel(&specs[0]).await;
    let _exclusive = owner
        .basic_consume(
            "solo",
            "",
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let refused = channel(&specs[2])
        .await
        .basic_consume("solo", "", Default::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        refusal(refused),
        "403 - ACCESS_REFUSED - queue 'solo' in vhost '/' in exclusive use"
    );

    // A queue whose node is down: RabbitMQ's 404.
    let _dead = nodes.remove(0).kill();
    let refused = channel(&specs[1])
        .await
        .basic_consume("solo", "", Default::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        refusal(refused),
        "404 - NOT_FOUND - home node 'n0' of durable queue 'solo' in vhost '/' is down or \
             inaccessible"
    );
}

/// basic.get with acknowledgements through `channel`: the body, whether redelivered,
/// and the delivery.
async fn get_acked(channel: &Channel, queue: &str) -> Option<(String, bool, u64)> {
    let got = channel
        .basic_get(queue, BasicGetOptions { no_ack: false })
        .await
        .unwrap()?;
    Some((
        String::from_utf8(got.delivery.data.clone()).unwrap(),
        got.delivery.redelivered,
        got.delivery.delivery_tag,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_acknowledgements_from_another_nodes_queue_is_held_there_until_settled() {
    use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
    let place = Place::new("getack");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);
    declare_durable(&specs[0], "jobs").await;
    let publisher = confirming(&specs[0]).await;
    assert_eq!(publish_all(&publisher, "", "jobs", 5).await, 5);

    // Three taken through node 1: out of the ready count there, not yet gone.
    let getter = channel(&specs[1]).await;
    let (m0, redelivered, t0) = get_acked(&getter, "jobs").await.unwrap();
    assert_eq!((m0.as_str(), redelivered), ("m0", false));
    let (m1, _, t1) = get_acked(&getter, "jobs").await.unwrap();
    let (m2, _, t2) = get_acked(&getter, "jobs").await.unwrap();
    assert_eq!((m1.as_str(), m2.as_str()), ("m1", "m2"));
    assert_eq!(ready_count(&specs[0], "jobs").await, 2);

    // Acked, rejected (dropped) and nacked with requeue: settled on the queue's node.
    getter
        .basic_ack(t0, BasicAckOptions::default())
        .await
        .unwrap();
    getter
        .basic_reject(t1, BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    getter
        .basic_nack(
            t2,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        )
        .await
        .unwrap();
    eventually_ready(&specs[0], "jobs", 3).await;
    let (again, redelivered, _) = get_acked(&getter, "jobs").await.unwrap();
    assert_eq!((again.as_str(), redelivered), ("m2", true));

    // Held, unacknowledged, when the channel closes: back to the queue.
    getter.close(200, "done").await.unwrap();
    eventually_ready(&specs[0], "jobs", 3).await;

    // A multiple ack covers gets from two queues of two nodes and one of this node.
    declare_durable(&specs[2], "other").await;
    declare_durable(&specs[1], "mine").await;
    assert_eq!(publish_all(&publisher, "", "other", 2).await, 2);
    assert_eq!(publish_all(&publisher, "", "mine", 1).await, 1);
    let getter = channel(&specs[1]).await;
    get_acked(&getter, "jobs").await.unwrap();
    get_acked(&getter, "other").await.unwrap();
    get_acked(&getter, "mine").await.unwrap();
    let (_, _, last) = get_acked(&getter, "other").await.unwrap();
    assert_eq!(get_acked(&getter, "other").await, None);
    getter
        .basic_ack(last, BasicAckOptions { multiple: true })
        .await
        .unwrap();
    eventually_ready(&specs[0], "jobs", 2).await;
    eventually_ready(&specs[2], "other", 0).await;
    eventually_ready(&specs[1], "mine", 0).await;
    // Held by a node that dies: requeued on the queue's node.
    let doomed = channel(&specs[2]).await;
    get_acked(&doomed, "jobs").await.unwrap();
    get_acked(&doomed, "jobs").await.unwrap();
    eventually_ready(&specs[0], "jobs", 0).await;
    let _dead = nodes.remove(2).kill();
    eventually_ready(&specs[0], "jobs", 2).await;
    let survivor = channel(&specs[1]).await;
    // m2 went with the multiple ack: m3 and m4 were the dead node's.
    let (first, redelivered, _) = get_acked(&survivor, "jobs").await.unwrap();
    assert_eq!((first.as_str(), redelivered), ("m3", true));

    // The management API's get through another node: taken and settled on the queue's.
    declare_durable(&specs[0], "viewed").await;
    assert_eq!(publish_all(&publisher, "", "viewed", 3).await, 3);
    let get = |count: i64, ackmode: &str| {
        let body = format!(r#"{{"count":{count},"ackmode":"{ackmode}","encoding":"auto"}}"#);
        let (status, answer) = http("POST", &specs[1], "/api/queues/%2F/viewed/get", Some(&body));
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        answer
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["payload"].as_str().unwrap().to_string(),
                    m["redelivered"] == true,
                )
            })
            .collect::<Vec<_>>()
    };
    let peeked = get(2, "ack_requeue_true");
    assert_eq!(peeked, [("m0".into(), false), ("m1".into(), false)]);
    assert_eq!(ready_count(&specs[0], "viewed").await, 3);
    let taken = get(-1, "ack_requeue_false");
    assert_eq!(
        taken,
        [
            ("m0".into(), true),
            ("m1".into(), true),
            ("m2".into(), false)
        ]
    );
    assert_eq!(ready_count(&specs[0], "viewed").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_is_let_go_within_seconds_by_the_nodes_it_consumed_from_and_served() {
    use futures_lite::StreamExt;
    let place = Place::new("paused");
    let specs = specs(&place, 3);
    let nodes = start_all(&specs);
    for queue in ["served", "stranded"] {
        declare_durable(&specs[0], queue).await;
    }
    let publisher = confirming(&specs[0]).await;
    assert_eq!(publish_all(&publisher, "", "served", 20).await, 20);

    // The consumer's node paused: what it held goes back to the queue's node's queue,
    // without waiting for the node to come back.
    let (_held_channel, mut held) = consumer(&specs[2], "served", 7).await;
    for _ in 0..7 {
        next(&mut held).await.expect("a delivery");
    }
    eventually_ready(&specs[0], "served", 13).await;
    nodes[2].pause();
    let paused = Instant::now();
    let deadline = paused + Duration::from_secs(40);
    while ready_count(&specs[0], "served").await != 20 {
        assert!(Instant::now() < deadline, "not released");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let released_after = paused.elapsed();
    nodes[2].resume();
    assert!(
        released_after >= Duration::from_secs(10),
        "released after {released_after:?}: too soon for a heartbeat timeout"
    );

    // The queue's node paused: its consumers on other nodes are cancelled.
    let (_channel, mut stranded) = consumer(&specs[1], "stranded", 10).await;
    nodes[0].pause();
    let ended = tokio::time::timeout(Duration::from_secs(40), stranded.next()).await;
    nodes[0].resume();
    assert!(
        matches!(ended, Ok(None)),
        "cancelled, not left waiting: {ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_reply_reaches_its_client_on_another_node() {
    let place = Place::new("reply");
    let specs = specs(&place, 3);
    let _nodes = start_all(&specs);
    declare_durable(&specs[0], "rpc").await;

    // The client on node 1, the server consuming through node 2, the queue on node 0.
    let client = channel(&specs[1]).await;
    let mut replies = consume_no_ack(&client, "amq.rabbitmq.reply-to").await;
    let (server, mut requests) = consumer(&specs[2], "rpc", 10).await;
    server
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..20 {
        client
            .basic_publish(
                "",
                "rpc",
                BasicPublishOptions::default(),
                format!("q{i}").as_bytes(),
                BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
            )
            .await
            .unwrap();
    }
    let mut reply_to = String::new();
    for i in 0..20 {
        let request = next(&mut requests).await.expect("a request");
        assert_eq!(request.data, format!("q{i}").as_bytes());
        reply_to = request
            .properties
            .reply_to()
            .as_ref()
            .expect("a reply name")
            .to_string();
        assert!(reply_to.starts_with("amq.rabbitmq.reply-to."), "{reply_to}");
        let confirm = server
            .basic_publish(
                "",
                &reply_to,
                BasicPublishOptions::default(),
                format!("a{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack(), "the reply is confirmed");
        request
            .ack(lapin::options::BasicAckOptions::default())
            .await
            .unwrap();
    }
    for i in 0..20 {
        let reply = next(&mut replies).await.expect("a reply");
        assert_eq!(reply.data, format!("a{i}").as_bytes(), "in order");
    }

    // A passive declare of the name, on the server's node, asks the client's node.
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let alive = channel(&specs[2])
        .await
        .queue_declare(&reply_to, passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(alive.consumer_count(), 1);
    client.close(200, "done").await.unwrap();
    let gone = channel(&specs[2])
        .await
        .queue_declare(&reply_to, passive, FieldTable::default())
        .await
        .unwrap_err();
    assert!(
        refusal(gone).starts_with("404 - NOT_FOUND"),
        "the client is gone"
    );
}
