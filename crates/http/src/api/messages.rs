//! Messages through the API: publish to an exchange, get from a queue. Publishing goes
//! through the core's one publish operation, checked as a basic.publish, and answers once
//! a persistent message is on disk (RabbitMQ's API publishes in confirm mode and waits).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};
use wharf_amqp::{BasicProperties, ByteString, EncodedProperties};
use wharf_core::access::{Access, ResourceKind};
use wharf_core::definitions_json::{json_to_table, table_to_json};
use wharf_core::queue::remote::Settle;
use wharf_core::{ErrorKind, Message, RouteCache};

use super::exchanges::exchange_name;
use super::queues::NO_CONNECTION;
use super::{json, require_keys};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::Api;

/// A refusal of the AMQP operation behind a request, worded as RabbitMQ's API words
/// the channel error it gets: "404 NOT_FOUND - no exchange 'x' in vhost '/'".
pub(super) fn channel_refusal(error: wharf_core::Error) -> ApiError {
    let code = match error.kind {
        ErrorKind::AccessRefused => 403,
        ErrorKind::NotFound => 404,
        ErrorKind::ResourceLocked => 405,
        ErrorKind::PreconditionFailed => 406,
        ErrorKind::ResourceError => 506,
        ErrorKind::NotAllowed => 530,
        ErrorKind::CommandInvalid => 503,
        ErrorKind::NotImplemented => 540,
        ErrorKind::InternalError => 541,
        ErrorKind::Unavailable | ErrorKind::NotLeader => 406,
    };
    ApiError::bad_request(format!("{code} {}", error.text()))
}

/// A property that must be an integer, refused as RabbitMQ refuses it.
fn integer_property(properties: &Map<String, Value>, key: &str) -> ApiResult<Option<i64>> {
    match properties.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(_) => Err(ApiError::bad_request(vec![
            Value::from("not_int"),
            Value::from(key),
        ])),
    }
}

fn text_property(properties: &Map<String, Value>, key: &str) -> ApiResult<Option<ByteString>> {
    match properties.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 255 => Ok(Some(s.as_str().into())),
        Some(Value::String(_)) => Err(ApiError::bad_request(format!(
            "property {key} is longer than 255 bytes"
        ))),
        Some(other) => Err(ApiError::bad_request(format!(
            "property {key} must be a string, not {other}"
        ))),
    }
}

fn octet(properties: &Map<String, Value>, key: &str) -> ApiResult<Option<u8>> {
    match integer_property(properties, key)? {
        None => Ok(None),
        Some(n) => u8::try_from(n)
            .map(Some)
            .map_err(|_| ApiError::bad_request(vec![Value::from("not_int"), Value::from(key)])),
    }
}

/// The `properties` object of a publish as AMQP properties; unknown keys are ignored, as
/// RabbitMQ ignores them.
fn basic_properties(properties: &Map<String, Value>) -> ApiResult<BasicProperties> {
    let headers = match properties.get("headers") {
        None | Some(Value::Null) => None,
        Some(object @ Value::Object(_)) => Some(json_to_table(object)),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "headers must be an object, not {other}"
            )))
        }
    };
    let timestamp = match integer_property(properties, "timestamp")? {
        Some(t) if t < 0 => return Err(ApiError::bad_request("timestamp must not be negative")),
        t => t.map(|t| t as u64),
    };
    Ok(BasicProperties {
        content_type: text_property(properties, "content_type")?,
        content_encoding: text_property(properties, "content_encoding")?,
        headers,
        delivery_mode: octet(properties, "delivery_mode")?,
        priority: octet(properties, "priority")?,
        correlation_id: text_property(properties, "correlation_id")?,
        reply_to: text_property(properties, "reply_to")?,
        expiration: text_property(properties, "expiration")?,
        message_id: text_property(properties, "message_id")?,
        timestamp,
        kind: text_property(properties, "type")?,
        user_id: text_property(properties, "user_id")?,
        app_id: text_property(properties, "app_id")?,
        cluster_id: None,
    })
}

fn encoded(properties: &BasicProperties) -> ApiResult<EncodedProperties> {
    let mut out = BytesMut::new();
    properties.encode(&mut out);
    EncodedProperties::parse(out.freeze())
        .map_err(|error| ApiError::bad_request(format!("properties do not encode: {error}")))
}

