//! Messages for other nodes' queues. A node that routes a message to queues of another
//! node hands it to that node's forwarder: one task per destination node, which sends
//! what was handed to it, in that order, a batch at a time (everything waiting, up to
//! [`BATCH_MAX`] deliveries or [`BATCH_BYTES`]) in one frame over the node's connection,
//! with many batches in flight at once. The receiver takes a batch's deliveries in order
//! and answers the batch once each is held (see `Broker::take_forwarded`); the answer
//! settles each delivery's [`Forwarded`], on which its publisher's confirm waits.
//!
//! A batch's payload: `[count: u32]` and, for each delivery, `[vhost: u8 length, bytes]
//! [queue count: u16]([name: u8 length, bytes])*[record length: u32][the message, as a
//! queue's log stores it]`. Names are AMQP short strings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use wharf_amqp::ByteString;
use wharf_core::cluster::{Forwarded, QueueAnswer, QueueRequest};
use wharf_core::message::Message;

use crate::messages::{Request, Response};
use crate::node::ClusterNode;

/// How long a delivery waits for its answer.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// The most deliveries one batch carries.
pub const BATCH_MAX: usize = 1024;
/// A batch stops growing past this many bytes.
pub const BATCH_BYTES: usize = 1024 * 1024;

struct Delivery {
    vhost: ByteString,
    queues: Vec<ByteString>,
    message: Message,
    forwarded: Arc<Forwarded>,
}

/// The forwarders of one node, by destination node name.
#[derive(Default)]
pub struct Forwarders {
    by_home: parking_lot::Mutex<HashMap<String, mpsc::UnboundedSender<Delivery>>>,
}

