//! The bytes waiting to be written to one connection's socket. Channels and queues append
//! whole frames under a short lock; the writer task takes everything at once and writes it
//! with one syscall, so many deliveries share a write. The connection owns it; queues
//! reach it through their consumers' delivery targets.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::confirms::Confirms;

/// Above this many unwritten bytes, queues stop delivering to the connection until the
/// writer has caught up: a slow reader cannot make the broker buffer without bound.
pub const OUTBOUND_HIGH_WATER_BYTES: usize = 4 * 1024 * 1024;

/// Above this many unwritten bytes, a basic.get waits for the writer to catch up before it
/// is handled. Deliveries stop at [`OUTBOUND_HIGH_WATER_BYTES`]; the messages of gets from a
/// client that sends them and never reads would otherwise grow without bound.
pub const INPUT_PAUSE_BYTES: usize = 4 * OUTBOUND_HIGH_WATER_BYTES;

#[derive(Debug, Default)]
pub struct Outbound {
    buffer: Mutex<BytesMut>,
    /// The buffer's length as of the last change, readable without the lock.
    pending: AtomicUsize,
    /// Wakes the writer when bytes were added.
    pub(crate) wake_writer: Notify,
    /// Set when a delivery was refused for lack of room, or the connection stopped reading
    /// until there is room; the writer clears it after its next write and wakes the
    /// connection (`drained`).
    room_awaited: AtomicBool,
    pub(crate) drained: Notify,
    closed: AtomicBool,
    /// Channels with publisher confirms ready to send: written when the writer next takes
    /// the buffer, so that confirms ready together share one `multiple` ack.
    confirms_due: Mutex<Vec<Arc<Confirms>>>,
    any_confirms_due: AtomicBool,
}

impl Outbound {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends frames written by `encode`; nothing is appended once the connection closed.
    pub fn write(&self, encode: impl FnOnce(&mut BytesMut)) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        {
            let mut buffer = self.buffer.lock();
            encode(&mut buffer);
            self.pending.store(buffer.len(), Ordering::Relaxed);
        }
        self.wake_writer.notify_one();
    }

    /// Like `write`, for deliveries: refuses (and remembers it refused) when the buffer
    /// is above the high-water mark.
    pub fn try_write_delivery(&self, encode: impl FnOnce(&mut BytesMut)) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        {
            let mut buffer = self.buffer.lock();
            if buffer.len() >= OUTBOUND_HIGH_WATER_BYTES {
                self.room_awaited.store(true, Ordering::Release);
                return false;
            }
            encode(&mut buffer);
            self.pending.store(buffer.len(), Ordering::Relaxed);
        }
        self.wake_writer.notify_one();
        true
    }

    /// The confirm of `tag` on the channel of `confirms` is ready (an ack when `ok`); it is
    /// sent with the writer's next write.
    pub(crate) fn confirm(&self, confirms: &Arc<Confirms>, tag: u64, ok: bool) {
        if confirms.ready(tag, ok) {
            self.confirms_due(confirms);
        }
    }

    /// A publish whose confirm is ready at once (an ack when `ok`); returns its tag.
    pub(crate) fn publish_confirmed(&self, confirms: &Arc<Confirms>, ok: bool) -> u64 {
        let (tag, due) = confirms.publish_ready(ok);
        if due {
            self.confirms_due(confirms);
        }
        tag
    }

    /// Puts a channel with confirms to send on the list and wakes the writer. A channel
    /// already on the list need not wake it again: it was woken when the channel was put
    /// there, and has not flushed it yet.
    fn confirms_due(&self, confirms: &Arc<Confirms>) {
        self.confirms_due.lock().push(confirms.clone());
        self.any_confirms_due.store(true, Ordering::Release);
        self.wake_writer.notify_one();
    }

    /// Takes everything buffered, leaving `spare` (cleared) in its place so that buffers
    /// are reused rather than reallocated. Ready confirms are written last.
    pub(crate) fn take(&self, spare: &mut BytesMut) {
        spare.clear();
        let due = if self.any_confirms_due.swap(false, Ordering::AcqRel) {
            std::mem::take(&mut *self.confirms_due.lock())
        } else {
            Vec::new()
        };
        let mut buffer = self.buffer.lock();
        for confirms in &due {
            confirms.flush(&mut buffer);
        }
        std::mem::swap(&mut *buffer, spare);
        self.pending.store(0, Ordering::Relaxed);
    }

    /// Called by the writer after a write: if deliveries were refused, or the connection
    /// waits for room, let the connection know there is room again.
    pub(crate) fn after_write(&self) {
        if self.room_awaited.swap(false, Ordering::AcqRel) {
            self.drained.notify_one();
        }
    }

    /// Unwritten bytes, as of the last change (no lock).
    pub fn pending_bytes(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Asks the writer to notify `drained` after its next write.
    pub(crate) fn await_room(&self) {
        self.room_awaited.store(true, Ordering::Release);
    }

    /// The writer failed (the peer is gone): nothing more will be written, and a connection
    /// waiting for room is woken to find it closed.
    pub(crate) fn writer_failed(&self) {
        self.close();
        self.drained.notify_one();
    }

    pub fn is_empty(&self) -> bool {
        self.buffer.lock().is_empty()
    }

    /// Stops accepting bytes; the writer finishes what is buffered and exits.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_writer.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
