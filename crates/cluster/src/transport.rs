//! Connections between nodes: one authenticated TCP connection to each peer, opened on
//! first use and again after it is lost, carrying many requests at once (each answer is
//! matched to its request by id, so a slow snapshot does not hold up a heartbeat). The
//! transport owns the connections; the node reaches peers through
//! [`Transport::request`] and answers them through a [`Handler`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Secret;
use crate::handshake::{self, HandshakeError, Introduction};
use crate::messages::{Request, Response};
use crate::wire::{self, FrameKind};

/// A connection's byte stream: TCP, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub type Io = Box<dyn Stream>;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed attempt, requests to that peer fail at once for this long rather than
/// each trying again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// How often the node that opened a connection sends a heartbeat on it.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A connection on which nothing arrived for this long is lost: its peer is paused, or
/// the network between them cut, and what depends on it (the peer's consumers on this
/// node's queues, this node's on the peer's) is let go rather than waiting on a peer
/// that may never answer. RabbitMQ waits a `net_ticktime` (60 s). Not much shorter: a
/// link down for a few seconds leaves TCP retransmitting with growing pauses (several
/// seconds after the link is back), and a connection dropped then fails every request
/// on it. A node that is only slow costs redeliveries, never messages.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(15);

/// What a node does when a connection it opened to a peer ends.
pub type OnLost = Arc<dyn Fn(&Introduction) + Send + Sync>;

/// Answers the requests of other nodes.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, from: Introduction, request: Request)
        -> impl Future<Output = Response> + Send;

    /// Takes a delivery (a `forward` payload) at once, in the order the connection
    /// brought them, and answers when it is held.
    fn deliver(&self, payload: Vec<u8>) -> impl Future<Output = Response> + Send + 'static;

    /// Takes pushed deliveries (a `consumers` payload) at once, in the order the
    /// connection brought them.
    fn push(&self, from: &Introduction, payload: Vec<u8>) -> Response;

    /// Takes a consumer control at once, in the order the connection brought them.
    fn control(
        &self,
        from: &Introduction,
        control: wharf_core::cluster::ConsumerControl,
    ) -> Response;

    /// Answers a quorum queue group's RPC (a `quorum::codec` payload) with the encoded
    /// answer.
    fn group(&self, payload: Vec<u8>) -> impl Future<Output = Vec<u8>> + Send + 'static;

    /// A peer's connection to this node ended.
    fn peer_gone(&self, peer: &Introduction);
}

/// A peer that sent nothing for this long, heartbeats included, is suspected: the quorum
/// queues it leads elect another leader (the connection itself is kept until
/// [`PEER_TIMEOUT`]).
pub const PEER_SUSPECT_AFTER: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach the node at {address}: {reason}")]
    Unreachable { address: SocketAddr, reason: String },
    #[error("the node at {address} did not answer within {timeout:?}")]
    Timeout {
        address: SocketAddr,
        timeout: Duration,
    },
    #[error("the connection to the node at {address} was lost")]
    Lost { address: SocketAddr },
}

/// One open connection to a peer.
struct Connection {
    peer: Introduction,
    outbox: mpsc::UnboundedSender<BytesMut>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>,
    closed: Arc<AtomicBool>,
    /// When the peer last sent anything, in milliseconds since `opened`.
    heard: Arc<AtomicU64>,
    opened: Instant,
}

/// Everything about one peer address.
#[derive(Default)]
struct Link {
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    last_failure: Mutex<Option<(Instant, String)>>,
    /// The last failure logged, so that a peer that stays away is logged once, not at
    /// every retry.
    logged: Mutex<Option<String>>,
}

pub struct Transport {
    me: Introduction,
    secret: Secret,
    /// TLS on the cluster port, when configured.
    tls: Option<crate::tls::ClusterTls>,
    links: Mutex<HashMap<SocketAddr, Arc<Link>>>,
    next_id: AtomicU64,
    /// Told when a connection this node opened to a peer ends.
    on_lost: std::sync::OnceLock<OnLost>,
}

