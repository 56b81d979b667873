//! Definitions in RabbitMQ's JSON format: a file exported from RabbitMQ 3.10.8
//! (`rabbitmqctl export_definitions`, in fixtures/) imports with working logins,
//! permissions, topic permissions, policies, exchanges, queues and bindings; what Wharf
//! exports holds the same. Runs against RabbitMQ too (WHARF_TEST_RABBITMQCTL).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::Value;

fn fixture_path() -> String {
    format!(
        "{}/tests/fixtures/rabbitmq-3.10.8-definitions.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_path()).unwrap()).unwrap()
}

fn url(broker: &TestBroker, user: &str, password: &str) -> String {
    broker.url_with(user, password, "fixture")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_exported_from_rabbitmq_import_with_working_logins() {
    let broker = start_broker().await;
    broker.must(&["import_definitions", &fixture_path()]);

    // Passwords hashed by RabbitMQ log in; a user without one cannot.
    let admin = lapin_connect(&url(&broker, "fx-admin", "admin-pass")).await;
    let app = lapin_connect(&url(&broker, "fx-app", "app-pass")).await;
    for password in ["", "x", "app-pass"] {
        let refused = try_lapin_connect(&url(&broker, "fx-cert", password)).await;
        assert_eq!(protocol_error(&refused.unwrap_err()).0, 403);
    }
    assert_eq!(
        protocol_error(
            &try_lapin_connect(&url(&broker, "fx-app", "wrong"))
                .await
                .unwrap_err()
        )
        .0,
        403
    );

    // Permissions: fx-app only on app.*, and its topic permission on amq.topic.
    let ch = app.create_channel().await.unwrap();
    let closed = channel_error(&ch);
    let refused = ch
        .queue_declare(
            "other",
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert!(refused.is_err());
    assert_eq!(closed_with(closed).await.0, 403);
    let ch = app.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.basic_publish(
        "amq.topic",
        "fx-app.news",
        BasicPublishOptions::default(),
        b"m",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let closed = channel_error(&ch);
    let _ = ch
        .basic_publish(
            "amq.topic",
            "other.news",
            BasicPublishOptions::default(),
            b"m",
            BasicProperties::default(),
        )
        .await;
    assert_eq!(closed_with(closed).await.0, 403);

    // Exchanges, queues, bindings and the alternate exchange route as they did there.
    let ch = admin.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for key in ["order.1", "main.nothing-bound"] {
        ch.basic_publish(
            "app.events",
            key,
            BasicPublishOptions::default(),
            key.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    assert!(count_becomes(&ch, "app.orders", 1).await);
    assert!(count_becomes(&ch, "app.lost", 1).await, "via app.main's AE");
    for queue in ["app.orders", "app.lost", "app.ttl.audit"] {
        ch.queue_purge(queue, QueuePurgeOptions::default())
            .await
            .unwrap();
    }
}

/// The items of `list` in `defs`, each as the JSON text of the listed keys.
fn items(defs: &Value, list: &str, keys: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = defs[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {defs}"))
        .iter()
        .map(|item| {
            let picked: serde_json::Map<String, Value> = keys
                .iter()
                .map(|k| (k.to_string(), item[*k].clone()))
                .collect();
            Value::Object(picked).to_string()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_holds_what_was_imported() {
    let broker = start_broker().await;
    let Some(inner) = broker.broker.clone() else {
        return; // RabbitMQ's own export is the fixture
    };
    broker.must(&["import_definitions", &fixture_path()]);
    let exported = wharf_core::definitions_json::export(&inner);
    let fixture = fixture();
    let only_fixture = |mut defs: Value| {
        for list in ["users", "permissions", "topic_permissions"] {
            let kept: Vec<Value> = defs[list]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| {
                    i.get("vhost").is_none_or(|v| v == "fixture")
                        && i.get("user")
                            .or(i.get("name"))
                            .is_some_and(|u| u.as_str().is_some_and(|u| u.starts_with("fx-")))
                })
                .cloned()
                .collect();
            defs[list] = Value::Array(kept);
        }
        defs
    };
    let exported = only_fixture(exported);
    let compared: [(&str, &[&str]); 7] = [
        (
            "users",
            &["name", "password_hash", "hashing_algorithm", "tags"],
        ),
        (
            "permissions",
            &["user", "vhost", "configure", "write", "read"],
        ),
        (
            "topic_permissions",
            &["user", "vhost", "exchange", "write", "read"],
        ),
        (
            "policies",
            &[
                "vhost",
                "name",
                "pattern",
                "apply-to",
                "definition",
                "priority",
            ],
        ),
        (
            "exchanges",
            &[
                "vhost",
                "name",
                "type",
                "durable",
                "auto_delete",
                "arguments",
            ],
        ),
        (
            "queues",
            &["vhost", "name", "durable", "auto_delete", "arguments"],
        ),
        (
            "bindings",
            &[
                "vhost",
                "source",
                "destination",
                "destination_type",
                "routing_key",
                "arguments",
            ],
        ),
    ];
    for (list, keys) in compared {
        assert_eq!(
            items(&exported, list, keys),
            items(&fixture, list, keys),
            "{list}"
        );
    }
    // And what was exported imports again into a fresh broker.
    let other = start_broker().await;
    let text = wharf_core::definitions_json::export(&inner).to_string();
    let file = TempDir::new("wharf-defs");
    std::fs::write(&file.0, text).unwrap();
    other.must(&["import_definitions", file.0.to_str().unwrap()]);
    lapin_connect(&url(&other, "fx-app", "app-pass")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_are_refused_saying_what_is_wrong() {
    let broker = start_broker().await;
    if broker.is_external() {
        return; // rabbitmqctl's own messages
    }
    let file = TempDir::new("wharf-bad-defs");
    let cases = [
        ("{not json", "the definitions are not JSON"),
        ("[]", "must be a JSON object"),
        (
            r#"{"users":[{"name":"u","password_hash":"!!","hashing_algorithm":"rabbit_password_hashing_sha256","tags":[]}]}"#,
            "password_hash is not base64",
        ),
        (
            r#"{"users":[{"name":"u","password_hash":"AAAAAAAA","hashing_algorithm":"rabbit_password_hashing_md5","tags":[]}]}"#,
            "unsupported hashing algorithm 'rabbit_password_hashing_md5'",
        ),
        (
            r#"{"permissions":[{"user":"nobody","vhost":"/","configure":".*","write":".*","read":".*"}]}"#,
            "User nobody does not exist",
        ),
        (
            r#"{"queues":[{"name":"q","vhost":"nowhere","durable":true,"auto_delete":false,"arguments":{}}]}"#,
            "its vhost does not exist",
        ),
        (
            r#"{"queues":[{"name":"q","vhost":"/","durable":true,"auto_delete":false,"arguments":{"x-max-length":-1}}]}"#,
            "x-max-length",
        ),
    ];
    for (text, reason) in cases {
        std::fs::write(&file.0, text).unwrap();
        let error = broker
            .admin(&["import_definitions", file.0.to_str().unwrap()])
            .unwrap_err();
        assert!(error.contains(reason), "{text}: {error}");
    }
}
