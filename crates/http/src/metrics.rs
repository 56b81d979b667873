//! Prometheus metrics as rabbitmq_prometheus exposes them: `/metrics` with the
//! per-object families summed over the node (RabbitMQ's default), and
//! `/metrics/per-object` with a sample per queue, channel and connection. The family
//! names, types and labels are RabbitMQ's, so the Grafana "RabbitMQ-Overview" dashboard
//! and alerts written for RabbitMQ read them unchanged. The exposition format is
//! written by `prometheus-client` (OpenMetrics text, which Prometheus reads).
//!
//! The channel families' counts come from two places: publishes, confirms and unroutable
//! messages from the channels (closed ones included), deliveries, gets, redeliveries and
//! acks from the queues (deleted ones included): the same events, counted where Wharf
//! already counts them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use wharf_core::queue::dead_letter::DeathReason;
use wharf_core::queue::{QueueCounters, QueueStats};
use wharf_core::Broker;

use crate::api::render::connection_name;

type Labels = Vec<(String, String)>;

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Samples of one family: one per object, or their sum.
struct Exposition {
    registry: Registry,
    per_object: bool,
}

impl Exposition {
    fn gauge(&mut self, name: &str, help: &str, value: i64) {
        let gauge: Gauge = Gauge::default();
        gauge.set(value);
        self.registry.register(name, help, gauge);
    }

    /// A counter; `name` without `_total`, which the format appends.
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let counter: Counter = Counter::default();
        counter.inc_by(value);
        self.registry.register(name, help, counter);
    }

    /// A gauge per object (per-object), or their sum.
    fn gauges(&mut self, name: &str, help: &str, samples: &[(Labels, i64)]) {
        if !self.per_object {
            return self.gauge(name, help, samples.iter().map(|(_, v)| v).sum());
        }
        let family = Family::<Labels, Gauge>::default();
        for (labels, value) in samples {
            family.get_or_create(labels).set(*value);
        }
        self.registry.register(name, help, family);
    }

    /// A counter per object (per-object), or their sum; `name` without `_total`.
    fn counters(&mut self, name: &str, help: &str, samples: &[(Labels, u64)]) {
        if !self.per_object {
            return self.counter(name, help, samples.iter().map(|(_, v)| v).sum());
        }
        let family = Family::<Labels, Counter>::default();
        for (labels, value) in samples {
            family.get_or_create(labels).inc_by(*value);
        }
        self.registry.register(name, help, family);
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Files this process has open, and its limit (from /proc).
fn file_descriptors() -> (Option<i64>, Option<i64>) {
    let open = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as i64);
    let max = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
    (open, max)
}

