//! Publisher confirms as the client sees them on the wire: confirms ready together come as
//! one `basic.ack` with `multiple=true`, and a multiple ack never covers a nacked message.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::BytesMut;
use wharf_amqp::frame::{encode_body, encode_content_header, encode_method, FramePayload};
use wharf_amqp::*;
use wharf_integration::raw::RawClient;
use wharf_integration::*;

use common::TempDir;

/// A pipelined burst: enough that confirms become ready while earlier ones are unsent.
const BURST: u64 = 500;

/// A broker that keeps persistent messages on disk (the external broker as it is).
async fn durable_broker(dir: &std::path::Path) -> TestBroker {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        start_broker().await
    } else {
        start_broker_in(dir).await
    }
}

async fn declare(client: &mut RawClient, queue: &str, durable: bool, arguments: FieldTable) {
    client
        .send_method(
            1,
            QueueDeclare {
                queue: queue.into(),
                passive: false,
                durable,
                exclusive: !durable,
                auto_delete: false,
                no_wait: false,
                arguments,
            },
        )
        .await;
    let ok = client.read_method().await;
    assert!(matches!(ok, Method::QueueDeclareOk(_)), "{ok:?}");
}

/// Deletes `queue` on channel 1; the message count of the delete-ok (the next reply).
async fn delete(client: &mut RawClient, queue: &str) -> u32 {
    let delete = QueueDelete {
        queue: queue.into(),
        if_unused: false,
        if_empty: false,
        no_wait: false,
    };
    client.send_method(1, delete).await;
    match client.read_method().await {
        Method::QueueDeleteOk(ok) => ok.message_count,
        other => panic!("expected delete-ok, got {other:?}"),
    }
}

async fn confirm_select(client: &mut RawClient) {
    client
        .send_method(1, ConfirmSelect { no_wait: false })
        .await;
    let ok = client.read_method().await;
    assert!(matches!(ok, Method::ConfirmSelectOk(_)), "{ok:?}");
}

/// One write holding a publish (header, body) for each routing key, to the default
/// exchange, persistent or not.
fn burst(routing_keys: &[&str], persistent: bool) -> BytesMut {
    let properties = BasicProperties {
        delivery_mode: Some(if persistent { 2 } else { 1 }),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    for (i, key) in routing_keys.iter().enumerate() {
        let body = format!("message {i}");
        let publish = Method::BasicPublish(BasicPublish {
            exchange: "".into(),
            routing_key: (*key).into(),
            mandatory: false,
            immediate: false,
        });
        encode_method(1, &publish, &mut out);
        let header = ContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties: properties.clone().into(),
        };
        encode_content_header(1, &header, &mut out);
        encode_body(1, body.as_bytes(), 131072, &mut out);
    }
    out
}

/// What the client learns from the confirms of tags 1..=n, read as a client library reads
/// them: a multiple ack or nack answers every tag up to it still unanswered. Fails the test
/// on a confirm for a tag already answered (other than by `multiple`) or never published.
/// Returns each tag's answer (true: ack) and the number of confirm frames.
async fn read_confirms(client: &mut RawClient, n: u64) -> (BTreeMap<u64, bool>, usize, usize) {
    let mut outstanding: BTreeSet<u64> = (1..=n).collect();
    let mut answers = BTreeMap::new();
    let (mut frames, mut multiples) = (0, 0);
    while !outstanding.is_empty() {
        let frame = client
            .read_frame()
            .await
            .expect("the broker closed the connection");
        let (ack, tag, multiple) = match frame.payload {
            FramePayload::Method(Method::BasicAck(a)) => (true, a.delivery_tag, a.multiple),
            FramePayload::Method(Method::BasicNack(n)) => (false, n.delivery_tag, n.multiple),
            other => panic!("expected a confirm, got {other:?}"),
        };
        assert_eq!(frame.channel, 1);
        assert!(
            (1..=n).contains(&tag),
            "confirm of tag {tag}, never published"
        );
        frames += 1;
        if multiple {
            multiples += 1;
            let covered: Vec<u64> = outstanding.range(..=tag).copied().collect();
            for t in covered {
                outstanding.remove(&t);
                answers.insert(t, ack);
            }
        } else {
            assert!(outstanding.remove(&tag), "tag {tag} answered twice");
            answers.insert(tag, ack);
        }
    }
    (answers, frames, multiples)
}

