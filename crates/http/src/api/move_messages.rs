//! POST /api/wharf/queues/{vhost}/{name}/move: moves a queue's messages to another queue
//! of the same vhost, what RabbitMQ's UI does with a dynamic shovel ("Move messages":
//! `src-delete-after: queue-length`, `ack-mode: on-confirm`). Wharf has no shovels, so the
//! move is its own endpoint, with the shovel's guarantees: it moves as many messages as
//! the source held when it started, in batches, and takes each batch off the source only
//! once the destination holds it (on disk, for persistent messages in a durable queue),
//! so a crash in between duplicates messages rather than losing them. Messages go into the
//! destination itself, with their properties and headers (a `CC` header does not copy them
//! to other queues again). A message the destination refuses goes back to the source as
//! it was (not redelivered, no delivery counted), and the move stops there. The move runs
//! in a task of its own: a client that goes away does not leave a batch half done.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::json;
use wharf_core::access::{Access, ResourceKind};
use wharf_core::flusher::SyncTarget;
use wharf_core::{Enqueued, ErrorKind, Message, Queue, VHost};

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
    let target_queue = queue_named(&vhost, &destination)?;
    // Permitted as a shovel with `dest-queue` would be: a publish to the default
    // exchange with the destination's name as routing key.
    let target = grant.publish_target(&vhost, "").map_err(channel_refusal)?;
    grant
        .check_publish_key(&target, &destination)
        .map_err(channel_refusal)?;
    let task = tokio::spawn(run(api.clone(), source, target_queue));
    match task.await {
        Ok(Ok(moved)) => json(json!({ "moved": moved })),
        Ok(Err((moved, error))) => Err(ApiError::bad_request(format!(
            "{error} ({moved} messages were moved before that)"
        ))),
        Err(_) => Err(ApiError::internal("the move stopped unexpectedly")),
    }
}

/// Moves as many messages as the source held at the start (a shovel's `queue-length`),
/// batch by batch: the count moved, or the count moved before a message the destination
/// would not take (it, and the rest, stay at the source as they were).
async fn run(
    api: Arc<Api>,
    source: Arc<Queue>,
    destination: Arc<Queue>,
) -> Result<u64, (u64, String)> {
    let mut left = source.stats().messages_ready;
    let mut moved = 0u64;
    while left > 0 {
        let mut taken = Vec::new();
        let mut appended: Vec<Arc<dyn SyncTarget>> = Vec::new();
        let mut refusal = None;
        while taken.len() < BATCH && left > 0 {
            let Some(got) = source.take() else {
                left = 0;
                break;
            };
            left -= 1;
            // Enqueued on the destination itself rather than routed: a message's CC
            // header would otherwise copy it to other queues again.
            let message = Arc::new(Message {
                exchange: "".into(),
                routing_key: destination.name.clone(),
                properties: got.message.properties.clone(),
                body: got.message.body.clone(),
            });
            match destination.publish(message).0 {
                Enqueued::InMemory => {}
                Enqueued::Appended => {
                    if appended.is_empty() {
                        appended.push(destination.clone());
                    }
                }
                Enqueued::Failed => refusal = Some("is gone, or could not store a message"),
                Enqueued::Rejected => refusal = Some("is full and refuses more"),
            }
            if refusal.is_some() {
                source.put_back(&[got.offset]);
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
                source.put_back(&taken);
                return Err((moved, "The destination could not write to disk".into()));
            }
        }
        source.ack(&taken);
        moved += taken.len() as u64;
        if let Some(refusal) = refusal {
            let name = &destination.name;
            return Err((moved, format!("The queue {name} {refusal}")));
        }
        // A batch that needed no disk did not wait: let the worker's other tasks run.
        tokio::task::yield_now().await;
    }
    Ok(moved)
}
