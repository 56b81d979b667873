//! Timed work: message expiry, queue expiry and the like. One thread keeps every pending
//! task in a heap ordered by due time, sleeps until the earliest, and runs what is due.
//! Tasks cannot be cancelled: whoever schedules one checks, when it runs, whether it is
//! still wanted (a queue re-reads its head's expiry), which keeps scheduling a push.
//!
//! Tasks run on the timer thread, outside any lock of the timers, so a task may schedule
//! another. They must be short: they delay every task after them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub type Task = Box<dyn FnOnce() + Send>;

struct Scheduled {
    at: Instant,
    /// Orders tasks due at the same instant by when they were scheduled.
    seq: u64,
    task: Task,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Pending {
    heap: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
    stopping: bool,
}

pub struct Timers {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Timers")
    }
}

impl Timers {
    /// Starts the timer thread; it runs until [`Timers::stop`].
    pub fn start() -> Arc<Timers> {
        let timers = Arc::new(Timers {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let worker = timers.clone();
        std::thread::Builder::new()
            .name("wharf-timers".into())
            .spawn(move || worker.run())
            .expect("start the timer thread");
        timers
    }

    /// Runs `task` on the timer thread once `at` has passed.
    pub fn schedule(&self, at: Instant, task: Task) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.stopping {
            return;
        }
        let seq = pending.next_seq;
        pending.next_seq += 1;
        let earliest = pending
            .heap
            .peek()
            .is_none_or(|Reverse(first)| at < first.at);
        pending.heap.push(Reverse(Scheduled { at, seq, task }));
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Runs `task` once the wall clock reads `at_ms` (milliseconds since the Unix epoch).
    pub fn schedule_at_ms(&self, at_ms: u64, task: Task) {
        let delay = at_ms.saturating_sub(now_ms());
        self.schedule(Instant::now() + Duration::from_millis(delay), task);
    }

    /// Stops the thread; tasks not yet run are dropped.
    pub fn stop(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.stopping = true;
        pending.heap.clear();
        self.wake.notify_one();
    }

    fn run(&self) {
        let mut due = Vec::new();
        loop {
            {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if pending.stopping {
                        return;
                    }
                    let now = Instant::now();
                    while pending
                        .heap
                        .peek()
                        .is_some_and(|Reverse(first)| first.at <= now)
                    {
                        let Reverse(scheduled) = pending.heap.pop().expect("peeked above");
                        due.push(scheduled.task);
                    }
                    if !due.is_empty() {
                        break;
                    }
                    pending = match pending.heap.peek() {
                        Some(Reverse(first)) => {
                            let wait = first.at - now;
                            self.wake
                                .wait_timeout(pending, wait)
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                        None => self.wake.wait(pending).unwrap_or_else(|e| e.into_inner()),
                    };
                }
            }
            for task in due.drain(..) {
                task();
            }
        }
    }
}

/// The wall clock in milliseconds since the Unix epoch: what message expiry is kept in,
/// so that it means the same after a restart.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn tasks_run_in_due_order_and_not_before_their_time() {
        let timers = Timers::start();
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        for (name, delay_ms) in [("c", 60), ("a", 20), ("b", 40), ("now", 0)] {
            let tx = tx.clone();
            timers.schedule(
                start + Duration::from_millis(delay_ms),
                Box::new(move || tx.send((name, Instant::now())).unwrap()),
            );
        }
        let mut order = Vec::new();
        for _ in 0..4 {
            let (name, ran_at) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            let delay_ms = match name {
                "a" => 20,
                "b" => 40,
                "c" => 60,
                _ => 0,
            };
            assert!(
                ran_at >= start + Duration::from_millis(delay_ms),
                "{name} ran early"
            );
            order.push(name);
        }
        assert_eq!(order, ["now", "a", "b", "c"]);
        timers.stop();
    }

    #[test]
    fn a_task_may_schedule_another() {
        let timers = Timers::start();
        let (tx, rx) = mpsc::channel();
        let again = timers.clone();
        timers.schedule(
            Instant::now(),
            Box::new(move || {
                again.schedule(Instant::now(), Box::new(move || tx.send(()).unwrap()));
            }),
        );
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        timers.stop();
    }

    #[test]
    fn stopped_timers_run_nothing() {
        let timers = Timers::start();
        let (tx, rx) = mpsc::channel::<()>();
        timers.stop();
        timers.schedule(Instant::now(), Box::new(move || tx.send(()).unwrap()));
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }
}
