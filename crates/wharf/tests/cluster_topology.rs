//! Exchanges, queues and bindings on a cluster: declared through any node, they exist on
//! every node (a queue lives on the node that declared it; the others know it), with
//! RabbitMQ's checks and texts whichever node is asked; deleted through any node, they go
//! everywhere, with what they take along (bindings, auto-delete exchanges); exclusive
//! queues go with their connection, and transient queues with their node's run.

mod support;

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};
use support::*;

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// The bindings of vhost `/` a node's HTTP API lists, as "source>destination:key".
fn bindings_on(spec: &NodeSpec) -> Vec<String> {
    let (code, body) = http("GET", spec, "/api/bindings/%2F", None);
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut found: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["source"] != "")
        .map(|b| {
            format!(
                "{}>{}:{}",
                b["source"].as_str().unwrap(),
                b["destination"].as_str().unwrap(),
                b["routing_key"].as_str().unwrap()
            )
        })
        .collect();
    found.sort();
    found
}

fn exchange_names_on(spec: &NodeSpec) -> Vec<String> {
    let (code, body) = http("GET", spec, "/api/exchanges/%2F", None);
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

async fn publish_confirmed(channel: &Channel, exchange: &str, key: &str, body: &[u8]) -> bool {
    let confirm = channel
        .basic_publish(
            exchange,
            key,
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    confirm.is_ack()
}

/// Waits until `check` holds (a background change is applied on every node shortly).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 15 s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_queues_and_bindings_made_through_any_node_hold_on_every_node() {
    let place = Place::new("topology");
    let specs = specs(&place, 3);
    let _nodes = start_all(&specs);

    let on0 = channel(&specs[0]).await;
    on0.exchange_declare(
        "orders",
        ExchangeKind::Topic,
        durable_exchange(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    on0.exchange_declare(
        "scratch",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    on0.queue_declare("q0", durable(), FieldTable::default())
        .await
        .unwrap();

    // Another node binds its own queue and the first node's to the first node's exchange.
    let on1 = channel(&specs[1]).await;
    on1.queue_declare("q1", durable(), FieldTable::default())
        .await
        .unwrap();
    on1.queue_bind(
        "q1",
        "orders",
        "a.#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    on1.queue_bind(
        "q0",
        "orders",
        "b.#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    // Every node knows all of it: listed, and checked as RabbitMQ checks a redeclare.
    for spec in &specs {
        let exchanges = exchange_names_on(spec);
        for name in ["orders", "scratch", "amq.topic"] {
            assert!(
                exchanges.iter().any(|e| e == name),
                "{}: {exchanges:?}",
                spec.name
            );
        }
        assert_eq!(
            bindings_on(spec),
            vec!["orders>q0:b.#", "orders>q1:a.#"],
            "{}",
            spec.name
        );
    }
    // The definitions export of any node is the cluster's: every node's queues.
    let (code, body) = http("GET", &specs[2], "/api/definitions", None);
    assert_eq!(code, 200, "{body}");
    let exported: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut queues: Vec<&str> = exported["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    queues.sort();
    assert_eq!(queues, vec!["q0", "q1"]);
    let on2 = channel(&specs[2]).await;
    let refused = on2
        .exchange_declare(
            "orders",
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        refusal(refused),
        "406 - PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'orders' in vhost '/': \
         received 'direct' but current is 'topic'"
    );
    let on2 = channel(&specs[2]).await;
    let refused = on2
        .queue_declare("q0", QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        refusal(refused),
        "406 - PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q0' in vhost '/': \
         received 'false' but current is 'true'"
    );
    let on2 = channel(&specs[2]).await;
    let refused = on2
        .queue_declare("amq.q", durable(), FieldTable::default())
        .await
        .unwrap_err();
    assert!(
        refusal(refused).starts_with("403 - ACCESS_REFUSED"),
        "reserved names are refused as on one node"
    );

    // A binding made through another node routes on the queue's node.
    let on0 = channel(&specs[0]).await;
    on0.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    assert!(publish_confirmed(&on0, "orders", "b.x", b"to q0").await);
    let got = on0
        .basic_get("q0", BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("routed to q0");
    assert_eq!(got.delivery.data, b"to q0");
    let on1 = channel(&specs[1]).await;
    on1.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    assert!(publish_confirmed(&on1, "orders", "a.x", b"to q1").await);
    // A message routed on one node to another node's queue is forwarded to it.
    assert!(publish_confirmed(&on1, "orders", "b.x", b"to q0 from n1").await);
    let got = on0
        .basic_get("q0", BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("forwarded to q0");
    assert_eq!(got.delivery.data, b"to q0 from n1");
    // Read through another node too, acknowledged there.
    assert!(publish_confirmed(&on0, "orders", "b.y", b"to q0 from n0").await);
    let got = on1
        .basic_get("q0", BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("read through n1");
    assert_eq!(got.delivery.data, b"to q0 from n0");
    got.delivery
        .ack(lapin::options::BasicAckOptions::default())
        .await
        .unwrap();

    // Deleted through any node, gone on all, with its bindings.
    let on2 = channel(&specs[2]).await;
    on2.exchange_delete("orders", ExchangeDeleteOptions::default())
        .await
        .unwrap();
    on2.queue_delete("q0", QueueDeleteOptions::default())
        .await
        .unwrap();
    for spec in &specs {
        assert!(
            !exchange_names_on(spec).iter().any(|e| e == "orders"),
            "{}",
            spec.name
        );
        assert_eq!(bindings_on(spec), Vec::<String>::new(), "{}", spec.name);
    }
    let on0 = channel(&specs[0]).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let gone = on0
        .queue_declare("q0", passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        refusal(gone),
        "404 - NOT_FOUND - no queue 'q0' in vhost '/'"
    );
    // Deleting again is not an error, as in RabbitMQ.
    let on1 = channel(&specs[1]).await;
    on1.queue_delete("q0", QueueDeleteOptions::default())
        .await
        .unwrap();
    on1.exchange_delete("orders", ExchangeDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queues_go_with_their_connection_and_transient_ones_with_their_node() {
    let place = Place::new("exclusive");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);

    let owner = connect(&specs[0]).await;
    let owned = owner.create_channel().await.unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    owned
        .queue_declare("mine", exclusive, FieldTable::default())
        .await
        .unwrap();
    let refused = channel(&specs[1])
        .await
        .queue_declare("mine", exclusive, FieldTable::default())
        .await
        .unwrap_err();
    assert!(
        refusal(refused).starts_with(
            "405 - RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'mine' in \
             vhost '/'"
        ),
        "another node's connection does not own it"
    );
    owner.close(200, "done").await.unwrap();
    // Gone with its connection, on every node: another node's client may take the name.
    eventually("the exclusive queue is gone everywhere", || async {
        channel(&specs[1])
            .await
            .queue_declare("mine", exclusive, FieldTable::default())
            .await
            .is_ok()
    })
    .await;

    // A transient queue lives as long as its node's run; a durable one stays.
    let on2 = channel(&specs[2]).await;
    on2.queue_declare(
        "temp",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    on2.queue_declare("stays", durable(), FieldTable::default())
        .await
        .unwrap();
    let refused = channel(&specs[0])
        .await
        .queue_declare("temp", durable(), FieldTable::default())
        .await
        .unwrap_err();
    assert!(refusal(refused).contains("inequivalent arg 'durable'"));
    let spec = nodes.remove(2).kill();
    let back = Node::spawn(&spec, &seeds(&specs)).ready();
    channel(&specs[0])
        .await
        .queue_declare("temp", durable(), FieldTable::default())
        .await
        .expect("the transient queue went with its node's run");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel(&back.spec)
        .await
        .queue_declare("stays", passive, FieldTable::default())
        .await
        .expect("the durable queue is back on its node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_delete_exchange_goes_everywhere_with_its_last_binding() {
    let place = Place::new("autodelete");
    let specs = specs(&place, 3);
    let _nodes = start_all(&specs);
    let on0 = channel(&specs[0]).await;
    let auto_delete = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    on0.exchange_declare(
        "fleeting",
        ExchangeKind::Direct,
        auto_delete,
        FieldTable::default(),
    )
    .await
    .unwrap();
    on0.queue_declare("q", durable(), FieldTable::default())
        .await
        .unwrap();
    let on1 = channel(&specs[1]).await;
    for key in ["k1", "k2"] {
        on1.queue_bind(
            "q",
            "fleeting",
            key,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let on2 = channel(&specs[2]).await;
    on2.queue_unbind("q", "fleeting", "k1", FieldTable::default())
        .await
        .unwrap();
    for spec in &specs {
        assert!(exchange_names_on(spec).iter().any(|e| e == "fleeting"));
    }
    // Unbinding what is not bound changes nothing.
    on2.queue_unbind("q", "fleeting", "k9", FieldTable::default())
        .await
        .unwrap();
    on2.queue_unbind("q", "fleeting", "k2", FieldTable::default())
        .await
        .unwrap();
    for spec in &specs {
        assert!(
            !exchange_names_on(spec).iter().any(|e| e == "fleeting"),
            "{}",
            spec.name
        );
    }
}

/// The node each queue of vhost `/` lives on, by name, as the API lists them.
fn homes(spec: &NodeSpec) -> std::collections::BTreeMap<String, String> {
    let (code, body) = http("GET", spec, "/api/queues/%2F?columns=name,node", None);
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap().to_string(),
                q["node"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balanced_queues_spread_over_the_members_by_argument_or_policy() {
    use lapin::types::AMQPValue;
    let place = Place::new("balanced");
    let specs = specs(&place, 3);
    let nodes = start_all(&specs);
    let locator = |value: &str| {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-leader-locator".into(),
            AMQPValue::LongString(value.into()),
        );
        arguments
    };

    // Six declared through one node: two on each.
    let on0 = channel(&specs[0]).await;
    for i in 0..6 {
        let declared = on0
            .queue_declare(&format!("b{i}"), durable(), locator("balanced"))
            .await
            .unwrap();
        assert_eq!(declared.message_count(), 0);
    }
    let placed = homes(&specs[1]);
    let mut per_node = std::collections::BTreeMap::<&str, usize>::new();
    for home in placed.values() {
        *per_node.entry(home.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_node,
        [("n0", 2), ("n1", 2), ("n2", 2)].into_iter().collect(),
        "{placed:?}"
    );
    // Redeclared through any node: the same queue, wherever it is.
    for spec in &specs {
        channel(spec)
            .await
            .queue_declare("b5", durable(), locator("balanced"))
            .await
            .unwrap();
    }

    // client-local (the default) and exclusive queues stay with their client.
    let on2 = channel(&specs[2]).await;
    on2.queue_declare("mine", durable(), locator("client-local"))
        .await
        .unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    on2.queue_declare("private", exclusive, locator("balanced"))
        .await
        .unwrap();
    let placed = homes(&specs[0]);
    assert_eq!(placed["mine"], "n2");
    assert_eq!(placed["private"], "n2");

    // A bad locator: RabbitMQ's 406 (RabbitMQ 3.12+ reads the argument for classic
    // queues; 3.10 refuses it whatever its value).
    let refused = channel(&specs[1])
        .await
        .queue_declare("bad", durable(), locator("nearest"))
        .await
        .unwrap_err();
    assert_eq!(
        refusal(refused),
        "406 - PRECONDITION_FAILED - invalid arg 'x-queue-leader-locator' for queue 'bad' in \
         vhost '/': invalid_queue_locator_arg"
    );
    let mut numeric = FieldTable::default();
    numeric.insert("x-queue-leader-locator".into(), AMQPValue::LongInt(5));
    let refused = channel(&specs[1])
        .await
        .queue_declare("bad", durable(), numeric)
        .await
        .unwrap_err();
    assert_eq!(
        refusal(refused),
        "406 - PRECONDITION_FAILED - invalid arg 'x-queue-leader-locator' for queue 'bad' in \
         vhost '/': {unacceptable_type,signedint}"
    );

    // By policy: queues declared through one node go to the others too.
    let set = nodes[1].ctl(&[
        "set_policy",
        "spread",
        r"^p\.",
        r#"{"queue-leader-locator": "balanced"}"#,
        "--apply-to",
        "queues",
    ]);
    assert!(set.status.success(), "{}", stderr(&set));
    let on1 = channel(&specs[1]).await;
    for i in 0..3 {
        on1.queue_declare(&format!("p.{i}"), durable(), FieldTable::default())
            .await
            .unwrap();
    }
    let placed = homes(&specs[2]);
    let used: std::collections::BTreeSet<&String> =
        (0..3).map(|i| &placed[&format!("p.{i}")]).collect();
    assert!(used.len() >= 2, "spread: {placed:?}");
}
