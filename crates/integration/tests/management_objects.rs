//! Creating, reading, changing and deleting through the management API: vhosts, users,
//! permissions, exchanges, queues, bindings, policies and limits, with RabbitMQ's
//! statuses for each happy and unhappy path.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use wharf_integration::management::{segment, Management};
use wharf_integration::start_broker_with_management;

async fn api() -> (TestBroker, Management) {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    (broker, api)
}

/// A vhost of the test's own (guest gets every permission in it, as its maker).
async fn vhost(api: &Management) -> String {
    let name = unique("http-vhost");
    api.put(&format!("/api/vhosts/{name}"), json!({}))
        .await
        .expect(201);
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_are_created_changed_shown_and_deleted() {
    let (_broker, api) = api().await;
    let name = unique("http-vhost");
    let path = format!("/api/vhosts/{name}");
    api.put(&path, json!({"description": "d", "tags": ["a", "b"]}))
        .await
        .expect(201);
    let shown = api.get(&path).await.expect(200);
    assert_eq!(shown["name"], name.as_str());
    assert_eq!(shown["description"], "d");
    assert_eq!(shown["tags"], json!(["a", "b"]));
    assert_eq!(shown["tracing"], false);
    // Again: changed, 204; tags as RabbitMQ's comma-separated text.
    api.put(&path, json!({"description": "d2", "tags": "x, y"}))
        .await
        .expect(204);
    let shown = api.get(&path).await.expect(200);
    assert_eq!(shown["description"], "d2");
    assert_eq!(shown["tags"], json!(["x", "y"]));
    let listed = api.get("/api/vhosts").await.expect(200);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == name.as_str()));
    // Its maker may use it at once.
    let mine = api
        .get(&format!("/api/permissions/{name}/guest"))
        .await
        .expect(200);
    assert_eq!(mine["configure"], ".*");
    api.delete(&path).await.expect(204);
    api.delete(&path).await.refused(404, "Object Not Found");
    api.get(&path).await.refused(404, "Object Not Found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_created_with_tags_and_passwords_that_log_in() {
    let (broker, api) = api().await;
    let name = unique("http-user");
    let path = format!("/api/users/{name}");
    api.put(&path, json!({"password": "p1", "tags": "administrator"}))
        .await
        .expect(201);
    let shown = api.get(&path).await.expect(200);
    assert_eq!(shown["tags"], json!(["administrator"]));
    assert_eq!(shown["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert!(shown["password_hash"].as_str().unwrap().len() > 20);
    // Tags as a list; a new password.
    api.put(
        &path,
        json!({"password": "p2", "tags": ["monitoring", "custom"]}),
    )
    .await
    .expect(204);
    assert_eq!(
        api.get(&path).await.expect(200)["tags"],
        json!(["monitoring", "custom"])
    );
    api.put(
        &format!("/api/permissions/%2F/{name}"),
        json!({"configure": ".*", "write": ".*", "read": ".*"}),
    )
    .await
    .expect(201);
    let user_api = api.as_user(Some((&name, "p2")));
    assert_eq!(
        user_api.get("/api/whoami").await.expect(200)["name"],
        name.as_str()
    );
    // The password works over AMQP too (from loopback).
    let connection = lapin_connect(&broker.url_with(&name, "p2", "/")).await;
    connection.close(200, "bye").await.unwrap();
    // A user's hash moves between brokers as it is; set again, the user keeps its limits.
    let hash = api.get(&path).await.expect(200)["password_hash"].clone();
    api.put(
        &format!("/api/user-limits/{name}/max-channels"),
        json!({"value": 7}),
    )
    .await
    .expect(204);
    api.put(
        &path,
        json!({"password_hash": hash, "tags": "monitoring,custom"}),
    )
    .await
    .expect(204);
    assert_eq!(
        api.get(&path).await.expect(200)["limits"],
        json!({"max-channels": 7})
    );
    let copy = unique("http-user");
    api.put(
        &format!("/api/users/{copy}"),
        json!({"password_hash": hash, "tags": "management"}),
    )
    .await
    .expect(201);
    assert_eq!(
        api.as_user(Some((&copy, "p2")))
            .get("/api/whoami")
            .await
            .expect(200)["name"],
        copy.as_str()
    );

    // Refusals: tags missing, both password and hash, a hash that is not base64.
    let bad = format!("/api/users/{}", unique("http-user"));
    let reason = api
        .put(&bad, json!({"password": "p"}))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "tags_not_present");
    let reason = api
        .put(
            &bad,
            json!({"password": "p", "password_hash": hash, "tags": ""}),
        )
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "both_password_and_password_hash_are_provided");
    let reason = api
        .put(&bad, json!({"password_hash": "not base64!!", "tags": ""}))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, json!(["not_base64", "not base64!!"]));
    api.get(&bad).await.refused(404, "Object Not Found");

    api.delete(&path).await.expect(204);
    api.delete(&path).await.refused(404, "Object Not Found");
    api.post("/api/users/bulk-delete", json!({"users": [copy]}))
        .await
        .expect(204);
    api.get(&format!("/api/users/{copy}"))
        .await
        .refused(404, "Object Not Found");
    let reason = api
        .post("/api/users/bulk-delete", json!({"nope": 1}))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "[{key_missing,users}]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_set_shown_and_cleared() {
    let (_broker, api) = api().await;
    let vhost = vhost(&api).await;
    let user = unique("http-user");
    api.put(
        &format!("/api/users/{user}"),
        json!({"password": "p", "tags": ""}),
    )
    .await
    .expect(201);
    let path = format!("/api/permissions/{vhost}/{user}");
    api.put(
        &path,
        json!({"configure": ".*", "write": ".*", "read": ".*"}),
    )
    .await
    .expect(201);
    api.put(&path, json!({"configure": "^a", "write": "", "read": ".*"}))
        .await
        .expect(204);
    let shown = api.get(&path).await.expect(200);
    assert_eq!(
        shown,
        json!({"user": user, "vhost": vhost, "configure": "^a", "write": "", "read": ".*"})
    );
    let of_vhost = api
        .get(&format!("/api/vhosts/{vhost}/permissions"))
        .await
        .expect(200);
    assert!(of_vhost
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["user"] == user.as_str()));
    let of_user = api
        .get(&format!("/api/users/{user}/permissions"))
        .await
        .expect(200);
    assert_eq!(of_user.as_array().unwrap().len(), 1);
    let reason = api
        .put(&path, json!({"configure": ".*"}))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "[{key_missing,write},{key_missing,read}]");
    let reason = api
        .put(
            &format!("/api/permissions/{}/{user}", unique("nowhere")),
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "vhost_or_user_not_found");
    let bad_regex = api
        .put(
            &path,
            json!({"configure": "(", "write": ".*", "read": ".*"}),
        )
        .await;
    assert_eq!(bad_regex.status(), 400, "{}", bad_regex.body);

    // Topic permissions.
    let topic = format!("/api/topic-permissions/{vhost}/{user}");
    api.put(
        &topic,
        json!({"exchange": "amq.topic", "write": "^w", "read": "^r"}),
    )
    .await
    .expect(201);
    let shown = api.get(&topic).await.expect(200);
    assert_eq!(shown[0]["exchange"], "amq.topic");
    assert_eq!(shown[0]["write"], "^w");
    let reason = api
        .put(&topic, json!({"write": ".*", "read": ".*"}))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "[{key_missing,exchange}]");
    api.delete(&topic).await.expect(204);
    api.delete(&topic).await.refused(404, "Object Not Found");

    api.delete(&path).await.expect(204);
    api.delete(&path).await.refused(404, "Object Not Found");
    api.get(&path).await.refused(404, "Object Not Found");
    api.delete(&format!("/api/users/{user}")).await.expect(204);
    api.delete(&format!("/api/vhosts/{vhost}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_are_declared_checked_and_deleted() {
    let (_broker, api) = api().await;
    let vhost = vhost(&api).await;
    let name = unique("x");
    let path = format!("/api/exchanges/{vhost}/{name}");
    api.put(&path, json!({"type": "direct"})).await.expect(201);
    api.put(&path, json!({"type": "direct"})).await.expect(204);
    let shown = api.get(&path).await.expect(200);
    assert_eq!(shown["type"], "direct");
    assert_eq!(shown["durable"], false);
    assert_eq!(shown["vhost"], vhost.as_str());
    let reason = api
        .put(&path, json!({"type": "fanout"}))
        .await
        .refused(400, "bad_request");
    assert_eq!(
        reason,
        format!(
            "inequivalent arg 'type' for exchange '{name}' in vhost '{vhost}': received 'fanout' but current is 'direct'"
        )
    );
    let reason = api
        .put(
            &format!("/api/exchanges/{vhost}/{}", unique("x")),
            json!({"type": "nope"}),
        )
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "invalid exchange type 'nope'");
    let reason = api
        .put(
            &format!("/api/exchanges/{vhost}/amq.mine"),
            json!({"type": "direct"}),
        )
        .await
        .refused(401, "not_authorised");
    assert_eq!(reason, "Access refused.");
    let reason = api
        .put(
            &format!("/api/exchanges/{}/x", unique("nowhere")),
            json!({"type": "direct"}),
        )
        .await
        .refused(404, "not_found");
    assert_eq!(reason, "vhost_not_found");
    api.delete(&format!("/api/exchanges/{vhost}/amq.direct"))
        .await
        .refused(401, "not_authorised");
    // The default exchange is amq.default in paths, "" in bodies.
    let default = api
        .get(&format!("/api/exchanges/{vhost}/amq.default"))
        .await
        .expect(200);
    assert_eq!(default["name"], "");
    let listed = api
        .get(&format!("/api/exchanges/{vhost}"))
        .await
        .expect(200);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"") && names.contains(&"amq.topic") && names.contains(&name.as_str()));

    // if-unused: a bound exchange stays.
    let queue = unique("q");
    api.put(&format!("/api/queues/{vhost}/{queue}"), json!({}))
        .await
        .expect(201);
    api.post(
        &format!("/api/bindings/{vhost}/e/{name}/q/{queue}"),
        json!({"routing_key": "k"}),
    )
    .await
    .expect(201);
    let reason = api
        .delete(&format!("{path}?if-unused=true"))
        .await
        .refused(400, "bad_request");
    assert_eq!(
        reason,
        format!("exchange '{name}' in vhost '{vhost}' in use")
    );
    api.delete(&path).await.expect(204);
    api.delete(&path).await.refused(404, "Object Not Found");
    api.get(&path).await.refused(404, "Object Not Found");
    api.delete(&format!("/api/vhosts/{vhost}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_declared_checked_purged_and_deleted() {
    let (broker, api) = api().await;
    let vhost = vhost(&api).await;
    let name = unique("q");
    let path = format!("/api/queues/{vhost}/{name}");
    api.put(
        &path,
        json!({"durable": true, "arguments": {"x-message-ttl": 60000}}),
    )
    .await
    .expect(201);
    api.put(
        &path,
        json!({"durable": true, "arguments": {"x-message-ttl": 60000}}),
    )
    .await
    .expect(204);
    let reason = api
        .put(
            &path,
            json!({"durable": false, "arguments": {"x-message-ttl": 60000}}),
        )
        .await
        .refused(400, "bad_request");
    assert_eq!(
        reason,
        format!(
            "inequivalent arg 'durable' for queue '{name}' in vhost '{vhost}': received 'false' but current is 'true'"
        )
    );
    let reason = api
        .put(&path, json!({"durable": "x"}))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, json!(["not_boolean", "x"]));
    let reason = api
        .put(&format!("/api/queues/{vhost}/amq.mine"), json!({}))
        .await
        .refused(401, "not_authorised");
    assert_eq!(reason, "Access refused.");
    let reason = api
        .put(&format!("/api/queues/{}/q", unique("nowhere")), json!({}))
        .await
        .refused(404, "not_found");
    assert_eq!(reason, "vhost_not_found");
    let bad_argument = api
        .put(
            &format!("/api/queues/{vhost}/{}", unique("q")),
            json!({"arguments": {"x-max-length": "x"}}),
        )
        .await;
    assert_eq!(
        bad_argument
            .refused(400, "bad_request")
            .as_str()
            .map(|r| r.starts_with("invalid arg 'x-max-length'")),
        Some(true)
    );

    // Messages published over AMQP show in its counts; purge empties it.
    let url = broker.url_with("guest", "guest", &vhost);
    let connection = lapin_connect(&url).await;
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    for _ in 0..3 {
        channel
            .basic_publish("", &name, Default::default(), b"m", Default::default())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let shown = api
        .until(&path, |q| q["messages"] == 3 && q["memory"].is_u64())
        .await;
    assert_eq!(shown["messages"], 3, "{shown}");
    assert_eq!(shown["messages_ready"], 3);
    assert!(shown["memory"].as_u64().unwrap() > 0, "{shown}");
    assert_eq!(shown["durable"], true);
    assert_eq!(shown["arguments"], json!({"x-message-ttl": 60000}));
    let reason = api
        .delete(&format!("{path}?if-empty=true"))
        .await
        .refused(400, "bad_request");
    assert_eq!(
        reason,
        format!("queue '{name}' in vhost '{vhost}' not empty")
    );
    api.delete(&format!("{path}/contents")).await.expect(204);
    let shown = api.until(&path, |q| q["messages"] == 0).await;
    assert_eq!(shown["messages"], 0, "{shown}");
    api.delete(&format!("/api/queues/{vhost}/{}/contents", unique("none")))
        .await
        .refused(404, "Object Not Found");
    // Actions: sync is answered for a queue (no mirrors to sync), refused when unknown.
    api.post(&format!("{path}/actions"), json!({"action": "sync"}))
        .await
        .expect(204);
    let reason = api
        .post(&format!("{path}/actions"), json!({"action": "nope"}))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, json!(["unknown", "nope"]));
    let reason = api
        .post(&format!("{path}/actions"), json!({}))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "[{key_missing,action}]");

    connection.close(200, "bye").await.unwrap();
    api.delete(&format!("{path}?if-empty=true&if-unused=true"))
        .await
        .expect(204);
    api.delete(&path).await.refused(404, "Object Not Found");
    api.get(&path).await.refused(404, "Object Not Found");
    api.get(&format!("/api/queues/{}", unique("nowhere")))
        .await
        .refused(404, "Object Not Found");
    api.delete(&format!("/api/vhosts/{vhost}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_are_made_named_by_their_properties_and_removed() {
    let (_broker, api) = api().await;
    let vhost = vhost(&api).await;
    let (exchange, queue, other) = (unique("x"), unique("q"), unique("x"));
    api.put(
        &format!("/api/exchanges/{vhost}/{exchange}"),
        json!({"type": "direct"}),
    )
    .await
    .expect(201);
    api.put(
        &format!("/api/exchanges/{vhost}/{other}"),
        json!({"type": "fanout"}),
    )
    .await
    .expect(201);
    api.put(&format!("/api/queues/{vhost}/{queue}"), json!({}))
        .await
        .expect(201);
    let between = format!("/api/bindings/{vhost}/e/{exchange}/q/{queue}");
    let made = api
        .post(&between, json!({"routing_key": "k", "arguments": {}}))
        .await;
    assert_eq!(made.status(), 201);
    assert_eq!(made.headers["location"], format!("{queue}/k").as_str());
    // A key that needs quoting, and one with arguments.
    api.post(&between, json!({"routing_key": "a/b %", "arguments": {}}))
        .await
        .expect(201);
    api.post(
        &between,
        json!({"routing_key": "k2", "arguments": {"x-any": 1}}),
    )
    .await
    .expect(201);
    let listed = api.get(&between).await.expect(200);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let plain = listed.iter().find(|b| b["routing_key"] == "k").unwrap();
    assert_eq!(plain["properties_key"], "k");
    assert_eq!(plain["destination_type"], "queue");
    assert_eq!(plain["source"], exchange.as_str());
    let quoted = listed.iter().find(|b| b["routing_key"] == "a/b %").unwrap();
    assert_eq!(quoted["properties_key"], "a%2Fb+%25");
    let hashed = listed.iter().find(|b| b["routing_key"] == "k2").unwrap();
    let hashed_key = hashed["properties_key"].as_str().unwrap().to_string();
    assert!(hashed_key.starts_with("k2~"), "{hashed_key}");
    // Each is reached by its key (percent-encoded once more in the path).
    let one = api
        .get(&format!("{between}/{}", segment("a%2Fb+%25")))
        .await
        .expect(200);
    assert_eq!(one["routing_key"], "a/b %");
    api.get(&format!("{between}/{}", segment(&hashed_key)))
        .await
        .expect(200);
    api.get(&format!("{between}/nope"))
        .await
        .refused(404, "Object Not Found");
    // The queue's bindings include the default exchange's.
    let of_queue = api
        .get(&format!("/api/queues/{vhost}/{queue}/bindings"))
        .await
        .expect(200);
    assert!(of_queue
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["source"] == ""));
    assert_eq!(of_queue.as_array().unwrap().len(), 4);
    let of_source = api
        .get(&format!(
            "/api/exchanges/{vhost}/{exchange}/bindings/source"
        ))
        .await
        .expect(200);
    assert_eq!(of_source.as_array().unwrap().len(), 3);
    // Exchange to exchange.
    let e2e = format!("/api/bindings/{vhost}/e/{exchange}/e/{other}");
    api.post(&e2e, json!({"routing_key": "ee"}))
        .await
        .expect(201);
    let to_other = api
        .get(&format!(
            "/api/exchanges/{vhost}/{other}/bindings/destination"
        ))
        .await
        .expect(200);
    assert_eq!(to_other[0]["destination_type"], "exchange");
    api.delete(&format!("{e2e}/ee")).await.expect(204);
    // Refusals: a missing exchange or queue, the default exchange, a missing vhost.
    let reason = api
        .post(
            &format!("/api/bindings/{vhost}/e/nonexistent/q/{queue}"),
            json!({"routing_key": "k"}),
        )
        .await
        .refused(404, "not_found");
    assert_eq!(
        reason,
        format!("no exchange 'nonexistent' in vhost '{vhost}'")
    );
    let reason = api
        .post(
            &format!("/api/bindings/{vhost}/e/{exchange}/q/nonexistent"),
            json!({"routing_key": "k"}),
        )
        .await
        .refused(404, "not_found");
    assert_eq!(reason, format!("no queue 'nonexistent' in vhost '{vhost}'"));
    api.post(
        &format!("/api/bindings/{vhost}/e/amq.default/q/{queue}"),
        json!({"routing_key": "k"}),
    )
    .await
    .refused(401, "not_authorised");
    let reason = api
        .post(
            &format!("/api/bindings/{}/e/x/q/q", unique("nowhere")),
            json!({}),
        )
        .await
        .refused(404, "not_found");
    assert_eq!(reason, "vhost_not_found");
    assert_eq!(
        api.get(&format!("/api/bindings/{vhost}/e/nonexistent/q/{queue}"))
            .await
            .expect(200),
        json!([])
    );
    // Removed once; then not there.
    api.delete(&format!("{between}/k")).await.expect(204);
    api.delete(&format!("{between}/k"))
        .await
        .refused(404, "Object Not Found");
    api.delete(&format!("{between}/{}", segment(&hashed_key)))
        .await
        .expect(204);
    let left = api.get(&between).await.expect(200);
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    api.delete(&format!("/api/vhosts/{vhost}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_and_limits_are_set_and_cleared() {
    let (_broker, api) = api().await;
    let vhost = vhost(&api).await;
    let path = format!("/api/policies/{vhost}/p");
    api.put(
        &path,
        json!({"pattern": "^q$", "definition": {"max-length": 10}, "priority": 1, "apply-to": "queues"}),
    )
    .await
    .expect(201);
    let shown = api.get(&path).await.expect(200);
    assert_eq!(
        shown,
        json!({"vhost": vhost, "name": "p", "pattern": "^q$", "apply-to": "queues", "definition": {"max-length": 10}, "priority": 1})
    );
    // Without apply-to, it is "all" again.
    api.put(
        &path,
        json!({"pattern": "^q$", "definition": {"max-length": 10}}),
    )
    .await
    .expect(204);
    assert_eq!(api.get(&path).await.expect(200)["apply-to"], "all");
    let reason = api
        .put(&path, json!({"definition": {"max-length": 1}}))
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "[{key_missing,pattern}]");
    for bad in [
        json!({"pattern": "^q$", "definition": {"nope": 1}}),
        json!({"pattern": "(", "definition": {"max-length": 1}}),
        json!({"pattern": "^q$", "definition": {"max-length": 1}, "apply-to": "nope"}),
        json!({"pattern": "^q$", "definition": {}}),
    ] {
        let reason = api
            .put(&path, bad.clone())
            .await
            .refused(400, "bad_request");
        assert!(
            reason.as_str().unwrap().starts_with("Validation failed"),
            "{bad}: {reason}"
        );
    }
    api.delete(&path).await.expect(204);
    api.delete(&path).await.refused(404, "Object Not Found");

    // Vhost limits, one at a time.
    let limit = format!("/api/vhost-limits/{vhost}/max-connections");
    api.put(&limit, json!({"value": 10})).await.expect(204);
    api.put(
        &format!("/api/vhost-limits/{vhost}/max-queues"),
        json!({"value": 50}),
    )
    .await
    .expect(204);
    let shown = api
        .get(&format!("/api/vhost-limits/{vhost}"))
        .await
        .expect(200);
    assert_eq!(
        shown[0]["value"],
        json!({"max-connections": 10, "max-queues": 50})
    );
    let reason = api.put(&limit, json!({})).await.refused(400, "bad_request");
    assert_eq!(reason, "[{key_missing,value}]");
    api.put(&limit, json!({"value": "x"}))
        .await
        .refused(400, "bad_request");
    api.delete(&format!("/api/vhost-limits/{vhost}/max-queues"))
        .await
        .expect(204);
    api.delete(&format!("/api/vhost-limits/{vhost}/max-queues"))
        .await
        .expect(204);
    let reason = api
        .put(
            &format!("/api/vhost-limits/{}/max-connections", unique("nowhere")),
            json!({"value": 1}),
        )
        .await
        .refused(404, "not_found");
    assert_eq!(reason, "vhost_not_found");

    // User limits.
    let user = unique("http-user");
    api.put(
        &format!("/api/users/{user}"),
        json!({"password": "p", "tags": ""}),
    )
    .await
    .expect(201);
    api.put(
        &format!("/api/user-limits/{user}/max-channels"),
        json!({"value": 5}),
    )
    .await
    .expect(204);
    let shown = api
        .get(&format!("/api/user-limits/{user}"))
        .await
        .expect(200);
    assert_eq!(shown[0]["value"], json!({"max-channels": 5}));
    let reason = api
        .put(
            &format!("/api/user-limits/{}/max-channels", unique("nobody")),
            json!({"value": 1}),
        )
        .await
        .refused(400, "bad_request");
    assert_eq!(reason[0], "no_such_user");
    api.delete(&format!("/api/user-limits/{user}/max-channels"))
        .await
        .expect(204);
    assert_eq!(
        api.get(&format!("/api/user-limits/{user}"))
            .await
            .expect(200),
        json!([])
    );
    api.delete(&format!("/api/users/{user}")).await.expect(204);
    api.delete(&format!("/api/vhosts/{vhost}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_need_percent_decoding_reach_their_objects() {
    let (_broker, api) = api().await;
    let vhost = vhost(&api).await;
    for name in ["with space", "ünïcode-é", "slash/inside", "per%cent"] {
        let path = format!("/api/queues/{vhost}/{}", segment(name));
        api.put(&path, json!({})).await.expect(201);
        assert_eq!(api.get(&path).await.expect(200)["name"], name);
        api.delete(&path).await.expect(204);
    }
    // The default vhost is %2F.
    let queue = unique("q");
    api.put(&format!("/api/queues/%2F/{queue}"), json!({}))
        .await
        .expect(201);
    assert_eq!(
        api.get(&format!("/api/queues/%2f/{queue}"))
            .await
            .expect(200)["vhost"],
        "/"
    );
    api.delete(&format!("/api/queues/%2F/{queue}"))
        .await
        .expect(204);
    api.delete(&format!("/api/vhosts/{vhost}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_and_change_nothing() {
    let (broker, api) = api().await;
    let vhost = vhost(&api).await;
    let queue = unique("q");
    let path = format!("/api/queues/{vhost}/{queue}");
    let reason = api
        .raw(Method::PUT, &path, b"{bad".to_vec())
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "not_json");
    let reason = api
        .raw(Method::PUT, &path, b"[1, 2]".to_vec())
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "not_json");
    api.get(&path).await.refused(404, "Object Not Found");
    // An empty body is an empty object.
    api.raw(Method::PUT, &path, Vec::new()).await.expect(201);
    // Unknown paths and methods.
    api.get("/api/nope").await.refused(404, "Object Not Found");
    let patched = api.request(Method::PATCH, &path, Some(json!({}))).await;
    assert!(
        [405, 501].contains(&patched.status()),
        "PATCH: {}",
        patched.status()
    );
    assert_eq!(api.get(&format!("{path}/get")).await.status(), 405);
    // A trailing slash is the same path.
    assert_eq!(
        api.get(&format!("{path}/")).await.expect(200)["name"],
        queue.as_str()
    );
    if !broker.is_external() {
        // Wharf bounds a body at 20 MB with 413 (RabbitMQ crashes its handler with 500
        // past 8 MB).
        let huge = vec![b' '; 21 * 1024 * 1024];
        let answer = api.raw(Method::PUT, &path, huge).await;
        assert_eq!(answer.status(), 413, "{}", answer.body);
        // The rest of the body was not read: the connection is not reused.
        assert_eq!(answer.headers["connection"], "close");
    }
    api.delete(&format!("/api/vhosts/{vhost}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_export_and_import() {
    let (_broker, api) = api().await;
    let vhost = vhost(&api).await;
    let queue = unique("q");
    let defs = json!({
        "queues": [{"name": queue, "vhost": vhost, "durable": true, "auto_delete": false, "arguments": {}}],
        "exchanges": [{"name": "defx", "vhost": vhost, "type": "fanout", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}],
        "bindings": [{"source": "defx", "vhost": vhost, "destination": queue, "destination_type": "queue", "routing_key": "", "arguments": {}}],
    });
    api.post("/api/definitions", defs).await.expect(204);
    assert_eq!(
        api.get(&format!("/api/queues/{vhost}/{queue}"))
            .await
            .expect(200)["durable"],
        true
    );
    let exported = api.get("/api/definitions").await.expect(200);
    for key in [
        "users",
        "vhosts",
        "permissions",
        "queues",
        "exchanges",
        "bindings",
        "policies",
    ] {
        assert!(exported[key].is_array(), "{key} in {exported}");
    }
    assert!(exported["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == queue.as_str()));
    let one = api
        .get(&format!("/api/definitions/{vhost}"))
        .await
        .expect(200);
    assert_eq!(one["queues"][0]["name"], queue.as_str());
    assert!(one["queues"][0].get("vhost").is_none(), "{one}");
    // A vhost's own file: items without a vhost key.
    let second = unique("q");
    api.post(
        &format!("/api/definitions/{vhost}"),
        json!({"queues": [{"name": second, "durable": true, "auto_delete": false, "arguments": {}}]}),
    )
    .await
    .expect(204);
    api.get(&format!("/api/queues/{vhost}/{second}"))
        .await
        .expect(200);
    let reason = api
        .raw(Method::POST, "/api/definitions", b"{\"queues\": [".to_vec())
        .await
        .refused(400, "bad_request");
    assert_eq!(reason, "failed_to_parse_json");
    let missing_vhost = json!({"queues": [{"name": "q", "vhost": unique("nowhere"), "durable": true, "auto_delete": false, "arguments": {}}]});
    assert_eq!(
        api.post("/api/definitions", missing_vhost).await.status(),
        400
    );
    api.delete(&format!("/api/vhosts/{vhost}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_quorum_is_listed_as_quorum() {
    let (_broker, api) = api().await;
    let vhost = vhost(&api).await;
    let (quorum, classic) = (unique("qq"), unique("cq"));
    api.put(
        &format!("/api/queues/{vhost}/{quorum}"),
        json!({"durable": true, "arguments": {"x-queue-type": "quorum"}}),
    )
    .await
    .expect(201);
    api.put(
        &format!("/api/queues/{vhost}/{classic}"),
        json!({"durable": true}),
    )
    .await
    .expect(201);
    let shown = api
        .get(&format!("/api/queues/{vhost}/{quorum}"))
        .await
        .expect(200);
    assert_eq!(shown["type"], "quorum");
    let listed = api
        .get(&format!("/api/queues/{vhost}?columns=name,type"))
        .await
        .expect(200);
    let type_of = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .map(|q| q["type"].clone())
    };
    assert_eq!(type_of(&quorum), Some(json!("quorum")));
    assert_eq!(type_of(&classic), Some(json!("classic")));
    api.delete(&format!("/api/vhosts/{vhost}"))
        .await
        .expect(204);
}
