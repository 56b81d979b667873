//! Deep queues: beyond the in-memory window, messages wait in the queue's log and are read
//! back in order as the queue drains, for transient and durable queues alike, across
//! restarts and requeues.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use wharf_core::broker::BrokerConfig;
use wharf_core::queue::Window;

/// A small window, so that a few thousand messages make a deep queue.
const WINDOW_MESSAGES_MAX: usize = 200;
const DEEP: u32 = WINDOW_MESSAGES_MAX as u32 * 10 + 50;

async fn start_broker_in(dir: &std::path::Path) -> TestBroker {
    let config = BrokerConfig {
        queue_window: Window {
            messages_max: WINDOW_MESSAGES_MAX,
            bytes_max: 1 << 20,
        },
        ..Default::default()
    };
    wharf_integration::start_broker_in_with(dir, config).await
}

async fn publish_numbered(ch: &lapin::Channel, queue: &str, count: u32, persistent: bool) {
    let properties = if persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    ch.confirm_select(Default::default()).await.unwrap();
    for i in 0..count {
        let mut body = i.to_be_bytes().to_vec();
        body.resize(100, 7);
        ch.basic_publish("", queue, Default::default(), &body, properties.clone())
            .await
            .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
}

fn number(body: &[u8]) -> u32 {
    u32::from_be_bytes(body[..4].try_into().unwrap())
}

fn in_memory(broker: &TestBroker, queue: &str) -> usize {
    let broker = broker.broker.as_ref().expect("in-process broker");
    broker
        .vhost("/")
        .unwrap()
        .queue(queue)
        .unwrap()
        .in_memory_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_transient_queue_keeps_a_bounded_window_and_its_order() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return;
    }
    let dir = TempDir::new("wharf-deep");
    let broker = start_broker_in(&dir.0).await;
    let (_conn, ch) = lapin_channel(&broker).await;
    ch.queue_declare("deep.t", Default::default(), FieldTable::default())
        .await
        .unwrap();
    publish_numbered(&ch, "deep.t", DEEP, false).await;
    assert_eq!(message_count(&ch, "deep.t").await, DEEP);
    assert!(
        in_memory(&broker, "deep.t") <= WINDOW_MESSAGES_MAX,
        "window exceeded"
    );
    assert!(
        dir.0.join("transient").read_dir().unwrap().count() == 1,
        "spilled to disk"
    );

    // Consume everything with a prefetch, acking in batches: order is kept across refills.
    ch.basic_qos(500, Default::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume("deep.t", "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    for expected in 0..DEEP {
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(number(&delivery.data), expected);
        if expected % 100 == 99 {
            delivery
                .ack(BasicAckOptions { multiple: true })
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_durable_queue_survives_a_restart_in_order() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return;
    }
    let dir = TempDir::new("wharf-deep");
    {
        let broker = start_broker_in(&dir.0).await;
        let (conn, ch) = lapin_channel(&broker).await;
        ch.queue_declare(
            "deep.d",
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish_numbered(&ch, "deep.d", DEEP, true).await;
        // Some transient ones too, which do not survive.
        publish_numbered(&ch, "deep.d", 10, false).await;
        assert!(in_memory(&broker, "deep.d") <= WINDOW_MESSAGES_MAX);
        conn.close(200, "restart").await.unwrap();
        broker.stop().await;
    }
    let broker = start_broker_in(&dir.0).await;
    assert!(
        in_memory(&broker, "deep.d") <= WINDOW_MESSAGES_MAX,
        "recovery loads a window only"
    );
    let (_conn, ch) = lapin_channel(&broker).await;
    assert_eq!(
        message_count(&ch, "deep.d").await,
        DEEP,
        "the count is exact at once: the spilled transient messages are not in it"
    );
    let mut got = Vec::with_capacity(DEEP as usize);
    while let Some(m) = ch
        .basic_get("deep.d", BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        assert!(m.delivery.redelivered);
        got.push(number(&m.delivery.data));
    }
    assert_eq!(got, (0..DEEP).collect::<Vec<u32>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_messages_go_ahead_of_spilled_ones() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return;
    }
    let dir = TempDir::new("wharf-deep");
    let broker = start_broker_in(&dir.0).await;
    let (_conn, ch) = lapin_channel(&broker).await;
    ch.queue_declare("deep.r", Default::default(), FieldTable::default())
        .await
        .unwrap();
    publish_numbered(&ch, "deep.r", DEEP, false).await;
    // Take the first window and a bit more, unacked, then give them all back.
    let taken = WINDOW_MESSAGES_MAX as u32 + 100;
    for expected in 0..taken {
        let m = ch
            .basic_get("deep.r", Default::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(number(&m.delivery.data), expected);
    }
    ch.basic_nack(
        0,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
    .unwrap();
    for expected in 0..DEEP {
        let m = ch
            .basic_get("deep.r", BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(number(&m.delivery.data), expected);
        assert_eq!(m.delivery.redelivered, expected < taken);
    }
    assert!(ch
        .basic_get("deep.r", Default::default())
        .await
        .unwrap()
        .is_none());
    // Purge of a deep queue counts the spilled messages too.
    publish_numbered(&ch, "deep.r", DEEP, false).await;
    assert_eq!(
        ch.queue_purge("deep.r", Default::default()).await.unwrap(),
        DEEP
    );
    assert!(ch
        .basic_get("deep.r", Default::default())
        .await
        .unwrap()
        .is_none());
}
