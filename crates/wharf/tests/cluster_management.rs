//! The operator's view of a cluster: the management API and `wharf ctl` on any node list
//! every node's queues (with their figures, from their node), connections, channels and
//! consumers, each naming its `node`; `/api/nodes` gives every member's own figures; a
//! member that is down is shown so (its queues in state `down`), not left out silently.

mod support;

use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::Value;
use support::*;

fn get_json(spec: &NodeSpec, path: &str) -> Value {
    let (code, body) = http("GET", spec, path, None);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The (name, node) of each item of a list, sorted.
fn names_and_nodes(listed: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["name"].as_str().unwrap_or_default().to_string(),
                item["node"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

/// The queue named `name` in a list of queues.
fn queue_in<'a>(listed: &'a Value, name: &str) -> &'a Value {
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("{name} listed: {listed}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nodes_queues_connections_channels_and_consumers_are_listed_on_any_node() {
    let place = Place::new("mgmt");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);

    // A queue on each of two nodes; three messages in the first.
    let on0 = channel(&specs[0]).await;
    on0.queue_declare("qa", durable(), FieldTable::default())
        .await
        .unwrap();
    for i in 0..3 {
        on0.basic_publish(
            "",
            "qa",
            BasicPublishOptions::default(),
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let on1 = channel(&specs[1]).await;
    on1.queue_declare("qb", durable(), FieldTable::default())
        .await
        .unwrap();
    // A consumer of the second queue through the third node.
    let on2 = connect(&specs[2]).await;
    let consuming = on2.create_channel().await.unwrap();
    let _consumer = consuming
        .basic_consume(
            "qb",
            "watcher",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    // The publishes went ahead of this on the same connection: all three are in.
    let counted = on0
        .queue_declare("qa", passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(counted.message_count(), 3);

    // Queues through the third node: both, with their node and their figures.
    let queues = get_json(&specs[2], "/api/queues");
    assert_eq!(
        names_and_nodes(&queues),
        [("qa".into(), "n0".into()), ("qb".into(), "n1".into())]
    );
    assert_eq!(queue_in(&queues, "qa")["messages"], 3, "{queues}");
    assert_eq!(queue_in(&queues, "qb")["consumers"], 1, "{queues}");
    // Paged and filtered over every node's.
    let page = get_json(&specs[0], "/api/queues/%2F?page=1&page_size=1&name=q");
    assert_eq!(page["total_count"], 2, "{page}");
    assert_eq!(page["filtered_count"], 2, "{page}");
    assert_eq!(page["items"][0]["name"], "qa", "{page}");
    // Sorted by a figure, with only the columns asked for.
    let sorted = get_json(
        &specs[1],
        "/api/queues?sort=messages&sort_reverse=true&columns=name,messages",
    );
    assert_eq!(
        sorted,
        serde_json::json!([{"name": "qa", "messages": 3}, {"name": "qb", "messages": 0}])
    );

    // One queue, through a node that does not hold it: its node's figures, and its
    // consumer on yet another node.
    let qb = get_json(&specs[0], "/api/queues/%2F/qb");
    assert_eq!(qb["node"], "n1", "{qb}");
    let consumers = qb["consumer_details"].as_array().unwrap();
    assert_eq!(consumers.len(), 1, "{qb}");
    assert_eq!(consumers[0]["consumer_tag"], "watcher");
    assert_eq!(consumers[0]["channel_details"]["node"], "n2");
    let qa = get_json(&specs[1], "/api/queues/%2F/qa");
    assert_eq!(
        (qa["node"].clone(), qa["messages"].clone()),
        ("n0".into(), 3.into())
    );

    // Connections and channels of every node, each naming its node.
    let connections = get_json(&specs[0], "/api/connections");
    let mut by_node: Vec<String> = connections
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["node"].as_str().unwrap().to_string())
        .collect();
    by_node.sort();
    by_node.dedup();
    assert_eq!(by_node, ["n0", "n1", "n2"], "{connections}");
    let far = connections
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node"] == "n2")
        .unwrap();
    let name = far["name"].as_str().unwrap();
    let path = format!(
        "/api/connections/{}",
        name.replace(' ', "%20").replace('>', "%3E")
    );
    let shown = get_json(&specs[1], &path);
    assert_eq!(
        (shown["name"].as_str(), shown["node"].as_str()),
        (Some(name), Some("n2"))
    );
    let channels = get_json(&specs[0], "/api/channels");
    assert!(
        channels
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["node"] == "n2" && c["consumer_count"] == 1),
        "{channels}"
    );
    let consumers = get_json(&specs[0], "/api/consumers/%2F");
    assert_eq!(consumers.as_array().unwrap().len(), 1, "{consumers}");
    assert_eq!(consumers[0]["queue"]["name"], "qb");

    // The overview sums every node's.
    let overview = get_json(&specs[2], "/api/overview");
    let totals = &overview["object_totals"];
    assert_eq!(totals["queues"], 2, "{overview}");
    assert_eq!(totals["consumers"], 1, "{overview}");
    assert_eq!(
        totals["connections"],
        connections.as_array().unwrap().len(),
        "{overview}"
    );
    assert_eq!(overview["queue_totals"]["messages"], 3, "{overview}");
    assert_eq!(overview["queue_totals"]["messages_ready"], 3, "{overview}");

    // One cluster name on every node: its first leader's, until one is set.
    let names: Vec<Value> = specs
        .iter()
        .map(|spec| get_json(spec, "/api/cluster-name")["name"].clone())
        .collect();
    assert!(
        ["n0", "n1", "n2"].contains(&names[0].as_str().unwrap()),
        "{names:?}"
    );
    assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
    let named = nodes[1].ctl(&["set_cluster_name", "harbour"]);
    assert!(named.status.success(), "{}", stderr(&named));
    for spec in &specs {
        assert_eq!(get_json(spec, "/api/cluster-name")["name"], "harbour");
        assert_eq!(get_json(spec, "/api/overview")["cluster_name"], "harbour");
    }

    // Prometheus: each node's own objects, its node named, the cluster's name shared.
    for (spec, queues) in specs.iter().zip([1, 1, 0]) {
        let scraped = metrics(spec);
        let identity = scraped
            .lines()
            .find(|l| l.starts_with("rabbitmq_identity_info{"))
            .unwrap_or_else(|| panic!("no identity: {scraped}"));
        assert!(
            identity.contains(&format!("rabbitmq_node=\"{}\"", spec.name)),
            "{identity}"
        );
        assert!(
            identity.contains("rabbitmq_cluster=\"harbour\""),
            "{identity}"
        );
        assert!(
            scraped
                .lines()
                .any(|l| l == format!("rabbitmq_queues {queues}")),
            "{}: {queues} queue(s) of its own",
            spec.name
        );
    }

    // Every node's own figures.
    let listed = get_json(&specs[0], "/api/nodes");
    let members = listed.as_array().unwrap();
    assert_eq!(members.len(), 3, "{listed}");
    for member in members {
        assert_eq!(member["running"], true, "{listed}");
        assert!(member["mem_used"].as_u64().unwrap() > 0, "{listed}");
        assert!(member["uptime"].as_u64().is_some(), "{listed}");
    }

    // wharf ctl on any node lists every node's too.
    let queues = lines(&nodes[2].ctl(&["list_queues", "name", "messages", "leader"]));
    assert_eq!(queues, ["name\tmessages\tleader", "qa\t3\tn0", "qb\t0\tn1"]);
    let connections = lines(&nodes[0].ctl(&["list_connections", "user", "node"]));
    for node in ["n0", "n1", "n2"] {
        assert!(
            connections.contains(&format!("{ADMIN}\t{node}")),
            "{connections:?}"
        );
    }
    let consumers = lines(&nodes[1].ctl(&["list_consumers", "queue_name", "consumer_tag", "node"]));
    assert_eq!(
        consumers,
        ["queue_name\tconsumer_tag\tnode", "qb\twatcher\tn2"]
    );
    let channels = lines(&nodes[0].ctl(&["list_channels", "consumer_count", "node"]));
    assert!(channels.contains(&"1\tn2".to_string()), "{channels:?}");
    // The default exchange's bindings name every node's queues.
    let bindings = lines(&nodes[2].ctl(&["list_bindings", "destination_name"]));
    assert_eq!(bindings, ["destination_name", "qa", "qb"]);

    // Another node's connection closed through the API: its node closes it.
    let (code, body) = http("DELETE", &specs[1], &path, None);
    assert_eq!(code, 204, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while on2.status().connected() {
        assert!(std::time::Instant::now() < deadline, "still connected");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (code, _) = http("DELETE", &specs[1], &path, None);
    assert_eq!(code, 404, "closed once");
    // Its consumer went with it, on the queue's node.
    while get_json(&specs[0], "/api/queues/%2F/qb")["consumers"] != 0 {
        assert!(std::time::Instant::now() < deadline, "the consumer stayed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A node down: its queue listed as down, by what every node knows of it.
    drop(on1);
    let _down = nodes.remove(1).kill();
    let queues = get_json(&specs[0], "/api/queues");
    let qb = queue_in(&queues, "qb");
    assert_eq!(
        (qb["state"].as_str(), qb["node"].as_str()),
        (Some("down"), Some("n1"))
    );
    assert_eq!(queue_in(&queues, "qa")["messages"], 3);
    let shown = get_json(&specs[2], "/api/queues/%2F/qb");
    assert_eq!(shown["state"], "down", "{shown}");
    let queues = lines(&nodes[0].ctl(&["list_queues", "name", "state", "leader"]));
    assert_eq!(
        queues,
        ["name\tstate\tleader", "qa\trunning\tn0", "qb\tdown\tn1"]
    );
}

/// What a node's Prometheus endpoint serves.
fn metrics(spec: &NodeSpec) -> String {
    let output = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .arg(format!("http://{}:{}/metrics", spec.host, spec.metrics))
        .output()
        .expect("curl runs");
    stdout(&output)
}

/// The lines a successful ctl command printed, the header first, the rest sorted.
fn lines(output: &std::process::Output) -> Vec<String> {
    assert!(output.status.success(), "{}", stderr(output));
    let text = stdout(output);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[1..].sort();
    lines
}

/// An AMQP connection to a node as `user`, or the refusal's text.
async fn try_connect(
    spec: &NodeSpec,
    user: &str,
    password: &str,
) -> Result<lapin::Connection, String> {
    let properties = lapin::ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let url = format!("amqp://{user}:{password}@{}:{}/%2f", spec.host, spec.amqp);
    lapin::Connection::connect(&url, properties)
        .await
        .map_err(refusal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_count_every_nodes_connections() {
    let place = Place::new("limits");
    let specs = specs(&place, 3);
    let nodes = start_all(&specs);
    let done =
        |output: std::process::Output| assert!(output.status.success(), "{}", stderr(&output));
    done(nodes[0].ctl(&["set_vhost_limits", "-p", "/", r#"{"max-connections": 3}"#]));
    done(ctl(&specs[1].data, &["add_user", "carol"], "carol-pw\n"));
    done(nodes[1].ctl(&["set_permissions", "carol", ".*", ".*", ".*"]));
    done(nodes[2].ctl(&["set_user_limits", "carol", r#"{"max-connections": 1}"#]));

    // The user's one connection, on the first node: no second one on another node.
    let _carol = try_connect(&specs[0], "carol", "carol-pw").await.unwrap();
    let refused = try_connect(&specs[2], "carol", "carol-pw")
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        "530 - NOT_ALLOWED - connection refused for user 'carol': user connection limit (1) is reached"
    );
    // The vhost's three, one per node: a fourth is refused on whichever node.
    let _second = try_connect(&specs[1], ADMIN, ADMIN_PASSWORD).await.unwrap();
    let _third = try_connect(&specs[2], ADMIN, ADMIN_PASSWORD).await.unwrap();
    for spec in &specs {
        let refused = try_connect(spec, ADMIN, ADMIN_PASSWORD).await.unwrap_err();
        assert_eq!(
            refused,
            format!(
                "530 - NOT_ALLOWED - access to vhost '/' refused for user '{ADMIN}': connection limit (3) is reached"
            )
        );
    }
    // One closed, anywhere: room again.
    _third.close(200, "done").await.unwrap();
    let _again = try_connect(&specs[0], ADMIN, ADMIN_PASSWORD).await.unwrap();
}
