//! The core's objects as RabbitMQ's API renders them: queues, exchanges, vhosts,
//! connections, channels and consumers, with their `message_stats` and rates (and, in
//! a detail, the samples asked for: [`Details`]). A field RabbitMQ fills from the Erlang
//! VM (reductions, garbage collection) is left out rather than invented;
//! docs/management.md lists what is left out.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use wharf_core::connections::{
    ChannelSummary, ConnectionSummary, ConsumerSummary, ExchangeCounts, TlsDetails,
};
use wharf_core::definitions_json::table_to_json;
use wharf_core::queue::QueueStats;
use wharf_core::{Exchange, Queue, VHost};

use crate::listing::{ListQuery, Listed};
use crate::rates::{Key, Windows};
use crate::Api;

mod details;

pub use details::Details;

/// How many of [`QUEUE_SAMPLED`] are `message_stats` keys (the depths follow).
const MESSAGE_STATS_KEYS: usize = 9;

/// The values a queue is sampled for, in this order.
const QUEUE_SAMPLED: &[&str] = &[
    "publish",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "redeliver",
    "ack",
    "deliver_get",
    "get_empty",
    "messages",
    "messages_ready",
    "messages_unacknowledged",
    "consumer_seconds",
    "blocked_seconds",
];

fn queue_values(stats: &QueueStats) -> Vec<f64> {
    let c = &stats.counters;
    let deliver_get = c.delivered + c.delivered_no_ack + c.got + c.got_no_ack;
    [
        c.published,
        c.delivered,
        c.delivered_no_ack,
        c.got,
        c.got_no_ack,
        c.redelivered,
        c.acked,
        deliver_get,
        c.get_empty,
        stats.messages(),
        stats.messages_ready,
        stats.messages_unacknowledged,
    ]
    .iter()
    .map(|&v| v as f64)
    .chain([
        stats.consumer_time.as_secs_f64(),
        stats.blocked_time.as_secs_f64(),
    ])
    .collect()
}

/// Consumer utilisation over the last sampling interval (RabbitMQ averages it over
/// time too), or over the queue's life before its first interval; 0 without consumers.
fn consumer_utilisation(stats: &QueueStats, sampled: &Details) -> f64 {
    if stats.consumers == 0 {
        return 0.0;
    }
    let at = MESSAGE_STATS_KEYS + 3;
    let (with_consumers, blocked) = (sampled.exact_rate(at), sampled.exact_rate(at + 1));
    if with_consumers > 0.0 {
        return (1.0 - blocked / with_consumers).clamp(0.0, 1.0);
    }
    stats.consumer_utilisation()
}

/// A queue read once: what lists sort and filter by, and what renders it.
pub struct QueueRow {
    pub queue: Arc<Queue>,
    pub stats: QueueStats,
    pub api: Arc<Api>,
}

impl QueueRow {
    pub fn read(api: &Arc<Api>, queue: Arc<Queue>) -> QueueRow {
        let stats = queue.stats();
        QueueRow {
            queue,
            stats,
            api: api.clone(),
        }
    }
}

impl Listed for QueueRow {
    fn vhost(&self) -> &str {
        &self.queue.vhost
    }

    fn name(&self) -> &str {
        &self.queue.name
    }

    fn render(&self, query: &ListQuery) -> Value {
        queue_json(
            &self.api,
            &self.queue,
            &self.stats,
            query,
            &Windows::default(),
        )
    }
}

