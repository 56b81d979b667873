//! /api/connections, /api/channels and /api/consumers: the clients connected now. A user
//! who is not a monitor sees only their own connections and channels, and the consumers
//! in the vhosts they may use.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::cluster_lists::{close_argument, other_consumers, other_rows, others, Kind, Row};
use super::render::{connection_json, consumers_json, ChannelRow, ConnectionRow};
use super::{done, json};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{self, ListQuery, Listed};
use crate::rates;
use crate::Api;

/// The reason a client hears when its connection is closed without an X-Reason header.
const DEFAULT_REASON: &str = "Closed via management plugin";

/// The connections the caller may see: this node's, then the other members'.
async fn connection_rows(
    api: &Arc<Api>,
    caller: &Caller,
    query: &ListQuery,
) -> Vec<Row<ConnectionRow>> {
    let here: Vec<ConnectionRow> = api
        .broker
        .connections
        .list()
        .into_iter()
        .filter(|c| caller.sees_connection_of(&c.details.user))
        .map(|c| ConnectionRow::new(api, c))
        .collect();
    with_others(api, caller, here, Kind::Connections, query).await
}

/// The channels the caller may see: this node's, then the other members'.
async fn channel_rows(api: &Arc<Api>, caller: &Caller, query: &ListQuery) -> Vec<Row<ChannelRow>> {
    let here: Vec<ChannelRow> = ChannelRow::all(api)
        .into_iter()
        .filter(|c| caller.sees_connection_of(&c.channel.user))
        .collect();
    with_others(api, caller, here, Kind::Channels, query).await
}

/// `here`, then the other members' items of list `kind` (connections or channels) that
/// the caller may see.
async fn with_others<T>(
    api: &Api,
    caller: &Caller,
    here: Vec<T>,
    kind: Kind,
    query: &ListQuery,
) -> Vec<Row<T>> {
    let mut rows: Vec<Row<T>> = here.into_iter().map(Row::Here).collect();
    rows.extend(
        other_rows(api, kind, query)
            .await
            .into_iter()
            .filter(|row| caller.sees_connection_of(row.user()))
            .map(Row::There),
    );
    rows
}

pub async fn list(
    State(api): State<Arc<Api>>,
    caller: Caller,
    query: ListQuery,
) -> ApiResult<Response> {
    query.ranges()?;
    let rows = connection_rows(&api, &caller, &query).await;
    json(listing::respond(rows, &query)?)
}

pub async fn list_in_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
    query: ListQuery,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    query.ranges()?;
    let mut rows = connection_rows(&api, &caller, &query).await;
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
    let object = match connection_named(&api, &caller, &name) {
        Ok(row) => connection_json(&api, &row.connection, &windows),
        Err(missing) => {
            // Another node's, maybe.
            let row = other_rows(&api, Kind::Connections, &query)
                .await
                .into_iter()
                .find(|row| row.name() == name)
                .ok_or(missing)?;
            if !caller.sees_connection_of(row.user()) {
                return Err(ApiError::not_authorised(
                    "User not authorised to access object",
                ));
            }
            row.value
        }
    };
    json(listing::one(object, &query))
}

/// Closes the connection with 320 CONNECTION_FORCED and the X-Reason header's text;
/// another node's connection is closed by its node.
pub async fn close(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // Header bytes beyond ASCII are read as UTF-8 (the UI sends a reason so encoded).
    let reason = headers
        .get("x-reason")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_REASON.to_string());
    let row = match connection_named(&api, &caller, &name) {
        Ok(row) => row,
        Err(missing) => {
            let there = other_rows(&api, Kind::Connections, &ListQuery::default())
                .await
                .into_iter()
                .find(|row| row.name() == name)
                .ok_or(missing)?;
            if !caller.sees_connection_of(there.user()) {
                return Err(ApiError::not_authorised(
                    "User not authorised to access object",
                ));
            }
            let argument = close_argument(&name, &reason);
            let closed = others(&api, Kind::CloseConnection, argument)
                .await
                .into_iter()
                .any(|(_, answer)| answer.is_some_and(|a| !a.is_empty()));
            return match closed {
                true => Ok(done(StatusCode::NO_CONTENT)),
                false => Err(ApiError::not_found()),
            };
        }
    };
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
    let mut channels: Vec<ChannelRow> = ChannelRow::all(&api)
        .into_iter()
        .filter(|c| caller.sees_connection_of(&c.channel.user))
        .collect();
    channels.retain(|c| c.channel.connection == row.connection.id);
    json(listing::respond(channels, &query)?)
}

pub async fn channels(
    State(api): State<Arc<Api>>,
    caller: Caller,
    query: ListQuery,
) -> ApiResult<Response> {
    query.ranges()?;
    let rows = channel_rows(&api, &caller, &query).await;
    json(listing::respond(rows, &query)?)
}

pub async fn channels_in_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
    query: ListQuery,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    query.ranges()?;
    let mut rows = channel_rows(&api, &caller, &query).await;
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
    let here = ChannelRow::all(&api).into_iter().find(|c| c.name == name);
    let object = match here {
        Some(row) if caller.sees_connection_of(&row.channel.user) => {
            let mut object = row.json(&query, &windows);
            let (connection, number) = (row.channel.connection, row.channel.stats.number);
            object["consumer_details"] = Value::Array(consumers_json(&api, |c| {
                c.connection == connection && c.channel == number
            }));
            object
        }
        Some(_) => return Err(ApiError::not_found()),
        None => {
            // Another node's, maybe: its consumers are those that name it.
            let row = other_rows(&api, Kind::Channels, &query)
                .await
                .into_iter()
                .find(|row| row.name() == name && caller.sees_connection_of(row.user()))
                .ok_or_else(ApiError::not_found)?;
            let mut object = row.value;
            object["consumer_details"] = Value::Array(
                other_consumers(&api)
                    .await
                    .into_iter()
                    .filter(|c| c["channel_details"]["name"] == *name)
                    .collect(),
            );
            object
        }
    };
    json(listing::one(object, &query))
}

/// `here`, then the consumers of the other members' channels in the vhosts `keep` keeps.
async fn with_others_consumers(
    api: &Api,
    mut here: Vec<Value>,
    keep: impl Fn(&str) -> bool,
) -> Vec<Value> {
    here.extend(
        other_consumers(api)
            .await
            .into_iter()
            .filter(|c| keep(c["queue"]["vhost"].as_str().unwrap_or_default())),
    );
    here
}

pub async fn consumers(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<Response> {
    let visible = |vhost: &str| caller.sees_vhost(&api, vhost);
    let here = consumers_json(&api, |c| visible(&c.vhost));
    json(Value::Array(
        with_others_consumers(&api, here, visible).await,
    ))
}

pub async fn consumers_in_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    let here = consumers_json(&api, |c| c.vhost == vhost.name.as_ref() as &str);
    let all = with_others_consumers(&api, here, |v| v == vhost.name.as_ref() as &str).await;
    json(Value::Array(all))
}
