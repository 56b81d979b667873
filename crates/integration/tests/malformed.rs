//! Malformed and out-of-order input on a live connection: each gets the connection error
//! RabbitMQ sends, and the broker keeps serving everyone else.

mod common;

use bytes::{BufMut, BytesMut};
use common::*;
use wharf_amqp::frame::{self, encode_content_header, encode_method};
use wharf_amqp::*;
use wharf_integration::raw::RawClient;

/// Wraps `payload` in a frame of `kind` on `channel`, with the given end byte.
fn frame(kind: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.put_u8(end);
    out.to_vec()
}

fn method_payload(method: impl Into<Method>) -> Vec<u8> {
    let mut out = BytesMut::new();
    method.into().encode(&mut out);
    out.to_vec()
}

/// basic.publish to queue "x" on channel 1.
fn encode_publish(out: &mut BytesMut, immediate: bool) {
    let publish = Method::BasicPublish(BasicPublish {
        exchange: "".into(),
        routing_key: "x".into(),
        mandatory: false,
        immediate,
    });
    encode_method(1, &publish, out);
}

fn publish_header(channel: u16, body_size: u64) -> Vec<u8> {
    let mut out = BytesMut::new();
    let publish = Method::BasicPublish(BasicPublish {
        exchange: "".into(),
        routing_key: "nowhere".into(),
        mandatory: false,
        immediate: false,
    });
    encode_method(channel, &publish, &mut out);
    let header = ContentHeader {
        class_id: 60,
        body_size,
        properties: Default::default(),
    };
    encode_content_header(channel, &header, &mut out);
    out.to_vec()
}

/// Sends `bytes` on a fresh connection with channel 1 open; returns the close code/text.
async fn close_after(broker: &TestBroker, bytes: &[u8]) -> (u16, String) {
    let mut client = RawClient::open_with_channel(broker.addr).await;
    client.send_raw(bytes).await;
    client.expect_connection_close().await
}

