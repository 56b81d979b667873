//! One client connection: the handshake, then frames dispatched to channels until either
//! side closes. The connection task owns its channels; a writer task owns the socket's
//! write half and drains the shared outbound buffer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use wharf_amqp::frame::encode_method;
use wharf_amqp::*;
use wharf_core::{limits, Broker, ConnectionId, VHost};

use crate::alarm::Alarms;
use crate::body_budget::BodyBudget;
use crate::channel::{Channel, ChannelContext};
use crate::channel_table::ChannelTable;
use crate::error::AmqpError;
use crate::frame_reader::{FrameReader, ReadError};
use crate::handshake::{self, Handshake, HandshakeError};
use crate::outbound::{Outbound, INPUT_PAUSE_BYTES};
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
    /// Room for large bodies being received, shared by the listener's connections.
    body_budget: Option<Arc<BodyBudget>>,
    /// The channel whose large body (with room reserved for it) the last frame handled
    /// was part of: an alarm lets it finish, since only a finished body can be freed.
    finishing_body: Option<u16>,
    /// A channel's large body waits for room ([`Connection::wait_for_body_room`]).
    body_awaiting_room: bool,
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
    let writer = tokio::spawn(run_writer(write_half, outbound.clone(), heartbeat.clone()));
    let mut reader = FrameReader::new(read_half, handshake::HANDSHAKE_FRAME_MAX_BYTES);
    // Administration closes connections through the broker's list (a deleted vhost's,
    // a deleted user's), where the handshake puts this one: the reason arrives here.
    let id = broker.next_connection_id();
    let (forced_tx, mut forced) = watch::channel(None::<String>);
    let listing = handshake::Listing {
        id,
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
        body_budget,
        finishing_body: None,
        body_awaiting_room: false,
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

fn send_close(outbound: &Outbound, error: &AmqpError) {
    let close = Method::ConnectionClose(ConnectionClose {
        reply_code: error.code as u16,
        reply_text: error.text.as_str().into(),
        class_id: error.class_id,
        method_id: error.method_id,
    });
    outbound.write(|out| encode_method(0, &close, out));
}

/// After connection.close, everything but close-ok (or the client's own close) is ignored.
/// Bytes that do not parse are skipped too, so that a client still sending the rest of a
/// bad frame sees our close rather than a reset connection.
async fn await_close_ok<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) {
    loop {
        match reader.next().await {
            Ok(Frame {
                payload:
                    FramePayload::Method(Method::ConnectionCloseOk(_) | Method::ConnectionClose(_)),
                ..
            }) => return,
            Ok(_) => {}
            Err(ReadError::Malformed(_)) => reader.discard_buffered(),
            Err(ReadError::Closed | ReadError::Io(_)) => return,
        }
    }
}

async fn await_eof<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) {
    while reader.next().await.is_ok() {}
}

