//! Request bodies: read within a size bound and a time bound, parsed as JSON, and their
//! fields read with RabbitMQ's refusals for a wrong type (`["not_boolean", "x"]`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The largest body accepted (definitions files can be large).
pub const MAX_BODY_BYTES: usize = 20 * 1024 * 1024;
/// How long a client may take to send a body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON object sent as a request's body. An empty body reads as `{}`, as RabbitMQ
/// takes it.
#[derive(Debug, Clone, Default)]
pub struct JsonBody(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = read(request.into_body()).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// A request's body as it came (read within the same bounds).
#[derive(Debug, Clone, Default)]
pub struct RawBody(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        read(request.into_body()).await.map(RawBody)
    }
}

/// The whole body, or a refusal when it is too large or too slow.
pub async fn read(body: Body) -> Result<bytes::Bytes, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_request",
            format!("request body larger than {MAX_BODY_BYTES} bytes, or cut short"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "bad_request",
            "request body not received in time",
        )),
    }
}

/// A body as a JSON object.
pub fn parse(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::bad_request("not_json")),
        Err(_) => Err(ApiError::bad_request("not_json")),
    }
}

/// A value as RabbitMQ names it in a type refusal: a string as it is, others as JSON.
fn shown(value: &Value) -> Value {
    match value {
        Value::String(_) => value.clone(),
        other => Value::String(other.to_string()),
    }
}

impl JsonBody {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A boolean field (RabbitMQ takes the strings "true" and "false" too).
    pub fn boolean(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" => Ok(true),
            Some(Value::String(s)) if s == "false" => Ok(false),
            Some(other) => Err(ApiError::bad_request(vec![
                Value::from("not_boolean"),
                shown(other),
            ])),
        }
    }

    /// A text field.
    pub fn text(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ApiError::bad_request(format!(
                "{key} must be a string, not {other}"
            ))),
        }
    }

    /// A text field that must be there.
    pub fn required_text(&self, key: &str) -> Result<&str, ApiError> {
        self.text(key)?
            .ok_or_else(|| ApiError::bad_request(format!("{key} not found in body")))
    }

    /// An integer field (a number, or a string of digits as RabbitMQ's forms send).
    pub fn integer(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => {
                Ok(s.trim().parse::<i64>().ok())
            }
            Some(other) => Err(ApiError::bad_request(vec![
                Value::from("not_integer"),
                shown(other),
            ])),
        }
    }

    /// A JSON object field (`arguments`, `definition`): absent is empty.
    pub fn object(&self, key: &str) -> Result<Map<String, Value>, ApiError> {
        match self.get(key) {
            None => Ok(Map::new()),
            Some(Value::Object(object)) => Ok(object.clone()),
            // RabbitMQ's forms send an empty list for no arguments.
            Some(Value::Array(items)) if items.is_empty() => Ok(Map::new()),
            Some(other) => Err(ApiError::bad_request(format!(
                "{key} must be an object, not {other}"
            ))),
        }
    }

    /// Tags, as a comma-separated text or a list of texts.
    pub fn tags(&self, key: &str) -> Result<Vec<String>, ApiError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.trim().to_string()),
                    other => Err(ApiError::bad_request(format!(
                        "{key} must be texts, not {other}"
                    ))),
                })
                .filter(|t| !matches!(t, Ok(t) if t.is_empty()))
                .collect(),
            Some(other) => Err(ApiError::bad_request(format!(
                "{key} must be a text or a list, not {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> JsonBody {
        match value {
            Value::Object(o) => JsonBody(o),
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn empty_body_is_an_empty_object_and_garbage_is_not_json() {
        assert!(parse(b"").unwrap().is_empty());
        assert!(parse(b"  \n").unwrap().is_empty());
        assert_eq!(
            parse(b"{bad").unwrap_err(),
            ApiError::bad_request("not_json")
        );
        assert_eq!(
            parse(b"[1]").unwrap_err(),
            ApiError::bad_request("not_json")
        );
    }

    #[test]
    fn fields_of_the_wrong_type_are_refused_as_rabbitmq_words_it() {
        let b = body(json!({"durable": "x", "n": 1.5, "t": "a, b,", "l": ["x", ""]}));
        assert_eq!(
            b.boolean("durable", false).unwrap_err().reason,
            json!(["not_boolean", "x"])
        );
        assert!(b.boolean("absent", true).unwrap());
        assert!(b.integer("n").is_err());
        assert_eq!(b.tags("t").unwrap(), ["a", "b"]);
        assert_eq!(b.tags("l").unwrap(), ["x"]);
    }
}
