//! What the web UI needs of the server: its files, its sessions (a login that yields a
//! token standing for the password), and moving a queue's messages. These are Wharf's
//! own (RabbitMQ's UI is another program, and it moves messages with a shovel), so
//! against an external RabbitMQ the tests return at once.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use reqwest::Method;
use serde_json::{json, Value};
use wharf_integration::management::{segment, Management};
use wharf_integration::start_broker_with_management;

/// Logs in through the UI's endpoint: the answer.
async fn login(
    api: &Management,
    user: &str,
    password: &str,
) -> wharf_integration::management::Answer {
    api.as_user(None)
        .post(
            "/api/wharf/session",
            json!({"username": user, "password": password}),
        )
        .await
}

/// A request carrying a session's token rather than a password.
async fn with_token(
    api: &Management,
    method: Method,
    path: &str,
    token: &str,
) -> wharf_integration::management::Answer {
    let request = api.as_user(None).builder(method, path).bearer_auth(token);
    api.send(request).await
}

/// The status of a request made with a session token.
async fn status_with_token(api: &Management, method: Method, path: &str, token: &str) -> u16 {
    with_token(api, method, path, token).await.status()
}

/// A session token of the user, who must be let in.
async fn token_for(api: &Management, user: &str, password: &str) -> String {
    let session = login(api, user, password).await.expect(200);
    session["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_is_served_with_a_policy_and_revalidated_by_its_etag() {
    let broker = start_broker_with_management().await;
    if broker.is_external() {
        return;
    }
    let api = Management::of(&broker).as_user(None);
    let page = api.get("/").await;
    assert_eq!(page.status(), 200);
    let headers = &page.headers;
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(page.body.as_str().unwrap().contains("/ui/js/main.js"));

    let script = api.get("/ui/js/main.js").await;
    assert_eq!(script.status(), 200);
    assert!(script.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let etag = script.headers["etag"].to_str().unwrap().to_string();
    let again = api
        .send(
            api.builder(Method::GET, "/ui/js/main.js")
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(again.status(), 304);
    assert_eq!(again.body, Value::Null);

    for missing in [
        "/ui/js/nope.js",
        "/ui/index.html",
        "/ui/../Cargo.toml",
        "/ui/",
    ] {
        assert_eq!(api.get(missing).await.status(), 404, "{missing}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_yields_a_token_that_stands_for_the_password_until_logout() {
    let broker = start_broker_with_management().await;
    if broker.is_external() {
        return;
    }
    let api = Management::of(&broker);
    let session = login(&api, "guest", "guest").await.expect(200);
    assert_eq!(session["name"], "guest");
    assert_eq!(session["tags"], json!(["administrator"]));
    let token = session["token"].as_str().unwrap().to_string();
    assert!(!token.contains("guest:guest"));
    assert!(session["expires"].as_u64().unwrap() > 0);

    let me = with_token(&api, Method::GET, "/api/whoami", &token)
        .await
        .expect(200);
    assert_eq!(me["name"], "guest");

    // A token altered by one character is refused, without inviting a password prompt.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let refused = with_token(&api, Method::GET, "/api/whoami", &forged).await;
    assert_eq!(refused.status(), 401);
    assert!(!refused.headers.contains_key("www-authenticate"));
    assert_eq!(
        status_with_token(&api, Method::GET, "/api/whoami", "not a token").await,
        401
    );

    assert_eq!(
        status_with_token(&api, Method::DELETE, "/api/wharf/session", &token).await,
        204
    );
    assert_eq!(
        status_with_token(&api, Method::GET, "/api/whoami", &token).await,
        401,
        "a token logged out of is refused"
    );
    // Logging out needs a session: a password is not one.
    assert_eq!(api.delete("/api/wharf/session").await.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_refused_as_the_api_refuses_the_password() {
    let broker = start_broker_with_management().await;
    if broker.is_external() {
        return;
    }
    let api = Management::of(&broker);
    let user = unique("ui-user");
    let path = format!("/api/users/{}", segment(&user));
    api.put(&path, json!({"password": "pw", "tags": ""}))
        .await
        .expect(201);

    let wrong = login(&api, "guest", "not the password").await;
    assert_eq!(wrong.status(), 401);
    assert!(!wrong.headers.contains_key("www-authenticate"));
    assert_eq!(wrong.body["reason"], "Login failed");
    assert_eq!(login(&api, "nobody", "pw").await.status(), 401);
    let untagged = login(&api, &user, "pw").await;
    assert_eq!(untagged.status(), 401);
    assert_eq!(untagged.body["reason"], "Not management user");
    let missing = api
        .as_user(None)
        .post("/api/wharf/session", json!({"username": "guest"}))
        .await;
    assert_eq!(missing.status(), 400);
    let not_json = api
        .as_user(None)
        .raw(
            Method::POST,
            "/api/wharf/session",
            b"username=guest".to_vec(),
        )
        .await;
    assert_eq!(not_json.status(), 400);

    // A token dies with its password and with its user.
    api.put(&path, json!({"password": "pw", "tags": "monitoring"}))
        .await
        .expect(204);
    let token = token_for(&api, &user, "pw").await;
    assert_eq!(
        status_with_token(&api, Method::GET, "/api/overview", &token).await,
        200
    );
    api.put(&path, json!({"password": "new", "tags": "monitoring"}))
        .await
        .expect(204);
    assert_eq!(
        status_with_token(&api, Method::GET, "/api/overview", &token).await,
        401
    );
    let token = token_for(&api, &user, "new").await;
    // Tags are read at each request: a token does not keep the rights of its login.
    assert_eq!(
        status_with_token(&api, Method::GET, "/api/nodes", &token).await,
        200
    );
    api.put(&path, json!({"tags": "management"}))
        .await
        .expect(204);
    assert_eq!(
        status_with_token(&api, Method::GET, "/api/nodes", &token).await,
        401
    );
    api.delete(&path).await.expect(204);
    assert_eq!(
        status_with_token(&api, Method::GET, "/api/whoami", &token).await,
        401
    );
}

async fn declare(channel: &lapin::Channel, queue: &str, arguments: FieldTable) {
    channel
        .queue_declare(
            queue,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .unwrap();
}

async fn publish(channel: &lapin::Channel, queue: &str, count: usize) {
    for i in 0..count {
        let properties = BasicProperties::default()
            .with_delivery_mode(if i % 2 == 0 { 2 } else { 1 })
            .with_message_id(format!("m{i}").into());
        channel
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

fn depth(api_answer: &Value) -> u64 {
    api_answer["messages"].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_messages_keeps_their_order_and_properties() {
    let broker = start_broker_with_management().await;
    if broker.is_external() {
        return;
    }
    let api = Management::of(&broker);
    let (_connection, channel) = confirming_channel(&broker).await;
    let (from, to) = (unique("from"), unique("to"));
    declare(&channel, &from, FieldTable::default()).await;
    declare(&channel, &to, FieldTable::default()).await;
    publish(&channel, &from, 2500).await;
    let moved = api
        .post(
            &format!("/api/wharf/queues/%2F/{}/move", segment(&from)),
            json!({"destination": to}),
        )
        .await
        .expect(200);
    assert_eq!(moved, json!({"moved": 2500}));
    let from_now = api
        .until(&format!("/api/queues/%2F/{}", segment(&from)), |q| {
            depth(q) == 0
        })
        .await;
    assert_eq!(depth(&from_now), 0);
    let to_now = api
        .until(&format!("/api/queues/%2F/{}", segment(&to)), |q| {
            depth(q) == 2500
        })
        .await;
    assert_eq!(depth(&to_now), 2500);
    for i in 0..3 {
        let got = channel
            .basic_get(&to, BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a moved message");
        assert_eq!(got.delivery.data, format!("{i}").as_bytes());
        assert_eq!(got.delivery.routing_key.as_str(), to);
        assert_eq!(
            got.delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str()),
            Some(format!("m{i}").as_str())
        );
        assert_eq!(
            got.delivery.properties.delivery_mode(),
            &Some(if i % 2 == 0 { 2 } else { 1 })
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_the_destination_cannot_take_whole_loses_nothing() {
    let broker = start_broker_with_management().await;
    if broker.is_external() {
        return;
    }
    let api = Management::of(&broker);
    let (_connection, channel) = confirming_channel(&broker).await;
    let (from, small) = (unique("from"), unique("small"));
    // A quorum source that drops a message at its first redelivery: a refused message
    // must go back as it was, not as a delivery.
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    quorum.insert("x-delivery-limit".into(), AMQPValue::LongInt(0));
    declare(&channel, &from, quorum).await;
    let mut limited = FieldTable::default();
    limited.insert("x-max-length".into(), AMQPValue::LongInt(10));
    limited.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    declare(&channel, &small, limited).await;
    publish(&channel, &from, 25).await;
    let path = format!("/api/wharf/queues/%2F/{}/move", segment(&from));
    let refused = api.post(&path, json!({"destination": small})).await;
    assert_eq!(refused.status(), 400);
    let reason = refused.body["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("is full") && reason.contains("10 messages were moved"),
        "{reason}"
    );
    let from_now = api
        .until(&format!("/api/queues/%2F/{}", segment(&from)), |q| {
            depth(q) == 15
        })
        .await;
    // With a delivery limit of 0, a message put back as a redelivery would be dropped.
    assert_eq!(depth(&from_now), 15, "what the destination refused stays");
    let small_now = api
        .get(&format!("/api/queues/%2F/{}", segment(&small)))
        .await
        .expect(200);
    assert_eq!(depth(&small_now), 10);

    // Names that are not there, the queue itself, and a body without a destination.
    let missing = api
        .post(&path, json!({"destination": "no such queue"}))
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.body["reason"],
        "no queue 'no such queue' in vhost '/'"
    );
    let nowhere = "/api/wharf/queues/%2F/no%20such%20queue/move";
    assert_eq!(
        api.post(nowhere, json!({"destination": small}))
            .await
            .status(),
        404
    );
    assert_eq!(
        api.post("/api/wharf/queues/nope/q/move", json!({"destination": "x"}))
            .await
            .status(),
        404
    );
    assert_eq!(
        api.post(&path, json!({"destination": from})).await.status(),
        400
    );
    assert_eq!(api.post(&path, json!({})).await.status(), 400);

    // A user who may not read the source moves nothing.
    let user = unique("reader");
    let user_path = format!("/api/users/{}", segment(&user));
    api.put(&user_path, json!({"password": "pw", "tags": "management"}))
        .await
        .expect(201);
    api.put(
        &format!("/api/permissions/%2F/{}", segment(&user)),
        json!({"configure": "", "write": ".*", "read": "^$"}),
    )
    .await
    .expect(201);
    let stranger = api.as_user(Some((&user, "pw")));
    assert_eq!(
        stranger
            .post(&path, json!({"destination": small}))
            .await
            .status(),
        401
    );
    let from_now = api
        .get(&format!("/api/queues/%2F/{}", segment(&from)))
        .await
        .expect(200);
    assert_eq!(depth(&from_now), 15);
    api.delete(&user_path).await.expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_message_goes_to_the_destination_only() {
    let broker = start_broker_with_management().await;
    if broker.is_external() {
        return;
    }
    let api = Management::of(&broker);
    let (_connection, channel) = confirming_channel(&broker).await;
    let (from, to, copied) = (unique("from"), unique("to"), unique("cc"));
    for queue in [&from, &to, &copied] {
        declare(&channel, queue, FieldTable::default()).await;
    }
    // Published with a CC header: routed to both `from` and `copied` once.
    let mut headers = FieldTable::default();
    headers.insert(
        "CC".into(),
        AMQPValue::FieldArray(vec![AMQPValue::LongString(copied.as_str().into())].into()),
    );
    channel
        .basic_publish(
            "",
            &from,
            BasicPublishOptions::default(),
            b"once",
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let moved = api
        .post(
            &format!("/api/wharf/queues/%2F/{}/move", segment(&from)),
            json!({"destination": to}),
        )
        .await
        .expect(200);
    assert_eq!(moved, json!({"moved": 1}));
    for (queue, expected) in [(&from, 0), (&to, 1), (&copied, 1)] {
        let shown = api
            .until(&format!("/api/queues/%2F/{}", segment(queue)), |q| {
                depth(q) == expected
            })
            .await;
        assert_eq!(depth(&shown), expected, "{queue}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_site_cannot_change_the_broker() {
    let broker = start_broker_with_management().await;
    if broker.is_external() {
        return; // RabbitMQ does not look at where a browser's request comes from
    }
    let api = Management::of(&broker);
    let queue = unique("csrf");
    let path = format!("/api/queues/%2F/{}", segment(&queue));
    let host = broker.http_addr.unwrap().to_string();
    // What a browser sends for a form or fetch on another site, with the basic
    // credentials it was once given for the API.
    for (name, value) in [
        ("sec-fetch-site", "cross-site".to_string()),
        ("sec-fetch-site", "same-site".to_string()),
        ("origin", "http://evil.example".to_string()),
        ("origin", "null".to_string()),
    ] {
        let refused = api
            .send(
                api.builder(Method::PUT, &path)
                    .header(name, value.as_str())
                    .header("content-type", "text/plain")
                    .body(r#"{"durable":true}"#),
            )
            .await;
        assert_eq!(refused.status(), 403, "{name}: {value}");
        assert_eq!(
            refused.body["reason"],
            "A request from another site may not change the broker"
        );
    }
    assert_eq!(api.get(&path).await.status(), 404, "nothing was declared");
    // Reading is not refused, and the UI's own (same-origin) requests go through.
    let read = api
        .send(
            api.builder(Method::GET, "/api/overview")
                .header("sec-fetch-site", "cross-site"),
        )
        .await;
    assert_eq!(read.status(), 200);
    let own = api
        .send(
            api.builder(Method::PUT, &path)
                .header("sec-fetch-site", "same-origin")
                .header("origin", format!("http://{host}"))
                .header("content-type", "application/json")
                .body(r#"{"durable":true}"#),
        )
        .await;
    assert_eq!(own.status(), 201);
    api.delete(&path).await.expect(204);
}
