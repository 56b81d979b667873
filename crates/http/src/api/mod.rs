//! The endpoints, grouped by what they are about, and the routes that reach them. Paths,
//! methods and answers are RabbitMQ 3.10's management API; where Wharf has nothing to
//! serve (a feature it lacks), the answer is what RabbitMQ gives for a missing object.

mod bindings;
pub(crate) mod cluster_lists;
mod connections;
mod definitions;
mod exchanges;
mod health;
mod limits;
mod messages;
mod move_messages;
mod overview;
mod permissions;
mod policies;
mod queues;
pub(crate) mod render;
mod session;
mod users;
mod vhosts;

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::Value;

use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::Api;

pub use overview::RABBITMQ_VERSION;
pub use render::sample_rates;

/// 201 for an object a PUT created, 204 for one it changed or found as asked.
fn put_status(created: bool) -> StatusCode {
    match created {
        true => StatusCode::CREATED,
        false => StatusCode::NO_CONTENT,
    }
}

/// An empty 2xx answer.
fn done(status: StatusCode) -> Response {
    status.into_response()
}

/// A JSON answer.
fn json(value: Value) -> ApiResult<Response> {
    Ok(Json(value).into_response())
}

/// Refuses a body that lacks any of `keys`, naming them all as RabbitMQ does:
/// `[{key_missing,write},{key_missing,read}]`.
fn require_keys(body: &JsonBody, keys: &[&str]) -> ApiResult<()> {
    let missing: Vec<String> = keys
        .iter()
        .filter(|key| !body.0.contains_key(**key))
        .map(|key| format!("{{key_missing,{key}}}"))
        .collect();
    match missing.is_empty() {
        true => Ok(()),
        false => Err(ApiError::bad_request(format!("[{}]", missing.join(",")))),
    }
}

/// The `arguments` object of a body as a field table (integers as 64-bit, as RabbitMQ
/// reads them).
fn arguments(body: &JsonBody) -> ApiResult<wharf_amqp::FieldTable> {
    let object = body.object("arguments")?;
    Ok(wharf_core::definitions_json::json_to_table(&Value::Object(
        object,
    )))
}

/// A query string flag (`if-unused=true`).
fn query_flag(query: Option<&str>, key: &str) -> bool {
    query
        .map(|q| crate::listing::form_pairs(q.as_bytes()))
        .unwrap_or_default()
        .iter()
        .any(|(k, v)| k == key && v == "true")
}

