//! A consumer: one connection with one basic.consume. Deliveries are parsed in place in the
//! read buffer, without decoding them into values: a deliver method gives the delivery
//! tag, a content header the body size, the first body frame the send time. Acks (with
//! multiple=true every N messages) are written once per read.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_amqp::frame::encode_method;
use wharf_amqp::Method;

use crate::client::{Client, CHANNEL};
use crate::stats::{Latency, Recorder, Stats};
use crate::Signal;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
/// Room made in the read buffer before each read.
const READ_BYTES: usize = 256 * 1024;

pub struct ConsumerPlan {
    pub queue: String,
    pub autoack: bool,
    pub prefetch: u16,
    pub multi_ack: u32,
}

/// Where the parser is within the message being received.
#[derive(Default)]
struct Parser {
    delivery_tag: u64,
    body_left: u64,
    first_body_frame: bool,
    /// Messages received since the last ack was written.
    unacked: u32,
    last_tag: u64,
}

/// What a frame meant for the consumer.
enum Event {
    Nothing,
    /// A whole message arrived; with its send time if the body carried one.
    Message(Option<u64>),
    /// The broker closed the connection or channel, or cancelled the consumer.
    Closed(String),
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Reads a close's reply code and text from a method payload (after class and method).
fn close_reason(args: &[u8]) -> String {
    if args.len() < 3 {
        return "(no reason given)".into();
    }
    let code = be_u16(args);
    let len = args[2] as usize;
    let text = args
        .get(3..3 + len)
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    format!("{code} {text}")
}

impl Parser {
    /// Interprets one frame's payload.
    fn frame(&mut self, kind: u8, payload: &[u8]) -> anyhow::Result<Event> {
        match kind {
            FRAME_METHOD => {
                if payload.len() < 4 {
                    bail!("a method frame too short for its ids");
                }
                let (class, method) = (be_u16(payload), be_u16(&payload[2..]));
                let args = &payload[4..];
                match (class, method) {
                    (60, 60) => {
                        // basic.deliver: consumer-tag (shortstr), delivery-tag (u64), ...
                        let tag_len = *args.first().unwrap_or(&0) as usize;
                        let Some(tag) = args.get(1 + tag_len..9 + tag_len) else {
                            bail!("a basic.deliver too short for its delivery tag");
                        };
                        self.delivery_tag = be_u64(tag);
                    }
                    (10, 50) => {
                        return Ok(Event::Closed(format!(
                            "connection closed: {}",
                            close_reason(args)
                        )))
                    }
                    (20, 40) => {
                        return Ok(Event::Closed(format!(
                            "channel closed: {}",
                            close_reason(args)
                        )))
                    }
                    (60, 30) => {
                        return Ok(Event::Closed("the broker cancelled the consumer".into()))
                    }
                    _ => {}
                }
                Ok(Event::Nothing)
            }
            FRAME_HEADER => {
                // class (2), weight (2), body size (8), properties
                let Some(size) = payload.get(4..12) else {
                    bail!("a content header too short for its body size");
                };
                self.body_left = be_u64(size);
                self.first_body_frame = true;
                if self.body_left == 0 {
                    return Ok(Event::Message(None));
                }
                Ok(Event::Nothing)
            }
            FRAME_BODY => {
                let sent = (self.first_body_frame && payload.len() >= 8).then(|| be_u64(payload));
                self.first_body_frame = false;
                self.body_left = self.body_left.saturating_sub(payload.len() as u64);
                if self.body_left == 0 {
                    return Ok(Event::Message(sent));
                }
                Ok(Event::Nothing)
            }
            _ => Ok(Event::Nothing),
        }
    }
}

pub async fn run(
    mut client: Client,
    plan: Arc<ConsumerPlan>,
    stats: Arc<Stats>,
    go: Arc<Signal>,
    stop: Arc<Signal>,
) {
    go.wait().await;
    let ack_every = plan.multi_ack.clamp(1, u32::from(plan.prefetch).max(1));
    let mut parser = Parser::default();
    let mut recorder = Recorder::new(Latency::EndToEnd);
    let mut acks = BytesMut::new();
    let mut buffer = std::mem::take(&mut client.buffer);
    loop {
        let now = stats.now_nanos();
        let mut received = 0u64;
        while buffer.len() >= 7 {
            let size = u32::from_be_bytes([buffer[3], buffer[4], buffer[5], buffer[6]]) as usize;
            if size + 8 > client.frame_max as usize {
                stats.error(format!(
                    "consumer: the broker sent a frame of {} bytes, over the frame_max of {}",
                    size + 8,
                    client.frame_max
                ));
                stop.set();
                return;
            }
            if buffer.len() < size + 8 {
                buffer.reserve(size + 8 - buffer.len());
                break;
            }
            let event = match parser.frame(buffer[0], &buffer[7..7 + size]) {
                Ok(event) => event,
                Err(e) => {
                    stats.error(format!("consumer: malformed frame from the broker: {e}"));
                    return;
                }
            };
            buffer.advance(size + 8);
            match event {
                Event::Nothing => {}
                Event::Message(sent) => {
                    received += 1;
                    if let Some(sent) = sent.filter(|s| *s <= now) {
                        recorder.record(now - sent);
                    }
                    if !plan.autoack {
                        parser.unacked += 1;
                        parser.last_tag = parser.delivery_tag;
                        if parser.unacked >= ack_every {
                            encode_ack(&mut acks, parser.last_tag);
                            parser.unacked = 0;
                        }
                    }
                }
                Event::Closed(reason) => {
                    if !stop.is_set() {
                        stats.error(format!("consumer of {}: {reason}", plan.queue));
                        stop.set();
                    }
                    return;
                }
            }
        }
        stats.consumed.fetch_add(received, Ordering::Relaxed);
        recorder.maybe_merge(&stats, false);
        if !acks.is_empty() {
            if let Err(e) = client.stream.write_all(&acks).await {
                stats.error(format!("consumer: cannot write acks: {e}"));
                return;
            }
            acks.clear();
        }
        buffer.reserve(READ_BYTES);
        let read = tokio::select! {
            read = client.stream.read_buf(&mut buffer) => read,
            _ = stop.wait() => break,
        };
        match read {
            Ok(0) | Err(_) => {
                if !stop.is_set() {
                    stats.error(format!(
                        "consumer of {}: the broker closed the socket",
                        plan.queue
                    ));
                    stop.set();
                }
                return;
            }
            Ok(_) => {}
        }
    }
    recorder.maybe_merge(&stats, true);
    let _ = tokio::time::timeout(Duration::from_secs(3), client.close()).await;
}

fn encode_ack(out: &mut BytesMut, tag: u64) {
    encode_method(
        CHANNEL,
        &Method::BasicAck(wharf_amqp::BasicAck {
            delivery_tag: tag,
            multiple: true,
        }),
        out,
    );
}