impl Transport {
    pub fn new(
        me: Introduction,
        secret: Secret,
        tls: Option<crate::tls::ClusterTls>,
    ) -> Arc<Transport> {
        Arc::new(Transport {
            me,
            secret,
            tls,
            links: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            on_lost: std::sync::OnceLock::new(),
        })
    }

    /// What to do when a connection this node opened to a peer ends (the peer gone, or
    /// the network between them).
    pub fn on_lost(&self, lost: OnLost) {
        let _ = self.on_lost.set(lost);
    }

    fn link(&self, address: SocketAddr) -> Arc<Link> {
        self.links.lock().entry(address).or_default().clone()
    }

    /// Sends a request to the node at `address` and waits for its answer, connecting first
    /// if needed. Returns who answered.
    pub async fn request(
        &self,
        address: SocketAddr,
        request: &Request,
        timeout: Duration,
    ) -> Result<(Introduction, Response), TransportError> {
        let connection = self.connection(address).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let payload = serde_json::to_vec(request).expect("requests serialize");
        let mut frame = BytesMut::new();
        wire::encode_frame(&mut frame, FrameKind::Request, id, &payload);
        let (sender, receiver) = oneshot::channel();
        connection.pending.lock().insert(id, sender);
        if connection.closed.load(Ordering::Acquire) || connection.outbox.send(frame).is_err() {
            connection.pending.lock().remove(&id);
            return Err(TransportError::Lost { address });
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(response)) => Ok((connection.peer.clone(), response)),
            Ok(Err(_)) => Err(TransportError::Lost { address }),
            Err(_) => {
                connection.pending.lock().remove(&id);
                Err(TransportError::Timeout { address, timeout })
            }
        }
    }

    /// Sends a delivery to the node at `address`, connecting first if needed, and returns
    /// where its answer will come. Deliveries sent one after another, by one task, arrive
    /// in that order.
    pub async fn deliver(
        &self,
        address: SocketAddr,
        payload: &[u8],
    ) -> Result<oneshot::Receiver<Response>, TransportError> {
        self.send(address, FrameKind::Deliver, payload).await
    }

    /// Sends a request without waiting for its answer, after what this task sent before
    /// (see [`Transport::deliver`]); returns where the answer will come.
    pub async fn send_request(
        &self,
        address: SocketAddr,
        request: &Request,
    ) -> Result<oneshot::Receiver<Response>, TransportError> {
        let payload = serde_json::to_vec(request).expect("requests serialize");
        self.send(address, FrameKind::Request, &payload).await
    }

    /// Sends a quorum queue group's RPC to the node at `address` and waits for its
    /// answer (the encoded group answer).
    pub async fn call_group(
        &self,
        address: SocketAddr,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let receiver = self.send(address, FrameKind::Group, payload).await?;
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(Response::Group(answer))) => Ok(answer),
            Ok(Ok(_)) => Err(TransportError::Lost { address }),
            Ok(Err(_)) => Err(TransportError::Lost { address }),
            Err(_) => Err(TransportError::Timeout { address, timeout }),
        }
    }

    /// Whether the node at `address` answers now: connected (a connection is tried if
    /// there is none) and heard from within [`PEER_SUSPECT_AFTER`].
    pub async fn peer_alive(&self, address: SocketAddr) -> bool {
        match self.connection(address).await {
            Ok(connection) => {
                let heard = Duration::from_millis(connection.heard.load(Ordering::Acquire));
                !connection.closed.load(Ordering::Acquire)
                    && connection.opened.elapsed().saturating_sub(heard) < PEER_SUSPECT_AFTER
            }
            Err(_) => false,
        }
    }

    /// Whether the open connection to `address` brought anything within
    /// [`PEER_SUSPECT_AFTER`] (a node that answers nothing for longer is suspected: what
    /// waits on it gives up sooner than the connection's own timeout). Opens nothing;
    /// true when it cannot tell.
    pub fn heard_from(&self, address: SocketAddr) -> bool {
        let link = self.link(address);
        let Ok(slot) = link.connection.try_lock() else {
            return true;
        };
        match slot.as_ref() {
            Some(connection) => {
                let heard = Duration::from_millis(connection.heard.load(Ordering::Acquire));
                !connection.closed.load(Ordering::Acquire)
                    && connection.opened.elapsed().saturating_sub(heard) < PEER_SUSPECT_AFTER
            }
            None => false,
        }
    }

    /// Sends a frame of `kind`; returns where its answer will come.
    pub async fn send(
        &self,
        address: SocketAddr,
        kind: FrameKind,
        payload: &[u8],
    ) -> Result<oneshot::Receiver<Response>, TransportError> {
        let connection = self.connection(address).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = BytesMut::new();
        wire::encode_frame(&mut frame, kind, id, payload);
        let (sender, receiver) = oneshot::channel();
        connection.pending.lock().insert(id, sender);
        if connection.closed.load(Ordering::Acquire) || connection.outbox.send(frame).is_err() {
            connection.pending.lock().remove(&id);
            return Err(TransportError::Lost { address });
        }
        Ok(receiver)
    }

    /// The open connection to `address`, or a new one.
    async fn connection(&self, address: SocketAddr) -> Result<Arc<Connection>, TransportError> {
        let link = self.link(address);
        let mut slot = link.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            if !connection.closed.load(Ordering::Acquire) {
                return Ok(connection.clone());
            }
        }
        *slot = None;
        if let Some((at, reason)) = link.last_failure.lock().clone() {
            if at.elapsed() < RECONNECT_PAUSE {
                return Err(TransportError::Unreachable { address, reason });
            }
        }
        match self.connect(address).await {
            Ok(connection) => {
                *link.last_failure.lock() = None;
                if link.logged.lock().take().is_some() {
                    tracing::info!(peer = %address, node = %connection.peer.name, "cluster peer reachable again");
                }
                *slot = Some(connection.clone());
                Ok(connection)
            }
            Err(reason) => {
                *link.last_failure.lock() = Some((Instant::now(), reason.clone()));
                let mut logged = link.logged.lock();
                if logged.as_deref() != Some(reason.as_str()) {
                    if reason.contains("secret") || reason.contains("refused this node") {
                        tracing::error!(peer = %address, %reason, "cluster peer refused");
                    } else {
                        tracing::warn!(peer = %address, %reason, "cluster peer unreachable");
                    }
                    *logged = Some(reason.clone());
                }
                Err(TransportError::Unreachable { address, reason })
            }
        }
    }

    async fn connect(&self, address: SocketAddr) -> Result<Arc<Connection>, String> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Io = match &self.tls {
            Some(tls) => tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(address.ip(), tcp))
                .await
                .map_err(|_| format!("no TLS handshake within {CONNECT_TIMEOUT:?}"))??,
            None => Box::new(tcp),
        };
        let (peer, leftover) = handshake::dial(&mut stream, &self.me, &self.secret)
            .await
            .map_err(|e| e.to_string())?;
        let (mut reader, writer) = tokio::io::split(stream);
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let opened = Instant::now();
        let heard = Arc::new(AtomicU64::new(0));
        let (outbox, inbox) = mpsc::unbounded_channel();
        tokio::spawn(write_frames(writer, inbox, closed.clone()));
        tokio::spawn(send_heartbeats(outbox.clone(), closed.clone()));
        {
            let pending = pending.clone();
            let closed = closed.clone();
            let heard = heard.clone();
            let peer = peer.clone();
            let on_lost = self.on_lost.get().cloned();
            tokio::spawn(async move {
                let mut buffer = leftover;
                let why = loop {
                    match wire::decode_frame(&mut buffer) {
                        Ok(Some(frame)) if frame.kind == FrameKind::GroupAnswer => {
                            if let Some(sender) = pending.lock().remove(&frame.id) {
                                let _ = sender.send(Response::Group(frame.payload));
                            }
                            continue;
                        }
                        Ok(Some(frame)) if frame.kind == FrameKind::Response => {
                            match serde_json::from_slice::<Response>(&frame.payload) {
                                Ok(response) => {
                                    if let Some(sender) = pending.lock().remove(&frame.id) {
                                        let _ = sender.send(response);
                                    }
                                }
                                Err(error) => {
                                    break format!("an answer that does not read: {error}")
                                }
                            }
                            continue;
                        }
                        Ok(Some(frame)) if frame.kind == FrameKind::Heartbeat => continue,
                        Ok(Some(frame)) => break format!("an unexpected {:?} frame", frame.kind),
                        Ok(None) => {}
                        Err(error) => break error.to_string(),
                    }
                    match tokio::time::timeout(PEER_TIMEOUT, reader.read_buf(&mut buffer)).await {
                        Ok(Ok(0)) => break "closed by the peer".to_string(),
                        Ok(Ok(_)) => {
                            let now = opened.elapsed().as_millis() as u64;
                            heard.store(now, Ordering::Release);
                        }
                        Ok(Err(error)) => break error.to_string(),
                        Err(_) => break format!("nothing from the peer for {PEER_TIMEOUT:?}"),
                    }
                };
                if why.starts_with("nothing from") {
                    tracing::warn!(peer = %peer.address, node = %peer.name, reason = %why, "cluster connection lost");
                } else {
                    tracing::debug!(peer = %peer.address, reason = %why, "cluster connection ended");
                }
                closed.store(true, Ordering::Release);
                // Dropping the senders tells every waiting request the connection is gone.
                pending.lock().clear();
                if let Some(on_lost) = on_lost {
                    on_lost(&peer);
                }
            });
        }
        Ok(Arc::new(Connection {
            peer,
            outbox,
            pending,
            closed,
            heard,
            opened,
        }))
    }

    /// Accepts the other nodes' connections until shutdown, and answers their requests.
    pub async fn serve<H: Handler>(
        self: Arc<Self>,
        listener: TcpListener,
        handler: Arc<H>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let (stream, from) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "cluster listener accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let transport = self.clone();
            let handler = handler.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                transport
                    .serve_connection(stream, from, handler, shutdown)
                    .await
            });
        }
    }

    async fn serve_connection<H: Handler>(
        &self,
        tcp: TcpStream,
        from: SocketAddr,
        handler: Arc<H>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let _ = tcp.set_nodelay(true);
        let mut stream: Io = match &self.tls {
            Some(tls) => {
                match tokio::time::timeout(handshake::HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::error!(%from, %error, "refused a connection to the cluster port");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%from, "no TLS handshake on the cluster port in time");
                        return;
                    }
                }
            }
            None => Box::new(tcp),
        };
        let (peer, leftover) = match handshake::accept(&mut stream, &self.me, &self.secret).await {
            Ok(accepted) => accepted,
            Err(HandshakeError::WrongSecret) => {
                tracing::error!(%from, "refused a node that does not know the cluster secret");
                return;
            }
            Err(error) => {
                tracing::warn!(%from, %error, "refused a connection to the cluster port");
                return;
            }
        };
        let (mut reader, writer) = tokio::io::split(stream);
        let closed = Arc::new(AtomicBool::new(false));
        let (outbox, inbox) = mpsc::unbounded_channel();
        tokio::spawn(write_frames(writer, inbox, closed.clone()));
        let mut buffer = leftover;
        loop {
            match wire::decode_frame(&mut buffer) {
                Ok(Some(frame)) if frame.kind == FrameKind::Heartbeat => {
                    let mut echo = BytesMut::new();
                    wire::encode_frame(&mut echo, FrameKind::Heartbeat, frame.id, &[]);
                    let _ = outbox.send(echo);
                    continue;
                }
                Ok(Some(frame)) if frame.kind == FrameKind::Push => {
                    let response = handler.push(&peer, frame.payload);
                    respond(&outbox, frame.id, &response);
                    continue;
                }
                Ok(Some(frame)) if frame.kind == FrameKind::Request => {
                    let request: Request = match serde_json::from_slice(&frame.payload) {
                        Ok(request) => request,
                        Err(error) => {
                            tracing::warn!(peer = %peer.name, %error, "a cluster request that does not read; closing the connection");
                            break;
                        }
                    };
                    // A consumer's controls are taken in the connection's order.
                    let request = match request {
                        Request::Control(control) => {
                            let response = handler.control(&peer, control);
                            respond(&outbox, frame.id, &response);
                            continue;
                        }
                        other => other,
                    };
                    let handler = handler.clone();
                    let outbox = outbox.clone();
                    let peer = peer.clone();
                    tokio::spawn(async move {
                        let response = handler.handle(peer, request).await;
                        let payload = serde_json::to_vec(&response).expect("responses serialize");
                        let mut out = BytesMut::new();
                        wire::encode_frame(&mut out, FrameKind::Response, frame.id, &payload);
                        let _ = outbox.send(out);
                    });
                    continue;
                }
                Ok(Some(frame)) if frame.kind == FrameKind::Group => {
                    let answer = handler.group(frame.payload);
                    let outbox = outbox.clone();
                    tokio::spawn(async move {
                        let payload = answer.await;
                        let mut out = BytesMut::new();
                        wire::encode_frame(&mut out, FrameKind::GroupAnswer, frame.id, &payload);
                        let _ = outbox.send(out);
                    });
                    continue;
                }
                Ok(Some(frame)) if frame.kind == FrameKind::Deliver => {
                    // Taken now, in the connection's order; answered when held.
                    let answer = handler.deliver(frame.payload);
                    let outbox = outbox.clone();
                    tokio::spawn(async move {
                        let payload =
                            serde_json::to_vec(&answer.await).expect("responses serialize");
                        let mut out = BytesMut::new();
                        wire::encode_frame(&mut out, FrameKind::Response, frame.id, &payload);
                        let _ = outbox.send(out);
                    });
                    continue;
                }
                Ok(Some(frame)) => {
                    tracing::warn!(peer = %peer.name, kind = ?frame.kind, "an unexpected cluster frame; closing the connection");
                    break;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(peer = %peer.name, %error, "a bad cluster frame; closing the connection");
                    break;
                }
            }
            tokio::select! {
                read = tokio::time::timeout(PEER_TIMEOUT, reader.read_buf(&mut buffer)) => match read {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {}
                    Err(_) => {
                        tracing::warn!(peer = %peer.name, "nothing from a cluster peer for {PEER_TIMEOUT:?}; its connection is taken for lost");
                        break;
                    }
                },
                // A node that stops answers nothing more, as if it were gone.
                _ = shutdown.changed() => break,
            }
        }
        closed.store(true, Ordering::Release);
        handler.peer_gone(&peer);
    }
}

