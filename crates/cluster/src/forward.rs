//! Messages for other nodes' queues. A node that routes a message to queues of another
//! node hands it to that node's forwarder: one task per destination node sends its
//! deliveries over the node's connection in the order they were handed over (the
//! transport writes whatever is queued in one go, so a burst goes out in few writes, and
//! many deliveries are in flight at once); each answer settles its [`Forwarded`], on which
//! the publisher's confirm waits.
//!
//! A delivery's payload: `[vhost: u8 length, bytes][queue count: u16]([name: u8 length,
//! bytes])*[the message, as a queue's log stores it]`. Names are AMQP short strings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use wharf_core::cluster::{Forwarded, QueueAnswer, QueueRequest};
use wharf_core::message::Message;

use crate::messages::{Request, Response};
use crate::node::ClusterNode;

/// How long a delivery waits for its answer.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

struct Delivery {
    payload: Vec<u8>,
    forwarded: Arc<Forwarded>,
}

/// The forwarders of one node, by destination node name.
#[derive(Default)]
pub struct Forwarders {
    by_home: parking_lot::Mutex<HashMap<String, mpsc::UnboundedSender<Delivery>>>,
}

impl ClusterNode {
    /// Hands `message` to `queues` of `vhost` on the node named `home`; see [`Forwarded`].
    pub fn forward_message(
        self: &Arc<Self>,
        home: &str,
        vhost: &str,
        queues: &[&str],
        message: &Message,
    ) -> Arc<Forwarded> {
        let forwarded = Arc::new(Forwarded::default());
        let delivery = Delivery {
            payload: encode(vhost, queues, &message.encode_record(None)),
            forwarded: forwarded.clone(),
        };
        let mut by_home = self.forwarders.by_home.lock();
        let sender = by_home.entry(home.to_string()).or_insert_with(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(self.clone().run_forwarder(home.to_string(), receiver));
            sender
        });
        if let Err(refused) = sender.send(delivery) {
            refused.0.forwarded.settle(false);
        }
        forwarded
    }

    async fn run_forwarder(
        self: Arc<Self>,
        home: String,
        mut deliveries: mpsc::UnboundedReceiver<Delivery>,
    ) {
        while let Some(delivery) = deliveries.recv().await {
            let Some(address) = self.address_of(&home) else {
                tracing::debug!(node = home, "a message for a node this one does not know");
                delivery.forwarded.settle(false);
                continue;
            };
            match self.transport.deliver(address, &delivery.payload).await {
                Ok(answer) => {
                    tokio::spawn(async move {
                        let taken = matches!(
                            tokio::time::timeout(ANSWER_WAIT, answer).await,
                            Ok(Ok(Response::Delivered(true)))
                        );
                        delivery.forwarded.settle(taken);
                    });
                }
                Err(error) => {
                    tracing::debug!(node = home, %error, "a message not forwarded");
                    delivery.forwarded.settle(false);
                }
            }
        }
    }

    /// Asks the node named `home` about one of its queues; None when it cannot be
    /// reached (or answers nothing that reads).
    pub async fn ask_queue(
        &self,
        home: &str,
        vhost: &str,
        queue: &str,
        request: QueueRequest,
    ) -> Option<QueueAnswer> {
        let address = self.address_of(home)?;
        let request = Request::Queue {
            vhost: vhost.to_string(),
            queue: queue.to_string(),
            request,
        };
        match self.transport.request(address, &request, ANSWER_WAIT).await {
            Ok((_, Response::Queue(answer))) => Some(answer),
            Ok((_, other)) => {
                tracing::warn!(node = home, answer = ?other, "an answer of the wrong kind");
                None
            }
            Err(error) => {
                tracing::debug!(node = home, %error, "a queue's node not reached");
                None
            }
        }
    }

    /// Answers a request about one of this node's queues, off the runtime's threads (a
    /// delete commits through the cluster, and waits).
    pub(crate) async fn answer_queue(
        &self,
        vhost: String,
        queue: String,
        request: QueueRequest,
    ) -> Response {
        let applier = self.applier.clone();
        let answered = tokio::task::spawn_blocking(move || {
            applier.answer_queue_request(&vhost, &queue, request)
        })
        .await;
        Response::Queue(answered.unwrap_or_else(|error| QueueAnswer::Refused {
            kind: "INTERNAL_ERROR".to_string(),
            detail: format!("the request failed on its node: {error}"),
        }))
    }

    /// The cluster address of the member named `name`.
    fn address_of(&self, name: &str) -> Option<SocketAddr> {
        let id = self
            .names
            .lock()
            .iter()
            .find(|(_, known)| known.as_str() == name)
            .map(|(id, _)| *id)?;
        let metrics = self.raft().metrics().borrow().clone();
        let address = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|member| member.address.clone())?;
        address.parse().ok()
    }

    /// Takes a delivery another node sent: enqueued now, answered once held.
    pub(crate) fn take_delivery(
        &self,
        payload: Vec<u8>,
    ) -> impl std::future::Future<Output = Response> + Send + 'static {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        match decode(&payload) {
            Some((vhost, queues, record)) => self.applier.take_forwarded(
                vhost,
                &queues,
                record.to_vec(),
                Box::new(move |taken| {
                    let _ = sender.send(taken);
                }),
            ),
            None => {
                tracing::warn!("a delivery that does not read; refused");
                let _ = sender.send(false);
            }
        }
        async move { Response::Delivered(receiver.await.unwrap_or(false)) }
    }
}

fn encode(vhost: &str, queues: &[&str], record: &[u8]) -> Vec<u8> {
    let names: usize = queues.iter().map(|q| 1 + q.len()).sum();
    let mut out = Vec::with_capacity(1 + vhost.len() + 2 + names + record.len());
    put_short(&mut out, vhost);
    out.extend_from_slice(&(queues.len() as u16).to_be_bytes());
    for queue in queues {
        put_short(&mut out, queue);
    }
    out.extend_from_slice(record);
    out
}

/// Names longer than a short string are cut (AMQP's names never are).
fn put_short(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

fn decode(payload: &[u8]) -> Option<(&str, Vec<&str>, &[u8])> {
    let (vhost, mut rest) = take_short(payload)?;
    let count = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
    rest = &rest[2..];
    let mut queues = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (queue, after) = take_short(rest)?;
        queues.push(queue);
        rest = after;
    }
    Some((vhost, queues, rest))
}

fn take_short(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let length = *bytes.first()? as usize;
    let text = std::str::from_utf8(bytes.get(1..1 + length)?).ok()?;
    Some((text, &bytes[1 + length..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_reads_back_and_a_cut_or_bad_one_is_refused() {
        let payload = encode("/", &["a", "queue b"], b"\x01record");
        assert_eq!(
            decode(&payload),
            Some(("/", vec!["a", "queue b"], &b"\x01record"[..]))
        );
        // Every cut before the record is refused, never misread; none panics.
        let head = payload.len() - b"\x01record".len();
        for cut in 0..head {
            assert_eq!(decode(&payload[..cut]), None, "cut at {cut}");
        }
        let mut bad = payload.clone();
        bad[1] = 0xff; // not UTF-8
        assert_eq!(decode(&bad), None);
        let mut many = payload;
        many[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(decode(&many), None);
    }
}
