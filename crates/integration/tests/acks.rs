//! ack / nack / reject / recover, requeue order, and what a closing channel gives back.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;

async fn queue_with(ch: &lapin::Channel, bodies: &[&[u8]]) -> String {
    let q = exclusive_queue(ch).await;
    for body in bodies {
        ch.basic_publish("", &q, Default::default(), body, BasicProperties::default())
            .await
            .unwrap();
    }
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_requeue_puts_message_back_at_the_head_redelivered() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = queue_with(&ch, &[b"1", b"2", b"3"]).await;
    let first = ch.basic_get(&q, Default::default()).await.unwrap().unwrap();
    let second = ch.basic_get(&q, Default::default()).await.unwrap().unwrap();
    assert_eq!(
        (first.delivery.delivery_tag, second.delivery.delivery_tag),
        (1, 2)
    );
    // Requeue the second, then the first: they return in queue order, ahead of "3".
    ch.basic_nack(
        2,
        BasicNackOptions {
            requeue: true,
            multiple: false,
        },
    )
    .await
    .unwrap();
    ch.basic_reject(1, BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let got = within(ch.basic_get(&q, BasicGetOptions { no_ack: true }))
            .await
            .unwrap()
            .unwrap();
        order.push((got.delivery.data.clone(), got.delivery.redelivered));
    }
    assert_eq!(
        order,
        vec![
            (b"1".to_vec(), true),
            (b"2".to_vec(), true),
            (b"3".to_vec(), false)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_without_requeue_drops() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = queue_with(&ch, &[b"x"]).await;
    let got = ch.basic_get(&q, Default::default()).await.unwrap().unwrap();
    ch.basic_reject(
        got.delivery.delivery_tag,
        BasicRejectOptions { requeue: false },
    )
    .await
    .unwrap();
    assert!(ch
        .basic_get(&q, Default::default())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_multiple_settles_everything_up_to_the_tag() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = queue_with(&ch, &[b"1", b"2", b"3", b"4"]).await;
    for _ in 0..4 {
        ch.basic_get(&q, Default::default()).await.unwrap().unwrap();
    }
    ch.basic_ack(3, BasicAckOptions { multiple: true })
        .await
        .unwrap();
    ch.basic_nack(
        0,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
    .unwrap();
    let got = within(ch.basic_get(&q, BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.delivery.data.as_slice(), got.delivery.redelivered),
        (&b"4"[..], true)
    );
    assert!(ch
        .basic_get(&q, Default::default())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_delivery_tag_is_406() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let closed = channel_error(&ch);
    ch.basic_ack(42, Default::default()).await.unwrap();
    assert_eq!(
        closed_with(closed).await,
        (406, "PRECONDITION_FAILED - unknown delivery tag 42".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ack_is_406() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = queue_with(&ch, &[b"x"]).await;
    let got = ch.basic_get(&q, Default::default()).await.unwrap().unwrap();
    let closed = channel_error(&ch);
    ch.basic_ack(got.delivery.delivery_tag, Default::default())
        .await
        .unwrap();
    ch.basic_ack(got.delivery.delivery_tag, Default::default())
        .await
        .unwrap();
    assert_eq!(
        closed_with(closed).await,
        (406, "PRECONDITION_FAILED - unknown delivery tag 1".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_requeues_its_unacked_in_order() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let q = unique("q");
    ch.queue_declare(&q, Default::default(), FieldTable::default())
        .await
        .unwrap();
    let consumer_ch = conn.create_channel().await.unwrap();
    let mut consumer = consumer_ch
        .basic_consume(&q, "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    for i in 0..5u8 {
        ch.basic_publish("", &q, Default::default(), &[i], BasicProperties::default())
            .await
            .unwrap();
    }
    for i in 0..5u8 {
        assert_eq!(next_delivery(&mut consumer).await.data, vec![i]);
    }
    consumer_ch.close(200, "done").await.unwrap();
    let mut order = Vec::new();
    for _ in 0..5 {
        let got = within(ch.basic_get(&q, BasicGetOptions { no_ack: true }))
            .await
            .unwrap()
            .unwrap();
        assert!(got.delivery.redelivered);
        order.push(got.delivery.data[0]);
    }
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
    ch.queue_delete(&q, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_requeues_its_unacked() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = unique("q");
    ch.queue_declare(&q, Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.basic_publish(
        "",
        &q,
        Default::default(),
        b"keep",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let (other, other_ch) = lapin_channel(&broker).await;
    other_ch
        .basic_get(&q, Default::default())
        .await
        .unwrap()
        .unwrap();
    other.close(200, "bye").await.unwrap();
    let got = within(async {
        loop {
            if let Some(got) = ch
                .basic_get(&q, BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(got.delivery.data, b"keep");
    assert!(got.delivery.redelivered);
    ch.queue_delete(&q, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_requeues_everything_unacked() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = queue_with(&ch, &[b"a", b"b"]).await;
    ch.basic_get(&q, Default::default()).await.unwrap().unwrap();
    ch.basic_get(&q, Default::default()).await.unwrap().unwrap();
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    let got = within(ch.basic_get(&q, BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.delivery.data.as_slice(), got.delivery.redelivered),
        (&b"a"[..], true)
    );
    // Acking a tag handed out before the recover is now an unknown tag.
    let closed = channel_error(&ch);
    ch.basic_ack(1, Default::default()).await.unwrap();
    assert_eq!(closed_with(closed).await.0, 406);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_without_requeue_is_not_implemented() {
    let broker = start_broker().await;
    let mut client = wharf_integration::raw::RawClient::open_with_channel(broker.addr).await;
    client
        .send_method(1, wharf_amqp::BasicRecover { requeue: false })
        .await;
    let (code, text) = client.expect_connection_close().await;
    assert_eq!(
        (code, text.as_str()),
        (540, "NOT_IMPLEMENTED - requeue=false")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_size_is_not_implemented() {
    let broker = start_broker().await;
    let mut client = wharf_integration::raw::RawClient::open_with_channel(broker.addr).await;
    client
        .send_method(
            1,
            wharf_amqp::BasicQos {
                prefetch_size: 1000,
                prefetch_count: 0,
                global: false,
            },
        )
        .await;
    let (code, text) = client.expect_connection_close().await;
    assert_eq!(
        (code, text.as_str()),
        (540, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)")
    );
}

/// A raw client with channel 1 open, and `queue` declared holding `bodies`.
async fn raw_queue_with(
    broker: &TestBroker,
    queue: &str,
    bodies: &[&[u8]],
) -> wharf_integration::raw::RawClient {
    let mut client = wharf_integration::raw::RawClient::open_with_channel(broker.addr).await;
    client
        .send_method(
            1,
            wharf_amqp::QueueDeclare {
                queue: queue.into(),
                ..Default::default()
            },
        )
        .await;
    client.read_method().await;
    for body in bodies {
        client.publish(1, "", queue, body).await;
    }
    client
}

/// basic.get with manual ack on channel 1: the delivery tag and body, or None if empty.
async fn raw_get(
    client: &mut wharf_integration::raw::RawClient,
    queue: &str,
) -> Option<(u64, Vec<u8>)> {
    use wharf_amqp::{BasicGet, FramePayload, Method};
    client
        .send_method(
            1,
            BasicGet {
                queue: queue.into(),
                no_ack: false,
            },
        )
        .await;
    let tag = match client.read_method().await {
        Method::BasicGetOk(ok) => ok.delivery_tag,
        Method::BasicGetEmpty(_) => return None,
        other => panic!("expected get-ok or get-empty, got {other:?}"),
    };
    loop {
        if let Some(FramePayload::Body(body)) = client.read_frame().await.map(|f| f.payload) {
            return Some((tag, body.to_vec()));
        }
    }
}

fn encoded(methods: &[wharf_amqp::Method]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    for m in methods {
        wharf_amqp::frame::encode_method(1, m, &mut out);
    }
    out.to_vec()
}

fn ack(tag: u64) -> wharf_amqp::Method {
    wharf_amqp::Method::BasicAck(wharf_amqp::BasicAck {
        delivery_tag: tag,
        multiple: false,
    })
}

/// Acks that arrive together are applied together; whatever follows them in the same
/// read (a recover, a channel close) sees them applied, and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_sent_together_with_a_recover_or_a_close_are_all_applied() {
    use wharf_amqp::{BasicRecover, ChannelClose, Method};
    let broker = start_broker().await;
    let queue = unique("acks-batched");
    let mut client = raw_queue_with(&broker, &queue, &[b"1", b"2", b"3", b"4", b"5"]).await;
    let mut tags = Vec::new();
    for expected in [b"1", b"2", b"3", b"4", b"5"] {
        let (tag, body) = raw_get(&mut client, &queue).await.unwrap();
        assert_eq!(body, expected.to_vec());
        tags.push(tag);
    }
    // Ack 1 and 3, and recover, in one write: 2, 4 and 5 come back, in order.
    client
        .send_raw(&encoded(&[
            ack(tags[0]),
            ack(tags[2]),
            Method::BasicRecover(BasicRecover { requeue: true }),
        ]))
        .await;
    assert!(matches!(
        client.read_method().await,
        Method::BasicRecoverOk(_)
    ));
    let mut again = Vec::new();
    while let Some((tag, body)) = raw_get(&mut client, &queue).await {
        again.push((tag, body));
    }
    let bodies: Vec<&[u8]> = again.iter().map(|(_, b)| b.as_slice()).collect();
    assert_eq!(bodies, vec![b"2".as_slice(), b"4", b"5"]);
    // Ack 2 and 5, and close the channel, in one write: only 4 is left in the queue.
    client
        .send_raw(&encoded(&[
            ack(again[0].0),
            ack(again[2].0),
            Method::ChannelClose(ChannelClose {
                reply_code: 200,
                ..Default::default()
            }),
        ]))
        .await;
    assert!(matches!(
        client.read_method().await,
        Method::ChannelCloseOk(_)
    ));
    client.send_method(1, wharf_amqp::ChannelOpen {}).await;
    client.read_method().await;
    if let Some(broker) = &broker.broker {
        let q = broker.vhost("/").unwrap().queue(&queue).unwrap();
        assert_eq!(
            q.unacked_count(),
            0,
            "the acked ones are settled, not left hanging"
        );
    }
    let (_, body) = raw_get(&mut client, &queue).await.unwrap();
    assert_eq!(body, b"4");
    assert_eq!(raw_get(&mut client, &queue).await, None);
}

/// An unknown tag closes the channel; the good acks sent just before it still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_before_an_unknown_tag_in_the_same_write_are_applied() {
    let broker = start_broker().await;
    let queue = unique("acks-then-bad");
    let mut client = raw_queue_with(&broker, &queue, &[b"1", b"2"]).await;
    let (first, _) = raw_get(&mut client, &queue).await.unwrap();
    raw_get(&mut client, &queue).await.unwrap();
    client.send_raw(&encoded(&[ack(first), ack(999)])).await;
    let (code, _) = client.expect_channel_close(1).await;
    assert_eq!(code, 406);
    if let Some(broker) = &broker.broker {
        let q = broker.vhost("/").unwrap().queue(&queue).unwrap();
        assert_eq!(q.unacked_count(), 0, "1 was settled, 2 requeued");
    }
    client.send_method(1, wharf_amqp::ChannelOpen {}).await;
    client.read_method().await;
    let (_, body) = raw_get(&mut client, &queue).await.unwrap();
    assert_eq!(body, b"2", "1 was acked before the bad tag; 2 came back");
    assert_eq!(raw_get(&mut client, &queue).await, None);
}
