//! The disk and memory alarms: publishing connections are blocked (and told, if they
//! asked) while free space is under the limit or memory above the watermark, and resume
//! when the alarm ends; others carry on.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use lapin::types::FieldTable as LapinTable;
use wharf_amqp::*;
use wharf_integration::raw::RawClient;
use wharf_server::alarm::DiskAlarmConfig;
use wharf_server::ServerConfig;

/// A raw client that asks to be told of blocks (connection.blocked), with channel 1 open.
async fn publisher_told_of_blocks(broker: &TestBroker) -> RawClient {
    let mut capabilities = FieldTable::new();
    capabilities.insert("connection.blocked", FieldValue::Bool(true));
    let mut properties = FieldTable::new();
    properties.insert("capabilities", FieldValue::Table(capabilities));
    let mut publisher = RawClient::open_with(broker.addr, properties).await;
    publisher.send_method(1, ChannelOpen {}).await;
    assert!(matches!(
        publisher.read_method().await,
        Method::ChannelOpenOk(_)
    ));
    publisher
}

/// The scenario both alarms share: with the alarm on, a publisher told of blocks gets
/// `connection.blocked` with `reason` after its first message, its second waits unread while
/// others carry on; `release` ends the alarm, and the publisher is unblocked and its second
/// message arrives.
async fn blocks_publishers_until_released(
    config: ServerConfig,
    reason: &str,
    release: impl FnOnce(),
) {
    let broker = wharf_integration::start_broker_with(config).await;
    let queue = unique("alarm");
    let (_observer_conn, observer) = lapin_channel(&broker).await;
    observer
        .queue_declare(&queue, Default::default(), LapinTable::default())
        .await
        .unwrap();
    let mut publisher = publisher_told_of_blocks(&broker).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the monitor has run

    publisher.publish(1, "", &queue, b"first").await;
    assert_eq!(
        publisher.read_method().await,
        Method::ConnectionBlocked(ConnectionBlocked {
            reason: reason.into()
        })
    );
    publisher.publish(1, "", &queue, b"second").await;
    // The first publish went through; the second waits unread. Non-publishers carry on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        message_count(&observer, &queue).await,
        1,
        "the second waits"
    );

    release();
    assert_eq!(
        publisher.read_method().await,
        Method::ConnectionUnblocked(ConnectionUnblocked {})
    );
    assert!(count_becomes(&observer, &queue, 2).await);
    observer
        .queue_delete(&queue, Default::default())
        .await
        .unwrap();
}

