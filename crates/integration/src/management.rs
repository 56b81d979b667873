//! A client of the management HTTP API for tests: real HTTP over a real socket, each
//! request as a given user, answering with the status and the JSON body (Null when
//! empty, the text when not JSON).

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::TestBroker;

/// What the API answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// The body, after checking the status.
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status, body: {}",
            self.body
        );
        self.body
    }

    /// Checks a refusal's status and error field; returns its reason.
    pub fn refused(self, status: u16, error: &str) -> Value {
        let body = self.expect(status);
        assert_eq!(body["error"], error, "{body}");
        body["reason"].clone()
    }
}

#[derive(Debug, Clone)]
pub struct Management {
    base: String,
    client: reqwest::Client,
    user: Option<(String, String)>,
}

/// A path segment percent-encoded (a vhost "/" is "%2F").
pub fn segment(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

impl Management {
    pub fn new(address: SocketAddr) -> Management {
        Management {
            base: format!("http://{address}"),
            client: reqwest::Client::new(),
            user: Some(("guest".into(), "guest".into())),
        }
    }

    /// The API of a broker started with it, as guest.
    pub fn of(broker: &TestBroker) -> Management {
        Management::new(
            broker
                .http_addr
                .expect("a broker started with its management API"),
        )
    }

    /// The same API as another user (None: no credentials).
    pub fn as_user(&self, user: Option<(&str, &str)>) -> Management {
        Management {
            user: user.map(|(u, p)| (u.to_string(), p.to_string())),
            ..self.clone()
        }
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some((user, password)) = &self.user {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        self.send(request).await
    }

    /// A request with a body given as it is (malformed JSON, huge bodies).
    pub async fn raw(&self, method: Method, path: &str, body: Vec<u8>) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some((user, password)) = &self.user {
            request = request.basic_auth(user, Some(password));
        }
        self.send(
            request
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the HTTP request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("the HTTP body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A request builder with this client's credentials, for headers of a test's own.
    pub fn builder(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.user {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// GETs `path` until its body satisfies `ready` (RabbitMQ reports a queue's counts
    /// every 5 s; Wharf at once), for at most 15 s; the last body.
    pub async fn until(&self, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let body = self.get(path).await.expect(200);
            if ready(&body) || std::time::Instant::now() > deadline {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request(Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.request(Method::DELETE, path, None).await
    }
}
