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
    #[error("frame size {size} exceeds frame_max {max}")]
    FrameTooLarge { size: usize, max: u32 },
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
