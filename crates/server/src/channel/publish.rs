//! basic.publish: collecting a message's header and body frames, then publishing it
//! through the core (or holding it in a transaction's buffer until commit), and telling
//! the publisher: basic.return, and in confirm mode its confirm once the message is
//! stored.

use std::cell::Cell;

use wharf_core::queue::Woken;

use crate::channel::delivery::{ChannelDelivery, ExchangeTally, PublishCounters};
use std::sync::Arc;

use bytes::Bytes;
use wharf_amqp::{
    BasicPublish, BasicReturn, ByteString, ContentHeader, EncodedProperties, Method, ReplyCode,
};
use wharf_core::access::{Access, PublishTarget};
use wharf_core::message::SenderRoutes;
use wharf_core::{Exchange, ExchangeKind, Message, Published, RouteCache};

use super::consuming::settle;
use super::delivery::{encode_with_content, Unacked};
use super::{Channel, ChannelContext, Mode};
use crate::error::{AmqpError, AmqpResult};
use wharf_amqp::frame::encode_method;
use wharf_core::direct_reply::REPLY_QUEUE;

/// The class id content headers of basic.publish must carry.
const BASIC_CLASS_ID: u16 = 60;

/// A body frame is a slice of the connection's 64 KiB read buffer, and keeping it keeps
/// the whole buffer alive for as long as the message is queued. Bodies smaller than this
/// are copied out, which bounds that overhead to 8x the body for the ones kept as slices.
const COPY_BODY_BELOW_BYTES: usize = 8 * 1024;

#[derive(Debug)]
enum Body {
    Empty,
    /// One body frame: the common case, kept as a zero-copy slice of the read buffer.
    Single(Bytes),
    /// Several body frames, gathered in a buffer that ends exactly the body's size.
    Many(Vec<u8>),
}

/// Appends a body frame, growing the buffer by doubling but never past the body's size, so
/// that a complete body holds no spare capacity for as long as the message is kept.
fn append_body(all: &mut Vec<u8>, chunk: &[u8], body_size: usize) {
    let needed = all.len() + chunk.len();
    if needed > all.capacity() {
        let target = needed.max(all.len() * 2).min(body_size.max(needed));
        all.reserve_exact(target - all.len());
    }
    all.extend_from_slice(chunk);
}

/// A publish whose content frames are still arriving.
/// The most a message in progress reserves ahead of its body frames; a larger body grows
/// as its frames arrive.
const BODY_RESERVE_MAX_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub struct PendingPublish {
    exchange: Arc<Exchange>,
    routing_key: ByteString,
    mandatory: bool,
    /// The content header's body size and properties, once it arrived.
    header: Option<(u64, EncodedProperties)>,
    body: Body,
    received_bytes: u64,
    /// The `BCC` keys of the message, if it had any (taken off its headers).
    bcc: Option<Arc<[ByteString]>>,
    /// Room for a large body ([`crate::body_budget`]), held until the body is complete.
    room: Room,
}

#[derive(Debug)]
enum Room {
    NotNeeded,
    /// The body is large and no room is reserved yet: the connection reads no more until
    /// there is.
    Awaiting(u64),
    Held(#[allow(dead_code)] crate::body_budget::Reservation),
}

/// A complete message, ready to route.
#[derive(Debug)]
pub struct Publish {
    exchange: Arc<Exchange>,
    mandatory: bool,
    message: Arc<Message>,
    /// The `BCC` keys, taken off the message: routed by, never delivered.
    bcc: Option<Arc<[ByteString]>>,
}

/// What a transaction holds until commit: publishes, and settled deliveries with their
/// outcome (None = ack, Some(requeue) = nack/reject).
#[derive(Debug, Default)]
pub struct TxBuffer {
    pub publishes: Vec<Publish>,
    pub acks: Vec<(Vec<Unacked>, Option<bool>)>,
}

impl PendingPublish {
    /// Starts a publish to the exchange `method` names. `cache` holds the exchange this
    /// channel published to last, as checked under the permissions of one generation: a
    /// run of publishes to one exchange looks it up and checks the permission once.
    pub fn start(
        ctx: &ChannelContext<'_>,
        method: BasicPublish,
        cache: &mut Option<PublishTarget>,
    ) -> AmqpResult<Self> {
        if method.immediate {
            return Err(AmqpError::new(ReplyCode::NotImplemented, "immediate=true"));
        }
        let target = match cache {
            Some(target) if target.is_current(ctx.grant, &method.exchange) => target,
            _ => cache.insert(ctx.grant.publish_target(ctx.vhost, &method.exchange)?),
        };
        ctx.grant.check_publish_key(target, &method.routing_key)?;
        let exchange = target.exchange.clone();
        Ok(PendingPublish {
            exchange,
            routing_key: method.routing_key,
            mandatory: method.mandatory,
            header: None,
            body: Body::Empty,
            received_bytes: 0,
            bcc: None,
            room: Room::NotNeeded,
        })
    }

