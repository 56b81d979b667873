//! /api/vhost-limits and /api/user-limits: one limit at a time is set or cleared; the
//! lists show each vhost's or user's limits as one object.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{done, json, require_keys};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::Api;

fn limits_object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    }
}

/// The limit's new value: an integer (-1: none).
fn limit_value(body: &JsonBody, name: &str) -> ApiResult<i64> {
    require_keys(body, &["value"])?;
    match body.get("value") {
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().unwrap_or(-1)),
        other => Err(ApiError::bad_request(format!(
            "{name} should be a number, actually was {}",
            other.cloned().unwrap_or(Value::Null)
        ))),
    }
}

fn vhost_limits(api: &Api, vhost: &str) -> Option<Map<String, Value>> {
    api.broker
        .vhost_infos()
        .into_iter()
        .find(|v| v.name == vhost)
        .map(|v| limits_object(&v.limits.to_json_text()))
}

pub async fn vhost_list(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<Response> {
    let listed: Vec<Value> = api
        .broker
        .vhost_infos()
        .into_iter()
        .filter(|v| !v.limits.is_empty() && caller.sees_vhost(&api, &v.name))
        .map(|v| json!({"vhost": v.name, "value": limits_object(&v.limits.to_json_text())}))
        .collect();
    json(Value::Array(listed))
}

pub async fn vhost_show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    caller.vhost_to_read(&api, &vhost)?;
    let limits = vhost_limits(&api, &vhost).ok_or_else(ApiError::not_found)?;
    match limits.is_empty() {
        true => json(json!([])),
        false => json(json!([{"vhost": vhost, "value": limits}])),
    }
}

pub async fn vhost_put(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    let mut limits = vhost_limits(&api, &vhost).ok_or_else(ApiError::vhost_not_found)?;
    require_keys(&body, &["value"])?;
    let value = limit_value(&body, &name).map_err(|e| {
        ApiError::bad_request(format!("Validation failed\n\n{}\n", reason_text(&e)))
    })?;
    limits.insert(name, json!(value));
    api.broker
        .set_vhost_limits(&vhost, &Value::Object(limits).to_string())?;
    Ok(done(StatusCode::NO_CONTENT))
}

fn reason_text(error: &ApiError) -> String {
    match &error.reason {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn vhost_delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    let mut limits = vhost_limits(&api, &vhost).ok_or_else(ApiError::vhost_not_found)?;
    if limits.remove(&name).is_some() {
        api.broker
            .set_vhost_limits(&vhost, &Value::Object(limits).to_string())?;
    }
    Ok(done(StatusCode::NO_CONTENT))
}

fn user_limits(api: &Api, user: &str) -> Option<Map<String, Value>> {
    api.broker
        .access
        .user(user)
        .map(|u| limits_object(&u.limits.to_json_text()))
}

pub async fn user_list(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<Response> {
    let listed: Vec<Value> = api
        .broker
        .access
        .users()
        .into_iter()
        .filter(|u| !u.limits.is_empty() && (caller.is_monitor() || u.name == caller.name()))
        .map(|u| json!({"user": u.name, "value": limits_object(&u.limits.to_json_text())}))
        .collect();
    json(Value::Array(listed))
}

pub async fn user_show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    if !caller.is_monitor() && user != caller.name() {
        return Err(ApiError::not_authorised(
            "User not authorised to access object",
        ));
    }
    let limits = user_limits(&api, &user).ok_or_else(ApiError::not_found)?;
    match limits.is_empty() {
        true => json(json!([])),
        false => json(json!([{"user": user, "value": limits}])),
    }
}

pub async fn user_put(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    let Some(mut limits) = user_limits(&api, &user) else {
        return Err(ApiError::bad_request(vec![
            Value::from("no_such_user"),
            Value::from(user),
        ]));
    };
    let value = limit_value(&body, &name)?;
    limits.insert(name, json!(value));
    api.broker
        .set_user_limits(&user, &Value::Object(limits).to_string())?;
    Ok(done(StatusCode::NO_CONTENT))
}

pub async fn user_delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    let Some(mut limits) = user_limits(&api, &user) else {
        return Err(ApiError::not_found());
    };
    if limits.remove(&name).is_some() {
        api.broker
            .set_user_limits(&user, &Value::Object(limits).to_string())?;
    }
    Ok(done(StatusCode::NO_CONTENT))
}
