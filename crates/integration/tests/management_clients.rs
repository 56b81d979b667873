//! What the management API shows of the clients connected now (connections, channels,
//! consumers, made by a real AMQP client) and closing a connection from it.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::ConnectionProperties;
use serde_json::{json, Value};
use wharf_integration::management::{segment, Management};
use wharf_integration::start_broker_with_management;

async fn named_connection(url: &str, name: &str) -> lapin::Connection {
    let properties = ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    lapin::Connection::connect(url, properties)
        .await
        .expect("connect")
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|item| item[key] == value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_channels_and_consumers_are_listed_as_they_are() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let client_name = unique("client");
    let connection = named_connection(&broker.url(), &client_name).await;
    let channel = connection.create_channel().await.unwrap();
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
    channel
        .basic_qos(7, BasicQosOptions::default())
        .await
        .unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-priority".into(), AMQPValue::LongInt(5));
    let tag = unique("ctag");
    let _consumer = channel
        .basic_consume(&queue, &tag, BasicConsumeOptions::default(), arguments)
        .await
        .unwrap();

    let listed = api
        .until("/api/connections", |list| {
            find(list, "user_provided_name", &client_name).is_some()
        })
        .await;
    let found = find(&listed, "user_provided_name", &client_name)
        .unwrap_or_else(|| panic!("{client_name} not in {listed}"))
        .clone();
    assert_eq!(found["user"], "guest");
    assert_eq!(found["vhost"], "/");
    assert_eq!(found["protocol"], "AMQP 0-9-1");
    assert_eq!(found["ssl"], false);
    assert_eq!(
        found["client_properties"]["connection_name"],
        client_name.as_str()
    );
    assert_eq!(found["client_properties"]["product"], "lapin");
    assert_eq!(found["peer_host"], "127.0.0.1");
    let name = found["name"].as_str().unwrap().to_string();
    assert!(name.contains(" -> "), "{name}");
    let one = api
        .get(&format!("/api/connections/{}", segment(&name)))
        .await
        .expect(200);
    assert_eq!(one["name"], name.as_str());

    let channels = api
        .until(
            &format!("/api/connections/{}/channels", segment(&name)),
            |list| list.as_array().is_some_and(|l| !l.is_empty()),
        )
        .await;
    let ch = &channels[0];
    assert_eq!(ch["number"], 1);
    assert_eq!(ch["prefetch_count"], 7);
    assert_eq!(ch["connection_details"]["name"], name.as_str());
    assert_eq!(ch["name"], format!("{name} (1)").as_str());
    let channel_name = ch["name"].as_str().unwrap().to_string();
    let ch = api
        .until(&format!("/api/channels/{}", segment(&channel_name)), |c| {
            c["consumer_count"] == 1
        })
        .await;
    assert_eq!(ch["consumer_count"], 1, "{ch}");
    assert_eq!(
        ch["consumer_details"][0]["consumer_tag"],
        tag.as_str(),
        "{ch}"
    );
    assert_eq!(ch["consumer_details"][0]["queue"]["name"], queue.as_str());
    // A plain TCP connection has RabbitMQ's TLS fields, empty.
    assert_eq!(found["ssl_protocol"], Value::Null, "{found}");
    assert!(found.as_object().unwrap().contains_key("peer_cert_subject"));

    let consumers = api
        .until("/api/consumers/%2F", |list| {
            find(list, "consumer_tag", &tag).is_some()
        })
        .await;
    let consumer = find(&consumers, "consumer_tag", &tag).unwrap();
    assert_eq!(consumer["queue"], json!({"name": queue, "vhost": "/"}));
    assert_eq!(consumer["ack_required"], true);
    assert_eq!(consumer["prefetch_count"], 7);
    assert_eq!(consumer["arguments"], json!({"x-priority": 5}));
    assert_eq!(
        consumer["channel_details"]["connection_name"],
        name.as_str()
    );
    let shown = api
        .until(&format!("/api/queues/%2F/{queue}"), |q| {
            q["consumers"] == 1 && q["consumer_utilisation"].is_number()
        })
        .await;
    assert_eq!(shown["consumers"], 1, "{shown}");
    // An idle consumer of an empty queue keeps up.
    assert_eq!(shown["consumer_utilisation"], 1.0, "{shown}");
    assert_eq!(shown["exclusive"], true);
    assert_eq!(shown["consumer_details"][0]["consumer_tag"], tag.as_str());
    connection.close(200, "bye").await.unwrap();
    api.get(&format!(
        "/api/connections/{}",
        segment("127.0.0.1:1 -> 127.0.0.1:2")
    ))
    .await
    .refused(404, "Object Not Found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_tells_its_client_why() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let client_name = unique("client");
    let connection = named_connection(&broker.url(), &client_name).await;
    let closed: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = closed.clone();
    connection.on_error(move |error| {
        *seen.lock().unwrap() = Some(error.to_string());
    });
    let listed = api
        .until("/api/connections", |list| {
            find(list, "user_provided_name", &client_name).is_some()
        })
        .await;
    let name = find(&listed, "user_provided_name", &client_name).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/connections/{}", segment(&name));
    let answer = api
        .send(
            api.builder(reqwest::Method::DELETE, &path)
                .header("X-Reason", "maintenance now"),
        )
        .await;
    assert_eq!(answer.status(), 204, "{}", answer.body);
    within(async {
        while closed.lock().unwrap().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let error = closed.lock().unwrap().clone().unwrap();
    assert!(
        error.contains("CONNECTION_FORCED") && error.contains("maintenance now"),
        "{error}"
    );
    api.until("/api/connections", |list| {
        find(list, "user_provided_name", &client_name).is_none()
    })
    .await;
    api.delete(&path).await.refused(404, "Object Not Found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_only_their_own_connections_unless_they_monitor() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let watcher = unique("http-user");
    api.put(
        &format!("/api/users/{watcher}"),
        json!({"password": watcher, "tags": "management"}),
    )
    .await
    .expect(201);
    api.put(
        &format!("/api/permissions/%2F/{watcher}"),
        json!({"configure": ".*", "write": ".*", "read": ".*"}),
    )
    .await
    .expect(201);
    let client_name = unique("client");
    let connection = named_connection(&broker.url(), &client_name).await;
    api.until("/api/connections", |list| {
        find(list, "user_provided_name", &client_name).is_some()
    })
    .await;
    let theirs = api
        .as_user(Some((&watcher, &watcher)))
        .get("/api/connections")
        .await
        .expect(200);
    assert!(
        find(&theirs, "user_provided_name", &client_name).is_none(),
        "{theirs}"
    );
    connection.close(200, "bye").await.unwrap();
    api.delete(&format!("/api/users/{watcher}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_active_consumers_queue_shows_who_is_active_and_who_waits() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let (_connection, channel) = lapin_channel(&broker).await;
    let queue = unique("sac");
    let mut arguments = FieldTable::default();
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .unwrap();
    let (first, second) = (unique("first"), unique("second"));
    let mut consumers = Vec::new();
    for tag in [&first, &second] {
        consumers.push(
            channel
                .basic_consume(
                    &queue,
                    tag,
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap(),
        );
    }
    let listed = api
        .until("/api/consumers/%2F", |list| {
            find(list, "consumer_tag", &second).is_some()
                && find(list, "consumer_tag", &first).is_some()
        })
        .await;
    let active = find(&listed, "consumer_tag", &first).unwrap();
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["activity_status"], "single_active");
    let waiting = find(&listed, "consumer_tag", &second).unwrap();
    assert_eq!(waiting["active"], false, "{waiting}");
    assert_eq!(waiting["activity_status"], "waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_count_what_was_published_to_them_and_what_they_routed() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let (_connection, channel) = confirming_channel(&broker).await;
    let (exchange, queue) = (unique("x"), unique("q"));
    channel
        .exchange_declare(
            &exchange,
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
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
    channel
        .queue_bind(
            &queue,
            &exchange,
            "k",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for key in ["k", "k", "k", "nowhere"] {
        channel
            .basic_publish(
                &exchange,
                key,
                BasicPublishOptions::default(),
                b"m",
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let path = format!("/api/exchanges/%2F/{exchange}");
    let shown = api
        .until(&path, |e| e["message_stats"]["publish_in"] == 4)
        .await;
    assert_eq!(shown["message_stats"]["publish_in"], 4, "{shown}");
    assert_eq!(shown["message_stats"]["publish_out"], 3, "{shown}");
    assert!(shown["message_stats"]["publish_in_details"]["rate"].is_number());
    let listed = api.get("/api/exchanges/%2F").await.expect(200);
    let row = find(&listed, "name", &exchange).unwrap();
    assert_eq!(row["message_stats"]["publish_in"], 4, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connections_exclusive_queue_is_refused_to_get_purge_and_delete() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let (_connection, channel) = confirming_channel(&broker).await;
    let queue = unique("mine");
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
    channel
        .basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            b"private",
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let path = format!("/api/queues/%2F/{queue}");
    let reason = api
        .post(
            &format!("{path}/get"),
            json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}),
        )
        .await
        .refused(400, "bad_request");
    assert!(
        reason
            .as_str()
            .unwrap()
            .starts_with("405 RESOURCE_LOCKED - cannot obtain exclusive access to locked queue"),
        "{reason}"
    );
    let reason = api
        .delete(&format!("{path}/contents"))
        .await
        .refused(400, "bad_request");
    assert!(
        reason
            .as_str()
            .unwrap()
            .starts_with("cannot obtain exclusive access"),
        "{reason}"
    );
    api.delete(&path).await.refused(400, "bad_request");
    // The owner's message is still there.
    let got = channel
        .basic_get(&queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message");
    assert_eq!(got.delivery.data, b"private");
}
