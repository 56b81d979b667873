//! `x-max-length` and `x-max-length-bytes` with `x-overflow` = `drop-head` (the default)
//! and `reject-publish`, as RabbitMQ applies them: the limits count ready messages (and
//! their body bytes) only; drop-head drops the oldest, reject-publish refuses the newest
//! with basic.nack.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};

fn limited(max: i64, overflow: Option<&str>) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(max));
    if let Some(overflow) = overflow {
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from(overflow)),
        );
    }
    arguments
}

async fn declare(ch: &Channel, arguments: FieldTable) -> String {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare("", options, arguments)
        .await
        .unwrap()
        .name()
        .as_str()
        .to_string()
}

/// Publishes with confirms on (the channel must be in confirm mode); true if acked.
async fn publish(ch: &Channel, queue: &str, body: &[u8]) -> bool {
    let confirm = ch
        .basic_publish(
            "",
            queue,
            Default::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    within(confirm).await.unwrap().is_ack()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_head_keeps_the_newest() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let queue = declare(&ch, limited(3, None)).await;
    for i in 0..5u8 {
        assert!(
            publish(&ch, &queue, &[i]).await,
            "drop-head acks every publish"
        );
    }
    assert_eq!(message_count(&ch, &queue).await, 3);
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        vec![vec![2], vec![3], vec![4]]
    );
}

