//! The consumer timeout (RabbitMQ's `consumer_timeout`): a channel whose oldest
//! unacknowledged delivery has waited longer than the timeout is closed with 406 and
//! RabbitMQ's text; its deliveries go back to their queues. These run against Wharf only:
//! RabbitMQ's timeout is 30 minutes unless its configuration says otherwise.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use wharf_server::ServerConfig;

fn with_timeout(ms: u64) -> ServerConfig {
    ServerConfig {
        consumer_timeout: Some(Duration::from_millis(ms)),
        ..ServerConfig::default()
    }
}

fn external() -> bool {
    std::env::var("WHARF_TEST_EXTERNAL").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_delivery_past_the_timeout_closes_its_channel() {
    if external() {
        return;
    }
    let broker = wharf_integration::start_broker_with(with_timeout(300)).await;
    let (connection, ch) = lapin_channel(&broker).await;
    let queue = exclusive_queue(&ch).await;
    publish_to(&ch, &queue, b"slow").await;
    let consumer_ch = connection.create_channel().await.unwrap();
    let closed = channel_error(&consumer_ch);
    let mut consumer = consumer_ch
        .basic_consume(&queue, "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.data, b"slow");
    let id = consumer_ch.id();
    let (code, text) = closed_with(closed).await;
    assert_eq!(code, 406);
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - delivery acknowledgement on channel {id} timed out. Timeout \
             value used: 300 ms. This timeout value can be configured, see consumers doc guide \
             to learn more"
        )
    );
    // The message went back to its queue, redelivered.
    let again = ch
        .basic_get(&queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("requeued");
    assert_eq!(again.delivery.data, b"slow");
    assert!(again.delivery.redelivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_acks_in_time_keeps_its_channel() {
    if external() {
        return;
    }
    let broker = wharf_integration::start_broker_with(with_timeout(400)).await;
    let (connection, ch) = lapin_channel(&broker).await;
    let queue = exclusive_queue(&ch).await;
    let consumer_ch = connection.create_channel().await.unwrap();
    consumer_ch.basic_qos(1, Default::default()).await.unwrap();
    let mut consumer = consumer_ch
        .basic_consume(&queue, "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    // 1.2 s of work, three times the timeout, each message acked within 100 ms.
    for i in 0..12u8 {
        publish_to(&ch, &queue, &[i]).await;
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(delivery.data, [i]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        delivery.ack(Default::default()).await.unwrap();
    }
    assert!(
        consumer_ch.status().connected(),
        "the channel is still open"
    );
    // An idle channel with nothing unacknowledged is never timed out.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(consumer_ch.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_get_left_unacknowledged_times_out_too_and_no_ack_never_does() {
    if external() {
        return;
    }
    let broker = wharf_integration::start_broker_with(with_timeout(200)).await;
    let (connection, ch) = lapin_channel(&broker).await;
    let queue = exclusive_queue(&ch).await;
    publish_to(&ch, &queue, b"got").await;
    let get_ch = connection.create_channel().await.unwrap();
    let closed = channel_error(&get_ch);
    get_ch
        .basic_get(&queue, BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("a message");
    let (code, _) = closed_with(closed).await;
    assert_eq!(code, 406);

    // Deliveries without acks are not waited for.
    let no_ack_ch = connection.create_channel().await.unwrap();
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = no_ack_ch
        .basic_consume(&queue, "auto", options, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(next_delivery(&mut consumer).await.data, b"got");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(no_ack_ch.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_timeout_when_it_is_turned_off() {
    if external() {
        return;
    }
    let config = ServerConfig {
        consumer_timeout: None,
        ..ServerConfig::default()
    };
    let broker = wharf_integration::start_broker_with(config).await;
    let (_c, ch) = lapin_channel(&broker).await;
    let queue = exclusive_queue(&ch).await;
    publish_to(&ch, &queue, b"kept").await;
    ch.basic_get(&queue, BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("a message");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ch.status().connected());
}
