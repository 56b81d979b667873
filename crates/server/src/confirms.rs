//! Publisher confirms of one channel in confirm mode. A publish takes the next delivery
//! tag; its confirm becomes ready when the message is routed (and, when persistent, on
//! disk). Ready confirms are not written one by one: the connection's writer sends them
//! when it next writes, and consecutive acks ready together go as one `basic.ack` with
//! `multiple=true`, as RabbitMQ does. A `multiple` ack never covers a nack or a message
//! still waiting; nacks are always sent one by one (exact).

use std::collections::VecDeque;

use bytes::BytesMut;
use parking_lot::Mutex;
use wharf_amqp::frame::encode_method;
use wharf_amqp::{BasicAck, BasicNack, Method};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Published, not yet routed or not yet on disk.
    Waiting,
    /// Ready, not yet sent: an ack (true) or a nack (false).
    Ready(bool),
    /// Sent ahead of an earlier tag that still waits: an ack (true) or a nack (false).
    Sent(bool),
}

#[derive(Debug, Default)]
struct Ring {
    /// The delivery tag of `slots[0]`: every tag below it has been answered.
    base: u64,
    slots: VecDeque<Slot>,
    /// Tags made ready since the last flush (to find those ready behind a waiting one).
    fresh: Vec<u64>,
    /// On the outbound's list of channels with confirms to send.
    queued: bool,
    /// The channel closed: nothing more is sent.
    closed: bool,
    /// Confirms decided so far: acks and nacks (management's counts).
    acked: u64,
    nacked: u64,
    /// Slots still waiting to be decided.
    waiting: u64,
}

/// The confirms of one channel; shared by the channel, the flusher's callbacks and the
/// connection's writer.
#[derive(Debug)]
pub struct Confirms {
    channel: u16,
    ring: Mutex<Ring>,
}

/// What the flush wrote, for tests and counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub frames: usize,
    pub answered: usize,
}

impl Ring {
    fn count(&mut self, ok: bool) {
        match ok {
            true => self.acked += 1,
            false => self.nacked += 1,
        }
    }
}

impl Confirms {
    /// Publishes waiting for their confirm to be decided (the disk, mostly).
    pub fn unconfirmed(&self) -> u64 {
        let ring = self.ring.lock();
        ring.slots
            .iter()
            .filter(|s| matches!(s, Slot::Waiting))
            .count() as u64
    }

    /// Publishes confirmed (acks) and refused (nacks) so far.
    pub fn counts(&self) -> (u64, u64) {
        let ring = self.ring.lock();
        (ring.acked, ring.nacked)
    }

    pub fn new(channel: u16) -> Self {
        Confirms {
            channel,
            ring: Mutex::new(Ring {
                base: 1,
                ..Ring::default()
            }),
        }
    }

    /// Takes the next delivery tag for a publish.
    pub fn publish(&self) -> u64 {
        let mut ring = self.ring.lock();
        ring.slots.push_back(Slot::Waiting);
        ring.waiting += 1;
        ring.base + ring.slots.len() as u64 - 1
    }

    /// Takes the next delivery tag for a publish whose confirm is ready at once (nothing to
    /// wait for): one lock instead of two. Returns the tag and whether the channel must be
    /// put on its outbound's list, as [`Confirms::ready`].
    pub fn publish_ready(&self, ok: bool) -> (u64, bool) {
        let mut ring = self.ring.lock();
        ring.slots.push_back(Slot::Ready(ok));
        ring.count(ok);
        let tag = ring.base + ring.slots.len() as u64 - 1;
        if ring.closed {
            return (tag, false);
        }
        ring.fresh.push(tag);
        (tag, !std::mem::replace(&mut ring.queued, true))
    }

