//! Group commit: publishers of persistent messages ask to be told when their appends are
//! on disk; one flusher thread collects every queue with unsynced appends, fsyncs each
//! once, then answers every waiter of that round. Many publishers share one fsync.
//!
//! The flusher owns its waiting list; channels reach it through `Arc<Flusher>`. fsyncs run
//! on file handles cloned under each queue's lock and synced outside it, so publishing to
//! a queue never waits for the disk.

use std::sync::{Arc, Condvar, Mutex};

/// Called once the appends it waited for are durable (true) or could not be made so.
pub type SyncDone = Box<dyn FnOnce(bool) + Send>;

/// Something with appends to fsync: a queue's logs, a delayed exchange's log.
pub trait SyncTarget: Send + Sync {
    /// fsyncs what was appended so far (outside the publish path); false if that failed.
    fn sync_appends(&self) -> bool;
}

impl std::fmt::Debug for dyn SyncTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncTarget")
    }
}

/// The same object, whatever the trait object's vtable.
pub fn same_target(a: &Arc<dyn SyncTarget>, b: &Arc<dyn SyncTarget>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

#[derive(Default)]
struct Pending {
    queues: Vec<Arc<dyn SyncTarget>>,
    waiters: Vec<SyncDone>,
    stopping: bool,
}

pub struct Flusher {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Flusher")
    }
}

impl Flusher {
    /// Starts the flusher thread; it runs until [`Flusher::stop`].
    pub fn start() -> Arc<Flusher> {
        let flusher = Arc::new(Flusher {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let worker = flusher.clone();
        std::thread::Builder::new()
            .name("wharf-flusher".into())
            .spawn(move || worker.run())
            .expect("start the flusher thread");
        flusher
    }

    /// Calls `done` once everything appended to `queues` so far is on disk.
    pub fn after_sync(
        &self,
        queues: impl IntoIterator<Item = Arc<dyn SyncTarget>>,
        done: SyncDone,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for queue in queues {
            if !pending.queues.iter().any(|q| same_target(q, &queue)) {
                pending.queues.push(queue);
            }
        }
        pending.waiters.push(done);
        self.wake.notify_one();
    }

    /// Finishes the round in progress and the waiting ones, then ends the thread.
    pub fn stop(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.stopping = true;
        self.wake.notify_one();
    }

    fn run(&self) {
        loop {
            let (queues, waiters) = {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                while pending.waiters.is_empty() && !pending.stopping {
                    pending = self.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
                }
                if pending.waiters.is_empty() && pending.stopping {
                    return;
                }
                (
                    std::mem::take(&mut pending.queues),
                    std::mem::take(&mut pending.waiters),
                )
            };
            let mut ok = true;
            for queue in &queues {
                ok &= queue.sync_appends();
            }
            for done in waiters {
                done(ok);
            }
        }
    }
}