/// A Location header value for a created binding, as RabbitMQ gives it (relative, its
/// path segments percent-encoded).
fn location(path: &str) -> HeaderValue {
    HeaderValue::from_str(path).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> StatusCode {
    StatusCode::METHOD_NOT_ALLOWED
}

pub fn routes(api: Arc<Api>) -> Router {
    let router = Router::new()
        .route("/", get(crate::ui::index))
        .route("/ui/{*path}", get(crate::ui::file))
        .route(
            "/api/wharf/session",
            post(session::login).delete(session::logout),
        )
        .route("/api/overview", get(overview::overview))
        .route(
            "/api/cluster-name",
            get(overview::cluster_name).put(overview::set_cluster_name),
        )
        .route("/api/whoami", get(overview::whoami))
        .route("/api/nodes", get(overview::nodes))
        .route("/api/nodes/{node}", get(overview::node))
        .route("/api/extensions", get(overview::extensions))
        .route("/api/auth", get(overview::auth))
        .route("/api/feature-flags", get(overview::feature_flags))
        .route("/api/vhosts", get(vhosts::list))
        .route(
            "/api/vhosts/{vhost}",
            get(vhosts::show).put(vhosts::put).delete(vhosts::delete),
        )
        .route(
            "/api/vhosts/{vhost}/permissions",
            get(permissions::of_vhost),
        )
        .route(
            "/api/vhosts/{vhost}/topic-permissions",
            get(permissions::topic_of_vhost),
        )
        .route(
            "/api/vhosts/{vhost}/connections",
            get(connections::list_in_vhost),
        )
        .route(
            "/api/vhosts/{vhost}/channels",
            get(connections::channels_in_vhost),
        )
        .route("/api/users", get(users::list))
        .route(
            "/api/users/without-permissions",
            get(users::without_permissions),
        )
        .route("/api/users/bulk-delete", post(users::bulk_delete))
        .route(
            "/api/users/{user}",
            get(users::show).put(users::put).delete(users::delete),
        )
        .route("/api/users/{user}/permissions", get(permissions::of_user))
        .route(
            "/api/users/{user}/topic-permissions",
            get(permissions::topic_of_user),
        )
        .route("/api/permissions", get(permissions::list))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(permissions::show)
                .put(permissions::put)
                .delete(permissions::delete),
        )
        .route("/api/topic-permissions", get(permissions::topic_list))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(permissions::topic_show)
                .put(permissions::topic_put)
                .delete(permissions::topic_delete),
        )
        .route("/api/exchanges", get(exchanges::list))
        .route("/api/exchanges/{vhost}", get(exchanges::list_in_vhost))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchanges::show)
                .put(exchanges::put)
                .delete(exchanges::delete),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(bindings::of_source),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(bindings::of_exchange_destination),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            post(messages::publish),
        )
        .route("/api/queues", get(queues::list))
        .route("/api/queues/{vhost}", get(queues::list_in_vhost))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queues::show).put(queues::put).delete(queues::delete),
        )
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            get(bindings::of_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(queues::purge),
        )
        .route("/api/queues/{vhost}/{name}/get", post(messages::get))
        .route("/api/queues/{vhost}/{name}/actions", post(queues::action))
        .route(
            "/api/wharf/queues/{vhost}/{name}/move",
            post(move_messages::move_messages),
        )
        .route("/api/bindings", get(bindings::list))
        .route("/api/bindings/{vhost}", get(bindings::list_in_vhost))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(bindings::between).post(bindings::create),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(bindings::show).delete(bindings::delete),
        )
        .route("/api/connections", get(connections::list))
        .route(
            "/api/connections/{name}",
            get(connections::show).delete(connections::close),
        )
        .route(
            "/api/connections/{name}/channels",
            get(connections::channels_of),
        )
        .route("/api/channels", get(connections::channels))
        .route("/api/channels/{name}", get(connections::channel))
        .route("/api/consumers", get(connections::consumers))
        .route(
            "/api/consumers/{vhost}",
            get(connections::consumers_in_vhost),
        )
        .route("/api/policies", get(policies::list))
        .route("/api/policies/{vhost}", get(policies::list_in_vhost))
        .route(
            "/api/policies/{vhost}/{name}",
            get(policies::show)
                .put(policies::put)
                .delete(policies::delete),
        )
        .route("/api/operator-policies", get(policies::none))
        .route(
            "/api/operator-policies/{vhost}",
            get(policies::none_in_vhost),
        )
        .route("/api/parameters", get(policies::none))
        .route("/api/global-parameters", get(policies::none))
        .route("/api/vhost-limits", get(limits::vhost_list))
        .route("/api/vhost-limits/{vhost}", get(limits::vhost_show))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            put(limits::vhost_put).delete(limits::vhost_delete),
        )
        .route("/api/user-limits", get(limits::user_list))
        .route("/api/user-limits/{user}", get(limits::user_show))
        .route(
            "/api/user-limits/{user}/{name}",
            put(limits::user_put).delete(limits::user_delete),
        )
        .route(
            "/api/definitions",
            get(definitions::export).post(definitions::import),
        )
        .route(
            "/api/definitions/{vhost}",
            get(definitions::export_vhost).post(definitions::import_vhost),
        )
        .route("/api/aliveness-test/{vhost}", get(health::aliveness))
        .route("/api/health/checks/alarms", get(health::alarms))
        .route("/api/health/checks/local-alarms", get(health::alarms))
        .route(
            "/api/health/checks/port-listener/{port}",
            get(health::port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(health::protocol_listener),
        )
        .route(
            "/api/health/checks/virtual-hosts",
            get(health::virtual_hosts),
        )
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(health::not_critical),
        )
        .route(
            "/api/health/checks/node-is-mirror-sync-critical",
            get(health::not_critical),
        )
        .route(
            "/api/health/checks/certificate-expiration/{within}/{unit}",
            get(health::certificate_expiration),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(no_prompt_for_sessions))
        .layer(axum::middleware::from_fn(same_origin_changes));
    router.with_state(api)
}

/// Refuses a request that would change something when a browser says it comes from
/// another site (`Sec-Fetch-Site`, or an `Origin` other than the host asked): a page
/// elsewhere must not use credentials the browser keeps for this API (basic auth it was
/// once given) to declare, delete or import. Clients that are not browsers send neither
/// header and are not affected; the UI's own requests are same-origin.
async fn same_origin_changes(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes && from_another_site(request.headers()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "A request from another site may not change the broker",
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether a browser says the request comes from a page of another origin.
fn from_another_site(headers: &axum::http::HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (text("origin"), text("host")) {
        // "null" is an opaque origin (a sandboxed frame, a file): another site.
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => {
            let authority = origin
                .split_once("://")
                .map_or(origin, |(_, rest)| rest)
                .trim_end_matches('/');
            !authority.eq_ignore_ascii_case(host)
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// A refusal of the web UI's requests (a login, or a request with a session's token)
/// carries no basic-auth challenge, which would make the browser prompt for a password
/// over the page.
async fn no_prompt_for_sessions(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let from_ui = request.uri().path() == "/api/wharf/session"
        || request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("Bearer ") || value.starts_with("bearer "));
    let mut response = next.run(request).await;
    if from_ui {
        response
            .headers_mut()
            .remove(axum::http::header::WWW_AUTHENTICATE);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_browsers_that_say_another_site_are_refused() {
        assert!(!from_another_site(&headers(&[])), "curl, rabbitmqadmin");
        assert!(!from_another_site(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
        assert!(!from_another_site(&headers(&[("sec-fetch-site", "none")])));
        assert!(from_another_site(&headers(&[(
            "sec-fetch-site",
            "cross-site"
        )])));
        // Another port of the same host is the same site, but another origin.
        assert!(from_another_site(&headers(&[(
            "sec-fetch-site",
            "same-site"
        )])));
        let same = [
            ("origin", "http://localhost:15672"),
            ("host", "localhost:15672"),
        ];
        assert!(!from_another_site(&headers(&same)));
        let other = [
            ("origin", "http://evil.example"),
            ("host", "localhost:15672"),
        ];
        assert!(from_another_site(&headers(&other)));
        assert!(from_another_site(&headers(&[
            ("origin", "null"),
            ("host", "h")
        ])));
    }
}
