//! Dead-lettering, as RabbitMQ does it: a message that leaves a queue without being
//! consumed (rejected without requeue, expired, dropped at the length limit, past its
//! delivery limit) is republished to the queue's dead-letter exchange, with the queue's
//! dead-letter routing key or its own routing keys, and an `x-death` header recording why.
//!
//! Queues gather dead letters under their lock and hand them here once it is released: routing
//! reaches other queues, whose locks must never be taken while holding one's own. A
//! dead letter can make another (a drop-head queue full of them), so the dead letters raised
//! while routing some are queued on the thread and routed in turn, not recursively.
//!
//! As in RabbitMQ's classic queues, dead-lettering is at most once: the copy is enqueued
//! without waiting for its log to be synced.

use std::cell::RefCell;
use std::sync::Arc;

use wharf_amqp::{FieldTable, FieldValue};

use crate::exchange::Exchange;
use crate::message::Message;
use crate::queue::dead_letter::{DeadLetter, DeathReason};
use crate::queue::Queue;
use crate::vhost::routing::Routes;
use crate::vhost::VHost;

/// A dead-lettered message, ready to route.
struct Outgoing {
    vhost: Arc<VHost>,
    exchange: Arc<Exchange>,
    message: Arc<Message>,
    /// Routing to a queue already in its `x-death` history is a cycle unless a rejection
    /// broke it; rejections never are.
    reason: DeathReason,
}

thread_local! {
    /// Dead letters waiting to be routed on this thread, while one is being routed.
    static WAITING: RefCell<Option<Vec<Outgoing>>> = const { RefCell::new(None) };
}

/// Routes `letters`, which left `source`, through its dead-letter exchange. A missing
/// exchange drops them, as in RabbitMQ.
pub(crate) fn publish(vhost: &Arc<VHost>, source: &Queue, letters: Vec<DeadLetter>) {
    let now_s = crate::timer::now_ms() / 1000;
    let mut outgoing: Vec<Outgoing> = letters
        .into_iter()
        .filter_map(|letter| {
            let Ok(exchange) = vhost.exchange(&letter.exchange) else {
                tracing::debug!(queue = %source.name, exchange = %letter.exchange, "dead-letter exchange not found: message dropped");
                return None;
            };
            Some(Outgoing {
                vhost: vhost.clone(),
                exchange,
                message: Arc::new(dead_lettered(source, &letter, now_s)),
                reason: letter.reason,
            })
        })
        .collect();
    let nested = WAITING.with(|waiting| match &mut *waiting.borrow_mut() {
        Some(queued) => {
            queued.append(&mut outgoing);
            true
        }
        slot @ None => {
            *slot = Some(Vec::new());
            false
        }
    });
    if nested {
        return;
    }
    let mut routes = Routes::default();
    loop {
        for letter in outgoing.drain(..) {
            route(&letter, &mut routes);
        }
        let more = WAITING.with(|waiting| {
            let mut waiting = waiting.borrow_mut();
            let queued = waiting.as_mut().expect("set above");
            if queued.is_empty() {
                *waiting = None;
                false
            } else {
                std::mem::swap(queued, &mut outgoing);
                true
            }
        });
        if !more {
            return;
        }
    }
}

fn route(letter: &Outgoing, routes: &mut Routes) {
    letter
        .vhost
        .route(&letter.exchange, &letter.message, routes);
    if letter.reason != DeathReason::Rejected {
        let deaths = deaths(&letter.message);
        let kept = |name: &str| {
            let cycle = is_cycle(name, &deaths);
            if cycle {
                tracing::warn!(
                    queue = %name,
                    "dead-letter cycle without a rejection: message dropped"
                );
            }
            !cycle
        };
        routes.queues.retain(|queue| kept(&queue.name));
        routes.remote.retain(|queue| kept(&queue.name));
    }
    // At most once: not synced, and refused by a full reject-publish queue or a queue
    // being deleted is gone, as in RabbitMQ.
    let _ = letter.vhost.enqueue(routes, letter.message.clone());
}

