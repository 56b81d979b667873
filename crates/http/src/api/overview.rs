//! The broker as a whole: /api/overview, /api/nodes, /api/whoami and the small
//! endpoints the management UI reads at start (extensions, auth, cluster name).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::cluster_lists::{self, Kind};
use super::json;
use super::render::{self, insert_depths, queue_message_stats, Details, OVERVIEW_SAMPLED};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{self, ListQuery};
use crate::rates::{self, Key};
use crate::Api;

/// The version RabbitMQ reports itself as: clients and tools that check it (to pick API
/// paths or features) see the release whose API this one follows.
pub const RABBITMQ_VERSION: &str = "3.10.8";

fn exchange_types() -> Value {
    let described = |name: &str, description: &str| json!({"name": name, "description": description, "enabled": true});
    json!([
        described(
            "direct",
            "AMQP direct exchange, as per the AMQP specification"
        ),
        described(
            "fanout",
            "AMQP fanout exchange, as per the AMQP specification"
        ),
        described(
            "headers",
            "AMQP headers exchange, as per the AMQP specification"
        ),
        described(
            "topic",
            "AMQP topic exchange, as per the AMQP specification"
        ),
        described("x-consistent-hash", "Consistent Hashing Exchange"),
        described("x-delayed-message", "Delayed Message Exchange"),
    ])
}

fn listeners(api: &Api) -> Vec<Value> {
    api.broker
        .node
        .listeners()
        .iter()
        .map(|l| {
            json!({
                "node": api.broker.node.name(),
                "protocol": l.protocol,
                "ip_address": l.address.ip().to_string(),
                "port": l.address.port(),
                "socket_opts": {},
            })
        })
        .collect()
}

pub async fn overview(
    State(api): State<Arc<Api>>,
    caller: Caller,
    query: ListQuery,
) -> ApiResult<Response> {
    // As RabbitMQ's: every range ends at the last whole increment.
    let windows = query.ranges()?.windows(rates::now_ms());
    let broker = &api.broker;
    let visible: Vec<_> = broker
        .vhosts()
        .into_iter()
        .filter(|v| caller.sees_vhost(&api, &v.name))
        .collect();
    let (mut queues, mut consumers, mut exchanges) = (0usize, 0u64, 0usize);
    // The queues' counts and their rates, summed over the vhosts the caller sees.
    let width = render::QUEUE_SAMPLED_COUNT;
    let mut values = vec![0.0; width];
    let (mut lengths, mut message_rates) = (Vec::new(), Vec::new());
    for vhost in &visible {
        exchanges += vhost.exchanges().len();
        let queue_list = vhost.served_queues();
        // Every node's queues: the others' are known here too (a quorum queue is among
        // them, wherever it leads).
        queues += vhost.queues().len() + vhost.remote_queues().len();
        for (sum, v) in values.iter_mut().zip(render::vhost_values(vhost)) {
            *sum += v;
        }
        let key = Key::Vhost(vhost.name.to_string());
        lengths.push(Details::read(&api, &key, width, windows.lengths));
        message_rates.push(Details::read(&api, &key, width, windows.msg_rates));
        consumers += queue_list
            .iter()
            .map(|q| u64::from(q.stats().consumers))
            .sum::<u64>();
    }
    // The other members' queues, consumers, connections and channels (their rates are
    // their own: sampled on each node).
    let (mut other_connections, mut other_channels) = (0usize, 0usize);
    for (_, items) in cluster_lists::others(&api, Kind::Totals, String::new()).await {
        let Some(totals) = items.and_then(|items| items.into_iter().next()) else {
            continue;
        };
        for vhost in &visible {
            let theirs = &totals["vhosts"][vhost.name.as_ref() as &str];
            if let Some(theirs) = theirs.as_array() {
                for (sum, v) in values.iter_mut().zip(theirs) {
                    *sum += v.as_f64().unwrap_or(0.0);
                }
            }
            consumers += totals["consumers"][vhost.name.as_ref() as &str]
                .as_u64()
                .unwrap_or(0);
        }
        let seen = |by_user: &Value| -> usize {
            by_user.as_object().map_or(0, |users| {
                users
                    .iter()
                    .filter(|(user, _)| caller.sees_connection_of(user))
                    .map(|(_, count)| count.as_u64().unwrap_or(0) as usize)
                    .sum()
            })
        };
        other_connections += seen(&totals["connections"]);
        other_channels += seen(&totals["channels"]);
    }
    let lengths = Details::sum(lengths, width, windows.lengths);
    let message_rates = Details::sum(message_rates, width, windows.msg_rates);
    let connections: Vec<_> = broker
        .connections
        .list()
        .into_iter()
        .filter(|c| caller.sees_connection_of(&c.details.user))
        .collect();
    let channels: usize = broker
        .connections
        .channels()
        .iter()
        .filter(|c| caller.sees_connection_of(&c.user))
        .count();
    let mut message_stats = queue_message_stats(&values, &message_rates);
    let mut queue_totals = Map::new();
    insert_depths(&mut queue_totals, &values, &lengths);
    let mut object = json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": {
            "global": [600, 3600, 28800, 86400],
            "basic": [600, 3600],
            "detailed": [600],
        },
        "exchange_types": exchange_types(),
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "Wharf",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": broker.node.cluster_name(),
        "erlang_version": "none",
        "erlang_full_version": "none (Wharf is written in Rust)",
        "disable_stats": query.disable_stats,
        "enable_queue_totals": query.enable_queue_totals,
        "queue_totals": queue_totals,
        "object_totals": {
            "channels": channels + other_channels,
            "connections": connections.len() + other_connections,
            "exchanges": exchanges,
            "queues": queues,
        },
        "statistics_db_event_queue": 0,
    });
    if caller.is_monitor() {
        // The broker's own figures, which only monitors see (as in RabbitMQ): what
        // channels counted (a message published to two queues is one publish, where the
        // queues' sums count two), the churn, the node and its listeners.
        // Churn too is sampled over the message rates' window, as RabbitMQ's.
        let sampled = Details::read(&api, &Key::Overview, OVERVIEW_SAMPLED, windows.msg_rates);
        let at = render::CHANNEL_TOTALS_AT;
        let totals = broker.connections.message_totals();
        let churn = broker.connections.churn();
        sampled.insert(&mut message_stats, "publish", totals.published, at);
        for (i, (name, count)) in [
            ("confirm", totals.confirmed),
            ("return_unroutable", totals.unroutable_returned),
            ("drop_unroutable", totals.unroutable_dropped),
        ]
        .into_iter()
        .enumerate()
        {
            sampled.insert(&mut message_stats, name, count, at + 7 + i);
        }
        let mut churn_rates = Map::new();
        for (i, (name, count)) in [
            ("connection_created", churn.connections_opened),
            ("connection_closed", churn.connections_closed),
            ("channel_created", churn.channels_opened),
            ("channel_closed", churn.channels_closed),
        ]
        .into_iter()
        .enumerate()
        {
            sampled.insert(&mut churn_rates, name, count, at + 3 + i);
        }
        object["churn_rates"] = Value::Object(churn_rates);
        object["object_totals"]["consumers"] = json!(consumers);
        object["node"] = json!(broker.node.name());
        object["listeners"] = Value::Array(listeners(&api));
        object["contexts"] = json!([]);
    }
    if !query.disable_stats {
        object["message_stats"] = Value::Object(message_stats);
    }
    json(listing::one(object, &query))
}

