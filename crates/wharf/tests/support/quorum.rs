//! Quorum queues' clients for the cluster tests: declaring one, publishing with
//! confirms, taking messages back through any node.

use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use super::{channel, durable, NodeSpec};

pub fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments
}

pub async fn declare_quorum(spec: &NodeSpec, queue: &str) {
    channel(spec)
        .await
        .queue_declare(queue, durable(), quorum())
        .await
        .unwrap();
}

pub async fn confirming(spec: &NodeSpec) -> Channel {
    let channel = channel(spec).await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
}

/// Publishes `bodies` persistent, then waits for every confirm; answers those acked.
pub async fn publish_all(channel: &Channel, queue: &str, bodies: &[String]) -> Vec<String> {
    let mut confirms = Vec::with_capacity(bodies.len());
    for body in bodies {
        let confirm = channel
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    let mut acked = Vec::new();
    for (body, confirm) in bodies.iter().zip(confirms) {
        if confirm.await.unwrap().is_ack() {
            acked.push(body.clone());
        }
    }
    acked
}

pub fn numbered(from: usize, count: usize) -> Vec<String> {
    (from..from + count).map(|i| format!("m{i}")).collect()
}

/// Takes messages with basic.get (acknowledged) until `count` came or `within` passed
/// (a get during an election waits for the new leader, or fails: tried again).
pub async fn get_until(
    spec: &NodeSpec,
    queue: &str,
    count: usize,
    within: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut bodies = Vec::new();
    let mut channel = channel(spec).await;
    while bodies.len() < count && Instant::now() < deadline {
        match channel
            .basic_get(queue, BasicGetOptions { no_ack: false })
            .await
        {
            Ok(Some(message)) => {
                bodies.push(String::from_utf8(message.delivery.data.clone()).unwrap());
                message.ack(BasicAckOptions::default()).await.unwrap();
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                channel = super::channel(spec).await;
            }
        }
    }
    bodies
}

/// A channel in confirm mode on a connection of its own, or None.
pub async fn try_confirming(spec: &NodeSpec) -> Option<Channel> {
    let connection = super::try_connect(spec).await.ok()?;
    let channel = connection.create_channel().await.ok()?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .ok()?;
    Some(channel)
}

/// [`publish_all`] to queue `qq`, or None when the channel failed on the way.
pub async fn try_publish_all(channel: &Channel, bodies: &[String]) -> Option<Vec<String>> {
    let mut confirms = Vec::with_capacity(bodies.len());
    for body in bodies {
        let confirm = channel
            .basic_publish(
                "",
                "qq",
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .ok()?;
        confirms.push(confirm);
    }
    let mut acked = Vec::new();
    for (body, confirm) in bodies.iter().zip(confirms) {
        if confirm.await.ok()?.is_ack() {
            acked.push(body.clone());
        }
    }
    Some(acked)
}