/// The node's families: identity, resources, alarms, totals and churn.
fn node(out: &mut Exposition, broker: &Broker, queues: &[(String, String, QueueStats)]) {
    let node = broker.node.name();
    let cluster = broker.node.cluster_name();
    out.registry.register(
        "rabbitmq_identity",
        "RabbitMQ node & cluster identity info",
        Info::new(labels(&[
            ("rabbitmq_node", node),
            ("rabbitmq_cluster", &cluster),
            ("rabbitmq_cluster_permanent_id", &cluster),
        ])),
    );
    out.registry.register(
        "rabbitmq_build",
        "RabbitMQ & Erlang/OTP version info",
        Info::new(labels(&[
            ("rabbitmq_version", crate::api::RABBITMQ_VERSION),
            ("prometheus_plugin_version", crate::api::RABBITMQ_VERSION),
            ("prometheus_client_version", "prometheus-client 0.23"),
            ("erlang_version", "none"),
            ("wharf_version", env!("CARGO_PKG_VERSION")),
        ])),
    );
    let reading = broker.resources.read();
    let optional = |out: &mut Exposition, name: &str, help: &str, value: Option<u64>| {
        if let Some(value) = value {
            out.gauge(name, help, as_i64(value));
        }
    };
    optional(
        out,
        "rabbitmq_process_resident_memory_bytes",
        "Memory used in bytes",
        reading.memory_used_bytes,
    );
    optional(
        out,
        "rabbitmq_resident_memory_limit_bytes",
        "Memory high watermark in bytes",
        reading.memory_limit_bytes,
    );
    optional(
        out,
        "rabbitmq_disk_space_available_bytes",
        "Disk space available in bytes",
        reading.disk_free_bytes,
    );
    optional(
        out,
        "rabbitmq_disk_space_available_limit_bytes",
        "Free disk space low watermark in bytes",
        reading.disk_free_limit_bytes,
    );
    out.gauge(
        "rabbitmq_alarms_memory_used_watermark",
        "is 1 if VM memory watermark alarm is in effect",
        i64::from(reading.memory_alarm),
    );
    out.gauge(
        "rabbitmq_alarms_free_disk_space_watermark",
        "is 1 if free disk space watermark alarm is in effect",
        i64::from(reading.disk_alarm),
    );
    out.gauge(
        "rabbitmq_alarms_file_descriptor_limit",
        "is 1 if file descriptor limit alarm is in effect",
        0,
    );
    let (open_fds, max_fds) = file_descriptors();
    if let Some(open) = open_fds {
        out.gauge("rabbitmq_process_open_fds", "Open file descriptors", open);
    }
    if let Some(max) = max_fds {
        out.gauge(
            "rabbitmq_process_max_fds",
            "Open file descriptors limit",
            max,
        );
    }
    let connections = broker.connections.count() as i64;
    out.gauge(
        "rabbitmq_process_open_tcp_sockets",
        "Open TCP sockets",
        connections,
    );
    if let Some(limit) = broker.node.connection_limit() {
        out.gauge(
            "rabbitmq_process_max_tcp_sockets",
            "Open TCP sockets limit",
            as_i64(limit),
        );
    }
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(broker.node.uptime().as_secs());
    out.gauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        as_i64(started),
    );
    out.gauge(
        "rabbitmq_connections",
        "Connections currently open",
        connections,
    );
    out.gauge(
        "rabbitmq_channels",
        "Channels currently open",
        broker.connections.channel_count() as i64,
    );
    let consumers: u64 = queues.iter().map(|(_, _, s)| u64::from(s.consumers)).sum();
    out.gauge(
        "rabbitmq_consumers",
        "Consumers currently connected",
        as_i64(consumers),
    );
    out.gauge("rabbitmq_queues", "Queues available", queues.len() as i64);
    let churn = broker.connections.churn();
    out.counter(
        "rabbitmq_connections_opened",
        "Total number of connections opened",
        churn.connections_opened,
    );
    out.counter(
        "rabbitmq_connections_closed",
        "Total number of connections closed or terminated",
        churn.connections_closed,
    );
    out.counter(
        "rabbitmq_channels_opened",
        "Total number of channels opened",
        churn.channels_opened,
    );
    out.counter(
        "rabbitmq_channels_closed",
        "Total number of channels closed",
        churn.channels_closed,
    );
    let history = broker.queue_history();
    let (declared, created, deleted) = (history.declared, history.created, history.deleted);
    out.counter(
        "rabbitmq_queues_declared",
        "Total number of queues declared",
        declared,
    );
    out.counter(
        "rabbitmq_queues_created",
        "Total number of queues created",
        created,
    );
    out.counter(
        "rabbitmq_queues_deleted",
        "Total number of queues deleted",
        deleted,
    );
}

fn queue_labels(vhost: &str, queue: &str) -> Labels {
    labels(&[("vhost", vhost), ("queue", queue)])
}