async fn burst_is_acked_with_multiple(persistent: bool) {
    let dir = TempDir::new("confirms");
    let broker = durable_broker(&dir.0).await;
    let mut client = RawClient::open_with_channel(broker.addr).await;
    let queue = unique("confirmed");
    declare(&mut client, &queue, persistent, FieldTable::new()).await;
    confirm_select(&mut client).await;
    let keys = vec![queue.as_str(); BURST as usize];
    client.send_raw(&burst(&keys, persistent)).await;
    let (answers, frames, multiples) = read_confirms(&mut client, BURST).await;
    assert!(answers.values().all(|&ack| ack), "every message acked");
    assert!(
        multiples > 0 && frames < BURST as usize,
        "{BURST} confirms ready together came as {frames} frames, {multiples} multiple"
    );
    assert_eq!(delete(&mut client, &queue).await, BURST as u32);
}

#[tokio::test]
async fn transient_confirms_ready_together_come_as_one_multiple_ack() {
    burst_is_acked_with_multiple(false).await;
}

#[tokio::test]
async fn persistent_confirms_ready_together_come_as_one_multiple_ack() {
    burst_is_acked_with_multiple(true).await;
}

/// Publishes alternate between a queue that takes them and a full queue that refuses them
/// (`reject-publish`): every refused message is nacked, and no multiple ack covers one.
#[tokio::test]
async fn a_multiple_ack_never_covers_a_nacked_message() {
    let broker = start_broker().await;
    let mut client = RawClient::open_with_channel(broker.addr).await;
    let (open, full) = (unique("open"), unique("full"));
    declare(&mut client, &open, false, FieldTable::new()).await;
    let mut limits = FieldTable::new();
    limits.insert("x-max-length", FieldValue::I32(1));
    limits.insert("x-overflow", FieldValue::LongStr("reject-publish".into()));
    declare(&mut client, &full, false, limits).await;
    confirm_select(&mut client).await;
    // Tag 1 fills the full queue; then odd tags go to the open one, even tags are refused.
    let keys: Vec<&str> = (1..=BURST)
        .map(|tag| {
            if tag == 1 || tag % 2 == 0 {
                full.as_str()
            } else {
                open.as_str()
            }
        })
        .collect();
    client.send_raw(&burst(&keys, false)).await;
    let (answers, _, _) = read_confirms(&mut client, BURST).await;
    for (tag, ack) in answers {
        let expected = tag == 1 || tag % 2 == 1;
        assert_eq!(ack, expected, "tag {tag}: acked {ack}, expected {expected}");
    }
}

/// A channel closed with confirms still waiting for the disk: nothing is sent on it after
/// its close-ok, not even once it is reopened (the old confirms are not the new channel's).
#[tokio::test]
async fn no_confirm_follows_the_close_ok() {
    let dir = TempDir::new("confirms-close");
    let broker = durable_broker(&dir.0).await;
    let mut client = RawClient::open_with_channel(broker.addr).await;
    let queue = unique("closing");
    declare(&mut client, &queue, true, FieldTable::new()).await;
    confirm_select(&mut client).await;
    let keys = vec![queue.as_str(); BURST as usize];
    let mut bytes = burst(&keys, true);
    encode_method(
        1,
        &Method::ChannelClose(ChannelClose {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        }),
        &mut bytes,
    );
    client.send_raw(&bytes).await;
    let mut confirmed_before_close = 0;
    loop {
        match client.read_method().await {
            Method::BasicAck(_) => confirmed_before_close += 1,
            Method::ChannelCloseOk(_) => break,
            other => panic!("before close-ok: {other:?}"),
        }
    }
    // Reopened at once, while confirms of the old channel may still wait for the disk.
    client.send_method(1, ChannelOpen {}).await;
    let after = client.read_method().await;
    assert!(
        matches!(after, Method::ChannelOpenOk(_)),
        "after close-ok ({confirmed_before_close} confirm frames before it): {after:?}"
    );
    // The reopened channel is not in confirm mode: a publish gets nothing back, and the
    // next reply is the delete's.
    client.send_raw(&burst(&[queue.as_str()], true)).await;
    assert_eq!(delete(&mut client, &queue).await, BURST as u32 + 1);
}