impl ClusterNode {
    /// Hands `message` to `queues` of `vhost` on the node named `home`; its answer settles
    /// `forwarded`.
    /// Must be called within the cluster's runtime (it may start the forwarder).
    pub fn forward_message(
        self: &Arc<Self>,
        home: &str,
        vhost: &ByteString,
        queues: Vec<ByteString>,
        message: &Message,
        forwarded: Arc<Forwarded>,
    ) {
        let delivery = Delivery {
            vhost: vhost.clone(),
            queues,
            message: message.clone(),
            forwarded,
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
    }

    async fn run_forwarder(
        self: Arc<Self>,
        home: String,
        mut deliveries: mpsc::UnboundedReceiver<Delivery>,
    ) {
        while let Some(first) = deliveries.recv().await {
            let mut bytes = first.message.body.len();
            let mut batch = vec![first];
            while batch.len() < BATCH_MAX && bytes < BATCH_BYTES {
                match deliveries.try_recv() {
                    Ok(next) => {
                        bytes += next.message.body.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            if home == self.name() {
                // This node's own (a quorum queue it leads): taken here, in order, as the
                // other node would.
                for delivery in batch {
                    let queues: Vec<&str> = delivery.queues.iter().map(|q| &**q).collect();
                    let forwarded = delivery.forwarded.clone();
                    self.applier.take_forwarded_message(
                        &delivery.vhost,
                        &queues,
                        delivery.message.clone(),
                        Box::new(move |taken| forwarded.settle(taken)),
                    );
                }
                continue;
            }
            let Some(address) = self.address_of(&home) else {
                tracing::debug!(node = home, "messages for a node this one does not know");
                settle_all(&batch, &[]);
                continue;
            };
            match self.transport.deliver(address, &encode_batch(&batch)).await {
                Ok(answer) => {
                    let transport = self.transport.clone();
                    tokio::spawn(async move {
                        let taken = await_taken(answer, &transport, address).await;
                        settle_all(&batch, &taken);
                    });
                }
                Err(error) => {
                    tracing::debug!(node = home, %error, "messages not forwarded");
                    settle_all(&batch, &[]);
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
        if home == self.name() {
            // A quorum queue this node leads (or led): answered here.
            let answered = self
                .answer_queue(
                    home.to_string(),
                    vhost.to_string(),
                    queue.to_string(),
                    request,
                )
                .await;
            return match answered {
                Response::Queue(answer) => Some(answer),
                _ => None,
            };
        }
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

    /// Answers node `peer`'s request about one of this node's queues, off the runtime's
    /// threads (a delete commits through the cluster, and waits).
    pub(crate) async fn answer_queue(
        &self,
        peer: String,
        vhost: String,
        queue: String,
        request: QueueRequest,
    ) -> Response {
        let applier = self.applier.clone();
        let answered = tokio::task::spawn_blocking(move || {
            applier.answer_queue_request(&peer, &vhost, &queue, request)
        })
        .await;
        Response::Queue(answered.unwrap_or_else(|error| QueueAnswer::Refused {
            kind: "INTERNAL_ERROR".to_string(),
            detail: format!("the request failed on its node: {error}"),
        }))
    }

    /// The cluster address of the member named `name`.
    pub(crate) fn address_of(&self, name: &str) -> Option<SocketAddr> {
        self.member_named(name)?.1.address.parse().ok()
    }

    /// Takes a batch of deliveries another node sent: each enqueued now, in order; the
    /// batch answered once each is held. A batch that does not read is refused whole.
    pub(crate) fn take_delivery(
        &self,
        payload: Vec<u8>,
    ) -> impl std::future::Future<Output = Response> + Send + 'static {
        let (sender, receiver) = oneshot::channel();
        match decode_batch(&payload) {
            Some(deliveries) if !deliveries.is_empty() => {
                let answers = Arc::new(BatchAnswers {
                    left: AtomicUsize::new(deliveries.len()),
                    taken: parking_lot::Mutex::new(vec![false; deliveries.len()]),
                    sender: parking_lot::Mutex::new(Some(sender)),
                });
                for (i, (vhost, queues, record)) in deliveries.into_iter().enumerate() {
                    let answers = answers.clone();
                    self.applier.take_forwarded(
                        vhost,
                        &queues,
                        record.to_vec(),
                        Box::new(move |taken| answers.answer(i, taken)),
                    );
                }
            }
            Some(_) => {
                let _ = sender.send(Vec::new());
            }
            None => {
                tracing::warn!("a batch of deliveries that does not read; refused");
                let _ = sender.send(Vec::new());
            }
        }
        async move { Response::Delivered(receiver.await.unwrap_or_default()) }
    }
}

/// What the node at `address` answered a batch: for each delivery, whether it took it.
/// Given up (nothing taken, as far as the publishers know) after [`ANSWER_WAIT`], or
/// sooner once the node went silent: its queues' publishers are nacked and republish
/// (to a quorum queue's new leader) rather than wait for the connection to time out.
async fn await_taken(
    answer: oneshot::Receiver<Response>,
    transport: &crate::transport::Transport,
    address: SocketAddr,
) -> Vec<bool> {
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    tokio::pin!(answer);
    loop {
        tokio::select! {
            answered = &mut answer => {
                return match answered {
                    Ok(Response::Delivered(taken)) => taken,
                    _ => Vec::new(),
                };
            }
            _ = tokio::time::sleep(SILENCE_CHECK) => {
                if tokio::time::Instant::now() >= deadline || !transport.heard_from(address) {
                    return Vec::new();
                }
            }
        }
    }
}

/// How often a forward waiting for its answer looks whether the node went silent.
const SILENCE_CHECK: Duration = Duration::from_millis(500);

/// What a batch's deliveries answered, sent once the last answers.
struct BatchAnswers {
    left: AtomicUsize,
    taken: parking_lot::Mutex<Vec<bool>>,
    sender: parking_lot::Mutex<Option<oneshot::Sender<Vec<bool>>>>,
}

impl BatchAnswers {
    fn answer(&self, i: usize, taken: bool) {
        self.taken.lock()[i] = taken;
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(sender) = self.sender.lock().take() {
                let _ = sender.send(std::mem::take(&mut *self.taken.lock()));
            }
        }
    }
}

/// Settles each delivery of a batch as `taken` says (a delivery it does not cover was
/// not taken).
fn settle_all(batch: &[Delivery], taken: &[bool]) {
    for (i, delivery) in batch.iter().enumerate() {
        delivery
            .forwarded
            .settle(taken.get(i).copied().unwrap_or(false));
    }
}

fn encode_batch(batch: &[Delivery]) -> Vec<u8> {
    let size: usize = batch
        .iter()
        .map(|d| 64 + d.message.body.len() + d.message.properties.as_bytes().len())
        .sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(batch.len() as u32).to_be_bytes());
    for delivery in batch {
        put_short(&mut out, &delivery.vhost);
        out.extend_from_slice(&(delivery.queues.len() as u16).to_be_bytes());
        for queue in &delivery.queues {
            put_short(&mut out, queue);
        }
        let head = delivery.message.encode_record_head(None);
        let length = head.len() + delivery.message.body.len();
        out.extend_from_slice(&(length as u32).to_be_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(&delivery.message.body);
    }
    out
}

/// Names longer than a short string are cut (AMQP's names never are).
fn put_short(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

type Decoded<'a> = (&'a str, Vec<&'a str>, &'a [u8]);

fn decode_batch(payload: &[u8]) -> Option<Vec<Decoded<'_>>> {
    let count = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let mut rest = &payload[4..];
    // Each delivery takes at least 7 bytes: a count that cannot fit is refused before
    // anything is allocated for it.
    if count > rest.len() / 7 {
        return None;
    }
    let mut deliveries = Vec::with_capacity(count);
    for _ in 0..count {
        let (vhost, after) = take_short(rest)?;
        let queue_count = u16::from_be_bytes(after.get(..2)?.try_into().ok()?);
        rest = &after[2..];
        let mut queues = Vec::with_capacity(queue_count as usize);
        for _ in 0..queue_count {
            let (queue, after) = take_short(rest)?;
            queues.push(queue);
            rest = after;
        }
        let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let record = rest.get(4..4 + length)?;
        rest = &rest[4 + length..];
        deliveries.push((vhost, queues, record));
    }
    rest.is_empty().then_some(deliveries)
}

fn take_short(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let length = *bytes.first()? as usize;
    let text = std::str::from_utf8(bytes.get(1..1 + length)?).ok()?;
    Some((text, &bytes[1 + length..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use wharf_amqp::EncodedProperties;

    fn delivery(vhost: &str, queues: &[&str], body: &'static [u8]) -> Delivery {
        Delivery {
            vhost: vhost.into(),
            queues: queues.iter().map(|q| ByteString::from(*q)).collect(),
            message: Message {
                exchange: "x".into(),
                routing_key: "k".into(),
                properties: EncodedProperties::parse(Bytes::from_static(&[0, 0])).unwrap(),
                body: Bytes::from_static(body),
            },
            forwarded: Arc::default(),
        }
    }

    #[test]
    fn a_batch_reads_back_and_a_cut_or_bad_one_is_refused() {
        let batch = [
            delivery("/", &["a", "queue b"], b"first"),
            delivery("v", &[], b""),
        ];
        let payload = encode_batch(&batch);
        let decoded = decode_batch(&payload).expect("reads back");
        assert_eq!(decoded.len(), 2);
        assert_eq!(
            (decoded[0].0, decoded[0].1.clone()),
            ("/", vec!["a", "queue b"])
        );
        let (message, _) = Message::decode_record(decoded[0].2.to_vec()).unwrap();
        assert_eq!(message.body, Bytes::from_static(b"first"));
        assert_eq!((decoded[1].0, decoded[1].1.len()), ("v", 0));
        // Every cut is refused, never misread; none panics.
        for cut in 0..payload.len() {
            assert!(decode_batch(&payload[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert!(decode_batch(&longer).is_none(), "trailing bytes");
        let mut bad = payload.clone();
        bad[5] = 0xff; // the vhost's name, not UTF-8
        assert!(decode_batch(&bad).is_none());
        let mut many = payload;
        many[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_batch(&many).is_none());
    }

    #[test]
    fn a_batch_settles_each_delivery_and_what_it_does_not_cover_as_not_taken() {
        use wharf_core::flusher::SyncTarget;
        let batch = [
            delivery("/", &["a"], b"1"),
            delivery("/", &["a"], b"2"),
            delivery("/", &["a"], b"3"),
        ];
        settle_all(&batch, &[true, false]);
        let settled: Vec<bool> = batch.iter().map(|d| d.forwarded.sync_appends()).collect();
        assert_eq!(settled, vec![true, false, false]);
    }
}