/// POST /api/exchanges/{vhost}/{name}/publish: `{"routed": true}` when a queue took it.
pub async fn publish(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&api, &vhost)?;
    require_keys(
        &body,
        &["properties", "routing_key", "payload", "payload_encoding"],
    )?;
    let properties = match body.get("properties") {
        Some(Value::Object(object)) => object.clone(),
        // RabbitMQ's forms send an empty list for no properties.
        Some(Value::Array(items)) if items.is_empty() => Map::new(),
        _ => return Err(ApiError::bad_request("properties must be an object")),
    };
    let routing_key = body.required_text("routing_key")?.to_string();
    let payload = body.required_text("payload")?;
    let payload: Bytes = match body.required_text("payload_encoding")? {
        "string" => Bytes::copy_from_slice(payload.as_bytes()),
        "base64" => match base64::engine::general_purpose::STANDARD.decode(payload) {
            Ok(bytes) => bytes.into(),
            Err(_) => {
                return Err(ApiError::bad_request(vec![
                    Value::from("not_base64"),
                    Value::from(payload),
                ]))
            }
        },
        other => {
            return Err(ApiError::bad_request(vec![
                Value::from("unsupported_encoding"),
                Value::from(other),
            ]))
        }
    };
    if routing_key.len() > 255 {
        return Err(ApiError::bad_request(
            "routing_key is longer than 255 bytes",
        ));
    }
    let properties = basic_properties(&properties)?;
    let grant = api.broker.access.grant(caller.name(), &vhost.name);
    let name = exchange_name(&name);
    let target = grant
        .publish_target(&vhost, name)
        .map_err(channel_refusal)?;
    grant
        .check_publish_key(&target, &routing_key)
        .map_err(channel_refusal)?;
    if let Some(claimed) = &properties.user_id {
        grant.check_user_id(claimed).map_err(channel_refusal)?;
    }
    if let Some(expiration) = &properties.expiration {
        wharf_core::message::parse_expiration(expiration).map_err(|reason| {
            ApiError::bad_request(format!("406 PRECONDITION_FAILED - {reason}"))
        })?;
    }
    let message = Arc::new(Message {
        exchange: target.exchange.name.clone(),
        routing_key: routing_key.as_str().into(),
        properties: encoded(&properties)?,
        body: payload,
    });
    let published = vhost.publish(&target.exchange, message, &[], &mut RouteCache::default());
    let routed = published.unroutable.is_none() && !published.refused;
    // Counted as a channel's publish would be, on the exchange.
    api.broker.connections.note_exchange_publish(
        &vhost.name,
        &target.exchange.name,
        published.unroutable.is_none(),
    );
    if let (Some(flusher), false) = (api.broker.flusher(), published.appended_to.is_empty()) {
        let (done, synced) = tokio::sync::oneshot::channel();
        flusher.after_sync(
            published.appended_to,
            Box::new(move |ok| {
                let _ = done.send(ok);
            }),
        );
        if synced.await != Ok(true) {
            return Err(ApiError::internal(
                "the message could not be written to disk",
            ));
        }
    }
    json(json!({ "routed": routed }))
}

/// The properties of a message as RabbitMQ's get shows them: `[]` for none.
fn properties_json(properties: &EncodedProperties) -> Value {
    let Ok(p) = properties.decode() else {
        return json!([]);
    };
    let mut object = Map::new();
    let mut text = |key: &str, value: &Option<ByteString>| {
        if let Some(v) = value {
            object.insert(key.to_string(), json!(v.as_ref() as &str));
        }
    };
    text("content_type", &p.content_type);
    text("content_encoding", &p.content_encoding);
    text("correlation_id", &p.correlation_id);
    text("reply_to", &p.reply_to);
    text("expiration", &p.expiration);
    text("message_id", &p.message_id);
    text("type", &p.kind);
    text("user_id", &p.user_id);
    text("app_id", &p.app_id);
    text("cluster_id", &p.cluster_id);
    if let Some(headers) = &p.headers {
        object.insert("headers".into(), table_to_json(headers));
    }
    if let Some(v) = p.delivery_mode {
        object.insert("delivery_mode".into(), json!(v));
    }
    if let Some(v) = p.priority {
        object.insert("priority".into(), json!(v));
    }
    if let Some(v) = p.timestamp {
        object.insert("timestamp".into(), json!(v));
    }
    match object.is_empty() {
        true => json!([]),
        false => Value::Object(object),
    }
}

