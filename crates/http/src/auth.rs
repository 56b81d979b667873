//! Who is calling: HTTP basic credentials checked against Wharf's users, and what their
//! tags let them do, as in RabbitMQ's management plugin:
//! - `management`: log in; see and use the vhosts they have permissions in, and their
//!   own connections and channels;
//! - `policymaker`: that, and the policies and parameters of those vhosts;
//! - `monitoring`: that, and every vhost (in the vhost list), every connection and
//!   channel, the node (read only);
//! - `administrator`: everything.
//!
//! A user without any of these tags cannot log in; a user the broker keeps to loopback
//! (`guest`) cannot log in from elsewhere, as for AMQP.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use wharf_core::{User, VHost};

use crate::error::{credentials_needed, ApiError, ApiResult};
use crate::serving::Peer;
use crate::session::{Refusal, Sessions};
use crate::Api;

/// The tags that let a user log in to the management API.
const MANAGEMENT_TAGS: &[&str] = &["management", "policymaker", "monitoring", "administrator"];

/// The authenticated user of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
}

impl Caller {
    pub fn name(&self) -> &str {
        &self.user.name
    }

    pub fn is_administrator(&self) -> bool {
        self.user.has_tag("administrator")
    }

    /// Sees every vhost's objects and every connection.
    pub fn is_monitor(&self) -> bool {
        self.is_administrator() || self.user.has_tag("monitoring")
    }

    pub fn is_policymaker(&self) -> bool {
        self.is_administrator() || self.user.has_tag("policymaker")
    }

    pub fn require_administrator(&self) -> ApiResult<()> {
        match self.is_administrator() {
            true => Ok(()),
            false => Err(ApiError::not_authorised("Not administrator user")),
        }
    }

    pub fn require_monitor(&self) -> ApiResult<()> {
        match self.is_monitor() {
            true => Ok(()),
            false => Err(ApiError::not_authorised("Not monitor user")),
        }
    }

    /// Whether the caller has any permission in `vhost`.
    pub fn has_permissions_in(&self, api: &Api, vhost: &str) -> bool {
        api.broker
            .access
            .permission(vhost, &self.user.name)
            .is_some()
    }

    /// Whether lists show the caller this vhost's objects (queues, exchanges,
    /// bindings): an administrator's, or a vhost the caller has permissions in.
    pub fn sees_vhost(&self, api: &Api, vhost: &str) -> bool {
        self.is_administrator() || self.has_permissions_in(api, vhost)
    }

    /// Whether the vhost list shows the caller this vhost: a monitor sees them all.
    pub fn lists_vhost(&self, api: &Api, vhost: &str) -> bool {
        self.is_monitor() || self.has_permissions_in(api, vhost)
    }

    /// Whether lists show the caller this connection (or its channels and consumers).
    pub fn sees_connection_of(&self, user: &str) -> bool {
        self.is_monitor() || self.user.name == user
    }

    /// The vhost a request about objects in it names: 404 when it does not exist, 401
    /// unless the caller is an administrator or has permissions there.
    pub fn vhost(&self, api: &Api, name: &str) -> ApiResult<Arc<VHost>> {
        let vhost = api
            .broker
            .vhost(name)
            .ok_or_else(ApiError::vhost_not_found)?;
        match self.is_administrator() || self.has_permissions_in(api, name) {
            true => Ok(vhost),
            false => Err(ApiError::not_authorised(
                "User not authorised to access virtual host",
            )),
        }
    }

    /// As [`Caller::vhost`], for reads that answer a missing vhost as any missing object.
    pub fn vhost_to_read(&self, api: &Api, name: &str) -> ApiResult<Arc<VHost>> {
        let vhost = api.broker.vhost(name).ok_or_else(ApiError::not_found)?;
        match self.sees_vhost(api, name) {
            true => Ok(vhost),
            false => Err(ApiError::not_authorised(
                "User not authorised to access virtual host",
            )),
        }
    }
}

/// Whether `ip` is this machine (an IPv4 address mapped into IPv6 too).
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The user and password of a basic Authorization header.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The token of a bearer Authorization header (a web UI session's).
fn bearer_token(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// Checks a request's credentials (basic, or a UI session's token): the user, or the
/// answer to refuse it with.
pub fn authenticate(api: &Api, parts: &Parts) -> Result<Caller, Response> {
    let header = match parts.headers.get(AUTHORIZATION) {
        Some(header) => header,
        None => return Err(credentials_needed()),
    };
    let text = header.to_str().unwrap_or_default();
    if let Some(token) = bearer_token(text) {
        let user = Sessions::user_of(token).and_then(|name| api.broker.access.user(&name));
        return match user.map(|user| (api.sessions.verify(token, &user), user)) {
            Some((Ok(()), user)) => admit(api, parts, user),
            Some((Err(Refusal::Expired), _)) => {
                Err(ApiError::not_authorised("Session expired").into_response())
            }
            _ => Err(ApiError::login_failed().into_response()),
        };
    }
    let (name, password) = match basic_credentials(text) {
        Some(credentials) => credentials,
        // Basic credentials that do not decode are a malformed request (400, no body, as
        // RabbitMQ answers); another scheme is a failed login.
        None if text.starts_with("Basic ") || text.starts_with("basic ") => {
            return Err(axum::http::StatusCode::BAD_REQUEST.into_response())
        }
        None => return Err(ApiError::login_failed().into_response()),
    };
    match api.broker.access.authenticate(&name, &password) {
        Some(user) => admit(api, parts, user),
        None => Err(ApiError::login_failed().into_response()),
    }
}

/// Lets a user whose credentials are good in, unless the broker keeps them to loopback
/// and the request is from elsewhere, or they have no management tag.
pub fn admit(api: &Api, parts: &Parts, user: User) -> Result<Caller, Response> {
    let from_loopback = parts
        .extensions
        .get::<Peer>()
        .is_some_and(|peer| is_loopback(peer.0.ip()));
    if !from_loopback && !api.broker.allows_remote(&user.name) {
        return Err(ApiError::not_authorised("User can only log in via localhost").into_response());
    }
    if !MANAGEMENT_TAGS.iter().any(|tag| user.has_tag(tag)) {
        return Err(ApiError::not_authorised("Not management user").into_response());
    }
    Ok(Caller { user })
}

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Response> {
        authenticate(api, parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        // "guest:gu:est" — a password may hold a colon; a user name cannot.
        assert_eq!(
            basic_credentials("Basic Z3Vlc3Q6Z3U6ZXN0"),
            Some(("guest".into(), "gu:est".into()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        // "guest" without a colon.
        assert_eq!(basic_credentials("Basic Z3Vlc3Q="), None);
        assert_eq!(bearer_token("Bearer wharf1.a.b"), Some("wharf1.a.b"));
        assert_eq!(bearer_token("Basic wharf1.a.b"), None);
    }

    #[test]
    fn mapped_ipv4_loopback_is_loopback() {
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(!is_loopback("10.0.0.1".parse().unwrap()));
    }
}
