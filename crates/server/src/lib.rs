//! Wharf's AMQP 0-9-1 server: accepts connections on a listener it is given, runs each
//! connection's handshake and channels, and drives the broker core. Holds no broker state
//! of its own: everything lives in the [`wharf_core::Broker`] it is handed.

pub mod alarm;
pub mod body_budget;
mod channel;
mod channel_table;
mod confirms;
mod connection;
mod error;
mod frame_reader;
mod handshake;
pub mod listen;
mod outbound;
pub mod sasl;
pub mod sockets;
pub mod tls;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use wharf_core::Broker;

pub use error::AmqpError;

/// Limits and defaults of the AMQP listener; RabbitMQ's defaults unless noted.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat_secs: u16,
    pub max_message_bytes: usize,
    /// A socket that has not completed the handshake by then is closed.
    pub handshake_timeout: Duration,
    /// A failed login is answered only after this long, to slow down password guessing.
    pub failed_login_delay: Duration,
    /// Open connections the broker takes at most (RabbitMQ's `connection_max`): more are
    /// refused at connection.open. None: no limit.
    pub max_connections: Option<usize>,
    /// Sockets, handshaking or open, all listeners given clones of this config take at
    /// most together: more are closed as soon as accepted. Its max should leave room above
    /// `max_connections` for clients to be refused with a reason, and stay below the file
    /// descriptors the process may open. Default: no limit.
    pub sockets: sockets::SocketBudget,
    /// Consumers one channel may have (RabbitMQ's `consumer_max_per_channel`). None: no
    /// limit, as RabbitMQ.
    pub consumer_max_per_channel: Option<usize>,
    /// Block publishers when the data directory's disk runs low (None: never).
    pub disk_alarm: Option<alarm::DiskAlarmConfig>,
    /// Block publishers when the broker's memory is above its high watermark (None:
    /// never).
    pub memory_alarm: Option<alarm::MemoryAlarmConfig>,
    /// A channel whose oldest unacknowledged delivery is older than this is closed with
    /// 406, its deliveries requeued, as RabbitMQ's `consumer_timeout` (None: never).
    pub consumer_timeout: Option<Duration>,
}

/// How long a failed login waits before its refusal.
pub const FAILED_LOGIN_DELAY_DEFAULT: Duration = Duration::from_secs(1);

/// RabbitMQ's default `consumer_timeout`: 30 minutes.
pub const CONSUMER_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30 * 60);

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat_secs: 60,
            max_message_bytes: 128 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            failed_login_delay: FAILED_LOGIN_DELAY_DEFAULT,
            max_connections: None,
            sockets: sockets::SocketBudget::default(),
            consumer_max_per_channel: None,
            disk_alarm: None,
            memory_alarm: None,
            consumer_timeout: Some(CONSUMER_TIMEOUT_DEFAULT),
        }
    }
}

/// Tells a running server to stop; dropping it has the same effect.
#[derive(Debug)]
pub struct Shutdown(watch::Sender<bool>);

impl Shutdown {
    pub fn new() -> (Self, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (Shutdown(tx), rx)
    }

    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }

    /// Another receiver, for a further listener to stop with the others.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

/// A listening socket and, for amqps, the TLS it serves.
pub struct Listening {
    pub listener: TcpListener,
    pub tls: Option<Arc<tls::Tls>>,
}

/// Serves AMQP on `listener` until `shutdown` fires; then closes every connection with
/// 320 CONNECTION_FORCED and returns once they are gone (or after a grace period).
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: ServerConfig,
    shutdown: watch::Receiver<bool>,
) {
    let listening = Listening {
        listener,
        tls: None,
    };
    serve_all(vec![listening], broker, config, shutdown).await
}

/// Serves AMQP over TLS (amqps) on `listener`, as [`serve`] does in the clear.
pub async fn serve_tls(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: ServerConfig,
    tls: Arc<tls::Tls>,
    shutdown: watch::Receiver<bool>,
) {
    let listening = Listening {
        listener,
        tls: Some(tls),
    };
    serve_all(vec![listening], broker, config, shutdown).await
}

