//! The API's lists (paging, filtering, sorting, columns), the overview, the node, and
//! the health checks, as RabbitMQ gives them.

mod common;

use common::*;
use serde_json::{json, Value};
use wharf_integration::management::Management;
use wharf_integration::start_broker_with_management;

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_filter_sort_and_keep_the_columns_asked_for() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let vhost = unique("http-vhost");
    api.put(&format!("/api/vhosts/{vhost}"), json!({}))
        .await
        .expect(201);
    for name in ["alpha", "beta", "gamma", "delta", "Alphabet"] {
        api.put(&format!("/api/queues/{vhost}/{name}"), json!({}))
            .await
            .expect(201);
    }
    let base = format!("/api/queues/{vhost}");
    // Without a page: everything, sorted by name; name filters are ignored.
    let all = api
        .get(&format!("{base}?columns=name&name=zzz"))
        .await
        .expect(200);
    assert_eq!(names(&all), ["Alphabet", "alpha", "beta", "delta", "gamma"]);
    assert_eq!(all[0], json!({"name": "Alphabet"}));
    // A page: the wrapper and its counts; the filter ignores case.
    let page = api
        .get(&format!(
            "{base}?page=1&page_size=2&name=ALPHA&columns=name"
        ))
        .await
        .expect(200);
    assert_eq!(page["filtered_count"], 2);
    assert_eq!(page["total_count"], 5);
    assert_eq!(page["item_count"], 2);
    assert_eq!(page["page"], 1);
    assert_eq!(page["page_count"], 1);
    assert_eq!(page["page_size"], 2);
    assert_eq!(names(&page["items"]), ["Alphabet", "alpha"]);
    let page = api
        .get(&format!("{base}?page=2&page_size=2&columns=name"))
        .await
        .expect(200);
    assert_eq!(names(&page["items"]), ["beta", "delta"]);
    let regex = api
        .get(&format!(
            "{base}?page=1&name=%5Ea.*a%24&use_regex=true&columns=name"
        ))
        .await
        .expect(200);
    assert_eq!(names(&regex["items"]), ["alpha"]);
    let reversed = api
        .get(&format!("{base}?sort=name&sort_reverse=true&columns=name"))
        .await
        .expect(200);
    assert_eq!(names(&reversed)[0], "gamma");
    // Nested columns keep their path.
    let nested = api
        .get(&format!("{base}?columns=name,message_stats.publish"))
        .await
        .expect(200);
    assert!(nested[0]
        .as_object()
        .unwrap()
        .keys()
        .all(|k| k == "name" || k == "message_stats"));
    // Refusals, with RabbitMQ's error names.
    let reason = api
        .get(&format!("{base}?page=99&page_size=2"))
        .await
        .refused(400, "page_out_of_range");
    assert_eq!(reason, "Page out of range, page: 99 page size: 2, len: 5");
    let reason = api
        .get(&format!("{base}?page=1&page_size=501"))
        .await
        .refused(400, "invalid_pagination_parameters");
    assert_eq!(
        reason,
        "Invalid pagination parameters: page number 1, page size 501"
    );
    let reason = api
        .get(&format!("{base}?page=0"))
        .await
        .refused(400, "invalid_pagination_parameters");
    assert_eq!(
        reason,
        "Invalid pagination parameters: page number 0, page size undefined"
    );
    for bad in [
        "page=abc",
        "page=1&page_size=abc",
        "page=1&name=(&use_regex=true",
    ] {
        let reason = api
            .get(&format!("{base}?{bad}"))
            .await
            .refused(400, "bad_request");
        assert_eq!(reason, "Pagination parameters are invalid", "{bad}");
    }
    // The same paging on other lists.
    let exchanges = api
        .get(&format!("/api/exchanges/{vhost}?page=1&page_size=1"))
        .await
        .expect(200);
    assert_eq!(exchanges["item_count"], 1);
    assert!(exchanges["total_count"].as_u64().unwrap() >= 6);
    api.delete(&format!("/api/vhosts/{vhost}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_and_the_node_say_what_the_broker_holds() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let (_connection, channel) = lapin_channel(&broker).await;
    let queue = unique("q");
    channel
        .queue_declare(
            &queue,
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let overview = api
        .until("/api/overview", |o| {
            o["object_totals"]["connections"].as_u64() >= Some(1)
                && o["object_totals"]["queues"].as_u64() >= Some(1)
        })
        .await;
    for key in [
        "management_version",
        "rabbitmq_version",
        "node",
        "cluster_name",
    ] {
        assert!(overview[key].is_string(), "{key} in {overview}");
    }
    for key in [
        "connections",
        "channels",
        "queues",
        "exchanges",
        "consumers",
    ] {
        assert!(
            overview["object_totals"][key].is_u64(),
            "{key} in {overview}"
        );
    }
    assert!(overview["object_totals"]["channels"].as_u64() >= Some(1));
    assert!(overview["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["protocol"] == "amqp"));
    let exchange_types: Vec<&str> = overview["exchange_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for kind in ["direct", "fanout", "headers", "topic"] {
        assert!(exchange_types.contains(&kind), "{exchange_types:?}");
    }
    let cut = api
        .get("/api/overview?columns=node,object_totals.queues")
        .await
        .expect(200);
    assert_eq!(cut.as_object().unwrap().len(), 2, "{cut}");
    let nodes = api.get("/api/nodes").await.expect(200);
    let node = &nodes[0];
    assert_eq!(node["name"], overview["node"]);
    for key in ["mem_alarm", "disk_free_alarm"] {
        assert_eq!(node[key], false, "{key}");
    }
    api.get(&format!("/api/nodes/{}", node["name"].as_str().unwrap()))
        .await
        .expect(200);
    assert_eq!(
        api.get("/api/cluster-name").await.expect(200)["name"],
        overview["cluster_name"]
    );
    // Asked before logging in: no OAuth.
    let auth = api.as_user(None).get("/api/auth").await.expect(200);
    assert_eq!(auth["enable_uaa"], false);
    assert!(api.get("/api/extensions").await.expect(200).is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_answer_ok_or_503() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    for path in [
        "/api/health/checks/alarms",
        "/api/health/checks/local-alarms",
        "/api/health/checks/certificate-expiration/1/months",
        "/api/aliveness-test/%2F",
    ] {
        assert_eq!(api.get(path).await.expect(200)["status"], "ok", "{path}");
    }
    // RabbitMQ counts a vhost other tests are deleting at this moment as down: asked
    // again, the check passes.
    let mut vhosts = api.get("/api/health/checks/virtual-hosts").await;
    for _ in 0..20 {
        if vhosts.status() == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        vhosts = api.get("/api/health/checks/virtual-hosts").await;
    }
    assert_eq!(vhosts.expect(200)["status"], "ok");
    let quorum = api
        .get("/api/health/checks/node-is-quorum-critical")
        .await
        .expect(200);
    assert_eq!(quorum["status"], "ok");
    let port = broker.addr.port();
    let listening = api
        .get(&format!("/api/health/checks/port-listener/{port}"))
        .await
        .expect(200);
    assert_eq!(listening, json!({"status": "ok", "port": port}));
    let missing = api
        .get("/api/health/checks/port-listener/1")
        .await
        .expect(503);
    assert_eq!(missing["status"], "failed");
    assert_eq!(missing["reason"], "No active listener");
    assert_eq!(missing["missing"], 1);
    let amqp = api
        .get("/api/health/checks/protocol-listener/amqp")
        .await
        .expect(200);
    assert_eq!(amqp["status"], "ok");
    let stomp = api
        .get("/api/health/checks/protocol-listener/stomp")
        .await
        .expect(503);
    assert_eq!(stomp["missing"], "stomp");
    let reason = api
        .get("/api/health/checks/certificate-expiration/1/fortnights")
        .await
        .refused(400, "bad_request");
    assert_eq!(
        reason,
        "Time unit not recognised. Supported units: days, weeks, months, years."
    );
    api.get(&format!("/api/aliveness-test/{}", unique("nowhere")))
        .await
        .refused(404, "Object Not Found");
    // The aliveness test leaves its queue, as RabbitMQ's does.
    api.get("/api/queues/%2F/aliveness-test").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_follow_what_happens_between_two_samples() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let (_connection, channel) = confirming_channel(&broker).await;
    let queue = unique("q");
    channel
        .queue_declare(
            &queue,
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    for _ in 0..50 {
        channel
            .basic_publish("", &queue, Default::default(), b"m", Default::default())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Rates are sampled every 5 s (RabbitMQ's default): within two intervals, one
    // sample before these publishes and one after frame them.
    let rate = |v: &Value| v.as_f64().unwrap_or(0.0);
    let overview = api
        .until("/api/overview", |o| {
            rate(&o["message_stats"]["publish_details"]["rate"]) > 0.0
                && rate(&o["churn_rates"]["connection_created_details"]["rate"]) > 0.0
        })
        .await;
    assert!(
        rate(&overview["message_stats"]["publish_details"]["rate"]) > 0.0,
        "{overview}"
    );
    assert!(
        rate(&overview["churn_rates"]["connection_created_details"]["rate"]) > 0.0,
        "{overview}"
    );
    if !broker.is_external() {
        // Nothing was acknowledged, nothing closed (on a broker of this test's own: an
        // external one serves other tests meanwhile).
        assert_eq!(rate(&overview["message_stats"]["ack_details"]["rate"]), 0.0);
        assert_eq!(
            rate(&overview["churn_rates"]["connection_closed_details"]["rate"]),
            0.0
        );
    }
    if broker.is_external() {
        // RabbitMQ takes a new queue's first sample as its baseline: what it did before
        // that has no rate.
        return;
    }
    // Wharf counts a new queue's first interval from zero.
    let shown = api
        .until(&format!("/api/queues/%2F/{queue}"), |q| {
            rate(&q["message_stats"]["publish_details"]["rate"]) > 0.0
        })
        .await;
    assert!(rate(&shown["messages_details"]["rate"]) > 0.0, "{shown}");
}

/// PUT /api/cluster-name names the cluster (administrators only); the overview shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_name_is_set_by_an_administrator() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let before = api.get("/api/cluster-name").await.expect(200)["name"].clone();
    let name = unique("named");
    api.put("/api/cluster-name", serde_json::json!({ "name": name }))
        .await
        .expect(204);
    assert_eq!(api.get("/api/cluster-name").await.expect(200)["name"], name);
    assert_eq!(
        api.get("/api/overview").await.expect(200)["cluster_name"],
        name
    );
    // Without a name: refused, the name kept.
    let missing = api.put("/api/cluster-name", serde_json::json!({})).await;
    assert_eq!(missing.status(), 400);
    assert_eq!(api.get("/api/cluster-name").await.expect(200)["name"], name);
    api.put("/api/cluster-name", serde_json::json!({ "name": before }))
        .await
        .expect(204);
}
