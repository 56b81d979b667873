//! Publishing and getting messages through the management API, and what a real AMQP
//! client sees of them.

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use serde_json::json;
use wharf_integration::management::Management;
use wharf_integration::start_broker_with_management;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_reach_amqp_consumers_with_their_properties() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let (_connection, channel) = lapin_channel(&broker).await;
    let queue = unique("q");
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let publish = "/api/exchanges/%2F/amq.default/publish";
    let routed = api
        .post(
            publish,
            json!({
                "properties": {"delivery_mode": 2, "headers": {"h": "v", "n": 2}, "content_type": "text/plain", "priority": 3, "correlation_id": "c1", "message_id": "m1", "app_id": "a"},
                "routing_key": queue,
                "payload": "hello",
                "payload_encoding": "string",
            }),
        )
        .await
        .expect(200);
    assert_eq!(routed, json!({"routed": true}));
    let mut consumer = channel
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = within(consumer.next()).await.unwrap().unwrap();
    assert_eq!(delivery.data, b"hello");
    let p = &delivery.properties;
    assert_eq!(p.delivery_mode(), &Some(2));
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    assert_eq!(p.correlation_id().as_ref().map(|s| s.as_str()), Some("c1"));
    assert_eq!(p.priority(), &Some(3));
    let headers = p.headers().as_ref().unwrap();
    assert!(headers.inner().contains_key("h"), "{headers:?}");
    // Base64 payloads arrive as the bytes they encode.
    api.post(
        publish,
        json!({"properties": {}, "routing_key": queue, "payload": "AAEC/w==", "payload_encoding": "base64"}),
    )
    .await
    .expect(200);
    let delivery = within(consumer.next()).await.unwrap().unwrap();
    assert_eq!(delivery.data, [0, 1, 2, 255]);
    // Nowhere to go: routed false.
    let unrouted = api
        .post(
            publish,
            json!({"properties": {}, "routing_key": unique("nowhere"), "payload": "x", "payload_encoding": "string"}),
        )
        .await
        .expect(200);
    assert_eq!(unrouted, json!({"routed": false}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_refuses_what_rabbitmq_refuses() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let publish = "/api/exchanges/%2F/amq.default/publish";
    let body = |extra: serde_json::Value| {
        let mut base = json!({"properties": {}, "routing_key": "k", "payload": "x", "payload_encoding": "string"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    let reason = api
        .post(publish, body(json!({"payload_encoding": "nope"})))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, json!(["unsupported_encoding", "nope"]));
    let reason = api
        .post(
            publish,
            body(json!({"payload": "!!!", "payload_encoding": "base64"})),
        )
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, json!(["not_base64", "!!!"]));
    let reason = api
        .post(publish, body(json!({"properties": {"delivery_mode": "x"}})))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, json!(["not_int", "delivery_mode"]));
    let reason = api
        .post(publish, body(json!({"properties": {"user_id": "other"}})))
        .await
        .refused(400, "bad_request");
    assert_eq!(
        reason,
        "406 PRECONDITION_FAILED - user_id property set to 'other' but authenticated user was 'guest'"
    );
    let reason = api
        .post(
            publish,
            json!({"routing_key": "k", "payload": "x", "payload_encoding": "string"}),
        )
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "[{key_missing,properties}]");
    let missing = unique("nonexistent");
    let reason = api
        .post(
            &format!("/api/exchanges/%2F/{missing}/publish"),
            body(json!({})),
        )
        .await
        .refused(400, "bad_request");
    assert_eq!(
        reason,
        format!("404 NOT_FOUND - no exchange '{missing}' in vhost '/'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_takes_messages_and_requeues_acks_or_rejects_them() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let queue = unique("q");
    api.put(&format!("/api/queues/%2F/{queue}"), json!({}))
        .await
        .expect(201);
    let publish = "/api/exchanges/%2F/amq.default/publish";
    for payload in ["one", "two", "three"] {
        api.post(
            publish,
            json!({"properties": {}, "routing_key": queue, "payload": payload, "payload_encoding": "string"}),
        )
        .await
        .expect(200);
    }
    let get = format!("/api/queues/%2F/{queue}/get");
    let got = api
        .post(&get, json!({"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000}))
        .await
        .expect(200);
    assert_eq!(got.as_array().unwrap().len(), 2);
    assert_eq!(got[0]["payload"], "one");
    assert_eq!(got[0]["payload_encoding"], "string");
    assert_eq!(got[0]["payload_bytes"], 3);
    assert_eq!(got[0]["redelivered"], false);
    assert_eq!(got[0]["exchange"], "");
    assert_eq!(got[0]["routing_key"], queue.as_str());
    assert_eq!(got[0]["message_count"], 2);
    assert_eq!(got[0]["properties"], json!([]));
    // Requeued: the same messages again, now redelivered; base64 when asked.
    let got = api
        .post(
            &get,
            json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "base64"}),
        )
        .await
        .expect(200);
    assert_eq!(got[0]["payload"], "b25l");
    assert_eq!(got[0]["payload_encoding"], "base64");
    assert_eq!(got[0]["redelivered"], true);
    // Acknowledged: gone.
    let got = api
        .post(
            &get,
            json!({"count": 10, "ackmode": "ack_requeue_false", "encoding": "auto", "truncate": 2}),
        )
        .await
        .expect(200);
    assert_eq!(got.as_array().unwrap().len(), 3);
    assert_eq!(got[2]["payload"], "th");
    assert_eq!(got[2]["payload_bytes"], 5);
    let got = api
        .post(
            &get,
            json!({"count": 10, "ackmode": "ack_requeue_true", "encoding": "auto"}),
        )
        .await
        .expect(200);
    assert_eq!(got, json!([]));
    // Refusals.
    let reason = api
        .post(&get, json!({"count": 2, "ackmode": "ack_requeue_true"}))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "[{key_missing,encoding}]");
    let reason = api
        .post(
            &get,
            json!({"count": 2, "ackmode": "ack_requeue_true", "encoding": "nope"}),
        )
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "Unsupported encoding. Please use auto or base64.");
    let reason = api
        .post(
            &get,
            json!({"count": "x", "ackmode": "ack_requeue_true", "encoding": "auto"}),
        )
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, json!(["not_integer", "x"]));
    let missing = unique("nonexistent");
    let reason = api
        .post(
            &format!("/api/queues/%2F/{missing}/get"),
            json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}),
        )
        .await
        .refused(404, "not_found");
    assert_eq!(
        reason,
        format!("NOT_FOUND - no queue '{missing}' in vhost '/'")
    );
    if !broker.is_external() {
        // RabbitMQ crashes its handler (500, no body) on an unknown ackmode.
        api.post(
            &get,
            json!({"count": 1, "ackmode": "nope", "encoding": "auto"}),
        )
        .await
        .refused(400, "bad_request");
    }
    api.delete(&format!("/api/queues/%2F/{queue}"))
        .await
        .expect(204);
}