/// The `x-death` entries of a message, most recent first.
fn deaths(message: &Message) -> Vec<FieldTable> {
    let headers = message.properties.decode().ok().and_then(|p| p.headers);
    match headers.as_ref().and_then(|h| h.get(X_DEATH)) {
        Some(FieldValue::Array(entries)) => entries
            .iter()
            .filter_map(|e| match e {
                FieldValue::Table(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// RabbitMQ's rule: routing to `queue` is a cycle if the message already died in
/// `queue`, and neither that death nor any since was a rejection.
fn is_cycle(queue: &str, deaths: &[FieldTable]) -> bool {
    let Some(at) = deaths
        .iter()
        .position(|d| d.get("queue").and_then(FieldValue::as_str) == Some(queue))
    else {
        return false;
    };
    deaths[..=at]
        .iter()
        .all(|d| d.get("reason").and_then(FieldValue::as_str) != Some("rejected"))
}

const X_DEATH: &str = "x-death";

/// The message as its dead-letter exchange receives it: published there, with the queue's
/// dead-letter routing key or its own, its `x-death` history updated, its `expiration`
/// removed (kept in the history as `original-expiration`) so it does not expire again.
fn dead_lettered(source: &Queue, letter: &DeadLetter, now_s: u64) -> Message {
    let message = &letter.message;
    // Properties were checked on publish; ones that do not decode keep none but headers.
    let mut properties = message.properties.decode().unwrap_or_default();
    let mut headers = properties.headers.take().unwrap_or_default();
    // The keys it was published with: its routing key, then any CC keys.
    let mut routing_keys = vec![FieldValue::LongStr(message.routing_key.as_bytes().clone())];
    if let Some(FieldValue::Array(cc)) = headers.get("CC") {
        routing_keys.extend(cc.iter().filter(|k| k.as_str().is_some()).cloned());
    }
    let mut entry = FieldTable::new();
    entry.insert("count", FieldValue::I64(1));
    entry.insert("reason", long_string(letter.reason.as_str()));
    entry.insert("queue", long_string(&source.name));
    entry.insert("time", FieldValue::Timestamp(now_s));
    entry.insert("exchange", long_string(&message.exchange));
    entry.insert("routing-keys", FieldValue::Array(routing_keys));
    if let Some(expiration) = properties.expiration.take() {
        entry.insert("original-expiration", long_string(&expiration));
    }
    add_death(
        &mut headers,
        entry,
        letter.reason,
        &source.name,
        &message.exchange,
    );
    let routing_key = match &letter.routing_key {
        Some(key) => {
            // A fixed key replaces the message's keys: its CC keys go too.
            headers.remove("CC");
            key.clone()
        }
        None => message.routing_key.clone(),
    };
    properties.headers = Some(headers);
    Message {
        exchange: letter.exchange.clone(),
        routing_key,
        properties: properties.into(),
        body: message.body.clone(),
    }
}

/// Records a death in `headers` as RabbitMQ 3.10 writes it. The first death also sets
/// `x-first-death-*`, and its entry keeps RabbitMQ's field order (count, reason, queue,
/// time, exchange, routing-keys, original-expiration). A later death in a queue, for a
/// reason, already recorded counts up that entry (nothing else in it changes) and moves
/// it to the front; any other is prepended. Entries written after the first have their
/// fields sorted, and the headers end up sorted by name, as RabbitMQ's table updates leave
/// them.
fn add_death(
    headers: &mut FieldTable,
    entry: FieldTable,
    reason: DeathReason,
    queue: &str,
    exchange: &str,
) {
    let entries = match headers.remove(X_DEATH) {
        None => {
            headers.insert("x-first-death-reason", long_string(reason.as_str()));
            headers.insert("x-first-death-queue", long_string(queue));
            headers.insert("x-first-death-exchange", long_string(exchange));
            headers.insert(X_DEATH, FieldValue::Array(vec![FieldValue::Table(entry)]));
            sort_by_name(headers);
            return;
        }
        // A client-made x-death that is not a list starts over (without x-first-death-*).
        Some(FieldValue::Array(entries)) => entries,
        Some(_) => Vec::new(),
    };
    let mut entries = entries;
    let same = entries.iter().position(|e| match e {
        FieldValue::Table(t) => {
            t.get("queue").and_then(FieldValue::as_str) == Some(queue)
                && t.get("reason").and_then(FieldValue::as_str) == Some(reason.as_str())
        }
        _ => false,
    });
    let mut first = match same.map(|at| entries.remove(at)) {
        Some(FieldValue::Table(mut known)) => {
            let count = known.get("count").and_then(FieldValue::as_i64).unwrap_or(0);
            known.insert("count", FieldValue::I64(count.saturating_add(1)));
            known
        }
        _ => entry,
    };
    sort_by_name(&mut first);
    entries.insert(0, FieldValue::Table(first));
    headers.insert(X_DEATH, FieldValue::Array(entries));
    sort_by_name(headers);
}

fn sort_by_name(table: &mut FieldTable) {
    table
        .0
        .sort_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
}

fn long_string(text: &str) -> FieldValue {
    FieldValue::LongStr(bytes::Bytes::copy_from_slice(text.as_bytes()))
}
