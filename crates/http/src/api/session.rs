//! /api/wharf/session: the web UI's login and logout (Wharf's own; RabbitMQ's UI sends
//! the password with every request instead). A login answers a token that stands for
//! the password ([`crate::session`]); a logout ends it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{done, json, require_keys};
use crate::auth::{admit, Caller};
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::Api;

/// Logs in with `{"username": ..., "password": ...}`: the token to send as
/// `Authorization: Bearer <token>`, when it expires, and who the user is.
pub async fn login(
    State(api): State<Arc<Api>>,
    parts: Parts,
    body: JsonBody,
) -> Result<Response, Response> {
    let refuse = |e: ApiError| e.into_response();
    require_keys(&body, &["username", "password"]).map_err(refuse)?;
    let name = body.required_text("username").map_err(refuse)?;
    let password = body.required_text("password").map_err(refuse)?;
    let user = api
        .broker
        .access
        .authenticate(name, password)
        .ok_or_else(|| ApiError::login_failed().into_response())?;
    let caller = admit(&api, &parts, user)?;
    let issued = api.sessions.issue(&caller.user);
    json(json!({
        "token": issued.token,
        "expires": issued.expires,
        "name": caller.user.name,
        "tags": caller.user.tags,
    }))
    .map_err(refuse)
}

/// Logs out: the token of this request is refused from now on.
pub async fn logout(
    State(api): State<Arc<Api>>,
    _caller: Caller,
    parts: Parts,
) -> ApiResult<Response> {
    let token = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::bad_request("Only a session's token can log out"))?;
    api.sessions.revoke(token.trim());
    Ok(done(StatusCode::NO_CONTENT))
}
