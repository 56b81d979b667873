//! One client connection: the handshake, then frames dispatched to channels until either
//! side closes. The connection task owns its channels; a writer task owns the socket's
//! write half and drains the shared outbound buffer.

mod closing;
mod frames;
mod waits;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use wharf_amqp::*;
use wharf_core::connections::Traffic;
use wharf_core::queue::Woken;
use wharf_core::{Broker, ConnectionId, VHost};

use self::closing::{await_close_ok, await_eof, finish, send_close};
use crate::alarm::Alarms;
use crate::body_budget::BodyBudget;
use crate::channel::Channel;
use crate::channel_table::ChannelTable;
use crate::error::AmqpError;
use crate::frame_reader::{FrameReader, ReadError};
use crate::handshake::{self, Handshake, HandshakeError};
use crate::outbound::Outbound;
use crate::writer::{run_writer, HeartbeatSetting};
use crate::ServerConfig;

/// How long we wait for the client's close-ok after sending connection.close.
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection gives other tasks a turn after this many frames if it delivered to some
/// connection meanwhile, at once after a delivery that used a consumer's last prefetch
/// credit, and after each read. (256 here cost scenario A a fifth of its rate; the credit
/// rule keeps what the short turns gave consumers with a prefetch limit.)
const FRAMES_BETWEEN_YIELDS: usize = 1024;

enum Slot {
    Open(Box<Channel>),
    /// We sent channel.close and wait for close-ok; other frames are dropped.
    Closing,
}

/// What ends a connection from outside: the server's shutdown, administration.
struct Stops<'a> {
    shutdown: &'a mut watch::Receiver<bool>,
    forced: &'a mut watch::Receiver<Option<String>>,
}

impl Stops<'_> {
    /// Waits until the connection must close; the error to close it with.
    async fn closing(&mut self) -> AmqpError {
        tokio::select! {
            _ = self.shutdown.changed() => AmqpError::new(
                ReplyCode::ConnectionForced,
                "broker forced connection closure with reason 'shutdown'",
            ),
            Ok(()) = self.forced.changed() => {
                let reason = self.forced.borrow().clone().unwrap_or_default();
                AmqpError::new(ReplyCode::ConnectionForced, reason)
            }
        }
    }
}

/// How the frame loop ended.
enum Ending {
    /// The client went away (socket closed, heartbeats missed).
    ClientGone,
    /// The client sent connection.close and we answered close-ok.
    ClientClosed,
    /// We close with this error (or a forced shutdown) and wait for close-ok.
    Close(AmqpError),
}

struct Connection {
    id: ConnectionId,
    broker: Arc<Broker>,
    vhost: Arc<VHost>,
    config: Arc<ServerConfig>,
    outbound: Arc<Outbound>,
    handshake: Handshake,
    channels: ChannelTable<Slot>,
    /// Set once the client published: only publishing connections are blocked by alarms.
    published: bool,
    /// A channel holds acks not yet applied to their queues.
    acks_pending: bool,
    /// The channels that published since the last [`Connection::flush_tallies`].
    tallies_pending: Vec<u16>,
    /// Room for large bodies being received, shared by the listener's connections.
    body_budget: Option<Arc<BodyBudget>>,
    /// The channel whose large body (with room reserved for it) the last frame handled
    /// was part of: an alarm lets it finish, since only a finished body can be freed.
    finishing_body: Option<u16>,
    /// A channel's large body waits for room ([`Connection::wait_for_body_room`]).
    body_awaiting_room: bool,
    /// What the frames handled since the last yield delivered to consumers (of any
    /// connection): who waits on this connection's turn ending.
    woken: Woken,
}

/// What a listener gives each of its connections.
#[derive(Clone)]
pub struct Listener {
    pub broker: Arc<Broker>,
    pub config: Arc<ServerConfig>,
    pub shutdown: watch::Receiver<bool>,
    pub alarm: watch::Receiver<Alarms>,
    pub body_budget: Option<Arc<BodyBudget>>,
}

