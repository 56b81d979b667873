//! When a connection stops reading: its writer is too far behind (a client that does not
//! read), a large body waits for room under the memory bound, or an alarm blocks
//! publishers, or (on a cluster) the messages forwarded to other nodes fill the window.
//! Each wait also ends on shutdown, a heartbeat timeout or a dead peer.

use std::time::Duration;

use tokio::sync::watch;
use wharf_amqp::frame::encode_method;
use wharf_amqp::*;

use crate::alarm::Alarms;
use crate::outbound::INPUT_PAUSE_BYTES;

use super::{Connection, Ending, Slot, Stops};

/// How often a publisher stopped by a full forwarding window looks again.
const FORWARD_ROOM_POLL: Duration = Duration::from_millis(1);

impl Connection {
    /// basic.get answers a request of a few bytes with a whole message, so a client that
    /// sends gets and never reads could make the broker buffer without bound: with
    /// [`INPUT_PAUSE_BYTES`] waiting to be written, a get waits for the writer first.
    /// (Other replies are no larger than what the client sent, and stopping to read
    /// for them could deadlock a client whose reading thread also publishes.)
    #[inline]
    pub(super) fn get_must_wait(&self, frame: &Frame) -> bool {
        self.outbound.pending_bytes() >= INPUT_PAUSE_BYTES
            && matches!(frame.payload, FramePayload::Method(Method::BasicGet(_)))
    }

    /// Stops reading from the client until the writer has brought the unwritten bytes
    /// under [`INPUT_PAUSE_BYTES`]; deliveries resume as it drains. A writer that gets
    /// nothing through for two heartbeat intervals means the peer is gone.
    pub(super) async fn wait_for_writer(
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
    pub(super) async fn wait_for_body_room(&mut self, stops: &mut Stops<'_>) -> Option<Ending> {
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

    /// Stops reading from a publishing connection while the messages this node forwarded
    /// to other cluster nodes wait for answers beyond the window (see
    /// [`wharf_core::cluster::FORWARD_WINDOW_BYTES`]); silently, as RabbitMQ's credit flow
    /// does. Deliveries to its consumers go on.
    pub(super) async fn wait_for_forward_room(&mut self, stops: &mut Stops<'_>) -> Option<Ending> {
        let window = self.broker.forward_window()?.clone();
        if !window.is_full() {
            return None;
        }
        // Acks already read count before the connection stops reading.
        self.flush_acks();
        while window.is_full() {
            tokio::select! {
                _ = tokio::time::sleep(FORWARD_ROOM_POLL) => {}
                _ = self.outbound.drained.notified() => self.resume_consumers(),
                error = stops.closing() => return Some(Ending::Close(error)),
            }
        }
        None
    }

    /// Stops reading from a publishing connection while a resource alarm is on, telling a
    /// client that asked for it. Deliveries to its consumers go on.
    pub(super) async fn wait_while_blocked(
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
        self.handshake.registration.set_blocked(true);
        let ending = self.blocked_until_clear(stops, alarm).await;
        self.handshake.registration.set_blocked(false);
        if ending.is_some() {
            return ending;
        }
        if notify {
            let unblocked = Method::ConnectionUnblocked(ConnectionUnblocked {});
            self.outbound.write(|out| encode_method(0, &unblocked, out));
        }
        None
    }

    /// Waits while an alarm is on (consumers still served); an ending if the connection
    /// must end meanwhile.
    async fn blocked_until_clear(
        &mut self,
        stops: &mut Stops<'_>,
        alarm: &mut watch::Receiver<Alarms>,
    ) -> Option<Ending> {
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
        None
    }
}
