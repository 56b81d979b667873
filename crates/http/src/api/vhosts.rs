//! /api/vhosts: list, show, create or change, delete.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Value};
use wharf_core::VHost;

use super::render::{
    insert_depths, queue_message_stats, vhost_values, Details, QUEUE_SAMPLED_COUNT,
};
use super::{done, json, put_status};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::listing::{self, ListQuery, Listed};
use crate::rates::{self, Key, Windows};
use crate::Api;

struct VhostRow {
    api: Arc<Api>,
    vhost: Arc<VHost>,
}

impl Listed for VhostRow {
    fn vhost(&self) -> &str {
        &self.vhost.name
    }

    fn name(&self) -> &str {
        &self.vhost.name
    }

    fn render(&self, query: &ListQuery) -> Value {
        vhost_json(
            &self.api,
            &self.vhost,
            query.disable_stats,
            &Windows::default(),
        )
    }
}

/// A vhost, its queues' depths and message_stats sampled over `windows.msg_rates`: as
/// RabbitMQ's, a vhost's depths follow `msg_rates_age`, not `lengths_age`.
fn vhost_json(api: &Api, vhost: &VHost, disable_stats: bool, windows: &Windows) -> Value {
    let (description, tags) = vhost.metadata.read().clone();
    let values = vhost_values(vhost);
    let key = Key::Vhost(vhost.name.to_string());
    let sampled = Details::read(api, &key, QUEUE_SAMPLED_COUNT, windows.msg_rates);
    let mut object = json!({
        "cluster_state": {api.broker.node.name(): "running"},
        "default_queue_type": "undefined",
        "description": description,
        "metadata": {"description": description, "tags": tags},
        "name": vhost.name.as_ref() as &str,
        "tags": tags,
        "tracing": false,
    });
    let Value::Object(o) = &mut object else {
        return object;
    };
    insert_depths(o, &values, &sampled);
    let (received, sent) = api
        .broker
        .connections
        .list()
        .iter()
        .filter(|c| c.details.vhost == vhost.name.as_ref() as &str)
        .fold((0, 0), |(r, s), c| (r + c.received_bytes, s + c.sent_bytes));
    o.insert("recv_oct".into(), json!(received));
    o.insert("send_oct".into(), json!(sent));
    if !disable_stats {
        o.insert(
            "message_stats".into(),
            Value::Object(queue_message_stats(&values, &sampled)),
        );
    }
    object
}

pub async fn list(
    State(api): State<Arc<Api>>,
    caller: Caller,
    query: ListQuery,
) -> ApiResult<Response> {
    query.check_list_ranges()?;
    let rows: Vec<VhostRow> = api
        .broker
        .vhosts()
        .into_iter()
        .filter(|v| caller.lists_vhost(&api, &v.name))
        .map(|vhost| VhostRow {
            api: api.clone(),
            vhost,
        })
        .collect();
    json(listing::respond(rows, &query)?)
}

pub async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    query: ListQuery,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    let vhost = api.broker.vhost(&name).ok_or_else(ApiError::not_found)?;
    let windows = query.ranges()?.windows(rates::now_ms());
    json(listing::one(
        vhost_json(&api, &vhost, query.disable_stats, &windows),
        &query,
    ))
}

pub async fn put(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    caller.require_administrator()?;
    let description = body.text("description")?.unwrap_or_default().to_string();
    let tags = body.tags("tags")?;
    let exists = api.broker.vhost(&name).is_some();
    match exists {
        true => api.broker.set_vhost_metadata(&name, &description, tags)?,
        false => {
            // As RabbitMQ: who creates a vhost through the API gets every permission in it.
            api.broker.add_vhost(&name, &description, tags)?;
            api.broker
                .set_permissions(caller.name(), &name, ".*", ".*", ".*")?;
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
    api.broker.delete_vhost(&name)?;
    Ok(done(axum::http::StatusCode::NO_CONTENT))
}
