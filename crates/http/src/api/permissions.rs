//! /api/permissions and /api/topic-permissions, and the lists of one vhost's or one
//! user's. Administrators only.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use wharf_core::access::{Permission, TopicPermission};
use wharf_core::AdminErrorKind;

use super::{done, json, put_status, require_keys};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::Api;

fn permission_json(vhost: &str, user: &str, p: &Permission) -> Value {
    json!({
        "user": user,
        "vhost": vhost,
        "configure": p.configure.as_str(),
        "write": p.write.as_str(),
        "read": p.read.as_str(),
    })
}

fn topic_json(vhost: &str, user: &str, p: &TopicPermission) -> Value {
    json!({
        "user": user,
        "vhost": vhost,
        "exchange": p.exchange,
        "write": p.write,
        "read": p.read,
    })
}

fn permissions_where(api: &Api, keep: impl Fn(&str, &str) -> bool) -> Value {
    Value::Array(
        api.broker
            .access
            .permissions()
            .into_iter()
            .filter(|(vhost, user, _)| keep(vhost, user))
            .map(|(vhost, user, p)| permission_json(&vhost, &user, &p))
            .collect(),
    )
}

fn topic_permissions_where(api: &Api, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    api.broker
        .access
        .topic_permissions()
        .into_iter()
        .filter(|(vhost, user, _)| keep(vhost, user))
        .map(|(vhost, user, p)| topic_json(&vhost, &user, &p))
        .collect()
}

pub async fn list(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<Response> {
    caller.require_administrator()?;
    json(permissions_where(&api, |_, _| true))
}

pub async fn of_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    api.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    json(permissions_where(&api, |v, _| v == vhost))
}

pub async fn of_user(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    api.broker
        .access
        .user(&user)
        .ok_or_else(ApiError::not_found)?;
    json(permissions_where(&api, |_, u| u == user))
}

pub async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    let p = api
        .broker
        .access
        .permission(&vhost, &user)
        .ok_or_else(ApiError::not_found)?;
    json(permission_json(&vhost, &user, &p))
}

/// A refusal to set a permission: a missing user or vhost is RabbitMQ's
/// `vhost_or_user_not_found`; a pattern that does not compile, its own text.
fn refused(error: wharf_core::AdminError) -> ApiError {
    match error.kind {
        AdminErrorKind::NotFound => ApiError::bad_request("vhost_or_user_not_found"),
        _ => ApiError::from(error),
    }
}

pub async fn put(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    require_keys(&body, &["configure", "write", "read"])?;
    let configure = body.required_text("configure")?;
    let write = body.required_text("write")?;
    let read = body.required_text("read")?;
    let existed = api.broker.access.permission(&vhost, &user).is_some();
    api.broker
        .set_permissions(&user, &vhost, configure, write, read)
        .map_err(refused)?;
    Ok(done(put_status(!existed)))
}

pub async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    if api.broker.access.permission(&vhost, &user).is_none() {
        return Err(ApiError::not_found());
    }
    api.broker.clear_permissions(&user, &vhost)?;
    Ok(done(StatusCode::NO_CONTENT))
}

pub async fn topic_list(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<Response> {
    caller.require_administrator()?;
    json(Value::Array(topic_permissions_where(&api, |_, _| true)))
}

pub async fn topic_of_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    api.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    json(Value::Array(topic_permissions_where(&api, |v, _| {
        v == vhost
    })))
}

pub async fn topic_of_user(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    api.broker
        .access
        .user(&user)
        .ok_or_else(ApiError::not_found)?;
    json(Value::Array(topic_permissions_where(&api, |_, u| {
        u == user
    })))
}

pub async fn topic_show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    let found = topic_permissions_where(&api, |v, u| v == vhost && u == user);
    match found.is_empty() {
        true => Err(ApiError::not_found()),
        false => json(Value::Array(found)),
    }
}

pub async fn topic_put(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    require_keys(&body, &["exchange"])?;
    require_keys(&body, &["write", "read"])?;
    let exchange = body.required_text("exchange")?;
    let write = body.required_text("write")?;
    let read = body.required_text("read")?;
    let existed = !topic_permissions_where(&api, |v, u| v == vhost && u == user).is_empty();
    api.broker
        .set_topic_permissions(&user, &vhost, exchange, write, read)
        .map_err(refused)?;
    Ok(done(put_status(!existed)))
}

pub async fn topic_delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    if topic_permissions_where(&api, |v, u| v == vhost && u == user).is_empty() {
        return Err(ApiError::not_found());
    }
    api.broker.clear_topic_permissions(&user, &vhost, None)?;
    Ok(done(StatusCode::NO_CONTENT))
}
