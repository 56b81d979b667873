//! The control socket: how `wharf ctl` reaches a running broker. A Unix socket in the
//! data directory (`wharf.sock`, readable and writable by the broker's user only, which
//! is the access check), one JSON request a line, one JSON response a line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use wharf_core::Broker;

use crate::commands::{execute, Request, Response};

/// The socket's file name in the data directory.
pub const SOCKET_FILE: &str = "wharf.sock";
/// A request line longer than this is refused (and the connection closed). Large enough
/// for the definitions of many thousands of queues.
const REQUEST_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Serves the control socket (bound with [`bind`] at `path`) until `shutdown` fires; the
/// file is removed then.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Other cluster members ask this node for its rows of their list commands.
    let answers = crate::cluster_lists::CtlAnswers(Arc::downgrade(&broker));
    broker
        .cluster_slot()
        .add_operator_answers("ctl:", Arc::new(answers));
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
                Ok(Request::ClusterStatus) if broker.cluster().is_some() => {
                    crate::listing::cluster_status(broker).await
                }
                Ok(Request::ForgetClusterNode { node }) => match broker.cluster() {
                    Some(cluster) => said(cluster.forget(node).await, |name| {
                        format!("Removed {name} from the cluster\n")
                    }),
                    None => execute(broker, Request::ForgetClusterNode { node }),
                },
                Ok(Request::JoinCluster { address }) => match broker.cluster() {
                    Some(cluster) => said(cluster.join(address).await, |name| {
                        format!("Joined the cluster of {name}\n")
                    }),
                    None => execute(broker, Request::JoinCluster { address }),
                },
                Ok(request) if crate::cluster_lists::lists_each_nodes(&request) => {
                    crate::cluster_lists::cluster_wide(broker, request).await
                }
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

/// A membership change's answer: the text `done` makes of the member's name, or why not.
fn said(answer: Result<String, String>, done: impl FnOnce(&str) -> String) -> Response {
    match answer {
        Ok(name) => Response {
            ok: true,
            text: Some(done(&name)),
            ..Response::default()
        },
        Err(reason) => Response::error(reason),
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
