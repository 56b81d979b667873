//! /api/exchanges: list, show, declare, delete. The default exchange is `amq.default` in
//! paths and `""` in bodies, as in RabbitMQ.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use wharf_core::vhost::ExchangeDeclare;
use wharf_core::{ExchangeKind, VHost};

use std::collections::HashMap;

use wharf_core::connections::{ExchangeCounts, ExchangeKey};

use super::render::ExchangeRow;
use super::{done, json, put_status, query_flag};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::listing::{self, ListQuery};
use crate::rates;
use crate::Api;

/// An exchange's name as a path gives it: `amq.default` is the default exchange.
pub fn exchange_name(path: &str) -> &str {
    match path {
        "amq.default" => "",
        other => other,
    }
}

/// A vhost's exchanges, each with what was published to it.
fn rows(
    api: &Arc<Api>,
    vhost: Arc<VHost>,
    counts: &HashMap<ExchangeKey, ExchangeCounts>,
) -> Vec<ExchangeRow> {
    vhost
        .exchanges()
        .into_iter()
        .map(|exchange| row(api, &vhost, exchange, counts))
        .collect()
}

/// An exchange with what was published to it.
fn row(
    api: &Arc<Api>,
    vhost: &Arc<VHost>,
    exchange: Arc<wharf_core::Exchange>,
    counts: &HashMap<ExchangeKey, ExchangeCounts>,
) -> ExchangeRow {
    ExchangeRow {
        api: api.clone(),
        counts: counts
            .get(&(vhost.name.to_string(), exchange.name.to_string()))
            .copied(),
        vhost: vhost.clone(),
        exchange,
    }
}

pub async fn list(
    State(api): State<Arc<Api>>,
    caller: Caller,
    query: ListQuery,
) -> ApiResult<Response> {
    query.check_list_ranges()?;
    let counts = api.broker.connections.exchange_totals();
    let rows: Vec<ExchangeRow> = api
        .broker
        .vhosts()
        .into_iter()
        .filter(|v| caller.sees_vhost(&api, &v.name))
        .flat_map(|v| rows(&api, v, &counts))
        .collect();
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
    let counts = api.broker.connections.exchange_totals();
    json(listing::respond(rows(&api, vhost, &counts), &query)?)
}

pub async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    query: ListQuery,
) -> ApiResult<Response> {
    let vhost = caller.vhost_to_read(&api, &vhost)?;
    let exchange = vhost
        .exchange(exchange_name(&name))
        .map_err(|_| ApiError::not_found())?;
    let windows = query.ranges()?.windows(rates::now_ms());
    let counts = api.broker.connections.exchange_totals();
    let mut object = row(&api, &vhost, exchange, &counts).json(&query, &windows);
    object["incoming"] = serde_json::json!([]);
    object["outgoing"] = serde_json::json!([]);
    json(listing::one(object, &query))
}

pub async fn put(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&api, &vhost)?;
    let kind = body.text("type")?.unwrap_or("direct").to_string();
    if ExchangeKind::parse(&kind).is_none() {
        return Err(ApiError::bad_request(format!(
            "invalid exchange type '{kind}'"
        )));
    }
    let name = exchange_name(&name);
    if name.is_empty() {
        return Err(ApiError::not_authorised("Access refused."));
    }
    let declare = ExchangeDeclare {
        name: name.into(),
        kind: kind.as_str().into(),
        passive: false,
        durable: body.boolean("durable", false)?,
        auto_delete: body.boolean("auto_delete", false)?,
        internal: body.boolean("internal", false)?,
        arguments: super::arguments(&body)?,
    };
    let existed = vhost.exchange(name).is_ok();
    let grant = api.broker.access.grant(caller.name(), &vhost.name);
    grant.declare_exchange(&vhost, declare)?;
    Ok(done(put_status(!existed)))
}

pub async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&api, &vhost)?;
    let name = exchange_name(&name);
    if name.is_empty() || name.starts_with("amq.") {
        return Err(ApiError::not_authorised("Access refused."));
    }
    if vhost.exchange(name).is_err() {
        return Err(ApiError::not_found());
    }
    let if_unused = query_flag(uri.query(), "if-unused");
    let grant = api.broker.access.grant(caller.name(), &vhost.name);
    grant.delete_exchange(&vhost, name, if_unused)?;
    Ok(done(StatusCode::NO_CONTENT))
}
