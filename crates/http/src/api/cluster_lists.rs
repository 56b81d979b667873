//! Lists across a cluster's nodes. A queue's figures, a connection, its channels and
//! consumers live on one node; the API on any node lists every node's, as RabbitMQ's
//! does: it asks the other members for their part (rendered there, for the same query)
//! and lists it with its own, each item naming its `node`. A member that does not answer
//! in time is left out (its queues are still listed, by what every node knows of them,
//! in state `down`).

use std::sync::{Arc, Weak};

use serde_json::{json, Value};
use wharf_core::cluster::{OperatorAnswers, OperatorRequest};

use super::render::{consumers_json, vhost_values, ChannelRow, ConnectionRow, QueueRow};
use crate::listing::{ListQuery, Listed};
use crate::Api;

/// An item of another node's part of a list, as it rendered it.
pub struct RemoteRow {
    vhost: String,
    name: String,
    pub value: Value,
}

impl RemoteRow {
    pub fn new(value: Value) -> RemoteRow {
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_string();
        RemoteRow {
            vhost: text("vhost"),
            name: text("name"),
            value,
        }
    }

    /// The `user` of a connection or a channel.
    pub fn user(&self) -> &str {
        self.value["user"].as_str().unwrap_or_default()
    }
}

impl Listed for RemoteRow {
    fn vhost(&self) -> &str {
        &self.vhost
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn render(&self, _query: &ListQuery) -> Value {
        self.value.clone()
    }
}

/// An item of this node's, or another's.
pub enum Row<T> {
    Here(T),
    There(RemoteRow),
}

impl<T: Listed> Listed for Row<T> {
    fn vhost(&self) -> &str {
        match self {
            Row::Here(row) => row.vhost(),
            Row::There(row) => row.vhost(),
        }
    }

    fn name(&self) -> &str {
        match self {
            Row::Here(row) => row.name(),
            Row::There(row) => row.name(),
        }
    }

    fn render(&self, query: &ListQuery) -> Value {
        match self {
            Row::Here(row) => row.render(query),
            Row::There(row) => row.render(query),
        }
    }
}

/// The kinds of list the API asks other nodes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Queues,
    /// One queue, in detail (the argument names it, see [`queue_argument`]).
    Queue,
    Connections,
    Channels,
    Consumers,
    /// The node itself, with its figures.
    Node,
    /// What the overview sums: its queues' counters by vhost, its connections and
    /// channels by user (see [`local_totals`]).
    Totals,
    /// Not a list: closes the connection the argument names, if it is this node's
    /// (see [`close_argument`]); answers `[true]` then.
    CloseConnection,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Queues => "http:queues",
            Kind::Queue => "http:queue",
            Kind::Connections => "http:connections",
            Kind::Channels => "http:channels",
            Kind::Consumers => "http:consumers",
            Kind::Node => "http:node",
            Kind::Totals => "http:totals",
            Kind::CloseConnection => "http:close-connection",
        }
    }

    fn named(kind: &str) -> Option<Kind> {
        [
            Kind::Queues,
            Kind::Queue,
            Kind::Connections,
            Kind::Channels,
            Kind::Consumers,
            Kind::Node,
            Kind::Totals,
            Kind::CloseConnection,
        ]
        .into_iter()
        .find(|k| k.as_str() == kind)
    }
}

/// What the other members answer for list `kind` (rendered as `argument` says: a
/// list's query string), by node: the items of each, None for a member that did not
/// answer. Empty on a single node.
pub async fn others(api: &Api, kind: Kind, argument: String) -> Vec<(String, Option<Vec<Value>>)> {
    let Some(cluster) = api.broker.cluster() else {
        return Vec::new();
    };
    let list = OperatorRequest {
        kind: kind.as_str().to_string(),
        argument,
    };
    cluster
        .gather(list)
        .await
        .into_iter()
        .map(|gathered| (gathered.node, gathered.items))
        .collect()
}

/// The other members' items of list `kind`, rendered for `query`, as rows.
pub async fn other_rows(api: &Api, kind: Kind, query: &ListQuery) -> Vec<RemoteRow> {
    others(api, kind, query.raw.clone().unwrap_or_default())
        .await
        .into_iter()
        .flat_map(|(_, items)| items.unwrap_or_default())
        .map(RemoteRow::new)
        .collect()
}

/// The consumers of the other members' channels.
pub async fn other_consumers(api: &Api) -> Vec<Value> {
    others(api, Kind::Consumers, String::new())
        .await
        .into_iter()
        .flat_map(|(_, items)| items.unwrap_or_default())
        .collect()
}

/// What a [`Kind::Queue`] asks for: the queue, and the query to render it for.
pub fn queue_argument(vhost: &str, name: &str, query: &ListQuery) -> String {
    json!({"vhost": vhost, "name": name, "query": query.raw}).to_string()
}

/// This node's part of the API's lists, for the other members to ask.
pub struct ApiAnswers(pub Weak<Api>);

