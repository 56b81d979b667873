//! Sender-selected distribution, as RabbitMQ does it: the `CC` and `BCC` headers (arrays
//! of strings) add routing keys to a publish; consumers see `CC` but never `BCC`; a
//! dead-lettered message is routed by its routing key and its `CC` keys again.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn keys(keys: &[&str]) -> AMQPValue {
    let items: Vec<AMQPValue> = keys.iter().map(|k| text(k)).collect();
    AMQPValue::FieldArray(FieldArray::from(items))
}

async fn publish(ch: &Channel, exchange: &str, key: &str, headers: FieldTable) {
    let confirm = ch
        .basic_publish(
            exchange,
            key,
            Default::default(),
            b"m",
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap();
    assert!(within(confirm).await.unwrap().is_ack());
}

async fn get(ch: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    ch.basic_get(queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
}

fn header<'a>(message: &'a lapin::message::BasicGetMessage, name: &str) -> Option<&'a AMQPValue> {
    message
        .delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_and_bcc_add_routing_keys_and_bcc_is_never_seen() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let to = exclusive_queue(&ch).await;
    let cc = exclusive_queue(&ch).await;
    let bcc = exclusive_queue(&ch).await;
    let headers = table(&[("CC", keys(&[&cc])), ("BCC", keys(&[&bcc])), ("h", int(1))]);
    publish(&ch, "", &to, headers).await;
    for queue in [&to, &cc, &bcc] {
        let got = get(&ch, queue).await.expect("each queue got it");
        assert_eq!(got.delivery.routing_key.as_str(), to, "the publish key");
        assert_eq!(header(&got, "CC"), Some(&keys(&[&cc])));
        assert_eq!(header(&got, "BCC"), None, "BCC is taken off");
        assert_eq!(header(&got, "h"), Some(&AMQPValue::LongLongInt(1)));
    }

    // Through a direct exchange: a CC key matches where the routing key does not.
    ch.queue_bind(
        &cc,
        "amq.direct",
        "k1",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(
        &ch,
        "amq.direct",
        "no-match",
        table(&[("CC", keys(&["k1"]))]),
    )
    .await;
    assert!(get(&ch, &cc).await.is_some());
    // Elements that are not strings are ignored.
    publish(
        &ch,
        "",
        &to,
        table(&[("CC", AMQPValue::FieldArray(FieldArray::from(vec![int(1)])))]),
    )
    .await;
    assert!(get(&ch, &to).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cc_that_is_not_an_array_is_refused() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let queue = exclusive_queue(&ch).await;
    let closed = channel_error(&ch);
    let _ = ch
        .basic_publish(
            "",
            &queue,
            Default::default(),
            b"m",
            BasicProperties::default().with_headers(table(&[("CC", text("x"))])),
        )
        .await;
    assert_eq!(
        closed_with(closed).await,
        (
            406,
            "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"CC\",longstr}"
                .to_string()
        )
    );
}

/// Dead-lettering without a dead-letter routing key routes by the message's keys: its
/// routing key and its CC keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_routed_by_its_cc_keys_too() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let dlx = unique("dlx-cc");
    ch.exchange_declare(
        &dlx,
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let source = exclusive_queue_with(&ch, table(&[("x-dead-letter-exchange", text(&dlx))])).await;
    let by_key = exclusive_queue(&ch).await;
    let by_cc = exclusive_queue(&ch).await;
    for (queue, key) in [(&by_key, source.as_str()), (&by_cc, "cc-key")] {
        ch.queue_bind(queue, &dlx, key, Default::default(), FieldTable::default())
            .await
            .unwrap();
    }
    publish(&ch, "", &source, table(&[("CC", keys(&["cc-key"]))])).await;
    let got = ch
        .basic_get(&source, BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    got.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    assert!(count_becomes(&ch, &by_key, 1).await);
    assert!(count_becomes(&ch, &by_cc, 1).await);
}
