//! /api/queues: list, show, declare, delete, purge, and actions.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use wharf_core::vhost::QueueDeclare;
use wharf_core::VHost;

use super::cluster_lists::{self, down_queue, others, queue_argument, Kind, RemoteRow, Row};
use super::render::{consumer_details, queue_json, QueueRow};
use super::{done, json, put_status, query_flag, require_keys};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::listing::{self, ListQuery, Listed};
use crate::rates;
use crate::Api;

/// Operations from the API belong to no client connection: nothing they declare is
/// exclusive, and they may reach any queue the user's permissions allow.
pub const NO_CONNECTION: u64 = 0;

fn rows(api: &Arc<Api>, vhost: &VHost) -> Vec<Row<QueueRow>> {
    vhost
        .served_queues()
        .into_iter()
        .map(|queue| Row::Here(QueueRow::read(api, queue)))
        .collect()
}

/// The queues of `vhosts`: this node's, then (on a cluster) the other members', and
/// those of members that did not answer, as every node knows them.
async fn all_rows(api: &Arc<Api>, vhosts: &[Arc<VHost>], query: &ListQuery) -> Vec<Row<QueueRow>> {
    let mut rows: Vec<Row<QueueRow>> = vhosts.iter().flat_map(|v| rows(api, v)).collect();
    if api.broker.cluster().is_none() {
        return rows;
    }
    let listed = |vhost: &str| vhosts.iter().any(|v| &*v.name == vhost);
    let mut silent = Vec::new();
    for (node, items) in others(api, Kind::Queues, query.raw.clone().unwrap_or_default()).await {
        match items {
            Some(items) => rows.extend(
                items
                    .into_iter()
                    .map(RemoteRow::new)
                    .filter(|row| listed(row.vhost()))
                    .map(Row::There),
            ),
            None => silent.push(node),
        }
    }
    for vhost in vhosts {
        rows.extend(
            vhost
                .remote_queues()
                .iter()
                .filter(|remote| silent.contains(&remote.home()))
                .map(|remote| Row::There(RemoteRow::new(down_queue(remote)))),
        );
    }
    rows
}

pub async fn list(
    State(api): State<Arc<Api>>,
    caller: Caller,
    query: ListQuery,
) -> ApiResult<Response> {
    query.check_list_ranges()?;
    let visible: Vec<Arc<VHost>> = api
        .broker
        .vhosts()
        .into_iter()
        .filter(|v| caller.sees_vhost(&api, &v.name))
        .collect();
    let rows = all_rows(&api, &visible, &query).await;
    json(listing::respond(rows, &query)?)
}

pub async fn list_in_vhost(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(vhost): Path<String>,
    query: ListQuery,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    query.check_list_ranges()?;
    let rows = all_rows(&api, &[vhost], &query).await;
    json(listing::respond(rows, &query)?)
}

pub async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    query: ListQuery,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    // As RabbitMQ's: a missing queue is missing before bad ranges are refused.
    let here = match vhost.served_queue(&name) {
        Ok(queue) => Ok(queue),
        Err(_) => Err(vhost.remote_queue(&name).ok_or_else(ApiError::not_found)?),
    };
    // The lengths end at the next whole increment, with the newest sample.
    let windows = query.ranges()?.windows_lengths_rounded_up(rates::now_ms());
    let mut object = match here {
        Ok(queue) => queue_json(&api, &queue, &queue.stats(), &query, &windows),
        Err(remote) => {
            // Another node's queue: shown as its node renders it, or down.
            let argument = queue_argument(&vhost.name, &name, &query);
            others(&api, Kind::Queue, argument)
                .await
                .into_iter()
                .find(|(node, _)| *node == remote.home())
                .and_then(|(_, items)| items?.into_iter().next())
                .unwrap_or_else(|| down_queue(&remote))
        }
    };
    let mut consumers = consumer_details(&api, &vhost.name, &name);
    consumers.extend(
        cluster_lists::other_consumers(&api)
            .await
            .into_iter()
            .filter(|c| c["queue"]["vhost"] == *vhost.name && c["queue"]["name"] == *name),
    );
    object["consumer_details"] = Value::Array(consumers);
    object["deliveries"] = json!([]);
    object["incoming"] = json!([]);
    json(listing::one(object, &query))
}

pub async fn put(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&api, &vhost)?;
    let declare = QueueDeclare {
        name: name.as_str().into(),
        server_named: false,
        passive: false,
        durable: body.boolean("durable", false)?,
        exclusive: false,
        auto_delete: body.boolean("auto_delete", false)?,
        arguments: super::arguments(&body)?,
    };
    let existed = vhost.has_queue(&name);
    let grant = api.broker.access.grant(caller.name(), &vhost.name);
    grant.declare_queue(&vhost, declare, NO_CONNECTION)?;
    Ok(done(put_status(!existed)))
}

/// Deletes a queue; `if-unused` and `if-empty` as queue.delete's flags. Another
/// connection's exclusive queue is refused, as RabbitMQ's API refuses it (`wharf ctl
/// delete_queue` deletes one).
pub async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&api, &vhost)?;
    if !vhost.has_queue(&name) {
        return Err(ApiError::not_found());
    }
    let grant = api.broker.access.grant(caller.name(), &vhost.name);
    let if_unused = query_flag(uri.query(), "if-unused");
    let if_empty = query_flag(uri.query(), "if-empty");
    match grant.delete_queue(&vhost, &name, NO_CONNECTION, if_unused, if_empty) {
        Ok(_) => Ok(done(StatusCode::NO_CONTENT)),
        Err(error) if error.kind == wharf_core::ErrorKind::NotFound => Err(ApiError::not_found()),
        Err(error) => Err(error.into()),
    }
}

/// DELETE /api/queues/{vhost}/{name}/contents: purges the ready messages.
pub async fn purge(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&api, &vhost)?;
    if !vhost.has_queue(&name) {
        return Err(ApiError::not_found());
    }
    let grant = api.broker.access.grant(caller.name(), &vhost.name);
    // As queue.purge: read permission, and not another connection's exclusive queue.
    grant.purge_queue(&vhost, &name, NO_CONNECTION)?;
    Ok(done(StatusCode::NO_CONTENT))
}

/// `sync` and `cancel_sync`: for mirrored queues in RabbitMQ; Wharf's queues have no
/// mirrors, so there is nothing to do but say so (204), as RabbitMQ does for a queue
/// without mirrors.
pub async fn action(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&api, &vhost)?;
    require_keys(&body, &["action"])?;
    let action = body.required_text("action")?;
    if !matches!(action, "sync" | "cancel_sync") {
        return Err(ApiError::bad_request(vec![
            Value::from("unknown"),
            Value::from(action),
        ]));
    }
    if !vhost.has_queue(&name) {
        return Err(ApiError::not_found());
    }
    Ok(done(StatusCode::NO_CONTENT))
}
