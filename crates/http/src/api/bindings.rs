//! /api/bindings and the binding lists of one exchange or queue. A binding is named in
//! paths by its "properties key": its routing key, quoted, and a hash of its arguments
//! when it has any (RabbitMQ hashes the Erlang terms; Wharf hashes the arguments' JSON,
//! so the keys differ between the two, and clients take them from the lists anyway).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Value};
use wharf_amqp::FieldTable;
use wharf_core::definitions_json::table_to_json;
use wharf_core::VHost;

use super::exchanges::exchange_name;
use super::queues::NO_CONNECTION;
use super::{done, json, location};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::Api;

/// One binding as listed.
#[derive(Debug, Clone)]
struct Bound {
    source: String,
    destination: String,
    destination_type: &'static str,
    routing_key: String,
    arguments: FieldTable,
}

impl Bound {
    fn properties_key(&self) -> String {
        properties_key(&self.routing_key, &self.arguments)
    }

    fn to_json(&self, vhost: &str) -> Value {
        json!({
            "source": self.source,
            "vhost": vhost,
            "destination": self.destination,
            "destination_type": self.destination_type,
            "routing_key": self.routing_key,
            "arguments": table_to_json(&self.arguments),
            "properties_key": self.properties_key(),
        })
    }
}

/// `application/x-www-form-urlencoded` quoting as RabbitMQ's: letters, digits and
/// `-_.!*'()` as they are, a space as `+`, the rest (`~` too) as `%XX`.
fn quote_plus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'*'
            | b'\''
            | b'('
            | b')' => out.push(byte as char),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A binding's name in paths: `k`, `~` (empty key), or `k~hash` with arguments.
pub fn properties_key(routing_key: &str, arguments: &FieldTable) -> String {
    let quoted = quote_plus(routing_key);
    if arguments.is_empty() {
        return match quoted.is_empty() {
            true => "~".to_string(),
            false => quoted,
        };
    }
    // FNV-1a over the arguments' JSON (keys in the order given), as 6 base64url digits.
    let text = table_to_json(arguments).to_string();
    let hash = text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let digits = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.to_be_bytes());
    format!("{quoted}~{digits}")
}

/// Every binding of the vhost, the default exchange's implicit ones (one per queue)
/// first, as RabbitMQ lists them.
fn all_bindings(vhost: &VHost) -> Vec<Bound> {
    let mut all: Vec<Bound> = vhost
        .queue_names()
        .iter()
        .map(|name| Bound {
            source: String::new(),
            destination: name.to_string(),
            destination_type: "queue",
            routing_key: name.to_string(),
            arguments: FieldTable::new(),
        })
        .collect();
    let mut exchanges = vhost.exchanges();
    exchanges.sort_by(|a, b| a.name.cmp(&b.name));
    for exchange in exchanges.iter().filter(|e| !e.name.is_empty()) {
        let mut bound: Vec<Bound> = exchange
            .bindings()
            .into_iter()
            .map(|b| {
                let (destination, destination_type) = match &b.destination {
                    d if d.is_queue() => (d.name().to_string(), "queue"),
                    d => (d.name().to_string(), "exchange"),
                };
                Bound {
                    source: exchange.name.to_string(),
                    destination,
                    destination_type,
                    routing_key: b.routing_key.to_string(),
                    arguments: b.arguments,
                }
            })
            .collect();
        bound.sort_by(|a, b| {
            (a.destination_type, &a.destination, &a.routing_key).cmp(&(
                b.destination_type,
                &b.destination,
                &b.routing_key,
            ))
        });
        all.extend(bound);
    }
    all
}

fn listed(vhost: &VHost, keep: impl Fn(&Bound) -> bool) -> Value {
    Value::Array(
        all_bindings(vhost)
            .iter()
            .filter(|b| keep(b))
            .map(|b| b.to_json(&vhost.name))
            .collect(),
    )
}

pub async fn list(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<Response> {
    let mut all = Vec::new();
    for vhost in api.broker.vhosts() {
        if caller.sees_vhost(&api, &vhost.name) {
            if let Value::Array(items) = listed(&vhost, |_| true) {
                all.extend(items);
            }
        }
    }
    json(Value::Array(all))
}

pub async fn list_in_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    json(listed(&vhost, |_| true))
}

pub async fn of_queue(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    if !vhost.has_queue(&name) {
        return Err(ApiError::not_found());
    }
    json(listed(&vhost, |b| {
        b.destination_type == "queue" && b.destination == name
    }))
}

pub async fn of_source(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    let name = exchange_name(&name).to_string();
    vhost.exchange(&name).map_err(|_| ApiError::not_found())?;
    json(listed(&vhost, |b| b.source == name))
}

