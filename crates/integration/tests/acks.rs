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