/// What is known of a socket before its AMQP handshake.
pub struct Accepted {
    pub peer: SocketAddr,
    /// The broker's address the client connected to.
    pub local: Option<SocketAddr>,
    /// Over TLS (amqps): what it negotiated.
    pub tls: Option<wharf_core::connections::TlsDetails>,
    /// The common name of the client's verified TLS certificate, if it gave one.
    pub certificate_name: Option<String>,
    /// The TLS and AMQP handshakes must be over by then.
    pub handshake_deadline: tokio::time::Instant,
}

pub async fn serve_connection<S>(socket: S, accepted: Accepted, listener: Listener)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Accepted {
        peer,
        local,
        tls,
        certificate_name,
        handshake_deadline,
    } = accepted;
    let Listener {
        broker,
        config,
        mut shutdown,
        mut alarm,
        body_budget,
    } = listener;
    let (read_half, write_half) = tokio::io::split(socket);
    let outbound = Arc::new(Outbound::new());
    let heartbeat = Arc::new(HeartbeatSetting::default());
    let traffic = Arc::new(Traffic::default());
    let writer = tokio::spawn(run_writer(
        write_half,
        outbound.clone(),
        heartbeat.clone(),
        traffic.clone(),
    ));
    let mut reader = FrameReader::new(
        read_half,
        handshake::HANDSHAKE_FRAME_MAX_BYTES,
        traffic.clone(),
    );
    // Administration closes connections through the broker's list (a deleted vhost's,
    // a deleted user's), where the handshake puts this one: the reason arrives here.
    let id = broker.next_connection_id();
    let (forced_tx, mut forced) = watch::channel(None::<String>);
    let listing = handshake::Listing {
        id,
        traffic,
        local: local.map(|a| a.to_string()).unwrap_or_default(),
        tls,
        close: Box::new(move |reason: &str| {
            let _ = forced_tx.send(Some(reason.to_string()));
        }),
    };

    let opened = tokio::select! {
        opened = tokio::time::timeout_at(
            handshake_deadline,
            handshake::run(
                &mut reader,
                &outbound,
                &broker,
                &config,
                peer,
                certificate_name.as_deref(),
                listing,
            ),
        ) => opened,
        _ = shutdown.changed() => {
            // Not open yet: nothing to tell the client but that the socket closes.
            finish(outbound, writer).await;
            return;
        }
    };
    let handshake = match opened {
        Ok(Ok(handshake)) => handshake,
        Ok(Err(HandshakeError::Refused(error))) => {
            tracing::info!(%peer, error = %error.text, "connection refused during handshake");
            send_close(&outbound, &error);
            let _ = tokio::time::timeout(CLOSE_OK_TIMEOUT, await_close_ok(&mut reader)).await;
            finish(outbound, writer).await;
            return;
        }
        Ok(Err(HandshakeError::Abandoned | HandshakeError::SilentRefusal)) => {
            finish(outbound, writer).await;
            return;
        }
        Err(_elapsed) => {
            tracing::info!(%peer, "handshake timed out");
            finish(outbound, writer).await;
            return;
        }
    };
    heartbeat.set(handshake.heartbeat_secs);
    tracing::debug!(%peer, id, user = handshake.username, vhost = %handshake.vhost.name, "connection open");
    let mut connection = Connection {
        id,
        broker: broker.clone(),
        vhost: handshake.vhost.clone(),
        config,
        outbound: outbound.clone(),
        handshake,
        channels: ChannelTable::default(),
        published: false,
        acks_pending: false,
        tallies_pending: Vec::new(),
        body_budget,
        finishing_body: None,
        body_awaiting_room: false,
        woken: Woken::default(),
    };
    let mut stops = Stops {
        shutdown: &mut shutdown,
        forced: &mut forced,
    };
    let ending = connection.run(&mut reader, &mut stops, &mut alarm).await;
    connection.release_all();
    match ending {
        Ending::Close(error) => {
            tracing::info!(%peer, id, error = %error.text, "closing connection");
            send_close(&outbound, &error);
            let _ = tokio::time::timeout(CLOSE_OK_TIMEOUT, await_close_ok(&mut reader)).await;
        }
        Ending::ClientClosed => {
            // Let the client read close-ok and close the socket first, as RabbitMQ does:
            // closing ours at once can reset the connection before close-ok is read.
            let _ = tokio::time::timeout(CLOSE_OK_TIMEOUT, await_eof(&mut reader)).await;
        }
        Ending::ClientGone => {}
    }
    finish(outbound, writer).await;
    tracing::debug!(%peer, id, "connection closed");
}

