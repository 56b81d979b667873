//! What the core writes to the store so that durable exchanges, queues and bindings
//! survive a restart, and how they are read back. The vhost calls [`Durability::record`]
//! after validating a change and before applying it, so that a change the store could not
//! write is refused rather than half-made.

use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use wharf_amqp::{ByteString, FieldTable};
use wharf_store::{BindingDef, Change, DefinitionStore, DestinationKind};

use crate::error::{Error, ErrorKind, Result};
use crate::exchange::{Binding, Destination, Exchange};
use crate::queue::Queue;

/// The definitions store, shared by every vhost of a broker.
pub struct Durability {
    store: Mutex<DefinitionStore>,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Durability")
    }
}

impl Durability {
    pub fn new(store: DefinitionStore) -> Arc<Durability> {
        Arc::new(Durability {
            store: Mutex::new(store),
        })
    }

    /// Writes and fsyncs one change.
    pub fn record(&self, change: Change) -> Result<()> {
        self.store.lock().record(change).map_err(|e| {
            tracing::error!(error = %e, "cannot write a definition change");
            Error::new(
                ErrorKind::InternalError,
                format_args!("cannot store definition: {e}"),
            )
        })
    }
}

pub fn encode_arguments(arguments: &FieldTable) -> Vec<u8> {
    let mut out = BytesMut::new();
    arguments.encode(&mut out);
    out.to_vec()
}

pub fn decode_arguments(bytes: &[u8]) -> FieldTable {
    if bytes.is_empty() {
        return FieldTable::new();
    }
    let mut bytes = bytes::Bytes::copy_from_slice(bytes);
    FieldTable::decode(&mut bytes).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "stored arguments do not decode; using none");
        FieldTable::new()
    })
}

/// A binding survives a restart when both of its ends do, as in RabbitMQ.
pub fn is_durable(source: &Exchange, destination: &Destination) -> bool {
    source.durable
        && match destination {
            Destination::Queue(q) => is_durable_queue(q),
            Destination::Exchange(e) => e.durable,
        }
}

/// Exclusive queues go with their connection, so they are never written down.
pub fn is_durable_queue(queue: &Queue) -> bool {
    queue.options.durable && queue.options.exclusive_owner.is_none()
}

pub fn binding_def(vhost: &ByteString, source: &Exchange, binding: &Binding) -> BindingDef {
    let (destination, destination_kind) = match &binding.destination {
        Destination::Queue(q) => (q.name.to_string(), DestinationKind::Queue),
        Destination::Exchange(e) => (e.name.to_string(), DestinationKind::Exchange),
    };
    BindingDef {
        vhost: vhost.to_string(),
        source: source.name.to_string(),
        destination,
        destination_kind,
        routing_key: binding.routing_key.to_string(),
        arguments: encode_arguments(&binding.arguments),
    }
}
