//! The control socket: how `wharf ctl` talks to a running broker. A Unix socket in the
//! data directory (`wharf.sock`, readable and writable by the broker's user only, which
//! is the access check), one JSON request a line, one JSON response a line. Requests are
//! administration (policies for now; users, vhosts and permissions come with issue 6).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use wharf_core::policy::Policy;
use wharf_core::Broker;

/// The socket's file name in the data directory.
pub const SOCKET_FILE: &str = "wharf.sock";
/// A request line longer than this is refused (and the connection closed).
const REQUEST_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    SetPolicy {
        vhost: String,
        name: String,
        pattern: String,
        definition: String,
        priority: i64,
        apply_to: String,
    },
    ClearPolicy {
        vhost: String,
        name: String,
    },
    ListPolicies {
        vhost: String,
    },
}

/// A policy as `list_policies` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    pub apply_to: String,
    pub definition: String,
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyInfo>,
}

impl Response {
    fn ok() -> Response {
        Response {
            ok: true,
            error: None,
            policies: Vec::new(),
        }
    }

    fn error(text: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(text.into()),
            policies: Vec::new(),
        }
    }
}

/// Runs one request against the broker.
pub fn execute(broker: &Broker, request: Request) -> Response {
    let vhost_named = |name: &str| {
        broker
            .vhost(name)
            .ok_or_else(|| Response::error(format!("no vhost '{name}'")))
    };
    match request {
        Request::SetPolicy {
            vhost,
            name,
            pattern,
            definition,
            priority,
            apply_to,
        } => {
            let vhost = match vhost_named(&vhost) {
                Ok(vhost) => vhost,
                Err(response) => return response,
            };
            let policy = match Policy::new(&name, &pattern, &apply_to, &definition, priority) {
                Ok(policy) => policy,
                Err(reason) => return Response::error(reason),
            };
            match vhost.set_policy(policy) {
                Ok(()) => Response::ok(),
                Err(error) => Response::error(error.to_string()),
            }
        }
        Request::ClearPolicy { vhost, name } => {
            let vhost = match vhost_named(&vhost) {
                Ok(vhost) => vhost,
                Err(response) => return response,
            };
            match vhost.clear_policy(&name) {
                Ok(true) => Response::ok(),
                Ok(false) => {
                    Response::error(format!("no policy '{name}' in vhost '{}'", vhost.name))
                }
                Err(error) => Response::error(error.to_string()),
            }
        }
        Request::ListPolicies { vhost } => {
            let vhost = match vhost_named(&vhost) {
                Ok(vhost) => vhost,
                Err(response) => return response,
            };
            let mut response = Response::ok();
            response.policies = vhost
                .policies()
                .into_iter()
                .map(|p| PolicyInfo {
                    vhost: vhost.name.to_string(),
                    name: p.name.to_string(),
                    pattern: p.pattern,
                    apply_to: p.apply_to.as_str().to_string(),
                    definition: p.definition_json,
                    priority: p.priority,
                })
                .collect();
            response
        }
    }
}

/// Serves the control socket (bound with [`bind`] at `path`) until `shutdown` fires; the
/// file is removed then.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "control socket accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_one(stream, &broker).await {
                tracing::debug!(%error, "control connection ended");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// Binds the socket, replacing a stale file a previous run left, owner-only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn serve_one(stream: UnixStream, broker: &Broker) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let read = (&mut lines)
            .take(REQUEST_BYTES_MAX as u64 + 1)
            .read_line(&mut line)
            .await?;
        if read == 0 {
            return Ok(());
        }
        let response = if line.len() > REQUEST_BYTES_MAX {
            Response::error("request too long")
        } else {
            match serde_json::from_str::<Request>(line.trim_end()) {
                Ok(request) => execute(broker, request),
                Err(error) => Response::error(format!("bad request: {error}")),
            }
        };
        let mut out = serde_json::to_vec(&response).expect("responses serialize");
        out.push(b'\n');
        write.write_all(&out).await?;
        if line.len() > REQUEST_BYTES_MAX {
            return Ok(());
        }
    }
}

/// Sends one request to the broker whose socket is at `path` and returns its response.
pub async fn request(path: &Path, request: &Request) -> std::io::Result<Response> {
    let stream = UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut out = serde_json::to_vec(request).expect("requests serialize");
    out.push(b'\n');
    write.write_all(&out).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
