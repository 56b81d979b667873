//! /api/health/checks/* and /api/aliveness-test: what load balancers and Kubernetes
//! probes ask. A check that fails answers 503 with RabbitMQ's body.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use wharf_core::access::{Access, ResourceKind};
use wharf_core::vhost::QueueDeclare;
use wharf_core::{Message, RouteCache};

use super::json;
use super::queues::NO_CONNECTION;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::Api;

fn ok() -> ApiResult<Response> {
    json(json!({"status": "ok"}))
}

fn failed(body: Value) -> ApiResult<Response> {
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}

pub async fn alarms(State(api): State<Arc<Api>>, _caller: Caller) -> ApiResult<Response> {
    let reading = api.broker.resources.read();
    let node = api.broker.node.name();
    let mut alarms = Vec::new();
    if reading.memory_alarm {
        alarms.push(json!({"node": node, "resource": "memory"}));
    }
    if reading.disk_alarm {
        alarms.push(json!({"node": node, "resource": "disk"}));
    }
    match alarms.is_empty() {
        true => ok(),
        false => failed(json!({
            "status": "failed",
            "reason": "resource alarm(s) in effect in the cluster",
            "alarms": alarms,
        })),
    }
}

pub async fn port_listener(
    State(api): State<Arc<Api>>,
    _caller: Caller,
    Path(port): Path<String>,
) -> ApiResult<Response> {
    let Ok(port) = port.parse::<u16>() else {
        return Err(ApiError::bad_request(format!("invalid port '{port}'")));
    };
    let mut ports: Vec<u16> = api
        .broker
        .node
        .listeners()
        .iter()
        .map(|l| l.address.port())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    match ports.contains(&port) {
        true => json(json!({"status": "ok", "port": port})),
        false => failed(json!({
            "status": "failed",
            "reason": "No active listener",
            "missing": port,
            "ports": ports,
        })),
    }
}

pub async fn protocol_listener(
    State(api): State<Arc<Api>>,
    _caller: Caller,
    Path(protocol): Path<String>,
) -> ApiResult<Response> {
    let mut protocols: Vec<String> = api
        .broker
        .node
        .listeners()
        .into_iter()
        .map(|l| l.protocol)
        .collect();
    protocols.sort();
    protocols.dedup();
    // RabbitMQ accepts its protocols' other names (amqp091, amqp0-9-1).
    let wanted = match protocol.as_str() {
        "amqp091" | "amqp0-9-1" | "amqp0.9.1" => "amqp",
        "amqps" => "amqp/ssl",
        "https" => "https",
        other => other,
    };
    match protocols.iter().any(|p| p == wanted) {
        true => json(json!({"status": "ok", "protocol": protocol})),
        false => failed(json!({
            "status": "failed",
            "reason": "No active listener",
            "missing": protocol,
            "protocols": protocols,
        })),
    }
}

/// Every vhost is served by this node's process: a vhost is down only when it is gone.
pub async fn virtual_hosts(_caller: Caller) -> ApiResult<Response> {
    ok()
}

/// Wharf is one node: losing it loses no quorum and no mirror.
pub async fn not_critical(_caller: Caller) -> ApiResult<Response> {
    json(json!({"status": "ok", "reason": "single node cluster"}))
}

pub async fn certificate_expiration(
    State(api): State<Arc<Api>>,
    _caller: Caller,
    Path((within, unit)): Path<(String, String)>,
) -> ApiResult<Response> {
    let seconds_per = match unit.as_str() {
        "days" => 86_400,
        "weeks" => 7 * 86_400,
        "months" => 30 * 86_400,
        "years" => 365 * 86_400,
        _ => {
            return Err(ApiError::bad_request(
                "Time unit not recognised. Supported units: days, weeks, months, years.",
            ))
        }
    };
    let Ok(within) = within.parse::<i64>() else {
        return Err(ApiError::bad_request(format!(
            "Time to expiration '{within}' is not an integer"
        )));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let horizon = now.saturating_add(within.saturating_mul(seconds_per));
    let expiring: Vec<Value> = api
        .broker
        .node
        .certificates()
        .into_iter()
        .filter(|c| c.not_after <= horizon)
        .map(|c| json!({"subject": c.subject, "expires_at": c.not_after}))
        .collect();
    match expiring.is_empty() {
        true => ok(),
        false => failed(json!({
            "status": "failed",
            "reason": "Certificates expiring",
            "expired": expiring,
        })),
    }
}

/// Declares a queue `aliveness-test` in the vhost, publishes a message to it and gets
/// it back, as the caller and checked as their AMQP operations would be, as RabbitMQ's
/// check does (which leaves the queue there too). Messages left in the queue by others
/// are put back.
pub async fn aliveness(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    let vhost = api.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    if !caller.is_administrator() && !caller.has_permissions_in(&api, &vhost.name) {
        return Err(ApiError::not_authorised(
            "User not authorised to access virtual host",
        ));
    }
    let name = "aliveness-test";
    let grant = api.broker.access.grant(caller.name(), &vhost.name);
    let declare = QueueDeclare {
        name: name.into(),
        ..QueueDeclare::default()
    };
    let declared = grant.declare_queue(&vhost, declare, NO_CONNECTION)?;
    let Some(queue) = declared.queue else {
        let reason = format!("queue '{name}' lives on another cluster node");
        return failed(json!({"status": "failed", "reason": reason}));
    };
    let target = grant.publish_target(&vhost, "")?;
    grant.check(Access::Read, ResourceKind::Queue, name)?;
    let message = Arc::new(Message {
        exchange: "".into(),
        routing_key: name.into(),
        properties: wharf_amqp::EncodedProperties::parse(Bytes::from_static(&[0, 0]))
            .map_err(|e| ApiError::internal(e.to_string()))?,
        body: Bytes::from_static(b"test_message"),
    });
    let published = vhost.publish(&target.exchange, message, &[], &mut RouteCache::default());
    if published.unroutable.is_some() || published.refused {
        return failed(json!({"status": "failed", "reason": "the test message was not routed"}));
    }
    // Taken back from the queue; anything else found on the way is put back.
    let mut others = Vec::new();
    let mut found = false;
    while let Some(got) = queue.get(false) {
        if &got.message.body[..] == b"test_message" {
            queue.ack(&[got.offset]);
            found = true;
            break;
        }
        others.push(got.offset);
    }
    if !others.is_empty() {
        queue.requeue(&others);
    }
    match found {
        true => ok(),
        false => {
            failed(json!({"status": "failed", "reason": "the test message did not come back"}))
        }
    }
}
