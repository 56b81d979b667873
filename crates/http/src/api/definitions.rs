//! /api/definitions: export and import everything (or one vhost's objects), the same JSON
//! as `wharf ctl export_definitions` and RabbitMQ's. Administrators only.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use wharf_core::definitions_json;

use super::{done, json};
use crate::auth::Caller;
use crate::body::RawBody;
use crate::error::{ApiError, ApiResult};
use crate::Api;

pub async fn export(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<Response> {
    caller.require_administrator()?;
    json(definitions_json::export(&api.broker))
}

/// The keys of a whole-broker export that hold one vhost's objects.
const VHOST_KEYS: &[&str] = &["policies", "queues", "exchanges", "bindings", "parameters"];

/// One vhost's objects, without the vhost key in each (as RabbitMQ exports them).
pub async fn export_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    api.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let all = definitions_json::export(&api.broker);
    let mut one = json!({
        "rabbit_version": all.get("rabbit_version").cloned().unwrap_or(Value::Null),
        "rabbitmq_version": all.get("rabbitmq_version").cloned().unwrap_or(Value::Null),
    });
    for key in VHOST_KEYS {
        let items: Vec<Value> = all
            .get(*key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter(|item| item.get("vhost").and_then(Value::as_str) == Some(&vhost))
                    .map(|item| {
                        let mut item = item.clone();
                        if let Value::Object(o) = &mut item {
                            o.remove("vhost");
                        }
                        item
                    })
                    .collect()
            })
            .unwrap_or_default();
        one[*key] = Value::Array(items);
    }
    json(one)
}

/// A definitions file: a JSON object, or RabbitMQ's refusal.
fn parsed(body: &[u8]) -> ApiResult<Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(ApiError::bad_request("failed_to_parse_json")),
    }
}

pub async fn import(
    State(api): State<Arc<Api>>,
    caller: Caller,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    definitions_json::import(&api.broker, &parsed(&body)?)?;
    Ok(done(StatusCode::NO_CONTENT))
}

/// One vhost's objects: each gets the vhost of the path.
pub async fn import_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    api.broker
        .vhost(&vhost)
        .ok_or_else(ApiError::vhost_not_found)?;
    let body = parsed(&body)?;
    let mut defs = json!({});
    for key in VHOST_KEYS {
        let items: Vec<Value> = body
            .get(key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|item| {
                        let mut item = item.clone();
                        if let Value::Object(o) = &mut item {
                            o.insert("vhost".into(), json!(vhost));
                        }
                        item
                    })
                    .collect()
            })
            .unwrap_or_default();
        defs[*key] = Value::Array(items);
    }
    definitions_json::import(&api.broker, &defs)?;
    Ok(done(StatusCode::NO_CONTENT))
}