/// A payload as get shows it: text when it is UTF-8 (with `auto`), else base64; cut to
/// `truncate` bytes first, as RabbitMQ cuts it.
fn payload_json(body: &[u8], base64_only: bool, truncate: Option<usize>) -> (Value, &'static str) {
    let cut = &body[..truncate.map_or(body.len(), |t| t.min(body.len()))];
    match (base64_only, std::str::from_utf8(cut)) {
        (false, Ok(text)) => (json!(text), "string"),
        _ => (
            json!(base64::engine::general_purpose::STANDARD.encode(cut)),
            "base64",
        ),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum AckMode {
    AckRequeueTrue,
    AckRequeueFalse,
    RejectRequeueTrue,
    RejectRequeueFalse,
}

/// POST /api/queues/{vhost}/{name}/get: takes up to `count` messages (all with -1), and
/// then requeues them, acknowledges them, or rejects them (to a dead-letter exchange),
/// as `ackmode` says.
pub async fn get(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&api, &vhost)?;
    require_keys(&body, &["count", "ackmode", "encoding"])?;
    let count = body.integer("count")?.unwrap_or(0);
    let mode = match body.required_text("ackmode")? {
        "ack_requeue_true" => AckMode::AckRequeueTrue,
        "ack_requeue_false" => AckMode::AckRequeueFalse,
        "reject_requeue_true" => AckMode::RejectRequeueTrue,
        "reject_requeue_false" => AckMode::RejectRequeueFalse,
        other => {
            return Err(ApiError::bad_request(format!(
                "Unsupported ackmode '{other}'. Please use ack_requeue_true, ack_requeue_false, \
                 reject_requeue_true or reject_requeue_false."
            )))
        }
    };
    let base64_only = match body.required_text("encoding")? {
        "auto" => false,
        "base64" => true,
        _ => {
            return Err(ApiError::bad_request(
                "Unsupported encoding. Please use auto or base64.",
            ))
        }
    };
    let truncate = body
        .integer("truncate")?
        .and_then(|t| usize::try_from(t).ok());
    let grant = api.broker.access.grant(caller.name(), &vhost.name);
    grant
        .check(Access::Read, ResourceKind::Queue, &name)
        .map_err(ApiError::from)?;
    let then = match mode {
        AckMode::AckRequeueTrue | AckMode::RejectRequeueTrue => Settle::Requeue,
        AckMode::AckRequeueFalse => Settle::Ack,
        AckMode::RejectRequeueFalse => Settle::Reject,
    };
    let count = (count >= 0).then(|| u32::try_from(count).unwrap_or(u32::MAX));
    let refused = |error: wharf_core::Error| match error.kind {
        ErrorKind::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", error.text()),
        _ => channel_refusal(error),
    };
    // As basic.get: another connection's exclusive queue is refused (405 in AMQP).
    let taken: Vec<(Arc<Message>, bool, u32)> = if vhost.remote_queue(&name).is_some() {
        // Another node's queue: taken and settled there, off the runtime's threads.
        let vhost = vhost.clone();
        tokio::task::spawn_blocking(move || vhost.inspect_remote(&name, NO_CONNECTION, count, then))
            .await
            .map_err(|_| ApiError::internal("the get stopped unexpectedly"))?
            .map_err(refused)?
            .into_iter()
            .map(|got| (Arc::new(got.message), got.redelivered, got.message_count))
            .collect()
    } else {
        let queue = vhost.queue_for(&name, NO_CONNECTION).map_err(refused)?;
        queue
            .take_and_settle(count.map(|count| count as usize), then)
            .into_iter()
            .map(|got| (got.message, got.redelivered, got.message_count))
            .collect()
    };
    let answers: Vec<Value> = taken
        .iter()
        .map(|(message, redelivered, message_count)| {
            let (payload, encoding) = payload_json(&message.body, base64_only, truncate);
            json!({
                "payload_bytes": message.body.len(),
                "redelivered": redelivered,
                "exchange": message.exchange.as_ref() as &str,
                "routing_key": message.routing_key.as_ref() as &str,
                "message_count": message_count,
                "properties": properties_json(&message.properties),
                "payload": payload,
                "payload_encoding": encoding,
            })
        })
        .collect();
    json(Value::Array(answers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_text_when_they_can_be() {
        assert_eq!(payload_json(b"hi", false, None), (json!("hi"), "string"));
        assert_eq!(payload_json(b"hi", true, None), (json!("aGk="), "base64"));
        assert_eq!(
            payload_json(&[0, 1, 2, 255], false, None),
            (json!("AAEC/w=="), "base64")
        );
        assert_eq!(
            payload_json(b"hello", false, Some(2)),
            (json!("he"), "string")
        );
    }

    #[test]
    fn properties_round_trip_and_none_is_an_empty_list() {
        let none = encoded(&BasicProperties::default()).unwrap();
        assert_eq!(properties_json(&none), json!([]));
        let given = json!({"delivery_mode": 2, "headers": {"a": 1}, "content_type": "text/plain"});
        let props = basic_properties(given.as_object().unwrap()).unwrap();
        assert_eq!(properties_json(&encoded(&props).unwrap()), given);
        let bad = json!({"delivery_mode": "x"});
        assert_eq!(
            basic_properties(bad.as_object().unwrap())
                .unwrap_err()
                .reason,
            json!(["not_int", "delivery_mode"])
        );
    }
}
