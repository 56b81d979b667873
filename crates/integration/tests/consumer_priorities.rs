//! Consumer priorities (`x-priority` on basic.consume): a queue offers each message to its
//! highest-priority consumers first, and to lower ones only while those cannot take it.

mod common;

use common::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection};

/// A consumer with manual acks on its own channel, with this prefetch and priority.
async fn consumer(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
    priority: i32,
) -> (Channel, lapin::Consumer) {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(prefetch, Default::default()).await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-priority".into(), AMQPValue::LongInt(priority));
    let consumer = ch
        .basic_consume(queue, "", Default::default(), arguments)
        .await
        .unwrap();
    (ch, consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_higher_priority_consumer_gets_messages_while_it_has_credit() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let queue = exclusive_queue(&ch).await;
    // Registered first, so round robin would start with it.
    let (_low_ch, mut low) = consumer(&conn, &queue, 10, -1).await;
    let (_high_ch, mut high) = consumer(&conn, &queue, 2, 5).await;
    for i in 0..3u8 {
        publish_to(&ch, &queue, &[i]).await;
    }
    let first = next_delivery(&mut high).await;
    let second = next_delivery(&mut high).await;
    assert_eq!(
        (first.data.clone(), second.data.clone()),
        (vec![0], vec![1])
    );
    // The high-priority consumer is at its prefetch: the next one goes to the other.
    assert_eq!(next_delivery(&mut low).await.data, vec![2]);
    // With credit back, it is the high-priority consumer's turn again.
    first.ack(Default::default()).await.unwrap();
    publish_to(&ch, &queue, &[3]).await;
    assert_eq!(next_delivery(&mut high).await.data, vec![3]);
    no_delivery(&mut low).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_that_is_not_an_integer_is_406() {
    let broker = start_broker().await;
    let (_conn, ch) = lapin_channel(&broker).await;
    let queue = exclusive_queue(&ch).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-priority".into(),
        AMQPValue::LongString(LongString::from("high")),
    );
    let err = ch
        .basic_consume(&queue, "", Default::default(), arguments)
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{queue}' in vhost \
                 '/': \"expected integer, got longstr\""
            )
        )
    );
}
