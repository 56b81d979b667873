//! /api/policies: list, show, set, clear. Policymakers and administrators set them;
//! anyone who may see a vhost may read its policies.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use wharf_core::policy::Policy;
use wharf_core::VHost;

use super::{done, json, put_status, require_keys};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::Api;

fn policy_json(vhost: &str, p: &Policy) -> Value {
    json!({
        "vhost": vhost,
        "name": p.name.as_ref() as &str,
        "pattern": p.pattern,
        "apply-to": p.apply_to.as_str(),
        "definition": serde_json::from_str::<Value>(&p.definition_json).unwrap_or_else(|_| json!({})),
        "priority": p.priority,
    })
}

fn of(vhost: &VHost) -> Vec<Value> {
    let mut policies = vhost.policies();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    policies
        .iter()
        .map(|p| policy_json(&vhost.name, p))
        .collect()
}

pub async fn list(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<Response> {
    let all: Vec<Value> = api
        .broker
        .vhosts()
        .iter()
        .filter(|v| caller.sees_vhost(&api, &v.name))
        .flat_map(|v| of(v))
        .collect();
    json(Value::Array(all))
}

pub async fn list_in_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    json(Value::Array(of(&vhost)))
}

pub async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    let policy = vhost
        .policies()
        .into_iter()
        .find(|p| p.name.as_ref() as &str == name)
        .ok_or_else(ApiError::not_found)?;
    json(policy_json(&vhost.name, &policy))
}

/// Policies are the policymakers': others are refused as RabbitMQ refuses them.
fn require_policymaker(caller: &Caller) -> ApiResult<()> {
    match caller.is_policymaker() {
        true => Ok(()),
        false => Err(ApiError::not_authorised(
            "User not authorised to access object",
        )),
    }
}

/// RabbitMQ's wording of a policy that does not validate.
fn validation_failed(reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Validation failed\n\n{reason}\n"))
}

pub async fn put(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    require_policymaker(&caller)?;
    let vhost = caller.vhost(&api, &vhost)?;
    require_keys(&body, &["pattern", "definition"])?;
    let pattern = body.required_text("pattern")?;
    let definition = match body.get("definition") {
        Some(Value::Object(object)) => Value::Object(object.clone()),
        _ => return Err(validation_failed("definition must be an object")),
    };
    let apply_to = body.text("apply-to")?.unwrap_or("all");
    let priority = match body.get("priority") {
        None => 0,
        Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) if s.parse::<i64>().is_ok() => s.parse().unwrap_or(0),
        Some(other) => {
            return Err(validation_failed(format!(
                "priority should be a number, actually was {other}"
            )))
        }
    };
    let policy = Policy::new(&name, pattern, apply_to, &definition.to_string(), priority)
        .map_err(validation_failed)?;
    let existed = vhost
        .policies()
        .iter()
        .any(|p| p.name.as_ref() as &str == name);
    vhost.set_policy(policy)?;
    Ok(done(put_status(!existed)))
}

pub async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    require_policymaker(&caller)?;
    let vhost = caller.vhost(&api, &vhost)?;
    match vhost.clear_policy(&name)? {
        true => Ok(done(StatusCode::NO_CONTENT)),
        false => Err(ApiError::not_found()),
    }
}

/// Operator policies and runtime parameters: Wharf has none, so every list is empty.
pub async fn none(_caller: Caller) -> ApiResult<Response> {
    json(json!([]))
}

pub async fn none_in_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    caller.vhost_to_read(&api, &vhost)?;
    json(json!([]))
}
