//! The control socket: how `wharf ctl` talks to a running broker. A Unix socket in the
//! data directory (`wharf.sock`, readable and writable by the broker's user only, which
//! is the access check), one JSON request a line, one JSON response a line. Requests are
//! administration: policies, users, vhosts, permissions, connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use wharf_core::access::Permission;
use wharf_core::definitions_json;
use wharf_core::policy::Policy;
use wharf_core::{AdminResult, Broker};

/// The socket's file name in the data directory.
pub const SOCKET_FILE: &str = "wharf.sock";
/// A request line longer than this is refused (and the connection closed). Large enough
/// for the definitions of many thousands of queues.
const REQUEST_BYTES_MAX: usize = 64 * 1024 * 1024;

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
    /// `password` None: the user can log in only with a certificate.
    AddUser {
        name: String,
        password: Option<String>,
        #[serde(default)]
        tags: Vec<String>,
    },
    DeleteUser {
        name: String,
    },
    ChangePassword {
        name: String,
        password: String,
    },
    ClearPassword {
        name: String,
    },
    AuthenticateUser {
        name: String,
        password: String,
    },
    SetUserTags {
        name: String,
        tags: Vec<String>,
    },
    ListUsers,
    AddVhost {
        name: String,
        #[serde(default)]
        description: String,
        #[serde(default)]
        tags: Vec<String>,
    },
    DeleteVhost {
        name: String,
    },
    ListVhosts,
    SetPermissions {
        vhost: String,
        user: String,
        configure: String,
        write: String,
        read: String,
    },
    ClearPermissions {
        vhost: String,
        user: String,
    },
    /// Of one vhost.
    ListPermissions {
        vhost: String,
    },
    /// Of one user, in every vhost.
    ListUserPermissions {
        user: String,
    },
    SetTopicPermissions {
        vhost: String,
        user: String,
        exchange: String,
        write: String,
        read: String,
    },
    /// `exchange` None: on every exchange.
    ClearTopicPermissions {
        vhost: String,
        user: String,
        exchange: Option<String>,
    },
    ListTopicPermissions {
        vhost: String,
    },
    ListConnections,
    /// `limits`: a JSON object of max-connections and max-queues.
    SetVhostLimits {
        vhost: String,
        limits: String,
    },
    ClearVhostLimits {
        vhost: String,
    },
    ListVhostLimits,
    /// `limits`: a JSON object of max-connections and max-channels.
    SetUserLimits {
        user: String,
        limits: String,
    },
    ClearUserLimits {
        user: String,
    },
    ListUserLimits,
    /// Everything, as RabbitMQ's definitions JSON.
    ExportDefinitions,
    /// Definitions in RabbitMQ's JSON format, as text.
    ImportDefinitions {
        definitions: String,
    },
}

/// The answer to a request: a refusal, or success with a table (list commands) or a text.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Response {
    fn ok() -> Response {
        Response {
            ok: true,
            ..Response::default()
        }
    }

    fn error(text: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(text.into()),
            ..Response::default()
        }
    }

    fn table(columns: &[&str], rows: Vec<Vec<String>>) -> Response {
        Response {
            ok: true,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
            ..Response::default()
        }
    }
}

impl From<AdminResult> for Response {
    fn from(result: AdminResult) -> Self {
        match result {
            Ok(()) => Response::ok(),
            Err(error) => Response::error(error.0),
        }
    }
}

/// Tags as rabbitmqctl lists them: `[administrator, monitoring]`.
fn tag_list(tags: &[String]) -> String {
    format!("[{}]", tags.join(", "))
}

