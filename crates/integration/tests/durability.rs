//! Durable exchanges, queues and bindings survive a restart; transient and exclusive ones
//! do not. (Persistent messages are not stored yet: issue 3 continues.)

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use wharf_core::broker::BrokerConfig;
use wharf_integration::{start_broker_in, start_broker_in_with};

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn passive_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

fn passive_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_definitions_survive_a_restart_and_transient_ones_do_not() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // restarts an in-process broker
    }
    let dir = TempDir::new("wharf-durability");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(100));
    {
        let broker = start_broker_in(&dir.0).await;
        let (conn, ch) = lapin_channel(&broker).await;
        ch.exchange_declare(
            "d.topic",
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_declare(
            "d.fan",
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_declare(
            "t.direct",
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare("d.q", durable_queue(), args.clone())
            .await
            .unwrap();
        ch.queue_declare("d.gone", durable_queue(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_declare("t.q", Default::default(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_declare(
            "x.q",
            QueueDeclareOptions {
                durable: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "d.q",
            "d.topic",
            "a.#",
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "d.q",
            "d.topic",
            "gone.*",
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_unbind("d.q", "d.topic", "gone.*", FieldTable::default())
            .await
            .unwrap();
        ch.exchange_bind(
            "d.topic",
            "d.fan",
            "",
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        // A durable queue bound to a transient exchange: the binding is not durable.
        ch.queue_bind(
            "d.q",
            "t.direct",
            "k",
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_delete("d.gone", Default::default()).await.unwrap();
        conn.close(200, "restart").await.unwrap();
        broker.stop().await;
    }
    let broker = start_broker_in(&dir.0).await;
    let (conn, ch) = lapin_channel(&broker).await;
    ch.exchange_declare(
        "d.topic",
        ExchangeKind::Topic,
        passive_exchange(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "d.fan",
        ExchangeKind::Fanout,
        passive_exchange(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = ch
        .queue_declare("d.q", passive_queue(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    // Arguments came back: redeclaring with different ones is refused.
    ch.queue_declare("d.q", durable_queue(), args.clone())
        .await
        .unwrap();

    // Bindings came back: fanout -> topic "a.#" -> d.q routes; the unbound key does not.
    for key in ["a.b", "gone.x"] {
        ch.basic_publish(
            "d.fan",
            key,
            Default::default(),
            key.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let got = within(async {
        loop {
            if let Some(m) = ch
                .basic_get("d.q", BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(got.delivery.data, b"a.b");
    assert!(ch
        .basic_get("d.q", BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_none());

    for (name, is_exchange) in [
        ("t.direct", true),
        ("t.q", false),
        ("x.q", false),
        ("d.gone", false),
    ] {
        let ch = conn.create_channel().await.unwrap();
        let err = if is_exchange {
            ch.exchange_declare(
                name,
                ExchangeKind::Direct,
                passive_exchange(),
                FieldTable::default(),
            )
            .await
            .unwrap_err()
        } else {
            ch.queue_declare(name, passive_queue(), FieldTable::default())
                .await
                .unwrap_err()
        };
        assert_eq!(protocol_error(&err).0, 404, "{name} should be gone");
    }
    conn.close(200, "done").await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_messages_survive_a_restart_acked_ones_do_not() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // restarts an in-process broker
    }
    let dir = TempDir::new("wharf-durability");
    let persistent = BasicProperties::default().with_delivery_mode(2);
    {
        let broker = start_broker_in(&dir.0).await;
        let (conn, ch) = lapin_channel(&broker).await;
        ch.queue_declare("pq", durable_queue(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_declare("tq", Default::default(), FieldTable::default())
            .await
            .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for i in 0..10u8 {
            ch.basic_publish("", "pq", Default::default(), &[i], persistent.clone())
                .await
                .unwrap();
            // Transient messages in a durable queue, and persistent ones in a transient queue.
            ch.basic_publish(
                "",
                "pq",
                Default::default(),
                &[100 + i],
                BasicProperties::default(),
            )
            .await
            .unwrap();
            ch.basic_publish("", "tq", Default::default(), &[i], persistent.clone())
                .await
                .unwrap();
        }
        ch.wait_for_confirms().await.unwrap();
        // Take three and ack them; take two more and leave them unacked.
        let mut acked = Vec::new();
        for _ in 0..3 {
            let got = ch
                .basic_get("pq", Default::default())
                .await
                .unwrap()
                .unwrap();
            acked.push(got.delivery.data.clone());
            got.delivery.ack(Default::default()).await.unwrap();
        }
        assert_eq!(acked, vec![vec![0], vec![100], vec![1]]);
        for _ in 0..2 {
            ch.basic_get("pq", Default::default())
                .await
                .unwrap()
                .unwrap();
        }
        conn.close(200, "restart").await.unwrap();
        broker.stop().await;
    }
    let broker = start_broker_in(&dir.0).await;
    let (conn, ch) = lapin_channel(&broker).await;
    let q = ch
        .queue_declare("pq", passive_queue(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!(
        q.message_count(),
        8,
        "persistent 2..=9 survive; transient ones and acked ones do not"
    );
    let mut back = Vec::new();
    while let Some(got) = ch.basic_get("pq", Default::default()).await.unwrap() {
        assert!(
            got.delivery.redelivered,
            "recovered messages are marked redelivered"
        );
        assert_eq!(got.delivery.properties.delivery_mode(), &Some(2));
        back.push(got.delivery.data[0]);
        got.delivery.ack(Default::default()).await.unwrap();
    }
    assert_eq!(back, (2..10).collect::<Vec<u8>>());
    let err = ch
        .queue_declare("tq", passive_queue(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(protocol_error(&err).0, 404);
    conn.close(200, "done").await.unwrap();
    broker.stop().await;

    // Everything acknowledged: nothing comes back, and the segments are gone but the newest.
    let broker = start_broker_in(&dir.0).await;
    let (_conn, ch) = lapin_channel(&broker).await;
    let q = ch
        .queue_declare("pq", passive_queue(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    let queue_dirs: Vec<_> = std::fs::read_dir(dir.0.join("queues")).unwrap().collect();
    assert_eq!(queue_dirs.len(), 1, "only pq has a log");
    let files = std::fs::read_dir(queue_dirs[0].as_ref().unwrap().path())
        .unwrap()
        .count();
    assert!(files <= 2, "{files} files left in the log");
}

/// Acks are gathered before they are written (one write per batch): those of messages
/// taken with no_ack, one at a time, must still be on disk after a clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_taken_with_no_ack_stay_gone_after_a_clean_restart() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // restarts an in-process broker
    }
    let dir = TempDir::new("noack-restart");
    {
        let broker = start_broker_in(&dir.0).await;
        publish_persistent(&broker, "nq", 10).await;
        let (conn, ch) = lapin_channel(&broker).await;
        for expected in 0..3u8 {
            let got = ch
                .basic_get("nq", BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.delivery.data[0], expected);
        }
        conn.close(200, "restart").await.unwrap();
        broker.stop().await;
    }
    let broker = start_broker_in(&dir.0).await;
    assert_eq!(bodies_in(&broker, "nq").await, (3..10).collect::<Vec<u8>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_durable_queue_removes_its_messages() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return;
    }
    let dir = TempDir::new("wharf-durability");
    let broker = start_broker_in(&dir.0).await;
    let (_conn, ch) = lapin_channel(&broker).await;
    ch.queue_declare("dq", durable_queue(), FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        "",
        "dq",
        Default::default(),
        b"x",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    assert_eq!(std::fs::read_dir(dir.0.join("queues")).unwrap().count(), 1);
    ch.queue_delete("dq", Default::default()).await.unwrap();
    assert_eq!(std::fs::read_dir(dir.0.join("queues")).unwrap().count(), 0);
    // Declaring it again starts empty.
    let q = ch
        .queue_declare("dq", durable_queue(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
}

/// The segment files of the only queue log under `data_dir`.
fn segments(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let queue_dir = std::fs::read_dir(data_dir.join("queues"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut segs: Vec<_> = std::fs::read_dir(queue_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

async fn publish_persistent(broker: &TestBroker, queue: &str, count: u8) {
    let (conn, ch) = lapin_channel(broker).await;
    ch.queue_declare(queue, durable_queue(), FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    for i in 0..count {
        ch.basic_publish(
            "",
            queue,
            Default::default(),
            &[i; 100],
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
    conn.close(200, "done").await.unwrap();
}

async fn bodies_in(broker: &TestBroker, queue: &str) -> Vec<u8> {
    let (_conn, ch) = lapin_channel(broker).await;
    let mut out = Vec::new();
    while let Some(got) = ch
        .basic_get(queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(got.delivery.data[0]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_segment_tail_is_cut_and_the_rest_served() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return;
    }
    let dir = TempDir::new("wharf-durability");
    let broker = start_broker_in(&dir.0).await;
    publish_persistent(&broker, "torn", 10).await;
    broker.stop().await;
    // A crash in the middle of writing the last record: its last 30 bytes never arrived.
    let seg = segments(&dir.0).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 30)
        .unwrap();
    let broker = start_broker_in(&dir.0).await;
    assert_eq!(
        bodies_in(&broker, "torn").await,
        (0..9).collect::<Vec<u8>>()
    );
    // And the broker keeps working on the repaired log.
    publish_persistent(&broker, "torn", 3).await;
    assert_eq!(bodies_in(&broker, "torn").await, vec![0, 1, 2]);
}

/// Issue 13, item 5: damage in the middle of the newest segment loses the records it hit,
/// not the confirmed ones after it, and the depth says what can be delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_loses_only_its_own_message() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return;
    }
    let dir = TempDir::new("wharf-durability");
    let broker = start_broker_in(&dir.0).await;
    publish_persistent(&broker, "flipped", 10).await;
    broker.stop().await;
    // Flip a byte near the end of the 6th record (16-byte segment header, then records
    // of equal size here).
    let seg = segments(&dir.0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let record = (bytes.len() - 16) / 10;
    let at = 16 + record * 6 - 3;
    bytes[at] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let broker = start_broker_in(&dir.0).await;
    let (_conn, ch) = lapin_channel(&broker).await;
    assert_eq!(message_count(&ch, "flipped").await, 9);
    assert_eq!(
        bodies_in(&broker, "flipped").await,
        vec![0, 1, 2, 3, 4, 6, 7, 8, 9]
    );
}

/// Issue 13, items 5 and 6: a queue with damage in one sealed segment and another
/// segment that is not readable at all serves every other message; the unreadable
/// segment is kept on disk beside the queue's log, and the queue takes new messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_and_unreadable_segments_cost_only_their_own_messages() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return;
    }
    let dir = TempDir::new("wharf-durability");
    let config = BrokerConfig {
        segment_bytes_max: 4096,
        ..BrokerConfig::default()
    };
    let broker = start_broker_in_with(&dir.0, config.clone()).await;
    publish_persistent(&broker, "patchy", 200).await;
    broker.stop().await;
    let segs = segments(&dir.0);
    assert!(segs.len() >= 5, "{segs:?}");
    let record_bytes = record_bytes(&segs[0]);
    let count_in = |seg: &std::path::Path| {
        (std::fs::metadata(seg).unwrap().len() as usize - 16) / record_bytes
    };
    // The second segment's header is damaged; the third has 40 bytes of noise in it.
    let lost_whole = count_in(&segs[1]);
    let mut header_damaged = std::fs::read(&segs[1]).unwrap();
    header_damaged[2] ^= 0x20;
    std::fs::write(&segs[1], &header_damaged).unwrap();
    let mut noisy = std::fs::read(&segs[2]).unwrap();
    for b in &mut noisy[300..340] {
        *b ^= 0x5a;
    }
    std::fs::write(&segs[2], &noisy).unwrap();

    let broker = start_broker_in_with(&dir.0, config).await;
    let bodies = bodies_in(&broker, "patchy").await;
    // The third segment's damage takes one or two records (the noise may span two).
    let lost = 200 - bodies.len();
    assert!(
        (lost_whole + 1..=lost_whole + 2).contains(&lost),
        "lost {lost}, the unreadable segment held {lost_whole}"
    );
    assert!(
        bodies.windows(2).all(|w| w[0] < w[1]),
        "in order: {bodies:?}"
    );
    assert_eq!(bodies.last(), Some(&199));
    let mut kept = segs[1].clone().into_os_string();
    kept.push(".damaged");
    assert_eq!(
        std::fs::read(kept).unwrap(),
        header_damaged,
        "kept as it was"
    );
    // The queue is online: persistent messages are confirmed and delivered.
    publish_persistent(&broker, "patchy", 2).await;
    assert_eq!(bodies_in(&broker, "patchy").await, vec![0, 1]);
}

/// The size of one record in a segment written by `publish_persistent` (equal sizes):
/// the distance between the bodies of its first two messages, 100 zeros and 100 ones.
fn record_bytes(seg: &std::path::Path) -> usize {
    let bytes = std::fs::read(seg).unwrap();
    let body_of = |n: u8| {
        bytes
            .windows(100)
            .position(|w| w.iter().all(|b| *b == n))
            .unwrap()
    };
    body_of(1) - body_of(0)
}

/// Issue 13, item 6: a file in a queue's log that is not a segment (or whose header is
/// damaged) is set aside with its bytes, and the queue stays online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_that_is_not_wharfs_is_set_aside_and_the_queue_stays_online() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return;
    }
    let dir = TempDir::new("wharf-durability");
    let broker = start_broker_in(&dir.0).await;
    publish_persistent(&broker, "foreign", 2).await;
    broker.stop().await;
    let seg = segments(&dir.0).pop().unwrap();
    std::fs::write(&seg, b"this is not a segment at all").unwrap();
    let broker = start_broker_in(&dir.0).await;
    let (_conn, ch) = lapin_channel(&broker).await;
    let q = ch
        .queue_declare("foreign", passive_queue(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    let mut kept = seg.clone().into_os_string();
    kept.push(".damaged");
    assert_eq!(
        std::fs::read(kept).unwrap(),
        b"this is not a segment at all"
    );
    publish_persistent(&broker, "foreign", 2).await;
    assert_eq!(bodies_in(&broker, "foreign").await, vec![0, 1]);
}

/// A queue directory that no definition names (definitions restored from an older copy, a
/// crash in the middle of a delete) is moved aside with its messages, not deleted, and a
/// new queue of any name starts empty beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_directories_no_definition_names_are_set_aside_not_deleted() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return;
    }
    let dir = TempDir::new("wharf-orphaned");
    let broker = start_broker_in(&dir.0).await;
    publish_persistent(&broker, "kept", 3).await;
    broker.stop().await;
    let queues = dir.0.join("queues");
    let stray = queues.join("not-a-queue-anyone-declared");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("00000000000000000000.seg"), b"stray bytes").unwrap();
    let empty = queues.join("an-empty-leftover");
    std::fs::create_dir_all(&empty).unwrap();

    let broker = start_broker_in(&dir.0).await;
    assert!(!stray.exists());
    assert!(!empty.exists(), "an empty leftover directory is removed");
    let moved = dir.0.join("orphaned/queues/not-a-queue-anyone-declared");
    assert_eq!(
        std::fs::read(moved.join("00000000000000000000.seg")).unwrap(),
        b"stray bytes"
    );
    // The named queue is untouched.
    assert_eq!(bodies_in(&broker, "kept").await, vec![0, 1, 2]);
}
