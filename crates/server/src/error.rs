//! Protocol errors: a reply code, RabbitMQ's reply text, and the method that caused it.
//! Channel-level codes close the channel; connection-level codes close the connection.

use wharf_amqp::{Method, ReplyCode};
use wharf_core::ErrorKind;

#[derive(Debug, Clone, PartialEq)]
pub struct AmqpError {
    pub code: ReplyCode,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl AmqpError {
    /// An error whose text is "<CODE NAME> - <detail>", as RabbitMQ writes them.
    pub fn new(code: ReplyCode, detail: impl std::fmt::Display) -> Self {
        AmqpError {
            code,
            text: format!("{} - {}", code.text(), detail),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Names the method the error answers.
    pub fn during(mut self, method: &Method) -> Self {
        self.class_id = method.class_id();
        self.method_id = method.method_id();
        self
    }

    pub fn with_ids(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    pub fn closes_connection(&self) -> bool {
        self.code.is_connection_error()
    }
}

impl From<wharf_core::Error> for AmqpError {
    fn from(error: wharf_core::Error) -> Self {
        let code = match error.kind {
            ErrorKind::AccessRefused => ReplyCode::AccessRefused,
            ErrorKind::NotFound => ReplyCode::NotFound,
            ErrorKind::ResourceLocked => ReplyCode::ResourceLocked,
            ErrorKind::PreconditionFailed => ReplyCode::PreconditionFailed,
            ErrorKind::NotAllowed => ReplyCode::NotAllowed,
            ErrorKind::CommandInvalid => ReplyCode::CommandInvalid,
            ErrorKind::NotImplemented => ReplyCode::NotImplemented,
            ErrorKind::ResourceError => ReplyCode::ResourceError,
            ErrorKind::InternalError => ReplyCode::InternalError,
            ErrorKind::Unavailable | ErrorKind::NotLeader => ReplyCode::PreconditionFailed,
        };
        AmqpError {
            code,
            text: error.text(),
            class_id: 0,
            method_id: 0,
        }
    }
}

impl From<wharf_amqp::Error> for AmqpError {
    fn from(error: wharf_amqp::Error) -> Self {
        match error {
            wharf_amqp::Error::UnknownMethod { .. } => {
                AmqpError::new(ReplyCode::NotImplemented, error)
            }
            wharf_amqp::Error::Syntax(detail) => AmqpError::new(
                ReplyCode::FrameError,
                format_args!("cannot decode: {detail}"),
            ),
            other => AmqpError::new(ReplyCode::FrameError, other),
        }
    }
}

pub type AmqpResult<T> = Result<T, AmqpError>;
