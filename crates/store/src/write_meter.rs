//! Bytes written to message files, counted where they are written, so that the disk alarm
//! can look at the free space when a burst of writes may have used up the room left, not
//! only once a second: on a small disk, a second of writes can fill it.
//!
//! One meter per process (the writes of every data directory in it count): a watcher (the
//! disk alarm) arms it with how many more bytes may be written before it wants to look
//! again, and is woken, from the writing thread, once they have been. Counting costs an
//! atomic add per write; waking happens once per armed budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Bytes written since the process started.
static WRITTEN: AtomicU64 = AtomicU64::new(0);
/// The lowest count at which a watcher wants to be woken.
static NEXT_WAKE_AT: AtomicU64 = AtomicU64::new(u64::MAX);
static WATCHERS: Mutex<Vec<Weak<Watcher>>> = Mutex::new(Vec::new());

/// Counts `bytes` written; wakes the watchers whose budget they used up.
pub fn written(bytes: u64) {
    let total = WRITTEN.fetch_add(bytes, Ordering::Relaxed) + bytes;
    if total >= NEXT_WAKE_AT.load(Ordering::Relaxed) {
        wake_due(total);
    }
}

#[cold]
fn wake_due(total: u64) {
    let mut watchers = WATCHERS.lock().unwrap_or_else(|e| e.into_inner());
    watchers.retain(|w| w.strong_count() > 0);
    let mut next = u64::MAX;
    for watcher in watchers.iter().filter_map(Weak::upgrade) {
        let at = watcher.wake_at.load(Ordering::Relaxed);
        if total >= at {
            // Woken once per budget: it re-arms when it has looked.
            watcher.wake_at.store(u64::MAX, Ordering::Relaxed);
            (watcher.wake)();
        } else {
            next = next.min(at);
        }
    }
    NEXT_WAKE_AT.store(next, Ordering::Relaxed);
}

/// A watcher of the meter (see [`watch`]); unregistered when dropped.
pub struct Watcher {
    wake_at: AtomicU64,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Watcher {
    /// Asks to be woken once `budget` more bytes have been written.
    pub fn arm(&self, budget: u64) {
        let at = WRITTEN
            .load(Ordering::Relaxed)
            .saturating_add(budget.max(1));
        self.wake_at.store(at, Ordering::Relaxed);
        let _watchers = WATCHERS.lock().unwrap_or_else(|e| e.into_inner());
        NEXT_WAKE_AT.fetch_min(at, Ordering::Relaxed);
    }
}

/// Registers `wake`, called (on a writing thread: it must not block) when an armed budget
/// has been written.
pub fn watch(wake: impl Fn() + Send + Sync + 'static) -> Arc<Watcher> {
    let watcher = Arc::new(Watcher {
        wake_at: AtomicU64::new(u64::MAX),
        wake: Box::new(wake),
    });
    WATCHERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::downgrade(&watcher));
    watcher
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_watcher_is_woken_once_its_budget_is_written() {
        let woken = Arc::new(AtomicUsize::new(0));
        let counted = woken.clone();
        let watcher = watch(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        // Other tests write too: a budget of 1 GiB is not used up by them.
        watcher.arm(1 << 30);
        written(1 << 29);
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        written(1 << 29);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        written(1 << 30);
        assert_eq!(woken.load(Ordering::SeqCst), 1, "once per budget");
        watcher.arm(1);
        written(1);
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        drop(watcher);
        written(1 << 30);
    }
}