/// A disk alarm with a limit no disk can meet, so it goes off at once; setting the
/// returned limit to 0 ends it.
fn low_disk() -> (ServerConfig, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let mut disk = DiskAlarmConfig::new(std::env::temp_dir(), u64::MAX);
    disk.check_interval = Duration::from_millis(20);
    let limit = disk.free_limit_bytes.clone();
    let config = ServerConfig {
        disk_alarm: Some(disk),
        ..Default::default()
    };
    (config, limit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_disk_blocks_publishers_until_space_returns() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // needs control of the broker's limit
    }
    let (config, limit) = low_disk();
    blocks_publishers_until_released(config, "low on disk", || limit.store(0, Ordering::Relaxed))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_above_the_watermark_blocks_publishers_until_it_falls() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // needs control of the broker's watermark
    }
    // A watermark any process is above: the alarm goes off at once.
    let mut memory = wharf_server::alarm::MemoryAlarmConfig::new(1);
    memory.check_interval = Duration::from_millis(20);
    let watermark = memory.high_watermark_bytes.clone();
    let config = ServerConfig {
        memory_alarm: Some(memory),
        ..Default::default()
    };
    blocks_publishers_until_released(config, "low on memory", || {
        watermark.store(u64::MAX, Ordering::Relaxed)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_progress_does_not_hold_off_the_block() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // needs control of the broker's limit
    }
    let (config, limit) = low_disk();
    let broker = wharf_integration::start_broker_with(config).await;
    let queue = unique("alarm-partial");
    let (_observer_conn, observer) = lapin_channel(&broker).await;
    observer
        .queue_declare(&queue, Default::default(), LapinTable::default())
        .await
        .unwrap();
    let mut publisher = publisher_told_of_blocks(&broker).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the monitor has run

    // Half a message: the method, a header announcing 6 bytes, 3 of them. A client that
    // kept one message open on some channel at all times must still be blocked.
    let mut out = bytes::BytesMut::new();
    let publish = Method::BasicPublish(BasicPublish {
        exchange: "".into(),
        routing_key: queue.as_str().into(),
        mandatory: false,
        immediate: false,
    });
    wharf_amqp::frame::encode_method(1, &publish, &mut out);
    let header = ContentHeader {
        class_id: 60,
        body_size: 6,
        properties: Default::default(),
    };
    wharf_amqp::frame::encode_content_header(1, &header, &mut out);
    wharf_amqp::frame::encode_body(1, b"abc", 131072, &mut out);
    publisher.send_raw(&out).await;
    assert_eq!(
        publisher.read_method().await,
        Method::ConnectionBlocked(ConnectionBlocked {
            reason: "low on disk".into()
        })
    );
    let mut rest = bytes::BytesMut::new();
    wharf_amqp::frame::encode_body(1, b"def", 131072, &mut rest);
    publisher.send_raw(&rest).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(message_count(&observer, &queue).await, 0, "the rest waits");

    limit.store(0, Ordering::Relaxed);
    assert_eq!(
        publisher.read_method().await,
        Method::ConnectionUnblocked(ConnectionUnblocked {})
    );
    assert!(count_becomes(&observer, &queue, 1).await);
}

/// What the monitors measure is the broker's, for every front end to read (the HTTP API
/// and metrics read it there): the alarms as they stand and the figures behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitors_readings_are_the_brokers() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // reads the in-process broker
    }
    let (mut config, limit) = low_disk();
    let mut memory = wharf_server::alarm::MemoryAlarmConfig::new(u64::MAX);
    memory.check_interval = Duration::from_millis(20);
    config.memory_alarm = Some(memory);
    let broker = wharf_integration::start_broker_with(config).await;
    let resources = broker.broker.as_ref().unwrap().resources.clone();
    let reading = within(async {
        loop {
            let reading = resources.read();
            if reading.disk_free_bytes.is_some() && reading.memory_used_bytes.is_some() {
                return reading;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(reading.disk_alarm, "{reading:?}");
    assert_eq!(reading.disk_free_limit_bytes, Some(u64::MAX));
    assert!(!reading.memory_alarm, "{reading:?}");
    assert_eq!(reading.memory_limit_bytes, Some(u64::MAX));
    assert!(reading.memory_used_bytes.unwrap() > 0);
    limit.store(0, Ordering::Relaxed);
    within(async {
        while resources.read().disk_alarm {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(resources.read().disk_free_limit_bytes, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_publisher_shows_as_blocked_in_the_management_api() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // needs control of the broker's limit
    }
    let (config, limit) = low_disk();
    let broker = wharf_integration::start_broker_with_management_and(config).await;
    let api = wharf_integration::management::Management::of(&broker);
    let mut publisher = publisher_told_of_blocks(&broker).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the monitor has run
    publisher.publish(1, "", "nowhere", b"first").await;
    assert!(matches!(
        publisher.read_method().await,
        Method::ConnectionBlocked(_)
    ));
    let states = |list: &serde_json::Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c["state"].as_str().unwrap().to_string())
            .collect()
    };
    let blocked = api
        .until("/api/connections", |l| states(l) == ["blocked"])
        .await;
    assert_eq!(states(&blocked), ["blocked"], "{blocked}");
    limit.store(0, Ordering::Relaxed);
    assert_eq!(
        publisher.read_method().await,
        Method::ConnectionUnblocked(ConnectionUnblocked {})
    );
    let running = api
        .until("/api/connections", |l| states(l) == ["running"])
        .await;
    assert_eq!(states(&running), ["running"], "{running}");
}
