//! basic.publish / get / consume / cancel, and what comes back: properties, returns,
//! ordering, round-robin, consumer exclusivity.

mod common;

use common::*;
use lapin::message::BasicReturnMessage;
use lapin::options::*;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::BasicProperties;

fn every_header_type() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert(
        "inner".into(),
        AMQPValue::LongString(LongString::from("deep")),
    );
    let mut t = FieldTable::default();
    t.insert("bool".into(), AMQPValue::Boolean(true));
    t.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    t.insert("u8".into(), AMQPValue::ShortShortUInt(8));
    t.insert("i16".into(), AMQPValue::ShortInt(-16));
    t.insert("u16".into(), AMQPValue::ShortUInt(16));
    t.insert("i32".into(), AMQPValue::LongInt(-32));
    t.insert("u32".into(), AMQPValue::LongUInt(32));
    t.insert("i64".into(), AMQPValue::LongLongInt(-64));
    t.insert("f32".into(), AMQPValue::Float(1.5));
    t.insert("f64".into(), AMQPValue::Double(2.25));
    t.insert(
        "dec".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    t.insert(
        "str".into(),
        AMQPValue::LongString(LongString::from("héllo")),
    );
    t.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString(LongString::from("two")),
        ])),
    );
    t.insert("ts".into(), AMQPValue::Timestamp(1_700_000_000));
    t.insert("table".into(), AMQPValue::FieldTable(nested));
    t.insert("void".into(), AMQPValue::Void);
    t.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 255])),
    );
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_and_headers_survive_the_round_trip() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = exclusive_queue(&ch).await;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(every_header_type())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("kind".into())
        .with_user_id("guest".into())
        .with_app_id("tests".into())
        .with_cluster_id("c1".into());
    ch.basic_publish("", &q, Default::default(), b"{\"a\":1}", props.clone())
        .await
        .unwrap();
    let got = within(ch.basic_get(&q, BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(got.delivery.data, b"{\"a\":1}");
    assert_eq!(got.delivery.properties, props);
    assert_eq!(got.delivery.routing_key.as_str(), q);
    assert_eq!(got.delivery.exchange.as_str(), "");
    assert!(!got.delivery.redelivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_on_empty_queue_is_get_empty() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = exclusive_queue(&ch).await;
    assert!(ch
        .basic_get(&q, Default::default())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reports_remaining_count() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = exclusive_queue(&ch).await;
    for i in 0..3u8 {
        ch.basic_publish("", &q, Default::default(), &[i], BasicProperties::default())
            .await
            .unwrap();
    }
    for expected_left in [2, 1, 0] {
        let got = ch
            .basic_get(&q, BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.message_count, expected_left);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_empty_bodies() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = exclusive_queue(&ch).await;
    let large: Vec<u8> = (0..(1 << 20) + 17).map(|i| (i * 31 % 251) as u8).collect();
    ch.basic_publish(
        "",
        &q,
        Default::default(),
        &large,
        BasicProperties::default(),
    )
    .await
    .unwrap();
    ch.basic_publish("", &q, Default::default(), b"", BasicProperties::default())
        .await
        .unwrap();
    let got = within(ch.basic_get(&q, BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data.len(), large.len());
    assert!(got.delivery.data == large, "large body changed in transit");
    let got = within(ch.basic_get(&q, BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .unwrap();
    assert!(got.delivery.data.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_comes_back_with_312() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let key = unique("nowhere");
    let confirm = ch
        .basic_publish(
            "amq.direct",
            &key,
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let confirmation = within(confirm).await.unwrap();
    let returned: BasicReturnMessage = confirmation.take_message().expect("a basic.return");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.exchange.as_str(), "amq.direct");
    assert_eq!(returned.delivery.routing_key.as_str(), key);
    assert_eq!(returned.delivery.data, b"lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_share_a_queue_round_robin_in_order() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = exclusive_queue(&ch).await;
    let mut a = ch
        .basic_consume(
            &q,
            "a",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut b = ch
        .basic_consume(
            &q,
            "b",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..10u8 {
        ch.basic_publish("", &q, Default::default(), &[i], BasicProperties::default())
            .await
            .unwrap();
    }
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..5 {
        got_a.push(next_delivery(&mut a).await.data[0]);
        got_b.push(next_delivery(&mut b).await.data[0]);
    }
    assert_eq!(got_a, vec![0, 2, 4, 6, 8]);
    assert_eq!(got_b, vec![1, 3, 5, 7, 9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer_refuses_others() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let q = unique("q");
    ch.queue_declare(&q, Default::default(), FieldTable::default())
        .await
        .unwrap();
    let _first = ch
        .basic_consume(
            &q,
            "first",
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    let err = ch2
        .basic_consume(&q, "second", Default::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            403,
            format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
        )
    );
    let ch3 = conn.create_channel().await.unwrap();
    ch3.queue_delete(&q, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consume_on_a_queue_with_consumers_is_refused() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let q = unique("q");
    ch.queue_declare(&q, Default::default(), FieldTable::default())
        .await
        .unwrap();
    let _first = ch
        .basic_consume(&q, "first", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    let err = ch2
        .basic_consume(
            &q,
            "second",
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            403,
            format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
        )
    );
    let ch3 = conn.create_channel().await.unwrap();
    ch3.queue_delete(&q, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_deliveries() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = exclusive_queue(&ch).await;
    let mut consumer = ch
        .basic_consume(
            &q,
            "c",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.basic_publish("", &q, Default::default(), b"1", BasicProperties::default())
        .await
        .unwrap();
    assert_eq!(next_delivery(&mut consumer).await.data, b"1");
    ch.basic_cancel("c", Default::default()).await.unwrap();
    ch.basic_publish("", &q, Default::default(), b"2", BasicProperties::default())
        .await
        .unwrap();
    let got = within(ch.basic_get(&q, BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data, b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_cancels_its_consumers() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let q = unique("q");
    ch.queue_declare(&q, Default::default(), FieldTable::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(&q, "doomed", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let other = conn.create_channel().await.unwrap();
    other.queue_delete(&q, Default::default()).await.unwrap();
    // lapin ends the consumer's stream when the broker sends basic.cancel.
    let end = within(futures_lite::StreamExt::next(&mut consumer)).await;
    assert!(
        end.is_none(),
        "expected the consumer to be cancelled, got {end:?}"
    );
    assert!(ch.status().connected(), "the channel stays open");
}
