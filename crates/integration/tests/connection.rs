//! The connection: handshake, login, vhosts, capabilities, channels, heartbeats,
//! shutdown. Uses amqprs, lapin and the raw client.

mod common;

use std::time::Duration;

use amqprs::callbacks::{DefaultChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection as AmqprsConnection, OpenConnectionArguments};
use amqprs::security::SecurityCredentials;
use amqprs::BasicProperties as AmqprsProperties;
use bytes::Bytes;
use common::*;
use wharf_amqp::frame::PROTOCOL_HEADER;
use wharf_amqp::*;
use wharf_integration::raw::RawClient;

fn amqprs_args(broker: &TestBroker, user: &str, password: &str) -> OpenConnectionArguments {
    let mut args = OpenConnectionArguments::new(
        &broker.addr.ip().to_string(),
        broker.addr.port(),
        user,
        password,
    );
    args.connection_name(&unique("amqprs"));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_publishes_consumes_and_sees_capabilities() {
    let broker = start_broker().await;
    let connection = AmqprsConnection::open(&amqprs_args(&broker, "guest", "guest"))
        .await
        .unwrap();
    connection
        .register_callback(DefaultConnectionCallback)
        .await
        .unwrap();
    let caps = connection.server_properties().capabilities();
    assert!(caps.publisher_confirms());
    assert!(caps.exchange_exchange_bindings());
    assert!(caps.basic_nack());
    assert!(caps.consumer_cancel_notify());
    assert!(caps.connection_blocked());
    assert!(caps.authentication_failure_close());
    assert!(caps.per_consumer_qos());

    let channel = connection.open_channel(None).await.unwrap();
    channel
        .register_callback(DefaultChannelCallback)
        .await
        .unwrap();
    let (queue, _, _) = channel
        .queue_declare(QueueDeclareArguments::exclusive_server_named())
        .await
        .unwrap()
        .unwrap();
    let (_tag, mut rx) = channel
        .basic_consume_rx(BasicConsumeArguments::new(&queue, "amqprs-consumer"))
        .await
        .unwrap();
    for i in 0..3u8 {
        channel
            .basic_publish(
                AmqprsProperties::default(),
                vec![i; 10],
                BasicPublishArguments::new("", &queue),
            )
            .await
            .unwrap();
    }
    for i in 0..3u8 {
        let msg = within(rx.recv()).await.expect("delivery");
        assert_eq!(msg.content.unwrap(), vec![i; 10]);
        let deliver = msg.deliver.unwrap();
        assert_eq!(deliver.delivery_tag(), u64::from(i) + 1);
        channel
            .basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false))
            .await
            .unwrap();
    }
    channel.close().await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_logs_in_with_amqplain() {
    let broker = start_broker().await;
    let mut args = amqprs_args(&broker, "guest", "guest");
    args.credentials(SecurityCredentials::new_amqplain("guest", "guest"));
    let connection = AmqprsConnection::open(&args).await.unwrap();
    assert!(connection.is_open());
    connection.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_with_403() {
    let broker = start_broker().await;
    let err = try_lapin_connect(&broker.url_with("guest", "wrong", "/"))
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.".into()
        )
    );
    let unknown_user = try_lapin_connect(&broker.url_with(&unique("nobody"), "x", "/"))
        .await
        .unwrap_err();
    assert_eq!(protocol_error(&unknown_user).0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_without_the_capability_just_closes() {
    let broker = start_broker().await;
    let mut client = RawClient::connect(broker.addr).await;
    client.send_raw(PROTOCOL_HEADER).await;
    assert!(matches!(
        client.read_method().await,
        Method::ConnectionStart(_)
    ));
    client
        .send_method(
            0,
            ConnectionStartOk {
                client_properties: FieldTable::new(),
                mechanism: "PLAIN".into(),
                response: Bytes::from_static(b"\0guest\0nope"),
                locale: "en_US".into(),
            },
        )
        .await;
    assert!(
        client.read_frame().await.is_none(),
        "socket closed, no frame"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_is_530() {
    let broker = start_broker().await;
    let vhost = unique("vh");
    let err = try_lapin_connect(&broker.url_with("guest", "guest", &vhost))
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (530, format!("NOT_ALLOWED - vhost {vhost} not found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_header_gets_ours_back_then_close() {
    let broker = start_broker().await;
    for header in [
        &b"AMQP\x00\x00\x09\x00"[..],
        b"AMQP\x01\x01\x00\x0a",
        b"GET / HTTP/1.1\r\n",
    ] {
        let mut client = RawClient::connect(broker.addr).await;
        client.send_raw(header).await;
        let mut reply = [0u8; 8];
        let read = tokio::io::AsyncReadExt::read_exact(&mut client.socket, &mut reply);
        within(read).await.unwrap();
        assert_eq!(&reply, PROTOCOL_HEADER, "after {header:?}");
        // Then the socket closes (a reset when unread bytes were left, as with RabbitMQ).
        assert!(client.closed_by_broker().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_announces_rabbitmq_capabilities() {
    let broker = start_broker().await;
    let mut client = RawClient::connect(broker.addr).await;
    client.send_raw(PROTOCOL_HEADER).await;
    let Method::ConnectionStart(start) = client.read_method().await else {
        panic!("expected connection.start")
    };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let mechanisms = String::from_utf8(start.mechanisms.to_vec()).unwrap();
    let mechanisms: Vec<&str> = mechanisms.split(' ').collect();
    assert!(
        mechanisms.contains(&"PLAIN") && mechanisms.contains(&"AMQPLAIN"),
        "{mechanisms:?}"
    );
    let Some(FieldValue::Table(caps)) = start.server_properties.get("capabilities") else {
        panic!("no capabilities table")
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        assert_eq!(caps.get(cap), Some(&FieldValue::Bool(true)), "{cap}");
    }
    assert!(start.server_properties.get("product").is_some());
    assert!(start.server_properties.get("version").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_channel_open_is_504() {
    let broker = start_broker().await;
    let mut client = RawClient::open_with_channel(broker.addr).await;
    client.send_method(1, ChannelOpen {}).await;
    let (code, text) = client.expect_connection_close().await;
    assert_eq!(code, 504);
    assert_eq!(text, "CHANNEL_ERROR - second 'channel.open' seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_on_an_unopened_channel_is_504() {
    let broker = start_broker().await;
    let mut client = RawClient::open(broker.addr).await;
    client
        .send_method(
            7,
            BasicQos {
                prefetch_size: 0,
                prefetch_count: 1,
                global: false,
            },
        )
        .await;
    let (code, text) = client.expect_connection_close().await;
    assert_eq!(code, 504);
    assert_eq!(text, "CHANNEL_ERROR - expected 'channel.open'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channels_on_one_connection() {
    let broker = start_broker().await;
    let connection = lapin_connect(&broker.url()).await;
    let mut channels = Vec::new();
    for _ in 0..100 {
        channels.push(connection.create_channel().await.unwrap());
    }
    for ch in &channels {
        ch.basic_qos(5, Default::default()).await.unwrap();
    }
    for ch in channels {
        ch.close(200, "ok").await.unwrap();
    }
    connection.close(200, "ok").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_is_acknowledged_and_inactive_is_not_implemented() {
    let broker = start_broker().await;
    let mut client = RawClient::open_with_channel(broker.addr).await;
    client.send_method(1, ChannelFlow { active: true }).await;
    assert_eq!(
        client.read_method().await,
        Method::ChannelFlowOk(ChannelFlowOk { active: true })
    );
    // RabbitMQ does not let clients pause deliveries with channel.flow (use basic.qos).
    client.send_method(1, ChannelFlow { active: false }).await;
    let (code, text) = client.expect_connection_close().await;
    assert_eq!(
        (code, text.as_str()),
        (540, "NOT_IMPLEMENTED - active=false")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_heartbeating_is_dropped() {
    let broker = start_broker().await;
    if broker.is_external() {
        return; // RabbitMQ's minimum heartbeat makes this take too long to run here.
    }
    let (mut client, tune) = RawClient::until_tune(broker.addr, FieldTable::new()).await;
    client
        .tune_and_open(ConnectionTuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 1,
        })
        .await;
    assert!(matches!(
        client.read_method().await,
        Method::ConnectionOpenOk(_)
    ));
    // The broker heartbeats us every second; we send nothing. After two missed intervals
    // it closes the socket.
    let start = std::time::Instant::now();
    let mut heartbeats = 0;
    while let Some(frame) = client.read_frame().await {
        assert_eq!(frame.payload, FramePayload::Heartbeat);
        heartbeats += 1;
    }
    assert!(heartbeats >= 1, "the broker sends heartbeats");
    let silent = start.elapsed();
    assert!(
        silent >= Duration::from_millis(1500) && silent < Duration::from_secs(4),
        "{silent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_closed_after_the_handshake_timeout() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return;
    }
    let config = wharf_server::ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let broker = wharf_integration::start_broker_with(config).await;
    let mut client = RawClient::connect(broker.addr).await;
    assert!(client.closed_by_broker().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_with_320() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return;
    }
    let broker = start_broker().await;
    let mut client = RawClient::open_with_channel(broker.addr).await;
    drop(broker);
    let (code, text) = client.expect_connection_close().await;
    assert_eq!(code, 320);
    assert_eq!(
        text,
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    );
}

/// The first address of this machine that is not loopback, if it has one.
fn non_loopback_ipv4() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the outgoing interface.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_may_only_connect_from_loopback() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // needs a broker listening on a non-loopback address
    }
    let Some(ip) = non_loopback_ipv4() else {
        eprintln!("no non-loopback address on this machine: nothing to check");
        return;
    };
    let broker = wharf_integration::start_broker_at(
        std::net::SocketAddr::new(ip, 0),
        wharf_server::ServerConfig::default(),
    )
    .await;
    let err = try_lapin_connect(&broker.url()).await.unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_406() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // RabbitMQ's limit is configured in its own file
    }
    let config = wharf_server::ServerConfig {
        max_message_bytes: 1000,
        ..Default::default()
    };
    let broker = wharf_integration::start_broker_with(config).await;
    let (_c, ch) = lapin_channel(&broker).await;
    let closed = channel_error(&ch);
    ch.basic_publish(
        "",
        "q",
        Default::default(),
        &[0u8; 1001],
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        closed_with(closed).await,
        (
            406,
            "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
                .into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_max_bounds_how_many_channels_are_open_not_their_numbers() {
    let broker = start_broker().await;
    let (mut client, tune) = RawClient::until_tune(broker.addr, FieldTable::new()).await;
    client
        .tune_and_open(ConnectionTuneOk {
            channel_max: 2,
            frame_max: tune.frame_max,
            heartbeat: 0,
        })
        .await;
    assert!(matches!(
        client.read_method().await,
        Method::ConnectionOpenOk(_)
    ));
    for number in [10, 3000] {
        client.send_method(number, ChannelOpen {}).await;
        assert_eq!(
            client.read_method().await,
            Method::ChannelOpenOk(ChannelOpenOk {})
        );
    }
    client.close_channel(10).await;
    client.send_method(65535, ChannelOpen {}).await;
    assert_eq!(
        client.read_method().await,
        Method::ChannelOpenOk(ChannelOpenOk {})
    );
    client.send_method(5, ChannelOpen {}).await;
    let (code, text) = client.expect_connection_close().await;
    assert_eq!(
        (code, text.as_str()),
        (
            530,
            "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tune_ok_beyond_what_was_offered_is_refused() {
    let broker = start_broker().await;
    // (channel_max, frame_max) asked for, given the offer of 2047 and 131072.
    let cases = [
        (
            0,
            131072,
            "channel_max = 0 (no limit) is higher than the maximum allowed value (2047)",
        ),
        (
            2048,
            131072,
            "channel_max = 2048 is higher than the maximum allowed value (2047)",
        ),
        (
            2047,
            0,
            "frame_max = 0 is higher than the maximum allowed value (131072)",
        ),
        (
            2047,
            131073,
            "frame_max = 131073 is higher than the maximum allowed value (131072)",
        ),
        (
            2047,
            4095,
            "frame_max = 4095 is lower than the minimum allowed value (4096)",
        ),
    ];
    for (channel_max, frame_max, reason) in cases {
        let (mut client, tune) = RawClient::until_tune(broker.addr, FieldTable::new()).await;
        assert_eq!((tune.channel_max, tune.frame_max), (2047, 131072));
        client
            .tune_and_open(ConnectionTuneOk {
                channel_max,
                frame_max,
                heartbeat: 0,
            })
            .await;
        if broker.is_external() {
            // RabbitMQ logs the reason and resets the socket 3 s later, without a frame.
            assert_eq!(client.read_frame().await, None, "{reason}");
            return;
        }
        let (code, text) = client.expect_connection_close().await;
        assert_eq!(
            (code, text),
            (530, format!("NOT_ALLOWED - negotiated {reason}"))
        );
    }
}

/// Issue 14, item 4 (in part): on a dual-stack listener (`[::]`), a client on 127.0.0.1
/// arrives as `::ffff:127.0.0.1`; it is on this machine, so `guest` may log in, as it may
/// over 127.0.0.1 on an IPv4 listener and over ::1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_logs_in_over_ipv4_loopback_through_a_dual_stack_listener() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // binds a listener of its own
    }
    let any: std::net::SocketAddr = "[::]:0".parse().unwrap();
    if std::net::TcpListener::bind(any).is_err() {
        eprintln!("no IPv6 on this machine: nothing to check");
        return;
    }
    let broker = wharf_integration::start_broker_at(any, Default::default()).await;
    let port = broker.addr.port();
    for host in ["127.0.0.1", "[::1]"] {
        let url = format!("amqp://guest:guest@{host}:{port}/%2f");
        let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("guest over {host}: {e}"));
        conn.close(200, "done").await.unwrap();
    }
}

/// Issue 14, item 2: connection.update-secret (RabbitMQ's extension, for OAuth 2 token
/// refresh; pika and amqplib expose it) is answered with update-secret-ok, and the
/// connection goes on. RabbitMQ 3.10.8 answers -ok for its internal users whatever the
/// secret (they have nothing to refresh), and so does Wharf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_secret_is_answered_and_the_connection_goes_on() {
    let broker = start_broker().await;
    for secret in [&b"guest"[..], b"not the password"] {
        let mut client = RawClient::open(broker.addr).await;
        let update = wharf_amqp::ConnectionUpdateSecret {
            new_secret: Bytes::copy_from_slice(secret),
            reason: "token refresh".into(),
        };
        client
            .send_method(0, wharf_amqp::Method::ConnectionUpdateSecret(update))
            .await;
        let answer = client.read_method().await;
        assert!(
            matches!(answer, wharf_amqp::Method::ConnectionUpdateSecretOk(_)),
            "{answer:?}"
        );
        client
            .send_method(1, wharf_amqp::Method::ChannelOpen(Default::default()))
            .await;
        let answer = client.read_method().await;
        assert!(
            matches!(answer, wharf_amqp::Method::ChannelOpenOk(_)),
            "{answer:?}"
        );
    }
}
