//! A connection's frames: channel 0's methods (close, update-secret, blocked), channel
//! open and close with RabbitMQ's limits and texts, and everything else handed to its
//! channel.

use wharf_amqp::frame::encode_method;
use wharf_amqp::*;
use wharf_core::limits;

use crate::channel::{Channel, ChannelContext};
use crate::error::AmqpError;

use super::{Connection, Slot};

impl Connection {
    pub(super) fn handle_frame(&mut self, frame: Frame) -> Result<bool, AmqpError> {
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
        if let Some(Slot::Open(channel)) = self.channels.get_mut(channel_id) {
            self.woken.merge(channel.take_woken());
            if channel.take_tally_started() {
                self.tallies_pending.push(channel_id);
            }
        }
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
    pub(super) fn note_channels(&self) {
        let registration = &self.handshake.registration;
        registration.set_channels(self.channels.len());
        let views = self
            .channels
            .values()
            .filter_map(|slot| match slot {
                Slot::Open(channel) => Some(channel.view()),
                Slot::Closing => None,
            })
            .collect();
        registration.set_channel_views(views);
    }

    /// channel_max bounds how many channels are open at once (as RabbitMQ counts them; the
    /// numbers themselves may be anything but 0). A channel closing still counts until its
    /// close-ok.
    pub(super) fn check_channel_max(&self) -> Result<(), AmqpError> {
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
    pub(super) fn check_user_channel_limit(&self) -> Result<(), AmqpError> {
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
    pub(super) fn close_channel(&mut self, channel_id: u16, error: &AmqpError) {
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

    pub(super) fn handle_connection_frame(
        &mut self,
        payload: FramePayload,
    ) -> Result<bool, AmqpError> {
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
}

pub(super) fn is_connection_method(method: &Method) -> bool {
    method.class_id() == 10
}