    /// Returns true when the message is complete (an empty body needs no body frame).
    #[inline]
    pub fn add_header(
        &mut self,
        ctx: &ChannelContext<'_>,
        header: ContentHeader,
    ) -> AmqpResult<bool> {
        if self.header.is_some() {
            return Err(AmqpError::new(
                ReplyCode::UnexpectedFrame,
                "expected content body, got non content body frame instead",
            ));
        }
        if header.class_id != BASIC_CLASS_ID {
            return Err(AmqpError::new(
                ReplyCode::UnexpectedFrame,
                format_args!(
                    "expected content header for class 60, got one for class {} instead",
                    header.class_id
                ),
            ));
        }
        let max = ctx.config.max_message_bytes;
        if header.body_size > max as u64 {
            return Err(AmqpError::new(
                ReplyCode::PreconditionFailed,
                format_args!(
                    "message size {} is larger than configured max size {max}",
                    header.body_size
                ),
            )
            .with_ids(60, 40));
        }
        if let Some(expiration) = header.properties.expiration() {
            if let Err(reason) = wharf_core::message::parse_expiration(expiration) {
                return Err(AmqpError::new(
                    ReplyCode::PreconditionFailed,
                    format_args!("invalid expiration '{expiration}': {reason}"),
                )
                .with_ids(60, 40));
            }
        }
        if header.properties.has_user_id() {
            check_user_id(ctx, &header.properties)?;
        }
        let mut properties = header.properties;
        if properties.has_sender_routes() {
            properties = self.take_sender_routes(ctx, properties)?;
        }
        let complete = header.body_size == 0;
        if header.body_size >= crate::body_budget::LARGE_BODY_BYTES {
            if let Some(budget) = ctx.body_budget {
                self.room = match budget.try_reserve(header.body_size) {
                    Some(room) => Room::Held(room),
                    None => Room::Awaiting(header.body_size),
                };
            }
        }
        self.header = Some((header.body_size, properties));
        Ok(complete)
    }

    /// The size of the large body to come, while no room is reserved for it.
    pub fn awaiting_room(&self) -> Option<u64> {
        match self.room {
            Room::Awaiting(bytes) => Some(bytes),
            _ => None,
        }
    }

    pub fn holds_room(&self) -> bool {
        matches!(self.room, Room::Held(_))
    }

    pub fn give_room(&mut self, room: crate::body_budget::Reservation) {
        self.room = Room::Held(room);
    }

    /// Reads the `CC` and `BCC` keys (a header that is not an array refuses the message
    /// with RabbitMQ's 406) and takes the `BCC` header off; returns the properties to keep.
    /// Each key is a routing key the message is published with, so on a topic exchange
    /// each needs the write topic permission the method's key needed.
    #[cold]
    fn take_sender_routes(
        &mut self,
        ctx: &ChannelContext<'_>,
        properties: EncodedProperties,
    ) -> AmqpResult<EncodedProperties> {
        let routes = SenderRoutes::of(&properties).map_err(|reason| {
            AmqpError::new(
                ReplyCode::PreconditionFailed,
                format_args!("invalid message: {reason}"),
            )
            .with_ids(60, 40)
        })?;
        let exchange = &self.exchange;
        if exchange.kind == ExchangeKind::Topic && ctx.grant.limits_topics(&exchange.name) {
            for key in routes.cc.iter().chain(&routes.bcc) {
                ctx.grant
                    .check_topic(Access::Write, &exchange.name, key)
                    .map_err(|e| AmqpError::from(e).with_ids(60, 40))?;
            }
        }
        if !routes.bcc.is_empty() {
            self.bcc = Some(routes.bcc.into());
        }
        Ok(if routes.has_bcc {
            SenderRoutes::without_bcc(&properties)
        } else {
            properties
        })
    }

