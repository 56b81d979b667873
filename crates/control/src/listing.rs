//! What `wharf ctl` lists of a vhost's contents (queues, exchanges, bindings) with
//! rabbitmqctl's info keys: the caller names the columns it wants, as in
//! `rabbitmqctl list_queues name messages consumers`, or gets rabbitmqctl's defaults.

use std::sync::Arc;

use wharf_amqp::FieldTable;
use wharf_core::queue::QueueStats;
use wharf_core::{Exchange, Queue, VHost};

use crate::commands::Response;

/// The info keys of list_queues, in the order rabbitmqctl documents them.
pub const QUEUE_KEYS: &[&str] = &[
    "name",
    "durable",
    "auto_delete",
    "exclusive",
    "arguments",
    "policy",
    "messages",
    "messages_ready",
    "messages_unacknowledged",
    "messages_ready_ram",
    "message_bytes",
    "message_bytes_ready",
    "message_bytes_unacknowledged",
    "consumers",
    "consumer_utilisation",
    "memory",
    "state",
    "type",
    "leader",
    "members",
];
const QUEUE_DEFAULT: &[&str] = &["name", "messages"];

pub const EXCHANGE_KEYS: &[&str] = &[
    "name",
    "type",
    "durable",
    "auto_delete",
    "internal",
    "arguments",
    "policy",
];
const EXCHANGE_DEFAULT: &[&str] = &["name", "type"];

pub const BINDING_KEYS: &[&str] = &[
    "source_name",
    "source_kind",
    "destination_name",
    "destination_kind",
    "routing_key",
    "arguments",
];
const BINDING_DEFAULT: &[&str] = BINDING_KEYS;

/// The columns asked for (rabbitmqctl's defaults when none), or a refusal naming the keys
/// that are not supported and those that are.
fn columns<'a>(
    asked: &'a [String],
    supported: &[&str],
    default: &[&'a str],
) -> Result<Vec<&'a str>, Response> {
    if asked.is_empty() {
        return Ok(default.to_vec());
    }
    let unknown: Vec<&str> = asked
        .iter()
        .map(String::as_str)
        .filter(|key| !supported.contains(key))
        .collect();
    if !unknown.is_empty() {
        return Err(Response::error(format!(
            "Info key(s) {} are not supported. Supported keys: {}",
            unknown.join(", "),
            supported.join(", ")
        )));
    }
    Ok(asked.iter().map(String::as_str).collect())
}