pub async fn of_exchange_destination(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    let name = exchange_name(&name).to_string();
    vhost.exchange(&name).map_err(|_| ApiError::not_found())?;
    json(listed(&vhost, |b| {
        b.destination_type == "exchange" && b.destination == name
    }))
}

/// `q` or `e` in a binding path: the destination's type.
fn destination_type(kind: &str) -> ApiResult<&'static str> {
    match kind {
        "q" => Ok("queue"),
        "e" => Ok("exchange"),
        _ => Err(ApiError::not_found()),
    }
}

fn bindings_between(
    vhost: &VHost,
    source: &str,
    kind: &'static str,
    destination: &str,
) -> Vec<Bound> {
    all_bindings(vhost)
        .into_iter()
        .filter(|b| {
            b.source == source && b.destination_type == kind && b.destination == destination
        })
        .collect()
}

type BindingPath = (String, String, String, String);

pub async fn between(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<BindingPath>,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    let kind = destination_type(&kind)?;
    let found = bindings_between(&vhost, exchange_name(&source), kind, &destination);
    json(Value::Array(
        found.iter().map(|b| b.to_json(&vhost.name)).collect(),
    ))
}

/// POST: binds, and answers 201 with the new binding's place (relative, as RabbitMQ's).
pub async fn create(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<BindingPath>,
    body: JsonBody,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&api, &vhost)?;
    let kind = destination_type(&kind)?;
    let source = exchange_name(&source);
    let routing_key = body.text("routing_key")?.unwrap_or_default().to_string();
    let arguments = super::arguments(&body)?;
    if source.is_empty() {
        return Err(ApiError::not_authorised("Access refused."));
    }
    let grant = api.broker.access.grant(caller.name(), &vhost.name);
    let key = routing_key.as_str().into();
    match kind {
        "queue" => grant.bind_queue(
            &vhost,
            &destination,
            source,
            key,
            arguments.clone(),
            NO_CONNECTION,
        )?,
        _ => grant.bind_exchange(&vhost, &destination, source, key, arguments.clone())?,
    }
    let props = properties_key(&routing_key, &arguments);
    let place = format!("{}/{}", quote_plus(&destination), quote_plus(&props));
    Ok((StatusCode::CREATED, [(header::LOCATION, location(&place))]).into_response())
}

type OneBindingPath = (String, String, String, String, String);

fn find(
    vhost: &VHost,
    source: &str,
    kind: &str,
    destination: &str,
    props: &str,
) -> ApiResult<Bound> {
    let kind = destination_type(kind)?;
    bindings_between(vhost, exchange_name(source), kind, destination)
        .into_iter()
        .find(|b| b.properties_key() == props)
        .ok_or_else(ApiError::not_found)
}

pub async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<OneBindingPath>,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    let bound = find(&vhost, &source, &kind, &destination, &props)?;
    json(bound.to_json(&vhost.name))
}

pub async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<OneBindingPath>,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&api, &vhost)?;
    let bound = find(&vhost, &source, &kind, &destination, &props)?;
    if bound.source.is_empty() {
        return Err(ApiError::not_authorised("Access refused."));
    }
    let grant = api.broker.access.grant(caller.name(), &vhost.name);
    let key = bound.routing_key.as_str().into();
    match bound.destination_type {
        "queue" => grant.unbind_queue(
            &vhost,
            &destination,
            &bound.source,
            key,
            bound.arguments,
            NO_CONNECTION,
        )?,
        _ => grant.unbind_exchange(&vhost, &destination, &bound.source, key, bound.arguments)?,
    }
    Ok(done(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_amqp::FieldValue;

    #[test]
    fn properties_keys_are_quoted_and_hash_their_arguments() {
        let none = FieldTable::new();
        assert_eq!(properties_key("k", &none), "k");
        assert_eq!(properties_key("", &none), "~");
        assert_eq!(properties_key("a/b %", &none), "a%2Fb+%25");
        assert_eq!(properties_key("orders.*", &none), "orders.*");
        assert_eq!(properties_key("a~b", &none), "a%7Eb");
        let mut args = FieldTable::new();
        args.insert("x-match", FieldValue::LongStr("all".into()));
        let key = properties_key("k2", &args);
        assert!(
            key.starts_with("k2~") && key.len() == "k2~".len() + 6,
            "{key}"
        );
        let mut other = FieldTable::new();
        other.insert("x-match", FieldValue::LongStr("any".into()));
        assert_ne!(key, properties_key("k2", &other));
    }
}
