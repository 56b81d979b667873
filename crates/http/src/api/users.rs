//! /api/users: list, show, create or change, delete (one or in bulk). Administrators only.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};
use wharf_core::User;

use super::{done, json, put_status, require_keys};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::listing::{self, ListQuery, Listed};
use crate::Api;

/// RabbitMQ's name for the hashing Wharf stores passwords with.
const SHA256: &str = "rabbit_password_hashing_sha256";

struct UserRow(User);

impl Listed for UserRow {
    fn vhost(&self) -> &str {
        ""
    }

    fn name(&self) -> &str {
        &self.0.name
    }

    fn render(&self, _query: &ListQuery) -> Value {
        user_json(&self.0)
    }
}

fn user_json(user: &User) -> Value {
    let (hash, algorithm) = match &user.password {
        Some(hash) => (hash.to_base64(), hash.algorithm.name().to_string()),
        None => (String::new(), SHA256.to_string()),
    };
    json!({
        "name": user.name,
        "password_hash": hash,
        "hashing_algorithm": algorithm,
        "tags": user.tags,
        "limits": serde_json::from_str::<Value>(&user.limits.to_json_text()).unwrap_or_else(|_| json!({})),
    })
}

pub async fn list(
    State(api): State<Arc<Api>>,
    caller: Caller,
    query: ListQuery,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    let rows = api.broker.access.users().into_iter().map(UserRow).collect();
    json(listing::respond::<UserRow>(rows, &query)?)
}

pub async fn without_permissions(
    State(api): State<Arc<Api>>,
    caller: Caller,
    query: ListQuery,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    let permitted: Vec<String> = api
        .broker
        .access
        .permissions()
        .into_iter()
        .map(|(_, user, _)| user)
        .collect();
    let rows = api
        .broker
        .access
        .users()
        .into_iter()
        .filter(|u| !permitted.contains(&u.name))
        .map(UserRow)
        .collect();
    json(listing::respond::<UserRow>(rows, &query)?)
}

pub async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    let user = api
        .broker
        .access
        .user(&name)
        .ok_or_else(ApiError::not_found)?;
    json(user_json(&user))
}

/// Creates a user or replaces its password and tags. `tags` must be given (it may be
/// empty); `password` or `password_hash` (with `hashing_algorithm`), not both. Without
/// either, a new user has no password (certificate login only) and an existing one
/// keeps theirs.
pub async fn put(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    if !body.0.contains_key("tags") {
        return Err(ApiError::bad_request("tags_not_present"));
    }
    let tags = body.tags("tags")?;
    let password = body.text("password")?;
    let hash = body.text("password_hash")?;
    if password.is_some() && hash.is_some() {
        return Err(ApiError::bad_request(
            "both_password_and_password_hash_are_provided",
        ));
    }
    let algorithm = body.text("hashing_algorithm")?.unwrap_or(SHA256);
    if let Some(hash) = hash {
        if !hash.is_empty()
            && base64::engine::general_purpose::STANDARD
                .decode(hash)
                .is_err()
        {
            return Err(ApiError::bad_request(vec![
                Value::from("not_base64"),
                Value::from(hash),
            ]));
        }
    }
    let broker = &api.broker;
    let existing = broker.access.user(&name);
    let exists = existing.is_some();
    match (hash, exists) {
        (Some(hash), _) => {
            broker.import_user(&name, hash, algorithm, tags)?;
            // A user replaced by its hash keeps its limits.
            if let Some(limits) = existing.map(|u| u.limits).filter(|l| !l.is_empty()) {
                broker.set_user_limits(&name, &limits.to_json_text())?;
            }
        }
        (None, false) => broker.add_user(&name, password, tags)?,
        (None, true) => {
            if let Some(password) = password {
                broker.change_password(&name, Some(password))?;
            }
            broker.set_user_tags(&name, tags)?;
        }
    }
    Ok(done(put_status(!exists)))
}

pub async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    api.broker.delete_user(&name)?;
    Ok(done(StatusCode::NO_CONTENT))
}

/// `{"users": [...]}`: deletes them all, or, when one is not a user, refuses naming it
/// and deletes none.
pub async fn bulk_delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: JsonBody,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    require_keys(&body, &["users"])?;
    let names: Vec<String> = match body.get("users") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => return Err(ApiError::bad_request("users must be a list of names")),
    };
    if let Some(missing) = names.iter().find(|n| api.broker.access.user(n).is_none()) {
        return Err(ApiError::bad_request(vec![
            Value::from("no_such_user"),
            Value::from(missing.as_str()),
        ]));
    }
    for name in names {
        api.broker.delete_user(&name)?;
    }
    Ok(done(StatusCode::NO_CONTENT))
}