async fn finish(outbound: Arc<Outbound>, mut writer: tokio::task::JoinHandle<std::io::Result<()>>) {
    outbound.close();
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        // A peer that reads nothing would keep the writer, its socket and its buffer.
        writer.abort();
    }
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
                    if crate::outbound::take_credit_filled() {
                        // A consumer waits on what this frame delivered: yield below.
                    } else if handled_since_yield < FRAMES_BETWEEN_YIELDS {
                        continue;
                    } else if crate::outbound::take_deliveries_woken() == 0 {
                        // Nobody is waiting on what these frames did: go on until the
                        // end of the read.
                        handled_since_yield = 1;
                        continue;
                    }
                }
                Ok(None) => self.flush_acks(),
                Err(ReadError::Malformed(error)) => return Ending::Close(error.into()),
                Err(_) => return Ending::ClientGone,
            }
            if handled_since_yield > 0 {
                // A peer that keeps the socket full would otherwise keep this task running
                // without a pause, and the tasks it woke (other connections' writers, put
                // in this worker's next-task slot) would wait behind it.
                handled_since_yield = 0;
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

    /// basic.get answers a request of a few bytes with a whole message, so a client that
    /// sends gets and never reads could make the broker buffer without bound: with
    /// [`INPUT_PAUSE_BYTES`] waiting to be written, a get waits for the writer first.
    /// (Other replies are no larger than what the client sent, and stopping to read
    /// for them could deadlock a client whose reading thread also publishes.)
    #[inline]
    fn get_must_wait(&self, frame: &Frame) -> bool {
        self.outbound.pending_bytes() >= INPUT_PAUSE_BYTES
            && matches!(frame.payload, FramePayload::Method(Method::BasicGet(_)))
    }

    /// Stops reading from the client until the writer has brought the unwritten bytes
    /// under [`INPUT_PAUSE_BYTES`]; deliveries resume as it drains. A writer that gets
    /// nothing through for two heartbeat intervals means the peer is gone.
    async fn wait_for_writer(
        &mut self,
        stops: &mut Stops<'_>,
        silence_limit: Option<Duration>,
    ) -> Option<Ending> {
        tracing::debug!(id = self.id, "client not reading: input paused");
        // Acks already read count while the connection waits.
        self.flush_acks();
        loop {
            if self.outbound.is_closed() {
                return Some(Ending::ClientGone);
            }
            self.outbound.await_room();
            if self.outbound.pending_bytes() < INPUT_PAUSE_BYTES {
                return None;
            }
            let stalled = async {
                match silence_limit {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.outbound.drained.notified() => self.resume_consumers(),
                error = stops.closing() => return Some(Ending::Close(error)),
                _ = stalled => {
                    tracing::warn!(id = self.id, "client read nothing for two heartbeat intervals");
                    return Some(Ending::ClientGone);
                }
            }
        }
    }

    /// Stops reading while a channel waits for room for the large body it is about to
    /// receive ([`BodyBudget`]); deliveries to its consumers go on meanwhile.
    async fn wait_for_body_room(&mut self, stops: &mut Stops<'_>) -> Option<Ending> {
        // Checked before every read: a flag, not a walk over the channels.
        if !self.body_awaiting_room {
            return None;
        }
        let budget = self.body_budget.clone()?;
        loop {
            let awaiting = self.channels.values().find_map(|slot| match slot {
                Slot::Open(channel) => channel
                    .body_awaiting_room()
                    .map(|bytes| (channel.id, bytes)),
                Slot::Closing => None,
            });
            let Some((number, bytes)) = awaiting else {
                self.body_awaiting_room = false;
                return None;
            };
            // Acks already read count before the connection stops reading.
            self.flush_acks();
            // One reservation, kept while waiting: the budget serves bodies in turn.
            let reserve = budget.reserve(bytes);
            tokio::pin!(reserve);
            let room = loop {
                tokio::select! {
                    room = &mut reserve => break room,
                    _ = self.outbound.drained.notified() => {
                        if self.outbound.is_closed() {
                            return Some(Ending::ClientGone);
                        }
                        self.resume_consumers();
                    }
                    error = stops.closing() => return Some(Ending::Close(error)),
                }
            };
            if let Some(Slot::Open(channel)) = self.channels.get_mut(number) {
                channel.give_body_room(room);
            }
        }
    }

    /// Stops reading from a publishing connection while a resource alarm is on, telling a
    /// client that asked for it. Deliveries to its consumers go on.
    async fn wait_while_blocked(
        &mut self,
        stops: &mut Stops<'_>,
        alarm: &mut watch::Receiver<Alarms>,
    ) -> Option<Ending> {
        let notify = self.handshake.connection_blocked;
        let reason = alarm.borrow().reason();
        if notify {
            let blocked = Method::ConnectionBlocked(ConnectionBlocked {
                reason: reason.into(),
            });
            self.outbound.write(|out| encode_method(0, &blocked, out));
        }
        tracing::info!(id = self.id, reason, "publishing connection blocked");
        while alarm.borrow().any() {
            tokio::select! {
                changed = alarm.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = self.outbound.drained.notified() => {
                    if self.outbound.is_closed() {
                        // The writer failed: the peer is gone.
                        return Some(Ending::ClientGone);
                    }
                    self.resume_consumers();
                }
                error = stops.closing() => return Some(Ending::Close(error)),
            }
        }
        if notify {
            let unblocked = Method::ConnectionUnblocked(ConnectionUnblocked {});
            self.outbound.write(|out| encode_method(0, &unblocked, out));
        }
        None
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

    /// Applies the acks channels gathered (see [`Channel::flush_acks`]).
    fn flush_acks(&mut self) {
        if !self.acks_pending {
            return;
        }
        self.acks_pending = false;
        for slot in self.channels.values_mut() {
            if let Slot::Open(channel) = slot {
                channel.flush_acks();
            }
        }
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<bool, AmqpError> {
        let is_ack = matches!(frame.payload, FramePayload::Method(Method::BasicAck(_)));
        if is_ack {
            self.acks_pending = true;
        } else {
            // Whatever comes next sees every earlier ack applied.
            self.flush_acks();
        }
        let channel_id = frame.channel;
        if let FramePayload::Method(Method::BasicPublish(_)) = &frame.payload {
            self.published = true;
        }
        let content = matches!(
            frame.payload,
            FramePayload::Header(_) | FramePayload::Body(_)
        );
        if !matches!(frame.payload, FramePayload::Heartbeat) {
            // (A heartbeat between two body frames does not end the body.)
            self.finishing_body = None;
        }
        if channel_id == 0 {
            return self.handle_connection_frame(frame.payload);
        }
        let ctx = ChannelContext {
            vhost: &self.vhost,
            grant: &self.handshake.grant,
            flusher: self.broker.flusher(),
            connection_id: self.id,
            config: &self.config,
            outbound: &self.outbound,
            body_budget: self.body_budget.as_ref(),
        };
        let slot = self.channels.get_mut(channel_id);
        let result = match (slot, frame.payload) {
            (None, FramePayload::Method(Method::ChannelOpen(_))) => {
                self.check_channel_max()?;
                self.check_user_channel_limit()?;
                let channel = Channel::new(
                    channel_id,
                    self.outbound.clone(),
                    self.handshake.frame_max,
                    self.handshake.consumer_cancel_notify,
                );
                self.channels
                    .insert(channel_id, Slot::Open(Box::new(channel)));
                self.note_channels();
                self.outbound.write(|out| {
                    encode_method(channel_id, &Method::ChannelOpenOk(ChannelOpenOk {}), out)
                });
                Ok(())
            }
            (None, _) => {
                return Err(AmqpError::new(
                    ReplyCode::ChannelError,
                    "expected 'channel.open'",
                ))
            }
            (Some(Slot::Closing), FramePayload::Method(Method::ChannelCloseOk(_))) => {
                self.channels.remove(channel_id);
                self.note_channels();
                Ok(())
            }
            (Some(Slot::Closing), FramePayload::Method(Method::ChannelClose(_))) => {
                // Both sides closed at once: our close stands in for the client's close-ok.
                self.outbound.write(|out| {
                    encode_method(channel_id, &Method::ChannelCloseOk(ChannelCloseOk {}), out)
                });
                Ok(())
            }
            (Some(Slot::Closing), _) => Ok(()),
            (Some(Slot::Open(channel)), payload) => match payload {
                FramePayload::Method(method) => {
                    if channel.is_receiving_content() {
                        return Err(AmqpError::new(
                            ReplyCode::UnexpectedFrame,
                            format_args!(
                                "expected content header for class 60, got non content header frame instead"
                            ),
                        ));
                    }
                    match method {
                        Method::ChannelOpen(_) => {
                            return Err(AmqpError::new(
                                ReplyCode::ChannelError,
                                "second 'channel.open' seen",
                            ))
                        }
                        Method::ChannelClose(_) => {
                            channel.release(Some(&self.vhost));
                            self.channels.remove(channel_id);
                            self.note_channels();
                            self.outbound.write(|out| {
                                encode_method(
                                    channel_id,
                                    &Method::ChannelCloseOk(ChannelCloseOk {}),
                                    out,
                                )
                            });
                            return Ok(true);
                        }
                        method if is_connection_method(&method) => {
                            return Err(AmqpError::new(
                                ReplyCode::CommandInvalid,
                                format_args!("{} is only valid on channel 0", method.name()),
                            )
                            .during(&method))
                        }
                        method => channel.handle_method(&ctx, method),
                    }
                }
                FramePayload::Header(header) => channel.handle_header(&ctx, header),
                FramePayload::Body(body) => channel.handle_body(&ctx, body),
                FramePayload::Heartbeat => Err(AmqpError::new(
                    ReplyCode::FrameError,
                    format_args!("heartbeat frame on channel {channel_id}"),
                )),
            },
        };
        if content && result.is_ok() {
            if let Some(Slot::Open(channel)) = self.channels.get_mut(channel_id) {
                if channel.holds_room_for_body() {
                    self.finishing_body = Some(channel_id);
                }
                self.body_awaiting_room |= channel.body_awaiting_room().is_some();
            }
        }
        match result {
            Ok(()) => Ok(true),
            Err(error) if error.closes_connection() => Err(error),
            Err(error) => {
                self.close_channel(channel_id, &error);
                Ok(true)
            }
        }
    }

    /// Tells the broker's list how many channels this connection has open.
    fn note_channels(&self) {
        self.handshake
            .registration
            .set_channels(self.channels.len());
    }

    /// channel_max bounds how many channels are open at once (as RabbitMQ counts them; the
    /// numbers themselves may be anything but 0). A channel closing still counts until its
    /// close-ok.
    fn check_channel_max(&self) -> Result<(), AmqpError> {
        let max = self.handshake.channel_max;
        let open = self.channels.len();
        if max != 0 && open >= usize::from(max) {
            return Err(AmqpError::new(
                ReplyCode::NotAllowed,
                format_args!(
                    "number of channels opened ({open}) has reached the negotiated channel_max ({max})"
                ),
            ));
        }
        Ok(())
    }

    /// A user with a max-channels limit may not open more, over all their connections.
    fn check_user_channel_limit(&self) -> Result<(), AmqpError> {
        let user = &self.handshake.username;
        let max = self
            .broker
            .access
            .user(user)
            .and_then(|u| u.limits.get(limits::MAX_CHANNELS));
        match max {
            Some(max) if !self.handshake.registration.open_channel_within(max) => {
                Err(AmqpError::new(
                    ReplyCode::NotAllowed,
                    format_args!(
                        "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({max})"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// A channel error: release the channel and tell the client with channel.close.
    fn close_channel(&mut self, channel_id: u16, error: &AmqpError) {
        if let Some(Slot::Open(mut channel)) = self.channels.insert(channel_id, Slot::Closing) {
            channel.release(Some(&self.vhost));
        }
        let close = Method::ChannelClose(ChannelClose {
            reply_code: error.code as u16,
            reply_text: error.text.as_str().into(),
            class_id: error.class_id,
            method_id: error.method_id,
        });
        self.outbound
            .write(|out| encode_method(channel_id, &close, out));
    }

    fn handle_connection_frame(&mut self, payload: FramePayload) -> Result<bool, AmqpError> {
        match payload {
            FramePayload::Heartbeat => Ok(true),
            FramePayload::Method(Method::ConnectionClose(_)) => {
                self.release_all();
                self.outbound.write(|out| {
                    encode_method(0, &Method::ConnectionCloseOk(ConnectionCloseOk {}), out)
                });
                Ok(false)
            }
            FramePayload::Method(Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_)) => {
                Ok(true)
            }
            FramePayload::Method(Method::ConnectionUpdateSecret(update)) => {
                // RabbitMQ's extension for refreshing a token (OAuth 2). Its internal
                // users have nothing to refresh, and RabbitMQ answers -ok whatever the
                // secret: so does Wharf, whose users are all internal ones.
                tracing::info!(id = self.id, reason = %update.reason, "connection secret update: nothing to refresh for an internal user");
                self.outbound.write(|out| {
                    encode_method(
                        0,
                        &Method::ConnectionUpdateSecretOk(ConnectionUpdateSecretOk {}),
                        out,
                    )
                });
                Ok(true)
            }
            FramePayload::Method(method) => Err(AmqpError::new(
                ReplyCode::ChannelError,
                "unexpected method in connection state running",
            )
            .during(&method)),
            FramePayload::Header(_) | FramePayload::Body(_) => Err(AmqpError::new(
                ReplyCode::UnexpectedFrame,
                "content frame on channel 0",
            )),
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

fn is_connection_method(method: &Method) -> bool {
    method.class_id() == 10
}
