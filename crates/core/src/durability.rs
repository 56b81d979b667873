//! What the core writes to the store so that durable exchanges, queues and bindings
//! survive a restart, and how they are read back. The vhost calls [`Durability::record`]
//! after validating a change and before applying it, so that a change the store could not
//! write is refused rather than half-made.

use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use wharf_amqp::{ByteString, FieldTable};
use wharf_store::{BindingDef, Change, DataDir, DefinitionStore, DestinationKind};

use crate::error::{Error, ErrorKind, Result};
use crate::exchange::{Binding, Destination, Exchange};
use crate::queue::Queue;

/// The definitions store and where queues keep their messages, shared by every vhost.
pub struct Durability {
    /// Held for the broker's lifetime: it keeps the directory locked.
    _data_dir: DataDir,
    store: Mutex<DefinitionStore>,
    queues_dir: std::path::PathBuf,
    /// Logs of durable delayed exchanges' held messages.
    delayed_dir: std::path::PathBuf,
    /// Spill-over logs of transient queues; emptied at every start.
    transient_dir: std::path::PathBuf,
    spill_logs_opened: std::sync::atomic::AtomicU64,
    /// Where queue logs roll over to a new segment.
    segment_bytes_max: u64,
    /// Changes are not written while a cluster node installs a snapshot: the store is
    /// replaced with it as a whole afterwards.
    replacing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Durability")
    }
}

impl Durability {
    pub fn new(store: DefinitionStore, dir: &DataDir, segment_bytes_max: u64) -> Arc<Durability> {
        let data_dir = dir.path();
        let transient_dir = data_dir.join("transient");
        // Transient messages do not survive a restart: whatever a previous run spilled goes.
        let _ = std::fs::remove_dir_all(&transient_dir);
        Arc::new(Durability {
            _data_dir: dir.clone(),
            store: Mutex::new(store),
            queues_dir: data_dir.join(wharf_store::data_dir::QUEUES_DIR),
            delayed_dir: data_dir.join(wharf_store::data_dir::DELAYED_DIR),
            transient_dir,
            spill_logs_opened: std::sync::atomic::AtomicU64::new(0),
            segment_bytes_max,
            replacing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Moves every queue or delayed-exchange directory that no definition names into
    /// `orphaned/`, logging each: its messages belong to nothing the broker knows (lost
    /// definitions, or a crash in the middle of a delete), and left where they are, a new
    /// queue of the same name would start by deleting them.
    pub fn set_aside_unnamed(&self, definitions: &wharf_store::Definitions) {
        let queues: std::collections::HashSet<String> = definitions
            .queues
            .iter()
            .map(|q| hashed_name(&q.vhost, &q.name))
            .collect();
        let exchanges: std::collections::HashSet<String> = definitions
            .exchanges
            .iter()
            .map(|e| hashed_name(&e.vhost, &e.name))
            .collect();
        let orphaned = self
            .queues_dir
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("orphaned");
        for (dir, named, kind) in [
            (&self.queues_dir, &queues, "queue"),
            (&self.delayed_dir, &exchanges, "delayed exchange"),
        ] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if named.contains(&name) {
                    continue;
                }
                let bytes = directory_bytes(&entry.path());
                if bytes == 0 {
                    // Nothing in it (a priority queue's directory, its levels deleted).
                    let _ = std::fs::remove_dir_all(entry.path());
                    continue;
                }
                let target_dir = orphaned.join(dir.file_name().unwrap_or_default());
                let mut target = target_dir.join(&name);
                if target.exists() {
                    target = target_dir.join(format!("{name}-{}", unix_seconds()));
                }
                let moved = std::fs::create_dir_all(&target_dir)
                    .and_then(|()| std::fs::rename(entry.path(), &target));
                match moved {
                    Ok(()) => tracing::error!(
                        kind,
                        directory = %entry.path().display(),
                        moved_to = %target.display(),
                        bytes,
                        "messages on disk that no definition names (lost definitions, or a crash \
                         during a delete): moved aside and kept; delete them once you know they \
                         are not needed"
                    ),
                    Err(error) => tracing::error!(
                        kind,
                        directory = %entry.path().display(),
                        bytes,
                        %error,
                        "messages on disk that no definition names, and they could not be moved aside"
                    ),
                }
            }
        }
    }

    /// A fresh directory name for a transient queue's spill-over log.
    pub fn spill_dir(&self) -> std::path::PathBuf {
        let n = self
            .spill_logs_opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.transient_dir.join(format!("{n:016x}"))
    }

    /// The directory of a queue's message log: a hash of its vhost and name, so that any
    /// name makes a valid, fixed-length file name.
    pub fn queue_dir(&self, vhost: &str, name: &str) -> std::path::PathBuf {
        self.queues_dir.join(hashed_name(vhost, name))
    }

    /// The directory of a durable delayed exchange's log of held messages.
    pub fn delayed_dir(&self, vhost: &str, name: &str) -> std::path::PathBuf {
        self.delayed_dir.join(hashed_name(vhost, name))
    }

    /// Opens a durable delayed exchange's log and gives it what it held (`fresh`: a new
    /// exchange, which starts empty whatever an earlier one of that name left).
    pub fn attach_delayed_log(&self, vhost: &str, exchange: &Exchange, fresh: bool) -> Result<()> {
        let Some(delayed) = &exchange.delayed else {
            return Ok(());
        };
        let dir = self.delayed_dir(vhost, &exchange.name);
        if fresh {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let (log, _) = wharf_store::queue_log::QueueLog::open(&dir, self.segment_bytes_max).map_err(|e| {
            tracing::error!(exchange = %exchange.name, error = %e, "cannot open the delayed messages' log");
            Error::new(
                ErrorKind::InternalError,
                format_args!("cannot open message store: {e}"),
            )
        })?;
        delayed.attach_log(log);
        Ok(())
    }

    /// Opens (or creates) a queue's message log and gives it to the queue with what it
    /// held. A new queue starts from an empty directory, whatever an earlier queue of the
    /// same name left.
    pub fn attach_log(&self, queue: &Queue, fresh: bool) -> Result<()> {
        let dir = self.queue_dir(&queue.vhost, &queue.name);
        let internal = |e: wharf_store::StoreError| {
            tracing::error!(queue = %queue.name, error = %e, "cannot open the message log");
            queue.mark_log_broken();
            Error::new(
                ErrorKind::InternalError,
                format_args!("cannot open message store: {e}"),
            )
        };
        if fresh && dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| {
                internal(wharf_store::StoreError::Io {
                    path: dir.clone(),
                    source: e,
                })
            })?;
        }
        // A queue with priorities keeps a log per level, in subdirectories.
        let levels = queue.priority_levels();
        let mut recovered = 0;
        let mut truncated_bytes = 0;
        for level in 0..levels {
            let level_dir = if levels == 1 {
                dir.clone()
            } else {
                crate::queue::level_dir(&dir, level)
            };
            let (log, recovery) =
                wharf_store::queue_log::QueueLog::open(&level_dir, self.segment_bytes_max)
                    .map_err(internal)?;
            truncated_bytes += recovery.truncated_bytes;
            recovered += queue.attach_log(level, log);
        }
        if !fresh {
            tracing::info!(
                queue = %queue.name,
                vhost = %queue.vhost,
                messages = recovered,
                truncated_bytes,
                "recovered queue"
            );
        }
        Ok(())
    }

