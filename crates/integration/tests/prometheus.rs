//! Prometheus metrics as rabbitmq_prometheus exposes them: every family the Grafana
//! "RabbitMQ-Overview" dashboard reads, and counts that follow what clients do.

mod common;

use std::collections::HashMap;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use wharf_integration::start_broker_with_management;

/// One sample: its labels and value.
type Sample = (HashMap<String, String>, f64);

/// The samples of a text exposition (Prometheus's or OpenMetrics'), by metric name.
fn parse(text: &str) -> HashMap<String, Vec<Sample>> {
    let mut samples: HashMap<String, Vec<Sample>> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        samples
            .entry(name.to_string())
            .or_default()
            .push((labels, value));
    }
    samples
}

async fn scrape(broker: &TestBroker, path: &str) -> HashMap<String, Vec<Sample>> {
    let address = broker
        .metrics_addr
        .expect("metrics (WHARF_TEST_EXTERNAL_PROMETHEUS)");
    let response = reqwest::get(format!("http://{address}{path}"))
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    parse(&response.text().await.unwrap())
}

fn total(samples: &HashMap<String, Vec<Sample>>, name: &str) -> f64 {
    samples
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .iter()
        .map(|(_, v)| v)
        .sum()
}

/// What the RabbitMQ-Overview dashboard's panels query (its panels and template variables).
const DASHBOARD_FAMILIES: &[&str] = &[
    "rabbitmq_build_info",
    "rabbitmq_channel_consumers",
    "rabbitmq_channel_get_ack_total",
    "rabbitmq_channel_get_empty_total",
    "rabbitmq_channel_get_total",
    "rabbitmq_channel_messages_acked_total",
    "rabbitmq_channel_messages_confirmed_total",
    "rabbitmq_channel_messages_delivered_ack_total",
    "rabbitmq_channel_messages_delivered_total",
    "rabbitmq_channel_messages_published_total",
    "rabbitmq_channel_messages_redelivered_total",
    "rabbitmq_channel_messages_unconfirmed",
    "rabbitmq_channel_messages_unroutable_dropped_total",
    "rabbitmq_channel_messages_unroutable_returned_total",
    "rabbitmq_channels",
    "rabbitmq_channels_closed_total",
    "rabbitmq_channels_opened_total",
    "rabbitmq_connections",
    "rabbitmq_connections_closed_total",
    "rabbitmq_connections_opened_total",
    "rabbitmq_disk_space_available_bytes",
    "rabbitmq_identity_info",
    "rabbitmq_process_max_fds",
    "rabbitmq_process_max_tcp_sockets",
    "rabbitmq_process_open_fds",
    "rabbitmq_process_open_tcp_sockets",
    "rabbitmq_process_resident_memory_bytes",
    "rabbitmq_queue_messages_published_total",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queues",
    "rabbitmq_queues_created_total",
    "rabbitmq_queues_declared_total",
    "rabbitmq_queues_deleted_total",
    "rabbitmq_resident_memory_limit_bytes",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_the_overview_dashboard_reads_is_exposed() {
    let broker = start_broker_with_management().await;
    if broker.metrics_addr.is_none() {
        return;
    }
    // The process families come from the monitors of a running binary; an in-process
    // broker without them reports what it has.
    let monitored = broker.is_external();
    let metrics = scrape(&broker, "/metrics").await;
    for family in DASHBOARD_FAMILIES {
        let from_monitors = matches!(
            *family,
            "rabbitmq_disk_space_available_bytes"
                | "rabbitmq_process_resident_memory_bytes"
                | "rabbitmq_resident_memory_limit_bytes"
                | "rabbitmq_process_max_tcp_sockets"
        );
        if from_monitors && !monitored {
            continue;
        }
        assert!(metrics.contains_key(*family), "no {family}");
    }
    let identity = &metrics["rabbitmq_identity_info"][0].0;
    for label in ["rabbitmq_node", "rabbitmq_cluster"] {
        assert!(!identity[label].is_empty(), "{identity:?}");
    }
    assert!(!metrics["rabbitmq_build_info"][0].0["rabbitmq_version"].is_empty());
    // Aggregated: one sample per family, no queue labels.
    assert_eq!(metrics["rabbitmq_queue_messages_ready"].len(), 1);
}

/// Scrapes until `ready` holds (RabbitMQ updates its counts every 5 s; Wharf at once),
/// for at most 15 s; the last scrape.
async fn scrape_until(
    broker: &TestBroker,
    path: &str,
    ready: impl Fn(&HashMap<String, Vec<Sample>>) -> bool,
) -> HashMap<String, Vec<Sample>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let metrics = scrape(broker, path).await;
        if ready(&metrics) || std::time::Instant::now() > deadline {
            return metrics;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn of_queue(metrics: &HashMap<String, Vec<Sample>>, name: &str, queue: &str) -> Option<f64> {
    metrics
        .get(name)?
        .iter()
        .find(|(labels, _)| labels.get("queue").map(String::as_str) == Some(queue))
        .map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_follow_what_clients_do() {
    let broker = start_broker_with_management().await;
    if broker.metrics_addr.is_none() {
        return;
    }
    let before = scrape(&broker, "/metrics").await;
    let (connection, channel) = confirming_channel(&broker).await;
    let queue = unique("q");
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..5 {
        channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                b"m",
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // One unroutable, mandatory: returned.
    channel
        .basic_publish(
            "",
            &unique("nowhere"),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"m",
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let got = channel
        .basic_get(&queue, BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("a message");
    got.ack(BasicAckOptions::default()).await.unwrap();

    let per_object = scrape_until(&broker, "/metrics/per-object", |m| {
        of_queue(m, "rabbitmq_queue_messages_ready", &queue) == Some(4.0)
    })
    .await;
    assert_eq!(
        of_queue(&per_object, "rabbitmq_queue_messages_ready", &queue),
        Some(4.0)
    );
    let ready = per_object["rabbitmq_queue_messages_ready"]
        .iter()
        .find(|(labels, _)| labels.get("queue") == Some(&queue))
        .unwrap();
    assert_eq!(ready.0["vhost"], "/");

    let grown = [
        ("rabbitmq_global_messages_received_total", 6.0),
        ("rabbitmq_global_messages_confirmed_total", 6.0),
        ("rabbitmq_global_messages_routed_total", 5.0),
        ("rabbitmq_global_messages_unroutable_returned_total", 1.0),
        (
            "rabbitmq_global_messages_delivered_get_manual_ack_total",
            1.0,
        ),
        ("rabbitmq_global_messages_acknowledged_total", 1.0),
        ("rabbitmq_queues_created_total", 1.0),
        // The channel is open: its counts are in the channel families too.
        ("rabbitmq_channel_messages_published_total", 6.0),
        ("rabbitmq_channel_messages_confirmed_total", 6.0),
        ("rabbitmq_channel_messages_unroutable_returned_total", 1.0),
        ("rabbitmq_channel_get_ack_total", 1.0),
    ];
    let grew = |after: &HashMap<String, Vec<Sample>>, name: &str| {
        total(after, name) - before.get(name).map_or(0.0, |_| total(&before, name))
    };
    let after = scrape_until(&broker, "/metrics", |m| {
        grown
            .iter()
            .all(|(name, by)| m.contains_key(*name) && grew(m, name) >= *by)
    })
    .await;
    for (name, by) in grown {
        if broker.is_external() {
            // Other tests of this file publish to the same broker at the same time.
            assert!(grew(&after, name) >= by, "{name}");
        } else {
            assert_eq!(grew(&after, name), by, "{name}");
        }
    }
    assert!(total(&after, "rabbitmq_connections") >= 1.0);
    assert!(total(&after, "rabbitmq_process_open_fds") > 0.0);
    connection.close(200, "bye").await.unwrap();
    if broker.is_external() {
        return;
    }
    // Wharf keeps a closed channel's counts in the node's totals (RabbitMQ's channel
    // families drop them with the channel).
    let closed = scrape_until(&broker, "/metrics", |m| {
        total(m, "rabbitmq_connections_closed_total")
            > before
                .get("rabbitmq_connections_closed_total")
                .map_or(0.0, |_| total(&before, "rabbitmq_connections_closed_total"))
    })
    .await;
    assert_eq!(
        grew(&closed, "rabbitmq_channel_messages_published_total"),
        6.0
    );
    assert_eq!(
        grew(&closed, "rabbitmq_global_messages_received_total"),
        6.0
    );
}

fn labelled(metrics: &HashMap<String, Vec<Sample>>, name: &str, label: &str, value: &str) -> f64 {
    metrics
        .get(name)
        .map(|samples| {
            samples
                .iter()
                .filter(|(labels, _)| labels.get(label).map(String::as_str) == Some(value))
                .filter(|(labels, _)| {
                    labels.get("queue_type").map(String::as_str) == Some("rabbit_classic_queue")
                })
                .map(|(_, v)| v)
                .sum()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_counted_by_reason_and_strategy() {
    let broker = start_broker_with_management().await;
    if broker.metrics_addr.is_none() {
        return;
    }
    let name = "rabbitmq_global_messages_dead_lettered_expired_total";
    let before = scrape(&broker, "/metrics").await;
    let (_connection, channel) = confirming_channel(&broker).await;
    for dead_letter_exchange in [None, Some("amq.fanout")] {
        let queue = unique("ttl");
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl".into(), lapin::types::AMQPValue::LongInt(1));
        if let Some(exchange) = dead_letter_exchange {
            arguments.insert(
                "x-dead-letter-exchange".into(),
                lapin::types::AMQPValue::LongString(exchange.into()),
            );
        }
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
        channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                b"m",
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Reading the queue finds the message expired.
        let got = channel
            .basic_get(&queue, BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        assert!(got.is_none(), "the message expired");
    }
    let grew = |m: &HashMap<String, Vec<Sample>>, strategy: &str| {
        labelled(m, name, "dead_letter_strategy", strategy)
            - labelled(&before, name, "dead_letter_strategy", strategy)
    };
    let after = scrape_until(&broker, "/metrics", |m| {
        grew(m, "disabled") >= 1.0 && grew(m, "at_most_once") >= 1.0
    })
    .await;
    assert_eq!(grew(&after, "disabled"), 1.0);
    assert_eq!(grew(&after, "at_most_once"), 1.0);
}
