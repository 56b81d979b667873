//! Limits: per vhost (max-connections, max-queues), per user (max-connections,
//! max-channels), the node's connection limit, consumers per channel, and sockets that
//! never finish their handshake (one by one or a crowd trickling bytes). Refusals are
//! RabbitMQ's; the vhost and user limits run against RabbitMQ too
//! (WHARF_TEST_EXTERNAL with WHARF_TEST_RABBITMQCTL).

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_server::ServerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_takes_at_most_its_connections_and_queues() {
    let broker = start_broker().await;
    let t = Tenant::new(&broker, ".*", ".*", ".*");
    broker.must(&[
        "set_vhost_limits",
        "-p",
        &t.vhost,
        r#"{"max-connections": 1, "max-queues": 1}"#,
    ]);
    let first = lapin_connect(&t.url()).await;
    let refused = try_lapin_connect(&t.url()).await.unwrap_err();
    assert_eq!(
        protocol_error(&refused),
        (
            530,
            format!(
                "NOT_ALLOWED - access to vhost '{}' refused for user '{}': connection limit (1) is reached",
                t.vhost, t.user
            )
        )
    );

    let ch = first.create_channel().await.unwrap();
    ch.queue_declare("one", QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    // Declaring it again is no new queue.
    ch.queue_declare("one", QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let closed = channel_error(&ch);
    let refused = ch
        .queue_declare("two", QueueDeclareOptions::default(), FieldTable::default())
        .await;
    assert!(refused.is_err());
    assert_eq!(
        closed_with(closed).await,
        (
            406,
            format!(
                "PRECONDITION_FAILED - cannot declare queue 'two': queue limit in vhost '{}' (1) is reached",
                t.vhost
            )
        )
    );

    // A negative limit is none.
    broker.must(&[
        "set_vhost_limits",
        "-p",
        &t.vhost,
        r#"{"max-connections": -1}"#,
    ]);
    let second = lapin_connect(&t.url()).await;
    let ch = second.create_channel().await.unwrap();
    ch.queue_declare("two", QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_takes_at_most_its_connections_and_channels() {
    let broker = start_broker().await;
    let t = Tenant::new(&broker, ".*", ".*", ".*");
    broker.must(&[
        "set_user_limits",
        &t.user,
        r#"{"max-connections": 2, "max-channels": 2}"#,
    ]);
    let first = lapin_connect(&t.url()).await;
    let second = lapin_connect(&t.url()).await;
    let refused = try_lapin_connect(&t.url()).await.unwrap_err();
    assert_eq!(
        protocol_error(&refused),
        (
            530,
            format!(
                "NOT_ALLOWED - connection refused for user '{}': user connection limit (2) is reached",
                t.user
            )
        )
    );
    // Channels count over both connections (kept: lapin closes a dropped channel).
    let _one = first.create_channel().await.unwrap();
    let _two = second.create_channel().await.unwrap();
    let closed = connection_error(&second);
    // (lapin's answer to the open itself varies; the connection's close says it all.)
    let _ = second.create_channel().await;
    let error = within(closed).await.unwrap();
    assert_eq!(
        protocol_error(&error),
        (
            530,
            format!(
                "NOT_ALLOWED - number of channels opened for user '{}' has reached the maximum allowed user limit of (2)",
                t.user
            )
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_limits_are_refused() {
    let broker = start_broker().await;
    if broker.is_external() {
        return; // rabbitmqctl's own wording
    }
    let t = Tenant::new(&broker, ".*", ".*", ".*");
    let refusals = [
        (
            vec!["set_vhost_limits", "-p", &t.vhost, r#"{"max-channels": 1}"#],
            "unknown limit 'max-channels'",
        ),
        (
            vec![
                "set_vhost_limits",
                "-p",
                &t.vhost,
                r#"{"max-queues": "many"}"#,
            ],
            "must be an integer",
        ),
        (
            vec!["set_vhost_limits", "-p", "nowhere", r#"{"max-queues": 1}"#],
            "Virtual host 'nowhere' does not exist",
        ),
        (
            vec!["set_user_limits", &t.user, "not json"],
            "limits are not JSON",
        ),
    ];
    for (args, reason) in refusals {
        let error = broker.admin(&args).unwrap_err();
        assert!(error.contains(reason), "{args:?}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_connection_limit_refuses_at_open_and_frees_on_close() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // RabbitMQ's connection_max is in its config file
    }
    let broker = wharf_integration::start_broker_with(ServerConfig {
        max_connections: Some(2),
        ..Default::default()
    })
    .await;
    let first = lapin_connect(&broker.url()).await;
    let _second = lapin_connect(&broker.url()).await;
    let refused = try_lapin_connect(&broker.url()).await.unwrap_err();
    assert_eq!(
        protocol_error(&refused),
        (
            530,
            "NOT_ALLOWED - connection refused: node connection limit (2) is reached".to_string()
        )
    );
    first.close(200, "bye").await.unwrap();
    let again = async {
        loop {
            if try_lapin_connect(&broker.url()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    within(again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_opened_at_once_do_not_slip_under_a_limit() {
    let broker = start_broker().await;
    let t = Tenant::new(&broker, ".*", ".*", ".*");
    broker.must(&["set_user_limits", &t.user, r#"{"max-connections": 1}"#]);
    let url = t.url();
    let attempts: Vec<_> = (0..12)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { try_lapin_connect(&url).await })
        })
        .collect();
    let mut open = Vec::new();
    for attempt in attempts {
        if let Ok(connection) = within(attempt).await.unwrap() {
            open.push(connection);
        }
    }
    assert_eq!(open.len(), 1, "one connection within max-connections 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_takes_at_most_its_consumers() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // consumer_max_per_channel is in RabbitMQ's config file (3.12+)
    }
    let broker = wharf_integration::start_broker_with(ServerConfig {
        consumer_max_per_channel: Some(2),
        ..Default::default()
    })
    .await;
    let (conn, ch) = lapin_channel(&broker).await;
    let queue = exclusive_queue(&ch).await;
    // Kept alive: lapin cancels a consumer whose stream is dropped.
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let consumer = ch
            .basic_consume(
                &queue,
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        consumers.push(consumer);
    }
    let closed = connection_error(&conn);
    // (lapin's answer to the consume itself varies; the connection's close says it all.)
    let _ = ch
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert_eq!(
        protocol_error(&within(closed).await.unwrap()),
        (
            530,
            "NOT_ALLOWED - reached maximum (2) of consumers per channel".to_string()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_trickle_bytes_are_closed_at_the_handshake_timeout() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // needs a short handshake timeout
    }
    let timeout = Duration::from_millis(1500);
    let broker = wharf_integration::start_broker_with(ServerConfig {
        handshake_timeout: timeout,
        ..Default::default()
    })
    .await;
    // A crowd of slow clients, each sending its protocol header a byte at a time, never
    // finishing the handshake. The broker's clock for a socket starts at accept, which
    // comes after the client began to connect: until that start plus the timeout the
    // socket must stay open.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let connecting = std::time::Instant::now();
        let mut socket = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
        socket.write_all(b"A").await.unwrap();
        slow.push((socket, connecting + timeout));
    }
    for byte in b"MQP" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (socket, _) in &mut slow {
            let _ = socket.write_all(&[*byte]).await;
        }
    }
    // Not closed early: a socket whose earliest deadline is still ahead after it was
    // looked at must have been open when it was looked at.
    let mut checked = 0;
    for (socket, earliest_close) in &slow {
        let mut byte = [0u8; 1];
        let read = socket.try_read(&mut byte);
        if std::time::Instant::now() < *earliest_close {
            checked += 1;
            assert!(
                matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "a slow socket was closed before the handshake timeout: {read:?}"
            );
        }
    }
    assert!(
        checked > 0,
        "the machine stalled past the timeout; nothing was checked"
    );
    // Meanwhile others are served.
    let (_conn, ch) = lapin_channel(&broker).await;
    exclusive_queue(&ch).await;
    for (mut socket, _) in slow {
        let mut rest = Vec::new();
        // Reads until the broker closes the socket (anything it sent is discarded).
        let closed =
            tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a slow socket was left open");
    }
}