/// Runs one request against the broker.
pub fn execute(broker: &Broker, request: Request) -> Response {
    let vhost_named = |name: &str| {
        broker
            .vhost(name)
            .ok_or_else(|| Response::error(format!("Virtual host '{name}' does not exist")))
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
            let rows = vhost
                .policies()
                .into_iter()
                .map(|p| {
                    vec![
                        vhost.name.to_string(),
                        p.name.to_string(),
                        p.pattern,
                        p.apply_to.as_str().to_string(),
                        p.definition_json,
                        p.priority.to_string(),
                    ]
                })
                .collect();
            Response::table(
                &[
                    "vhost",
                    "name",
                    "pattern",
                    "apply-to",
                    "definition",
                    "priority",
                ],
                rows,
            )
        }
        Request::AddUser {
            name,
            password,
            tags,
        } => broker.add_user(&name, password.as_deref(), tags).into(),
        Request::DeleteUser { name } => broker.delete_user(&name).into(),
        Request::ChangePassword { name, password } => {
            broker.change_password(&name, Some(&password)).into()
        }
        Request::ClearPassword { name } => broker.change_password(&name, None).into(),
        Request::AuthenticateUser { name, password } => {
            match broker.access.authenticate(&name, &password) {
                Some(_) => Response::ok(),
                None => Response::error(format!(
                    "Error: failed to authenticate user \"{name}\"\nuser '{name}' - invalid credentials"
                )),
            }
        }
        Request::SetUserTags { name, tags } => broker.set_user_tags(&name, tags).into(),
        Request::ListUsers => Response::table(
            &["user", "tags"],
            broker
                .access
                .users()
                .into_iter()
                .map(|u| vec![u.name, tag_list(&u.tags)])
                .collect(),
        ),
        Request::AddVhost {
            name,
            description,
            tags,
        } => broker.add_vhost(&name, &description, tags).into(),
        Request::DeleteVhost { name } => broker.delete_vhost(&name).into(),
        Request::ListVhosts => Response::table(
            &["name", "description", "tags"],
            broker
                .vhost_infos()
                .into_iter()
                .map(|v| vec![v.name, v.description, tag_list(&v.tags)])
                .collect(),
        ),
        Request::SetPermissions {
            vhost,
            user,
            configure,
            write,
            read,
        } => broker
            .set_permissions(&user, &vhost, &configure, &write, &read)
            .into(),
        Request::ClearPermissions { vhost, user } => broker.clear_permissions(&user, &vhost).into(),
        Request::ListPermissions { vhost } => {
            if let Err(response) = vhost_named(&vhost) {
                return response;
            }
            let rows = broker
                .access
                .permissions()
                .into_iter()
                .filter(|(v, _, _)| *v == vhost)
                .map(|(_, user, p)| permission_row(user, &p))
                .collect();
            Response::table(&["user", "configure", "write", "read"], rows)
        }
        Request::ListUserPermissions { user } => {
            if broker.access.user(&user).is_none() {
                return Response::error(format!("User \"{user}\" does not exist"));
            }
            let rows = broker
                .access
                .permissions()
                .into_iter()
                .filter(|(_, u, _)| *u == user)
                .map(|(vhost, _, p)| permission_row(vhost, &p))
                .collect();
            Response::table(&["vhost", "configure", "write", "read"], rows)
        }
        Request::SetTopicPermissions {
            vhost,
            user,
            exchange,
            write,
            read,
        } => broker
            .set_topic_permissions(&user, &vhost, &exchange, &write, &read)
            .into(),
        Request::ClearTopicPermissions {
            vhost,
            user,
            exchange,
        } => broker
            .clear_topic_permissions(&user, &vhost, exchange.as_deref())
            .into(),
        Request::ListTopicPermissions { vhost } => {
            if let Err(response) = vhost_named(&vhost) {
                return response;
            }
            let rows = broker
                .access
                .topic_permissions()
                .into_iter()
                .filter(|(v, _, _)| *v == vhost)
                .map(|(_, user, p)| vec![user, p.exchange, p.write, p.read])
                .collect();
            Response::table(&["user", "exchange", "write", "read"], rows)
        }
        Request::SetVhostLimits { vhost, limits } => {
            broker.set_vhost_limits(&vhost, &limits).into()
        }
        Request::ClearVhostLimits { vhost } => broker.clear_vhost_limits(&vhost).into(),
        Request::ListVhostLimits => Response::table(
            &["vhost", "limits"],
            broker
                .vhost_infos()
                .into_iter()
                .filter(|v| !v.limits.is_empty())
                .map(|v| vec![v.name, v.limits.to_json_text()])
                .collect(),
        ),
        Request::SetUserLimits { user, limits } => broker.set_user_limits(&user, &limits).into(),
        Request::ClearUserLimits { user } => broker.clear_user_limits(&user).into(),
        Request::ListUserLimits => Response::table(
            &["user", "limits"],
            broker
                .access
                .users()
                .into_iter()
                .filter(|u| !u.limits.is_empty())
                .map(|u| vec![u.name, u.limits.to_json_text()])
                .collect(),
        ),
        Request::ExportDefinitions => Response {
            ok: true,
            text: Some(definitions_json::export(broker).to_string()),
            ..Response::default()
        },
        Request::ImportDefinitions { definitions } => {
            match definitions_json::parse(&definitions)
                .and_then(|defs| definitions_json::import(broker, &defs))
            {
                Ok(done) => Response {
                    ok: true,
                    text: Some(format!(
                        "Imported {} vhosts, {} users, {} permissions, {} policies, {} exchanges, {} queues, {} bindings\n",
                        done.vhosts,
                        done.users,
                        done.permissions,
                        done.policies,
                        done.exchanges,
                        done.queues,
                        done.bindings
                    )),
                    ..Response::default()
                },
                Err(error) => Response::error(error.0),
            }
        }
        Request::ListConnections => Response::table(
            &["id", "user", "vhost", "peer"],
            broker
                .connections
                .list()
                .into_iter()
                .map(|c| vec![c.id.to_string(), c.user, c.vhost, c.peer])
                .collect(),
        ),
    }
}

fn permission_row(first: String, p: &Permission) -> Vec<String> {
    vec![
        first,
        p.configure.as_str().to_string(),
        p.write.as_str().to_string(),
        p.read.as_str().to_string(),
    ]
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
