//! The listener: accepts TCP (or TLS) connections and serves HTTP/1.1 on each with the
//! API's router, until shutdown. Slow clients are bounded: the request head must arrive
//! within [`HEADER_TIMEOUT`] (hyper starts that clock when it waits for a head, so a
//! keep-alive connection idle that long is closed too), and a body within
//! [`crate::body::BODY_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests under way may take to finish once shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the TLS configuration comes from: asked again for each connection, so that a
/// reload of the broker's certificates applies to the next one.
pub type TlsSource = Arc<dyn Fn() -> TlsAcceptor + Send + Sync>;

/// The address a request came from, put in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown` fires,
/// then lets requests under way finish for a moment and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsSource>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let router = router.clone();
                    let tls = tls.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(async move {
                        match tls {
                            None => serve_connection(stream, peer, router, shutdown).await,
                            Some(tls) => {
                                let handshake = tokio::time::timeout(
                                    HANDSHAKE_TIMEOUT,
                                    tls().accept(stream),
                                );
                                match handshake.await {
                                    Ok(Ok(stream)) => {
                                        serve_connection(stream, peer, router, shutdown).await
                                    }
                                    Ok(Err(error)) => {
                                        tracing::debug!(%peer, %error, "HTTPS handshake failed")
                                    }
                                    Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                                }
                            }
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little, try again.
                    tracing::warn!(%error, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.shutdown().await;
}

/// Resolves once shutdown is asked for (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// `/api/queues/` is `/api/queues`, as RabbitMQ accepts it.
fn strip_trailing_slash<B>(request: &mut Request<B>) {
    let path = request.uri().path();
    if path.len() <= 1 || !path.ends_with('/') {
        return;
    }
    let trimmed = path.trim_end_matches('/');
    let rebuilt = match request.uri().query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed.to_string(),
    };
    if let Ok(uri) = rebuilt.parse() {
        *request.uri_mut() = uri;
    }
}

/// Serves HTTP/1.1 on one connection until the client closes it, it is too slow, or
/// shutdown (which lets the request under way finish).
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        strip_trailing_slash(&mut request);
        router.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        }
        _ = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
