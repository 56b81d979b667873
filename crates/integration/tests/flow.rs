//! basic.qos (per consumer and global), publisher confirms, and transactions.

mod common;

use common::*;
use lapin::options::*;
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::BasicProperties;

async fn publish_n(ch: &lapin::Channel, q: &str, n: u8) {
    for i in 0..n {
        ch.basic_publish("", q, Default::default(), &[i], BasicProperties::default())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_limits_unacked_deliveries_per_consumer() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = exclusive_queue(&ch).await;
    publish_n(&ch, &q, 10).await;
    ch.basic_qos(3, BasicQosOptions { global: false })
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(&q, "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let mut held = Vec::new();
    for i in 0..3u8 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, vec![i]);
        held.push(d);
    }
    no_delivery(&mut consumer).await;
    held.remove(0).ack(Default::default()).await.unwrap();
    assert_eq!(next_delivery(&mut consumer).await.data, vec![3]);
    no_delivery(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_prefetch_is_shared_by_the_channel_consumers() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let (q1, q2) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    publish_n(&ch, &q1, 5).await;
    publish_n(&ch, &q2, 5).await;
    ch.basic_qos(4, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut a = ch
        .basic_consume(&q1, "a", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let mut b = ch
        .basic_consume(&q2, "b", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let mut total = 0;
    let drain = async {
        loop {
            tokio::select! {
                Some(_) = futures_lite::StreamExt::next(&mut a) => total += 1,
                Some(_) = futures_lite::StreamExt::next(&mut b) => total += 1,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), drain).await;
    assert_eq!(total, 4, "the channel-wide limit is 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_consumers_ignore_prefetch() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = exclusive_queue(&ch).await;
    ch.basic_qos(1, Default::default()).await.unwrap();
    publish_n(&ch, &q, 5).await;
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
    for i in 0..5u8 {
        assert_eq!(next_delivery(&mut consumer).await.data, vec![i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_ack_every_publish() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = exclusive_queue(&ch).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..50u8 {
        pending.push(
            ch.basic_publish("", &q, Default::default(), &[i], BasicProperties::default())
                .await
                .unwrap(),
        );
    }
    // Unroutable (not mandatory) messages are confirmed too.
    pending.push(
        ch.basic_publish(
            "",
            &unique("none"),
            Default::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap(),
    );
    for confirm in pending {
        assert!(matches!(
            within(confirm).await.unwrap(),
            Confirmation::Ack(None)
        ));
    }
    assert_eq!(message_count(&ch, &q).await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_on_a_transactional_channel_is_406() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.tx_select().await.unwrap();
    let err = ch.confirm_select(Default::default()).await.unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from tx to confirm mode".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_select_on_a_confirm_channel_is_406() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let err = ch.tx_select().await.unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from confirm to tx mode".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_publishes_and_rollback_discards() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = exclusive_queue(&ch).await;
    ch.tx_select().await.unwrap();
    publish_n(&ch, &q, 2).await;
    let peek = |ch: lapin::Channel, q: String| async move {
        ch.queue_declare(
            &q,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
    };
    assert_eq!(
        peek(ch.clone(), q.clone()).await,
        0,
        "nothing before commit"
    );
    ch.tx_commit().await.unwrap();
    assert_eq!(peek(ch.clone(), q.clone()).await, 2);
    publish_n(&ch, &q, 3).await;
    ch.tx_rollback().await.unwrap();
    ch.tx_commit().await.unwrap();
    assert_eq!(
        peek(ch.clone(), q.clone()).await,
        2,
        "rolled-back publishes are gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_acks_apply_on_commit_only() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = exclusive_queue(&ch).await;
    publish_n(&ch, &q, 1).await;
    ch.tx_select().await.unwrap();
    let got = ch.basic_get(&q, Default::default()).await.unwrap().unwrap();
    ch.basic_ack(got.delivery.delivery_tag, Default::default())
        .await
        .unwrap();
    ch.tx_rollback().await.unwrap();
    // After rollback the delivery is still unacked: acking it again is allowed.
    ch.basic_ack(got.delivery.delivery_tag, Default::default())
        .await
        .unwrap();
    ch.tx_commit().await.unwrap();
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    assert!(
        ch.basic_get(&q, Default::default())
            .await
            .unwrap()
            .is_none(),
        "acked for good"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_without_select_is_406() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let err = ch.tx_commit().await.unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            406,
            "PRECONDITION_FAILED - channel is not transactional".into()
        )
    );
}
