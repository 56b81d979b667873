//! Consuming across nodes, the cluster's side (the broker's is
//! `wharf_core::remote_consumers`): a channel's basic.consume on another node's queue is a
//! request to that node; the deliveries it hands the consumer are pushed back, a batch at
//! a time, in order, by one task per destination node (as forwarded messages go the
//! other way); the consumer's acks, nacks, rejects, credit and cancel go to the queue's
//! node in order, by one task per node, many in flight. A node whose connection to this
//! one ends is gone for this one: the consumers it held here are released (their
//! deliveries requeued) and this node's consumers on its queues are cancelled.
//!
//! A push batch's payload: `[count: u32]` and, for each item, `[kind: u8][key: u64]`;
//! a delivery (kind 0) goes on with `[offset: u64][redelivered: u8][record length:
//! u32][the message, as a queue's log stores it]`; a cancellation (kind 1) ends there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use wharf_core::cluster::{ConsumeRequest, ConsumerControl, Pushed};
use wharf_core::message::Message;

use crate::handshake::Introduction;
use crate::messages::{Request, Response};
use crate::node::ClusterNode;
use crate::wire::FrameKind;

/// How long a consume request waits for the queue's node.
const CONSUME_WAIT: Duration = Duration::from_secs(10);
/// The most items one push batch carries.
const PUSH_BATCH_MAX: usize = 1024;
const PUSH_BATCH_BYTES: usize = 1024 * 1024;

/// The push and control tasks of one node, by the other node's name.
#[derive(Default)]
pub struct ConsumerLinks {
    pushes: parking_lot::Mutex<HashMap<String, mpsc::UnboundedSender<Pushed>>>,
    controls: parking_lot::Mutex<HashMap<String, mpsc::UnboundedSender<ConsumerControl>>>,
}

impl ClusterNode {
    /// Registers a consumer on the node named `home`; see `Cluster::consume`.
    pub async fn consume_on(
        &self,
        home: &str,
        request: ConsumeRequest,
    ) -> Result<(), (String, String)> {
        let unreachable = || {
            let (queue, vhost) = (request.queue.clone(), request.vhost.clone());
            let error = wharf_core::cluster::home_down(&queue, &vhost, home);
            (error.kind.name().to_string(), error.detail)
        };
        if home == self.name() {
            // A quorum queue this node leads: its consumer registered here.
            let applier = self.applier.clone();
            let peer = home.to_string();
            return tokio::task::spawn_blocking(move || applier.serve_consume(&peer, request))
                .await
                .unwrap_or_else(|error| Err(("INTERNAL_ERROR".to_string(), error.to_string())));
        }
        let Some(address) = self.address_of(home) else {
            return Err(unreachable());
        };
        match self
            .transport
            .request(address, &Request::Consume(request.clone()), CONSUME_WAIT)
            .await
        {
            Ok((_, Response::Consumed(answer))) => answer,
            Ok((_, other)) => Err((
                "INTERNAL_ERROR".to_string(),
                format!("node {home} answered {other:?}"),
            )),
            Err(_) => Err(unreachable()),
        }
    }

    /// Sends a consumer control to `home`, in order; see `Cluster::control`.
    pub fn send_control(self: &Arc<Self>, home: &str, control: ConsumerControl) {
        let mut controls = self.consumer_links.controls.lock();
        let sender = controls.entry(home.to_string()).or_insert_with(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(self.clone().run_controls(home.to_string(), receiver));
            sender
        });
        let _ = sender.send(control);
    }

    async fn run_controls(
        self: Arc<Self>,
        home: String,
        mut controls: mpsc::UnboundedReceiver<ConsumerControl>,
    ) {
        while let Some(control) = controls.recv().await {
            let key = control_key(&control);
            if home == self.name() {
                // This node's own consumer of a quorum queue it leads.
                if !self.applier.serve_control(&home, control) {
                    self.applier.cancel_subscriptions(&home, Some(&[key]));
                }
                continue;
            }
            let sent = match self.address_of(&home) {
                Some(address) => self
                    .transport
                    .send_request(address, &Request::Control(control))
                    .await
                    .ok(),
                None => None,
            };
            let Some(answer) = sent else {
                // The queue's node cannot be reached: its consumers here are cancelled.
                self.applier.cancel_subscriptions(&home, None);
                continue;
            };
            let node = self.clone();
            let home = home.clone();
            tokio::spawn(async move {
                match answer.await {
                    Ok(Response::Controlled(true)) => {}
                    // Released there meanwhile: cancelled here too.
                    Ok(_) => node.applier.cancel_subscriptions(&home, Some(&[key])),
                    Err(_) => node.applier.cancel_subscriptions(&home, None),
                }
            });
        }
    }

    /// Pushes a delivery to the node `peer`, in order; see `Cluster::push`.
    pub fn send_push(self: &Arc<Self>, peer: &str, pushed: Pushed) {
        let mut pushes = self.consumer_links.pushes.lock();
        let sender = pushes.entry(peer.to_string()).or_insert_with(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(self.clone().run_pushes(peer.to_string(), receiver));
            sender
        });
        let _ = sender.send(pushed);
    }

    async fn run_pushes(
        self: Arc<Self>,
        peer: String,
        mut pushes: mpsc::UnboundedReceiver<Pushed>,
    ) {
        while let Some(first) = pushes.recv().await {
            let mut bytes = pushed_bytes(&first);
            let mut batch = vec![first];
            while batch.len() < PUSH_BATCH_MAX && bytes < PUSH_BATCH_BYTES {
                match pushes.try_recv() {
                    Ok(next) => {
                        bytes += pushed_bytes(&next);
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            if peer == self.name() {
                // Deliveries of a quorum queue this node leads to this node's consumers.
                let unknown = self.applier.take_pushed(&peer, batch);
                if !unknown.is_empty() {
                    self.applier.release_peer(&peer, Some(&unknown));
                }
                continue;
            }
            let sent = match self.address_of(&peer) {
                Some(address) => self
                    .transport
                    .send(address, FrameKind::Push, &encode_pushes(&batch))
                    .await
                    .ok(),
                None => None,
            };
            let Some(answer) = sent else {
                // The consumers' node cannot be reached: what they held goes back.
                tracing::debug!(node = peer, "deliveries for a node's consumers not pushed");
                self.applier.release_peer(&peer, None);
                continue;
            };
            let node = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                match answer.await {
                    Ok(Response::Pushed(unknown)) if unknown.is_empty() => {}
                    Ok(Response::Pushed(unknown)) => {
                        node.applier.release_peer(&peer, Some(&unknown))
                    }
                    _ => node.applier.release_peer(&peer, None),
                }
            });
        }
    }

    /// Takes a batch of pushed deliveries from the node `from`.
    pub(crate) fn take_pushes(&self, from: &Introduction, payload: &[u8]) -> Response {
        match decode_pushes(payload) {
            Some(pushed) => Response::Pushed(self.applier.take_pushed(&from.name, pushed)),
            None => {
                tracing::warn!(peer = %from.name, "pushed deliveries that do not read; refused");
                Response::Pushed(Vec::new())
            }
        }
    }
}