/// After the bad input, the broker still serves a well-behaved client.
async fn still_serving(broker: &TestBroker) {
    let (_c, ch) = lapin_channel(broker).await;
    let q = ch
        .queue_declare(
            "",
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    assert!(q.name().as_str().starts_with("amq.gen-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frame_end_is_501() {
    let broker = start_broker().await;
    let bytes = frame(
        1,
        1,
        &method_payload(BasicQos {
            prefetch_size: 0,
            prefetch_count: 1,
            global: false,
        }),
        0xAB,
    );
    let (code, text) = close_after(&broker, &bytes).await;
    assert_eq!(code, 501, "{text}");
    assert!(text.starts_with("FRAME_ERROR - "), "{text}");
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_frame_type_is_501() {
    let broker = start_broker().await;
    let (code, text) = close_after(&broker, &frame(9, 1, b"xyz", 0xCE)).await;
    assert_eq!(code, 501, "{text}");
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_frame_max_is_501() {
    let broker = start_broker().await;
    let mut bytes = publish_header(1, 300_000);
    bytes.extend(frame(3, 1, &vec![0u8; 200_000], 0xCE));
    let (code, text) = close_after(&broker, &bytes).await;
    assert_eq!(
        (code, text.as_str()),
        (
            501,
            "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,200000,131064}"
        )
    );
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_of_exactly_frame_max_is_taken() {
    // The spec bounds the whole frame by frame_max; RabbitMQ bounds the payload.
    let broker = start_broker().await;
    let mut client = RawClient::open_with_channel(broker.addr).await;
    let mut bytes = publish_header(1, 131_072);
    bytes.extend(frame(3, 1, &vec![0u8; 131_072], 0xCE));
    client.send_raw(&bytes).await;
    client.close_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_tune_ok_frames_are_bounded_by_the_minimum_frame_max() {
    let broker = start_broker().await;
    let mut client = RawClient::connect(broker.addr).await;
    client.send_raw(frame::PROTOCOL_HEADER).await;
    assert!(matches!(
        client.read_method().await,
        Method::ConnectionStart(_)
    ));
    // 9,000 bytes of client properties: more than anyone may send before logging in.
    let mut properties = FieldTable::new();
    properties.insert("padding", FieldValue::LongStr(vec![b'x'; 9000].into()));
    let start_ok = ConnectionStartOk {
        client_properties: properties,
        mechanism: "PLAIN".into(),
        response: bytes::Bytes::from_static(b"\0guest\0guest"),
        locale: "en_US".into(),
    };
    let payload = method_payload(start_ok);
    client.send_raw(&frame(1, 0, &payload, 0xCE)).await;
    if broker.is_external() {
        // RabbitMQ logs it and resets the socket 3 s later, without a frame.
        assert_eq!(client.read_frame().await, None);
    } else {
        let (code, text) = client.expect_connection_close().await;
        assert_eq!(
            (code, text),
            (
                501,
                format!(
                    "FRAME_ERROR - type 1, all octets = <<>>: {{frame_too_large,{},8184}}",
                    payload.len()
                )
            )
        );
    }
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_is_540() {
    let broker = start_broker().await;
    for ids in [[0, 60, 0, 99], [0, 77, 0, 10]] {
        let bytes = frame(1, 1, &ids, 0xCE);
        if broker.is_external() {
            // RabbitMQ drops the socket without a close frame here.
            let mut client = RawClient::open_with_channel(broker.addr).await;
            client.send_raw(&bytes).await;
            assert!(client.closed_by_broker().await);
        } else {
            // Wharf says why, with the spec's code for an unknown method.
            let (code, text) = close_after(&broker, &bytes).await;
            assert_eq!(code, 540, "{text}");
        }
    }
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_method_arguments_are_a_connection_error() {
    let broker = start_broker().await;
    // queue.declare cut off in the middle of its queue name.
    let (code, text) =
        close_after(&broker, &frame(1, 1, &[0, 50, 0, 10, 0, 0, 9, b'a'], 0xCE)).await;
    assert_eq!(code, 501, "{text}");
    assert!(text.starts_with("FRAME_ERROR - cannot decode"), "{text}");
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_table_with_unknown_type_is_a_connection_error() {
    let broker = start_broker().await;
    let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    payload.extend([0, 0, 0, 4, 1, b'k', b'Z', 0]);
    let bytes = frame(1, 1, &payload, 0xCE);
    if broker.is_external() {
        // RabbitMQ drops the socket without a close frame here.
        let mut client = RawClient::open_with_channel(broker.addr).await;
        client.send_raw(&bytes).await;
        assert!(client.closed_by_broker().await);
    } else {
        let (code, text) = close_after(&broker, &bytes).await;
        assert_eq!(code, 501, "{text}");
        assert!(text.contains("unknown field value type 'Z'"), "{text}");
    }
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_without_header_is_505() {
    let broker = start_broker().await;
    let (code, text) = close_after(&broker, &frame(3, 1, b"orphan", 0xCE)).await;
    assert_eq!(
        (code, text.as_str()),
        (
            505,
            "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
        )
    );
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_where_content_was_expected_is_505() {
    let broker = start_broker().await;
    let mut out = BytesMut::new();
    encode_publish(&mut out, false);
    encode_publish(&mut out, false);
    let (code, text) = close_after(&broker, &out).await;
    assert_eq!(
        (code, text.as_str()),
        (
            505,
            "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead"
        )
    );
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_longer_than_declared_is_a_connection_error() {
    let broker = start_broker().await;
    if broker.is_external() {
        return; // RabbitMQ 3.10 does not answer at all; Wharf closes with 501.
    }
    let mut bytes = publish_header(1, 4);
    bytes.extend(frame(3, 1, b"toolong", 0xCE));
    let (code, text) = close_after(&broker, &bytes).await;
    assert_eq!(code, 501, "{text}");
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_method_on_channel_zero_is_a_connection_error() {
    let broker = start_broker().await;
    let bytes = frame(
        1,
        0,
        &method_payload(BasicQos {
            prefetch_size: 0,
            prefetch_count: 1,
            global: false,
        }),
        0xCE,
    );
    let (code, text) = close_after(&broker, &bytes).await;
    assert_eq!(
        (code, text.as_str()),
        (
            504,
            "CHANNEL_ERROR - unexpected method in connection state running"
        )
    );
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_with_wrong_class_is_a_connection_error() {
    let broker = start_broker().await;
    let mut out = BytesMut::new();
    encode_publish(&mut out, false);
    encode_content_header(
        1,
        &ContentHeader {
            class_id: 50,
            body_size: 1,
            properties: Default::default(),
        },
        &mut out,
    );
    let (code, text) = close_after(&broker, &out).await;
    assert_eq!(
        (code, text.as_str()),
        (
            505,
            "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead"
        )
    );
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_publish_is_540() {
    let broker = start_broker().await;
    let mut out = BytesMut::new();
    encode_publish(&mut out, true);
    let header = ContentHeader {
        class_id: 60,
        body_size: 1,
        properties: Default::default(),
    };
    encode_content_header(1, &header, &mut out);
    wharf_amqp::frame::encode_body(1, b"x", 131072, &mut out);
    let (code, text) = close_after(&broker, &out).await;
    assert_eq!(
        (code, text.as_str()),
        (540, "NOT_IMPLEMENTED - immediate=true")
    );
    still_serving(&broker).await;
}