    /// Makes the changes `make` makes without writing each, then writes `definitions` as
    /// the whole store (what those changes lead to). Only a cluster node's snapshot
    /// install does this; nothing else records meanwhile (a cluster node's changes all
    /// come through the one state machine that installs).
    pub fn replace(
        &self,
        definitions: wharf_store::Definitions,
        make: impl FnOnce(),
    ) -> Result<()> {
        use std::sync::atomic::Ordering;
        self.replacing.store(true, Ordering::Release);
        make();
        self.replacing.store(false, Ordering::Release);
        self.store.lock().replace(definitions).map_err(|e| {
            tracing::error!(error = %e, "cannot write the cluster's definitions");
            Error::new(
                ErrorKind::InternalError,
                format_args!("cannot store definitions: {e}"),
            )
        })
    }

    /// Every definition as stored now.
    pub fn definitions(&self) -> wharf_store::Definitions {
        self.store.lock().definitions()
    }

    /// Writes and fsyncs one change.
    pub fn record(&self, change: Change) -> Result<()> {
        if self.replacing.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        self.store.lock().record(change).map_err(|e| {
            tracing::error!(error = %e, "cannot write a definition change");
            Error::new(
                ErrorKind::InternalError,
                format_args!("cannot store definition: {e}"),
            )
        })
    }
}

/// The bytes of the files under `dir`, for a log line (0 where unreadable).
fn directory_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => directory_bytes(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fixed-length file name for a vhost's object: a hash of the vhost and the name, so
/// that any name makes a valid one.
fn hashed_name(vhost: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(vhost.as_bytes())
        .chain_update([0u8])
        .chain_update(name.as_bytes())
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
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
            Destination::Remote(q) => q.options.durable && q.options.exclusive_owner.is_none(),
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
        Destination::Remote(q) => (q.name.to_string(), DestinationKind::Queue),
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
