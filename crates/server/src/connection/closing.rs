//! How a connection ends: connection.close sent, close-ok awaited (briefly), the writer
//! finished so that what was written reaches the peer.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncRead;
use wharf_amqp::frame::encode_method;
use wharf_amqp::*;

use crate::error::AmqpError;
use crate::frame_reader::{FrameReader, ReadError};
use crate::outbound::Outbound;

pub(super) fn send_close(outbound: &Outbound, error: &AmqpError) {
    let close = Method::ConnectionClose(ConnectionClose {
        reply_code: error.code as u16,
        reply_text: error.text.as_str().into(),
        class_id: error.class_id,
        method_id: error.method_id,
    });
    outbound.write(|out| encode_method(0, &close, out));
}

/// After connection.close, everything but close-ok (or the client's own close) is ignored.
/// Bytes that do not parse are skipped too, so that a client still sending the rest of a
/// bad frame sees our close rather than a reset connection.
pub(super) async fn await_close_ok<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) {
    loop {
        match reader.next().await {
            Ok(Frame {
                payload:
                    FramePayload::Method(Method::ConnectionCloseOk(_) | Method::ConnectionClose(_)),
                ..
            }) => return,
            Ok(_) => {}
            Err(ReadError::Malformed(_)) => reader.discard_buffered(),
            Err(ReadError::Closed | ReadError::Io(_)) => return,
        }
    }
}

pub(super) async fn await_eof<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) {
    while reader.next().await.is_ok() {}
}

pub(super) async fn finish(
    outbound: Arc<Outbound>,
    mut writer: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    outbound.close();
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        // A peer that reads nothing would keep the writer, its socket and its buffer.
        writer.abort();
    }
}
