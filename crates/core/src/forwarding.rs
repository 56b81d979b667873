//! What other cluster nodes ask of this node's queues: messages they routed to them
//! (enqueued here as a publish here would enqueue them, and answered once they are held
//! as a publish's confirm would be: a persistent message on a durable queue, once
//! fsynced), and their clients' operations on them (counts, purge, delete, get).

use std::sync::Arc;

use base64::Engine;

use crate::broker::Broker;
use crate::cluster::{GotMessage, QueueAnswer, QueueRequest};
use crate::error::{Error, ErrorKind, Result};
use crate::flusher::SyncDone;
use crate::message::Message;
use crate::queue::GetResult;
use crate::vhost::Routes;

impl Broker {
    /// Enqueues the message `record` holds (as a queue's log stores one) on `queues` of
    /// `vhost`, and calls `done` with whether they took it. A queue deleted meanwhile is
    /// passed over, as if the delete came just after (RabbitMQ drops a message to a
    /// queue that is gone); a queue that refuses it (full, reject-publish) answers false.
    pub fn take_forwarded(&self, vhost: &str, queues: &[&str], record: Vec<u8>, done: SyncDone) {
        let Some((message, _)) = Message::decode_record(record) else {
            tracing::warn!("a forwarded message that does not read; refused");
            return done(false);
        };
        self.take_forwarded_message(vhost, queues, message, done);
    }

    /// [`Broker::take_forwarded`] of a message already read (this node's own, handed
    /// over without the wire: a quorum queue it leads).
    pub fn take_forwarded_message(
        &self,
        vhost: &str,
        queues: &[&str],
        message: Message,
        done: SyncDone,
    ) {
        let Some(vhost) = self.vhost(vhost) else {
            return done(true);
        };
        let message = Arc::new(message);
        let mut routes = Routes::default();
        let mut quorum = Vec::new();
        for name in queues {
            if name.starts_with(crate::direct_reply::REPLY_PREFIX) {
                // A reply for a channel of this node (dropped if it is gone, as here).
                vhost.replies.deliver(name, &message);
            } else if let Ok(queue) = vhost.queue(name) {
                routes.queues.push(queue);
            } else if let Some(queue) = vhost.quorum_queue(name) {
                quorum.push(queue);
            }
        }
        // Taken once every queue took it: the quorum queues' groups committed it, and
        // this node's queues hold it (synced, for a persistent message).
        let all = AllOf::new(quorum.len() + 1, done);
        for queue in quorum {
            let all = all.clone();
            queue.publish(message.clone(), Box::new(move |taken| all.answer(taken)));
        }
        if routes.queues.is_empty() {
            return all.answer(true);
        }
        let published = vhost.enqueue(&mut routes, message);
        if published.refused {
            return all.answer(false);
        }
        match (self.flusher(), published.appended_to.is_empty()) {
            (Some(flusher), false) => flusher.after_sync(
                published.appended_to,
                Box::new(move |taken| all.answer(taken)),
            ),
            _ => all.answer(true),
        }
    }
}

/// Answers `done` once `count` answers came: true if each was.
struct AllOf {
    left: std::sync::atomic::AtomicUsize,
    taken: std::sync::atomic::AtomicBool,
    done: parking_lot::Mutex<Option<SyncDone>>,
}

impl AllOf {
    fn new(count: usize, done: SyncDone) -> Arc<AllOf> {
        Arc::new(AllOf {
            left: std::sync::atomic::AtomicUsize::new(count),
            taken: std::sync::atomic::AtomicBool::new(true),
            done: parking_lot::Mutex::new(Some(done)),
        })
    }

    fn answer(&self, taken: bool) {
        use std::sync::atomic::Ordering;
        if !taken {
            self.taken.store(false, Ordering::Release);
        }
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(done) = self.done.lock().take() {
                done(self.taken.load(Ordering::Acquire));
            }
        }
    }
}

impl Broker {
    /// Answers node `peer`'s request about a queue of this node's.
    pub fn answer_queue_request(
        &self,
        peer: &str,
        vhost: &str,
        name: &str,
        request: QueueRequest,
    ) -> QueueAnswer {
        match self.queue_request(peer, vhost, name, request) {
            Ok(answer) => answer,
            Err(error) => QueueAnswer::Refused {
                kind: error.kind.name().to_string(),
                detail: error.detail,
            },
        }
    }

    fn queue_request(
        &self,
        peer: &str,
        vhost: &str,
        name: &str,
        request: QueueRequest,
    ) -> Result<QueueAnswer> {
        let vhost = self.vhost(vhost).ok_or_else(|| {
            Error::not_found(format_args!("Virtual host '{vhost}' does not exist"))
        })?;
        Ok(match request {
            QueueRequest::Delete {
                if_unused,
                if_empty,
            } if vhost.quorum_queue(name).is_some() => {
                // Checked by the leader, which has the cluster delete it.
                let queue = vhost.served_queue(name)?;
                queue.check_deletable(if_unused, if_empty)?;
                let count = queue.message_count();
                let cluster = self
                    .cluster
                    .get()
                    .ok_or_else(|| Error::not_found("this node is not a cluster member"))?;
                cluster.commit(wharf_store::Change::DeleteQueue {
                    vhost: vhost.name.to_string(),
                    name: name.to_string(),
                })?;
                QueueAnswer::Count(count)
            }
            QueueRequest::Delete {
                if_unused,
                if_empty,
            } => {
                // Gone meanwhile: deleted, as far as the asker is concerned.
                match vhost.delete_queue_as_administrator(name, if_unused, if_empty) {
                    Err(error) if error.kind == ErrorKind::NotFound => QueueAnswer::Count(0),
                    other => QueueAnswer::Count(other?),
                }
            }
            QueueRequest::Counts if name.starts_with(crate::direct_reply::REPLY_PREFIX) => {
                // A reply name: one consumer while its channel has it.
                match vhost.replies.exists(name) {
                    true => QueueAnswer::Counts {
                        messages: 0,
                        consumers: 1,
                    },
                    false => {
                        return Err(Error::not_found(format_args!(
                            "no queue '{name}' in vhost '{}'",
                            vhost.name
                        )))
                    }
                }
            }
            QueueRequest::Counts => {
                let queue = vhost.served_queue(name)?;
                // A declare, passive or not, counts as a use for x-expires.
                queue.touch();
                QueueAnswer::Counts {
                    messages: queue.message_count(),
                    consumers: queue.consumer_count(),
                }
            }
            QueueRequest::Purge => QueueAnswer::Count(vhost.served_queue(name)?.purge()),
            QueueRequest::Get { ack_key } => {
                let queue = vhost.served_queue(name)?;
                let got = match ack_key {
                    None => queue.get(true),
                    Some(key) => self.get_for_peer(peer, key, &queue)?,
                };
                QueueAnswer::Got(got.map(got_message))
            }
            QueueRequest::Inspect { count, then } => {
                let queue = vhost.served_queue(name)?;
                let count = count.map(|count| count as usize);
                QueueAnswer::Inspected(
                    queue
                        .take_and_settle(count, then)
                        .into_iter()
                        .map(got_message)
                        .collect(),
                )
            }
        })
    }
}

/// A message taken from a queue of this node, as the asking node gets it.
fn got_message(got: GetResult) -> GotMessage {
    GotMessage {
        record: base64::engine::general_purpose::STANDARD.encode(got.message.encode_record(None)),
        offset: got.offset,
        redelivered: got.redelivered,
        message_count: got.message_count,
    }
}