    pub fn add_body(&mut self, chunk: Bytes) -> AmqpResult<bool> {
        let Some((body_size, _)) = self.header else {
            return Err(AmqpError::new(
                ReplyCode::UnexpectedFrame,
                "expected content header for class 60, got non content header frame instead",
            ));
        };
        self.received_bytes += chunk.len() as u64;
        if self.received_bytes > body_size {
            return Err(AmqpError::new(
                ReplyCode::FrameError,
                format_args!(
                    "content body exceeds declared size {body_size} (received {})",
                    self.received_bytes
                ),
            ));
        }
        self.body = match std::mem::replace(&mut self.body, Body::Empty) {
            Body::Empty => Body::Single(chunk),
            Body::Single(first) => {
                // Reserved up to a bound only: the declared size is the client's word, and
                // channels may each hold a message in progress; a body with room held for
                // it in the budget gets it all at once (growing it would copy it).
                let reserve = match self.room {
                    Room::Held(_) => body_size as usize,
                    _ => (body_size as usize).min(BODY_RESERVE_MAX_BYTES),
                };
                let mut all = Vec::with_capacity(reserve);
                append_body(&mut all, &first, body_size as usize);
                append_body(&mut all, &chunk, body_size as usize);
                Body::Many(all)
            }
            Body::Many(mut all) => {
                append_body(&mut all, &chunk, body_size as usize);
                Body::Many(all)
            }
        };
        Ok(self.received_bytes == body_size)
    }

    pub fn into_publish(self) -> Publish {
        let body = match self.body {
            Body::Empty => Bytes::new(),
            Body::Single(bytes) if bytes.len() < COPY_BODY_BELOW_BYTES => {
                Bytes::copy_from_slice(&bytes)
            }
            Body::Single(bytes) => bytes,
            Body::Many(all) => Bytes::from(all),
        };
        let properties = self.header.map(|(_, p)| p).unwrap_or_default();
        Publish {
            mandatory: self.mandatory,
            message: Arc::new(Message {
                exchange: self.exchange.name.clone(),
                routing_key: self.routing_key,
                properties,
                body,
            }),
            exchange: self.exchange,
            bcc: self.bcc,
        }
    }
}

impl Publish {
    /// Publishes the message (core's one publish operation); an unroutable mandatory
    /// message goes back to the publisher with basic.return.
    pub fn route_and_enqueue(
        self,
        channel: &ChannelDelivery,
        ctx: &ChannelContext<'_>,
        cache: &mut RouteCache,
        tally: &mut ExchangeTally,
    ) -> Published {
        let Publish {
            exchange,
            mandatory,
            message,
            bcc,
        } = self;
        let bcc = bcc.as_deref().unwrap_or(&[]);
        let mut published = ctx.vhost.publish(&exchange, message, bcc, cache);
        tally.count(&exchange.name, published.unroutable.is_none(), channel);
        if let Some(message) = published.unroutable.take() {
            let counters = &channel.publishing.0;
            PublishCounters::count(match mandatory {
                true => &counters.returned,
                false => &counters.dropped,
            });
            if mandatory {
                let method = Method::BasicReturn(Box::new(BasicReturn {
                    reply_code: ReplyCode::NoRoute as u16,
                    reply_text: "NO_ROUTE".into(),
                    exchange: message.exchange.clone(),
                    routing_key: message.routing_key.clone(),
                }));
                let (id, frame_max) = (channel.channel_id, channel.frame_max);
                ctx.outbound
                    .write(|out| encode_with_content(id, &method, &message, frame_max, out));
            }
        }
        published
    }
}

impl TxBuffer {
    /// Applies the transaction; returns what its publishes stored.
    pub fn commit(
        self,
        channel: &ChannelDelivery,
        woken: &Cell<Woken>,
        tally: &mut ExchangeTally,
        ctx: &ChannelContext<'_>,
    ) -> Published {
        let mut published = Published::default();
        let mut cache = RouteCache::default();
        for publish in self.publishes {
            published.merge(publish.route_and_enqueue(channel, ctx, &mut cache, tally));
        }
        for (deliveries, outcome) in self.acks {
            settle(deliveries, outcome, woken);
        }
        published
    }
}

/// As RabbitMQ: a message may claim only the user who published it, unless that user has
/// the `impersonator` tag.
#[cold]
fn check_user_id(ctx: &ChannelContext<'_>, properties: &EncodedProperties) -> AmqpResult<()> {
    match properties.decode().ok().and_then(|p| p.user_id) {
        Some(claimed) => ctx
            .grant
            .check_user_id(&claimed)
            .map_err(|e| AmqpError::from(e).with_ids(60, 40)),
        None => Ok(()),
    }
}

impl Channel {
    /// A request naming `amq.rabbitmq.reply-to` as its reply-to gets this channel's reply
    /// name instead; a channel without a reply consumer cannot send one.
    pub(super) fn direct_reply_to(&self, header: &mut ContentHeader) -> AmqpResult<()> {
        if header.properties.reply_to() != Some(REPLY_QUEUE) {
            return Ok(());
        }
        let Some(consumer) = &self.reply_consumer else {
            return Err(AmqpError::new(
                ReplyCode::PreconditionFailed,
                "fast reply consumer does not exist",
            )
            .with_ids(60, 40));
        };
        let mut properties = header.properties.decode().map_err(AmqpError::from)?;
        properties.reply_to = Some(consumer.name.clone());
        header.properties = properties.into();
        Ok(())
    }