/// A queue; its depths sampled over `windows.lengths`, its message_stats over
/// `windows.msg_rates` (a detail's; a list's are none).
pub fn queue_json(
    api: &Api,
    queue: &Queue,
    stats: &QueueStats,
    query: &ListQuery,
    windows: &Windows,
) -> Value {
    let options = &queue.options;
    let mut q = Map::new();
    q.insert("arguments".into(), table_to_json(&options.arguments));
    q.insert("auto_delete".into(), json!(options.auto_delete));
    q.insert("consumers".into(), json!(stats.consumers));
    q.insert("memory".into(), json!(stats.memory_bytes));
    q.insert("durable".into(), json!(options.durable));
    q.insert("exclusive".into(), json!(options.exclusive_owner.is_some()));
    q.insert("name".into(), json!(queue.name.as_ref() as &str));
    q.insert("node".into(), json!(api.broker.node.name()));
    q.insert(
        "policy".into(),
        stats
            .policy
            .as_ref()
            .map_or(Value::Null, |p| json!(p.as_ref() as &str)),
    );
    q.insert("operator_policy".into(), Value::Null);
    q.insert("state".into(), json!("running"));
    q.insert(
        "type".into(),
        json!(wharf_core::queue_arguments::queue_type(&options.arguments)),
    );
    q.insert("vhost".into(), json!(queue.vhost.as_ref() as &str));
    if queue.leads_quorum() {
        // A quorum queue, shown by its leader: where its replicas are.
        let members = api
            .broker
            .vhost(&queue.vhost)
            .and_then(|vhost| vhost.quorum_queue(&queue.name))
            .map(|quorum| quorum.members())
            .unwrap_or_default();
        q.insert("leader".into(), json!(api.broker.node.name()));
        q.insert("members".into(), json!(members));
    }
    let ram_unacked = stats.messages_unacknowledged;
    let key = Key::Queue {
        vhost: queue.vhost.to_string(),
        name: queue.name.to_string(),
    };
    let width = QUEUE_SAMPLED.len();
    let lengths = Details::read(api, &key, width, windows.lengths);
    let values = queue_values(stats);
    let utilisation = consumer_utilisation(stats, &lengths);
    q.insert("consumer_utilisation".into(), json!(utilisation));
    q.insert("consumer_capacity".into(), json!(utilisation));
    if query.disable_stats {
        // As RabbitMQ: without statistics, the depths only when totals are asked for.
        if query.enable_queue_totals {
            q.insert("messages".into(), json!(stats.messages()));
            q.insert("messages_ready".into(), json!(stats.messages_ready));
            q.insert(
                "messages_unacknowledged".into(),
                json!(stats.messages_unacknowledged),
            );
        }
        return Value::Object(q);
    }
    let message_rates = Details::read(api, &key, width, windows.msg_rates);
    q.insert(
        "message_stats".into(),
        Value::Object(queue_message_stats(&values, &message_rates)),
    );
    insert_depths(&mut q, &values, &lengths);
    q.insert(
        "messages_ram".into(),
        json!(stats.messages_ready_in_memory + ram_unacked),
    );
    q.insert(
        "messages_ready_ram".into(),
        json!(stats.messages_ready_in_memory),
    );
    q.insert("messages_unacknowledged_ram".into(), json!(ram_unacked));
    q.insert(
        "messages_paged_out".into(),
        json!(stats.messages_ready - stats.messages_ready_in_memory),
    );
    q.insert("message_bytes".into(), json!(stats.message_bytes()));
    q.insert(
        "message_bytes_ready".into(),
        json!(stats.message_bytes_ready),
    );
    q.insert(
        "message_bytes_unacknowledged".into(),
        json!(stats.message_bytes_unacknowledged),
    );
    q.insert(
        "effective_policy_definition".into(),
        effective_policy(api, queue, stats),
    );
    Value::Object(q)
}

/// The definition of the policy applied to a queue (`{}` for none).
fn effective_policy(api: &Api, queue: &Queue, stats: &QueueStats) -> Value {
    let Some(applied) = &stats.policy else {
        return json!({});
    };
    let Some(vhost) = api.broker.vhost(&queue.vhost) else {
        return json!({});
    };
    Some(applied)
        .and_then(|name| {
            vhost
                .policies()
                .into_iter()
                .find(|p| p.name.as_ref() as &str == name.as_ref() as &str)
        })
        .and_then(|p| serde_json::from_str(&p.definition_json).ok())
        .unwrap_or_else(|| json!({}))
}

/// The queue's consumers as its detail page lists them.
pub fn consumer_details(api: &Api, vhost: &str, queue: &str) -> Vec<Value> {
    consumers_json(api, |c| c.vhost == vhost && c.consumer.queue == queue)
}

pub fn consumers_json(api: &Api, keep: impl Fn(&ConsumerSummary) -> bool) -> Vec<Value> {
    let connections = api.broker.connections.list();
    api.broker
        .connections
        .consumers()
        .into_iter()
        .filter(|c| keep(c))
        .map(|c| {
            let connection = connections.iter().find(|k| k.id == c.connection);
            consumer_json(api, &c, connection)
        })
        .collect()
}

