//! Direct reply-to (`amq.rabbitmq.reply-to`), as RabbitMQ does it: a client consumes the
//! pseudo-queue without acks, its requests' reply-to is replaced by a name of its
//! channel's own, and replies published to that name through the default exchange go
//! straight to the consumer.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel};

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

async fn reply_consumer(ch: &Channel) -> lapin::Consumer {
    ch.basic_consume(
        REPLY_TO,
        "replies",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// Publishes `body` with confirms; returns whether it came back unroutable.
async fn publish(ch: &Channel, key: &str, body: &[u8], properties: BasicProperties) -> bool {
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = ch
        .basic_publish("", key, options, body, properties)
        .await
        .unwrap();
    within(confirm).await.unwrap().take_message().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_and_its_reply_without_a_reply_queue() {
    let broker = start_broker().await;
    // The RPC server, on its own connection.
    let (_server_conn, server) = lapin_channel(&broker).await;
    server.confirm_select(Default::default()).await.unwrap();
    let requests = exclusive_queue(&server).await;
    let mut incoming = server
        .basic_consume(
            &requests,
            "server",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let (_client_conn, client) = lapin_channel(&broker).await;
    client.confirm_select(Default::default()).await.unwrap();
    let mut replies = reply_consumer(&client).await;
    for i in 0..3u8 {
        let properties = BasicProperties::default()
            .with_reply_to(ShortString::from(REPLY_TO))
            .with_correlation_id(ShortString::from(format!("c{i}")));
        assert!(!publish(&client, &requests, &[i], properties).await);
        let request = next_delivery(&mut incoming).await;
        let reply_to = request
            .properties
            .reply_to()
            .as_ref()
            .expect("a reply-to")
            .to_string();
        assert!(
            reply_to.starts_with("amq.rabbitmq.reply-to.") && reply_to.len() > REPLY_TO.len() + 2,
            "the channel's own name: {reply_to}"
        );
        assert_eq!(
            request
                .properties
                .correlation_id()
                .as_ref()
                .unwrap()
                .as_str(),
            format!("c{i}"),
            "other properties untouched"
        );
        let answer =
            BasicProperties::default().with_correlation_id(ShortString::from(format!("c{i}")));
        let returned = publish(&server, &reply_to, &[i, i], answer).await;
        // RabbitMQ 3.10 delivers a mandatory reply and returns it as unroutable too;
        // Wharf counts a delivered reply as routed.
        if std::env::var("WHARF_TEST_EXTERNAL").is_err() {
            assert!(!returned, "a reply to a live name is routed");
        }
        let reply = next_delivery(&mut replies).await;
        assert_eq!(reply.data, [i, i]);
        assert_eq!(reply.exchange.as_str(), "");
        assert_eq!(reply.routing_key.as_str(), reply_to);
        assert!(!reply.redelivered);
        assert_eq!(
            reply.properties.correlation_id().as_ref().unwrap().as_str(),
            format!("c{i}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pseudo_queue_is_refused_what_it_cannot_do() {
    let broker = start_broker().await;
    let connection = lapin_connect(&broker.url()).await;
    // With acks.
    let ch = connection.create_channel().await.unwrap();
    let error = ch
        .basic_consume(REPLY_TO, "", Default::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&error),
        (
            406,
            "PRECONDITION_FAILED - reply consumer cannot acknowledge".to_string()
        )
    );
    // Twice on one channel.
    let ch = connection.create_channel().await.unwrap();
    let _first = reply_consumer(&ch).await;
    let error = ch
        .basic_consume(
            REPLY_TO,
            "again",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&error),
        (
            406,
            "PRECONDITION_FAILED - reply consumer already set".to_string()
        )
    );
    // A request from a channel that does not consume replies.
    let ch = connection.create_channel().await.unwrap();
    let closed = channel_error(&ch);
    let queue = exclusive_queue(&ch).await;
    let properties = BasicProperties::default().with_reply_to(ShortString::from(REPLY_TO));
    let _ = ch
        .basic_publish("", &queue, Default::default(), b"q", properties)
        .await;
    assert_eq!(
        closed_with(closed).await,
        (
            406,
            "PRECONDITION_FAILED - fast reply consumer does not exist".to_string()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declares_see_the_pseudo_queue_and_live_names_only() {
    let broker = start_broker().await;
    let connection = lapin_connect(&broker.url()).await;
    let ch = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = ch
        .queue_declare(REPLY_TO, passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(declared.name().as_str(), REPLY_TO);
    assert_eq!(
        (declared.message_count(), declared.consumer_count()),
        (0, 1)
    );

    // A live name, found from another connection.
    let client = connection.create_channel().await.unwrap();
    client.confirm_select(Default::default()).await.unwrap();
    let _replies = reply_consumer(&client).await;
    let requests = exclusive_queue(&client).await;
    let properties = BasicProperties::default().with_reply_to(ShortString::from(REPLY_TO));
    assert!(!publish(&client, &requests, b"q", properties).await);
    let request = client
        .basic_get(&requests, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    let name = request.delivery.properties.reply_to().clone().unwrap();
    let (_other, other) = lapin_channel(&broker).await;
    let found = other
        .queue_declare(name.as_str(), passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(found.name().as_str(), name.as_str());

    // Once the requesting channel is gone the name means nothing: declares fail, and a
    // mandatory reply comes back.
    client.close(200, "done").await.unwrap();
    let error = other
        .queue_declare(name.as_str(), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&error),
        (
            404,
            format!("NOT_FOUND - no queue '{}' in vhost '/'", name.as_str())
        )
    );
    let replier = connection.create_channel().await.unwrap();
    replier.confirm_select(Default::default()).await.unwrap();
    assert!(
        publish(&replier, name.as_str(), b"late", BasicProperties::default()).await,
        "a reply to a closed channel is unroutable"
    );
}