/// A table of `items` with the columns asked for (checked against `supported`, or
/// `default` when none are asked for), each cell given by `cell`.
fn table<T>(
    items: &[T],
    asked: &[String],
    supported: &[&str],
    default: &[&'static str],
    cell: impl Fn(&T, &str) -> String,
) -> Response {
    let keys = match columns(asked, supported, default) {
        Ok(keys) => keys,
        Err(refused) => return refused,
    };
    let rows = items
        .iter()
        .map(|item| keys.iter().map(|key| cell(item, key)).collect())
        .collect();
    Response::table(&keys, rows)
}

/// A field table as JSON text: what the arguments column shows. Empty, it is `[]`, as
/// rabbitmqctl prints no arguments (in its table and in its JSON); others are a JSON
/// object, where rabbitmqctl's table shows an Erlang list of pairs.
pub fn arguments_json(table: &FieldTable) -> String {
    if table.is_empty() {
        return "[]".to_string();
    }
    wharf_core::definitions_json::table_to_json(table).to_string()
}

fn queue_cell(node: &str, vhost: &VHost, queue: &Queue, stats: &QueueStats, key: &str) -> String {
    match key {
        "leader" => node.to_string(),
        // A quorum queue's replicas (shown by its leader); a classic queue's node.
        "members" => match vhost.quorum_queue(&queue.name) {
            Some(quorum) if queue.leads_quorum() => quorum.members().join(","),
            _ => node.to_string(),
        },
        "name" => queue.name.to_string(),
        "durable" => queue.options.durable.to_string(),
        "auto_delete" => queue.options.auto_delete.to_string(),
        "exclusive" => queue.options.exclusive_owner.is_some().to_string(),
        "arguments" => arguments_json(&queue.options.arguments),
        "policy" => stats
            .policy
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        "messages" => stats.messages().to_string(),
        "messages_ready" => stats.messages_ready.to_string(),
        "messages_unacknowledged" => stats.messages_unacknowledged.to_string(),
        "messages_ready_ram" => stats.messages_ready_in_memory.to_string(),
        "message_bytes" => stats.message_bytes().to_string(),
        "message_bytes_ready" => stats.message_bytes_ready.to_string(),
        "message_bytes_unacknowledged" => stats.message_bytes_unacknowledged.to_string(),
        "consumers" => stats.consumers.to_string(),
        "memory" => stats.memory_bytes.to_string(),
        "consumer_utilisation" => format!("{:.4}", stats.consumer_utilisation()),
        "state" => "running".to_string(),
        "type" => wharf_core::queue_arguments::queue_type(&queue.options.arguments).to_string(),
        // Keys were checked against QUEUE_KEYS.
        _ => String::new(),
    }
}

/// `list_queues`: the vhost's queues of this node (`node`).
pub fn queues(node: &str, vhost: &VHost, asked: &[String]) -> Response {
    let mut queues = vhost.served_queues();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    let read: Vec<(Arc<Queue>, QueueStats)> = queues
        .into_iter()
        .map(|q| {
            let stats = q.stats();
            (q, stats)
        })
        .collect();
    table(
        &read,
        asked,
        QUEUE_KEYS,
        QUEUE_DEFAULT,
        |(q, stats), key| queue_cell(node, vhost, q, stats, key),
    )
}

fn exchange_cell(exchange: &Exchange, key: &str) -> String {
    match key {
        "name" => exchange.name.to_string(),
        "type" => exchange.kind.as_str().to_string(),
        "durable" => exchange.durable.to_string(),
        "auto_delete" => exchange.auto_delete.to_string(),
        "internal" => exchange.internal.to_string(),
        "arguments" => arguments_json(&exchange.arguments),
        "policy" => exchange.policy().map(|p| p.to_string()).unwrap_or_default(),
        // Keys were checked against EXCHANGE_KEYS.
        _ => String::new(),
    }
}

pub fn exchanges(vhost: &VHost, asked: &[String]) -> Response {
    let mut exchanges = vhost.exchanges();
    exchanges.sort_by(|a, b| a.name.cmp(&b.name));
    table(
        &exchanges,
        asked,
        EXCHANGE_KEYS,
        EXCHANGE_DEFAULT,
        |e, key| exchange_cell(e, key),
    )
}

/// One binding as list_bindings shows it.
struct BindingRow {
    source: String,
    destination: String,
    destination_kind: &'static str,
    routing_key: String,
    arguments: String,
}

/// Every binding of the vhost, the default exchange's implicit ones (one per queue, by
/// its name) first, as rabbitmqctl lists them.
pub fn bindings(vhost: &VHost, asked: &[String]) -> Response {
    let mut rows: Vec<BindingRow> = vhost
        .queue_names()
        .iter()
        .map(|name| BindingRow {
            source: String::new(),
            destination: name.to_string(),
            destination_kind: "queue",
            routing_key: name.to_string(),
            arguments: "[]".to_string(),
        })
        .collect();
    let mut exchanges = vhost.exchanges();
    exchanges.sort_by(|a, b| a.name.cmp(&b.name));
    for exchange in exchanges.iter().filter(|e| !e.name.is_empty()) {
        let mut bound: Vec<BindingRow> = exchange
            .bindings()
            .into_iter()
            .map(|b| {
                let (destination, destination_kind) = match &b.destination {
                    d if d.is_queue() => (d.name().to_string(), "queue"),
                    d => (d.name().to_string(), "exchange"),
                };
                BindingRow {
                    source: exchange.name.to_string(),
                    destination,
                    destination_kind,
                    routing_key: b.routing_key.to_string(),
                    arguments: arguments_json(&b.arguments),
                }
            })
            .collect();
        bound.sort_by(|a, b| {
            (&a.destination, &a.routing_key).cmp(&(&b.destination, &b.routing_key))
        });
        rows.extend(bound);
    }
    table(
        &rows,
        asked,
        BINDING_KEYS,
        BINDING_DEFAULT,
        |row, key| match key {
            "source_name" => row.source.clone(),
            "source_kind" => "exchange".to_string(),
            "destination_name" => row.destination.clone(),
            "destination_kind" => row.destination_kind.to_string(),
            "routing_key" => row.routing_key.clone(),
            "arguments" => row.arguments.clone(),
            // Keys were checked against BINDING_KEYS.
            _ => String::new(),
        },
    )
}

/// `status`: one row per figure (key, value), as `rabbitmqctl status` reports them in its
/// sections. A figure a monitor has not measured (a broker without that monitor) is empty.
pub fn status(broker: &wharf_core::Broker) -> Response {
    let reading = broker.resources.read();
    let known = |value: Option<u64>| value.map(|v| v.to_string()).unwrap_or_default();
    let (mut queues, mut consumers, mut ready, mut unacked) = (0u64, 0u64, 0u64, 0u64);
    let vhosts = broker.vhosts();
    for vhost in &vhosts {
        for queue in vhost.served_queues() {
            let stats = queue.stats();
            queues += 1;
            consumers += u64::from(stats.consumers);
            ready += stats.messages_ready;
            unacked += stats.messages_unacknowledged;
        }
    }
    let listeners: Vec<String> = broker
        .node
        .listeners()
        .iter()
        .map(|l| format!("{} {}", l.protocol, l.address))
        .collect();
    let rows = [
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("pid", std::process::id().to_string()),
        ("uptime_seconds", broker.node.uptime().as_secs().to_string()),
        ("listeners", listeners.join(", ")),
        ("memory_used_bytes", known(reading.memory_used_bytes)),
        (
            "memory_high_watermark_bytes",
            known(reading.memory_limit_bytes),
        ),
        ("memory_alarm", reading.memory_alarm.to_string()),
        ("disk_free_bytes", known(reading.disk_free_bytes)),
        (
            "disk_free_limit_bytes",
            known(reading.disk_free_limit_bytes),
        ),
        ("disk_alarm", reading.disk_alarm.to_string()),
        ("vhosts", vhosts.len().to_string()),
        ("users", broker.access.users().len().to_string()),
        ("connections", broker.connections.count().to_string()),
        ("channels", broker.connections.channel_count().to_string()),
        ("queues", queues.to_string()),
        ("consumers", consumers.to_string()),
        ("messages", (ready + unacked).to_string()),
        ("messages_ready", ready.to_string()),
        ("messages_unacknowledged", unacked.to_string()),
    ];
    Response::table(
        &["key", "value"],
        rows.into_iter()
            .map(|(key, value)| vec![key.to_string(), value])
            .collect(),
    )
}

pub const CONNECTION_KEYS: &[&str] = &[
    "id",
    "name",
    "user",
    "vhost",
    "peer",
    "peer_host",
    "peer_port",
    "host",
    "port",
    "ssl",
    "channels",
    "recv_oct",
    "send_oct",
    "connected_at",
    "user_provided_name",
    "client_product",
    "client_version",
    "client_platform",
    "protocol",
    "state",
    "node",
];
const CONNECTION_DEFAULT: &[&str] = &["id", "user", "vhost", "peer"];

/// An address's host and port ("127.0.0.1:5672", "[::1]:5672").
fn host_and_port(address: &str) -> (String, String) {
    match address.parse::<std::net::SocketAddr>() {
        Ok(address) => (address.ip().to_string(), address.port().to_string()),
        Err(_) => (address.to_string(), String::new()),
    }
}

/// `list_connections`: the open client connections, with the columns asked for. `id` is
/// what `close_connection` takes; `name` is RabbitMQ's ("peer -> broker address").
pub fn connections(broker: &wharf_core::Broker, asked: &[String]) -> Response {
    let listed = broker.connections.list();
    table(
        &listed,
        asked,
        CONNECTION_KEYS,
        CONNECTION_DEFAULT,
        |c, key| {
            let d = &c.details;
            match key {
                "id" => c.id.to_string(),
                "name" => format!("{} -> {}", d.peer, d.local),
                "user" => d.user.clone(),
                "vhost" => d.vhost.clone(),
                "peer" => d.peer.clone(),
                "peer_host" => host_and_port(&d.peer).0,
                "peer_port" => host_and_port(&d.peer).1,
                "host" => host_and_port(&d.local).0,
                "port" => host_and_port(&d.local).1,
                "ssl" => d.tls.is_some().to_string(),
                "channels" => c.channels.to_string(),
                "recv_oct" => c.received_bytes.to_string(),
                "send_oct" => c.sent_bytes.to_string(),
                "connected_at" => d.connected_at_ms.to_string(),
                "user_provided_name" => d.client_connection_name.clone(),
                "client_product" => d.client_product.clone(),
                "client_version" => d.client_version.clone(),
                "client_platform" => d.client_platform.clone(),
                "protocol" => "AMQP 0-9-1".to_string(),
                "node" => broker.node.name().to_string(),
                "state" => match c.blocked {
                    true => "blocked".to_string(),
                    false => "running".to_string(),
                },
                // Keys were checked against CONNECTION_KEYS.
                _ => String::new(),
            }
        },
    )
}

pub const CHANNEL_KEYS: &[&str] = &[
    "connection",
    "name",
    "number",
    "user",
    "vhost",
    "transactional",
    "confirm",
    "consumer_count",
    "messages_unacknowledged",
    "prefetch_count",
    "global_prefetch_count",
    "published",
    "delivered",
    "acked",
    "node",
];
const CHANNEL_DEFAULT: &[&str] = &[
    "connection",
    "number",
    "user",
    "consumer_count",
    "messages_unacknowledged",
];

/// `list_channels`: every open channel. `connection` is the id list_connections shows;
/// `name` is RabbitMQ's ("peer (number)"); published, delivered and acked are counts
/// since the channel opened (RabbitMQ shows them in its management API only).
pub fn channels(broker: &wharf_core::Broker, asked: &[String]) -> Response {
    let listed = broker.connections.channels();
    table(&listed, asked, CHANNEL_KEYS, CHANNEL_DEFAULT, |c, key| {
        let s = &c.stats;
        match key {
            "connection" => c.connection.to_string(),
            "name" => format!("{} ({})", c.peer, s.number),
            "number" => s.number.to_string(),
            "user" => c.user.clone(),
            "vhost" => c.vhost.clone(),
            "transactional" => s.transactional.to_string(),
            "confirm" => s.confirm.to_string(),
            "consumer_count" => s.consumers.to_string(),
            "messages_unacknowledged" => s.messages_unacknowledged.to_string(),
            "prefetch_count" => s.prefetch_count.to_string(),
            "global_prefetch_count" => s.global_prefetch_count.to_string(),
            "published" => s.published.to_string(),
            "delivered" => s.delivered.to_string(),
            "acked" => s.acked.to_string(),
            "node" => broker.node.name().to_string(),
            // Keys were checked against CHANNEL_KEYS.
            _ => String::new(),
        }
    })
}

pub const CONSUMER_KEYS: &[&str] = &[
    "queue_name",
    "connection",
    "channel",
    "consumer_tag",
    "ack_required",
    "prefetch_count",
    "messages_unacknowledged",
    "active",
    "activity_status",
    "exclusive",
    "arguments",
    "node",
];
const CONSUMER_DEFAULT: &[&str] = &[
    "queue_name",
    "connection",
    "channel",
    "consumer_tag",
    "ack_required",
    "prefetch_count",
];

/// `list_consumers`: a vhost's consumers, each with its channel (the connection id
/// list_connections shows, and the channel number) where RabbitMQ shows a channel pid.
pub fn consumers(broker: &wharf_core::Broker, vhost: &str, asked: &[String]) -> Response {
    let mut listed = broker.connections.consumers();
    listed.retain(|c| c.vhost == vhost);
    table(
        &listed,
        asked,
        CONSUMER_KEYS,
        CONSUMER_DEFAULT,
        |c, key| match key {
            "queue_name" => c.consumer.queue.clone(),
            "connection" => c.connection.to_string(),
            "channel" => c.channel.to_string(),
            "consumer_tag" => c.consumer.tag.clone(),
            "ack_required" => c.consumer.ack_required.to_string(),
            "prefetch_count" => c.consumer.prefetch_count.to_string(),
            "messages_unacknowledged" => c.consumer.messages_unacknowledged.to_string(),
            "active" => c.consumer.activity.is_active().to_string(),
            "activity_status" => c.consumer.activity.as_str().to_string(),
            "exclusive" => c.consumer.exclusive.to_string(),
            "arguments" => arguments_json(&c.consumer.arguments),
            "node" => broker.node.name().to_string(),
            // Keys were checked against CONSUMER_KEYS.
            _ => String::new(),
        },
    )
}

/// `cluster_status`: a row per member (name, address, state, voter, leader), and the
/// whole as a JSON object in `text` (for `--formatter json`).
pub async fn cluster_status(broker: &wharf_core::Broker) -> Response {
    let Some(cluster) = broker.cluster() else {
        return Response::error(
            "this node is not part of a cluster (started without --cluster-seeds)",
        );
    };
    let view = cluster.status().await;
    let rows = view
        .members
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.address.clone(),
                m.state.clone(),
                if m.voter { "voter" } else { "learner" }.to_string(),
                m.leader.to_string(),
            ]
        })
        .collect();
    let members: Vec<serde_json::Value> = view
        .members
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "address": m.address,
                "state": m.state,
                "voter": m.voter,
                "leader": m.leader,
            })
        })
        .collect();
    let running: Vec<&str> = view
        .members
        .iter()
        .filter(|m| m.state != "down")
        .map(|m| m.name.as_str())
        .collect();
    let json = serde_json::json!({
        "node": view.node_name,
        "leader": view.leader,
        "term": view.term,
        "members": members,
        "running_nodes": running,
        "disk_nodes": view.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
    });
    Response {
        ok: true,
        columns: ["name", "address", "state", "role", "leader"]
            .iter()
            .map(|c| c.to_string())
            .collect(),
        rows,
        text: Some(json.to_string()),
        ..Response::default()
    }
}
