//! Reads frames from a socket: many frames per read syscall, decoded from one growing
//! buffer so body payloads are zero-copy slices of it. Cancel-safe: a pending read can
//! be dropped in a `select!` without losing bytes, because partial data stays in the buffer.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use wharf_amqp::Frame;
use wharf_core::connections::Traffic;

const READ_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the socket.
    Closed,
    Io(std::io::Error),
    /// The bytes are not a valid frame: a connection error.
    Malformed(wharf_amqp::Error),
}

pub struct FrameReader<R> {
    socket: R,
    buffer: BytesMut,
    pub frame_max: u32,
    /// Where the bytes read are counted.
    traffic: Arc<Traffic>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(socket: R, frame_max: u32, traffic: Arc<Traffic>) -> Self {
        FrameReader {
            socket,
            buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
            frame_max,
            traffic,
        }
    }

    /// Reads exactly `n` raw bytes (the protocol header, before any frame).
    pub async fn read_exact_raw(&mut self, n: usize) -> Result<BytesMut, ReadError> {
        while self.buffer.len() < n {
            self.fill().await?;
        }
        Ok(self.buffer.split_to(n))
    }

    /// Drops whatever is buffered: after a framing error the rest cannot be trusted.
    pub fn discard_buffered(&mut self) {
        self.buffer.clear();
    }

    /// A frame already in the buffer, without reading the socket.
    pub fn try_next(&mut self) -> Result<Option<Frame>, ReadError> {
        Frame::decode(&mut self.buffer, self.frame_max).map_err(ReadError::Malformed)
    }

    pub async fn next(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = self.try_next()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        if self.buffer.capacity() - self.buffer.len() < READ_CHUNK_BYTES / 4 {
            self.buffer.reserve(READ_CHUNK_BYTES);
        }
        match self.socket.read_buf(&mut self.buffer).await {
            Ok(0) => Err(ReadError::Closed),
            Ok(read) => {
                self.traffic.received(read);
                Ok(())
            }
            Err(e) => Err(ReadError::Io(e)),
        }
    }
}
