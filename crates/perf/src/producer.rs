//! A producer: one connection publishing pre-encoded messages in batches. The frames of a
//! message (publish method, content header, body) are encoded once; a batch is that
//! template repeated, with the send time patched into each body. With confirms, a second
//! task reads the broker's acks and opens the window as they come.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Notify;
use wharf_amqp::frame::{encode_body, encode_content_header, encode_method};
use wharf_amqp::{BasicProperties, ContentHeader, Frame, FramePayload, Method};

use crate::client::{Client, CHANNEL};
use crate::stats::{Latency, Recorder, Stats};
use crate::Signal;

/// Bytes per write, roughly: batches hold as many messages as fit.
const BATCH_BYTES: usize = 64 * 1024;

pub struct ProducerPlan {
    pub exchange: String,
    pub routing_key: String,
    pub size: usize,
    pub persistent: bool,
    /// Outstanding confirms allowed (0: no confirms).
    pub confirm: u32,
    /// Messages per second (0: unlimited).
    pub rate: u64,
    /// Messages to send (0: unlimited).
    pub messages: u64,
}

/// One message's frames, and where in them the send time goes.
struct Template {
    bytes: Vec<u8>,
    /// Offset of the first body byte, if the body can hold a timestamp.
    timestamp_at: Option<usize>,
}

fn template(plan: &ProducerPlan, frame_max: u32) -> Template {
    let mut out = BytesMut::new();
    encode_method(
        CHANNEL,
        &Method::BasicPublish(wharf_amqp::BasicPublish {
            exchange: plan.exchange.as_str().into(),
            routing_key: plan.routing_key.as_str().into(),
            ..Default::default()
        }),
        &mut out,
    );
    let properties = BasicProperties {
        delivery_mode: Some(if plan.persistent { 2 } else { 1 }),
        ..Default::default()
    };
    encode_content_header(
        CHANNEL,
        &ContentHeader {
            class_id: 60,
            body_size: plan.size as u64,
            properties: properties.into(),
        },
        &mut out,
    );
    let before_body = out.len();
    encode_body(CHANNEL, &vec![0u8; plan.size], frame_max, &mut out);
    Template {
        bytes: out.to_vec(),
        // A body frame's payload starts after its 7-byte frame header.
        timestamp_at: (plan.size >= 8).then_some(before_body + 7),
    }
}

/// Confirm bookkeeping shared by the publishing task and the task reading acks.
struct Confirms {
    /// Send time of each outstanding sequence number (at seq % len); 0 once confirmed.
    sent_at: Vec<AtomicU64>,
    /// Every sequence number up to this one is confirmed (or nacked).
    watermark: AtomicU64,
    /// Sequence number of the last message published.
    published: AtomicU64,
    /// Confirmed or nacked so far.
    settled: AtomicU64,
    /// Woken when acks arrive.
    progress: Notify,
}

impl Confirms {
    fn new(window: u32) -> Confirms {
        let slots = (window as usize * 2).next_power_of_two();
        Confirms {
            sent_at: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            watermark: AtomicU64::new(0),
            published: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            progress: Notify::new(),
        }
    }

    fn slot(&self, seq: u64) -> &AtomicU64 {
        &self.sent_at[(seq as usize) & (self.sent_at.len() - 1)]
    }

    /// How many more may be published now, within `window` outstanding.
    fn room(&self, window: u32) -> u64 {
        let published = self.published.load(Ordering::Acquire);
        let outstanding = published - self.settled.load(Ordering::Acquire);
        let by_window = u64::from(window).saturating_sub(outstanding);
        // Never reuse a slot whose sequence number is not settled.
        let by_slots = (self.sent_at.len() as u64)
            .saturating_sub(published - self.watermark.load(Ordering::Acquire));
        by_window.min(by_slots)
    }
}