fn consumer_json(api: &Api, c: &ConsumerSummary, connection: Option<&ConnectionSummary>) -> Value {
    let (name, peer_host, peer_port, user) = match connection {
        Some(k) => {
            let (host, port) = host_port(&k.details.peer);
            (connection_name(k), host, port, k.details.user.clone())
        }
        None => (String::new(), String::new(), 0, String::new()),
    };
    json!({
        "arguments": table_to_json(&c.consumer.arguments),
        "ack_required": c.consumer.ack_required,
        "active": c.consumer.activity.is_active(),
        "activity_status": c.consumer.activity.as_str(),
        "channel_details": {
            "connection_name": name,
            "name": format!("{name} ({})", c.channel),
            "node": api.broker.node.name(),
            "number": c.channel,
            "peer_host": peer_host,
            "peer_port": peer_port,
            "user": user,
        },
        "consumer_tag": c.consumer.tag,
        "exclusive": c.consumer.exclusive,
        "prefetch_count": c.consumer.prefetch_count,
        "queue": {"name": c.consumer.queue, "vhost": c.vhost},
    })
}

/// An address's host and port ("127.0.0.1:5672", "[::1]:5672").
pub fn host_port(address: &str) -> (String, u16) {
    match address.parse::<std::net::SocketAddr>() {
        Ok(address) => (address.ip().to_canonical().to_string(), address.port()),
        Err(_) => (address.to_string(), 0),
    }
}

/// RabbitMQ's name for a connection: "peer -> broker address".
pub fn connection_name(c: &ConnectionSummary) -> String {
    let (peer_host, peer_port) = host_port(&c.details.peer);
    let (host, port) = host_port(&c.details.local);
    format!("{peer_host}:{peer_port} -> {host}:{port}")
}

pub struct ExchangeRow {
    pub api: Arc<Api>,
    pub vhost: Arc<VHost>,
    pub exchange: Arc<Exchange>,
    /// What was published to it (None: nothing yet).
    pub counts: Option<ExchangeCounts>,
}

impl Listed for ExchangeRow {
    fn vhost(&self) -> &str {
        &self.vhost.name
    }

    fn name(&self) -> &str {
        &self.exchange.name
    }

    fn render(&self, query: &ListQuery) -> Value {
        self.json(query, &Windows::default())
    }
}

impl ExchangeRow {
    /// The exchange, its message_stats sampled over `windows.msg_rates`.
    pub fn json(&self, query: &ListQuery, windows: &Windows) -> Value {
        let mut object = exchange_json(&self.vhost, &self.exchange);
        if let (Some(counts), false) = (self.counts, query.disable_stats) {
            let key = Key::Exchange {
                vhost: self.vhost.name.to_string(),
                name: self.exchange.name.to_string(),
            };
            let sampled = Details::read(&self.api, &key, 2, windows.msg_rates);
            let mut stats = Map::new();
            sampled.insert(&mut stats, "publish_in", counts.published_in, 0);
            sampled.insert(&mut stats, "publish_out", counts.routed_out, 1);
            object["message_stats"] = Value::Object(stats);
        }
        object
    }
}

/// An exchange; the default one is named "" as in RabbitMQ's lists.
pub fn exchange_json(vhost: &VHost, e: &Exchange) -> Value {
    json!({
        "arguments": table_to_json(&e.arguments),
        "auto_delete": e.auto_delete,
        "durable": e.durable,
        "internal": e.internal,
        "name": e.name.as_ref() as &str,
        "policy": e.policy().map(|p| p.to_string()),
        "type": e.kind.as_str(),
        "user_who_performed_action": "",
        "vhost": vhost.name.as_ref() as &str,
    })
}

pub struct ConnectionRow {
    pub api: Arc<Api>,
    pub connection: ConnectionSummary,
    pub name: String,
}

impl ConnectionRow {
    pub fn new(api: &Arc<Api>, connection: ConnectionSummary) -> ConnectionRow {
        ConnectionRow {
            name: connection_name(&connection),
            api: api.clone(),
            connection,
        }
    }
}