fn respond(outbox: &mpsc::UnboundedSender<BytesMut>, id: u64, response: &Response) {
    let payload = serde_json::to_vec(response).expect("responses serialize");
    let mut out = BytesMut::new();
    wire::encode_frame(&mut out, FrameKind::Response, id, &payload);
    let _ = outbox.send(out);
}

/// Sends a heartbeat every [`HEARTBEAT_INTERVAL`] until the connection closes.
async fn send_heartbeats(outbox: mpsc::UnboundedSender<BytesMut>, closed: Arc<AtomicBool>) {
    let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if closed.load(Ordering::Acquire) {
            return;
        }
        let mut frame = BytesMut::new();
        wire::encode_frame(&mut frame, FrameKind::Heartbeat, 0, &[]);
        if outbox.send(frame).is_err() {
            return;
        }
    }
}

/// Writes queued frames, as many as are waiting in one write.
async fn write_frames(
    mut writer: tokio::io::WriteHalf<Io>,
    mut inbox: mpsc::UnboundedReceiver<BytesMut>,
    closed: Arc<AtomicBool>,
) {
    while let Some(mut batch) = inbox.recv().await {
        while let Ok(more) = inbox.try_recv() {
            batch.extend_from_slice(&more);
            if batch.len() > 1024 * 1024 {
                break;
            }
        }
        if writer.write_all(&batch).await.is_err() {
            break;
        }
        if closed.load(Ordering::Acquire) {
            break;
        }
    }
    closed.store(true, Ordering::Release);
    let _ = writer.shutdown().await;
}