fn control_key(control: &ConsumerControl) -> u64 {
    match control {
        ConsumerControl::Ack { key, .. }
        | ConsumerControl::Requeue { key, .. }
        | ConsumerControl::Reject { key, .. }
        | ConsumerControl::Credit { key, .. }
        | ConsumerControl::Cancel { key } => *key,
    }
}

fn pushed_bytes(pushed: &Pushed) -> usize {
    match pushed {
        Pushed::Delivery { message, .. } => 64 + message.body.len(),
        Pushed::Cancelled { .. } => 9,
    }
}

fn encode_pushes(batch: &[Pushed]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + batch.iter().map(pushed_bytes).sum::<usize>());
    out.extend_from_slice(&(batch.len() as u32).to_be_bytes());
    for pushed in batch {
        match pushed {
            Pushed::Delivery {
                key,
                offset,
                redelivered,
                message,
            } => {
                out.push(0);
                out.extend_from_slice(&key.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.push(u8::from(*redelivered));
                let head = message.encode_record_head(None);
                out.extend_from_slice(&((head.len() + message.body.len()) as u32).to_be_bytes());
                out.extend_from_slice(&head);
                out.extend_from_slice(&message.body);
            }
            Pushed::Cancelled { key } => {
                out.push(1);
                out.extend_from_slice(&key.to_be_bytes());
            }
        }
    }
    out
}

fn decode_pushes(payload: &[u8]) -> Option<Vec<Pushed>> {
    let take_u64 = |bytes: &[u8]| -> Option<u64> {
        Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
    };
    let count = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let mut rest = &payload[4..];
    // Each item takes at least 9 bytes: a count that cannot fit is refused first.
    if count > rest.len() / 9 {
        return None;
    }
    let mut pushed = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = *rest.first()?;
        let key = take_u64(rest.get(1..)?)?;
        rest = &rest[9..];
        match kind {
            0 => {
                let offset = take_u64(rest)?;
                let redelivered = *rest.get(8)? != 0;
                let length = u32::from_be_bytes(rest.get(9..13)?.try_into().ok()?) as usize;
                let record = rest.get(13..13 + length)?;
                rest = &rest[13 + length..];
                let (message, _) = Message::decode_record(record.to_vec())?;
                pushed.push(Pushed::Delivery {
                    key,
                    offset,
                    redelivered,
                    message,
                });
            }
            1 => pushed.push(Pushed::Cancelled { key }),
            _ => return None,
        }
    }
    rest.is_empty().then_some(pushed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use wharf_amqp::EncodedProperties;

    #[test]
    fn pushes_read_back_and_a_cut_or_bad_batch_is_refused() {
        let message = Message {
            exchange: "x".into(),
            routing_key: "k".into(),
            properties: EncodedProperties::parse(Bytes::from_static(&[0, 0])).unwrap(),
            body: Bytes::from_static(b"body"),
        };
        let batch = vec![
            Pushed::Delivery {
                key: 7,
                offset: 42,
                redelivered: true,
                message: message.clone(),
            },
            Pushed::Cancelled { key: 9 },
        ];
        let payload = encode_pushes(&batch);
        let read = decode_pushes(&payload).expect("reads back");
        match &read[..] {
            [Pushed::Delivery {
                key: 7,
                offset: 42,
                redelivered: true,
                message: got,
            }, Pushed::Cancelled { key: 9 }] => assert_eq!(got.body, message.body),
            other => panic!("{other:?}"),
        }
        for cut in 0..payload.len() {
            assert!(decode_pushes(&payload[..cut]).is_none(), "cut at {cut}");
        }
        let mut unknown_kind = payload.clone();
        unknown_kind[4] = 5;
        assert!(decode_pushes(&unknown_kind).is_none());
        let mut many = payload;
        many[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_pushes(&many).is_none());
    }
}