/// Beyond the in-memory window (10,000 messages) the oldest are in the queue's log: they
/// are dropped from there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_head_reaches_messages_spilled_to_disk() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let queue = declare(&ch, limited(12_000, Some("drop-head"))).await;
    for i in 0..15_000u32 {
        ch.basic_publish(
            "",
            &queue,
            Default::default(),
            &i.to_be_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let counted = message_count(&ch, &queue).await;
    assert_eq!(counted, 12_000);
    let got = take_all_bodies(&ch, &queue).await;
    assert_eq!(got.len(), 12_000);
    assert_eq!(
        got[0],
        3_000u32.to_be_bytes().to_vec(),
        "the oldest 3,000 went"
    );
    assert_eq!(got[11_999], 14_999u32.to_be_bytes().to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_nacks_what_does_not_fit_and_unacked_do_not_count() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let queue = declare(&ch, limited(2, Some("reject-publish"))).await;
    assert!(publish(&ch, &queue, b"a").await);
    assert!(publish(&ch, &queue, b"b").await);
    assert!(!publish(&ch, &queue, b"c").await, "the third is refused");
    // A delivered, unacknowledged message no longer counts against the limit.
    let consumer_ch = conn.create_channel().await.unwrap();
    let got = consumer_ch
        .basic_get(&queue, BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("a ready message");
    assert_eq!(got.delivery.data, b"a");
    assert!(publish(&ch, &queue, b"d").await);
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        vec![b"b".to_vec(), b"d".to_vec()]
    );
}

/// A limit of 0 keeps nothing. With drop-head a waiting consumer still gets each message;
/// with reject-publish RabbitMQ refuses it before any consumer is offered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_zero_feeds_a_consumer_only_with_drop_head() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    for overflow in ["drop-head", "reject-publish"] {
        let drops = overflow == "drop-head";
        let queue = declare(&ch, limited(0, Some(overflow))).await;
        assert_eq!(publish(&ch, &queue, b"alone").await, drops, "{overflow}");
        assert_eq!(message_count(&ch, &queue).await, 0);
        let consumer_ch = conn.create_channel().await.unwrap();
        let mut consumer = consumer_ch
            .basic_consume(
                &queue,
                "",
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!(publish(&ch, &queue, b"offered").await, drops, "{overflow}");
        if drops {
            assert_eq!(next_delivery(&mut consumer).await.data, b"offered");
        } else {
            no_delivery(&mut consumer).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_limits_are_406_with_rabbitmqs_reasons() {
    let broker = start_broker().await;
    let (conn, _ch) = lapin_channel(&broker).await;
    let name = unique("limits");
    let cases = [
        (limited(-1, None), "x-max-length", "{value_negative,-1}"),
        (
            {
                let mut a = FieldTable::default();
                a.insert(
                    "x-max-length".into(),
                    AMQPValue::LongString(LongString::from("10")),
                );
                a
            },
            "x-max-length",
            "\"expected integer, got longstr\"",
        ),
        (
            {
                let mut a = FieldTable::default();
                a.insert(
                    "x-overflow".into(),
                    AMQPValue::LongString(LongString::from("foo")),
                );
                a
            },
            "x-overflow",
            "invalid_overflow",
        ),
        (
            {
                let mut a = FieldTable::default();
                a.insert("x-overflow".into(), AMQPValue::LongInt(5));
                a
            },
            "x-overflow",
            "{unacceptable_type,signedint}",
        ),
        (
            table(&[("x-max-length-bytes", int(-1))]),
            "x-max-length-bytes",
            "{value_negative,-1}",
        ),
    ];
    for (arguments, argument, reason) in cases {
        let ch = conn.create_channel().await.unwrap();
        let err = ch
            .queue_declare(&name, Default::default(), arguments)
            .await
            .unwrap_err();
        assert_eq!(
            protocol_error(&err),
            (
                406,
                format!(
                    "PRECONDITION_FAILED - invalid arg '{argument}' for queue '{name}' in \
                     vhost '/': {reason}"
                )
            )
        );
    }
}

fn byte_limited(max: i64, overflow: &str) -> FieldTable {
    table(&[
        ("x-max-length-bytes", int(max)),
        ("x-overflow", text(overflow)),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_limit_counts_body_bytes() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let queue = declare(&ch, byte_limited(10, "drop-head")).await;
    for body in [&b"aaaaa"[..], b"bbbbb", b"cc"] {
        assert!(publish(&ch, &queue, body).await);
    }
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        vec![b"bbbbb".to_vec(), b"cc".to_vec()],
        "12 bytes > 10: the oldest went"
    );

    let queue = declare(&ch, byte_limited(10, "reject-publish")).await;
    assert!(publish(&ch, &queue, b"aaaaa").await);
    assert!(publish(&ch, &queue, b"bbbbb").await, "exactly 10 fits");
    assert!(!publish(&ch, &queue, b"c").await, "11 would not");
    assert!(publish(&ch, &queue, b"").await, "an empty body always fits");
    assert_eq!(message_count(&ch, &queue).await, 3);

    // Both limits: whichever is reached first.
    let both = table(&[("x-max-length", int(2)), ("x-max-length-bytes", int(100))]);
    let queue = declare(&ch, both).await;
    for body in [&b"1"[..], b"2", b"3"] {
        assert!(publish(&ch, &queue, body).await);
    }
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        vec![b"2".to_vec(), b"3".to_vec()]
    );
}

/// Beyond the in-memory window the bytes of messages in the queue's log count too, also
/// after a restart (the log is read once to count them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_limit_counts_messages_on_disk_across_a_restart() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // Wharf's window, and a restart
    }
    let dir = TempDir::new("bytes-restart");
    let arguments = table(&[("x-max-length-bytes", int(48_000))]);
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let persistent = BasicProperties::default().with_delivery_mode(2);
    {
        let broker = wharf_integration::start_broker_in(&dir.0).await;
        let (_c, ch) = lapin_channel(&broker).await;
        ch.confirm_select(Default::default()).await.unwrap();
        ch.queue_declare("bytes", durable, arguments.clone())
            .await
            .unwrap();
        let mut last = None;
        for i in 0..12_500u32 {
            last = Some(
                ch.basic_publish(
                    "",
                    "bytes",
                    Default::default(),
                    &i.to_be_bytes(),
                    persistent.clone(),
                )
                .await
                .unwrap(),
            );
        }
        assert!(within(last.unwrap()).await.unwrap().is_ack());
        assert_eq!(
            message_count(&ch, "bytes").await,
            12_000,
            "48,000 bytes of 4"
        );
        broker.stop().await;
    }
    let broker = wharf_integration::start_broker_in(&dir.0).await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    assert_eq!(message_count(&ch, "bytes").await, 12_000);
    let confirm = ch
        .basic_publish("", "bytes", Default::default(), b"last", persistent)
        .await
        .unwrap();
    assert!(within(confirm).await.unwrap().is_ack());
    assert_eq!(
        message_count(&ch, "bytes").await,
        12_000,
        "the oldest made room: the limit saw the bytes on disk"
    );
    let first = ch
        .basic_get("bytes", BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.delivery.data, 501u32.to_be_bytes());
}
