//! The writer task of a connection: drains the outbound buffer into the socket, one write
//! for everything that accumulated, and sends heartbeats when the connection has been
//! quiet for the negotiated interval.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use wharf_amqp::frame::encode_heartbeat;

use wharf_core::connections::Traffic;

use crate::outbound::Outbound;

/// Negotiated heartbeat interval in seconds (0 = none); set by the handshake.
#[derive(Debug, Default)]
pub struct HeartbeatSetting(AtomicU16);

impl HeartbeatSetting {
    pub fn set(&self, seconds: u16) {
        self.0.store(seconds, Ordering::Release);
    }

    pub fn get(&self) -> u16 {
        self.0.load(Ordering::Acquire)
    }
}

pub async fn run_writer<W: AsyncWrite + Unpin>(
    mut socket: W,
    outbound: Arc<Outbound>,
    heartbeat: Arc<HeartbeatSetting>,
    traffic: Arc<Traffic>,
) -> std::io::Result<()> {
    let mut batch = BytesMut::with_capacity(64 * 1024);
    let mut last_write = Instant::now();
    loop {
        if outbound.is_closed() && outbound.is_empty() {
            break;
        }
        let interval = heartbeat.get();
        if interval == 0 {
            outbound.wake_writer.notified().await;
        } else {
            let due = last_write + Duration::from_secs(u64::from(interval));
            tokio::select! {
                _ = outbound.wake_writer.notified() => {}
                _ = tokio::time::sleep_until(due) => {
                    outbound.write(encode_heartbeat);
                }
            }
        }
        outbound.take(&mut batch);
        if batch.is_empty() {
            continue;
        }
        if let Err(error) = socket.write_all(&batch).await {
            outbound.writer_failed();
            return Err(error);
        }
        traffic.sent(batch.len());
        last_write = Instant::now();
        outbound.after_write();
        // Let a buffer that grew for a burst shrink again rather than pin its memory.
        if batch.capacity() > 1024 * 1024 {
            batch = BytesMut::with_capacity(64 * 1024);
        }
    }
    socket.shutdown().await
}
