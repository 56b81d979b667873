//! What a queue asks of the virtual host it lives in. The queue knows its host only
//! through this trait, so the queue module sits below the vhost: it never names the
//! vhost's type, its exchanges or its other queues. A test gives a queue a host of its own
//! (crates/core/tests) to see its dead letters and to run its clock.

use std::sync::Arc;

use super::dead_letter::DeadLetter;
use super::Queue;
use crate::timer::Task;

pub trait QueueHost: Send + Sync {
    /// The time, in milliseconds since the epoch, that message TTLs, `x-expires` and the
    /// timers below are measured in (a test's host may run its own clock).
    fn now_ms(&self) -> u64;

    /// Routes messages that left `queue` through their dead-letter exchange. Called
    /// without the queue's lock (routing takes other queues' locks).
    fn dead_letter(&self, queue: &Queue, letters: Vec<DeadLetter>);

    /// Runs `task` once the clock reaches `at_ms` (milliseconds since the epoch).
    fn schedule_at_ms(&self, at_ms: u64, task: Task);

    /// `queue` went unused for its `x-expires`: remove it, as a delete would.
    fn queue_expired(&self, queue: &Arc<Queue>);

    /// `queue` starts delivering outside a declare (a quorum queue's new leader): the
    /// host gives it what a declared queue gets (its policy).
    fn queue_started(&self, _queue: &Arc<Queue>) {}
}