    /// The confirm of `tag` is ready: an ack when `ok`, a nack otherwise. Returns true when
    /// the channel must be put on its outbound's list (it was not on it already); false
    /// also when a flush is already due that will send it.
    pub fn ready(&self, tag: u64, ok: bool) -> bool {
        let mut ring = self.ring.lock();
        if ring.closed || tag < ring.base {
            return false;
        }
        let index = (tag - ring.base) as usize;
        match ring.slots.get_mut(index) {
            Some(slot @ Slot::Waiting) => *slot = Slot::Ready(ok),
            _ => return false,
        }
        ring.waiting -= 1;
        ring.count(ok);
        ring.fresh.push(tag);
        !std::mem::replace(&mut ring.queued, true)
    }

    /// The channel is closed: drops every confirm not yet sent.
    pub fn close(&self) {
        let mut ring = self.ring.lock();
        ring.closed = true;
        ring.waiting = 0;
        ring.slots.clear();
        ring.fresh.clear();
    }

    /// Writes the ready confirms into `out`: the acks at the front (everything below the
    /// first tag still waiting or nacked) as one ack, `multiple` when it answers more than
    /// one fresh tag; every other ready confirm on its own.
    pub fn flush(&self, out: &mut BytesMut) -> Flushed {
        let mut ring = self.ring.lock();
        ring.queued = false;
        let mut flushed = Flushed::default();
        if ring.closed || ring.fresh.is_empty() {
            return flushed;
        }
        let mut sent = Sender {
            channel: self.channel,
            out,
            flushed: &mut flushed,
        };
        // The run of acks at the front: the last fresh tag in it, and how many are fresh.
        let mut run: Option<(u64, usize)> = None;
        while let Some(&slot) = ring.slots.front() {
            let tag = ring.base;
            match slot {
                Slot::Waiting => break,
                Slot::Ready(true) => {
                    let count = run.map_or(0, |(_, n)| n);
                    run = Some((tag, count + 1));
                }
                // A later multiple ack may cover acks sent ahead: they were acks too.
                Slot::Sent(true) => {}
                Slot::Ready(false) => {
                    sent.ack_run(run.take());
                    sent.nack(tag);
                }
                Slot::Sent(false) => sent.ack_run(run.take()),
            }
            ring.slots.pop_front();
            ring.base += 1;
        }
        sent.ack_run(run);
        // Ready behind a tag that still waits: sent now, each on its own, as RabbitMQ does.
        let fresh = std::mem::take(&mut ring.fresh);
        for &tag in &fresh {
            if tag < ring.base {
                continue;
            }
            let index = (tag - ring.base) as usize;
            if let Some(Slot::Ready(ok)) = ring.slots.get(index).copied() {
                ring.slots[index] = Slot::Sent(ok);
                if ok {
                    sent.ack_run(Some((tag, 1)));
                } else {
                    sent.nack(tag);
                }
            }
        }
        // Keep the list's allocation.
        ring.fresh = fresh;
        ring.fresh.clear();
        flushed
    }
}

/// Encodes confirms into a flush's output.
struct Sender<'a> {
    channel: u16,
    out: &'a mut BytesMut,
    flushed: &'a mut Flushed,
}

impl Sender<'_> {
    /// One ack for a run of `count` fresh acks ending at `tag`: `multiple` when more than
    /// one (a single confirm goes with multiple=false, as RabbitMQ sends it).
    fn ack_run(&mut self, run: Option<(u64, usize)>) {
        if let Some((delivery_tag, count)) = run {
            let ack = BasicAck {
                delivery_tag,
                multiple: count > 1,
            };
            self.send(&Method::BasicAck(ack), count);
        }
    }

    fn nack(&mut self, delivery_tag: u64) {
        let nack = BasicNack {
            delivery_tag,
            multiple: false,
            requeue: false,
        };
        self.send(&Method::BasicNack(nack), 1);
    }

    fn send(&mut self, method: &Method, answered: usize) {
        encode_method(self.channel, method, self.out);
        self.flushed.frames += 1;
        self.flushed.answered += answered;
    }
}

#[cfg(test)]
mod tests;
