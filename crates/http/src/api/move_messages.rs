//! POST /api/wharf/queues/{vhost}/{name}/move: moves a queue's messages to another queue
//! of the same vhost, what RabbitMQ's UI does with a dynamic shovel ("Move messages":
//! `src-delete-after: queue-length`, `ack-mode: on-confirm`). Wharf has no shovels, so the
//! move is its own endpoint, with the shovel's guarantees: it moves the messages ready
//! when it starts, in batches, and takes each batch off the source only once the
//! destination holds it (on disk, for persistent messages in a durable queue), so a
//! crash in between duplicates messages rather than losing them. The move runs in a
//! task of its own: a client that goes away does not leave a batch half done.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::json;
use wharf_core::access::{Access, ResourceKind};
use wharf_core::{ErrorKind, Message, Queue, RouteCache, VHost};

use super::messages::channel_refusal;
use super::queues::NO_CONNECTION;
use super::{json, require_keys};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::Api;

/// How many messages are taken from the source before waiting for the destination.
const BATCH: usize = 1000;

/// The queue, or a 404 that names it (the source and the destination both may be missing).
fn queue_named(vhost: &VHost, name: &str) -> ApiResult<Arc<Queue>> {
    vhost
        .queue_for(name, NO_CONNECTION)
        .map_err(|error| match error.kind {
            ErrorKind::NotFound => ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                format!("no queue '{name}' in vhost '{}'", vhost.name),
            ),
            _ => channel_refusal(error),
        })
}

pub async fn move_messages(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    let vhost = caller.vhost(&api, &vhost)?;
    require_keys(&body, &["destination"])?;
    let destination = body.required_text("destination")?.to_string();
    if destination == name {
        return Err(ApiError::bad_request(
            "The destination is the queue the messages are in",
        ));
    }
    let grant = api.broker.access.grant(caller.name(), &vhost.name);
    grant
        .check(Access::Read, ResourceKind::Queue, &name)
        .map_err(ApiError::from)?;
    let source = queue_named(&vhost, &name)?;
    queue_named(&vhost, &destination)?;
    // Moved as a shovel with `dest-queue` publishes: to the default exchange, with the
    // destination's name as routing key.
    let target = grant.publish_target(&vhost, "").map_err(channel_refusal)?;
    grant
        .check_publish_key(&target, &destination)
        .map_err(channel_refusal)?;
    let task = tokio::spawn(run(
        api.clone(),
        vhost,
        source,
        target.exchange,
        destination,
    ));
    match task.await {
        Ok(Ok(moved)) => json(json!({ "moved": moved })),
        Ok(Err((moved, error))) => Err(ApiError::bad_request(format!(
            "{error} ({moved} messages were moved before that)"
        ))),
        Err(_) => Err(ApiError::internal("the move stopped unexpectedly")),
    }
}

/// Moves the messages ready at the start, batch by batch: the count moved, or the count
/// moved before a batch the destination would not take (that batch stays at the source).
async fn run(
    api: Arc<Api>,
    vhost: Arc<VHost>,
    source: Arc<Queue>,
    exchange: Arc<wharf_core::Exchange>,
    destination: String,
) -> Result<u64, (u64, String)> {
    let mut left = source.stats().messages_ready;
    let mut moved = 0u64;
    let mut routes = RouteCache::default();
    while left > 0 {
        let mut taken = Vec::new();
        let mut appended = Vec::new();
        let mut refusal = None;
        while taken.len() < BATCH && left > 0 {
            let Some(got) = source.get(false) else {
                left = 0;
                break;
            };
            left -= 1;
            let message = Arc::new(Message {
                exchange: "".into(),
                routing_key: destination.as_str().into(),
                properties: got.message.properties.clone(),
                body: got.message.body.clone(),
            });
            let published = vhost.publish(&exchange, message, &[], &mut routes);
            appended.extend(published.appended_to);
            if published.unroutable.is_some() {
                refusal = Some(format!("The queue {destination} is gone"));
            } else if published.refused {
                refusal = Some(format!("The queue {destination} refused a message (full?)"));
            }
            if refusal.is_some() {
                // This one stays at the source; what went before is in the destination.
                source.requeue(&[got.offset]);
                break;
            }
            taken.push(got.offset);
        }
        if let (Some(flusher), false) = (api.broker.flusher(), appended.is_empty()) {
            let (done, synced) = tokio::sync::oneshot::channel();
            flusher.after_sync(
                appended,
                Box::new(move |ok| {
                    let _ = done.send(ok);
                }),
            );
            if synced.await != Ok(true) {
                source.requeue(&taken);
                return Err((moved, "The destination could not write to disk".into()));
            }
        }
        source.ack(&taken);
        moved += taken.len() as u64;
        if let Some(refusal) = refusal {
            return Err((moved, refusal));
        }
    }
    Ok(moved)
}