impl OperatorAnswers for ApiAnswers {
    fn answer_operator(&self, kind: &str, argument: &str) -> Vec<Value> {
        let (Some(api), Some(kind)) = (self.0.upgrade(), Kind::named(kind)) else {
            return Vec::new();
        };
        if kind == Kind::CloseConnection {
            let Ok(asked) = serde_json::from_str::<Value>(argument) else {
                return Vec::new();
            };
            let text = |key: &str| asked[key].as_str().unwrap_or_default().to_string();
            let closed = close_local(&api, &text("name"), &text("reason"));
            return closed.then_some(json!(true)).into_iter().collect();
        }
        if kind == Kind::Queue {
            let Ok(asked) = serde_json::from_str::<Value>(argument) else {
                return Vec::new();
            };
            let query = ListQuery::parse(asked["query"].as_str()).unwrap_or_default();
            let text = |key: &str| asked[key].as_str().unwrap_or_default().to_string();
            return local_queue(&api, &text("vhost"), &text("name"), &query)
                .into_iter()
                .collect();
        }
        // The asking node checked the query; a page is cut there, after merging.
        let query = ListQuery::parse(Some(argument)).unwrap_or_default();
        local(&api, kind, &query)
    }
}

/// A queue of this node, in detail (without its consumers: the asking node lists those
/// of every node).
fn local_queue(api: &Arc<Api>, vhost: &str, name: &str, query: &ListQuery) -> Option<Value> {
    let queue = api.broker.vhost(vhost)?.served_queue(name).ok()?;
    let windows = query
        .ranges()
        .ok()?
        .windows_lengths_rounded_up(crate::rates::now_ms());
    Some(super::render::queue_json(
        api,
        &queue,
        &queue.stats(),
        query,
        &windows,
    ))
}

/// This node's items of list `kind`, every one (the asking node keeps what its caller
/// may see).
fn local(api: &Arc<Api>, kind: Kind, query: &ListQuery) -> Vec<Value> {
    match kind {
        Kind::Queues => api
            .broker
            .vhosts()
            .iter()
            .flat_map(|vhost| vhost.served_queues())
            .map(|queue| QueueRow::read(api, queue).render(query))
            .collect(),
        Kind::Connections => api
            .broker
            .connections
            .list()
            .into_iter()
            .map(|c| ConnectionRow::new(api, c).render(query))
            .collect(),
        Kind::Channels => ChannelRow::all(api)
            .iter()
            .map(|c| c.render(query))
            .collect(),
        Kind::Consumers => consumers_json(api, |_| true),
        Kind::Node => vec![super::overview::node_json(api)],
        Kind::Queue => Vec::new(),
        Kind::Totals => vec![local_totals(api)],
        Kind::CloseConnection => Vec::new(),
    }
}

/// A queue of a member that did not answer, as every node knows it: RabbitMQ lists such
/// a queue in state `down`.
pub fn down_queue(remote: &wharf_core::queue::remote::RemoteQueue) -> Value {
    let options = &remote.options;
    json!({
        "name": remote.name.as_ref() as &str,
        "vhost": remote.vhost.as_ref() as &str,
        "node": remote.home(),
        "durable": options.durable,
        "auto_delete": options.auto_delete,
        "exclusive": options.exclusive_owner.is_some(),
        "arguments": wharf_core::definitions_json::table_to_json(&options.arguments),
        "type": wharf_core::queue_arguments::queue_type(&options.arguments),
        "state": "down",
    })
}

/// This node's part of the overview's totals: its queues' counters summed by vhost (as
/// `render::vhost_values` sums them) with their consumers, and its connections and
/// channels counted by user (the asking node counts those its caller may see).
fn local_totals(api: &Api) -> Value {
    let mut vhosts = serde_json::Map::new();
    let mut consumers = serde_json::Map::new();
    for vhost in api.broker.vhosts() {
        vhosts.insert(vhost.name.to_string(), json!(vhost_values(&vhost)));
        let count: u64 = vhost
            .served_queues()
            .iter()
            .map(|q| u64::from(q.stats().consumers))
            .sum();
        consumers.insert(vhost.name.to_string(), json!(count));
    }
    let mut connections = std::collections::BTreeMap::<String, u64>::new();
    for connection in api.broker.connections.list() {
        *connections
            .entry(connection.details.user.clone())
            .or_default() += 1;
    }
    let mut channels = std::collections::BTreeMap::<String, u64>::new();
    for channel in api.broker.connections.channels() {
        *channels.entry(channel.user.clone()).or_default() += 1;
    }
    json!({
        "vhosts": vhosts,
        "consumers": consumers,
        "connections": connections,
        "channels": channels,
    })
}

/// What a [`Kind::CloseConnection`] asks for.
pub fn close_argument(name: &str, reason: &str) -> String {
    json!({"name": name, "reason": reason}).to_string()
}

/// Closes this node's connection named `name` (320, with `reason`); whether it had it.
fn close_local(api: &Api, name: &str, reason: &str) -> bool {
    let found = api
        .broker
        .connections
        .list()
        .into_iter()
        .find(|c| super::render::connection_name(c) == name);
    found.is_some_and(|c| api.broker.connections.close(c.id, reason))
}
