//! The API's refusals, as RabbitMQ's management plugin words them: a status code and a
//! JSON body `{"error": ..., "reason": ...}`. Core errors are typed; here they become
//! the status RabbitMQ answers the same refusal with.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use wharf_core::{AdminError, AdminErrorKind, ErrorKind};

/// A refused request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    /// A text mostly; RabbitMQ gives some refusals as a list (`["not_boolean", "x"]`).
    pub reason: Value,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The realm RabbitMQ's management plugin asks basic credentials for.
const REALM: &str = "Basic realm=\"RabbitMQ Management\"";

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, reason: impl Into<Value>) -> ApiError {
        ApiError {
            status,
            error,
            reason: reason.into(),
        }
    }

    /// A missing object (queue, exchange, user, binding...) or an unknown path.
    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
    }

    /// A vhost named in the path of a write that does not exist.
    pub fn vhost_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "vhost_not_found")
    }

    pub fn bad_request(reason: impl Into<Value>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }

    /// No credentials, wrong ones, or a user without the tag the request needs.
    pub fn not_authorised(reason: impl Into<Value>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "not_authorised", reason)
    }

    /// A failed login (RabbitMQ spells this one with a z).
    pub fn login_failed() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "not_authorized", "Login failed")
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method Not Allowed",
        )
    }

    /// The cluster cannot take the change now (no majority reachable): try again later.
    pub fn unavailable(reason: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            reason.into(),
        )
    }

    pub fn internal(reason: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            reason.into(),
        )
    }
}

impl From<wharf_core::Error> for ApiError {
    /// An operation the core refused, as RabbitMQ's API answers it when the AMQP channel
    /// it works through is closed with the same code: a missing object is 404 with the
    /// core's words, a refused access 401 without them, anything else 400 with them.
    fn from(error: wharf_core::Error) -> Self {
        match error.kind {
            ErrorKind::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", error.detail),
            ErrorKind::AccessRefused => ApiError::not_authorised("Access refused."),
            ErrorKind::InternalError => ApiError::internal(error.detail),
            ErrorKind::Unavailable | ErrorKind::NotLeader => ApiError::unavailable(error.detail),
            _ => ApiError::bad_request(error.detail),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error.kind {
            AdminErrorKind::NotFound => ApiError::not_found(),
            AdminErrorKind::AlreadyExists | AdminErrorKind::Invalid => {
                ApiError::bad_request(error.message)
            }
            AdminErrorKind::Failed => ApiError::internal(error.message),
            AdminErrorKind::Unavailable => ApiError::unavailable(error.message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "reason": self.reason}).to_string();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
        }
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            // The body was not read to its end: the connection cannot carry another
            // request, and the client must not put one on it.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A 401 without a body, as RabbitMQ answers a request that sent no credentials.
pub fn credentials_needed() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM))],
    )
        .into_response()
}
