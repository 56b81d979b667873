//! Decoding errors. Each maps to the AMQP reply code RabbitMQ closes the connection with.

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// A field is malformed or cut short.
    #[error("{0}")]
    Syntax(String),
    #[error("unknown method {class_id}/{method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    #[error("bad frame end marker {0:#04x}")]
    BadFrameEnd(u8),
    /// A frame whose payload is larger than frame_max; RabbitMQ's text, which names the
    /// largest payload the spec would allow (frame_max - 8) though it takes up to frame_max.
    #[error("type {kind}, all octets = <<>>: {{frame_too_large,{size},{}}}", max.saturating_sub(8))]
    FrameTooLarge { kind: u8, size: usize, max: u32 },
}

impl Error {
    pub(crate) fn syntax(what: impl std::fmt::Display) -> Self {
        Error::Syntax(what.to_string())
    }

    /// The reply code of the connection.close this error calls for.
    pub fn reply_code(&self) -> u16 {
        match self {
            // RabbitMQ answers a method it cannot decode with FRAME_ERROR, not SYNTAX_ERROR.
            Error::Syntax(_)
            | Error::UnknownFrameType(_)
            | Error::BadFrameEnd(_)
            | Error::FrameTooLarge { .. } => 501,
            Error::UnknownMethod { .. } => 540,
        }
    }
}