pub async fn cluster_name(State(api): State<Arc<Api>>, _caller: Caller) -> ApiResult<Response> {
    json(json!({ "name": api.broker.node.cluster_name() }))
}

/// PUT /api/cluster-name: `{"name": "..."}`, administrators only.
pub async fn set_cluster_name(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: crate::body::JsonBody,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    super::require_keys(&body, &["name"])?;
    let name = body.required_text("name")?.to_string();
    api.broker.set_cluster_name(&name)?;
    Ok(axum::response::IntoResponse::into_response(
        axum::http::StatusCode::NO_CONTENT,
    ))
}

pub async fn whoami(caller: Caller) -> ApiResult<Response> {
    json(json!({ "name": caller.user.name, "tags": caller.user.tags }))
}

pub(super) fn node_json(api: &Api) -> Value {
    let reading = api.broker.resources.read();
    json!({
        "name": api.broker.node.name(),
        "type": "disc",
        "running": true,
        "os_pid": std::process::id().to_string(),
        "uptime": api.broker.node.uptime().as_millis() as u64,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "rates_mode": "basic",
        "mem_used": reading.memory_used_bytes,
        "mem_limit": reading.memory_limit_bytes,
        "mem_alarm": reading.memory_alarm,
        "disk_free": reading.disk_free_bytes,
        "disk_free_limit": reading.disk_free_limit_bytes,
        "disk_free_alarm": reading.disk_alarm,
        "partitions": [],
        "exchange_types": exchange_types(),
        "auth_mechanisms": [
            {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true},
            {"name": "EXTERNAL", "description": "SASL EXTERNAL authentication mechanism (client certificates)", "enabled": true},
        ],
        "applications": [],
        "contexts": [],
        "being_drained": false,
    })
}

/// A member of this node's cluster that does not answer: what this node knows of it.
fn silent_member(name: &str) -> Value {
    json!({
        "name": name,
        "type": "disc",
        "running": false,
        "being_drained": false,
        "partitions": [],
    })
}

/// This node, then the other members of its cluster, if it has one, with the figures
/// each gives of itself.
async fn all_nodes(api: &Api) -> Vec<Value> {
    let mut nodes = vec![node_json(api)];
    for (name, items) in cluster_lists::others(api, Kind::Node, String::new()).await {
        match items.and_then(|items| items.into_iter().next()) {
            Some(figures) => nodes.push(figures),
            None => nodes.push(silent_member(&name)),
        }
    }
    nodes
}

pub async fn nodes(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<Response> {
    caller.require_monitor()?;
    json(Value::Array(all_nodes(&api).await))
}

pub async fn node(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require_monitor()?;
    let found = all_nodes(&api)
        .await
        .into_iter()
        .find(|node| node["name"] == name.as_str());
    match found {
        Some(node) => json(node),
        None => Err(ApiError::not_found()),
    }
}

/// The management UI's plugins: none.
pub async fn extensions(_caller: Caller) -> ApiResult<Response> {
    json(json!([]))
}

/// How the UI logs in: basic auth, no OAuth 2 (asked before logging in).
pub async fn auth() -> ApiResult<Response> {
    json(json!({"enable_uaa": false, "uaa_client_id": "", "uaa_location": ""}))
}

/// RabbitMQ's feature flags: Wharf has none to enable.
pub async fn feature_flags(caller: Caller) -> ApiResult<Response> {
    caller.require_administrator()?;
    json(json!([]))
}