/// Serves every listener (plain and TLS) of one broker, with one set of alarms and one
/// socket budget for all, until `shutdown` fires; returns once every connection is gone.
pub async fn serve_all(
    listeners: Vec<Listening>,
    broker: Arc<Broker>,
    config: ServerConfig,
    shutdown: watch::Receiver<bool>,
) {
    let (alarm_tx, alarm_rx) = watch::channel(alarm::Alarms::default());
    // Without a memory alarm nothing bounds memory, large bodies included.
    let body_budget = config.memory_alarm.as_ref().map(|memory| {
        let watermark = memory
            .high_watermark_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        Arc::new(body_budget::BodyBudget::for_watermark(watermark))
    });
    if let Some(disk) = config.disk_alarm.clone() {
        tokio::spawn(alarm::monitor_disk(
            disk,
            broker.resources.clone(),
            alarm_tx.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(memory) = config.memory_alarm.clone() {
        tokio::spawn(alarm::monitor_memory(
            memory,
            broker.resources.clone(),
            alarm_tx,
            shutdown.clone(),
        ));
    }
    let config = Arc::new(config);
    let mut accepting = JoinSet::new();
    for listening in listeners {
        let listener = connection::Listener {
            broker: broker.clone(),
            config: config.clone(),
            shutdown: shutdown.clone(),
            alarm: alarm_rx.clone(),
            body_budget: body_budget.clone(),
        };
        accepting.spawn(accept_loop(listening, listener));
    }
    while accepting.join_next().await.is_some() {}
}

/// Accepts connections on one listener until shutdown, then waits for them to end.
async fn accept_loop(listening: Listening, shared: connection::Listener) {
    let Listening { listener, tls } = listening;
    let config = shared.config.clone();
    let mut shutdown = shared.shutdown.clone();
    let mut connections = JoinSet::new();
    let mut refused_logged: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    // Sockets beyond the budget (handshaking ones included) are closed at
                    // once, so that a flood cannot take every file descriptor; within it, a
                    // client over the connection limit is refused at connection.open with
                    // RabbitMQ's text.
                    let Some(permit) = config.sockets.take() else {
                        if refused_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
                            tracing::warn!(%peer, "connection limit reached: socket closed");
                            refused_logged = Some(tokio::time::Instant::now());
                        }
                        drop(socket);
                        continue;
                    };
                    let _ = socket.set_nodelay(true);
                    let listener = shared.clone();
                    let accepted = connection::Accepted {
                        peer,
                        local: socket.local_addr().ok(),
                        // Known once the TLS handshake is over.
                        tls: None,
                        certificate_name: None,
                        // The TLS and AMQP handshakes together must be over by then.
                        handshake_deadline: tokio::time::Instant::now() + config.handshake_timeout,
                    };
                    match &tls {
                        None => connections.spawn(async move {
                            connection::serve_connection(socket, accepted, listener).await;
                            drop(permit);
                        }),
                        Some(tls) => {
                            let acceptor = tls.acceptor();
                            connections.spawn(async move {
                                serve_tls_connection(socket, accepted, acceptor, listener).await;
                                drop(permit);
                            })
                        }
                    };
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

/// The TLS handshake (within the handshake timeout), then the connection as usual, with
/// the client certificate's name for SASL EXTERNAL.
async fn serve_tls_connection(
    socket: tokio::net::TcpStream,
    mut accepted: connection::Accepted,
    acceptor: tokio_rustls::TlsAcceptor,
    listener: connection::Listener,
) {
    let peer = accepted.peer;
    let handshake = acceptor.accept(socket);
    let stream = match tokio::time::timeout_at(accepted.handshake_deadline, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    accepted.certificate_name = tls::client_common_name(stream.get_ref().1);
    accepted.tls = Some(tls::details(stream.get_ref().1));
    connection::serve_connection(stream, accepted, listener).await
}