impl Listed for ConnectionRow {
    fn vhost(&self) -> &str {
        &self.connection.details.vhost
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn render(&self, _query: &ListQuery) -> Value {
        connection_json(&self.api, &self.connection, &Windows::default())
    }
}

/// A connection, its bytes sampled over `windows.data_rates`.
pub fn connection_json(api: &Api, c: &ConnectionSummary, windows: &Windows) -> Value {
    let d = &c.details;
    let (peer_host, peer_port) = host_port(&d.peer);
    let (host, port) = host_port(&d.local);
    let mut client_properties = Map::new();
    for (key, value) in [
        ("product", &d.client_product),
        ("version", &d.client_version),
        ("platform", &d.client_platform),
        ("connection_name", &d.client_connection_name),
    ] {
        if !value.is_empty() {
            client_properties.insert(key.into(), json!(value));
        }
    }
    let mut object = json!({
        "auth_mechanism": "PLAIN",
        "channels": c.channels,
        "client_properties": client_properties,
        "connected_at": d.connected_at_ms,
        "host": host,
        "name": connection_name(c),
        "node": api.broker.node.name(),
        "peer_host": peer_host,
        "peer_port": peer_port,
        "port": port,
        "protocol": "AMQP 0-9-1",
        "ssl": d.tls.is_some(),
        "state": if c.blocked { "blocked" } else { "running" },
        "type": "network",
        "user": d.user,
        "user_who_performed_action": d.user,
        "user_provided_name": (!d.client_connection_name.is_empty()).then_some(&d.client_connection_name),
        "vhost": d.vhost,
    });
    if let Value::Object(o) = &mut object {
        let sampled = Details::read(api, &Key::Connection(c.id), 2, windows.data_rates);
        sampled.insert(o, "recv_oct", c.received_bytes, 0);
        sampled.insert(o, "send_oct", c.sent_bytes, 1);
        // RabbitMQ's fields of a TLS connection (null over plain TCP).
        let tls = d.tls.as_ref();
        let field = |f: fn(&TlsDetails) -> Option<&String>| {
            tls.and_then(f).map_or(Value::Null, |v| json!(v))
        };
        o.insert("ssl_protocol".into(), field(|t| Some(&t.protocol)));
        o.insert("ssl_key_exchange".into(), field(|t| Some(&t.key_exchange)));
        o.insert("ssl_cipher".into(), field(|t| Some(&t.cipher)));
        o.insert("ssl_hash".into(), field(|t| Some(&t.hash)));
        o.insert(
            "peer_cert_subject".into(),
            field(|t| t.peer_subject.as_ref()),
        );
        o.insert("peer_cert_issuer".into(), field(|t| t.peer_issuer.as_ref()));
        o.insert(
            "peer_cert_validity".into(),
            field(|t| t.peer_validity.as_ref()),
        );
    }
    object
}

pub struct ChannelRow {
    pub api: Arc<Api>,
    pub channel: ChannelSummary,
    pub connection_name: String,
    pub name: String,
}

impl ChannelRow {
    /// Every open channel, each with its connection's name.
    pub fn all(api: &Arc<Api>) -> Vec<ChannelRow> {
        let connections = api.broker.connections.list();
        api.broker
            .connections
            .channels()
            .into_iter()
            .map(|channel| {
                let connection_name = connections
                    .iter()
                    .find(|c| c.id == channel.connection)
                    .map(connection_name)
                    .unwrap_or_default();
                ChannelRow {
                    name: format!("{connection_name} ({})", channel.stats.number),
                    connection_name,
                    api: api.clone(),
                    channel,
                }
            })
            .collect()
    }
}

impl Listed for ChannelRow {
    fn vhost(&self) -> &str {
        &self.channel.vhost
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn render(&self, query: &ListQuery) -> Value {
        self.json(query, &Windows::default())
    }
}

impl ChannelRow {
    /// The channel, its message_stats sampled over `windows.msg_rates`.
    pub fn json(&self, query: &ListQuery, windows: &Windows) -> Value {
        let c = &self.channel;
        let s = &c.stats;
        let (peer_host, peer_port) = host_port(&c.peer);
        let mut object = json!({
            "acks_uncommitted": 0,
            "confirm": s.confirm,
            "connection_details": {
                "name": self.connection_name,
                "peer_host": peer_host,
                "peer_port": peer_port,
            },
            "consumer_count": s.consumers,
            "global_prefetch_count": s.global_prefetch_count,
            "messages_unacknowledged": s.messages_unacknowledged,
            "messages_uncommitted": 0,
            "messages_unconfirmed": s.unconfirmed,
            "name": self.name,
            "node": self.api.broker.node.name(),
            "number": s.number,
            "prefetch_count": s.prefetch_count,
            "state": "running",
            "transactional": s.transactional,
            "user": c.user,
            "user_who_performed_action": c.user,
            "vhost": c.vhost,
        });
        if !query.disable_stats {
            let key = Key::Channel {
                connection: c.connection,
                number: s.number,
            };
            let sampled = Details::read(&self.api, &key, CHANNEL_SAMPLED, windows.msg_rates);
            let mut stats = Map::new();
            for (at, (name, count)) in [
                ("publish", s.published),
                ("deliver_get", s.delivered),
                ("ack", s.acked),
                ("confirm", s.confirmed),
                ("return_unroutable", s.unroutable_returned),
                ("drop_unroutable", s.unroutable_dropped),
            ]
            .into_iter()
            .enumerate()
            {
                sampled.insert(&mut stats, name, count, at);
            }
            object["message_stats"] = Value::Object(stats);
        }
        object
    }
}

/// Takes one sample of every object's counters, for the rates.
pub fn sample_rates(api: &Arc<Api>) {
    let rates = &api.rates;
    rates.begin();
    let mut totals = vec![0.0; QUEUE_SAMPLED.len()];
    for vhost in api.broker.vhosts() {
        let mut in_vhost = vec![0.0; QUEUE_SAMPLED.len()];
        for queue in vhost.served_queues() {
            let values = queue_values(&queue.stats());
            for (sum, v) in in_vhost.iter_mut().zip(&values) {
                *sum += v;
            }
            rates.record(
                Key::Queue {
                    vhost: vhost.name.to_string(),
                    name: queue.name.to_string(),
                },
                values,
            );
        }
        for (sum, v) in totals.iter_mut().zip(&in_vhost) {
            *sum += v;
        }
        rates.record(Key::Vhost(vhost.name.to_string()), in_vhost);
    }
    let broker = &api.broker;
    broker.connections.forget_exchanges(|(vhost, name)| {
        broker
            .vhost(vhost)
            .is_some_and(|v| v.exchange(name).is_ok())
    });
    for ((vhost, name), counts) in api.broker.connections.exchange_totals() {
        rates.record(
            Key::Exchange { vhost, name },
            vec![counts.published_in as f64, counts.routed_out as f64],
        );
    }
    for c in api.broker.connections.list() {
        rates.record(
            Key::Connection(c.id),
            vec![c.received_bytes as f64, c.sent_bytes as f64],
        );
    }
    for c in api.broker.connections.channels() {
        let s = &c.stats;
        rates.record(
            Key::Channel {
                connection: c.connection,
                number: s.number,
            },
            [
                s.published,
                s.delivered,
                s.acked,
                s.confirmed,
                s.unroutable_returned,
                s.unroutable_dropped,
            ]
            .iter()
            .map(|&v| v as f64)
            .collect(),
        );
    }
    let channels = api.broker.connections.message_totals();
    let churn = api.broker.connections.churn();
    totals.extend([
        channels.published as f64,
        channels.delivered as f64,
        channels.acked as f64,
        churn.connections_opened as f64,
        churn.connections_closed as f64,
        churn.channels_opened as f64,
        churn.channels_closed as f64,
        channels.confirmed as f64,
        channels.unroutable_returned as f64,
        channels.unroutable_dropped as f64,
    ]);
    rates.record(Key::Overview, totals);
    rates.end();
}

/// Where the overview's sample has the channels' totals (published, delivered, acked),
/// then the churn (connections opened, closed, channels opened, closed), then the
/// channels' confirmed, returned and dropped; the queues' sums come before.
pub const CHANNEL_TOTALS_AT: usize = QUEUE_SAMPLED.len();

/// How many values the overview is sampled for.
pub const OVERVIEW_SAMPLED: usize = CHANNEL_TOTALS_AT + 10;

/// How many values a channel is sampled for.
const CHANNEL_SAMPLED: usize = 6;

/// How many values a queue, and a vhost (its queues' sums), is sampled for.
pub const QUEUE_SAMPLED_COUNT: usize = QUEUE_SAMPLED.len();

/// The `message_stats` of a queue or a set of queues (a vhost's), from their counters
/// (summed) and sampled details.
pub fn queue_message_stats(values: &[f64], sampled: &Details) -> Map<String, Value> {
    let mut stats = Map::new();
    for (i, name) in QUEUE_SAMPLED[..MESSAGE_STATS_KEYS].iter().enumerate() {
        sampled.insert(&mut stats, name, values[i] as u64, i);
    }
    stats
}

/// `messages`, `messages_ready` and `messages_unacknowledged` with their details, of a
/// queue or a set of queues.
pub fn insert_depths(object: &mut Map<String, Value>, values: &[f64], sampled: &Details) {
    for (i, name) in ["messages", "messages_ready", "messages_unacknowledged"]
        .into_iter()
        .enumerate()
    {
        let at = MESSAGE_STATS_KEYS + i;
        debug_assert_eq!(QUEUE_SAMPLED[at], name);
        sampled.insert(object, name, values[at] as u64, at);
    }
}

/// A vhost's queues' counters summed now (the values sampled for it).
pub fn vhost_values(vhost: &VHost) -> Vec<f64> {
    let mut sums = vec![0.0; QUEUE_SAMPLED.len()];
    for queue in vhost.served_queues() {
        for (sum, v) in sums.iter_mut().zip(queue_values(&queue.stats())) {
            *sum += v;
        }
    }
    sums
}