/// Per-queue families.
fn queues(out: &mut Exposition, queues: &[(String, String, QueueStats)]) {
    let gauge = |value: &dyn Fn(&QueueStats) -> u64| -> Vec<(Labels, i64)> {
        queues
            .iter()
            .map(|(v, q, s)| (queue_labels(v, q), as_i64(value(s))))
            .collect()
    };
    out.gauges(
        "rabbitmq_queue_messages_ready",
        "Messages ready to be delivered to consumers",
        &gauge(&|s| s.messages_ready),
    );
    out.gauges(
        "rabbitmq_queue_messages_unacked",
        "Messages delivered to consumers but not yet acknowledged",
        &gauge(&|s| s.messages_unacknowledged),
    );
    out.gauges(
        "rabbitmq_queue_messages",
        "Sum of ready and unacknowledged messages - total queue depth",
        &gauge(&|s| s.messages()),
    );
    out.gauges(
        "rabbitmq_queue_consumers",
        "Consumers on a queue",
        &gauge(&|s| u64::from(s.consumers)),
    );
    out.gauges(
        "rabbitmq_queue_process_memory_bytes",
        "Memory in bytes used by the queue (Wharf's estimate: the queue, its bodies in memory and a cost per message)",
        &gauge(&|s| s.memory_bytes),
    );
    out.gauges(
        "rabbitmq_queue_messages_ready_ram",
        "Ready messages stored in memory",
        &gauge(&|s| s.messages_ready_in_memory),
    );
    out.gauges(
        "rabbitmq_queue_messages_paged_out",
        "Messages paged out to disk",
        &gauge(&|s| s.messages_ready - s.messages_ready_in_memory),
    );
    out.gauges(
        "rabbitmq_queue_messages_bytes",
        "Size in bytes of ready and unacknowledged messages",
        &gauge(&|s| s.message_bytes()),
    );
    out.gauges(
        "rabbitmq_queue_messages_ready_bytes",
        "Size in bytes of ready messages",
        &gauge(&|s| s.message_bytes_ready),
    );
    out.gauges(
        "rabbitmq_queue_messages_unacked_bytes",
        "Size in bytes of all unacknowledged messages",
        &gauge(&|s| s.message_bytes_unacknowledged),
    );
    if out.per_object {
        // Shares of time, per queue (a sum over queues would mean nothing).
        for (name, help) in [
            (
                "rabbitmq_queue_consumer_utilisation",
                "Consumer utilisation",
            ),
            ("rabbitmq_queue_consumer_capacity", "Consumer capacity"),
        ] {
            let family = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
            for (v, q, s) in queues {
                family
                    .get_or_create(&queue_labels(v, q))
                    .set(s.consumer_utilisation());
            }
            out.registry.register(name, help, family);
        }
    }
    let published: Vec<(Labels, u64)> = queues
        .iter()
        .map(|(v, q, s)| (queue_labels(v, q), s.counters.published))
        .collect();
    out.counters(
        "rabbitmq_queue_messages_published",
        "Total number of messages published to queues",
        &published,
    );
}

