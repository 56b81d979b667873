//! /api/connections, /api/channels and /api/consumers: the clients connected now. A user
//! who is not a monitor sees only their own connections and channels, and the consumers
//! in the vhosts they may use.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::render::{connection_json, consumers_json, ChannelRow, ConnectionRow};
use super::{done, json};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{self, ListQuery, Listed};
use crate::rates;
use crate::Api;

/// The reason a client hears when its connection is closed without an X-Reason header.
const DEFAULT_REASON: &str = "Closed via management plugin";

fn connection_rows(api: &Arc<Api>, caller: &Caller) -> Vec<ConnectionRow> {
    api.broker
        .connections
        .list()
        .into_iter()
        .filter(|c| caller.sees_connection_of(&c.details.user))
        .map(|c| ConnectionRow::new(api, c))
        .collect()
}

fn channel_rows(api: &Arc<Api>, caller: &Caller) -> Vec<ChannelRow> {
    ChannelRow::all(api)
        .into_iter()
        .filter(|c| caller.sees_connection_of(&c.channel.user))
        .collect()
}

pub async fn list(
    State(api): State<Arc<Api>>,
    caller: Caller,
    query: ListQuery,
) -> ApiResult<Response> {
    query.ranges()?;
    json(listing::respond(connection_rows(&api, &caller), &query)?)
}

pub async fn list_in_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
    query: ListQuery,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    query.ranges()?;
    let mut rows = connection_rows(&api, &caller);
    rows.retain(|r| r.vhost() == &*vhost.name);
    json(listing::respond(rows, &query)?)
}

/// The connection of that name the caller may see.
fn connection_named(api: &Arc<Api>, caller: &Caller, name: &str) -> ApiResult<ConnectionRow> {
    let row = api
        .broker
        .connections
        .list()
        .into_iter()
        .map(|c| ConnectionRow::new(api, c))
        .find(|r| r.name == name)
        .ok_or_else(ApiError::not_found)?;
    match caller.sees_connection_of(&row.connection.details.user) {
        true => Ok(row),
        false => Err(ApiError::not_authorised(
            "User not authorised to access object",
        )),
    }
}

pub async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    query: ListQuery,
) -> ApiResult<Response> {
    // As RabbitMQ's: bad ranges are refused before the connection is looked up.
    let windows = query.ranges()?.windows(rates::now_ms());
    let row = connection_named(&api, &caller, &name)?;
    let object = connection_json(&api, &row.connection, &windows);
    json(listing::one(object, &query))
}

/// Closes the connection with 320 CONNECTION_FORCED and the X-Reason header's text.
pub async fn close(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let row = connection_named(&api, &caller, &name)?;
    // Header bytes beyond ASCII are read as UTF-8 (the UI sends a reason so encoded).
    let reason = headers
        .get("x-reason")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_REASON.to_string());
    match api.broker.connections.close(row.connection.id, &reason) {
        true => Ok(done(StatusCode::NO_CONTENT)),
        false => Err(ApiError::not_found()),
    }
}

pub async fn channels_of(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    query: ListQuery,
) -> ApiResult<Response> {
    query.ranges()?;
    let row = connection_named(&api, &caller, &name)?;
    let mut channels = channel_rows(&api, &caller);
    channels.retain(|c| c.channel.connection == row.connection.id);
    json(listing::respond(channels, &query)?)
}

pub async fn channels(
    State(api): State<Arc<Api>>,
    caller: Caller,
    query: ListQuery,
) -> ApiResult<Response> {
    query.ranges()?;
    json(listing::respond(channel_rows(&api, &caller), &query)?)
}

pub async fn channels_in_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
    query: ListQuery,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    query.ranges()?;
    let mut rows = channel_rows(&api, &caller);
    rows.retain(|r| r.vhost() == &*vhost.name);
    json(listing::respond(rows, &query)?)
}

pub async fn channel(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    query: ListQuery,
) -> ApiResult<Response> {
    let windows = query.ranges()?.windows(rates::now_ms());
    let row = channel_rows(&api, &caller)
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(ApiError::not_found)?;
    let mut object = row.json(&query, &windows);
    let (connection, number) = (row.channel.connection, row.channel.stats.number);
    object["consumer_details"] = Value::Array(consumers_json(&api, |c| {
        c.connection == connection && c.channel == number
    }));
    json(listing::one(object, &query))
}

pub async fn consumers(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<Response> {
    let visible = |vhost: &str| caller.sees_vhost(&api, vhost);
    json(Value::Array(consumers_json(&api, |c| visible(&c.vhost))))
}

pub async fn consumers_in_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    json(Value::Array(consumers_json(&api, |c| {
        c.vhost == vhost.name.as_ref() as &str
    })))
}