impl Connection {
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<R>,
        stops: &mut Stops<'_>,
        alarm: &mut watch::Receiver<Alarms>,
    ) -> Ending {
        let heartbeat = self.handshake.heartbeat_secs;
        // A peer that sends nothing for two heartbeat intervals is dead.
        let silence_limit = (heartbeat > 0).then(|| Duration::from_secs(2 * u64::from(heartbeat)));
        let mut handled_since_yield = 0usize;
        let mut next_timeout_check = self
            .config
            .consumer_timeout
            .map(|timeout| tokio::time::Instant::now() + timeout_check_interval(timeout));
        loop {
            // Frames already buffered are handled without waiting on anything else.
            match reader.try_next() {
                Ok(Some(frame)) => {
                    handled_since_yield += 1;
                    if self.get_must_wait(&frame) {
                        if let Some(ending) = self.wait_for_writer(stops, silence_limit).await {
                            return ending;
                        }
                    }
                    match self.handle_frame(frame) {
                        Ok(true) => {}
                        Ok(false) => return Ending::ClientClosed,
                        Err(error) => return Ending::Close(error),
                    }
                    if self.woken.credit_filled {
                        // A consumer waits on what this frame delivered: yield below.
                    } else if handled_since_yield < FRAMES_BETWEEN_YIELDS {
                        continue;
                    } else if self.woken.deliveries == 0 {
                        // Nobody is waiting on what these frames did: go on until the
                        // end of the read.
                        handled_since_yield = 1;
                        continue;
                    }
                }
                Ok(None) => {
                    self.flush_acks();
                    self.flush_tallies();
                }
                Err(ReadError::Malformed(error)) => return Ending::Close(error.into()),
                Err(_) => return Ending::ClientGone,
            }
            if handled_since_yield > 0 {
                // A peer that keeps the socket full would otherwise keep this task running
                // without a pause, and the tasks it woke (other connections' writers, put
                // in this worker's next-task slot) would wait behind it.
                handled_since_yield = 0;
                self.woken = Woken::default();
                // A connection that is never idle checks here (once per read, not per
                // frame: a clock read per frame would cost more than the frame).
                if next_timeout_check.is_some_and(|at| at <= tokio::time::Instant::now()) {
                    next_timeout_check = self.check_consumer_timeouts();
                }
                tokio::task::yield_now().await;
                continue;
            }
            // Before reading more (what was read is handled first, as RabbitMQ stops its
            // socket): a message half received waits too, so that a client interleaving
            // messages on many channels cannot keep publishing through an alarm. The one
            // exception is a large body with room reserved, whose frames came last: it is
            // bounded by the budget, and stopped halfway it would hold its memory for
            // good (a body larger than the watermark could never be received).
            if self.published && alarm.borrow().any() && self.finishing_body.is_none() {
                // Acks already read count before the connection stops reading.
                self.flush_acks();
                if let Some(ending) = self.wait_while_blocked(stops, alarm).await {
                    return ending;
                }
                continue;
            }
            if self.published {
                if let Some(ending) = self.wait_for_forward_room(stops).await {
                    return ending;
                }
            }
            // A large body is read only once there is room for it.
            if let Some(ending) = self.wait_for_body_room(stops).await {
                return ending;
            }
            let read = async {
                match silence_limit {
                    Some(limit) => tokio::time::timeout(limit, reader.next()).await.ok(),
                    None => Some(reader.next().await),
                }
            };
            let timeout_check = async {
                match next_timeout_check {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let frame = tokio::select! {
                read = read => read,
                _ = self.outbound.drained.notified() => {
                    self.resume_consumers();
                    continue;
                }
                _ = timeout_check => {
                    next_timeout_check = self.check_consumer_timeouts();
                    continue;
                }
                error = stops.closing() => return Ending::Close(error),
            };
            let frame = match frame {
                None => {
                    tracing::warn!(
                        id = self.id,
                        "missed heartbeats from client, timeout: {heartbeat}s"
                    );
                    return Ending::ClientGone;
                }
                Some(Ok(frame)) => frame,
                Some(Err(ReadError::Malformed(error))) => return Ending::Close(error.into()),
                Some(Err(ReadError::Closed)) => return Ending::ClientGone,
                Some(Err(ReadError::Io(error))) => {
                    tracing::debug!(id = self.id, %error, "socket error");
                    return Ending::ClientGone;
                }
            };
            if self.get_must_wait(&frame) {
                if let Some(ending) = self.wait_for_writer(stops, silence_limit).await {
                    return ending;
                }
            }
            match self.handle_frame(frame) {
                Ok(true) => {}
                Ok(false) => return Ending::ClientClosed,
                Err(error) => return Ending::Close(error),
            }
        }
    }

    /// Closes, with RabbitMQ's 406, each channel whose oldest unacknowledged delivery is
    /// older than the consumer timeout; its deliveries go back to their queues.
    /// Returns when to check next.
    fn check_consumer_timeouts(&mut self) -> Option<tokio::time::Instant> {
        let timeout = self.config.consumer_timeout?;
        self.flush_acks();
        let now = std::time::Instant::now();
        let mut timed_out = Vec::new();
        for slot in self.channels.values_mut() {
            if let Slot::Open(channel) = slot {
                if channel.ack_timed_out(now, timeout) {
                    timed_out.push(channel.id);
                }
            }
        }
        for channel_id in timed_out {
            let ms = timeout.as_millis();
            tracing::warn!(
                id = self.id,
                channel = channel_id,
                "consumer timed out waiting for delivery acknowledgement (timeout {ms} ms)"
            );
            let error = AmqpError::new(
                ReplyCode::PreconditionFailed,
                format_args!(
                    "delivery acknowledgement on channel {channel_id} timed out. Timeout value \
                     used: {ms} ms. This timeout value can be configured, see consumers doc \
                     guide to learn more"
                ),
            );
            self.close_channel(channel_id, &error);
        }
        Some(tokio::time::Instant::now() + timeout_check_interval(timeout))
    }

    /// Adds what channels published to their shared counts (see
    /// [`Channel::flush_tally`]): once per read, not per publish.
    fn flush_tallies(&mut self) {
        if self.tallies_pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.tallies_pending);
        for id in &pending {
            if let Some(Slot::Open(channel)) = self.channels.get_mut(*id) {
                channel.flush_tally();
            }
        }
        // The list's room is kept for the next read.
        self.tallies_pending = pending;
        self.tallies_pending.clear();
    }

    /// Applies the acks channels gathered (see [`Channel::flush_acks`]).
    fn flush_acks(&mut self) {
        if !self.acks_pending {
            return;
        }
        self.acks_pending = false;
        for slot in self.channels.values_mut() {
            if let Slot::Open(channel) = slot {
                channel.flush_acks();
                // Done at the end of a read, where the connection yields anyway.
                channel.take_woken();
            }
        }
    }

    fn resume_consumers(&self) {
        for slot in self.channels.values() {
            if let Slot::Open(channel) = slot {
                channel.resume_consumers();
            }
        }
    }

    /// Releases every channel and the connection's exclusive queues. Idempotent.
    fn release_all(&mut self) {
        for slot in self.channels.drain() {
            if let Slot::Open(mut channel) = slot {
                channel.release(Some(&self.vhost));
            }
        }
        self.vhost.connection_closed(self.id);
    }
}

/// How often a connection looks for deliveries past the consumer timeout: a thirtieth
/// of it (a minute for RabbitMQ's default 30 minutes), at least every 10 ms.
fn timeout_check_interval(timeout: Duration) -> Duration {
    (timeout / 30).clamp(Duration::from_millis(10), Duration::from_secs(60))
}