/// Per-channel families, and the node's message counts (`rabbitmq_global_*`).
fn channels(out: &mut Exposition, broker: &Broker, queues: &[(String, String, QueueStats)]) {
    let connections = broker.connections.list();
    let channels = broker.connections.channels();
    let channel_labels = |c: &wharf_core::connections::ChannelSummary| -> Labels {
        let connection = connections
            .iter()
            .find(|k| k.id == c.connection)
            .map(connection_name)
            .unwrap_or_default();
        let channel = format!("{connection} ({})", c.stats.number);
        labels(&[("vhost", &c.vhost), ("channel", &channel)])
    };
    let per_channel = |value: &dyn Fn(&wharf_core::connections::ChannelStats) -> u64| {
        channels
            .iter()
            .map(|c| (channel_labels(c), value(&c.stats)))
            .collect::<Vec<_>>()
    };
    let signed = |samples: Vec<(Labels, u64)>| -> Vec<(Labels, i64)> {
        samples.into_iter().map(|(l, v)| (l, as_i64(v))).collect()
    };
    out.gauges(
        "rabbitmq_channel_consumers",
        "Consumers on a channel",
        &signed(per_channel(&|s| u64::from(s.consumers))),
    );
    out.gauges(
        "rabbitmq_channel_messages_unacked",
        "Delivered but not yet acknowledged messages",
        &signed(per_channel(&|s| s.messages_unacknowledged)),
    );
    out.gauges(
        "rabbitmq_channel_messages_unconfirmed",
        "Published but not yet confirmed messages",
        &signed(per_channel(&|s| s.unconfirmed)),
    );
    if out.per_object {
        out.gauges(
            "rabbitmq_channel_prefetch",
            "Total limit of unacknowledged messages for all consumers on a channel",
            &signed(per_channel(&|s| u64::from(s.global_prefetch_count))),
        );
        out.gauges(
            "rabbitmq_consumer_prefetch",
            "Limit of unacknowledged messages for each consumer",
            &signed(per_channel(&|s| u64::from(s.prefetch_count))),
        );
    }
    // Counted by channels, closed ones included: the node's totals carry what closed
    // channels counted (a per-object sample of a closed channel is gone, as in RabbitMQ).
    let totals = broker.connections.message_totals();
    let with_closed = |out: &mut Exposition,
                       name: &str,
                       help: &str,
                       value: &dyn Fn(&wharf_core::connections::ChannelStats) -> u64,
                       total: u64| {
        match out.per_object {
            true => out.counters(name, help, &per_channel(value)),
            false => out.counter(name, help, total),
        }
    };
    with_closed(
        out,
        "rabbitmq_channel_messages_published",
        "Total number of messages published into an exchange on a channel",
        &|s| s.published,
        totals.published,
    );
    with_closed(
        out,
        "rabbitmq_channel_messages_confirmed",
        "Total number of messages published into an exchange and confirmed on the channel",
        &|s| s.confirmed,
        totals.confirmed,
    );
    with_closed(
        out,
        "rabbitmq_channel_messages_unroutable_returned",
        "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
        &|s| s.unroutable_returned,
        totals.unroutable_returned,
    );
    with_closed(
        out,
        "rabbitmq_channel_messages_unroutable_dropped",
        "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
        &|s| s.unroutable_dropped,
        totals.unroutable_dropped,
    );
    // Counted by queues, deleted ones (and deleted vhosts') included, each vhost's
    // queues and history read together.
    let counted: QueueCounters = broker.queue_history().retired;
    if !out.per_object {
        for (name, help, value) in [
            (
                "rabbitmq_channel_messages_delivered_ack",
                "Total number of messages delivered to consumers in manual acknowledgement mode",
                counted.delivered,
            ),
            (
                "rabbitmq_channel_messages_delivered",
                "Total number of messages delivered to consumers in automatic acknowledgement mode",
                counted.delivered_no_ack,
            ),
            (
                "rabbitmq_channel_get_ack",
                "Total number of messages fetched with basic.get in manual acknowledgement mode",
                counted.got,
            ),
            (
                "rabbitmq_channel_get",
                "Total number of messages fetched with basic.get in automatic acknowledgement mode",
                counted.got_no_ack,
            ),
            (
                "rabbitmq_channel_get_empty",
                "Total number of times basic.get operations fetched no message",
                counted.get_empty,
            ),
            (
                "rabbitmq_channel_messages_redelivered",
                "Total number of messages redelivered to consumers",
                counted.redelivered,
            ),
            (
                "rabbitmq_channel_messages_acked",
                "Total number of messages acknowledged by consumers",
                counted.acked,
            ),
        ] {
            out.counter(name, help, value);
        }
    }
    // The node's totals, under rabbitmq_prometheus's global names.
    let delivered = counted.delivered + counted.delivered_no_ack + counted.got + counted.got_no_ack;
    let unroutable = totals.unroutable_dropped + totals.unroutable_returned;
    for (name, help, value) in [
        ("rabbitmq_global_messages_received", "Total number of messages received from publishers", totals.published),
        ("rabbitmq_global_messages_confirmed", "Total number of messages confirmed to publishers", totals.confirmed),
        ("rabbitmq_global_messages_routed", "Total number of messages routed to queues or streams", totals.published.saturating_sub(unroutable)),
        ("rabbitmq_global_messages_unroutable_dropped", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", totals.unroutable_dropped),
        ("rabbitmq_global_messages_unroutable_returned", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", totals.unroutable_returned),
        ("rabbitmq_global_messages_delivered", "Total number of messages delivered to consumers", delivered),
        ("rabbitmq_global_messages_delivered_consume_manual_ack", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", counted.delivered),
        ("rabbitmq_global_messages_delivered_consume_auto_ack", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", counted.delivered_no_ack),
        ("rabbitmq_global_messages_delivered_get_manual_ack", "Total number of messages delivered to consumers using basic.get with manual acknowledgment", counted.got),
        ("rabbitmq_global_messages_delivered_get_auto_ack", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment", counted.got_no_ack),
        ("rabbitmq_global_messages_get_empty", "Total number of times basic.get operations fetched no message", counted.get_empty),
        ("rabbitmq_global_messages_redelivered", "Total number of messages redelivered to consumers", counted.redelivered),
        ("rabbitmq_global_messages_acknowledged", "Total number of messages acknowledged by consumers", counted.acked),
    ] {
        out.counter(name, help, value);
    }
    // Dead letters by reason, as rabbitmq_prometheus labels them: "at_most_once" for
    // queues with a dead-letter exchange, "disabled" for those without.
    for reason in DeathReason::ALL {
        let family = Family::<Labels, Counter>::default();
        for (strategy, counts) in [
            ("at_most_once", &counted.dead_lettered),
            ("disabled", &counted.discarded),
        ] {
            family
                .get_or_create(&labels(&[
                    ("queue_type", "rabbit_classic_queue"),
                    ("dead_letter_strategy", strategy),
                ]))
                .inc_by(counts[reason.index()]);
        }
        out.registry.register(
            format!("rabbitmq_global_messages_dead_lettered_{}", reason.as_str()),
            format!(
                "Total number of messages dead-lettered due to {}",
                reason.as_str()
            ),
            family,
        );
    }
    let consumers: u64 = queues.iter().map(|(_, _, s)| u64::from(s.consumers)).sum();
    out.gauge(
        "rabbitmq_global_consumers",
        "Current number of consumers",
        as_i64(consumers),
    );
}

/// Per-connection families.
fn connections(out: &mut Exposition, broker: &Broker) {
    let listed = broker.connections.list();
    let samples = |value: &dyn Fn(&wharf_core::connections::ConnectionSummary) -> u64| {
        listed
            .iter()
            .map(|c| {
                let name = connection_name(c);
                (
                    labels(&[("vhost", &c.details.vhost), ("connection", &name)]),
                    value(c),
                )
            })
            .collect::<Vec<_>>()
    };
    out.counters(
        "rabbitmq_connection_incoming_bytes",
        "Total number of bytes received on a connection",
        &samples(&|c| c.received_bytes),
    );
    out.counters(
        "rabbitmq_connection_outgoing_bytes",
        "Total number of bytes sent on a connection",
        &samples(&|c| c.sent_bytes),
    );
    let channels: Vec<(Labels, i64)> = samples(&|c| c.channels as u64)
        .into_iter()
        .map(|(l, v)| (l, as_i64(v)))
        .collect();
    out.gauges(
        "rabbitmq_connection_channels",
        "Channels on a connection",
        &channels,
    );
}

/// The whole exposition, per object or summed.
pub fn render(broker: &Broker, per_object: bool) -> String {
    let mut out = Exposition {
        registry: Registry::default(),
        per_object,
    };
    let read: Vec<(String, String, QueueStats)> = broker
        .vhosts()
        .iter()
        .flat_map(|vhost| {
            vhost
                .served_queues()
                .into_iter()
                .map(|q| (vhost.name.to_string(), q.name.to_string(), q.stats()))
                .collect::<Vec<_>>()
        })
        .collect();
    node(&mut out, broker, &read);
    queues(&mut out, &read);
    channels(&mut out, broker, &read);
    connections(&mut out, broker);
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &out.registry);
    text
}

async fn aggregated(State(broker): State<Arc<Broker>>) -> Response {
    exposition(&broker, false).await
}

async fn per_object(State(broker): State<Arc<Broker>>) -> Response {
    exposition(&broker, true).await
}

async fn exposition(broker: &Arc<Broker>, per_object: bool) -> Response {
    let broker = broker.clone();
    // Thousands of queues take a while to read: off the async workers.
    let text = tokio::task::spawn_blocking(move || render(&broker, per_object))
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// The routes of the Prometheus listener: no login, as rabbitmq_prometheus's.
pub fn routes(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .with_state(broker)
}