    /// Content frames for the message being published.
    pub fn handle_header(
        &mut self,
        ctx: &ChannelContext<'_>,
        mut header: ContentHeader,
    ) -> AmqpResult<()> {
        if self.pending.is_none() {
            return Err(unexpected_content());
        }
        self.direct_reply_to(&mut header)?;
        let Some(pending) = self.pending.as_mut() else {
            return Err(unexpected_content());
        };
        if pending.add_header(ctx, header)? {
            self.finish_publish(ctx);
        }
        Ok(())
    }

    /// The size of the large body this channel is about to receive, while it has no room
    /// reserved for it.
    pub fn body_awaiting_room(&self) -> Option<u64> {
        self.pending.as_ref()?.awaiting_room()
    }

    /// Whether a large body, with room reserved for it, is being received.
    pub fn holds_room_for_body(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.holds_room())
    }

    pub fn give_body_room(&mut self, room: crate::body_budget::Reservation) {
        if let Some(pending) = self.pending.as_mut() {
            pending.give_room(room);
        }
    }

    pub fn handle_body(&mut self, ctx: &ChannelContext<'_>, body: bytes::Bytes) -> AmqpResult<()> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(unexpected_content());
        };
        if pending.add_body(body)? {
            self.finish_publish(ctx);
        }
        Ok(())
    }

    pub(super) fn finish_publish(&mut self, ctx: &ChannelContext<'_>) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let publish = pending.into_publish();
        PublishCounters::count(&self.delivery.publishing.0.published);
        match &mut self.mode {
            Mode::Tx(buffer) => buffer.publishes.push(publish),
            Mode::Confirm(confirms) => {
                let stored = publish.route_and_enqueue(
                    &self.delivery,
                    ctx,
                    &mut self.route_cache,
                    &mut self.tally,
                );
                super::add_woken(&self.woken, stored.woken);
                match ctx.flusher {
                    Some(flusher) if !stored.appended_to.is_empty() && !stored.refused => {
                        // The next tag, confirmed once the disk has what was appended.
                        let tag = confirms.publish();
                        let (confirms, outbound) = (confirms.clone(), ctx.outbound.clone());
                        flusher.after_sync(
                            stored.appended_to,
                            Box::new(move |ok| outbound.confirm(&confirms, tag, ok)),
                        );
                    }
                    _ => {
                        ctx.outbound.publish_confirmed(confirms, !stored.refused);
                    }
                }
            }
            Mode::Plain => {
                let published = publish.route_and_enqueue(
                    &self.delivery,
                    ctx,
                    &mut self.route_cache,
                    &mut self.tally,
                );
                super::add_woken(&self.woken, published.woken);
            }
        }
    }

    /// Sends `reply(ok)` once what `stored` appended is on disk (at once when nothing
    /// waits for the disk). Nothing is sent if the channel closed meanwhile.
    pub(super) fn after_stored(
        &self,
        ctx: &ChannelContext<'_>,
        stored: Published,
        reply: impl FnOnce(bool) -> Method + Send + 'static,
    ) {
        match ctx.flusher {
            Some(flusher) if !stored.appended_to.is_empty() && !stored.refused => {
                let delivery = self.delivery.clone();
                let channel = self.id;
                flusher.after_sync(
                    stored.appended_to,
                    Box::new(move |ok| {
                        // Under the delivery lock, so a closing channel cannot race it.
                        let state = delivery.state.lock();
                        if !state.closed {
                            let method = reply(ok);
                            delivery
                                .outbound
                                .write(|out| encode_method(channel, &method, out));
                        }
                    }),
                );
            }
            _ => self.reply(ctx.outbound, reply(!stored.refused)),
        }
    }
}

pub(super) fn unexpected_content() -> AmqpError {
    AmqpError::new(
        ReplyCode::UnexpectedFrame,
        "expected method frame, got non method frame instead",
    )
}

#[cfg(test)]
mod body_tests {
    use super::*;

    #[test]
    pub(super) fn a_body_in_many_frames_ends_exactly_its_size() {
        let body_size = 3 * 1024 * 1024 + 5;
        let mut all = Vec::with_capacity(BODY_RESERVE_MAX_BYTES);
        let frame = vec![7u8; 131_064];
        let mut left = body_size;
        while left > 0 {
            let n = left.min(frame.len());
            append_body(&mut all, &frame[..n], body_size);
            left -= n;
        }
        assert_eq!(all.len(), body_size);
        assert_eq!(all.capacity(), body_size, "no spare capacity kept");
    }
}