pub async fn run(
    client: Client,
    plan: Arc<ProducerPlan>,
    stats: Arc<Stats>,
    go: Arc<Signal>,
    stop: Arc<Signal>,
) {
    go.wait().await;
    let template = template(&plan, client.frame_max);
    let per_batch = (BATCH_BYTES / template.bytes.len()).clamp(1, 4096);
    let mut batch = Vec::with_capacity(per_batch * template.bytes.len());
    for _ in 0..per_batch {
        batch.extend_from_slice(&template.bytes);
    }
    let Client {
        stream,
        buffer,
        frame_max,
    } = client;
    let (reader, mut writer) = stream.into_split();
    let confirms = (plan.confirm > 0).then(|| Arc::new(Confirms::new(plan.confirm)));
    let reader_task = tokio::spawn(read_replies(
        reader,
        buffer,
        frame_max,
        confirms.clone(),
        stats.clone(),
        stop.clone(),
    ));
    let started = tokio::time::Instant::now();
    let mut sent: u64 = 0;
    while !stop.is_set() {
        let mut n = per_batch as u64;
        if plan.messages > 0 {
            n = n.min(plan.messages - sent);
            if n == 0 {
                break;
            }
        }
        if plan.rate > 0 {
            let due = (started.elapsed().as_secs_f64() * plan.rate as f64) as u64;
            let allowed = due.saturating_sub(sent);
            if allowed == 0 {
                let next = started + Duration::from_secs_f64((sent + 1) as f64 / plan.rate as f64);
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stop.wait() => {}
                }
                continue;
            }
            n = n.min(allowed);
        }
        if let Some(confirms) = &confirms {
            let room = confirms.room(plan.confirm);
            if room == 0 {
                tokio::select! {
                    _ = confirms.progress.notified() => {}
                    _ = stop.wait() => {}
                }
                continue;
            }
            n = n.min(room);
        }
        let now = stats.now_nanos();
        let len = template.bytes.len();
        if let Some(at) = template.timestamp_at {
            for i in 0..n as usize {
                let start = i * len + at;
                batch[start..start + 8].copy_from_slice(&now.to_be_bytes());
            }
        }
        if let Some(confirms) = &confirms {
            let first = confirms.published.load(Ordering::Relaxed) + 1;
            for seq in first..first + n {
                confirms.slot(seq).store(now, Ordering::Relaxed);
            }
            confirms.published.store(first + n - 1, Ordering::Release);
        }
        if let Err(e) = writer.write_all(&batch[..n as usize * len]).await {
            if !stop.is_set() {
                stats.error(format!("producer: cannot write to the broker: {e}"));
            }
            break;
        }
        sent += n;
        stats.published.fetch_add(n, Ordering::Relaxed);
        // A socket that is always writable never makes this task wait: let the consumers
        // sharing the thread read between batches, or they would starve.
        tokio::task::yield_now().await;
    }
    // Wait briefly for the last confirms, then close.
    if let Some(confirms) = &confirms {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while confirms.settled.load(Ordering::Acquire) < confirms.published.load(Ordering::Acquire)
            && tokio::time::Instant::now() < deadline
            && !reader_task.is_finished()
        {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), confirms.progress.notified()).await;
        }
    }
    let mut close = BytesMut::new();
    encode_method(
        0,
        &Method::ConnectionClose(wharf_amqp::ConnectionClose {
            reply_code: 200,
            reply_text: "perf done".into(),
            ..Default::default()
        }),
        &mut close,
    );
    let _ = writer.write_all(&close).await;
    // A broker with a backlog of publishes answers the close once it has read them all.
    let abort = reader_task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(10), reader_task)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// Reads what the broker sends a producer: confirms, and a close if something went wrong.
async fn read_replies(
    mut reader: OwnedReadHalf,
    mut buffer: BytesMut,
    frame_max: u32,
    confirms: Option<Arc<Confirms>>,
    stats: Arc<Stats>,
    stop: Arc<Signal>,
) {
    let mut recorder = Recorder::new(Latency::Confirm);
    loop {
        loop {
            let frame = match Frame::decode(&mut buffer, frame_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    stats.error(format!("producer: malformed frame from the broker: {e}"));
                    return;
                }
            };
            let FramePayload::Method(method) = frame.payload else {
                continue;
            };
            match method {
                Method::BasicAck(ack) => {
                    if let Some(c) = &confirms {
                        settle(
                            c,
                            ack.delivery_tag,
                            ack.multiple,
                            false,
                            &stats,
                            &mut recorder,
                        );
                    }
                }
                Method::BasicNack(nack) => {
                    if let Some(c) = &confirms {
                        settle(
                            c,
                            nack.delivery_tag,
                            nack.multiple,
                            true,
                            &stats,
                            &mut recorder,
                        );
                    }
                }
                Method::ConnectionCloseOk(_) => {
                    recorder.maybe_merge(&stats, true);
                    return;
                }
                // After the stop, a broker still working through the last publishes may
                // find the exchange already deleted by the clean-up: not a run error.
                Method::ConnectionClose(wharf_amqp::ConnectionClose {
                    reply_code,
                    reply_text,
                    ..
                })
                | Method::ChannelClose(wharf_amqp::ChannelClose {
                    reply_code,
                    reply_text,
                    ..
                }) => {
                    if !stop.is_set() {
                        stats.error(format!(
                            "producer: the broker closed the {}: {reply_code} {reply_text}",
                            if frame.channel == 0 {
                                "connection"
                            } else {
                                "channel"
                            }
                        ));
                        stop.set();
                    }
                    return;
                }
                Method::ConnectionBlocked(blocked) => {
                    eprintln!(
                        "producer: the broker blocked publishing: {}",
                        blocked.reason
                    );
                }
                _ => {}
            }
        }
        recorder.maybe_merge(&stats, false);
        match reader.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => {
                recorder.maybe_merge(&stats, true);
                if !stop.is_set() {
                    stats.error("producer: the broker closed the socket".into());
                    stop.set();
                }
                return;
            }
            Ok(_) => {}
        }
    }
}

fn settle(
    confirms: &Confirms,
    tag: u64,
    multiple: bool,
    nacked: bool,
    stats: &Stats,
    recorder: &mut Recorder,
) {
    let now = stats.now_nanos();
    let mut settled = 0u64;
    let mut take = |seq: u64| {
        let sent = confirms.slot(seq).swap(0, Ordering::AcqRel);
        if sent != 0 {
            settled += 1;
            recorder.record(now.saturating_sub(sent));
        }
    };
    let watermark = confirms.watermark.load(Ordering::Acquire);
    if multiple {
        for seq in watermark + 1..=tag {
            take(seq);
        }
    } else {
        take(tag);
    }
    // Move the watermark over every settled sequence number.
    let published = confirms.published.load(Ordering::Acquire);
    let mut mark = watermark.max(if multiple { tag } else { watermark });
    while mark < published && confirms.slot(mark + 1).load(Ordering::Acquire) == 0 {
        mark += 1;
    }
    confirms.watermark.store(mark, Ordering::Release);
    confirms.settled.fetch_add(settled, Ordering::AcqRel);
    let counter = if nacked {
        &stats.nacked
    } else {
        &stats.confirmed
    };
    counter.fetch_add(settled, Ordering::Relaxed);
    confirms.progress.notify_one();
}
